// Crash and restart from durable state (etcd's TestRestartNode* and
// restart scenarios in the interaction tests): every Ready is persisted before
// its messages leave, so a node rebuilt from its durable copy (hard state,
// snapshot, entries) has the same term, vote, commit index and log, re-learns
// its configuration by re-applying committed entries, and the cluster keeps
// committing. CoreNetwork.restart() drops the node's in-flight messages and
// builds a new core from the durable copy.

import { describe, expect, it } from 'vitest'
import { ConfChangeOp, ConfChangeTransition, Role } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const T = 10

describe('restart', () => {
  it('a follower restarted from its durable copy has the same term, vote, commit and log', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    for (const data of ['x', 'y']) net.propose('a', data)
    net.heartbeat('a')
    const before = net.node('b').status()
    const log = net.logOf('b')

    const b = net.restart('b')
    expect(b.status()).toMatchObject({
      term: before.term,
      vote: before.vote,
      commit: before.commit,
      lastIndex: before.lastIndex,
      role: Role.Follower,
      leader: '',
    })
    expect(net.logOf('b')).toEqual(log)
    expect(net.appliedData('b')).toEqual(['x', 'y']) // re-applied from the log

    net.propose('a', 'z')
    net.heartbeat('a')
    expect(net.appliedData('b')).toEqual(['x', 'y', 'z'])
    expect(net.node('b').leader).toBe('a')
  })

  it('a restarted leader comes back as a follower; the others elect a leader and keep committing', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'x')
    net.heartbeat('a')
    const a = net.restart('a')
    expect(a.status()).toMatchObject({ role: Role.Follower, term: 1, vote: 'a' })

    net.elapse(3 * T)
    const leader = net.leader()
    expect(leader).toBeDefined()
    expect(net.node(leader!).term).toBe(2)
    net.propose(leader!, 'y')
    net.heartbeat(leader!)
    for (const id of ['a', 'b', 'c']) expect(net.record(id).state, id).toEqual(['x', 'y'])
  })

  it('a restarted node re-learns its configuration by re-applying committed conf changes', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.proposeConfChange('a', {
      transition: ConfChangeTransition.Auto,
      changes: [{ op: ConfChangeOp.AddLearner, node: 'l' }],
      context: new Uint8Array(0),
    })
    net.heartbeat('a')
    const b = net.restart('b')
    expect(b.getConfState()).toMatchObject({ voters: ['a', 'b', 'c'], learners: ['l'] })
  })

  it('every node restarting at once loses nothing committed, and the cluster carries on', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: true, checkQuorum: true } })
    net.elect('a')
    for (const data of ['x', 'y']) net.propose('a', data)
    net.heartbeat('a')
    const logs = ['a', 'b', 'c'].map((id) => net.logOf(id))
    for (const id of ['a', 'b', 'c']) net.restart(id)
    expect(['a', 'b', 'c'].map((id) => net.logOf(id))).toEqual(logs)

    net.elapse(4 * T)
    const leader = net.leader()
    expect(leader).toBeDefined()
    net.propose(leader!, 'z')
    net.heartbeat(leader!)
    for (const id of ['a', 'b', 'c']) expect(net.record(id).state, id).toEqual(['x', 'y', 'z'])
  })
})
