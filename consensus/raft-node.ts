// The driver: wires the pure core to a clock, a frame transport, durable
// storage and the application's state machine. Each Ready is handled in the
// safe order — persist (one synced batch), then send, then apply, then
// advance — and only one Ready is in flight at a time, so proposals that
// arrive while a batch is being synced are appended and synced together
// (group commit: one fsync for many proposals).
//
// Snapshots for log compaction are built and written in the background, one
// at a time, while the node goes on appending, applying and serving: the
// state machine captures its state at the applied index (snapshotAsync, when
// it offers one, encodes it in slices), the data is written to storage
// without holding up the saves behind it, and only then is the log compacted
// up to that index. Raft's timers never wait behind a snapshot.

import type { Clock, Rng } from './clock.ts'
import { decodeConfChange, decodeMessage, encodeConfChange, encodeMessage } from './codec.ts'
import { type DriverConfig, type RaftConfig, resolveDriverConfig, resolveRaftConfig } from './config.ts'
import { NotLeaderError, ProposalDroppedError, RaftError, StoppedError, TimeoutError } from './errors.ts'
import { emptyConfState } from './membership.ts'
import { type CoreStatus, RaftCore } from './raft-core.ts'
import type { StateMachine } from './state-machine.ts'
import type { FrameTransport, SendOptions } from './transport.ts'
import {
  type ConfChange,
  ConfChangeTransition,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type LogStorage,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  Role,
  type Snapshot,
  type SnapshotMeta,
} from './types.ts'

export interface RaftEvent {
  type: string
  [key: string]: unknown
}

export interface RaftNodeInit<R> {
  id: NodeId
  storage: LogStorage
  transport: FrameTransport
  clock: Clock
  rng: Rng
  stateMachine: StateMachine<R>
  raft?: Partial<RaftConfig>
  driver?: Partial<DriverConfig>
  /** The first members of a new cluster; used only when the storage is empty. */
  bootstrap?: { voters: NodeId[] }
  onEvent?: (event: RaftEvent) => void
  /** Called after a membership change is applied, on every node, in log order. */
  onConfChange?: (change: ConfChange, confState: ConfState, index: number) => void
}

export interface NodeStatus extends CoreStatus {
  /** Index of the latest snapshot this node holds (0 if none). */
  snapshotIndex: number
}

interface PendingProposal {
  index: number
  term: number
  resolve: (value: unknown) => void
  reject: (error: Error) => void
  deadlineMs: number
}

interface QueuedProposal {
  data: Uint8Array
  resolve: (value: unknown) => void
  reject: (error: Error) => void
  deadlineMs: number
}

interface PendingRead {
  resolve: () => void
  reject: (error: Error) => void
  deadlineMs: number
  /** Set once the read index is known; the read completes when applied reaches it. */
  index: number
}

const NO_INDEX = -1
/** Frames nothing waits for (see deferrable()): the transport may write them after the client is answered. */
const DEFERRABLE: SendOptions = { deferrable: true }
/** A read context: the incarnation's nonce, then the read counter (two float64). */
const READ_CONTEXT_BYTES = 16

export class RaftNode<R = unknown> {
  readonly id: NodeId
  private readonly core: RaftCore
  private readonly storage: LogStorage
  private readonly transport: FrameTransport
  private readonly clock: Clock
  private readonly stateMachine: StateMachine<R>
  private readonly raftConfig: RaftConfig
  private readonly config: DriverConfig
  private readonly onEvent: (event: RaftEvent) => void
  private readonly onConfChange: RaftNodeInit<R>['onConfChange']

  private stopTicker: (() => void) | null = null
  private stopped = false
  private processing = false
  private processAgain = false
  private loopDone: Promise<void> = Promise.resolve()

