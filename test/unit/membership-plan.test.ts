// The leader's membership plan: given the members in the state, the Raft
// configuration and what the leader observes, it adds new members as
// learners, marks caught-up learners, keeps voters odd up to maxVoters,
// replaces offline voters with standbys in one joint change, and removes
// members that left. Pure function: each case builds an input and checks the
// actions.

import { describe, expect, it } from 'vitest'
import { ConfChangeOp, ConfChangeTransition, type ConfState } from '../../consensus/index.ts'
import {
  type MembershipAction,
  type MembershipInput,
  planMembership,
} from '../../src/node/membership-plan.ts'
import type { Member } from '../../src/state/cluster-state.ts'

function member(id: string, joinedAt: number, extra: Partial<Member> = {}): Member {
  return {
    id,
    name: id,
    address: `/ip4/127.0.0.1/tcp/${1000 + joinedAt}`,
    portal: '',
    joinedAt,
    online: true,
    onlineChangedAt: 0,
    caughtUp: false,
    leaving: false,
    ...extra,
  }
}

function conf(voters: string[], learners: string[] = [], votersOutgoing: string[] = []): ConfState {
  return { voters, learners, votersOutgoing, learnersNext: [], autoLeave: false }
}

function input(
  partial: Partial<MembershipInput> & Pick<MembershipInput, 'members' | 'confState'>,
): MembershipInput {
  const observed = new Map(partial.members.map((m) => [m.id, { lastContactMs: 10, match: 100 }]))
  return {
    leaderId: 'a',
    observed,
    commitIndex: 100,
    maxVoters: 3,
    offlineThresholdMs: 15_000,
    catchUpLagEntries: 10,
    ...partial,
  }
}

function confChanges(actions: MembershipAction[]) {
  return actions.flatMap((a) => (a.type === 'conf-change' ? [a.change] : []))
}

