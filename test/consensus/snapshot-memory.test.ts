// Snapshot data kept in memory only while it is needed: once the driver says
// storage holds a node's latest snapshot (snapshotPersisted), the core drops
// its data; a leader that must send it to a follower asks for it
// (takeSnapshotDataRequest), streams what the driver reads back
// (provideSnapshotData) and drops it again once no transfer is running.
// Scenarios run on hand-driven cores (CoreNetwork) with a slow follower that
// needs the compacted log, and on RaftNodes with in-memory storage and real
// timers; replicas must end with the leader's state either way.

import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  MemoryLogStorage,
  RaftNode,
  realClock,
  type Snapshot,
  type StateMachine,
  seededRng,
} from '../../consensus/index.ts'
import { MessageType } from '../../consensus/types.ts'
import { MemoryNetwork } from '../../net/index.ts'
import { CoreNetwork, text } from '../support/core-network.ts'
import { encodeKvCommand, type KvResult, KvStateMachine } from '../support/kv-state-machine.ts'

const values = Array.from({ length: 20 }, (_, i) => `value-${String(i + 1).padStart(2, '0')}`)

/** a leads; c misses `values`; a compacts its whole log and storage holds the snapshot. */
function releasedWithSlowFollower(): { net: CoreNetwork; snapshot: Snapshot } {
  const net = new CoreNetwork(['a', 'b', 'c'], { config: { snapshotChunkBytesMax: 16 } })
  net.elect('a')
  net.isolate('c')
  for (const value of values) net.propose('a', value)
  net.stabilize()
  const snapshot = net.compact('a')
  net.node('a').snapshotPersisted(snapshot.meta.index)
  net.heal()
  return { net, snapshot }
}

describe('snapshot data in memory (cores)', () => {
  it('a node drops its snapshot data once storage holds it, and keeps the snapshot meta', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    for (const value of values) net.propose('a', value)
    net.stabilize()
    const snapshot = net.compact('a')
    const a = net.node('a')
    expect(a.log.snapshot?.data).toEqual(snapshot.data)
    a.snapshotPersisted(snapshot.meta.index)
    expect(a.log.snapshot).toBeNull()
    expect(a.log.snapshotMeta?.index).toBe(snapshot.meta.index)
  })

  it('a persisted mark for an older snapshot leaves a newer one in memory', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'one')
    net.stabilize()
    const older = net.compact('a')
    net.propose('a', 'two')
    net.stabilize()
    const newer = net.compact('a')
    net.node('a').snapshotPersisted(older.meta.index)
    expect(net.node('a').log.snapshot?.meta.index).toBe(newer.meta.index)
  })

  it('a leader asks for the data instead of sending a snapshot it no longer holds, and sends nothing meanwhile', () => {
    const { net, snapshot } = releasedWithSlowFollower()
    net.heartbeat('a')
    expect(net.history.filter((m) => m.to === 'c' && m.type === MessageType.Snapshot)).toEqual([])
    expect(net.node('a').takeSnapshotDataRequest()).toBe(snapshot.meta.index)
    // Asked once: the next request comes with the next attempt to send it.
    expect(net.node('a').takeSnapshotDataRequest()).toBe(0)
  })

  it('a follower that needs the compacted log gets the snapshot read back and ends with the leader’s state', () => {
    const { net, snapshot } = releasedWithSlowFollower()
    net.heartbeat('a')
    const a = net.node('a')
    expect(a.takeSnapshotDataRequest()).toBe(snapshot.meta.index)
    a.provideSnapshotData(structuredClone(net.record('a').durable.snapshot!))
    net.processReady('a')
    // While chunks are on their way the data stays, ticks or not.
    net.tick('a')
    expect(a.log.snapshot?.meta.index).toBe(snapshot.meta.index)
    net.stabilize()
    expect(net.history.some((m) => m.to === 'c' && m.type === MessageType.Snapshot)).toBe(true)
    expect(net.record('c').state).toEqual(values)
    // The transfer is over: the next tick drops the data again.
    net.tick('a')
    expect(a.log.snapshot).toBeNull()
    net.propose('a', 'after')
    net.heartbeat('a')
    expect(net.record('c').state).toEqual([...values, 'after'])
  })

  it('data read back for a snapshot that is not the latest any more is ignored', () => {
    const { net, snapshot } = releasedWithSlowFollower()
    net.heartbeat('a')
    const a = net.node('a')
    expect(a.takeSnapshotDataRequest()).toBe(snapshot.meta.index)
    const stale: Snapshot = { meta: { ...snapshot.meta, index: snapshot.meta.index - 1 }, data: text('old') }
    a.provideSnapshotData(stale)
    expect(a.log.snapshot).toBeNull()
    net.processReady('a')
    net.stabilize()
    expect(net.history.some((m) => m.to === 'c' && m.type === MessageType.Snapshot)).toBe(false)
  })

  it('a node whose driver never reports the snapshot persisted keeps its data and sends it at once', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { snapshotChunkBytesMax: 16 } })
    net.elect('a')
    net.isolate('c')
    for (const value of values) net.propose('a', value)
    net.stabilize()
    net.compact('a')
    net.heal()
    net.tick('a')
    net.heartbeat('a')
    expect(net.node('a').takeSnapshotDataRequest()).toBe(0)
    expect(net.record('c').state).toEqual(values)
  })
})

