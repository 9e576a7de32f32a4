// The Raft core: a pure, tick-driven state machine in the etcd-raft mould.
// Messages go in through step(), time through tick(), client requests
// through propose()/readIndex()/transferLeadership(); everything to do comes
// out of ready() and is acknowledged with advance(). No clocks, timers, I/O
// or Math.random here: jitter comes from the injected Rng.
//
// The comments cite the Raft paper (Ongaro & Ousterhout 2014, "§5.x") and
// Ongaro's thesis ("thesis §x") where a rule comes from them.

import type { Rng } from './clock.ts'
import { decodeConfChange, entryBytes } from './codec.ts'
import type { RaftConfig } from './config.ts'
import { assert, NotLeaderError, ProposalDroppedError } from './errors.ts'
import {
  allMembers,
  applyConfChange,
  cloneConfState,
  committedIndex,
  emptyConfState,
  isJoint,
  isVoter,
  VoteResult,
  voteResult,
} from './membership.ts'
import { Progress, ProgressState } from './progress.ts'
import { RaftLog } from './raft-log.ts'
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  NONE,
  type NodeId,
  type PersistedState,
  type ReadState,
  type Ready,
  Role,
  type Snapshot,
  type SoftState,
} from './types.ts'

const EMPTY = new Uint8Array(0)
/** Context of a Vote sent because of a leader transfer: it bypasses the leader lease. */
const TRANSFER_CONTEXT = new Uint8Array([0x74]) // 't'
/** Context of the heartbeats a removed or demoted leader sends before it steps down (see applyConfChange). */
const HANDOFF_CONTEXT = new Uint8Array([0x68]) // 'h'

export interface RaftCoreInit {
  id: NodeId
  config: RaftConfig
  rng: Rng
  persisted: PersistedState
  /**
   * The configuration to start with when the log holds none (a new cluster's
   * first members). Ignored when the persisted snapshot or log carries one.
   */
  bootstrap?: ConfState
}

export interface ProgressStatus {
  match: number
  next: number
  state: ProgressState
  isLearner: boolean
  recentActive: boolean
  idleTicks: number
}

export interface CoreStatus {
  id: NodeId
  term: number
  vote: NodeId
  leader: NodeId
  role: Role
  commit: number
  applied: number
  lastIndex: number
  firstIndex: number
  confState: ConfState
  leadTransferee: NodeId
  progress: Map<NodeId, ProgressStatus>
}

interface PendingRead {
  context: Uint8Array
  key: string
  index: number
  from: NodeId
  acks: Map<NodeId, boolean>
}

interface SnapshotAssembly {
  index: number
  term: number
  totalBytes: number
  received: number
  chunks: Uint8Array[]
}