describe('planMembership', () => {
  it('adds a member that joined the state as a learner', () => {
    const actions = planMembership(
      input({ members: [member('a', 1), member('b', 2)], confState: conf(['a']) }),
    )
    expect(confChanges(actions)).toEqual([
      {
        transition: ConfChangeTransition.Auto,
        changes: [{ op: ConfChangeOp.AddLearner, node: 'b' }],
        context: new Uint8Array(0),
      },
    ])
  })

  it('marks a learner caught up once it is within the lag of the commit index', () => {
    const members = [member('a', 1), member('b', 2)]
    const observed = new Map([
      ['a', { lastContactMs: 0, match: 100 }],
      ['b', { lastContactMs: 5, match: 95 }],
    ])
    expect(planMembership(input({ members, confState: conf(['a'], ['b']), observed }))).toContainEqual({
      type: 'caught-up',
      id: 'b',
    })
    observed.set('b', { lastContactMs: 5, match: 50 })
    expect(planMembership(input({ members, confState: conf(['a'], ['b']), observed }))).toEqual([])
  })

  it('keeps a single voter while only one standby exists, then promotes two at once', () => {
    const one = planMembership(
      input({ members: [member('a', 1), member('b', 2, { caughtUp: true })], confState: conf(['a'], ['b']) }),
    )
    expect(confChanges(one)).toEqual([])
    const two = planMembership(
      input({
        members: [member('a', 1), member('b', 2, { caughtUp: true }), member('c', 3, { caughtUp: true })],
        confState: conf(['a'], ['b', 'c']),
      }),
    )
    const [change] = confChanges(two)
    expect(change?.transition).toBe(ConfChangeTransition.JointImplicit)
    expect(change?.changes).toEqual([
      { op: ConfChangeOp.AddVoter, node: 'b' },
      { op: ConfChangeOp.AddVoter, node: 'c' },
    ])
  })

  it('does not grow past maxVoters', () => {
    const members = ['a', 'b', 'c', 'd', 'e'].map((id, i) => member(id, i, { caughtUp: true }))
    expect(
      confChanges(planMembership(input({ members, confState: conf(['a', 'b', 'c'], ['d', 'e']) }))),
    ).toEqual([])
  })

  it('replaces an offline voter with a standby in one joint change and records the liveness change', () => {
    const members = [member('a', 1), member('b', 2), member('c', 3), member('d', 4, { caughtUp: true })]
    const observed = new Map([
      ['a', { lastContactMs: 0, match: 100 }],
      ['b', { lastContactMs: 20_000, match: 90 }],
      ['c', { lastContactMs: 10, match: 100 }],
      ['d', { lastContactMs: 10, match: 100 }],
    ])
    const actions = planMembership(input({ members, confState: conf(['a', 'b', 'c'], ['d']), observed }))
    expect(actions[0]).toEqual({ type: 'liveness', changes: [{ id: 'b', online: false }] })
    const [change] = confChanges(actions)
    expect(change?.transition).toBe(ConfChangeTransition.JointImplicit)
    expect(change?.changes).toEqual([
      { op: ConfChangeOp.AddLearner, node: 'b' },
      { op: ConfChangeOp.AddVoter, node: 'd' },
    ])
  })

  it('keeps an offline voter when there is no standby to replace it', () => {
    const members = [member('a', 1), member('b', 2), member('c', 3)]
    const observed = new Map([
      ['a', { lastContactMs: 0, match: 100 }],
      ['b', { lastContactMs: 20_000, match: 90 }],
      ['c', { lastContactMs: 10, match: 100 }],
    ])
    expect(
      confChanges(planMembership(input({ members, confState: conf(['a', 'b', 'c']), observed }))),
    ).toEqual([])
  })

  it('removes a member that left the state and one that is leaving', () => {
    const gone = planMembership(
      input({ members: [member('a', 1), member('b', 2)], confState: conf(['a', 'b', 'c']) }),
    )
    expect(confChanges(gone)[0]?.changes).toEqual([{ op: ConfChangeOp.Remove, node: 'c' }])
    const leaving = planMembership(
      input({
        members: [member('a', 1), member('b', 2, { leaving: true }), member('c', 3)],
        confState: conf(['a', 'b', 'c']),
      }),
    )
    expect(confChanges(leaving)[0]?.changes).toEqual([{ op: ConfChangeOp.Remove, node: 'b' }])
  })

  it('forgets a leaving member once it is out of the group, and not before', () => {
    const members = [member('a', 1), member('b', 2), member('c', 3), member('d', 4, { leaving: true })]
    const out = planMembership(input({ members, confState: conf(['a', 'b', 'c']) }))
    expect(out).toContainEqual({ type: 'forget', id: 'd' })
    const stillIn = planMembership(input({ members, confState: conf(['a', 'b', 'c'], ['d']) }))
    expect(stillIn.some((a) => a.type === 'forget')).toBe(false)
  })

  it('demotes the newest voter of an even voter set when nobody can be promoted', () => {
    const actions = planMembership(
      input({ members: [member('a', 1), member('b', 2)], confState: conf(['a', 'b']) }),
    )
    expect(confChanges(actions)[0]?.changes).toEqual([{ op: ConfChangeOp.AddLearner, node: 'b' }])
  })

  it('waits for a catching-up learner instead of demoting a voter of an even set', () => {
    const members = [member('a', 1), member('b', 2), member('c', 3)]
    const observed = new Map([
      ['a', { lastContactMs: 0, match: 100 }],
      ['b', { lastContactMs: 10, match: 100 }],
      ['c', { lastContactMs: 10, match: 3 }],
    ])
    expect(
      confChanges(planMembership(input({ members, confState: conf(['a', 'b'], ['c']), observed }))),
    ).toEqual([])
  })

  it('changes nothing in the Raft group while a joint configuration is in effect', () => {
    const members = [member('a', 1), member('b', 2), member('c', 3), member('d', 4)]
    const actions = planMembership(input({ members, confState: conf(['a', 'b', 'd'], [], ['a', 'b', 'c']) }))
    expect(confChanges(actions)).toEqual([])
  })
})

describe('planMembership liveness', () => {
  it('gives no liveness verdict on a member the leader does not track yet', () => {
    const members = [member('a', 1), member('b', 2)]
    const observed = new Map([['a', { lastContactMs: 0, match: 100 }]])
    const actions = planMembership(input({ members, confState: conf(['a']), observed }))
    expect(actions.some((a) => a.type === 'liveness')).toBe(false)
  })
})
