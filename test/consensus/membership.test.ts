// Membership changes, etcd style (thesis §4, Raft paper §6): a configuration
// takes effect when its entry is applied; one voter changes at a time
// (simple), or several through a joint configuration that needs majorities of
// both the old and the new voters, left automatically or by an explicit empty
// change. After etcd's TestAddNode, TestRemoveNode, TestCommitAfterRemoveNode,
// confchange_v1_remove_leader, confchange_v2_add_double_auto/explicit,
// joint_safety and TestNewLeaderPendingConfig. Cores run in a hand-driven
// CoreNetwork; new members start empty (addNode) and catch up from the
// founding snapshot; the assertions read each node's configuration, roles,
// commit indexes and applied data.

import { describe, expect, it } from 'vitest'
import { ProposalDroppedError } from '../../consensus/errors.ts'
import { isVoter } from '../../consensus/membership.ts'
import {
  type ConfChange,
  type ConfChangeItem,
  ConfChangeOp,
  ConfChangeTransition,
  type Message,
  MessageType,
  Role,
} from '../../consensus/types.ts'
import { CoreNetwork } from '../support/core-network.ts'

const T = 10

function change(
  changes: ConfChangeItem[],
  transition: ConfChangeTransition = ConfChangeTransition.Auto,
): ConfChange {
  return { transition, changes, context: new Uint8Array(0) }
}
const addVoter = (node: string) => ({ op: ConfChangeOp.AddVoter, node })
const addLearner = (node: string) => ({ op: ConfChangeOp.AddLearner, node })
const remove = (node: string) => ({ op: ConfChangeOp.Remove, node })

/** a, b, c with a leading, and d, e added by a joint change (explicit leave unless `auto`). */
function jointCluster(transition: ConfChangeTransition): CoreNetwork {
  const net = new CoreNetwork(['a', 'b', 'c'])
  net.elect('a')
  net.addNode('d')
  net.addNode('e')
  net.proposeConfChange('a', change([addVoter('d'), addVoter('e'), remove('b'), remove('c')], transition))
  return net
}

describe('simple membership changes', () => {
  it('a voter added by a conf change catches up and then counts toward the quorum', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'x')
    net.addNode('d')
    net.proposeConfChange('a', change([addVoter('d')]))
    net.stabilize()
    net.heartbeat('a')
    for (const id of ['a', 'b', 'c', 'd']) {
      expect(net.node(id).getConfState(), id).toMatchObject({
        voters: ['a', 'b', 'c', 'd'],
        votersOutgoing: [],
      })
    }
    expect(net.record('d').state).toEqual(['x'])

    // Four voters: a and b alone (two of four) no longer commit.
    net.isolate('c')
    net.isolate('d')
    net.propose('a', 'y')
    net.heartbeat('a')
    expect(net.appliedData('a')).toEqual(['x'])
    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    for (const id of ['a', 'b', 'c', 'd']) expect(net.record(id).state, id).toEqual(['x', 'y'])
  })

  it('a removed voter gets nothing more and no longer counts toward the quorum', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.proposeConfChange('a', change([remove('c')]))
    net.stabilize()
    net.heartbeat('a')
    expect(net.node('a').getConfState()).toMatchObject({ voters: ['a', 'b'] })
    expect(net.node('a').status().progress.has('c')).toBe(false)

    // Two voters: b's acknowledgement is required, c's is irrelevant.
    net.isolate('b')
    net.propose('a', 'x')
    net.heartbeat('a')
    expect(net.appliedData('a')).toEqual([])
    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.appliedData('a')).toEqual(['x'])
    expect(net.appliedData('c')).toEqual([])
    // c is no voter in its own view either: it never campaigns.
    net.tick('c', 5 * T)
    expect(net.node('c').role).toBe(Role.Follower)
  })

  it('a leader that removes itself steps down once the change is applied, and the rest elect a leader and commit', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.proposeConfChange('a', change([remove('a')]))
    // Still the leader until the change is applied, but it takes no more proposals (see below).
    expect(() => net.propose('a', 'late')).toThrow(ProposalDroppedError)
    net.stabilize()
    expect(net.node('a').status()).toMatchObject({ role: Role.Follower, term: 1 })
    for (const id of ['a', 'b', 'c']) expect(net.node(id).getConfState().voters, id).toEqual(['b', 'c'])

    net.elapse(3 * T)
    const leader = ['b', 'c'].find((id) => net.node(id).isLeader())
    expect(leader).toBeDefined()
    net.propose(leader!, 'x')
    net.heartbeat(leader!)
    expect(net.appliedData('b')).toEqual(['x'])
    expect(net.appliedData('c')).toEqual(['x'])
    // The removed leader stays out: it never campaigns, and its term stays behind.
    expect(net.node('a').role).toBe(Role.Follower)
    expect(net.node('a').term).toBe(1)
  })
})