  private queue: QueuedProposal[] = []
  private readonly pending = new Map<number, PendingProposal>()
  private readonly reads = new Map<string, PendingRead>()
  private readCounter = 0
  /**
   * Random per incarnation, carried in every read context next to the
   * counter: the counter restarts at 1 after a restart, and an answer to a
   * read of the previous incarnation (still in flight) must not complete a new
   * read with an older index (a stale read). It also keeps contexts of
   * different nodes apart at the leader, which matches answers and
   * heartbeat acknowledgements by context.
   */
  private readonly readNonce: number
  /** Index of the latest snapshot this node holds durably (taken here or received from the leader). */
  private lastSnapshotIndex: number
  /**
   * Highest snapshot index handed to storage, taken here or received: a
   * snapshot being built at or below it is obsolete and is dropped.
   */
  private newestSnapshotIndex: number
  /** The snapshot being built and written in the background (at most one); settles without rejecting. */
  private snapshotTask: Promise<void> | null = null
  /**
   * The storage can read a snapshot back (LogStorage.loadSnapshot), so the
   * core keeps snapshot data in memory only while it is written or sent.
   */
  private readonly snapshotsReadBack: boolean
  /** Reading the latest snapshot back for a follower that needs it (at most one at a time). */
  private snapshotLoad: Promise<void> | null = null
  /** Aborted by stop(): tells the state machine to give up encoding. */
  private readonly snapshotAbort = new AbortController()
  /** The hard state last handed out by the core, and the one last written with sync. */
  private hardState: HardState
  private syncedHardState: HardState
  private failure: Error | null = null

  private constructor(init: RaftNodeInit<R>, core: RaftCore, raftConfig: RaftConfig, snapshotIndex: number) {
    this.id = init.id
    this.core = core
    this.storage = init.storage
    this.transport = init.transport
    this.clock = init.clock
    this.stateMachine = init.stateMachine
    this.raftConfig = raftConfig
    this.config = resolveDriverConfig(init.driver)
    this.readNonce = init.rng.int(2 ** 31) * 2 ** 22 + init.rng.int(2 ** 22)
    this.onEvent = init.onEvent ?? (() => {})
    this.onConfChange = init.onConfChange
    this.lastSnapshotIndex = snapshotIndex
    this.newestSnapshotIndex = snapshotIndex
    this.snapshotsReadBack = init.storage.loadSnapshot !== undefined
    // The state machine has restored the loaded snapshot: its data can go.
    if (this.snapshotsReadBack && snapshotIndex > 0) core.snapshotPersisted(snapshotIndex)
    const status = core.status()
    this.hardState = { term: status.term, vote: status.vote, commit: status.commit }
    this.syncedHardState = this.hardState
    core.leaveJointData = encodeConfChange({
      transition: ConfChangeTransition.Auto,
      changes: [],
      context: new Uint8Array(0),
    })
  }

  /** Loads the persisted state, restores the state machine from the snapshot, and builds the node (not started). */
  static async create<R>(init: RaftNodeInit<R>): Promise<RaftNode<R>> {
    const raftConfig = resolveRaftConfig(init.raft)
    resolveDriverConfig(init.driver)
    let persisted = await init.storage.load()
    const empty =
      persisted.snapshot === null && persisted.entries.length === 0 && persisted.hardState.term === 0
    if (empty && init.bootstrap !== undefined) {
      // A new cluster starts from a snapshot at index 1 that holds its first
      // configuration and the empty state; every founding member writes the same one.
      // Not index 0: every log "has" (index 0, term 0), so a leader would feed a
      // joining node (empty log) entries from index 1 and it would never learn
      // the first configuration. At index 1 the leader must send it the snapshot.
      const confState = { ...emptyConfState(), voters: [...new Set(init.bootstrap.voters)].sort() }
      const snapshot: Snapshot = {
        meta: { index: 1, term: 0, confState },
        data: init.stateMachine.snapshot(),
      }
      await init.storage.save({ hardState: null, entries: [], snapshot })
      persisted = await init.storage.load()
    }
    if (persisted.snapshot !== null) init.stateMachine.restore(persisted.snapshot.data)
    const core = new RaftCore({ id: init.id, config: raftConfig, rng: init.rng, persisted })
    return new RaftNode(init, core, raftConfig, persisted.snapshot?.meta.index ?? 0)
  }

  start(): void {
    if (this.stopTicker !== null || this.stopped) return
    this.transport.onFrame((from, frame) => this.receive(from, frame))
    this.stopTicker = this.clock.every(this.config.tickMs, () => this.tick())
    this.schedule()
  }

