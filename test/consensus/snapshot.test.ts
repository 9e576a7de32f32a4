// Snapshots (Raft paper §7; etcd's TestSlowNodeRestore, TestRestore,
// TestRestoreIgnoreSnapshot, TestProvideSnap, TestRawNodeRestartFromSnapshot):
// a leader that compacted its log streams its snapshot to a follower that
// needs compacted entries, in chunks of snapshotChunkBytesMax with a bounded
// window; a lost chunk is resent after an idle election timeout; a snapshot
// the follower's log already covers only moves its commit index; nodes restart
// from a snapshot. The harness's state machine is the list of applied values,
// so comparing states compares replicas.

import { describe, expect, it } from 'vitest'
import { MessageType, Role } from '../../consensus/types.ts'
import { CoreNetwork, text } from '../support/core-network.ts'

const T = 10
const values = Array.from({ length: 20 }, (_, i) => `value-${String(i + 1).padStart(2, '0')}`)

/** a leads; c misses `values`; a then compacts its whole log. */
function compactedWithSlowFollower(config = {}): CoreNetwork {
  const net = new CoreNetwork(['a', 'b', 'c'], { config: { snapshotChunkBytesMax: 16, ...config } })
  net.elect('a')
  net.isolate('c')
  for (const value of values) net.propose('a', value)
  net.stabilize()
  net.compact('a')
  expect(net.node('a').log.firstIndex()).toBe(23)
  net.heal()
  return net
}

describe('snapshots', () => {
  it('a slow follower receives the leader’s snapshot in chunks and ends with the leader’s state', () => {
    const net = compactedWithSlowFollower()
    net.heartbeat('a')
    const chunks = net.history.filter((m) => m.to === 'c' && m.type === MessageType.Snapshot)
    const total = chunks[0]!.snapshot!.totalBytes
    expect(total).toBe(values.join('\n').length)
    expect(chunks.length).toBe(Math.ceil(total / 16))
    expect(chunks.every((m) => m.snapshot!.data.length <= 16)).toBe(true)
    expect(chunks.map((m) => m.snapshot!.offset)).toEqual(chunks.map((_, i) => i * 16))

    const c = net.node('c')
    expect(net.record('c').state).toEqual(values)
    expect(c.status()).toMatchObject({ commit: 22, applied: 22, firstIndex: 23 })
    expect(net.record('c').durable.snapshot?.meta.index).toBe(22)
    net.propose('a', 'after')
    net.heartbeat('a')
    expect(net.record('c').state).toEqual([...values, 'after'])
  })

  it('no more than snapshotChunksInflightMax chunks are unacknowledged at once', () => {
    const net = compactedWithSlowFollower({ snapshotChunksInflightMax: 3 })
    net.tick('a')
    let inFlight = 0
    let peak = 0
    while (net.queue.length > 0) {
      const m = net.deliverOne()
      if (m?.type === MessageType.Snapshot) inFlight++
      if (
        m?.type === MessageType.SnapshotResponse ||
        (m?.type === MessageType.AppendResponse && m.from === 'c')
      )
        inFlight = Math.max(0, inFlight - 1)
      const queued = net.queue.filter((q) => q.type === MessageType.Snapshot).length
      peak = Math.max(peak, inFlight + queued)
    }
    expect(peak).toBe(3)
    expect(net.record('c').state).toEqual(values)
  })

  it('a lost final chunk is resent after an election timeout without acknowledgements', () => {
    const net = compactedWithSlowFollower()
    net.tick('a')
    let dropped = 0
    while (net.queue.length > 0) {
      dropped += net.take(
        (m) =>
          m.type === MessageType.Snapshot &&
          m.snapshot!.offset + m.snapshot!.data.length === m.snapshot!.totalBytes,
      ).length
      net.deliverOne()
    }
    expect(dropped).toBe(1)
    expect(net.record('c').state).toEqual([])
    expect(net.node('a').status().progress.get('c')?.state).toBe('snapshot')

    // Heartbeats keep flowing, but only the idle timer resends the chunk.
    net.elapse(T - 1, ['a'])
    expect(net.record('c').state).toEqual([])
    net.elapse(1, ['a'])
    expect(net.record('c').state).toEqual(values)
    expect(net.node('a').status().progress.get('c')?.state).toBe('replicate')
  })

  it('a follower that restarts after installing a snapshot comes back with the snapshot’s state', () => {
    const net = compactedWithSlowFollower()
    net.heartbeat('a')
    const before = net.node('c').status()
    const c = net.restart('c')
    expect(net.record('c').state).toEqual(values)
    expect(c.status()).toMatchObject({
      term: before.term,
      commit: 22,
      firstIndex: 23,
      lastIndex: before.lastIndex,
    })
    net.propose('a', 'after')
    net.heartbeat('a')
    expect(net.record('c').state).toEqual([...values, 'after'])
  })

  it('a node that compacted its own log restarts from its snapshot plus the entries after it', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    for (const value of values.slice(0, 5)) net.propose('a', value)
    net.heartbeat('a')
    net.compact('b') // a snapshot at 7, the last applied entry
    net.propose('a', 'late')
    net.heartbeat('a')
    const b = net.restart('b')
    expect(b.status()).toMatchObject({ firstIndex: 8, lastIndex: 8, commit: 8, term: 1, vote: 'a' })
    expect(net.record('b').state).toEqual([...values.slice(0, 5), 'late'])
    // Only the entries after the snapshot were applied again.
    expect(net.appliedData('b')).toEqual(['late'])
  })

  it('a snapshot the follower’s log already covers only moves its commit index', () => {
    const net = new CoreNetwork(['a', 'b'], { logs: { b: [1, 1, 1] }, hardStates: { b: { term: 1 } } })
    const confState = net.node('b').getConfState()
    const data = text('not-the-state')
    const chunk = { meta: { index: 2, term: 1, confState }, totalBytes: data.length, offset: 0, data }
    net.send({ type: MessageType.Snapshot, from: 'a', to: 'b', term: 1, snapshot: chunk })
    const b = net.node('b')
    expect(b.status()).toMatchObject({ commit: 2, firstIndex: 1, lastIndex: 3 })
    expect(net.record('b').state).toEqual(['1@1', '2@1']) // applied from the log, not the snapshot
    expect(net.take((m) => m.from === 'b')).toMatchObject([{ type: MessageType.AppendResponse, index: 2 }])

    // A snapshot at or below the commit index is answered with the commit index at once.
    net.send({
      type: MessageType.Snapshot,
      from: 'a',
      to: 'b',
      term: 1,
      snapshot: { ...chunk, meta: { ...chunk.meta, index: 1 } },
    })
    expect(net.take((m) => m.from === 'b')).toMatchObject([{ type: MessageType.AppendResponse, index: 2 }])
    expect(b.log.firstIndex()).toBe(1)
  })

  it('a snapshot replaces a follower’s conflicting uncommitted entries', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { snapshotChunkBytesMax: 16 } })
    net.elect('c')
    net.isolate('c')
    // The old leader c writes entries that never commit.
    for (const value of ['lost-1', 'lost-2']) net.propose('c', value)
    net.stabilize()
    net.elect('a')
    for (const value of values) net.propose('a', value)
    net.stabilize()
    net.compact('a')
    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    const c = net.node('c')
    expect(c.role).toBe(Role.Follower)
    expect(net.record('c').state).toEqual(values)
    expect(net.logOf('c')).toEqual(net.logOf('a'))
    expect(net.history.some((m) => m.to === 'c' && m.type === MessageType.Snapshot)).toBe(true)
  })
})
