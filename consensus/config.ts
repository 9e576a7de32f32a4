// Named limits for the Raft core and driver, validated once at start.
// Every queue, batch and window has a maximum here (TigerBeetle's habit).

import { ConfigError } from './errors.ts'

export interface RaftConfig {
  /** Ticks without hearing from a leader before a follower campaigns (randomised in [T, 2T)). */
  electionTimeoutTicks: number
  /** Ticks between a leader's heartbeats. Must be smaller than electionTimeoutTicks. */
  heartbeatIntervalTicks: number
  /** Campaign only after a pre-vote round shows a majority would vote (no disruption on rejoin). */
  preVote: boolean
  /** A leader that has not heard from a quorum within an election timeout steps down. */
  checkQuorum: boolean
  /** Upper bound on the encoded size of the entries in one Append message. */
  messageBytesMax: number
  /** Upper bound on the number of entries in one Append message. */
  entriesPerAppendMax: number
  /** Appends sent to one follower and not yet acknowledged. */
  inflightAppendsMax: number
  /** Bytes of entries sent to one follower and not yet acknowledged. */
  inflightBytesMax: number
  /** Bytes of entries the leader holds that are not committed yet; proposals beyond are refused. */
  uncommittedBytesMax: number
  /** Bytes of one proposal. */
  proposalBytesMax: number
  /** Bytes per snapshot chunk message. */
  snapshotChunkBytesMax: number
  /** Snapshot chunks sent and not yet acknowledged. */
  snapshotChunksInflightMax: number
  /** Largest snapshot a follower will assemble. */
  snapshotBytesMax: number
  /** Pending ReadIndex requests the leader keeps. */
  readIndexPendingMax: number
  /** Ticks a leader transfer may take before it is abandoned. Defaults to electionTimeoutTicks. */
  transferTimeoutTicks: number
}

export interface DriverConfig {
  /** Wall time per tick. */
  tickMs: number
  /** Take a snapshot and compact the log once this many entries were applied since the last one. */
  snapshotEntries: number
  /** Entries kept behind a snapshot so that slightly slow followers need no snapshot. */
  compactionKeepEntries: number
  /** Proposals waiting for a Ready round (beyond this, propose() fails at once). */
  proposalQueueMax: number
  /** Time a proposal or read may wait before it fails with a timeout. */
  requestTimeoutMs: number
}

export const defaultRaftConfig: RaftConfig = {
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  preVote: true,
  checkQuorum: true,
  messageBytesMax: 1024 * 1024,
  entriesPerAppendMax: 4096,
  inflightAppendsMax: 256,
  inflightBytesMax: 32 * 1024 * 1024,
  uncommittedBytesMax: 64 * 1024 * 1024,
  proposalBytesMax: 1024 * 1024,
  snapshotChunkBytesMax: 256 * 1024,
  snapshotChunksInflightMax: 4,
  snapshotBytesMax: 256 * 1024 * 1024,
  readIndexPendingMax: 65_536,
  transferTimeoutTicks: 10,
}

export const defaultDriverConfig: DriverConfig = {
  tickMs: 50,
  snapshotEntries: 10_000,
  compactionKeepEntries: 1_000,
  proposalQueueMax: 65_536,
  requestTimeoutMs: 5_000,
}

function requireInteger(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(`${name} must be a whole number of at least ${min}, got ${String(value)}.`)
  }
}

/** Fills defaults and validates; throws ConfigError with a sentence that names the setting. */
export function resolveRaftConfig(partial: Partial<RaftConfig> = {}): RaftConfig {
  const config: RaftConfig = { ...defaultRaftConfig, ...partial }
  if (partial.transferTimeoutTicks === undefined) config.transferTimeoutTicks = config.electionTimeoutTicks
  requireInteger('electionTimeoutTicks', config.electionTimeoutTicks, 2)
  requireInteger('heartbeatIntervalTicks', config.heartbeatIntervalTicks, 1)
  if (config.heartbeatIntervalTicks >= config.electionTimeoutTicks) {
    throw new ConfigError(
      `heartbeatIntervalTicks (${config.heartbeatIntervalTicks}) must be smaller than electionTimeoutTicks (${config.electionTimeoutTicks}): followers would time out between heartbeats.`,
    )
  }
  requireInteger('messageBytesMax', config.messageBytesMax, 1024)
  requireInteger('entriesPerAppendMax', config.entriesPerAppendMax, 1)
  requireInteger('inflightAppendsMax', config.inflightAppendsMax, 1)
  requireInteger('inflightBytesMax', config.inflightBytesMax, config.messageBytesMax)
  requireInteger('proposalBytesMax', config.proposalBytesMax, 1)
  requireInteger('uncommittedBytesMax', config.uncommittedBytesMax, config.proposalBytesMax)
  requireInteger('snapshotChunkBytesMax', config.snapshotChunkBytesMax, 1)
  requireInteger('snapshotChunksInflightMax', config.snapshotChunksInflightMax, 1)
  requireInteger('snapshotBytesMax', config.snapshotBytesMax, 1)
  requireInteger('readIndexPendingMax', config.readIndexPendingMax, 1)
  requireInteger('transferTimeoutTicks', config.transferTimeoutTicks, 1)
  if (config.proposalBytesMax > config.messageBytesMax) {
    throw new ConfigError(
      `proposalBytesMax (${config.proposalBytesMax}) must not exceed messageBytesMax (${config.messageBytesMax}): such a proposal could never be replicated.`,
    )
  }
  if (config.snapshotChunkBytesMax > config.messageBytesMax) {
    throw new ConfigError(
      `snapshotChunkBytesMax (${config.snapshotChunkBytesMax}) must not exceed messageBytesMax (${config.messageBytesMax}).`,
    )
  }
  return config
}

export function resolveDriverConfig(partial: Partial<DriverConfig> = {}): DriverConfig {
  const config: DriverConfig = { ...defaultDriverConfig, ...partial }
  requireInteger('tickMs', config.tickMs, 1)
  requireInteger('snapshotEntries', config.snapshotEntries, 1)
  requireInteger('compactionKeepEntries', config.compactionKeepEntries, 0)
  requireInteger('proposalQueueMax', config.proposalQueueMax, 1)
  requireInteger('requestTimeoutMs', config.requestTimeoutMs, 1)
  return config
}