describe('a leader leaving the voters', () => {
  // Once the leader applies the change that takes it out, the others may not
  // know yet that it is committed: they still count the old leader's vote,
  // which it refuses to any candidate whose log is shorter than its own. So
  // it must not grow its log past that change, or a lost hand-over leaves the
  // group without a leader for good (found by a randomized run).
  const leaves = {
    'a simple removal': (net: CoreNetwork) => net.proposeConfChange('a', change([remove('a')])),
    'leaving a joint configuration that demoted it': (net: CoreNetwork) => {
      net.proposeConfChange('a', change([addLearner('a')], ConfChangeTransition.JointExplicit))
      net.stabilize()
      net.heartbeat('a')
      expect(net.node('b').getConfState()).toMatchObject({ voters: ['b'], votersOutgoing: ['a', 'b'] })
      net.proposeConfChange('a', change([]))
    },
  }
  for (const [name, leave] of Object.entries(leaves)) {
    it(`after ${name}, the leader takes no more proposals and the other voter can still be elected`, () => {
      const net = new CoreNetwork(['a', 'b'])
      net.elect('a')
      net.heartbeat('a')
      leave(net)
      const removal = net.node('a').log.lastIndex()
      expect(() => net.propose('a', 'late')).toThrow(ProposalDroppedError)
      // b gets the change but nothing after it, acknowledges it, and a commits
      // and applies it; then everything a says is lost.
      const after = (m: Message) => m.to === 'b' && m.entries.some((e) => e.index > removal)
      while (isVoter(net.node('a').getConfState(), 'a')) {
        net.take(after)
        net.deliverOne()
      }
      net.queue = []
      net.isolate('a')
      net.tickElection('b')
      net.heal()
      net.elapse(8 * T)
      expect(net.node('b').isLeader()).toBe(true)
      expect(net.node('b').getConfState().voters).toEqual(['b'])
      net.propose('b', 'x')
      expect(net.appliedData('b')).toEqual(['x'])
    })
  }
})

describe('joint consensus', () => {
  it('replacing two voters at once goes through a joint configuration that is left automatically', () => {
    const net = jointCluster(ConfChangeTransition.Auto)
    const a = net.node('a')
    net.deliverUntil(() => a.getConfState().votersOutgoing.length > 0)
    expect(a.getConfState()).toMatchObject({
      voters: ['a', 'd', 'e'],
      votersOutgoing: ['a', 'b', 'c'],
      autoLeave: true,
    })
    net.stabilize()
    net.heartbeat('a')
    for (const id of ['a', 'd', 'e']) {
      expect(net.node(id).getConfState(), id).toMatchObject({ voters: ['a', 'd', 'e'], votersOutgoing: [] })
    }
    net.propose('a', 'x')
    net.heartbeat('a')
    for (const id of ['d', 'e']) expect(net.appliedData(id), id).toEqual(['x'])
    expect(net.appliedData('b')).toEqual([])
  })

  it('a joint configuration entered with explicit leave stays until an empty change leaves it', () => {
    const net = jointCluster(ConfChangeTransition.JointExplicit)
    net.stabilize()
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.node('a').getConfState()).toMatchObject({
      voters: ['a', 'd', 'e'],
      votersOutgoing: ['a', 'b', 'c'],
      autoLeave: false,
    })
    // No other change while joint: only leaving is allowed.
    expect(() => net.proposeConfChange('a', change([addLearner('f')]))).toThrow(/joint/)
    net.proposeConfChange('a', change([]))
    net.stabilize()
    net.heartbeat('a')
    for (const id of ['a', 'd', 'e']) {
      expect(net.node(id).getConfState(), id).toMatchObject({ voters: ['a', 'd', 'e'], votersOutgoing: [] })
    }
  })

  it('while joint, a commit needs a majority of the old voters as well as of the new ones', () => {
    const net = jointCluster(ConfChangeTransition.JointExplicit)
    net.stabilize()
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.node('a').getConfState().votersOutgoing).toEqual(['a', 'b', 'c'])
    const committed = net.node('a').log.committed

    // a, d, e are a majority of the new voters but only a of the old ones.
    net.partition(['a', 'd', 'e'], ['b', 'c'])
    net.propose('a', 'x')
    net.heartbeat('a')
    expect(net.logOf('d')).toContain(`${committed + 1}@1`)
    expect(net.node('a').log.committed).toBe(committed)

    // Now b and c get x too, so both majorities hold it and it commits; but
    // y reaches a, b, c only, a majority of the old voters but not of the new.
    net.heal()
    net.partition(['a', 'b', 'c'], ['d', 'e'])
    net.propose('a', 'y')
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.logOf('b')).toContain(`${committed + 2}@1`)
    expect(net.node('a').log.committed).toBe(committed + 1)
    expect(net.appliedData('a')).toEqual(['x'])

    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.node('a').log.committed).toBe(committed + 2)
    expect(net.appliedData('a')).toEqual(['x', 'y'])
  })
})