// ------------------------------------------------------------ RaftNodes

const SNAPSHOT_ENTRIES = 20
const KEEP_ENTRIES = 2
const TICK_MS = 5
const WAIT_MS = 10_000

/** Counts snapshot data held by a node's core (the latest snapshot's data, if in memory). */
function heldSnapshotBytes(node: RaftNode<KvResult>): number {
  return (
    (node as unknown as { core: { log: { snapshot: Snapshot | null } } }).core.log.snapshot?.data.length ?? 0
  )
}

async function waitFor(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, TICK_MS))
  }
}

interface Member {
  id: string
  node: RaftNode<KvResult>
  kv: KvStateMachine
  storage: MemoryLogStorage | StorageWithoutRead
}

/** The memory storage without loadSnapshot, as a storage that cannot read snapshots back. */
class StorageWithoutRead {
  readonly inner = new MemoryLogStorage()
  load = () => this.inner.load()
  save = (...args: Parameters<MemoryLogStorage['save']>) => this.inner.save(...args)
  compact = (...args: Parameters<MemoryLogStorage['compact']>) => this.inner.compact(...args)
  close = () => this.inner.close()
}

describe('snapshot data in memory (RaftNode)', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })

  async function cluster(options: {
    readBack: boolean
  }): Promise<{ members: Member[]; network: MemoryNetwork }> {
    const network = new MemoryNetwork()
    const ids = ['n1', 'n2', 'n3']
    const members: Member[] = []
    for (const [i, id] of ids.entries()) {
      const kv = new KvStateMachine()
      const storage = options.readBack ? new MemoryLogStorage() : new StorageWithoutRead()
      const transport = network.createTransport(id)
      transport.setPeers(ids.filter((peer) => peer !== id).map((peer) => ({ id: peer, addrs: [] })))
      const node = await RaftNode.create<KvResult>({
        id,
        storage,
        transport,
        clock: realClock(),
        rng: seededRng(i + 1),
        stateMachine: kv as StateMachine<KvResult>,
        raft: { electionTimeoutTicks: 10, heartbeatIntervalTicks: 1 },
        driver: { tickMs: TICK_MS, snapshotEntries: SNAPSHOT_ENTRIES, compactionKeepEntries: KEEP_ENTRIES },
        bootstrap: { voters: ids },
      })
      members.push({ id, node, kv, storage })
    }
    for (const m of members) m.node.start()
    cleanups.push(async () => {
      for (const m of members) await m.node.stop()
      await network.close()
    })
    members[0]!.node.campaign()
    await waitFor('a leader', () => members.some((m) => m.node.isLeader()))
    return { members, network }
  }

  async function put(leader: Member, count: number, prefix: string): Promise<void> {
    for (let i = 0; i < count; i++) {
      await leader.node.propose(encodeKvCommand({ op: 'put', key: `${prefix}-${i}`, value: `v${i}` }))
    }
  }

  it('no node keeps snapshot data in memory once its snapshots are stored', async () => {
    const { members } = await cluster({ readBack: true })
    const leader = members.find((m) => m.node.isLeader())!
    await put(leader, 3 * SNAPSHOT_ENTRIES, 'k')
    await waitFor('every node to have taken and stored a snapshot', () =>
      members.every(
        (m) => m.node.status().snapshotIndex > SNAPSHOT_ENTRIES && heldSnapshotBytes(m.node) === 0,
      ),
    )
  })

  it('a follower cut off past the compaction point catches up from the snapshot read back from storage', async () => {
    const { members, network } = await cluster({ readBack: true })
    const leader = members.find((m) => m.node.isLeader())!
    const lagging = members.find((m) => m !== leader)!
    const others = members.filter((m) => m !== lagging)
    for (const m of others) network.partition(m.id, lagging.id)
    await put(leader, 3 * SNAPSHOT_ENTRIES, 'k')
    await waitFor('the leader to compact past the cut-off follower and drop the data', () => {
      const s = leader.node.status()
      return s.firstIndex > lagging.node.status().lastIndex + 1 && heldSnapshotBytes(leader.node) === 0
    })
    const reads = vi.spyOn(leader.storage as MemoryLogStorage, 'loadSnapshot')
    network.healAll()
    await waitFor('the cut-off follower to catch up', () => lagging.kv.size === leader.kv.size)
    expect(lagging.kv.entries()).toEqual(leader.kv.entries())
    expect(reads).toHaveBeenCalled()
    await waitFor(
      'the leader to drop the data after the transfer',
      () => heldSnapshotBytes(leader.node) === 0,
    )
    await put(leader, 1, 'after')
    await waitFor(
      'the write after the transfer to reach the follower',
      () => lagging.kv.get('after-0') === 'v0',
    )
  })

  it('with a storage that cannot read snapshots back, the latest snapshot stays in memory', async () => {
    const { members } = await cluster({ readBack: false })
    const leader = members.find((m) => m.node.isLeader())!
    await put(leader, 2 * SNAPSHOT_ENTRIES, 'k')
    await waitFor('the leader to take a snapshot', () => leader.node.status().snapshotIndex > 1)
    expect(heldSnapshotBytes(leader.node)).toBeGreaterThan(0)
  })
})
