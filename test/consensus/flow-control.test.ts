// Flow control on the leader (etcd's raft_flow_control_test.go,
// TestUncommittedEntryLimit, TestProgressFlowControl): a probing follower gets
// one append at a time; a replicating one at most inflightAppendsMax
// unacknowledged appends, and a heartbeat answer frees one slot of a full
// window; uncommittedBytesMax refuses proposals while followers are down;
// entriesPerAppendMax and messageBytesMax bound each append. Cores run in a
// hand-driven CoreNetwork; appends to the follower under test are counted in
// the queue and held back or delivered one by one.

import { describe, expect, it } from 'vitest'
import { entryBytes } from '../../consensus/codec.ts'
import { ProposalDroppedError } from '../../consensus/errors.ts'
import { type Message, MessageType } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const appendsTo = (to: string) => (m: Message) => m.type === MessageType.Append && m.to === to

describe('flow control', () => {
  it('a probing follower gets one append at a time until it answers', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.campaign('a')
    net.deliverUntil(() => net.node('a').isLeader())
    expect(net.node('a').status().progress.get('b')?.state).toBe('probe')
    for (const data of ['x1', 'x2', 'x3']) net.propose('a', data)
    expect(net.queue.filter(appendsTo('b')).length).toBe(1) // the no-op's probe only
    net.stabilize()
    net.heartbeat('a')
    expect(net.appliedData('b')).toEqual(['x1', 'x2', 'x3'])
  })

  it('the inflight window fills and blocks further appends until one is acknowledged', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { inflightAppendsMax: 3 } })
    net.elect('a')
    net.heartbeat('a')
    for (const data of ['x1', 'x2', 'x3', 'x4', 'x5']) net.propose('a', data)
    const held = net.take(appendsTo('b'))
    expect(held.map((m) => m.entries.map((e) => e.index))).toEqual([[3], [4], [5]])
    expect(net.queue.filter(appendsTo('c')).length).toBe(3) // c's window is full too

    net.deliver(held[0]!) // b acknowledges index 3: one slot frees up
    net.deliverUntil(() => net.queue.some(appendsTo('b')))
    expect(net.take(appendsTo('b')).map((m) => m.entries.map((e) => e.index))).toEqual([[6, 7]])
  })

  it('an answer to a heartbeat frees one slot of a full window', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { inflightAppendsMax: 3 } })
    net.elect('a')
    net.heartbeat('a')
    for (const data of ['x1', 'x2', 'x3', 'x4']) net.propose('a', data)
    expect(net.take(appendsTo('b')).length).toBe(3) // lost on the way
    net.stabilize()
    expect(net.queue).toEqual([])

    net.tick('a') // heartbeat
    const beat = net.take((m) => m.type === MessageType.Heartbeat && m.to === 'b')
    net.queue = []
    net.deliver(beat[0]!)
    net.deliverOne() // b's answer
    expect(net.queue.filter(appendsTo('b')).length).toBe(1)
    // That one append is rejected (b lacks 3..5), which makes a probe back and repair b.
    net.stabilize()
    net.heartbeat('a')
    expect(net.appliedData('b')).toEqual(['x1', 'x2', 'x3', 'x4'])
  })

  it('uncommittedBytesMax refuses proposals while followers are down and accepts them once entries commit', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], {
      config: { proposalBytesMax: 10, uncommittedBytesMax: 50 },
    })
    net.elect('a')
    net.isolate('b')
    net.isolate('c')
    let accepted = 0
    for (let i = 0; i < 10; i++) {
      try {
        net.propose('a', `value-${i}...`.slice(0, 10))
        accepted++
      } catch (error) {
        expect(error).toBeInstanceOf(ProposalDroppedError)
        break
      }
    }
    expect(accepted).toBe(5)
    expect(() => net.propose('a', 'one-more')).toThrow(/uncommitted/)

    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.appliedData('a').length).toBe(5)
    net.propose('a', 'again')
    net.heartbeat('a')
    expect(net.appliedData('b').at(-1)).toBe('again')
  })

  it('entriesPerAppendMax bounds the entries of every append', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { entriesPerAppendMax: 2 } })
    net.elect('a')
    net.isolate('c')
    for (let i = 0; i < 9; i++) net.propose('a', `x${i}`)
    net.stabilize()
    net.heal()
    const since = net.history.length
    net.heartbeat('a')
    net.heartbeat('a')
    const appends = net.history.slice(since).filter(appendsTo('c'))
    expect(appends.length).toBeGreaterThanOrEqual(5)
    expect(Math.max(...appends.map((m) => m.entries.length))).toBe(2)
    expect(net.appliedData('c').length).toBe(9)
  })

  it('messageBytesMax bounds the entry bytes of every append', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], {
      config: { messageBytesMax: 1024, proposalBytesMax: 300, snapshotChunkBytesMax: 1024 },
    })
    net.elect('a')
    net.isolate('c')
    for (let i = 0; i < 10; i++) net.propose('a', String(i).repeat(300))
    net.stabilize()
    net.heal()
    const since = net.history.length
    net.heartbeat('a')
    net.heartbeat('a')
    const appends = net.history.slice(since).filter(appendsTo('c'))
    const sizes = appends.map((m) => m.entries.reduce((sum, e) => sum + entryBytes(e), 0))
    expect(Math.max(...sizes)).toBeLessThanOrEqual(1024)
    expect(Math.max(...appends.map((m) => m.entries.length))).toBe(3) // 3 × 312 bytes fit, 4 do not
    expect(net.appliedData('c').length).toBe(10)
  })
})
