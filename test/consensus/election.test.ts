// Leader election after the Raft paper §5.1, §5.2 and §5.4.1 and etcd's
// raft_paper_test.go / raft_test.go election tests: term rules, who votes for
// whom and how often, randomized timeouts, dueling (pre-)candidates. Cores are
// driven by hand through CoreNetwork: ticks, campaigns, and messages that are
// delivered, dropped or crafted one by one; the assertions read each core's
// role, term, vote and the messages it sends.

import { describe, expect, it } from 'vitest'
import { MessageType, Role } from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const T = 10 // electionTimeoutTicks of the harness's default config

function sent(net: CoreNetwork, from: string, type: MessageType) {
  return net.queue.filter((m) => m.from === from && m.type === type)
}

describe('term rules (§5.1)', () => {
  it('a follower, a candidate and a leader each adopt the higher term of a message and become followers', () => {
    for (const start of ['follower', 'candidate', 'leader'] as const) {
      const net = new CoreNetwork(['a', 'b', 'c'])
      if (start === 'candidate') net.campaign('a')
      if (start === 'leader') net.elect('a')
      net.queue = []
      net.send({ type: MessageType.Append, from: 'b', to: 'a', term: 2, index: 1, logTerm: 1 })
      const a = net.node('a')
      expect(a.term, start).toBe(2)
      expect(a.role, start).toBe(Role.Follower)
      expect(a.leader, start).toBe('b')
    }
  })

  it('a node ignores an append or heartbeat of a stale term, and rejects a stale vote with its own term', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { hardStates: { a: { term: 2 } } })
    const a = net.node('a')
    const entry = { term: 1, index: 2, type: 0 as const, data: new Uint8Array(0) }
    net.send({
      type: MessageType.Append,
      from: 'b',
      to: 'a',
      term: 1,
      index: 1,
      logTerm: 1,
      entries: [entry],
    })
    net.send({ type: MessageType.Vote, from: 'c', to: 'a', term: 1, index: 9, logTerm: 1 })
    net.send({ type: MessageType.Heartbeat, from: 'b', to: 'a', term: 1 })
    expect(a.log.lastIndex()).toBe(1)
    expect(a.term).toBe(2)
    expect(a.leader).toBe('')
    expect(net.queue.map((m) => ({ type: m.type, to: m.to, term: m.term, reject: m.reject }))).toEqual([
      { type: MessageType.VoteResponse, to: 'c', term: 2, reject: true },
    ])
  })

  it('every node starts as a follower, at the term it persisted', () => {
    const net = new CoreNetwork(['a', 'b'], { hardStates: { b: { term: 5, vote: 'a' } } })
    expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 0, leader: '' })
    expect(net.node('b').status()).toMatchObject({ role: Role.Follower, term: 5, vote: 'a', leader: '' })
  })

  it('campaigning on a node that already leads changes nothing', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.campaign('a')
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1 })
  })
})