describe('more membership scenarios', () => {
  it('a voter added after the leader compacted its log starts from the leader’s snapshot', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.proposeConfChange('a', change([addLearner('l')]))
    for (const data of ['x', 'y']) net.propose('a', data)
    net.heartbeat('a')
    net.compact('a')
    net.addNode('d')
    net.proposeConfChange('a', change([addVoter('d')]))
    net.stabilize()
    net.heartbeat('a')
    expect(net.history.some((m) => m.to === 'd' && m.type === MessageType.Snapshot)).toBe(true)
    expect(net.record('d').state).toEqual(['x', 'y'])
    expect(net.node('d').getConfState()).toMatchObject({ voters: ['a', 'b', 'c', 'd'], learners: ['l'] })
  })

  it('a voter demoted to learner stops counting toward the quorum but keeps receiving the log', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.proposeConfChange('a', change([addLearner('c')]))
    net.stabilize()
    net.heartbeat('a')
    expect(net.node('a').getConfState()).toMatchObject({ voters: ['a', 'b'], learners: ['c'] })
    net.isolate('b')
    net.propose('a', 'x')
    net.heartbeat('a')
    expect(net.appliedData('a')).toEqual([]) // c's acknowledgement does not count
    expect(net.logOf('c').length).toBe(net.logOf('a').length)
    net.heal()
    net.heartbeat('a')
    net.heartbeat('a')
    expect(net.appliedData('c')).toEqual(['x'])
  })

  it('a voter demoted in a joint change votes until the joint configuration is left, then becomes a learner', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.addNode('d')
    net.proposeConfChange('a', change([addVoter('d'), addLearner('c')], ConfChangeTransition.JointExplicit))
    net.stabilize()
    net.heartbeat('a')
    expect(net.node('a').getConfState()).toMatchObject({
      voters: ['a', 'b', 'd'],
      votersOutgoing: ['a', 'b', 'c'],
      learnersNext: ['c'],
    })
    net.proposeConfChange('a', change([]))
    net.stabilize()
    net.heartbeat('a')
    for (const id of ['a', 'b', 'c', 'd']) {
      expect(net.node(id).getConfState(), id).toMatchObject({
        voters: ['a', 'b', 'd'],
        votersOutgoing: [],
        learners: ['c'],
        learnersNext: [],
      })
    }
  })

  it('a leader replaced through a joint configuration leads until it is left, then steps down', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.addNode('d')
    net.proposeConfChange('a', change([addVoter('d'), remove('a')], ConfChangeTransition.JointImplicit))
    const a = net.node('a')
    net.deliverUntil(() => a.getConfState().votersOutgoing.length > 0)
    expect(a.isLeader()).toBe(true) // still a voter of the outgoing half
    net.stabilize()
    expect(a.status()).toMatchObject({ role: Role.Follower })
    expect(a.getConfState()).toMatchObject({ voters: ['b', 'c', 'd'], votersOutgoing: [] })
    net.elapse(3 * T)
    const leader = ['b', 'c', 'd'].find((id) => net.node(id).isLeader())
    expect(leader).toBeDefined()
    net.propose(leader!, 'x')
    net.heartbeat(leader!)
    for (const id of ['b', 'c', 'd']) expect(net.appliedData(id), id).toEqual(['x'])
  })

  it('a joint configuration is left automatically even when the leader that entered it fails', () => {
    const net = jointCluster(ConfChangeTransition.Auto)
    const a = net.node('a')
    net.deliverUntil(() => a.getConfState().votersOutgoing.length > 0)
    // a crashes right after applying the joint change: nobody hears that it committed, nor its leave.
    net.queue = []
    net.isolate('a')
    net.elapse(6 * T)
    const leader = ['b', 'c', 'd', 'e'].find((id) => net.node(id).isLeader())
    expect(leader).toBeDefined()
    for (const id of ['b', 'c', 'd', 'e']) {
      expect(net.node(id).getConfState(), id).toMatchObject({ voters: ['a', 'd', 'e'], votersOutgoing: [] })
    }
    expect(['d', 'e']).toContain(leader)
    net.propose(leader!, 'x')
    net.heartbeat(leader!)
    expect(net.appliedData('d')).toEqual(['x'])
    expect(net.appliedData('e')).toEqual(['x'])
  })
})

