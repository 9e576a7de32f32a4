// Linearizable reads through ReadIndex (thesis §6.4; etcd's
// TestReadOnlyOptionSafe, TestReadOnlyForNewLeader, TestReadOnlyWithLearner):
// the leader records its commit index, confirms it still leads with a
// heartbeat round acknowledged by a quorum of voters, and only then hands out
// the read state; a new leader first commits its no-op. Followers forward
// reads. Cores run in a hand-driven CoreNetwork, so the tests see exactly when
// a read state appears (as "context@index").

import { describe, expect, it } from 'vitest'
import { MessageType } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

describe('ReadIndex', () => {
  it('a leader answers a read once a quorum acknowledged a heartbeat sent after the request', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'x')
    net.heartbeat('a')
    net.readIndex('a', 'r1')
    const beats = net.take((m) => m.type === MessageType.Heartbeat)
    expect(beats.map((m) => m.to)).toEqual(['b', 'c'])
    expect(net.reads('a')).toEqual([])
    net.deliver(beats[0]!) // to b
    expect(net.reads('a')).toEqual([])
    net.deliverOne() // b's answer: with a itself, a quorum
    expect(net.reads('a')).toEqual(['r1@3'])
  })

  it('a follower’s read is forwarded to the leader and answered with the leader’s commit index', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'x')
    net.stabilize()
    net.readIndex('c', 'r2')
    net.stabilize()
    expect(net.reads('c')).toEqual(['r2@3'])
    expect(net.reads('a')).toEqual([])
  })

  it('a new leader answers reads only after its no-op is committed', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'x')
    net.heartbeat('a')
    net.isolate('a')
    net.campaign('b')
    net.deliverUntil(() => net.node('b').isLeader())
    // c receives b's no-op (and so learns who leads), but its acknowledgement is held back.
    net.deliverUntil(() => net.node('c').leader === 'b')
    const held = net.take((m) => m.from === 'c' && m.type === MessageType.AppendResponse)
    expect(held.length).toBe(1)
    net.readIndex('b', 'own')
    net.readIndex('c', 'forwarded')
    net.stabilize()
    expect(net.node('b').log.committed).toBe(3)
    expect(net.reads('b')).toEqual([])
    expect(net.reads('c')).toEqual([])
    // Not even the heartbeat round starts: the commit index b knows may be stale.
    expect(net.history.some((m) => m.from === 'b' && m.type === MessageType.Heartbeat)).toBe(false)

    net.deliver(held[0]!)
    net.stabilize()
    expect(net.node('b').log.committed).toBe(4) // the no-op 4@2
    expect(net.reads('b')).toEqual(['own@4'])
    expect(net.reads('c')).toEqual(['forwarded@4'])
  })

  it('a single-node cluster answers a read at once', () => {
    const net = new CoreNetwork(['a'])
    net.elect('a')
    net.propose('a', 'x')
    net.readIndex('a', 'solo')
    expect(net.reads('a')).toEqual(['solo@3'])
    expect(net.queue).toEqual([])
  })

  it('acknowledgements from learners do not confirm a read', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.elect('a')
    net.heartbeat('a')
    net.isolate('b')
    net.readIndex('a', 'r')
    net.stabilize()
    expect(net.history.some((m) => m.from === 'l' && m.type === MessageType.HeartbeatResponse)).toBe(true)
    expect(net.reads('a')).toEqual([])
    net.heal()
    net.heartbeat('a')
    expect(net.reads('a')).toEqual(['r@2'])
  })

  it('a partitioned old leader never serves a read while a new leader exists', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.heartbeat('a')
    net.isolate('a')
    net.elect('b')
    net.propose('b', 'y')
    net.heartbeat('b')
    net.readIndex('a', 'stale')
    net.elapse(30, ['a'])
    expect(net.node('a').isLeader()).toBe(true) // it does not know yet
    expect(net.reads('a')).toEqual([])
    net.readIndex('b', 'fresh')
    net.stabilize()
    expect(net.reads('b')).toEqual(['fresh@4'])

    // Back in touch, a learns of term 2 and drops the read it could not confirm.
    net.heal()
    net.elapse(3)
    expect(net.node('a').leader).toBe('b')
    expect(net.reads('a')).toEqual([])
  })
})
