// Pre-vote (thesis §9.6) and check-quorum / leader lease (thesis §6.2,
// §4.2.3), after etcd's TestPreVote*, TestDisruptiveFollower(PreVote),
// TestPreVoteWithSplitVote, TestLeaderStepdownWhenQuorum*,
// TestLeaderSupersedingWithCheckQuorum and TestFreeStuckCandidateWithCheckQuorum.
// Cores run in a hand-driven CoreNetwork: time passes with elapse() (every
// node ticks, then everything is delivered) or with ticks on one node, and
// partitions are cut links. One test runs without either feature to show the
// disruption they exist to prevent.

import { describe, expect, it } from 'vitest'
import { MessageType, Role } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const T = 10

describe('pre-vote', () => {
  it('with pre-vote, a partitioned node that rejoins raises no term and does not disrupt the leader', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: true } })
    net.elect('a')
    net.isolate('c')
    net.elapse(5 * T) // c times out again and again; its pre-votes reach no one
    net.propose('a', 'x')
    net.stabilize()
    expect(net.node('c').status()).toMatchObject({ term: 1 })
    expect(net.node('c').role).not.toBe(Role.Candidate)

    net.heal()
    net.elapse(3 * T)
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1 })
    for (const id of ['b', 'c'])
      expect(net.node(id).status(), id).toMatchObject({ role: Role.Follower, term: 1, leader: 'a' })
    expect(net.appliedData('c')).toEqual(['x'])
  })

  it('without pre-vote and check-quorum, the same rejoining node raises the term and deposes the leader', () => {
    // This is the disruption pre-vote (and check-quorum) exist to prevent.
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: false, checkQuorum: false } })
    net.elect('a')
    net.isolate('c')
    net.elapse(5 * T)
    net.propose('a', 'x')
    net.stabilize()
    const cTerm = net.node('c').term
    expect(cTerm).toBeGreaterThan(2)

    net.heal()
    net.elapse(3 * T)
    // c's vote request of a higher term made a step down, although c (whose log
    // is behind) could never win: the cluster moved past c's term to elect again.
    expect(net.node('a').term).toBeGreaterThan(cTerm)
    expect(net.history.some((m) => m.from === 'c' && m.to === 'a' && m.type === MessageType.Vote)).toBe(true)
    expect(net.node('c').isLeader()).toBe(false)
  })

  it('a follower that timed out while the leader’s heartbeat was delayed deposes the leader without pre-vote', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { checkQuorum: true } })
    net.elect('a')
    net.tickElection('c') // c's timer fired before the leader's heartbeat reached it
    expect(net.node('c').status()).toMatchObject({ role: Role.Candidate, term: 2 })
    const votes = net.take((m) => m.from === 'c') // c's vote requests are still in flight
    expect(votes.length).toBe(2)

    // The delayed heartbeat of term 1 reaches c, which answers with its term 2:
    // the leader learns a higher term and steps down (this frees c, see below).
    net.tick('a')
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 2 })
    expect(net.node('b').status()).toMatchObject({ role: Role.Follower, term: 1 })
    expect(net.node('c').status()).toMatchObject({ role: Role.Candidate, term: 2 })
  })

  it('with pre-vote, a follower that timed out while the leader’s heartbeat was delayed rejoins without harm', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: true, checkQuorum: true } })
    net.elect('a')
    net.isolate('c')
    for (const data of ['x', 'y', 'z']) net.propose('a', data)
    net.stabilize()
    net.heal()
    net.campaign('c')
    net.stabilize()
    // a and b are in their lease: they ignore c's pre-vote, and no term moved.
    expect(net.node('c').status()).toMatchObject({ role: Role.PreCandidate, term: 1 })

    net.tick('a') // the delayed heartbeat of term 1 reaches c
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1 })
    expect(net.node('c').status()).toMatchObject({ role: Role.Follower, term: 1, leader: 'a' })
    net.heartbeat('a')
    expect(net.appliedData('c')).toEqual(['x', 'y', 'z'])
  })

  it('pre-vote with a split vote still elects a leader at the next attempt', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: true } })
    net.elect('a')
    net.isolate('a') // the leader goes down; b and c time out together
    net.campaign('b')
    net.campaign('c')
    net.stabilize()
    // Both passed pre-vote (each granted the other's), then each voted for itself.
    for (const id of ['b', 'c'])
      expect(net.node(id).status(), id).toMatchObject({ role: Role.Candidate, term: 2 })

    net.campaign('b') // b times out first
    net.stabilize()
    expect(net.node('b').status()).toMatchObject({ role: Role.Leader, term: 3 })
    expect(net.node('c').status()).toMatchObject({ role: Role.Follower, term: 3, leader: 'b' })
  })
})

describe('check-quorum', () => {
  it('a leader that hears from no quorum steps down within two election timeouts and a new leader takes over', () => {
    // The check runs once per election timeout on the acks since the previous
    // one: a cut just before a check is noticed at the next, so 2T at most.
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { checkQuorum: true } })
    net.elect('a')
    net.heartbeat('a')
    net.isolate('a')
    let ticks = 0
    while (net.node('a').isLeader() && ticks < 3 * T) {
      net.elapse(1)
      ticks++
    }
    expect(ticks).toBeLessThanOrEqual(2 * T)
    expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 1, leader: '' })
    net.elapse(2 * T)
    const leader = ['b', 'c'].find((id) => net.node(id).isLeader())
    expect(leader).toBeDefined()
    expect(net.node(leader!).term).toBe(2)
  })

  it('a leader that keeps hearing from a quorum stays leader', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { checkQuorum: true } })
    net.elect('a')
    net.isolate('c') // one follower down still leaves a quorum
    net.elapse(6 * T, ['a', 'b'])
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1 })
  })

  it('followers in their lease ignore vote requests, so a candidate cannot supersede a live leader', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { checkQuorum: true } })
    net.elect('a')
    net.campaign('c')
    net.stabilize()
    // b heard from a within the election timeout: it ignored c, and a stays.
    expect(net.node('c').status()).toMatchObject({ role: Role.Candidate, term: 2 })
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1 })
    expect(net.node('b').status()).toMatchObject({ role: Role.Follower, term: 1, vote: 'a' })

    // Once b has not heard from a for an election timeout, c's next campaign wins.
    net.cutLink('a', 'b')
    net.cutLink('a', 'c')
    net.tick('b', T)
    net.take((m) => m.from === 'b') // whatever b tried meanwhile is lost
    net.campaign('c')
    net.stabilize()
    expect(net.node('c').isLeader()).toBe(true)
  })

  it('a candidate stuck at a higher term is freed: the leader learns its term from a heartbeat answer', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { checkQuorum: true } })
    net.elect('a')
    net.isolate('a')
    net.campaign('c')
    net.stabilize()
    net.campaign('c')
    net.stabilize()
    // b is in its lease and ignores c, which is stuck two terms ahead.
    expect(net.node('b').status()).toMatchObject({ role: Role.Follower, term: 1 })
    expect(net.node('c').status()).toMatchObject({ role: Role.Candidate, term: 3 })

    net.heal()
    net.tick('a') // a's heartbeat of term 1 reaches c, whose answer carries term 3
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 3 })

    net.campaign('c')
    net.stabilize()
    expect(net.node('c').status()).toMatchObject({ role: Role.Leader, term: 4 })
  })
})
