// The error a command gets when the state machine refuses it. It is part of
// the replicated outcome (every replica refuses the same command the same
// way), so it is returned as data and turned into this class by the caller.

export interface CommandFailure {
  ok: false
  error: { code: string; message: string }
}

export class StateError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.name = 'StateError'
    this.code = code
  }
}

export function failure(code: string, message: string): CommandFailure {
  return { ok: false, error: { code, message } }
}
