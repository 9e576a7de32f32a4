// The data the Raft core consumes and produces. Everything here is plain data
// (no classes with behaviour) so it can be persisted, encoded and compared.

/** A member's id. docklet uses the libp2p PeerId string; tests use short names. */
export type NodeId = string

/** The empty vote / unknown leader. */
export const NONE: NodeId = ''

export const EntryType = {
  /** Application data (may be empty: the no-op a new leader appends). */
  Normal: 0,
  /** A ConfChange encoded with encodeConfChange (consensus/codec.ts). */
  ConfChange: 1,
} as const
export type EntryType = (typeof EntryType)[keyof typeof EntryType]

export interface Entry {
  term: number
  index: number
  type: EntryType
  data: Uint8Array
}

/** What must survive a crash before any message that depends on it leaves the node. */
export interface HardState {
  term: number
  vote: NodeId
  commit: number
}

/**
 * A membership configuration. When votersOutgoing is non-empty the group is in
 * a joint configuration: decisions need a majority of voters AND of votersOutgoing.
 * learnersNext are voters of the outgoing config that become learners when the
 * joint config is left (a voter demoted to learner).
 */
export interface ConfState {
  voters: NodeId[]
  votersOutgoing: NodeId[]
  learners: NodeId[]
  learnersNext: NodeId[]
  /** Leave the joint config automatically once it is applied. */
  autoLeave: boolean
}

export interface SnapshotMeta {
  index: number
  term: number
  confState: ConfState
}

export interface Snapshot {
  meta: SnapshotMeta
  data: Uint8Array
}

export const ConfChangeOp = {
  AddVoter: 0,
  AddLearner: 1,
  Remove: 2,
} as const
export type ConfChangeOp = (typeof ConfChangeOp)[keyof typeof ConfChangeOp]

export interface ConfChangeItem {
  op: ConfChangeOp
  node: NodeId
}

export const ConfChangeTransition = {
  /** Simple if possible (one voter changes), joint otherwise, leaving it automatically. */
  Auto: 0,
  /** Joint, left automatically. */
  JointImplicit: 1,
  /** Joint, left only by an explicit empty ConfChange. */
  JointExplicit: 2,
} as const
export type ConfChangeTransition = (typeof ConfChangeTransition)[keyof typeof ConfChangeTransition]

/** A membership change. An empty `changes` list leaves a joint configuration. */
export interface ConfChange {
  transition: ConfChangeTransition
  changes: ConfChangeItem[]
  /** Opaque application context (docklet puts the member's address here). */
  context: Uint8Array
}

export const MessageType = {
  Append: 1,
  AppendResponse: 2,
  Vote: 3,
  VoteResponse: 4,
  PreVote: 5,
  PreVoteResponse: 6,
  Heartbeat: 7,
  HeartbeatResponse: 8,
  /** One chunk of a snapshot. */
  Snapshot: 9,
  /** Acknowledges snapshot chunks: index = snapshot index, rejectHint = bytes received so far. */
  SnapshotResponse: 10,
  /** Leader transfer: the receiver campaigns at once, skipping pre-vote. */
  TimeoutNow: 11,
  /** A follower asks the leader for a read index (context identifies the request). */
  ReadIndex: 12,
  ReadIndexResponse: 13,
} as const
export type MessageType = (typeof MessageType)[keyof typeof MessageType]

export interface SnapshotChunk {
  meta: SnapshotMeta
  /** Total snapshot size in bytes. */
  totalBytes: number
  /** Byte offset of `data` within the snapshot. */
  offset: number
  data: Uint8Array
}

export interface Message {
  type: MessageType
  from: NodeId
  to: NodeId
  term: number
  /** Append: term of the entry at `index`. Vote: term of the candidate's last entry. */
  logTerm: number
  /** Append: index preceding `entries`. Vote: candidate's last index. Responses: see core. */
  index: number
  entries: Entry[]
  commit: number
  reject: boolean
  /** On a rejected append: the follower's best guess of where logs agree. */
  rejectHint: number
  /** Opaque request context: ReadIndex ids and campaign kind (transfer). */
  context: Uint8Array
  snapshot: SnapshotChunk | null
}

export const Role = {
  Follower: 'follower',
  PreCandidate: 'pre-candidate',
  Candidate: 'candidate',
  Leader: 'leader',
} as const
export type Role = (typeof Role)[keyof typeof Role]

export interface SoftState {
  leader: NodeId
  role: Role
}

/** A linearizable read point: once `index` is applied, reads for `context` may be served. */
export interface ReadState {
  index: number
  context: Uint8Array
}

/**
 * Everything the driver must do, in order: persist hardState, entries and
 * snapshot (one durable batch), then send messages, then apply the snapshot
 * and committedEntries, then call advance().
 */
export interface Ready {
  softState: SoftState | null
  hardState: HardState | null
  /** Entries to append to stable storage (they may overwrite a conflicting suffix). */
  entries: Entry[]
  /** A snapshot received from the leader, to persist and restore. */
  snapshot: Snapshot | null
  committedEntries: Entry[]
  messages: Message[]
  readStates: ReadState[]
}

/** Durable state a node restarts from. */
export interface PersistedState {
  hardState: HardState
  snapshot: Snapshot | null
  /** Entries after the snapshot, in index order, contiguous. */
  entries: Entry[]
}

/** The durable store the driver writes each Ready to. Implemented on classic-level and in memory. */
export interface LogStorage {
  /** Reads everything back at start. */
  load(): Promise<PersistedState>
  /**
   * One atomic, synced write: hard state (if given), snapshot (if given, which
   * also drops every entry it covers) and entries (truncating any stored entry
   * at or after the first new index).
   */
  save(update: StorageUpdate): Promise<void>
  /**
   * Records a snapshot the node took itself and drops entries up to and
   * including its index, which must all be committed. It may complete after
   * saves issued later (its data is written first, without holding them up);
   * if a snapshot at the same or a later index is stored by then, it does
   * nothing. Snapshot data (here and in save) is not copied: it must not
   * change once handed over.
   */
  compact(snapshot: Snapshot): Promise<void>
  /**
   * Reads the stored snapshot back (null if there is none), without waiting
   * behind queued saves. With it, a node keeps snapshot data in memory only
   * while it is being written or sent to a follower; a storage without it
   * makes the node keep its latest snapshot's data in memory for good.
   */
  loadSnapshot?(): Promise<Snapshot | null>
  close(): Promise<void>
}

export interface StorageUpdate {
  hardState: HardState | null
  entries: Entry[]
  snapshot: Snapshot | null
}