  /** Stops the node; a snapshot being built is abandoned, one being written finishes first. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.stopTicker?.()
    this.stopTicker = null
    this.snapshotAbort.abort()
    await this.loopDone
    // Once stop() returns, nothing of this node touches the storage any more.
    await this.snapshotTask
    await this.snapshotLoad
    this.failAll(new StoppedError())
  }

  status(): NodeStatus {
    return { ...this.core.status(), snapshotIndex: this.lastSnapshotIndex }
  }

  isLeader(): boolean {
    return this.core.isLeader()
  }

  leader(): NodeId {
    return this.core.leader
  }

  // ----------------------------------------------------------- client API

  /**
   * Replicates `data` and resolves with the state machine's result once it is
   * applied here. Rejects with NotLeaderError on a follower (the caller
   * forwards to the leader), with TimeoutError when the outcome is unknown.
   */
  propose(data: Uint8Array): Promise<R> {
    if (this.stopped) return Promise.reject(new StoppedError())
    if (this.failure !== null) return Promise.reject(this.failure)
    if (!this.core.isLeader()) return Promise.reject(new NotLeaderError(this.core.leader))
    if (data.length === 0) return Promise.reject(new ProposalDroppedError('a proposal must carry data.'))
    if (this.queue.length >= this.config.proposalQueueMax) {
      return Promise.reject(
        new ProposalDroppedError(
          `${this.queue.length} proposals are already queued (proposalQueueMax); retry later.`,
        ),
      )
    }
    return new Promise<R>((resolve, reject) => {
      this.queue.push({
        data,
        resolve: resolve as (value: unknown) => void,
        reject,
        deadlineMs: this.clock.nowMs() + this.config.requestTimeoutMs,
      })
      this.schedule()
    })
  }

  /**
   * A linearizable read barrier (ReadIndex): resolves once this node's state
   * machine reflects every write that completed before the call. Works on
   * followers too (they ask the leader for the index).
   */
  readIndex(): Promise<void> {
    if (this.stopped) return Promise.reject(new StoppedError())
    if (this.failure !== null) return Promise.reject(this.failure)
    const counter = ++this.readCounter
    const context = new Uint8Array(READ_CONTEXT_BYTES)
    const view = new DataView(context.buffer)
    view.setFloat64(0, this.readNonce)
    view.setFloat64(8, counter)
    const key = String(counter)
    try {
      this.core.readIndex(context)
    } catch (error) {
      return Promise.reject(error)
    }
    return new Promise<void>((resolve, reject) => {
      this.reads.set(key, {
        resolve,
        reject,
        deadlineMs: this.clock.nowMs() + this.config.requestTimeoutMs,
        index: NO_INDEX,
      })
      this.schedule()
    })
  }

  /** Proposes a membership change; resolves with the new configuration once it is applied here. */
  proposeConfChange(change: ConfChange): Promise<ConfState> {
    if (this.stopped) return Promise.reject(new StoppedError())
    if (!this.core.isLeader()) return Promise.reject(new NotLeaderError(this.core.leader))
    try {
      this.core.validateConfChange(change)
      const { lastIndex, term } = this.core.propose([
        { type: EntryType.ConfChange, data: encodeConfChange(change) },
      ])
      const promise = this.track<ConfState>(lastIndex, term)
      this.schedule()
      return promise
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** Asks the leader (this node) to hand leadership to `to`. Resolves when `to` leads or rejects on timeout. */
  async transferLeadership(to: NodeId): Promise<void> {
    if (this.stopped) throw new StoppedError()
    this.core.transferLeadership(to)
    this.schedule()
    const deadline = this.clock.nowMs() + this.config.requestTimeoutMs
    while (this.core.leader !== to) {
      if (this.stopped) throw new StoppedError()
      if (this.clock.nowMs() > deadline)
        throw new TimeoutError(`Leader transfer to ${to}`, this.config.requestTimeoutMs)
      if (this.core.role === Role.Leader && this.core.status().leadTransferee !== to) {
        throw new RaftError(
          'ERR_TRANSFER_ABORTED',
          `Leader transfer to ${to} was abandoned: it did not catch up in time.`,
        )
      }
      await this.waitTick()
    }
  }

  /** Starts an election now (used by tests and by an operator forcing a campaign). */
  campaign(): void {
    this.core.campaign(this.raftConfig.preVote ? 'pre' : 'normal')
    this.schedule()
  }

  private waitTick(): Promise<void> {
    return new Promise((resolve) => {
      const stop = this.clock.every(this.config.tickMs, () => {
        stop()
        resolve()
      })
    })
  }

  private track<T>(index: number, term: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.set(index, {
        index,
        term,
        resolve: resolve as (value: unknown) => void,
        reject,
        deadlineMs: this.clock.nowMs() + this.config.requestTimeoutMs,
      })
    })
  }

