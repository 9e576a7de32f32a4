// The commit rule of the Raft paper §5.4.2 (Figure 8): a leader never
// commits an entry of an earlier term by counting replicas; such an entry is
// committed only together with an entry of the leader's own term. After etcd's
// TestLeaderOnlyCommitsLogFromCurrentTerm, TestCannotCommitWithoutNewTermEntry
// and TestCommitWithoutNewTermEntry, plus Figure 8 itself played out on five
// hand-driven cores: entries are kept from some nodes by cutting links and by
// dropping chosen append messages, then the assertions read commit indexes and
// logs.

import { describe, expect, it } from 'vitest'
import { type Message, MessageType, Role } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const five = ['s1', 's2', 's3', 's4', 's5']

/** Delivers queued messages until none are left, discarding the ones `drop` picks. */
function stabilizeDropping(net: CoreNetwork, drop: (m: Message) => boolean): void {
  for (let i = 0; net.queue.length > 0; i++) {
    if (i > 10_000) throw new Error('did not stabilize')
    net.take(drop)
    net.deliverOne()
  }
}

describe('commit rule (§5.4.2)', () => {
  it('a leader does not commit entries of an earlier term by counting replicas, only with one of its own term', () => {
    for (const { acked, commit } of [
      { acked: 1, commit: 0 },
      { acked: 2, commit: 0 },
      { acked: 3, commit: 3 },
    ]) {
      // a holds 1@1 2@2 from earlier terms and leads term 3 with b's vote.
      const net = new CoreNetwork(['a', 'b'], {
        logs: { a: [1, 2], b: [1, 2] },
        hardStates: { a: { term: 2 } },
      })
      net.campaign('a')
      net.queue = []
      net.send({ type: MessageType.VoteResponse, from: 'b', to: 'a', term: 3 })
      expect(net.node('a').role).toBe(Role.Leader)
      net.propose('a', 'x') // 3@3 is the no-op, 4@3 this proposal
      net.queue = []
      net.send({ type: MessageType.AppendResponse, from: 'b', to: 'a', term: 3, index: acked })
      expect(net.node('a').log.committed, `b acknowledged up to ${acked}`).toBe(commit)
    }
  })

  it('a new leader whose no-op reaches nobody commits nothing of the earlier term; its next entry commits it all', () => {
    const net = new CoreNetwork(five)
    net.elect('s1')
    net.partition(['s1', 's2'], ['s3', 's4', 's5'])
    net.propose('s1', 'x')
    net.propose('s1', 'y')
    net.stabilize()
    expect(net.node('s1').log.committed).toBe(2)

    net.heal()
    net.ignore(MessageType.Append) // keeps s2's no-op from reaching anyone
    net.elect('s2')
    expect(net.node('s2').status()).toMatchObject({ role: Role.Leader, term: 2, commit: 2 })

    net.heal()
    net.heartbeat('s2') // followers answer; s2 learns where each one is and feeds them
    net.propose('s2', 'z')
    net.stabilize()
    expect(net.node('s2').log.committed).toBe(6)
    expect(net.appliedData('s2')).toEqual(['x', 'y', 'z'])
  })

  it('a new leader commits the entries of earlier terms as soon as its own no-op is committed', () => {
    const net = new CoreNetwork(five)
    net.elect('s1')
    net.partition(['s1', 's2'], ['s3', 's4', 's5'])
    net.propose('s1', 'x')
    net.propose('s1', 'y')
    net.stabilize()
    expect(net.node('s1').log.committed).toBe(2)

    net.heal()
    net.elect('s2')
    expect(net.node('s2').log.committed).toBe(5) // x, y and the no-op 5@2
    expect(net.appliedData('s2')).toEqual(['x', 'y'])
  })
})

