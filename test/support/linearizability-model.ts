// Sequential specifications for the linearizability checker. registerModel is
// one key of a key-value store: a register that starts empty (null) and
// supports read, write and compare-and-swap.

import type { Model, StepResult } from './linearizability.ts'

export type RegisterInput =
  | { op: 'read' }
  | { op: 'write'; value: string }
  | { op: 'cas'; expected: string | null; value: string }

/** `{ value }` answers a read, `{ ok }` a write (always true) or a cas. */
export type RegisterOutput = { value: string | null } | { ok: boolean }

export type RegisterState = string | null

export const registerModel: Model<RegisterState, RegisterInput, RegisterOutput> = {
  init: () => null,

  step(state, input, output): StepResult<RegisterState> {
    switch (input.op) {
      case 'read':
        // An unknown read result tells nothing; a known one must be the value.
        return { ok: output === undefined || ('value' in output && output.value === state), state }
      case 'write':
        // A write always succeeds; its `{ ok: true }` carries no information.
        return { ok: true, state: input.value }
      case 'cas': {
        const swapped = state === input.expected
        const ok = output === undefined || ('ok' in output && output.ok === swapped)
        return { ok, state: swapped ? input.value : state }
      }
    }
  },

  equal: (a, b) => a === b,

  // JSON keeps null and the string "null" apart.
  hash: (state) => JSON.stringify(state),

  describeOperation(input, output) {
    const result =
      output === undefined
        ? 'unknown'
        : 'value' in output
          ? JSON.stringify(output.value)
          : output.ok
            ? 'ok'
            : 'failed'
    switch (input.op) {
      case 'read':
        return `read -> ${result}`
      case 'write':
        return `write ${JSON.stringify(input.value)} -> ${result}`
      case 'cas':
        return `cas ${JSON.stringify(input.expected)} => ${JSON.stringify(input.value)} -> ${result}`
    }
  },

  describeState: (state) => JSON.stringify(state),
}