  // -------------------------------------------------------------- inputs

  private tick(): void {
    if (this.stopped) return
    this.core.tick()
    this.expireRequests()
    this.schedule()
  }

  private receive(from: string, frame: Uint8Array): void {
    if (this.stopped) return
    let message: ReturnType<typeof decodeMessage>
    try {
      message = decodeMessage(frame, { bytesMax: this.raftConfig.messageBytesMax + 64 * 1024 })
    } catch (error) {
      this.onEvent({ type: 'bad-frame', from, error: (error as Error).message })
      return
    }
    if (message.from !== from || message.to !== this.id) {
      this.onEvent({ type: 'misaddressed-frame', from, claimedFrom: message.from, to: message.to })
      return
    }
    this.core.step(message)
    this.schedule()
  }

  // -------------------------------------------------------------- the loop

  private schedule(): void {
    if (this.stopped && !this.processing) return
    if (this.processing) {
      this.processAgain = true
      return
    }
    this.processing = true
    this.loopDone = new Promise<void>((resolve) => {
      queueMicrotask(() => {
        this.processLoop()
          .catch((error: unknown) => this.fail(error as Error))
          .finally(resolve)
      })
    })
  }

  private flushProposals(): void {
    if (this.queue.length === 0) return
    const batch = this.queue
    this.queue = []
    try {
      const { firstIndex, term } = this.core.propose(
        batch.map((p) => ({ type: EntryType.Normal, data: p.data })),
      )
      batch.forEach((p, i) => {
        this.pending.set(firstIndex + i, {
          index: firstIndex + i,
          term,
          resolve: p.resolve,
          reject: p.reject,
          deadlineMs: p.deadlineMs,
        })
      })
    } catch (error) {
      for (const p of batch) p.reject(error as Error)
    }
  }

  private async processLoop(): Promise<void> {
    try {
      do {
        this.processAgain = false
        if (this.stopped) return
        this.flushProposals()
        while (this.core.hasReady()) {
          const ready = this.core.ready()
          await this.handleReady(ready)
          if (this.stopped) return
          this.flushProposals()
        }
        this.maybeLoadSnapshotData()
      } while (this.processAgain)
    } finally {
      // In the same synchronous step as the last look at processAgain: a
      // schedule() between the two (a frame or proposal arriving from a
      // microtask) would otherwise set processAgain after the loop stopped
      // reading it, and wait for the next tick.
      this.processing = false
    }
  }

  private async handleReady(ready: Ready): Promise<void> {
    if (ready.softState !== null) {
      this.onEvent({
        type: 'role',
        role: ready.softState.role,
        leader: ready.softState.leader,
        term: this.core.term,
      })
      if (ready.softState.role !== Role.Leader) this.failQueued(new NotLeaderError(ready.softState.leader))
    }
    const hardState = ready.hardState ?? this.hardState
    const termOrVoteChanged =
      hardState.term !== this.syncedHardState.term || hardState.vote !== this.syncedHardState.vote
    // A leader's appends and heartbeats may leave before its own write
    // (thesis §10.2.1): its term is already durable, and an entry counts
    // toward commit on the leader only once advance() sees it persisted.
    const early = !termOrVoteChanged && this.core.isLeader()
    if (early) this.send(ready.messages, true)
    // 1. Persist: hard state, snapshot and entries in one synced batch. A
    //    change of the commit index alone is not worth an fsync (etcd's
    //    MustSync): it rides along with the next write, and a node that
    //    loses it on a crash learns it again from the leader.
    if (ready.snapshot !== null) {
      this.newestSnapshotIndex = Math.max(this.newestSnapshotIndex, ready.snapshot.meta.index)
    }
    if (ready.entries.length > 0 || ready.snapshot !== null || termOrVoteChanged) {
      await this.storage.save({ hardState, entries: ready.entries, snapshot: ready.snapshot })
      this.syncedHardState = hardState
    }
    this.hardState = hardState
    if (this.stopped) return
    // 2. Send: only now may anything that depends on the persisted state leave.
    this.send(ready.messages, early ? false : null)
    // 3. Apply.
    if (ready.snapshot !== null) {
      this.stateMachine.restore(ready.snapshot.data)
      this.lastSnapshotIndex = Math.max(this.lastSnapshotIndex, ready.snapshot.meta.index)
      this.failPendingUpTo(ready.snapshot.meta.index)
      this.onEvent({ type: 'snapshot-restored', index: ready.snapshot.meta.index })
    }
    for (const entry of ready.committedEntries) this.applyEntry(entry)
    for (const state of ready.readStates) {
      if (state.context.length !== READ_CONTEXT_BYTES) continue
      const view = new DataView(state.context.buffer, state.context.byteOffset, READ_CONTEXT_BYTES)
      if (view.getFloat64(0) !== this.readNonce) continue // meant for an earlier incarnation
      const read = this.reads.get(String(view.getFloat64(8)))
      if (read !== undefined) read.index = state.index
    }
    // 4. Advance.
    this.core.advance(ready)
    if (ready.snapshot !== null && this.snapshotsReadBack)
      this.core.snapshotPersisted(ready.snapshot.meta.index)
    this.completeReads()
    this.maybeSnapshot()
  }

