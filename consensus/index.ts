// Public surface of consensus/: the Raft library. docklet's src/ and the
// benches use only what is exported here.

export { type Clock, type Rng, realClock, seededRng } from './clock.ts'
export {
  decodeConfChange,
  decodeMessage,
  encodeConfChange,
  encodeMessage,
} from './codec.ts'
export {
  type DriverConfig,
  defaultDriverConfig,
  defaultRaftConfig,
  type RaftConfig,
  resolveDriverConfig,
  resolveRaftConfig,
} from './config.ts'
export {
  AssertionFailedError,
  ConfigError,
  DecodeError,
  NotLeaderError,
  ProposalDroppedError,
  RaftError,
  StoppedError,
  TimeoutError,
} from './errors.ts'
export { LevelLogStorage, StorageError } from './level-storage.ts'
export { ConfChangeError, isVoter } from './membership.ts'
export { MemoryLogStorage } from './memory-storage.ts'
export { type CoreStatus, type ProgressStatus, RaftCore } from './raft-core.ts'
export { type NodeStatus, type RaftEvent, RaftNode, type RaftNodeInit } from './raft-node.ts'
export type { StateMachine } from './state-machine.ts'
export type { FrameTransport, SendOptions } from './transport.ts'
export {
  type ConfChange,
  type ConfChangeItem,
  ConfChangeOp,
  ConfChangeTransition,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type LogStorage,
  type Message,
  MessageType,
  NONE,
  type NodeId,
  Role,
  type Snapshot,
} from './types.ts'
