// Learners (non-voting members, thesis §4.2.1; etcd's TestLearner*,
// TestAddLearner, TestRemoveLearner, TestRestoreWithLearner): they never
// campaign and never count toward an election or a commit, yet receive the
// log and snapshots; a conf change promotes or removes them. Cores run in a
// hand-driven CoreNetwork; conf changes are proposed, committed and applied
// like any entry, and the assertions read roles, commit indexes, applied data
// and each node's configuration.

import { describe, expect, it } from 'vitest'
import { ConfChangeOp, ConfChangeTransition, MessageType, Role } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const T = 10

function change(op: ConfChangeOp, node: string) {
  return { transition: ConfChangeTransition.Auto, changes: [{ op, node }], context: new Uint8Array(0) }
}

describe('learners', () => {
  it('a learner never campaigns, however long it hears nothing', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.tick('l', 10 * T)
    net.campaign('l')
    expect(net.node('l').status()).toMatchObject({ role: Role.Follower, term: 0 })
    expect(net.queue.filter((m) => m.from === 'l')).toEqual([])
  })

  it('a candidate asks only voters, and a learner’s vote would not count anyway', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.campaign('a')
    expect(net.queue.map((m) => `${m.to} ${m.type}`)).toEqual([`b ${MessageType.Vote}`])
    net.queue = []
    net.send({ type: MessageType.VoteResponse, from: 'l', to: 'a', term: 1 })
    expect(net.node('a').role).toBe(Role.Candidate) // two voters: a needs b
    net.send({ type: MessageType.VoteResponse, from: 'b', to: 'a', term: 1 })
    expect(net.node('a').role).toBe(Role.Leader)
  })

  it('a learner grants a vote when asked, since the candidate may already count it as a voter', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.send({ type: MessageType.Vote, from: 'a', to: 'l', term: 1, index: 1, logTerm: 1 })
    expect(net.take((m) => m.from === 'l')[0]).toMatchObject({
      type: MessageType.VoteResponse,
      reject: false,
    })
  })

  it('a learner’s acknowledgement never commits an entry', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.elect('a')
    net.heartbeat('a')
    net.isolate('b')
    net.propose('a', 'x')
    net.stabilize()
    expect(net.logOf('l')).toContain('3@1') // l holds it: a and l are two of three members
    expect(net.node('a').log.committed).toBe(2) // but only one of two voters

    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.node('a').log.committed).toBe(3)
    for (const id of ['a', 'b', 'l']) expect(net.appliedData(id), id).toEqual(['x'])
  })

  it('a learner that fell behind a compaction is restored from a snapshot, learner status included', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.elect('a')
    net.isolate('l')
    for (const data of ['x', 'y', 'z']) net.propose('a', data)
    net.stabilize()
    net.compact('a')
    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    const l = net.node('l')
    expect(net.history.some((m) => m.to === 'l' && m.type === MessageType.Snapshot)).toBe(true)
    expect(net.record('l').state).toEqual(['x', 'y', 'z'])
    expect(l.getConfState()).toMatchObject({ voters: ['a', 'b'], learners: ['l'] })
    net.tick('l', 10 * T)
    expect(l.role).toBe(Role.Follower)
  })

  it('a learner added by a conf change receives the whole log', () => {
    const net = new CoreNetwork(['a', 'b'])
    net.elect('a')
    net.propose('a', 'x')
    net.addNode('l')
    net.proposeConfChange('a', change(ConfChangeOp.AddLearner, 'l'))
    net.stabilize()
    net.propose('a', 'y')
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.record('l').state).toEqual(['x', 'y'])
    for (const id of ['a', 'b', 'l']) {
      expect(net.node(id).getConfState(), id).toMatchObject({ voters: ['a', 'b'], learners: ['l'] })
    }
  })

  it('a learner promoted to voter counts toward commits and may lead', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.elect('a')
    net.proposeConfChange('a', change(ConfChangeOp.AddVoter, 'l'))
    net.stabilize()
    net.heartbeat('a')
    for (const id of ['a', 'b', 'l']) {
      expect(net.node(id).getConfState(), id).toMatchObject({ voters: ['a', 'b', 'l'], learners: [] })
    }
    // Three voters now: a and l commit without b.
    net.isolate('b')
    net.propose('a', 'x')
    net.stabilize()
    expect(net.appliedData('a')).toEqual(['x'])

    // And l may campaign: with a gone, l and b elect l.
    net.heal()
    net.isolate('a')
    net.tickElection('l')
    net.stabilize()
    expect(net.node('l').status()).toMatchObject({ role: Role.Leader, term: 2 })
  })

  it('a removed learner receives nothing more', () => {
    const net = new CoreNetwork(['a', 'b'], { learners: ['l'] })
    net.elect('a')
    net.proposeConfChange('a', change(ConfChangeOp.Remove, 'l'))
    net.stabilize()
    net.heartbeat('a')
    expect(net.node('a').getConfState()).toMatchObject({ voters: ['a', 'b'], learners: [] })
    expect(net.node('a').status().progress.has('l')).toBe(false)
    const since = net.history.length
    net.propose('a', 'x')
    net.heartbeat('a')
    expect(net.history.slice(since).filter((m) => m.to === 'l')).toEqual([])
    expect(net.appliedData('b')).toEqual(['x'])
    expect(net.appliedData('l')).toEqual([])
  })
})