  /** Sends messages: only leader replication ones (early=true), all but those (false), or all (null). */
  private send(messages: Message[], early: boolean | null): void {
    for (const message of messages) {
      const replication =
        message.type === MessageType.Append ||
        message.type === MessageType.Heartbeat ||
        message.type === MessageType.Snapshot
      if (early !== null && replication !== early) continue
      const sent = this.transport.send(
        message.to,
        encodeMessage(message),
        deferrable(message) ? DEFERRABLE : undefined,
      )
      if (!sent) this.onEvent({ type: 'send-dropped', to: message.to, messageType: message.type })
    }
  }

  private applyEntry(entry: Entry): void {
    let result: unknown
    let error: Error | null = null
    if (entry.type === EntryType.ConfChange) {
      const change = decodeConfChange(entry.data)
      const confState = this.core.applyConfChange(change)
      result = confState
      this.onConfChange?.(change, confState, entry.index)
      this.onEvent({ type: 'conf-change', index: entry.index, confState })
    } else if (entry.data.length > 0) {
      try {
        result = this.stateMachine.apply(entry.data, entry.index)
      } catch (caught) {
        // A state machine must be deterministic; an exception here is the
        // same on every replica, so it is the proposal's answer, not a crash.
        error = caught as Error
      }
    }
    const pending = this.pending.get(entry.index)
    if (pending !== undefined) {
      this.pending.delete(entry.index)
      if (pending.term !== entry.term) {
        pending.reject(
          new ProposalDroppedError(
            'a new leader replaced this proposal before it was committed; it did not take effect.',
          ),
        )
      } else if (error !== null) pending.reject(error)
      else pending.resolve(result)
    }
  }

  private completeReads(): void {
    const applied = this.core.log.applied
    for (const [key, read] of this.reads) {
      if (read.index !== NO_INDEX && read.index <= applied) {
        this.reads.delete(key)
        read.resolve()
      }
    }
  }

  /** Starts a snapshot at the applied index when enough entries were applied since the last one. */
  private maybeSnapshot(): void {
    if (this.snapshotTask !== null || this.stopped) return
    const applied = this.core.log.applied
    if (applied - this.lastSnapshotIndex < this.config.snapshotEntries) return
    if (applied <= this.newestSnapshotIndex) return
    const term = this.core.log.term(applied)
    if (term === undefined) return
    // Everything up to `applied` has been applied (and nothing after it):
    // the state machine captures exactly this state before buildSnapshot's first await.
    const meta: SnapshotMeta = { index: applied, term, confState: this.core.getConfState() }
    const task = this.buildSnapshot(meta).catch((error: unknown) => {
      if (!this.stopped) this.fail(error as Error)
    })
    this.snapshotTask = task
    void task.finally(() => {
      if (this.snapshotTask === task) this.snapshotTask = null
    })
  }