describe('quorum changes at apply time', () => {
  it('removing a voter lowers the quorum when applied, which commits what was waiting for it', () => {
    const net = new CoreNetwork(['a', 'b'])
    net.elect('a')
    net.heartbeat('a')
    net.proposeConfChange('a', change([remove('b')]))
    const ccIndex = net.node('a').log.lastIndex()
    net.propose('a', 'hello')
    net.queue = [] // b hears nothing more
    expect(net.node('a').log.committed).toBe(2)
    // b acknowledges the conf change only: it commits, and once applied a alone is the quorum.
    net.send({ type: MessageType.AppendResponse, from: 'b', to: 'a', term: 1, index: ccIndex })
    expect(net.node('a').getConfState().voters).toEqual(['a'])
    expect(net.appliedData('a')).toEqual(['hello'])
  })

  it('a change that would remove every voter is refused before it is proposed', () => {
    const net = new CoreNetwork(['a'])
    net.elect('a')
    const last = net.node('a').log.lastIndex()
    expect(() => net.proposeConfChange('a', change([remove('a')]))).toThrow(/every voter/)
    expect(net.node('a').log.lastIndex()).toBe(last)
  })

  it('a voter just added gets one election timeout of grace before check-quorum counts it missing', () => {
    const net = new CoreNetwork(['a'], { config: { checkQuorum: true } })
    net.elect('a')
    net.tick('a', T - 1)
    net.proposeConfChange('a', change([addVoter('b')])) // b never answers
    expect(net.node('a').getConfState().voters).toEqual(['a', 'b'])
    net.tick('a') // the check-quorum round: b is still in its grace period
    expect(net.node('a').isLeader()).toBe(true)
    net.tick('a', T)
    expect(net.node('a').isLeader()).toBe(false)
  })
})

describe('pending changes', () => {
  it('only one membership change may be pending: the next is refused until the first is applied', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.proposeConfChange('a', change([addLearner('l1')]))
    expect(() => net.proposeConfChange('a', change([addLearner('l2')]))).toThrow(ProposalDroppedError)
    net.stabilize()
    net.proposeConfChange('a', change([addLearner('l2')]))
    net.stabilize()
    expect(net.node('a').getConfState().learners).toEqual(['l1', 'l2'])
  })

  it('a new leader may propose a membership change only once its no-op is committed', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    net.propose('a', 'x')
    net.heartbeat('a')
    expect(net.node('b').log.applied).toBe(3) // b has applied everything a wrote

    net.isolate('a')
    net.campaign('b')
    net.deliverUntil(() => net.node('b').isLeader())
    net.take((m) => m.from === 'b') // b's no-op reaches no one yet
    expect(() => net.proposeConfChange('b', change([addLearner('l')]))).toThrow(ProposalDroppedError)

    net.heartbeat('b')
    net.proposeConfChange('b', change([addLearner('l')]))
    net.stabilize()
    expect(net.node('b').getConfState().learners).toEqual(['l'])
  })
})
