// Log replication after the Raft paper §5.3 and etcd's raft_paper_test.go /
// raft_test.go: the leader sends proposals, commits on a majority, followers
// check the preceding entry (log matching), drop conflicting suffixes, and the
// leader finds the point of agreement in few round trips (fast back-off);
// Figure 7's follower logs all converge to the leader's. Cores are driven by
// hand through CoreNetwork (logs can be built entry by entry with `logs`);
// the assertions read logs as "index@term", commit indexes and the messages
// that flowed.

import { describe, expect, it } from 'vitest'
import { type Entry, EntryType, MessageType, Role } from '../../consensus/types.ts'
import { CoreNetwork, text } from '../support/core-network.ts'

function entry(index: number, term: number): Entry {
  return { index, term, type: EntryType.Normal, data: text(`${index}@${term}`) }
}

function range(count: number, term: number): number[] {
  return Array.from({ length: count }, () => term)
}

describe('log replication (§5.3)', () => {
  it('a leader sends a proposal to every follower and commits it once a majority holds it', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.heartbeat('a')
    net.propose('a', 'x')
    const appends = net.take((m) => m.type === MessageType.Append)
    expect(
      appends.map(
        (m) => `${m.to} prev=${m.index}@${m.logTerm} [${m.entries.map((e) => `${e.index}@${e.term}`)}]`,
      ),
    ).toEqual(['b prev=2@1 [3@1]', 'c prev=2@1 [3@1]'])
    expect(net.node('a').log.committed).toBe(2)
    net.deliver(appends[0]!) // to b only
    expect(net.deliverOne()?.type).toBe(MessageType.AppendResponse) // b's acknowledgement
    expect(net.node('a').log.committed).toBe(3) // a majority was enough: c does not have it yet
    expect(net.logOf('c')).toEqual(['2@1'])
    expect(net.appliedData('a')).toEqual(['x'])
  })

  it('a leader commits once a majority of the cluster, counting itself, acknowledged the entry', () => {
    const cases = [
      { size: 1, acks: 0, committed: true },
      { size: 3, acks: 0, committed: false },
      { size: 3, acks: 1, committed: true },
      { size: 3, acks: 2, committed: true },
      { size: 5, acks: 1, committed: false },
      { size: 5, acks: 2, committed: true },
      { size: 5, acks: 4, committed: true },
    ]
    for (const { size, acks, committed } of cases) {
      const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`)
      const net = new CoreNetwork(ids)
      net.elect('n1')
      net.propose('n1', 'x')
      const index = net.node('n1').log.lastIndex()
      net.queue = []
      for (const from of ids.slice(1, 1 + acks)) {
        net.send({ type: MessageType.AppendResponse, from, to: 'n1', term: 1, index })
      }
      expect(net.node('n1').log.committed === index, `${size} nodes, ${acks} acks`).toBe(committed)
    }
  })

  it('a follower commits what the leader committed, never beyond the entries the leader sent it', () => {
    const net = new CoreNetwork(['a', 'b'], { logs: { a: [], b: [] }, hardStates: { b: { term: 1 } } })
    const b = net.node('b')
    net.send({ type: MessageType.Append, from: 'a', to: 'b', term: 1, entries: [entry(1, 1)], commit: 1 })
    expect(b.log.committed).toBe(1)
    net.send({
      type: MessageType.Append,
      from: 'a',
      to: 'b',
      term: 1,
      index: 1,
      logTerm: 1,
      entries: [entry(2, 1)],
      commit: 5,
    })
    expect(b.log.committed).toBe(2) // the leader's commit is 5, but b only knows up to 2
    expect(net.appliedData('b')).toEqual(['1@1', '2@1'])
  })

  it('a follower accepts an append only when it holds the preceding entry, and hints where logs agree', () => {
    const cases = [
      // matches a committed entry: answered with the commit index
      { index: 0, logTerm: 0, reject: false, answer: 1 },
      { index: 1, logTerm: 1, reject: false, answer: 1 },
      // matches an uncommitted entry
      { index: 2, logTerm: 2, reject: false, answer: 2 },
      // a different term at that index: rejected, hint at the last entry of term <= 1
      { index: 2, logTerm: 1, reject: true, answer: 2, hint: 1, hintTerm: 1 },
      // beyond the log: rejected, hint at its last entry
      { index: 3, logTerm: 3, reject: true, answer: 3, hint: 2, hintTerm: 2 },
    ]
    for (const c of cases) {
      const net = new CoreNetwork(['a', 'b'], {
        logs: { b: [1, 2] },
        hardStates: { b: { term: 2, commit: 1 } },
      })
      net.send({ type: MessageType.Append, from: 'a', to: 'b', term: 2, index: c.index, logTerm: c.logTerm })
      const [answer] = net.take((m) => m.from === 'b')
      const label = `append after ${c.index}@${c.logTerm}`
      expect(answer?.type, label).toBe(MessageType.AppendResponse)
      expect(answer?.reject, label).toBe(c.reject)
      expect(answer?.index, label).toBe(c.answer)
      if (c.reject) expect([answer?.rejectHint, answer?.logTerm], label).toEqual([c.hint, c.hintTerm])
    }
  })

  it('a follower deletes a conflicting suffix and appends the leader’s entries', () => {
    const cases = [
      { index: 2, logTerm: 2, entries: [entry(3, 3)], log: ['1@1', '2@2', '3@3'] },
      { index: 1, logTerm: 1, entries: [entry(2, 3), entry(3, 4)], log: ['1@1', '2@3', '3@4'] },
      { index: 0, logTerm: 0, entries: [entry(1, 1)], log: ['1@1', '2@2'] },
      { index: 0, logTerm: 0, entries: [entry(1, 3)], log: ['1@3'] },
    ]
    for (const c of cases) {
      const net = new CoreNetwork(['a', 'b'], { logs: { b: [1, 2] }, hardStates: { b: { term: 2 } } })
      const { index, logTerm, entries } = c
      net.send({ type: MessageType.Append, from: 'a', to: 'b', term: 4, index, logTerm, entries })
      expect(net.logOf('b'), `append after ${index}@${logTerm}`).toEqual(c.log)
    }
  })

  it('a delayed duplicate of an old append does not truncate the entries that follow it', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'x')
    const [old] = net.take((m) => m.type === MessageType.Append && m.to === 'b')
    net.deliver(old!)
    net.propose('a', 'y')
    net.propose('a', 'z')
    net.stabilize()
    expect(net.logOf('b')).toEqual(['2@1', '3@1', '4@1', '5@1'])
    net.deliver(old!)
    expect(net.logOf('b')).toEqual(['2@1', '3@1', '4@1', '5@1'])
  })
})

describe('log matching and conflict repair', () => {
  it('every follower log of Figure 7 converges to the leader’s log', () => {
    const leaderLog = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
    const figure7: Record<string, number[]> = {
      a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
      b: [1, 1, 1, 4],
      c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
      d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
      e: [1, 1, 1, 4, 4, 4, 4],
      f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    }
    for (const [shape, followerLog] of Object.entries(figure7)) {
      // A third, empty node gives the leader its majority when the follower's log is newer (d).
      const net = new CoreNetwork(['leader', 'follower', 'third'], {
        logs: { leader: leaderLog, follower: followerLog },
        hardStates: { leader: { term: 8, commit: leaderLog.length }, follower: { term: 7 } },
      })
      net.elect('leader')
      expect(net.node('leader').status(), shape).toMatchObject({ role: Role.Leader, term: 9 })
      net.propose('leader', 'x')
      net.stabilize()
      net.heartbeat('leader')
      expect(net.logOf('follower'), `(${shape})`).toEqual(net.logOf('leader'))
      expect(net.logOf('third'), `(${shape})`).toEqual(net.logOf('leader'))
      expect(net.appliedData('follower'), `(${shape})`).toEqual(net.appliedData('leader'))
    }
  })

  it('fast back-off finds where a long divergent log agrees in one or two rejected appends', () => {
    const shapes = [
      // 100 entries of term 2 that the leader (50 entries of term 3) never had
      { leader: [1, 1, 1, ...range(50, 3)], follower: [1, 1, 1, ...range(100, 2)] },
      // the divergent suffix spans several terms
      {
        leader: [1, 1, 1, ...range(60, 5)],
        follower: [1, 1, 1, ...range(20, 2), ...range(20, 3), ...range(20, 4)],
      },
      // the follower is far behind, with nothing divergent
      { leader: [1, 1, 1, ...range(80, 3)], follower: [1, 1, 1] },
    ]
    for (const { leader, follower } of shapes) {
      const net = new CoreNetwork(['a', 'b', 'c'], {
        logs: { a: leader, b: follower, c: leader },
        hardStates: { a: { term: 5 }, b: { term: 5 }, c: { term: 5 } },
      })
      net.elect('a')
      net.heartbeat('a')
      const rejections = net.history.filter(
        (m) => m.from === 'b' && m.type === MessageType.AppendResponse && m.reject,
      )
      const label = `follower of ${follower.length} entries`
      expect(rejections.length, label).toBeLessThanOrEqual(2)
      expect(net.logOf('b'), label).toEqual(net.logOf('a'))
    }
  })

  it('append responses that arrive out of order neither move a follower back nor stall replication', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.heartbeat('a')
    for (const data of ['x1', 'x2', 'x3', 'x4', 'x5']) net.propose('a', data)
    for (const m of net.take((m) => m.type === MessageType.Append && m.to === 'b')) net.deliver(m)
    const responses = net.take((m) => m.from === 'b' && m.type === MessageType.AppendResponse)
    expect(responses.map((m) => m.index)).toEqual([3, 4, 5, 6, 7])
    for (const m of responses.reverse()) net.deliver(m)
    // A stale rejection (of an append long since superseded) arrives last.
    net.send({
      type: MessageType.AppendResponse,
      from: 'b',
      to: 'a',
      term: 1,
      index: 4,
      reject: true,
      rejectHint: 3,
    })
    const progress = net.node('a').status().progress.get('b')!
    expect(progress).toMatchObject({ match: 7, next: 8, state: 'replicate' })

    net.stabilize()
    net.propose('a', 'y')
    net.heartbeat('a')
    for (const id of ['a', 'b', 'c'])
      expect(net.appliedData(id), id).toEqual(['x1', 'x2', 'x3', 'x4', 'x5', 'y'])
  })
})