  private async buildSnapshot(meta: SnapshotMeta): Promise<void> {
    const startedMs = this.clock.nowMs()
    const { snapshotAsync } = this.stateMachine
    const data =
      snapshotAsync === undefined
        ? this.stateMachine.snapshot()
        : await snapshotAsync.call(this.stateMachine, { signal: this.snapshotAbort.signal })
    if (this.stopped) return
    // A snapshot from the leader may have replaced the log while this one was encoded.
    if (meta.index <= this.newestSnapshotIndex) {
      this.onEvent({ type: 'snapshot-dropped', index: meta.index, newer: this.newestSnapshotIndex })
      return
    }
    this.newestSnapshotIndex = meta.index
    const encodedMs = this.clock.nowMs()
    const snapshot: Snapshot = { meta, data }
    // Only up to the index the snapshot was taken at (minus the tail kept for
    // slow followers), however far the node has applied since.
    this.core.compact(snapshot, Math.max(0, meta.index - this.config.compactionKeepEntries))
    await this.storage.compact(snapshot)
    this.lastSnapshotIndex = Math.max(this.lastSnapshotIndex, meta.index)
    if (this.snapshotsReadBack) this.core.snapshotPersisted(meta.index)
    this.onEvent({
      type: 'snapshot-taken',
      index: meta.index,
      bytes: data.length,
      encodeMs: encodedMs - startedMs,
      writeMs: this.clock.nowMs() - encodedMs,
    })
  }

  /** A follower needs the latest snapshot and its data is only in storage: read it back for the core. */
  private maybeLoadSnapshotData(): void {
    if (this.snapshotLoad !== null || this.stopped || !this.snapshotsReadBack) return
    const index = this.core.takeSnapshotDataRequest()
    if (index === 0) return
    const load = this.storage.loadSnapshot!().then(
      (snapshot) => {
        if (this.stopped || snapshot === null) return
        this.core.provideSnapshotData(snapshot)
        this.schedule()
      },
      (error: unknown) => {
        // The core asks again the next time it tries to send it.
        this.onEvent({ type: 'snapshot-load-failed', index, error: (error as Error).message })
      },
    )
    this.snapshotLoad = load.finally(() => {
      this.snapshotLoad = null
    })
  }

  // --------------------------------------------------------- bookkeeping

  private expireRequests(): void {
    const now = this.clock.nowMs()
    for (const [index, p] of this.pending) {
      if (p.deadlineMs <= now) {
        this.pending.delete(index)
        p.reject(new TimeoutError('The proposal', this.config.requestTimeoutMs))
      }
    }
    for (const [key, read] of this.reads) {
      if (read.deadlineMs <= now) {
        this.reads.delete(key)
        read.reject(new TimeoutError('The linearizable read', this.config.requestTimeoutMs))
      }
    }
    // A proposal whose index a snapshot covered was either applied through it or lost.
  }

  private failPendingUpTo(index: number): void {
    for (const [i, p] of this.pending) {
      if (i <= index) {
        this.pending.delete(i)
        p.reject(
          new TimeoutError(
            'The proposal (superseded by a snapshot; outcome unknown)',
            this.config.requestTimeoutMs,
          ),
        )
      }
    }
  }

  private failQueued(error: Error): void {
    const queued = this.queue
    this.queue = []
    for (const p of queued) p.reject(error)
    // Reads waiting for an index from the old leader will not get one.
    for (const [key, read] of this.reads) {
      if (read.index === NO_INDEX) {
        this.reads.delete(key)
        read.reject(error)
      }
    }
  }

  private failAll(error: Error): void {
    this.failQueued(error)
    for (const p of this.pending.values()) p.reject(error)
    this.pending.clear()
    for (const read of this.reads.values()) read.reject(error)
    this.reads.clear()
  }

  private fail(error: Error): void {
    // Storage failed or an invariant broke: stop taking part rather than risk
    // acting on state that is not durable.
    this.failure = error
    this.onEvent({ type: 'fatal', error: error.message, stack: error.stack })
    this.stopped = true
    this.stopTicker?.()
    this.stopTicker = null
    this.snapshotAbort.abort()
    this.failAll(error)
  }
}

/**
 * Messages no one is waiting on: an append that carries no entries (it tells
 * followers the new commit index, which only their own apply needs) and
 * heartbeats and their answers that confirm no read. At the leader the first
 * kind leaves in the same Ready that applies the entries it commits; written
 * first, it would hold up the answers to the clients who proposed them.
 */
function deferrable(message: Message): boolean {
  switch (message.type) {
    case MessageType.Append:
      return message.entries.length === 0
    case MessageType.Heartbeat:
    case MessageType.HeartbeatResponse:
      return message.context.length === 0
    default:
      return false
  }
}
