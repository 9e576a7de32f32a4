// A regression test for a stale read the read-context analysis of the
// simulator turned up: a ReadIndex answer that was meant for an earlier
// incarnation of a node (it crashed while the answer was in flight) must not
// complete a read of the restarted node, even though both reads carry the
// same per-incarnation counter. Three real RaftNode drivers on memory storage
// exchange frames through a hand-driven wire: the test decides which frame is
// delivered, held or dropped, and when each node ticks.

import { describe, expect, it } from 'vitest'
import { type Clock, seededRng } from '../../consensus/clock.ts'
import { decodeMessage } from '../../consensus/codec.ts'
import { MemoryLogStorage } from '../../consensus/memory-storage.ts'
import { RaftNode } from '../../consensus/raft-node.ts'
import type { FrameTransport } from '../../consensus/transport.ts'
import { type Message, MessageType } from '../../consensus/types.ts'
import { encodeKvCommand, type KvResult, KvStateMachine } from '../support/kv-state-machine.ts'

interface Frame {
  from: string
  to: string
  bytes: Uint8Array
  message: Message
}

type Rule = (frame: Frame) => 'deliver' | 'drop' | 'hold'

class Wire {
  private queue: Frame[] = []
  readonly handlers = new Map<string, (from: string, bytes: Uint8Array) => void>()

  transport(id: string): FrameTransport {
    return {
      send: (to, bytes) => {
        this.queue.push({ from: id, to, bytes, message: decodeMessage(bytes, { bytesMax: 1 << 24 }) })
        return true
      },
      onFrame: (handler) => this.handlers.set(id, handler),
    }
  }

  /** Delivers frames (and what they cause) until none is left; returns those held back. */
  async pump(rule: Rule): Promise<Frame[]> {
    const held: Frame[] = []
    for (let round = 0; round < 1000; round++) {
      await settle()
      const batch = this.queue
      this.queue = []
      if (batch.length === 0) return held
      for (const frame of batch) {
        const verdict = rule(frame)
        if (verdict === 'hold') held.push(frame)
        else if (verdict === 'deliver') this.handlers.get(frame.to)?.(frame.from, frame.bytes)
      }
    }
    throw new Error('The wire never went quiet.')
  }
}

class ManualClock implements Clock {
  private readonly timers = new Set<() => void>()
  nowMs(): number {
    return 0
  }
  every(_intervalMs: number, fn: () => void): () => void {
    this.timers.add(fn)
    return () => this.timers.delete(fn)
  }
  tick(): void {
    for (const fn of [...this.timers]) fn()
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 64; i++) await null
}

interface Member {
  node: RaftNode<KvResult>
  kv: KvStateMachine
  clock: ManualClock
}

async function start(wire: Wire, id: string, storage: MemoryLogStorage, seed: number): Promise<Member> {
  const clock = new ManualClock()
  const kv = new KvStateMachine()
  const node = await RaftNode.create<KvResult>({
    id,
    storage,
    transport: wire.transport(id),
    clock,
    rng: seededRng(seed),
    stateMachine: kv,
    bootstrap: { voters: ['a', 'b', 'c'] },
    driver: { tickMs: 10 },
  })
  node.start()
  return { node, kv, clock }
}

const put = (value: string) => encodeKvCommand({ op: 'put', key: 'k', value })
const all: Rule = () => 'deliver'

describe('ReadIndex contexts across a restart', () => {
  it('a restarted node does not complete a new read with the answer to a read of its previous incarnation', async () => {
    const wire = new Wire()
    const storages = { a: new MemoryLogStorage(), b: new MemoryLogStorage(), c: new MemoryLogStorage() }
    const a = await start(wire, 'a', storages.a, 1)
    let b = await start(wire, 'b', storages.b, 2)
    await start(wire, 'c', storages.c, 3)
    a.node.campaign()
    await wire.pump(all)
    expect(a.node.isLeader()).toBe(true)
    const first = a.node.propose(put('v1'))
    await wire.pump(all)
    await first

    // b asks for a read index; the answer is held in the network, then b crashes.
    void b.node.readIndex().catch(() => {})
    const held = await wire.pump((f) =>
      f.message.type === MessageType.ReadIndexResponse ? 'hold' : 'deliver',
    )
    expect(held.map((f) => f.to)).toEqual(['b'])
    const toB: Rule = (f) => (f.to === 'b' ? 'drop' : 'deliver')

    // While b is down, v2 is written and acknowledged (a and c are a quorum).
    const second = a.node.propose(put('v2'))
    await wire.pump(toB)
    await second

    // b restarts; it learns the leader from a heartbeat but gets no append yet.
    b = await start(wire, 'b', storages.b, 4)
    a.clock.tick()
    await wire.pump((f) => (f.to === 'b' && f.message.type === MessageType.Append ? 'drop' : 'deliver'))
    expect(b.node.leader()).toBe('a')
    expect(b.kv.get('k')).toBe('v1')

    // A read that starts now must see v2. Its request is slow to reach the
    // leader; meanwhile the answer meant for the old incarnation arrives.
    let done = false
    const read = b.node.readIndex().then(() => {
      done = true
      return b.kv.get('k')
    })
    const request = await wire.pump((f) => (f.message.type === MessageType.ReadIndex ? 'hold' : 'deliver'))
    wire.handlers.get('b')?.(held[0]!.from, held[0]!.bytes)
    await wire.pump(toB)
    expect(done).toBe(false)

    // Once its own request is answered and b has caught up, the read sees v2.
    wire.handlers.get('a')?.(request[0]!.from, request[0]!.bytes)
    for (let i = 0; i < 3 && !done; i++) {
      a.clock.tick()
      await wire.pump(all)
    }
    expect(await read).toBe('v2')
  })
})