describe('leader election (§5.2)', () => {
  it('a leader sends a heartbeat of its term to every follower once per heartbeat interval', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { heartbeatIntervalTicks: 3 } })
    net.elect('a')
    net.tick('a', 2)
    expect(sent(net, 'a', MessageType.Heartbeat)).toEqual([])
    net.tick('a')
    const beats = sent(net, 'a', MessageType.Heartbeat)
    expect(beats.map((m) => `${m.to}@${m.term}`).sort()).toEqual(['b@1', 'c@1'])
  })

  it('a follower that hears nothing for an election timeout becomes a candidate and asks every voter', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.tickElection('a')
    const a = net.node('a')
    expect(a.status()).toMatchObject({ role: Role.Candidate, term: 1, vote: 'a' })
    const votes = sent(net, 'a', MessageType.Vote)
    expect(votes.map((m) => `${m.to} term=${m.term} last=${m.index}@${m.logTerm}`).sort()).toEqual([
      'b term=1 last=1@1',
      'c term=1 last=1@1',
    ])
  })

  it('a candidate that neither wins nor loses starts a new election at the next term', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.campaign('a')
    net.queue = [] // its vote requests are lost
    net.tickElection('a')
    expect(net.node('a').status()).toMatchObject({ role: Role.Candidate, term: 2, vote: 'a' })
    expect(sent(net, 'a', MessageType.Vote).every((m) => m.term === 2)).toBe(true)
  })

  it('a candidate wins with a majority of votes, loses with a majority of denials, and waits otherwise', () => {
    const cases: Array<{ size: number; votes: Record<string, boolean>; role: Role }> = [
      { size: 1, votes: {}, role: Role.Leader },
      { size: 3, votes: { n2: true, n3: true }, role: Role.Leader },
      { size: 3, votes: { n2: true }, role: Role.Leader },
      { size: 5, votes: { n2: true, n3: true, n4: true, n5: true }, role: Role.Leader },
      { size: 5, votes: { n2: true, n3: true, n4: true }, role: Role.Leader },
      { size: 5, votes: { n2: true, n3: true }, role: Role.Leader },
      { size: 3, votes: { n2: false, n3: false }, role: Role.Follower },
      { size: 5, votes: { n2: false, n3: false, n4: false, n5: false }, role: Role.Follower },
      { size: 5, votes: { n2: true, n3: false, n4: false, n5: false }, role: Role.Follower },
      { size: 3, votes: {}, role: Role.Candidate },
      { size: 5, votes: { n2: true }, role: Role.Candidate },
      { size: 5, votes: { n2: false, n3: false }, role: Role.Candidate },
      { size: 5, votes: {}, role: Role.Candidate },
    ]
    for (const { size, votes, role } of cases) {
      const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`)
      const net = new CoreNetwork(ids)
      net.campaign('n1')
      net.queue = []
      for (const [from, granted] of Object.entries(votes)) {
        net.send({ type: MessageType.VoteResponse, from, to: 'n1', term: 1, reject: !granted })
      }
      const label = `${size} nodes, votes ${JSON.stringify(votes)}`
      expect(net.node('n1').role, label).toBe(role)
      expect(net.node('n1').term, label).toBe(1)
    }
  })

  it('a follower grants at most one vote per term, first come first served', () => {
    const cases: Array<{ vote: string; candidate: string; granted: boolean }> = [
      { vote: '', candidate: 'b', granted: true },
      { vote: '', candidate: 'c', granted: true },
      { vote: 'b', candidate: 'b', granted: true },
      { vote: 'c', candidate: 'c', granted: true },
      { vote: 'b', candidate: 'c', granted: false },
      { vote: 'c', candidate: 'b', granted: false },
    ]
    for (const { vote, candidate, granted } of cases) {
      const net = new CoreNetwork(['a', 'b', 'c'], { hardStates: { a: { term: 1, vote } } })
      net.send({ type: MessageType.Vote, from: candidate, to: 'a', term: 1, index: 1, logTerm: 1 })
      const [answer] = net.take((m) => m.from === 'a')
      expect(answer?.type).toBe(MessageType.VoteResponse)
      expect(answer?.reject, `voted for '${vote}', asked by ${candidate}`).toBe(!granted)
      expect(net.node('a').vote).toBe(vote === '' ? candidate : vote)
    }
  })

  it('a vote is persisted before it is sent, so a restarted node does not vote twice in a term', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.send({ type: MessageType.Vote, from: 'a', to: 'b', term: 1, index: 1, logTerm: 1 })
    expect(net.take((m) => m.from === 'b')[0]?.reject).toBe(false)
    expect(net.record('b').durable.hardState).toMatchObject({ term: 1, vote: 'a' })

    const b = net.restart('b')
    expect(b.status()).toMatchObject({ term: 1, vote: 'a', role: Role.Follower })
    net.send({ type: MessageType.Vote, from: 'c', to: 'b', term: 1, index: 1, logTerm: 1 })
    expect(net.take((m) => m.from === 'b')[0]?.reject).toBe(true)
    net.send({ type: MessageType.Vote, from: 'a', to: 'b', term: 1, index: 1, logTerm: 1 })
    expect(net.take((m) => m.from === 'b')[0]?.reject).toBe(false)
  })

  it('a candidate that hears an append or heartbeat of its own term from a leader becomes its follower', () => {
    for (const type of [MessageType.Append, MessageType.Heartbeat]) {
      const net = new CoreNetwork(['a', 'b', 'c'])
      net.campaign('a')
      net.queue = []
      net.send({ type, from: 'b', to: 'a', term: 1, index: 1, logTerm: 1 })
      expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 1, leader: 'b' })
    }
  })

  it('election timeouts are drawn anew from [T, 2T) for followers and candidates alike', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    const a = net.node('a')
    const followerTimeouts = new Set<number>()
    const candidateTimeouts = new Set<number>()
    let term = 1
    for (let round = 0; round < 60; round++) {
      // A heartbeat of a newer term resets the follower's timer and draws a new timeout.
      net.send({ type: MessageType.Heartbeat, from: 'b', to: 'a', term: ++term })
      let ticks = 0
      while (a.role === Role.Follower) {
        net.tick('a')
        ticks++
      }
      followerTimeouts.add(ticks)
      term = a.term
      ticks = 0
      while (a.term === term) {
        net.tick('a')
        ticks++
      }
      candidateTimeouts.add(ticks)
      term = a.term
      net.queue = []
    }
    for (const timeouts of [followerTimeouts, candidateTimeouts]) {
      for (const ticks of timeouts) {
        expect(ticks).toBeGreaterThanOrEqual(T)
        expect(ticks).toBeLessThan(2 * T)
      }
      expect(timeouts.size).toBeGreaterThan(T / 2)
    }
  })

  it('election timeouts differ between nodes, so they rarely time out together', () => {
    const ids = ['a', 'b', 'c', 'd', 'e']
    const net = new CoreNetwork(ids)
    const rounds = 200
    let conflicts = 0
    let term = 1
    for (let round = 0; round < rounds; round++) {
      term++
      for (const id of ids) net.send({ type: MessageType.Heartbeat, from: 'z', to: id, term })
      net.queue = []
      let timedOut: string[] = []
      while (timedOut.length === 0) {
        for (const id of ids) net.node(id).tick()
        timedOut = ids.filter((id) => net.node(id).role !== Role.Follower)
      }
      if (timedOut.length > 1) conflicts++
      for (const id of ids) net.processReady(id)
      net.queue = []
    }
    expect(conflicts / rounds).toBeLessThan(0.3)
  })

  it('a voter grants its vote only to a candidate whose log is at least as up to date as its own (§5.4.1)', () => {
    const cases: Array<{ log: number[]; lastTerm: number; lastIndex: number; granted: boolean }> = [
      // the same last term: the longer (or equal) log wins
      { log: [1], lastTerm: 1, lastIndex: 1, granted: true },
      { log: [1], lastTerm: 1, lastIndex: 2, granted: true },
      { log: [1, 1], lastTerm: 1, lastIndex: 1, granted: false },
      // the candidate's last term is higher: granted whatever the length
      { log: [1], lastTerm: 2, lastIndex: 1, granted: true },
      { log: [1], lastTerm: 2, lastIndex: 2, granted: true },
      { log: [1, 1], lastTerm: 2, lastIndex: 1, granted: true },
      // the voter's last term is higher: denied whatever the length
      { log: [2], lastTerm: 1, lastIndex: 1, granted: false },
      { log: [2], lastTerm: 1, lastIndex: 2, granted: false },
      { log: [2, 1], lastTerm: 1, lastIndex: 1, granted: false },
    ]
    for (const { log, lastTerm, lastIndex, granted } of cases) {
      const net = new CoreNetwork(['a', 'b'], { logs: { a: log }, hardStates: { a: { term: 2 } } })
      net.send({ type: MessageType.Vote, from: 'b', to: 'a', term: 3, index: lastIndex, logTerm: lastTerm })
      const [answer] = net.take((m) => m.from === 'a')
      expect(answer?.reject, `voter log ${log}, candidate last ${lastIndex}@${lastTerm}`).toBe(!granted)
    }
  })
})

describe('votes from any state', () => {
  type Start = 'follower' | 'pre-candidate' | 'candidate' | 'leader'
  function nodeIn(start: Start): CoreNetwork {
    // a is in the given role at term 2 (a pre-candidate keeps term 1); b asks with an up-to-date log.
    const net = new CoreNetwork(['a', 'b', 'c'], { hardStates: { a: { term: 1 } } })
    if (start === 'pre-candidate') {
      net.node('a').campaign('pre')
    } else if (start === 'candidate') {
      net.campaign('a')
    } else if (start === 'leader') {
      net.campaign('a')
      net.queue = []
      net.send({ type: MessageType.VoteResponse, from: 'c', to: 'a', term: 2 })
    } else {
      net.send({ type: MessageType.Heartbeat, from: 'c', to: 'a', term: 2 })
    }
    net.processReady('a')
    net.queue = []
    return net
  }

  it('a node in any state grants a vote of a higher term to an up-to-date candidate and follows it', () => {
    for (const start of ['follower', 'pre-candidate', 'candidate', 'leader'] as const) {
      const net = nodeIn(start)
      const a = net.node('a')
      const lastIndex = a.log.lastIndex()
      net.send({
        type: MessageType.Vote,
        from: 'b',
        to: 'a',
        term: 3,
        index: lastIndex,
        logTerm: a.log.lastTerm(),
      })
      expect(net.take((m) => m.from === 'a')[0], start).toMatchObject({
        type: MessageType.VoteResponse,
        reject: false,
      })
      expect(a.status(), start).toMatchObject({ role: Role.Follower, term: 3, vote: 'b' })
    }
  })

  it('a node in any state grants a pre-vote of a higher term but changes neither role, term nor vote', () => {
    for (const start of ['follower', 'pre-candidate', 'candidate', 'leader'] as const) {
      const net = nodeIn(start)
      const a = net.node('a')
      const before = a.status()
      net.send({
        type: MessageType.PreVote,
        from: 'b',
        to: 'a',
        term: 3,
        index: a.log.lastIndex(),
        logTerm: a.log.lastTerm(),
      })
      expect(net.take((m) => m.from === 'a')[0], start).toMatchObject({
        type: MessageType.PreVoteResponse,
        reject: false,
        term: 3,
      })
      expect(a.status(), start).toMatchObject({ role: before.role, term: before.term, vote: before.vote })
    }
  })
})

describe('election scenarios (etcd raft_test.go)', () => {
  it('the winner of a later election overwrites newer entries of an earlier term, with or without pre-vote', () => {
    for (const preVote of [false, true]) {
      // n1 won term 1 and gave its entry to n2; n3 won term 2 and kept its entry; n4 and n5 voted for n3.
      const net = new CoreNetwork(['n1', 'n2', 'n3', 'n4', 'n5'], {
        config: { preVote },
        logs: { n1: [1], n2: [1], n3: [2] },
        hardStates: {
          n1: { term: 1 },
          n2: { term: 1 },
          n3: { term: 2, vote: 'n3' },
          n4: { term: 2, vote: 'n3' },
          n5: { term: 2, vote: 'n3' },
        },
      })
      // A quorum knows of term 2: n1's first campaign fails and only pushes its term to 2.
      net.elect('n1')
      expect(net.node('n1').status(), `preVote ${preVote}`).toMatchObject({ role: Role.Follower, term: 2 })
      net.elect('n1')
      expect(net.node('n1').status(), `preVote ${preVote}`).toMatchObject({ role: Role.Leader, term: 3 })
      for (const id of ['n1', 'n2', 'n3', 'n4', 'n5']) expect(net.logOf(id), id).toEqual(['1@1', '2@3'])
    }
  })

  it('a single node elects itself, with or without pre-vote', () => {
    for (const preVote of [false, true]) {
      const net = new CoreNetwork(['a'], { config: { preVote } })
      net.tickElection('a')
      expect(net.node('a').status(), `preVote ${preVote}`).toMatchObject({ role: Role.Leader, term: 1 })
      net.propose('a', 'x')
      expect(net.appliedData('a')).toEqual(['x'])
    }
  })

  it('dueling candidates: the one with the shorter log disrupts the term but cannot win', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.cutLink('a', 'c')
    net.cutLink('c', 'a')
    net.elect('a')
    net.campaign('c')
    net.stabilize()
    // a won with b's vote; c got only its own vote and was denied by b.
    expect(net.node('a').role).toBe(Role.Leader)
    expect(net.node('c').status()).toMatchObject({ role: Role.Candidate, term: 1 })

    net.heal()
    // c times out first and campaigns at term 2: everyone adopts the term, but
    // c's log lacks a's no-op, so both deny it and it falls back to follower.
    net.campaign('c')
    net.stabilize()
    for (const id of ['a', 'b', 'c'])
      expect(net.node(id).status(), id).toMatchObject({ role: Role.Follower, term: 2 })
    expect(net.logOf('a')).toEqual(['2@1'])
    expect(net.logOf('b')).toEqual(['2@1'])
    expect(net.logOf('c')).toEqual([])
  })

  it('dueling pre-candidates: with pre-vote the shorter log is refused before any term changes', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: true } })
    net.cutLink('a', 'c')
    net.cutLink('c', 'a')
    net.elect('a')
    net.campaign('c')
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1 })
    // b denied c's pre-vote (c's log is behind): c went back to follower without a new term.
    expect(net.node('c').status()).toMatchObject({ role: Role.Follower, term: 1 })

    net.heal()
    net.campaign('c')
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 1 })
    expect(net.node('b').status()).toMatchObject({ role: Role.Follower, term: 1 })
    expect(net.node('c').status()).toMatchObject({ role: Role.Follower, term: 1 })
  })

  it('a node whose term fell behind can still complete an election later', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: true } })
    net.cutLink('a', 'c')
    net.cutLink('c', 'a')
    net.cutLink('b', 'c')
    net.cutLink('c', 'b')
    net.elect('a')
    net.campaign('c') // pre-vote to nobody: c stays a pre-candidate at term 0
    net.elect('b')
    expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 2 })
    expect(net.node('b').status()).toMatchObject({ role: Role.Leader, term: 2 })
    expect(net.node('c').status()).toMatchObject({ role: Role.PreCandidate, term: 0 })

    // b crashes; c comes back far behind in term and log. Neither c nor a may be stuck.
    net.heal()
    net.isolate('b')
    net.campaign('c')
    net.campaign('a')
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Leader, term: 3 })
    expect(net.node('c').status()).toMatchObject({ role: Role.Follower, term: 3, leader: 'a' })
  })

  it('a pre-vote election, message by message', () => {
    const net = new CoreNetwork(['a', 'b', 'c'], { config: { preVote: true } })
    net.campaign('a')
    net.stabilize()
    expect(net.trace()).toEqual([
      'a->b PreVote term=1 index=1 logTerm=1',
      'a->c PreVote term=1 index=1 logTerm=1',
      'b->a PreVoteResponse term=1',
      // a has a majority of pre-votes: it campaigns for real at term 1.
      'c->a PreVoteResponse term=1',
      'a->b Vote term=1 index=1 logTerm=1',
      'a->c Vote term=1 index=1 logTerm=1',
      'b->a VoteResponse term=1',
      // a leads: it appends its no-op at index 2 and sends it to both.
      'c->a VoteResponse term=1',
      'a->b Append term=1 index=1 logTerm=1 entries=[2@1] commit=1',
      'a->c Append term=1 index=1 logTerm=1 entries=[2@1] commit=1',
      'b->a AppendResponse term=1 index=2',
      // The no-op is on a majority: committed; the new commit index goes out.
      'c->a AppendResponse term=1 index=2',
      'a->b Append term=1 index=2 logTerm=1 entries=[] commit=2',
      'a->c Append term=1 index=2 logTerm=1 entries=[] commit=2',
      'b->a AppendResponse term=1 index=2',
      'c->a AppendResponse term=1 index=2',
    ])
  })
})
