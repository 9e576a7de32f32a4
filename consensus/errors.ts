// Errors of the consensus layer. Each has a stable `code`; callers switch on it.

export class RaftError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RaftError'
    this.code = code
  }
}

/** A setting is invalid; the message names it. */
export class ConfigError extends RaftError {
  constructor(message: string) {
    super('ERR_RAFT_CONFIG', message)
    this.name = 'ConfigError'
  }
}

/** This node is not the leader; `leader` is the one it knows of ('' if none). */
export class NotLeaderError extends RaftError {
  readonly leader: string
  constructor(leader: string) {
    super(
      'ERR_NOT_LEADER',
      leader === ''
        ? 'This node is not the leader and knows no leader yet.'
        : `This node is not the leader; the leader is ${leader}.`,
    )
    this.name = 'NotLeaderError'
    this.leader = leader
  }
}

/** A proposal was refused before it entered the log (too large, too many uncommitted, transfer in progress…). */
export class ProposalDroppedError extends RaftError {
  constructor(reason: string) {
    super('ERR_PROPOSAL_DROPPED', `The proposal was not accepted: ${reason}`)
    this.name = 'ProposalDroppedError'
  }
}

/** A request did not complete in time; its outcome is unknown (it may still commit). */
export class TimeoutError extends RaftError {
  constructor(what: string, timeoutMs: number) {
    super('ERR_TIMEOUT', `${what} did not complete within ${timeoutMs} ms; it may or may not take effect.`)
    this.name = 'TimeoutError'
  }
}

/** The node was stopped while a request was waiting. */
export class StoppedError extends RaftError {
  constructor() {
    super('ERR_STOPPED', 'The Raft node is stopped.')
    this.name = 'StoppedError'
  }
}

/** A peer sent bytes that do not decode to a valid message. */
export class DecodeError extends RaftError {
  constructor(message: string) {
    super('ERR_DECODE', message)
    this.name = 'DecodeError'
  }
}

/** A broken invariant: a bug, never an operating condition. */
export class AssertionFailedError extends RaftError {
  constructor(message: string) {
    super('ERR_ASSERTION', `Raft invariant violated: ${message}`)
    this.name = 'AssertionFailedError'
  }
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailedError(message)
}
