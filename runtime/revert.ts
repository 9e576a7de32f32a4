// Incus's revert pattern: a multi-step change registers an undo step right
// after each step succeeds; on failure the steps run in reverse, so a change
// that fails half-way leaves the host as it was.
//
//   const revert = new Revert()
//   try {
//     await mkdir(dir); revert.add('remove dir', () => rm(dir))
//     ...
//     revert.success()
//   } catch (error) { await revert.fail('Creating x', error) }

import { RevertFailedError } from './errors.ts'

/** Undo steps beyond this mean a runaway loop registering them. */
export const REVERT_STEPS_MAX = 1000

interface UndoStep {
  label: string
  undo: () => Promise<void> | void
}

export class Revert {
  #steps: UndoStep[] = []
  #done = false

  add(label: string, undo: () => Promise<void> | void): void {
    if (this.#done) throw new Error(`Revert step "${label}" added after the change finished.`)
    if (this.#steps.length >= REVERT_STEPS_MAX) throw new Error(`More than ${REVERT_STEPS_MAX} revert steps.`)
    this.#steps.push({ label, undo })
  }

  /** The change is complete: forget the undo steps. */
  success(): void {
    this.#done = true
    this.#steps = []
  }

  /**
   * Runs every undo step in reverse (each is attempted even if an earlier one
   * failed), then rethrows `error`, or a RevertFailedError if undoing failed.
   */
  async fail(what: string, error: unknown): Promise<never> {
    const steps = this.#steps.reverse()
    this.#steps = []
    this.#done = true
    const undoErrors: unknown[] = []
    for (const step of steps) {
      try {
        await step.undo()
      } catch (undoError) {
        undoErrors.push(new Error(`${step.label}: ${(undoError as Error).message}`, { cause: undoError }))
      }
    }
    if (undoErrors.length > 0) throw new RevertFailedError(what, error, undoErrors)
    throw error
  }
}