describe('Figure 8', () => {
  /**
   * Plays Figure 8 (a)–(c) with index 3 in the role of the paper's index 2:
   * s1 (term 1) gets 3@1 to s2 only; s5 (term 2) writes 3@2 locally; s1
   * (term 3) copies 3@1 to s3 and s4 but not its own no-op 4@3.
   */
  function figure8UpToC(): CoreNetwork {
    const net = new CoreNetwork(five, { config: { entriesPerAppendMax: 1 } })
    net.elect('s1')
    net.heartbeat('s1')
    // (a) s1 leads term 1 and replicates 3@1 to s2 only.
    net.partition(['s1', 's2'], ['s3', 's4', 's5'])
    net.propose('s1', 'x')
    net.stabilize()
    expect(net.logOf('s2')).toEqual(['2@1', '3@1'])

    // (b) s1 crashes; s5 is elected for term 2 by s3, s4 and itself and
    // appends 3@2 (its no-op), which reaches no one before s5 crashes too.
    net.heal()
    net.isolate('s1')
    net.ignore(MessageType.Append)
    net.elect('s5')
    expect(net.node('s5').status()).toMatchObject({ role: Role.Leader, term: 2 })
    expect(net.logOf('s5')).toEqual(['2@1', '3@2'])

    // (c) s1 restarts and is elected for term 3 (s2, s3, s4 vote), and
    // copies 3@1 to s3 and s4; its own 4@3 is lost on the way.
    net.heal()
    net.isolate('s5')
    net.restart('s1')
    // Drop every append that would give a follower 4@3 (the ones it would reject may pass).
    const ownTerm = (m: Message) =>
      m.type === MessageType.Append &&
      m.entries.some((e) => e.term === 3) &&
      net.node(m.to).log.matchTerm(m.index, m.logTerm)
    for (let attempt = 0; attempt < 3 && !net.node('s1').isLeader(); attempt++) {
      net.campaign('s1')
      stabilizeDropping(net, ownTerm)
    }
    expect(net.node('s1').status()).toMatchObject({ role: Role.Leader, term: 3 })
    for (const id of ['s1', 's2', 's3', 's4']) expect(net.node(id).log.term(3), id).toBe(1)
    expect(net.logOf('s1')).toEqual(['2@1', '3@1', '4@3'])
    return net
  }

  it('(c)→(d): an entry of an earlier term on a majority is not committed, and a later leader may overwrite it', () => {
    const net = figure8UpToC()
    // 3@1 is on four of five nodes, yet counting replicas must not commit it.
    expect(net.node('s1').log.committed).toBe(2)

    // (d) s1 crashes; s5 (last entry 3@2, newer than 3@1) wins term 4 and overwrites index 3 everywhere.
    net.heal()
    net.isolate('s1')
    net.restart('s5')
    for (let attempt = 0; attempt < 3 && !net.node('s5').isLeader(); attempt++) net.elect('s5')
    expect(net.node('s5').status()).toMatchObject({ role: Role.Leader, term: 4 })
    net.heartbeat('s5')
    for (const id of ['s2', 's3', 's4', 's5']) expect(net.logOf(id).slice(0, 2), id).toEqual(['2@1', '3@2'])

    // s1 returns and its 3@1 is replaced too: it was never committed, so nothing committed was lost.
    net.heal()
    net.heartbeat('s5')
    expect(net.logOf('s1')).toEqual(net.logOf('s5'))
    for (const id of five) expect(net.appliedData(id), id).toEqual([])
  })

  it('(c)→(e): once an entry of the leader’s term is on a majority, it and 3@1 are committed and s5 cannot win', () => {
    const net = figure8UpToC()
    // (e) s1 gets 4@3 onto a majority: 3@1 is committed with it.
    net.heartbeat('s1')
    expect(net.node('s1').log.committed).toBe(4)
    expect(net.appliedData('s1')).toEqual(['x'])

    // s1 crashes; s5's last entry 3@2 is older than the majority's 4@3: it can never be elected.
    net.heal()
    net.isolate('s1')
    net.restart('s5')
    for (let attempt = 0; attempt < 5; attempt++) net.elect('s5')
    expect(net.node('s5').isLeader()).toBe(false)
    // Someone with 4@3 leads instead, and the committed entries stay.
    net.tickElection('s2')
    net.stabilize()
    const leader = ['s2', 's3', 's4', 's5'].find((id) => net.node(id).isLeader())
    expect(['s2', 's3', 's4']).toContain(leader)
    net.heartbeat(leader!)
    for (const id of ['s2', 's3', 's4', 's5']) {
      expect(net.logOf(id).slice(0, 3), id).toEqual(['2@1', '3@1', '4@3'])
      expect(net.appliedData(id), id).toEqual(['x'])
    }
  })
})
