// Snapshots built in the background by the driver (RaftNode) for log
// compaction: a one-node group on LevelDB storage and real timers, whose KV
// state machine encodes its snapshot in slices through a gate the test holds
// open or shut. Checks that proposals keep committing while a snapshot is
// being built, that the log (in memory and on disk) is compacted only up to
// the index the snapshot was taken at and the stored state is the one at that
// index, that a restart restores it, that stop() in the middle abandons it
// cleanly, and that a state machine without snapshotAsync (docklet's
// ClusterState) still gets its log compacted. Waits are bounded polls.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  LevelLogStorage,
  type RaftEvent,
  RaftNode,
  realClock,
  type StateMachine,
  seededRng,
} from '../../consensus/index.ts'
import { MemoryNetwork } from '../../net/index.ts'
import { encodeKvCommand, type KvResult, KvStateMachine } from '../support/kv-state-machine.ts'

const SNAPSHOT_ENTRIES = 20
const KEEP_ENTRIES = 5

/**
 * The KV state machine with a gate between snapshot slices: while the gate
 * is shut a snapshot in progress waits (as a long encoding would), unless
 * its signal aborts. Records the applied index and the state at each start.
 */
class GatedKv implements StateMachine<KvResult> {
  readonly kv: KvStateMachine
  readonly starts: { applied: number; state: Uint8Array; signal: AbortSignal }[] = []
  appliedIndex = 0
  private shut = false
  private opened: (() => void)[] = []
  private signal: AbortSignal | null = null

  constructor() {
    this.kv = new KvStateMachine({ snapshotSliceBytes: 16, yieldToLoop: () => this.pass() })
  }

  hold(): void {
    this.shut = true
  }

  release(): void {
    this.shut = false
    for (const open of this.opened.splice(0)) open()
  }

  apply(data: Uint8Array, index: number): KvResult {
    this.appliedIndex = index
    return this.kv.apply(data, index)
  }

  snapshot(): Uint8Array {
    return this.kv.snapshot()
  }

  snapshotAsync(options: { signal: AbortSignal }): Promise<Uint8Array> {
    this.starts.push({ applied: this.appliedIndex, state: this.kv.snapshot(), signal: options.signal })
    this.signal = options.signal
    return this.kv.snapshotAsync(options)
  }

  restore(data: Uint8Array): void {
    this.kv.restore(data)
  }

  private pass(): Promise<void> {
    if (!this.shut || this.signal?.aborted) return new Promise((resolve) => setImmediate(resolve))
    return new Promise((resolve) => {
      this.opened.push(resolve)
      this.signal?.addEventListener('abort', () => resolve(), { once: true })
    })
  }
}

/** What a state machine like docklet's ClusterState offers: snapshot() only. */
class SyncOnlyKv implements StateMachine<KvResult> {
  readonly kv = new KvStateMachine()
  apply(data: Uint8Array, index: number): KvResult {
    return this.kv.apply(data, index)
  }
  snapshot(): Uint8Array {
    return this.kv.snapshot()
  }
  restore(data: Uint8Array): void {
    this.kv.restore(data)
  }
}

interface Member {
  node: RaftNode<KvResult>
  storage: LevelLogStorage
  events: RaftEvent[]
}

const dirs: string[] = []
const running: Member[] = []
const networks: MemoryNetwork[] = []

afterEach(async () => {
  for (const member of running.splice(0)) {
    await member.node.stop()
    await member.storage.close()
  }
  for (const network of networks.splice(0)) await network.close()
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'docklet-background-snapshot-'))
  dirs.push(dir)
  return dir
}

async function startNode(dir: string, stateMachine: StateMachine<KvResult>): Promise<Member> {
  const network = new MemoryNetwork()
  networks.push(network)
  const storage = await LevelLogStorage.open(join(dir, 'raft'))
  const events: RaftEvent[] = []
  const node = await RaftNode.create<KvResult>({
    id: 'a',
    storage,
    transport: network.createTransport('a'),
    clock: realClock(),
    rng: seededRng(7),
    stateMachine,
    raft: { electionTimeoutTicks: 10, heartbeatIntervalTicks: 1 },
    driver: {
      tickMs: 10,
      requestTimeoutMs: 10_000,
      snapshotEntries: SNAPSHOT_ENTRIES,
      compactionKeepEntries: KEEP_ENTRIES,
    },
    bootstrap: { voters: ['a'] },
    onEvent: (event) => events.push(event),
  })
  node.start()
  const member = { node, storage, events }
  running.push(member)
  await waitFor('the node to lead', () => node.isLeader())
  return member
}

async function stopNode(member: Member): Promise<void> {
  running.splice(running.indexOf(member), 1)
  await member.node.stop()
  await member.storage.close()
}

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = fn()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

function put(key: string, value: string): Uint8Array {
  return encodeKvCommand({ op: 'put', key, value })
}

