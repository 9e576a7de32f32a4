// The driver's loop never leaves work waiting for the next tick. Three
// RaftNodes on the in-memory network (which delivers frames from microtasks)
// run on a clock that never ticks: an election started by campaign(), a run
// of sequential writes and linearizable reads must all complete on messages
// alone. A wake-up lost between the loop's last look at its work and the
// moment it stops would leave a write waiting for a tick that never comes,
// and the bounded wait below would report it.

import { afterEach, describe, expect, it } from 'vitest'
import { type Clock, MemoryLogStorage, RaftNode, seededRng } from '../../consensus/index.ts'
import { type MemoryFrameTransport, MemoryNetwork } from '../../net/index.ts'
import { encodeKvCommand, type KvResult, KvStateMachine } from '../support/kv-state-machine.ts'

/** A clock whose time stands still and whose timers never fire. */
function frozenClock(): Clock {
  return { nowMs: () => 0, every: () => () => {} }
}

/** Resolves with `promise`, or rejects once `timeoutMs` of real time passed. */
async function within<T>(what: string, promise: Promise<T>, timeoutMs = 5_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not complete without a tick`)), timeoutMs)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

interface Member {
  node: RaftNode<KvResult>
  transport: MemoryFrameTransport
}

const networks: { network: MemoryNetwork; members: Member[] }[] = []

async function startCluster(ids: string[]): Promise<Member[]> {
  const network = new MemoryNetwork()
  const members: Member[] = []
  networks.push({ network, members })
  for (const [i, id] of ids.entries()) {
    const transport = network.createTransport(id)
    transport.setPeers(ids.filter((peer) => peer !== id).map((peer) => ({ id: peer, addrs: [] })))
    const node = await RaftNode.create<KvResult>({
      id,
      storage: new MemoryLogStorage(),
      transport,
      clock: frozenClock(),
      rng: seededRng(i + 1),
      stateMachine: new KvStateMachine(),
      bootstrap: { voters: ids },
    })
    node.start()
    members.push({ node, transport })
  }
  return members
}

afterEach(async () => {
  for (const { network, members } of networks.splice(0)) {
    for (const member of members) {
      await member.node.stop()
      await member.transport.stop()
    }
    await network.close()
  }
})

describe('RaftNode wake-ups', () => {
  it('elects a leader, commits sequential writes and serves reads without any tick', async () => {
    const [first, ...others] = await startCluster(['a', 'b', 'c'])
    first!.node.campaign()
    // The election and the new leader's first entry run on messages alone.
    await within('the election', waitForLeader(first!))
    for (let i = 0; i < 50; i++) {
      const result = await within(
        `write ${i + 1}`,
        first!.node.propose(encodeKvCommand({ op: 'put', key: `k${i % 5}`, value: `v${i}` })),
      )
      expect(result.ok).toBe(true)
    }
    // A follower's linearizable read goes to the leader and back, then waits for its own apply.
    await within('a read on a follower', others[0]!.node.readIndex())
    expect(first!.node.status().applied).toBeGreaterThanOrEqual(52)
  })
})

/** Polls (in real time) until `member` leads; the clock stays frozen meanwhile. */
async function waitForLeader(member: Member): Promise<void> {
  while (!member.node.isLeader()) await new Promise((resolve) => setTimeout(resolve, 5))
}