function contextKey(context: Uint8Array): string {
  let key = ''
  for (const byte of context) key += byte.toString(16).padStart(2, '0')
  return key
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

export class RaftCore {
  readonly id: NodeId
  private readonly config: RaftConfig
  private readonly rng: Rng
  readonly log: RaftLog

  term = 0
  vote: NodeId = NONE
  leader: NodeId = NONE
  role: Role = Role.Follower
  private confState: ConfState

  private electionElapsed = 0
  private heartbeatElapsed = 0
  /** Ticks since the current leader transfer started (its own clock: the election one is reset every timeout). */
  private transferElapsed = 0
  private randomizedElectionTimeout = 0
  private readonly votes = new Map<NodeId, boolean>()
  private progress = new Map<NodeId, Progress>()
  private leadTransferee: NodeId = NONE
  /** No new membership change may be proposed until this index is applied. */
  private pendingConfIndex = 0
  /** Set while a leader that left the voters hands over: the commit index the others must learn (0: none). */
  private handoffIndex = 0
  /** Voters that acknowledged a hand-over heartbeat. */
  private readonly handoffAcks = new Set<NodeId>()
  /**
   * This leader's log holds a change that takes it out of the voters: it takes
   * no more proposals. Entries after that change would make its log longer
   * than the others'; if its hand-over is then cut short, the voters that have
   * not applied the change still need its vote, which it refuses to their
   * shorter logs, and no one can ever be elected.
   */
  private leavingVoters = false
  private uncommittedBytes = 0

  private messages: Message[] = []
  private readStates: ReadState[] = []
  private readonly pendingReads: PendingRead[] = []
  /** ReadIndex requests that arrived before this leader committed an entry of its term. */
  private readonly readsBeforeFirstCommit: Message[] = []
  private assembly: SnapshotAssembly | null = null
  /** Index of the snapshot whose data a follower needs and the driver should read back from storage (0: none). */
  private snapshotWantedIndex = 0

  private prevSoftState: SoftState
  private prevHardState: HardState

  constructor(init: RaftCoreInit) {
    this.id = init.id
    this.config = init.config
    this.rng = init.rng
    const { hardState, snapshot, entries } = init.persisted
    this.log = new RaftLog(snapshot, entries, hardState.commit)
    this.term = hardState.term
    this.vote = hardState.vote
    // Membership takes effect when applied: start from the snapshot's and let
    // the driver re-apply the committed conf changes after it.
    this.confState = cloneConfState(snapshot?.meta.confState ?? init.bootstrap ?? emptyConfState())
    this.prevHardState = { ...hardState }
    this.prevSoftState = { leader: NONE, role: Role.Follower }
    this.becomeFollower(this.term, NONE)
  }

  // ---------------------------------------------------------------- queries

  isLeader(): boolean {
    return this.role === Role.Leader
  }

  getConfState(): ConfState {
    return cloneConfState(this.confState)
  }

  status(): CoreStatus {
    const progress = new Map<NodeId, ProgressStatus>()
    for (const [id, pr] of this.progress) {
      progress.set(id, {
        match: pr.match,
        next: pr.next,
        state: pr.state,
        isLearner: pr.isLearner,
        recentActive: pr.recentActive,
        idleTicks: pr.idleTicks,
      })
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      leader: this.leader,
      role: this.role,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      firstIndex: this.log.firstIndex(),
      confState: this.getConfState(),
      leadTransferee: this.leadTransferee,
      progress,
    }
  }

  private promotable(): boolean {
    return isVoter(this.confState, this.id)
  }

  // ----------------------------------------------------------- role changes

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term
      this.vote = NONE
    }
    this.leader = NONE
    this.electionElapsed = 0
    this.heartbeatElapsed = 0
    this.resetRandomizedElectionTimeout()
    this.abortLeaderTransfer()
    this.handoffIndex = 0
    this.handoffAcks.clear()
    this.leavingVoters = false
    this.votes.clear()
    this.pendingReads.length = 0
    this.readsBeforeFirstCommit.length = 0
    this.uncommittedBytes = 0
    this.progress = new Map()
    const lastIndex = this.log.lastIndex()
    for (const id of allMembers(this.confState)) {
      const pr = new Progress(lastIndex + 1, !isVoter(this.confState, id), this.config)
      if (id === this.id) pr.match = this.log.stableIndex
      this.progress.set(id, pr)
    }
  }

  private resetRandomizedElectionTimeout(): void {
    const timeout = this.config.electionTimeoutTicks
    this.randomizedElectionTimeout = timeout + this.rng.int(timeout)
  }

  private becomeFollower(term: number, leader: NodeId): void {
    this.reset(term)
    this.role = Role.Follower
    this.leader = leader
  }

  private becomePreCandidate(): void {
    assert(this.role !== Role.Leader, 'a leader cannot become a pre-candidate')
    // Pre-vote changes neither term nor vote: a failed pre-vote leaves no trace (thesis §9.6).
    this.votes.clear()
    this.role = Role.PreCandidate
    this.leader = NONE
  }

  private becomeCandidate(): void {
    assert(this.role !== Role.Leader, 'a leader cannot become a candidate')
    this.reset(this.term + 1)
    this.vote = this.id
    this.role = Role.Candidate
  }

  private becomeLeader(): void {
    assert(this.role !== Role.Follower, 'a follower cannot become leader without an election')
    this.reset(this.term)
    this.leader = this.id
    this.role = Role.Leader
    const self = this.progress.get(this.id)
    if (self !== undefined) self.becomeReplicate()
    this.leavingVoters = this.leavesVoters(
      this.log.slice(this.log.applied + 1, this.log.lastIndex() + 1) ?? [],
    )
    // The no-op entry lets the leader commit entries of earlier terms (§5.4.2, §8).
    this.appendEntries([{ term: this.term, index: 0, type: EntryType.Normal, data: EMPTY }])
    // No membership change until the no-op (and so everything before it) is
    // applied: this closes the single-server change bug (thesis §4.3 errata)
    // even when the earlier entries were already applied here.
    this.pendingConfIndex = this.log.lastIndex()
  }

  // ------------------------------------------------------------------- time

  tick(): void {
    if (this.role === Role.Leader) this.tickLeader()
    else this.tickElection()
    this.maybeReleaseSnapshotData()
  }

  private tickElection(): void {
    this.electionElapsed++
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0
      this.campaign(this.config.preVote ? 'pre' : 'normal')
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++
    this.electionElapsed++
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue
      pr.idleTicks++
      if (pr.transfer !== null) {
        pr.transfer.idleTicks++
        if (pr.transfer.idleTicks >= this.config.electionTimeoutTicks) {
          // Chunks or their acknowledgements were lost: resend from the last acknowledged byte.
          pr.transfer.sentOffset = pr.transfer.ackedOffset
          pr.transfer.idleTicks = 0
          this.sendSnapshotChunks(id, pr)
        }
      }
    }
    if (this.electionElapsed >= this.config.electionTimeoutTicks) {
      this.electionElapsed = 0
      if (this.config.checkQuorum && !this.quorumActive()) {
        this.becomeFollower(this.term, NONE)
        return
      }
    }
    if (this.leadTransferee !== NONE && ++this.transferElapsed >= this.config.transferTimeoutTicks) {
      this.abortLeaderTransfer()
    }
    if (this.heartbeatElapsed >= this.config.heartbeatIntervalTicks) {
      this.heartbeatElapsed = 0
      if (this.handoffIndex > 0) this.sendHandoffHeartbeats()
      // Carry the newest pending read's context (etcd does the same): if its
      // first heartbeat or the answers were lost, this round can still confirm
      // it, and with it every older read. Without it those reads stay pending
      // for good and, once readIndexPendingMax of them pile up, every new read
      // is refused for as long as this leader lasts.
      this.broadcastHeartbeat(this.pendingReads.at(-1)?.context ?? EMPTY)
    }
  }

  /** Check-quorum: has a quorum been heard from in the last election timeout? Resets the marks. */
  private quorumActive(): boolean {
    const acks = new Map<NodeId, boolean>()
    for (const [id, pr] of this.progress) {
      if (id === this.id) {
        acks.set(id, true)
        continue
      }
      if (pr.recentActive && !pr.isLearner) acks.set(id, true)
      pr.recentActive = false
    }
    return voteResult(this.confState, acks) === VoteResult.Won
  }

  // -------------------------------------------------------------- elections

  /** Starts an election ('transfer': at a leader's request, skipping pre-vote and lease checks). */
  campaign(kind: 'pre' | 'normal' | 'transfer'): void {
    // A leader ignores a campaign request (etcd ignores MsgHup on a leader).
    if (this.role === Role.Leader || !this.promotable()) return
    if (this.log.pendingSnapshot !== null) return // cannot campaign before the snapshot is applied
    let voteType: MessageType
    let term: number
    if (kind === 'pre') {
      this.becomePreCandidate()
      voteType = MessageType.PreVote
      term = this.term + 1
    } else {
      this.becomeCandidate()
      voteType = MessageType.Vote
      term = this.term
    }
    // Our own vote counts at once.
    if (this.poll(this.id, true) === VoteResult.Won) {
      if (kind === 'pre') this.campaign('normal')
      else this.becomeLeader()
      return
    }
    const context = kind === 'transfer' ? TRANSFER_CONTEXT : EMPTY
    for (const id of allMembers(this.confState)) {
      if (id === this.id || !isVoter(this.confState, id)) continue
      this.send({
        type: voteType,
        to: id,
        term,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        context,
      })
    }
  }

  private poll(from: NodeId, granted: boolean): VoteResult {
    if (!this.votes.has(from)) this.votes.set(from, granted)
    return voteResult(this.confState, this.votes)
  }

  // ------------------------------------------------------------- messaging

  private send(partial: Partial<Message> & { type: MessageType; to: NodeId }): void {
    const message: Message = {
      from: this.id,
      term: this.term,
      logTerm: 0,
      index: 0,
      entries: [],
      commit: 0,
      reject: false,
      rejectHint: 0,
      context: EMPTY,
      snapshot: null,
      ...partial,
    }
    this.messages.push(message)
  }

  /** Feeds one message from a peer. Invalid or stale messages are ignored. */
  step(m: Message): void {
    if (m.from === this.id || m.to !== this.id) return
    if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = bytesEqual(m.context, TRANSFER_CONTEXT)
        const inLease =
          this.config.checkQuorum &&
          this.leader !== NONE &&
          this.electionElapsed < this.config.electionTimeoutTicks
        // A node that still hears from a leader ignores campaigns (thesis §4.2.3):
        // a rejoining, partitioned node cannot depose a healthy leader.
        if (!force && inLease) return
      }
      if (m.type === MessageType.PreVote) {
        // A pre-vote never changes our term.
      } else if (m.type === MessageType.PreVoteResponse && !m.reject) {
        // Granted pre-votes carry the candidate's future term; not ours to adopt yet.
      } else if (
        m.type === MessageType.Append ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snapshot
      ) {
        this.becomeFollower(m.term, m.from)
      } else {
        this.becomeFollower(m.term, NONE)
      }
    } else if (m.term < this.term) {
      if (
        (this.config.checkQuorum || this.config.preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.Append)
      ) {
        // A stale leader (e.g. one that was partitioned) learns our term and
        // steps down; without this it could keep a node from ever electing.
        this.send({ type: MessageType.AppendResponse, to: m.from })
      } else if (m.type === MessageType.PreVote) {
        this.send({ type: MessageType.PreVoteResponse, to: m.from, reject: true })
      } else if (m.type === MessageType.Vote) {
        // Reject with our term (paper §5.1) so the candidate catches up. etcd
        // stays silent here; without an answer a lagging voter campaigning at
        // ever higher terms and a candidate that could win can drift apart
        // for good when pre-vote is off (found by the simulator, seed 2258).
        this.send({ type: MessageType.VoteResponse, to: m.from, reject: true })
      }
      return
    }

    switch (m.type) {
      case MessageType.Vote:
      case MessageType.PreVote:
        this.handleVote(m)
        return
      default:
        break
    }

    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m)
        break
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m)
        break
      default:
        this.stepFollower(m)
    }
  }

  private handleVote(m: Message): void {
    const isPre = m.type === MessageType.PreVote
    const responseType = isPre ? MessageType.PreVoteResponse : MessageType.VoteResponse
    const canVote =
      this.vote === m.from || (this.vote === NONE && this.leader === NONE) || (isPre && m.term > this.term)
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      // A granted pre-vote answers with the term it was asked about, so the
      // pre-candidate counts it; a real vote is recorded before it is sent.
      this.send({ type: responseType, to: m.from, term: m.term })
      if (!isPre) {
        this.electionElapsed = 0
        this.vote = m.from
      }
    } else {
      this.send({ type: responseType, to: m.from, reject: true })
    }
  }

  private stepCandidate(m: Message): void {
    const expected = this.role === Role.PreCandidate ? MessageType.PreVoteResponse : MessageType.VoteResponse
    switch (m.type) {
      case MessageType.Append:
        this.becomeFollower(m.term, m.from)
        this.handleAppend(m)
        return
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from)
        this.handleHeartbeat(m)
        return
      case MessageType.Snapshot:
        this.becomeFollower(m.term, m.from)
        this.handleSnapshotChunk(m)
        return
      default:
        break
    }
    if (m.type !== expected) return
    const result = this.poll(m.from, !m.reject)
    if (result === VoteResult.Won) {
      if (this.role === Role.PreCandidate) this.campaign('normal')
      else {
        this.becomeLeader()
        this.broadcastAppend()
      }
    } else if (result === VoteResult.Lost) {
      // A lost pre-vote leaves the term alone; a lost vote keeps the new term.
      this.becomeFollower(this.term, NONE)
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Append:
        this.electionElapsed = 0
        this.leader = m.from
        this.handleAppend(m)
        return
      case MessageType.Heartbeat:
        this.electionElapsed = 0
        this.leader = m.from
        this.handleHeartbeat(m)
        return
      case MessageType.Snapshot:
        this.electionElapsed = 0
        this.leader = m.from
        this.handleSnapshotChunk(m)
        return
      case MessageType.TimeoutNow:
        // The leader hands over: campaign at once, without pre-vote (thesis §3.10).
        if (this.promotable()) this.campaign('transfer')
        return
      case MessageType.ReadIndexResponse:
        this.readStates.push({ index: m.index, context: m.context })
        return
      default:
        return
    }
  }

  // ------------------------------------------------------------- followers

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send({ type: MessageType.AppendResponse, to: m.from, index: this.log.committed })
      return
    }
    if (this.log.matchTerm(m.index, m.logTerm)) {
      const lastNew = m.index + m.entries.length
      const conflict = this.log.findConflict(m.entries)
      if (conflict !== 0) {
        assert(conflict > this.log.committed, `entry ${conflict} conflicts with the committed log`)
        const first = m.entries[0]!.index
        this.log.append(m.entries.slice(conflict - first))
      }
      this.log.commitTo(Math.min(m.commit, lastNew))
      this.send({ type: MessageType.AppendResponse, to: m.from, index: lastNew })
      return
    }
    // Tell the leader where our logs may agree so it skips a whole term of
    // conflicting entries per round trip (§5.3, "fast back-off").
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm)
    this.send({
      type: MessageType.AppendResponse,
      to: m.from,
      index: m.index,
      reject: true,
      rejectHint: hint.index,
      logTerm: hint.term,
    })
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()))
    this.send({ type: MessageType.HeartbeatResponse, to: m.from, context: m.context })
  }

  private handleSnapshotChunk(m: Message): void {
    const chunk = m.snapshot
    if (chunk === null) return
    const { meta } = chunk
    const reply = (received: number, reject: boolean) =>
      this.send({
        type: MessageType.SnapshotResponse,
        to: m.from,
        index: meta.index,
        rejectHint: received,
        reject,
      })
    if (meta.index <= this.log.committed) {
      // Already have everything it covers: answer as an append would, so the
      // leader moves on from the log.
      this.assembly = null
      this.send({ type: MessageType.AppendResponse, to: m.from, index: this.log.committed })
      return
    }
    if (chunk.totalBytes > this.config.snapshotBytesMax) {
      reply(0, true)
      return
    }
    let assembly = this.assembly
    if (assembly === null || assembly.index !== meta.index || assembly.term !== meta.term) {
      if (chunk.offset !== 0) {
        reply(0, true)
        return
      }
      assembly = { index: meta.index, term: meta.term, totalBytes: chunk.totalBytes, received: 0, chunks: [] }
      this.assembly = assembly
    }
    if (chunk.offset !== assembly.received) {
      // Out of order or a duplicate: tell the leader where we are.
      reply(assembly.received, chunk.offset > assembly.received)
      return
    }
    if (assembly.received + chunk.data.length > assembly.totalBytes) {
      this.assembly = null
      reply(0, true)
      return
    }
    assembly.chunks.push(chunk.data)
    assembly.received += chunk.data.length
    if (assembly.received < assembly.totalBytes) {
      reply(assembly.received, false)
      return
    }
    const data = new Uint8Array(assembly.totalBytes)
    let offset = 0
    for (const part of assembly.chunks) {
      data.set(part, offset)
      offset += part.length
    }
    this.assembly = null
    this.restore({ meta, data })
    // Either the log was replaced (committed = snapshot index) or it already
    // held the snapshot's last entry (committed moved to it): that index is
    // the one we are sure matches the leader.
    this.send({ type: MessageType.AppendResponse, to: m.from, index: this.log.committed })
  }

  /** Installs a leader's snapshot unless our log already covers it. */
  private restore(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta
    if (index <= this.log.committed) return
    if (this.log.matchTerm(index, term)) {
      // Our log has the snapshot's last entry: everything before it matches too.
      this.log.commitTo(index)
      return
    }
    this.log.restore(snapshot)
    this.confState = cloneConfState(snapshot.meta.confState)
    this.resetProgressForConf()
  }

  // ---------------------------------------------------------------- leader

  private stepLeader(m: Message): void {
    if (m.type === MessageType.ReadIndex) {
      this.handleReadIndexRequest(m)
      return
    }
    const pr = this.progress.get(m.from)
    if (pr === undefined) return
    pr.recentActive = true
    pr.idleTicks = 0
    switch (m.type) {
      case MessageType.AppendResponse:
        this.handleAppendResponse(m, pr)
        return
      case MessageType.HeartbeatResponse:
        this.handleHeartbeatResponse(m, pr)
        return
      case MessageType.SnapshotResponse:
        this.handleSnapshotResponse(m, pr)
        return
      default:
        return
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    if (m.reject) {
      let hint = m.rejectHint
      if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm).index
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe()
        this.sendAppend(m.from, pr)
      }
      return
    }
    const oldPaused = pr.isPaused()
    if (!pr.maybeUpdate(m.index)) {
      if (oldPaused && pr.state === ProgressState.Probe) this.sendAppend(m.from, pr)
      return
    }
    if (pr.state === ProgressState.Probe) {
      pr.becomeReplicate()
    } else if (pr.state === ProgressState.Snapshot) {
      const snapshotIndex = pr.transfer?.snapshot.meta.index ?? 0
      if (pr.match >= snapshotIndex) {
        pr.becomeProbe()
        pr.becomeReplicate()
      }
    } else {
      pr.inflights.freeLE(m.index)
    }
    if (this.maybeCommit()) {
      this.broadcastAppend()
    } else if (this.sendAppendsWhileOpen(m.from, pr) === 0 && oldPaused) {
      // It was paused when the commit index last moved: it may not know it yet.
      this.sendAppend(m.from, pr, true)
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send({ type: MessageType.TimeoutNow, to: m.from })
    }
    // A voter that now holds the change can be told at once that it is committed.
    if (this.handoffIndex > 0 && pr.match >= this.handoffIndex) this.sendHandoffHeartbeats(m.from)
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.probeSent = false
    // A heartbeat answer proves the follower is alive: let one more append go
    // if the window is full (etcd: inflights.FreeFirstOne).
    if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirst()
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, pr)
    else if (m.from === this.leadTransferee) {
      // Repeat the hand-over: the transferee may have ignored the first
      // TimeoutNow because it had not yet applied its own promotion to voter.
      this.send({ type: MessageType.TimeoutNow, to: m.from })
    }
    if (this.handoffIndex > 0 && bytesEqual(m.context, HANDOFF_CONTEXT)) {
      this.ackHandoff(m.from)
      return
    }
    if (m.context.length > 0) this.ackRead(m.from, m.context)
  }

  /**
   * Hand-over heartbeats go only to voters known to hold the change, so each
   * one carries a commit index that covers it: an answer proves the voter
   * learned that the change is committed.
   */
  private sendHandoffHeartbeats(only?: NodeId): void {
    for (const [id, pr] of this.progress) {
      if (id === this.id || pr.isLearner || pr.match < this.handoffIndex || this.handoffAcks.has(id)) continue
      if (only !== undefined && id !== only) continue
      this.send({
        type: MessageType.Heartbeat,
        to: id,
        commit: Math.min(pr.match, this.log.committed),
        context: HANDOFF_CONTEXT,
      })
    }
  }

  private ackHandoff(from: NodeId): void {
    this.handoffAcks.add(from)
    const acks = new Map<NodeId, boolean>()
    for (const id of this.handoffAcks) acks.set(id, true)
    if (voteResult(this.confState, acks) === VoteResult.Won) this.becomeFollower(this.term, NONE)
  }

  private handleSnapshotResponse(m: Message, pr: Progress): void {
    const transfer = pr.transfer
    if (pr.state !== ProgressState.Snapshot || transfer === null) return
    if (m.index !== transfer.snapshot.meta.index) return
    if (m.reject) {
      // The follower lost its place (a chunk went missing): resume where it is.
      transfer.ackedOffset = Math.min(m.rejectHint, transfer.snapshot.data.length)
      transfer.sentOffset = transfer.ackedOffset
    } else if (m.rejectHint > transfer.ackedOffset) {
      transfer.ackedOffset = m.rejectHint
    }
    transfer.idleTicks = 0
    this.sendSnapshotChunks(m.from, pr)
  }

  /** Sends appends to a replicating follower until its window is full or it has everything; returns how many. */
  private sendAppendsWhileOpen(to: NodeId, pr: Progress): number {
    let guard = this.config.inflightAppendsMax + 1
    let sent = 0
    while (guard-- > 0 && pr.next <= this.log.lastIndex() && !pr.isPaused()) {
      if (!this.sendAppend(to, pr)) break
      sent++
    }
    return sent
  }

  /** Sends one append (or starts a snapshot) to `to`. Returns whether anything was sent. */
  private sendAppend(to: NodeId, pr: Progress, sendIfEmpty = true): boolean {
    if (pr.isPaused()) return false
    const prevIndex = pr.next - 1
    const prevTerm = this.log.term(prevIndex)
    const entries = prevTerm === undefined ? undefined : this.entriesFrom(pr.next)
    if (prevTerm === undefined || entries === undefined) {
      return this.startSnapshot(to, pr)
    }
    if (entries.length === 0 && !sendIfEmpty) return false
    let bytes = 0
    for (const entry of entries) bytes += entryBytes(entry)
    this.send({
      type: MessageType.Append,
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries,
      commit: this.log.committed,
    })
    if (entries.length > 0) pr.sentEntries(entries[entries.length - 1]!.index, bytes)
    else if (pr.state === ProgressState.Probe) pr.probeSent = true
    return true
  }

  /** Entries from `from`, bounded by the per-message limits (at least one entry if any). */
  private entriesFrom(from: number): Entry[] | undefined {
    const last = this.log.lastIndex()
    if (from > last) return []
    const to = Math.min(last + 1, from + this.config.entriesPerAppendMax)
    const entries = this.log.slice(from, to)
    if (entries === undefined) return undefined
    let bytes = 0
    for (let i = 0; i < entries.length; i++) {
      bytes += entryBytes(entries[i]!)
      if (bytes > this.config.messageBytesMax && i > 0) return entries.slice(0, i)
    }
    return entries
  }

  private startSnapshot(to: NodeId, pr: Progress): boolean {
    const snapshot = this.log.snapshot
    if (snapshot === null) {
      // Its data is only in storage: ask the driver for it (provideSnapshotData); the follower waits in probe.
      if (this.log.snapshotMeta !== null) this.snapshotWantedIndex = this.log.snapshotMeta.index
      return false
    }
    pr.becomeSnapshot(snapshot)
    this.sendSnapshotChunks(to, pr)
    return true
  }

  private sendSnapshotChunks(to: NodeId, pr: Progress): void {
    const transfer = pr.transfer
    if (transfer === null) return
    const { snapshot } = transfer
    const total = snapshot.data.length
    const chunkBytes = this.config.snapshotChunkBytesMax
    const windowEnd = transfer.ackedOffset + chunkBytes * this.config.snapshotChunksInflightMax
    // An empty snapshot is still one (empty) chunk.
    if (total === 0 && transfer.sentOffset === 0 && transfer.ackedOffset === 0) {
      this.send({
        type: MessageType.Snapshot,
        to,
        snapshot: { meta: snapshot.meta, totalBytes: 0, offset: 0, data: EMPTY },
      })
      transfer.sentOffset = 0
      return
    }
    while (transfer.sentOffset < total && transfer.sentOffset < windowEnd) {
      const end = Math.min(total, transfer.sentOffset + chunkBytes)
      this.send({
        type: MessageType.Snapshot,
        to,
        snapshot: {
          meta: snapshot.meta,
          totalBytes: total,
          offset: transfer.sentOffset,
          data: snapshot.data.subarray(transfer.sentOffset, end),
        },
      })
      transfer.sentOffset = end
    }
  }

  private broadcastAppend(): void {
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue
      if (pr.state === ProgressState.Replicate) {
        // Nothing new to send: an empty append still carries the new commit index.
        if (this.sendAppendsWhileOpen(id, pr) === 0) this.sendAppend(id, pr, true)
      } else this.sendAppend(id, pr, true)
    }
  }

  private broadcastHeartbeat(context: Uint8Array): void {
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue
      // Never tell a follower to commit beyond what it is known to hold.
      this.send({
        type: MessageType.Heartbeat,
        to: id,
        commit: Math.min(pr.match, this.log.committed),
        context,
      })
    }
  }

  /** Advances the commit index to what a quorum holds, counting only entries of this term (§5.4.2). */
  private maybeCommit(): boolean {
    const index = committedIndex(this.confState, (id) => this.progress.get(id)?.match ?? 0)
    if (index <= this.log.committed) return false
    if (this.log.term(index) !== this.term) return false
    const before = this.log.committed
    this.log.commitTo(index)
    this.releaseUncommitted(before, index)
    if (this.log.term(before) !== this.term) this.onFirstCommitInTerm()
    return true
  }

  private releaseUncommitted(from: number, to: number): void {
    let bytes = 0
    for (const entry of this.log.slice(from + 1, to + 1) ?? []) bytes += entry.data.length
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - bytes)
  }

  private appendEntries(entries: Entry[]): void {
    let index = this.log.lastIndex()
    for (const entry of entries) {
      entry.index = ++index
      entry.term = this.term
    }
    this.log.append(entries)
    // The leader's own copy counts once it is durable (advance), not before.
  }

  // -------------------------------------------------------------- proposals

  /**
   * Appends entries to the leader's log. Throws NotLeaderError on a follower
   * and ProposalDroppedError when a limit or a leader transfer refuses them.
   * Returns the index of the last entry.
   */
  propose(items: ReadonlyArray<{ type: EntryType; data: Uint8Array }>): {
    firstIndex: number
    lastIndex: number
    term: number
  } {
    if (this.role !== Role.Leader) throw new NotLeaderError(this.leader)
    if (this.leadTransferee !== NONE) {
      throw new ProposalDroppedError(
        `leadership is being transferred to ${this.leadTransferee}; retry on the new leader.`,
      )
    }
    if (!this.progress.has(this.id))
      throw new ProposalDroppedError('this leader is being removed from the cluster.')
    if (this.handoffIndex > 0) {
      throw new ProposalDroppedError(
        'this leader is leaving the voters and hands over; retry on the new leader.',
      )
    }
    if (this.leavingVoters) {
      throw new ProposalDroppedError(
        'this leader is being removed from the voters; retry on the next leader.',
      )
    }
    let bytes = 0
    for (const item of items) {
      if (item.data.length > this.config.proposalBytesMax) {
        throw new ProposalDroppedError(
          `an entry of ${item.data.length} bytes exceeds proposalBytesMax (${this.config.proposalBytesMax}).`,
        )
      }
      bytes += item.data.length
    }
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.config.uncommittedBytesMax) {
      throw new ProposalDroppedError(
        `the leader already holds ${this.uncommittedBytes} uncommitted bytes (uncommittedBytesMax ${this.config.uncommittedBytesMax}); followers are behind.`,
      )
    }
    const confChanges = items.filter((item) => item.type === EntryType.ConfChange).length
    if (confChanges > 1)
      throw new ProposalDroppedError('only one membership change may be proposed at a time.')
    if (confChanges === 1) this.checkConfChangeAllowed()
    const entries: Entry[] = []
    for (const item of items) {
      entries.push({ term: this.term, index: 0, type: item.type, data: item.data })
    }
    const firstIndex = this.log.lastIndex() + 1
    this.appendEntries(entries)
    this.uncommittedBytes += bytes
    for (const entry of entries) if (entry.type === EntryType.ConfChange) this.pendingConfIndex = entry.index
    if (confChanges === 1) this.leavingVoters = this.leavesVoters(entries)
    this.broadcastAppend()
    return { firstIndex, lastIndex: this.log.lastIndex(), term: this.term }
  }

  /** Would applying these entries' membership changes, in order, take this node out of the voters? */
  private leavesVoters(entries: Entry[]): boolean {
    let conf = this.confState
    for (const entry of entries) {
      if (entry.type !== EntryType.ConfChange) continue
      try {
        conf = applyConfChange(conf, decodeConfChange(entry.data))
      } catch {
        continue // an invalid change is a no-op when applied
      }
      if (!isVoter(conf, this.id)) return true
    }
    return false
  }

  private checkConfChangeAllowed(): void {
    if (this.pendingConfIndex > this.log.applied) {
      throw new ProposalDroppedError(
        `a membership change (index ${this.pendingConfIndex}) is still being applied (applied ${this.log.applied}); retry after it.`,
      )
    }
  }

  /**
   * Checks a membership change before proposing it, so that an invalid one is
   * refused at once instead of failing when applied.
   */
  validateConfChange(cc: ConfChange): void {
    applyConfChange(this.confState, cc)
  }

  // ---------------------------------------------------------- membership

  /**
   * Applies a committed membership change (the driver calls this when it
   * applies the entry, in log order). Returns the new configuration.
   */
  applyConfChange(cc: ConfChange): ConfState {
    let next: ConfState
    try {
      next = applyConfChange(this.confState, cc)
    } catch {
      // An invalid change that got committed (e.g. proposed by an older leader
      // against another config) is a no-op on every replica alike.
      return this.getConfState()
    }
    this.confState = next
    this.syncProgressToConf()
    if (this.role === Role.Leader) {
      if (!isVoter(this.confState, this.id)) {
        // The leader was removed or demoted. The others may not know yet that
        // this change is committed; until they do they count this node in their
        // older configuration and may need its vote, which it refuses while its
        // log runs ahead of theirs. Stepping down at once can so leave the group
        // without a leader for good (e.g. when this node was one of a two-voter
        // outgoing half of a joint configuration). So it keeps leading, taking
        // no proposals, until a quorum of the new configuration has acknowledged
        // a heartbeat whose commit index covers the change; then it steps down.
        this.handoffIndex = this.log.committed
        this.handoffAcks.clear()
        this.maybeCommit()
        this.broadcastAppend()
        this.sendHandoffHeartbeats()
        return this.getConfState()
      }
      this.handoffIndex = 0
      if (this.leadTransferee !== NONE && !isVoter(this.confState, this.leadTransferee))
        this.abortLeaderTransfer()
      // The quorum may have changed: commit what it now allows, and feed new members.
      this.maybeCommit()
      this.broadcastAppend()
    }
    return this.getConfState()
  }

  /** Leader, joint config with autoLeave, nothing pending: propose leaving it. Called after apply. */
  private maybeAutoLeave(): void {
    if (this.role !== Role.Leader || !isJoint(this.confState) || !this.confState.autoLeave) return
    if (this.pendingConfIndex > this.log.applied || this.leadTransferee !== NONE) return
    this.pendingConfIndex = this.log.lastIndex() + 1
    this.appendEntries([{ term: this.term, index: 0, type: EntryType.ConfChange, data: this.leaveJointData }])
    if (!this.confState.voters.includes(this.id)) this.leavingVoters = true
    this.broadcastAppend()
  }

  /** The encoded empty ConfChange; set by the driver (the core does not encode). */
  leaveJointData: Uint8Array = EMPTY

  private syncProgressToConf(): void {
    const members = allMembers(this.confState)
    const lastIndex = this.log.lastIndex()
    for (const id of members) {
      const existing = this.progress.get(id)
      const learner = !isVoter(this.confState, id)
      if (existing === undefined) {
        const pr = new Progress(lastIndex + 1, learner, this.config)
        if (id === this.id) pr.match = this.log.stableIndex
        pr.recentActive = true // a new member gets one election timeout of grace
        this.progress.set(id, pr)
      } else {
        existing.isLearner = learner
      }
    }
    for (const id of [...this.progress.keys()]) if (!members.includes(id)) this.progress.delete(id)
  }

  private resetProgressForConf(): void {
    this.progress = new Map()
    this.syncProgressToConf()
  }

  // ------------------------------------------------------- leader transfer

  /** Hands leadership to `to` (thesis §3.10). Only on the leader; throws otherwise. */
  transferLeadership(to: NodeId): void {
    if (this.role !== Role.Leader) throw new NotLeaderError(this.leader)
    if (to === this.id) return
    const pr = this.progress.get(to)
    if (pr === undefined || pr.isLearner) {
      throw new ProposalDroppedError(`cannot transfer leadership to ${to}: it is not a voting member.`)
    }
    if (this.leadTransferee === to) return
    this.abortLeaderTransfer()
    this.leadTransferee = to
    this.transferElapsed = 0
    if (pr.match === this.log.lastIndex()) this.send({ type: MessageType.TimeoutNow, to })
    else this.sendAppend(to, pr)
  }

  private abortLeaderTransfer(): void {
    this.leadTransferee = NONE
  }

  // ----------------------------------------------------- linearizable reads

  /**
   * Asks for a read index (ReadIndex, thesis §6.4): once the local state
   * machine has applied the returned index, a read reflects every write that
   * completed before this call. The answer comes out of ready().readStates
   * with the same context. Throws NotLeaderError when no leader is known.
   */
  readIndex(context: Uint8Array): void {
    if (this.role === Role.Leader) {
      this.handleReadIndexRequest({
        ...this.blankMessage(),
        type: MessageType.ReadIndex,
        from: this.id,
        context,
      })
      return
    }
    if (this.leader === NONE) throw new NotLeaderError(NONE)
    this.send({ type: MessageType.ReadIndex, to: this.leader, context })
  }

  private blankMessage(): Message {
    return {
      type: MessageType.ReadIndex,
      from: this.id,
      to: this.id,
      term: this.term,
      logTerm: 0,
      index: 0,
      entries: [],
      commit: 0,
      reject: false,
      rejectHint: 0,
      context: EMPTY,
      snapshot: null,
    }
  }

  private handleReadIndexRequest(m: Message): void {
    // Only voters count toward the quorum; a lone voter answers at once.
    const voters = new Set([...this.confState.voters, ...this.confState.votersOutgoing])
    if (voters.size === 1 && voters.has(this.id)) {
      this.respondRead(m.from, m.context, this.log.committed)
      return
    }
    if (this.log.term(this.log.committed) !== this.term) {
      // A new leader does not know the commit index until an entry of its term commits.
      if (this.readsBeforeFirstCommit.length < this.config.readIndexPendingMax)
        this.readsBeforeFirstCommit.push(m)
      return
    }
    if (this.pendingReads.length >= this.config.readIndexPendingMax) return
    const key = contextKey(m.context)
    if (this.pendingReads.some((r) => r.key === key)) return
    const acks = new Map<NodeId, boolean>([[this.id, true]])
    this.pendingReads.push({ context: m.context, key, index: this.log.committed, from: m.from, acks })
    this.broadcastHeartbeat(m.context)
  }

  private onFirstCommitInTerm(): void {
    const waiting = this.readsBeforeFirstCommit.splice(0)
    for (const m of waiting) this.handleReadIndexRequest(m)
  }

  private ackRead(from: NodeId, context: Uint8Array): void {
    const key = contextKey(context)
    const position = this.pendingReads.findIndex((r) => r.key === key)
    if (position < 0) return
    const read = this.pendingReads[position]!
    read.acks.set(from, true)
    if (voteResult(this.confState, read.acks) !== VoteResult.Won) return
    // A quorum confirmed leadership at this read's time: it and every earlier read are safe.
    const released = this.pendingReads.splice(0, position + 1)
    for (const r of released) this.respondRead(r.from, r.context, r.index)
  }

  private respondRead(to: NodeId, context: Uint8Array, index: number): void {
    if (to === this.id) this.readStates.push({ index, context })
    else this.send({ type: MessageType.ReadIndexResponse, to, index, context })
  }

  // ------------------------------------------------------------- ready loop

  private softState(): SoftState {
    return { leader: this.leader, role: this.role }
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed }
  }

  hasReady(): boolean {
    const soft = this.softState()
    const hard = this.hardState()
    return (
      this.messages.length > 0 ||
      this.readStates.length > 0 ||
      this.log.pendingSnapshot !== null ||
      this.log.stableIndex < this.log.lastIndex() ||
      this.log.hasNextCommittedEntries() ||
      soft.leader !== this.prevSoftState.leader ||
      soft.role !== this.prevSoftState.role ||
      hard.term !== this.prevHardState.term ||
      hard.vote !== this.prevHardState.vote ||
      hard.commit !== this.prevHardState.commit
    )
  }

  /** Everything to do now. The driver must call advance(ready) before the next ready(). */
  ready(): Ready {
    const soft = this.softState()
    const hard = this.hardState()
    const softChanged = soft.leader !== this.prevSoftState.leader || soft.role !== this.prevSoftState.role
    const hardChanged =
      hard.term !== this.prevHardState.term ||
      hard.vote !== this.prevHardState.vote ||
      hard.commit !== this.prevHardState.commit
    const ready: Ready = {
      softState: softChanged ? soft : null,
      hardState: hardChanged ? hard : null,
      entries: this.log.unstableEntries(),
      snapshot: this.log.pendingSnapshot,
      committedEntries: this.log.nextCommittedEntries(),
      messages: this.messages,
      readStates: this.readStates,
    }
    this.messages = []
    this.readStates = []
    if (softChanged) this.prevSoftState = soft
    if (hardChanged) this.prevHardState = hard
    const lastCommitted = ready.committedEntries[ready.committedEntries.length - 1]
    // Committed entries are handed out once; applied moves when they are.
    if (lastCommitted !== undefined) this.log.appliedTo(lastCommitted.index)
    return ready
  }

  /** The driver persisted, sent and applied `ready`. */
  advance(ready: Ready): void {
    if (ready.snapshot !== null) this.log.snapshotApplied(ready.snapshot.meta.index)
    const last = ready.entries[ready.entries.length - 1]
    if (last !== undefined) this.log.stableTo(last.index, last.term)
    const self = this.progress.get(this.id)
    if (self !== undefined && self.match < this.log.stableIndex) {
      self.maybeUpdate(this.log.stableIndex)
      if (this.role === Role.Leader && this.maybeCommit()) this.broadcastAppend()
    }
    if (ready.committedEntries.length > 0) this.maybeAutoLeave()
  }

  /**
   * Installs a snapshot of the local state at `snapshot.meta.index` (which
   * must be applied) and drops log entries up to `discardTo`.
   */
  compact(snapshot: Snapshot, discardTo: number): void {
    this.log.compact(snapshot, discardTo)
  }

  // -------------------------------------------------- snapshot data in memory

  /**
   * Storage holds the snapshot at `index` and can read it back
   * (LogStorage.loadSnapshot): if it is the latest, its data leaves memory as
   * soon as no follower is being sent a snapshot, and is read back when one
   * needs it. Until the driver says so, the data stays in memory.
   */
  snapshotPersisted(index: number): void {
    if (this.log.markSnapshotDurable(index)) this.maybeReleaseSnapshotData()
  }

  /**
   * Index of the snapshot a follower needs while its data is only in storage
   * (0 if none), once: the driver reads it back and hands it to
   * provideSnapshotData. If that fails, the next attempt to send it asks again.
   */
  takeSnapshotDataRequest(): number {
    const index = this.snapshotWantedIndex
    this.snapshotWantedIndex = 0
    return index
  }

  /** The latest snapshot, read back from storage: followers that need it are sent it now. */
  provideSnapshotData(snapshot: Snapshot): void {
    // Not the latest any more (a newer one was taken meanwhile, and is in memory): nothing to do.
    if (!this.log.attachSnapshotData(snapshot) || this.role !== Role.Leader) return
    for (const [id, pr] of this.progress) {
      if (id === this.id || pr.state !== ProgressState.Probe) continue
      if (pr.next < this.log.firstIndex() || this.log.term(pr.next - 1) === undefined) this.sendAppend(id, pr)
    }
  }

  /** Drops durable snapshot data from memory unless this leader is sending it to a follower. */
  private maybeReleaseSnapshotData(): void {
    if (this.log.snapshot === null || !this.log.snapshotDurable) return
    if (this.role === Role.Leader) {
      for (const pr of this.progress.values()) if (pr.state === ProgressState.Snapshot) return
    }
    this.log.releaseSnapshotData()
  }
}