/** Writes one key at a time (each apply can start a snapshot) until the state machine started `count` snapshots. */
async function writeUntilSnapshot(member: Member, gated: GatedKv, count: number, prefix: string) {
  for (let i = 0; gated.starts.length < count; i++) {
    if (i > 10 * SNAPSHOT_ENTRIES) throw new Error('no snapshot started')
    await member.node.propose(put(`${prefix}-${i % 7}`, `${prefix}-${i}`))
  }
  return gated.starts[count - 1]!
}

function taken(member: Member): RaftEvent[] {
  return member.events.filter((event) => event.type === 'snapshot-taken')
}

describe('snapshots built in the background', () => {
  it('let proposals commit meanwhile and compact the log only up to the index they were taken at', async () => {
    const dir = await freshDir()
    const gated = new GatedKv()
    const member = await startNode(dir, gated)
    gated.hold()
    const start = await writeUntilSnapshot(member, gated, 1, 'k')
    const snapshotIndex = start.applied
    expect(snapshotIndex).toBeGreaterThanOrEqual(SNAPSHOT_ENTRIES)

    // The snapshot is stuck between two slices: writes go on and commit.
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => member.node.propose(put(`later-${i}`, String(i)))),
    )
    expect(results.every((result) => result.ok)).toBe(true)
    const during = member.node.status()
    expect(during.applied).toBeGreaterThan(snapshotIndex + 29)
    expect(during.snapshotIndex).toBe(1)
    expect(during.firstIndex).toBe(2)
    expect(taken(member)).toEqual([])

    gated.release()
    await waitFor('the snapshot to be taken', () => taken(member).length === 1)
    expect(taken(member)[0]).toMatchObject({ index: snapshotIndex, bytes: start.state.length })
    const after = member.node.status()
    expect(after.snapshotIndex).toBe(snapshotIndex)
    // In memory the driver keeps KEEP_ENTRIES behind the snapshot, counted from its index, not from applied.
    expect(after.firstIndex).toBe(snapshotIndex - KEEP_ENTRIES + 1)
    // On disk: the state as it was at that index, and every entry after it.
    const stored = await member.storage.load()
    expect(stored.snapshot?.meta.index).toBe(snapshotIndex)
    expect(stored.snapshot?.data).toEqual(start.state)
    expect(stored.entries[0]?.index).toBe(snapshotIndex + 1)
    expect(stored.entries.at(-1)?.index).toBe(after.lastIndex)
    expect(member.events.filter((event) => event.type === 'fatal')).toEqual([])
  })

  for (const kind of ['snapshotAsync', 'snapshot() only'] as const) {
    it(`are restored on restart, followed by the entries after them (state machine with ${kind})`, async () => {
      const dir = await freshDir()
      const make = () => (kind === 'snapshotAsync' ? new GatedKv() : new SyncOnlyKv())
      const first = make()
      const member = await startNode(dir, first)
      for (let i = 0; i < SNAPSHOT_ENTRIES + 10; i++) await member.node.propose(put(`r-${i % 9}`, `v${i}`))
      const event = await waitFor('a snapshot', () => taken(member)[0])
      const snapshotIndex = event.index as number
      const applied = member.node.status().applied
      expect(applied).toBeGreaterThan(snapshotIndex)
      const before = first.kv.entries()
      await stopNode(member)

      const second = make()
      const restarted = await startNode(dir, second)
      expect(restarted.node.status().snapshotIndex).toBe(snapshotIndex)
      await waitFor('the log after the snapshot to be applied again', () => {
        return restarted.node.status().applied >= applied
      })
      expect(second.kv.entries()).toEqual(before)
      await restarted.node.propose(put('r-after', 'yes'))
      expect(second.kv.get('r-after')).toBe('yes')
    })
  }

  it('are abandoned by stop(): no compaction, no error, and the node restarts from its whole log', async () => {
    const dir = await freshDir()
    const gated = new GatedKv()
    const member = await startNode(dir, gated)
    gated.hold()
    const start = await writeUntilSnapshot(member, gated, 1, 's')
    await member.node.propose(put('s-last', 'x'))
    const before = gated.kv.entries()
    const lastIndex = member.node.status().lastIndex

    // The gate stays shut: only the abort lets the snapshot end.
    await stopNode(member)
    expect(start.signal.aborted).toBe(true)
    expect(taken(member)).toEqual([])
    expect(member.events.filter((event) => event.type === 'fatal')).toEqual([])

    // Nothing was compacted: the store holds the first snapshot and the whole log.
    const storage = await LevelLogStorage.open(join(dir, 'raft'))
    const stored = await storage.load()
    await storage.close()
    expect(stored.snapshot?.meta.index).toBe(1)
    expect(stored.entries[0]?.index).toBe(2)
    expect(stored.entries.at(-1)?.index).toBe(lastIndex)

    const second = new GatedKv()
    const restarted = await startNode(dir, second)
    await waitFor('the whole log to be applied again', () => restarted.node.status().applied >= lastIndex)
    expect(second.kv.entries()).toEqual(before)
  })
})
