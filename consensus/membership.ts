// Membership configurations and quorums. A configuration is either simple
// (votersOutgoing empty) or joint (Raft paper §6): while joint, an election
// and a commit each need a majority of the incoming voters AND a majority of
// the outgoing ones, so the two configurations can never decide apart.

import { RaftError } from './errors.ts'
import { type ConfChange, ConfChangeOp, ConfChangeTransition, type ConfState, type NodeId } from './types.ts'

export class ConfChangeError extends RaftError {
  constructor(message: string) {
    super('ERR_CONF_CHANGE', message)
    this.name = 'ConfChangeError'
  }
}

export function emptyConfState(): ConfState {
  return { voters: [], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false }
}

export function cloneConfState(conf: ConfState): ConfState {
  return {
    voters: [...conf.voters],
    votersOutgoing: [...conf.votersOutgoing],
    learners: [...conf.learners],
    learnersNext: [...conf.learnersNext],
    autoLeave: conf.autoLeave,
  }
}

export function isJoint(conf: ConfState): boolean {
  return conf.votersOutgoing.length > 0
}

/** Every member that receives the log: voters of both halves and learners. */
export function allMembers(conf: ConfState): NodeId[] {
  const set = new Set<NodeId>([
    ...conf.voters,
    ...conf.votersOutgoing,
    ...conf.learners,
    ...conf.learnersNext,
  ])
  return [...set].sort()
}

/** May this node campaign and vote-count? (A learner may not.) */
export function isVoter(conf: ConfState, id: NodeId): boolean {
  return conf.voters.includes(id) || conf.votersOutgoing.includes(id)
}

/** The largest index that a majority of `voters` has reached, given each one's match index. */
function majorityIndex(voters: NodeId[], matchOf: (id: NodeId) => number): number {
  if (voters.length === 0) return Number.MAX_SAFE_INTEGER // an empty half never constrains
  const matches = voters.map(matchOf).sort((a, b) => b - a)
  return matches[Math.floor(voters.length / 2)] ?? 0
}

/** The index committed by the configuration (joint: the smaller of the two majorities). */
export function committedIndex(conf: ConfState, matchOf: (id: NodeId) => number): number {
  const incoming = majorityIndex(conf.voters, matchOf)
  const outgoing = majorityIndex(conf.votersOutgoing, matchOf)
  const index = Math.min(incoming, outgoing)
  return index === Number.MAX_SAFE_INTEGER ? 0 : index
}

export const VoteResult = { Pending: 0, Won: 1, Lost: 2 } as const
export type VoteResult = (typeof VoteResult)[keyof typeof VoteResult]

function majorityVote(voters: NodeId[], votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  if (voters.length === 0) return VoteResult.Won
  let granted = 0
  let missing = 0
  for (const id of voters) {
    const vote = votes.get(id)
    if (vote === undefined) missing++
    else if (vote) granted++
  }
  const quorum = Math.floor(voters.length / 2) + 1
  if (granted >= quorum) return VoteResult.Won
  if (granted + missing >= quorum) return VoteResult.Pending
  return VoteResult.Lost
}

/** The outcome of a vote (or of acks, for ReadIndex and check-quorum) under the configuration. */
export function voteResult(conf: ConfState, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  const incoming = majorityVote(conf.voters, votes)
  const outgoing = majorityVote(conf.votersOutgoing, votes)
  if (incoming === VoteResult.Won && outgoing === VoteResult.Won) return VoteResult.Won
  if (incoming === VoteResult.Lost || outgoing === VoteResult.Lost) return VoteResult.Lost
  return VoteResult.Pending
}

function remove(list: NodeId[], id: NodeId): NodeId[] {
  return list.filter((x) => x !== id)
}

function add(list: NodeId[], id: NodeId): NodeId[] {
  return list.includes(id) ? list : [...list, id].sort()
}

function applyItems(conf: ConfState, cc: ConfChange): ConfState {
  let next = cloneConfState(conf)
  for (const item of cc.changes) {
    if (item.node === '') throw new ConfChangeError('A membership change names an empty node id.')
    switch (item.op) {
      case ConfChangeOp.AddVoter:
        next = {
          ...next,
          voters: add(next.voters, item.node),
          learners: remove(next.learners, item.node),
          learnersNext: remove(next.learnersNext, item.node),
        }
        break
      case ConfChangeOp.AddLearner:
        // A voter of the outgoing half cannot become a learner until the joint
        // config is left: it would be both at once. It waits in learnersNext.
        next = { ...next, voters: remove(next.voters, item.node) }
        if (next.votersOutgoing.includes(item.node)) next.learnersNext = add(next.learnersNext, item.node)
        else next.learners = add(next.learners, item.node)
        break
      case ConfChangeOp.Remove:
        next = {
          ...next,
          voters: remove(next.voters, item.node),
          learners: remove(next.learners, item.node),
          learnersNext: remove(next.learnersNext, item.node),
        }
        break
      default:
        throw new ConfChangeError(`Unknown membership change operation ${String(item.op)}.`)
    }
  }
  return next
}

function symmetricDifference(a: NodeId[], b: NodeId[]): number {
  let count = 0
  for (const x of a) if (!b.includes(x)) count++
  for (const x of b) if (!a.includes(x)) count++
  return count
}

/** Is this change one that leaves the joint configuration? */
export function isLeaveJoint(cc: ConfChange): boolean {
  return cc.changes.length === 0
}

/** Would this change need a joint configuration? */
export function needsJoint(conf: ConfState, cc: ConfChange): boolean {
  if (cc.transition !== ConfChangeTransition.Auto) return true
  const next = applyItems(conf, cc)
  return symmetricDifference(conf.voters, next.voters) > 1
}

/**
 * The configuration after applying `cc` to `conf`. Throws ConfChangeError for
 * a change that is not allowed (entering a joint config twice, leaving one
 * that is not joint, removing every voter).
 */
export function applyConfChange(conf: ConfState, cc: ConfChange): ConfState {
  if (isLeaveJoint(cc)) {
    if (!isJoint(conf))
      throw new ConfChangeError('Cannot leave a joint configuration: the configuration is not joint.')
    const learners = [...conf.learners]
    for (const id of conf.learnersNext) if (!learners.includes(id)) learners.push(id)
    return {
      voters: [...conf.voters],
      votersOutgoing: [],
      learners: learners.sort(),
      learnersNext: [],
      autoLeave: false,
    }
  }
  if (isJoint(conf)) {
    throw new ConfChangeError(
      'A membership change was proposed while a joint configuration is still in effect; leave it first.',
    )
  }
  const joint = needsJoint(conf, cc)
  const base: ConfState = joint
    ? {
        ...cloneConfState(conf),
        votersOutgoing: [...conf.voters],
        autoLeave: cc.transition !== ConfChangeTransition.JointExplicit,
      }
    : cloneConfState(conf)
  const next = applyItems(base, cc)
  if (next.voters.length === 0) throw new ConfChangeError('A membership change would remove every voter.')
  for (const id of next.learners) {
    if (next.voters.includes(id)) throw new ConfChangeError(`Node ${id} would be both a voter and a learner.`)
  }
  return next
}

export function confStatesEqual(a: ConfState, b: ConfState): boolean {
  const same = (x: NodeId[], y: NodeId[]) =>
    x.length === y.length && [...x].sort().every((v, i) => v === [...y].sort()[i])
  return (
    same(a.voters, b.voters) &&
    same(a.votersOutgoing, b.votersOutgoing) &&
    same(a.learners, b.learners) &&
    same(a.learnersNext, b.learnersNext) &&
    a.autoLeave === b.autoLeave
  )
}
