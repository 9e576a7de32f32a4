// Leadership transfer (thesis §3.10; etcd's TestLeaderTransfer* and
// TestTransferNonMember): the leader catches the target up, then sends it
// TimeoutNow so it campaigns at once (skipping pre-vote and the followers'
// lease); proposals are refused meanwhile; a transfer that does not finish in
// transferTimeoutTicks is abandoned. Cores run in a hand-driven CoreNetwork
// with pre-vote and check-quorum on (the harder case for a transfer); the
// assertions read roles, terms, the transferee and the messages that flowed.

import { describe, expect, it } from 'vitest'
import { NotLeaderError, ProposalDroppedError } from '../../consensus/errors.ts'
import { ConfChangeOp, ConfChangeTransition, MessageType, Role } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const T = 10

function cluster(): CoreNetwork {
  const net = new CoreNetwork(['a', 'b', 'c'], {
    learners: ['l'],
    config: { preVote: true, checkQuorum: true },
  })
  net.elect('a')
  net.heartbeat('a')
  return net
}

function removal(node: string) {
  return {
    transition: ConfChangeTransition.Auto,
    changes: [{ op: ConfChangeOp.Remove, node }],
    context: new Uint8Array(0),
  }
}

describe('leader transfer', () => {
  it('an up-to-date follower is told to campaign at once and wins despite the others’ lease', () => {
    const net = cluster()
    const since = net.history.length
    net.transferLeadership('a', 'b')
    net.stabilize()
    expect(net.node('b').status()).toMatchObject({ role: Role.Leader, term: 2 })
    expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 2, leader: 'b' })
    const kinds = net.trace(since).map((line) => line.split(' ').slice(0, 2).join(' '))
    expect(kinds.slice(0, 3)).toEqual(['a->b TimeoutNow', 'b->a Vote', 'b->c Vote'])
    expect(kinds).not.toContain('b->a PreVote')
    net.propose('b', 'x')
    net.heartbeat('b')
    expect(net.appliedData('c')).toEqual(['x'])
  })

  it('a slow follower is caught up first and only then told to campaign', () => {
    const net = cluster()
    net.isolate('c')
    for (const data of ['x', 'y', 'z']) net.propose('a', data)
    net.stabilize()
    net.heal()
    const last = net.node('a').log.lastIndex()
    const since = net.history.length
    net.transferLeadership('a', 'c')
    net.stabilize()
    expect(net.node('c').status()).toMatchObject({ role: Role.Leader, term: 2 })
    const trace = net.trace(since)
    const caughtUp = trace.indexOf(`c->a AppendResponse term=1 index=${last}`)
    const timeoutNow = trace.indexOf('a->c TimeoutNow term=1')
    expect(caughtUp).toBeGreaterThanOrEqual(0)
    expect(timeoutNow).toBeGreaterThan(caughtUp)
    net.heartbeat('c')
    expect(net.appliedData('c')).toEqual(['x', 'y', 'z'])
  })

  it('a follower that needs a snapshot gets it and the log after it before it is told to campaign', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], {
      config: { preVote: true, checkQuorum: true, snapshotChunkBytesMax: 4 },
    })
    net.elect('a')
    net.isolate('c')
    for (const data of ['x', 'y', 'z']) net.propose('a', data)
    net.stabilize()
    net.compact('a')
    net.propose('a', 'after')
    net.stabilize()
    net.heal()
    net.transferLeadership('a', 'c')
    net.stabilize()
    expect(net.history.some((m) => m.to === 'c' && m.type === MessageType.Snapshot)).toBe(true)
    expect(net.node('c').status()).toMatchObject({ role: Role.Leader, term: 2 })
    net.heartbeat('c')
    expect(net.record('c').state).toEqual(['x', 'y', 'z', 'after'])
  })

  it('proposals are refused while a transfer is in progress', () => {
    const net = cluster()
    net.cutLink('a', 'c')
    net.transferLeadership('a', 'c')
    expect(net.node('a').status().leadTransferee).toBe('c')
    expect(() => net.propose('a', 'x')).toThrow(ProposalDroppedError)
    net.heal()
    net.heartbeat('a') // c answers the heartbeat, is found up to date and told to campaign
    net.stabilize()
    expect(net.node('c').isLeader()).toBe(true)
    expect(() => net.propose('a', 'x')).toThrow(NotLeaderError)
  })

  it('a transfer that does not complete within the transfer timeout is abandoned, and proposals resume', () => {
    const net = cluster()
    net.isolate('c')
    net.propose('a', 'x') // c falls behind, so it needs catching up first
    net.stabilize()
    net.transferLeadership('a', 'c')
    net.elapse(T - 1, ['a', 'b'])
    expect(net.node('a').status().leadTransferee).toBe('c')
    net.elapse(1, ['a', 'b'])
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, leadTransferee: '' })
    net.propose('a', 'y')
    net.heartbeat('a')
    expect(net.appliedData('b')).toEqual(['x', 'y'])
  })

  it('a transfer to a learner or to a node that is not a member is refused', () => {
    const net = cluster()
    expect(() => net.transferLeadership('a', 'l')).toThrow(ProposalDroppedError)
    expect(() => net.transferLeadership('a', 'zz')).toThrow(ProposalDroppedError)
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, leadTransferee: '' })
    expect(net.queue).toEqual([])
  })

  it('a transfer to the leader itself changes nothing', () => {
    const net = cluster()
    net.transferLeadership('a', 'a')
    expect(net.queue).toEqual([])
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1, leadTransferee: '' })
    net.propose('a', 'x')
    net.heartbeat('a')
    expect(net.appliedData('b')).toEqual(['x'])
  })

  it('removing the transferee abandons the transfer', () => {
    const net = cluster()
    net.cutLink('a', 'c') // c cannot catch up, so the transfer stays pending
    net.proposeConfChange('a', removal('c'))
    net.transferLeadership('a', 'c')
    expect(net.node('a').status().leadTransferee).toBe('c')
    net.stabilize()
    expect(net.node('a').getConfState().voters).toEqual(['a', 'b'])
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, leadTransferee: '' })
    net.propose('a', 'x')
    net.heartbeat('a')
    expect(net.appliedData('b')).toEqual(['x'])
  })

  it('a leader removed during a transfer steps down and the others carry on', () => {
    const net = cluster()
    net.proposeConfChange('a', removal('a'))
    net.transferLeadership('a', 'b')
    net.stabilize()
    net.elapse(3 * T)
    expect(net.node('b').isLeader()).toBe(true)
    expect(net.node('a').role).toBe(Role.Follower)
    for (const id of ['a', 'b', 'c']) expect(net.node(id).getConfState().voters, id).toEqual(['b', 'c'])
    net.propose('b', 'x')
    net.heartbeat('b')
    expect(net.appliedData('c')).toEqual(['x'])
    // The transfer went ahead (b was caught up before a applied its removal).
    expect(net.history.some((m) => m.to === 'b' && m.type === MessageType.TimeoutNow)).toBe(true)
  })
})
