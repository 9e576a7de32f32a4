// What the leader should change about the Raft group, given the members the
// replicated state lists and what the leader observes of them. Pure: the
// leader's controller runs it every round and carries out the first action.
//
// Rules (after Incus's roles and Nomad's autopilot):
// - every member of the state is in the Raft group: new ones enter as learners;
// - members removed from the state, or leaving, are taken out of the group,
//   and a leaving member out of the group is then removed from the state;
// - a learner that caught up is a standby, promotable to voter;
// - voters are kept odd, up to maxVoters: standbys are promoted in ones or
//   twos; an even voter set with no standby is trimmed by one;
// - a voter offline past the threshold is replaced by a standby (one joint
//   change: the standby becomes voter and the offline voter a learner);
// - one membership change at a time.

import { type ConfChange, ConfChangeOp, ConfChangeTransition, type ConfState } from '../../consensus/index.ts'
import type { Member } from '../state/cluster-state.ts'

export interface MemberObservation {
  /** Ms since the leader last heard from the member (0 for the leader itself). */
  lastContactMs: number
  /** Raft log position of the member as the leader tracks it. */
  match: number
}

export interface MembershipInput {
  leaderId: string
  members: Member[]
  confState: ConfState
  observed: ReadonlyMap<string, MemberObservation>
  commitIndex: number
  maxVoters: number
  offlineThresholdMs: number
  /** A learner within this many entries of the commit index counts as caught up. */
  catchUpLagEntries: number
}

export type MembershipAction =
  | { type: 'liveness'; changes: Array<{ id: string; online: boolean }> }
  | { type: 'caught-up'; id: string }
  /** A leaving member is out of the Raft group: drop it from the state (member.remove). */
  | { type: 'forget'; id: string }
  | { type: 'conf-change'; change: ConfChange; reason: string }

const NO_CONTEXT = new Uint8Array(0)

function change(items: ConfChange['changes'], joint: boolean): ConfChange {
  return {
    transition: joint ? ConfChangeTransition.JointImplicit : ConfChangeTransition.Auto,
    changes: items,
    context: NO_CONTEXT,
  }
}

/** Returns the state updates and at most one membership change to make now. */
export function planMembership(input: MembershipInput): MembershipAction[] {
  const actions: MembershipAction[] = []
  const byId = new Map(input.members.map((m) => [m.id, m]))
  const isOnline = (id: string) => {
    if (id === input.leaderId) return true
    const seen = input.observed.get(id)
    return seen !== undefined && seen.lastContactMs < input.offlineThresholdMs
  }

  const liveness: Array<{ id: string; online: boolean }> = []
  for (const member of input.members) {
    // A member the leader does not track yet (joined, not yet in the Raft
    // group) has not had a chance to be heard: no verdict on it.
    if (member.id !== input.leaderId && !input.observed.has(member.id)) continue
    const online = isOnline(member.id)
    if (online !== member.online) liveness.push({ id: member.id, online })
  }
  if (liveness.length > 0) actions.push({ type: 'liveness', changes: liveness })

  const { confState } = input
  const voters = new Set(confState.voters)
  const learners = new Set([...confState.learners, ...confState.learnersNext])
  const inGroup = (id: string) => voters.has(id) || learners.has(id) || confState.votersOutgoing.includes(id)

  for (const id of learners) {
    const member = byId.get(id)
    const seen = input.observed.get(id)
    if (member === undefined || member.caughtUp || seen === undefined || !isOnline(id)) continue
    if (seen.match + input.catchUpLagEntries >= input.commitIndex) actions.push({ type: 'caught-up', id })
  }

  // A leave ends when the member is out of the group; then it leaves the state too.
  for (const member of input.members) {
    if (member.leaving && member.id !== input.leaderId && !inGroup(member.id)) {
      actions.push({ type: 'forget', id: member.id })
    }
  }

  // A joint configuration is left by the Raft core itself; change nothing else meanwhile.
  if (confState.votersOutgoing.length > 0) return actions

  const push = (items: ConfChange['changes'], reason: string, joint = false) => {
    actions.push({ type: 'conf-change', change: change(items, joint), reason })
    return actions
  }

  // 1. Members that left the state, or are leaving, leave the group.
  for (const id of [...voters, ...learners]) {
    const member = byId.get(id)
    if (member === undefined)
      return push([{ op: ConfChangeOp.Remove, node: id }], `${id} is no longer a member`)
    if (member.leaving && id !== input.leaderId)
      return push([{ op: ConfChangeOp.Remove, node: id }], `${id} is leaving`)
  }

  // 2. New members enter as learners.
  for (const member of input.members) {
    if (!inGroup(member.id) && !member.leaving) {
      return push([{ op: ConfChangeOp.AddLearner, node: member.id }], `${member.id} joined`)
    }
  }

  const standbys = input.members
    .filter((m) => learners.has(m.id) && m.caughtUp && !m.leaving && isOnline(m.id))
    .map((m) => m.id)
  const offlineVoters = [...voters].filter((id) => !isOnline(id) && id !== input.leaderId)

  // 3. Replace offline voters with standbys, in one joint change.
  if (offlineVoters.length > 0 && standbys.length > 0) {
    const pairs = Math.min(offlineVoters.length, standbys.length)
    const items: ConfChange['changes'] = []
    for (let i = 0; i < pairs; i++) {
      items.push({ op: ConfChangeOp.AddLearner, node: offlineVoters[i]! })
      items.push({ op: ConfChangeOp.AddVoter, node: standbys[i]! })
    }
    return push(
      items,
      `voter(s) ${offlineVoters.slice(0, pairs).join(', ')} offline: promoting ${standbys.slice(0, pairs).join(', ')}`,
      true,
    )
  }

  // 4. Grow toward an odd number of voters, up to maxVoters.
  if (voters.size < input.maxVoters && standbys.length > 0) {
    if (voters.size % 2 === 0) {
      return push(
        [{ op: ConfChangeOp.AddVoter, node: standbys[0]! }],
        `promoting ${standbys[0]} (odd voter count)`,
      )
    }
    if (standbys.length >= 2 && voters.size + 2 <= input.maxVoters) {
      return push(
        [
          { op: ConfChangeOp.AddVoter, node: standbys[0]! },
          { op: ConfChangeOp.AddVoter, node: standbys[1]! },
        ],
        `promoting ${standbys[0]} and ${standbys[1]}`,
        true,
      )
    }
  }

  // 5. An even voter set with nobody to promote (or about to be): demote the
  //    newest voter (never the leader), only while every voter is reachable.
  const catchingUp = input.members.some(
    (m) => learners.has(m.id) && !m.caughtUp && !m.leaving && isOnline(m.id),
  )
  if (voters.size % 2 === 0 && voters.size > 0 && offlineVoters.length === 0 && !catchingUp) {
    const newest = input.members
      .filter((m) => voters.has(m.id) && m.id !== input.leaderId)
      .sort((a, b) => b.joinedAt - a.joinedAt)[0]
    if (newest !== undefined)
      return push(
        [{ op: ConfChangeOp.AddLearner, node: newest.id }],
        `demoting ${newest.id} (odd voter count)`,
      )
  }
  // 6. Too many voters (maxVoters lowered): demote down to the limit.
  if (voters.size > input.maxVoters) {
    const newest = input.members
      .filter((m) => voters.has(m.id) && m.id !== input.leaderId)
      .sort((a, b) => b.joinedAt - a.joinedAt)[0]
    if (newest !== undefined)
      return push(
        [{ op: ConfChangeOp.AddLearner, node: newest.id }],
        `demoting ${newest.id} (above maxVoters)`,
      )
  }
  return actions
}
