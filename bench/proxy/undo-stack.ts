// Undo steps for everything bench:proxy makes on the machine (network
// namespaces, processes, temp dirs), run newest first, each registered as
// soon as the thing it undoes exists. SIGINT/SIGTERM run them and exit; an
// exit nobody awaited (an uncaught error) runs their synchronous fallbacks.

/** More steps than this means a loop registers without ever removing: a programmer error. */
export const UNDO_STEPS_MAX = 256

export interface UndoStep {
  /** What the step undoes, for the report when it fails ("delete network namespace X"). */
  label: string
  run(): Promise<void>
  /** Best effort from an exit handler, where only synchronous work runs. */
  runSync(): void
}

export class UndoStack {
  readonly #name: string
  readonly #steps: UndoStep[] = []
  #signalled = false
  readonly #onExit = () => this.runAllSync()
  readonly #onSignal = (signal: NodeJS.Signals) => {
    const exitCode = signal === 'SIGINT' ? 130 : 143
    if (this.#signalled) {
      this.runAllSync()
      process.exit(exitCode)
    }
    this.#signalled = true
    process.stderr.write(`${this.#name}: received ${signal}, cleaning up (send it again to force)\n`)
    void this.runAll().finally(() => process.exit(exitCode))
  }

  constructor(name: string) {
    this.#name = name
  }

  /** True once a signal asked the run to stop: nothing new may start. */
  get stopping(): boolean {
    return this.#signalled
  }

  install(): void {
    process.on('exit', this.#onExit)
    process.on('SIGINT', this.#onSignal)
    process.on('SIGTERM', this.#onSignal)
  }

  uninstall(): void {
    process.off('exit', this.#onExit)
    process.off('SIGINT', this.#onSignal)
    process.off('SIGTERM', this.#onSignal)
  }

  add(step: UndoStep): void {
    if (this.#steps.length >= UNDO_STEPS_MAX)
      throw new Error(`More than ${UNDO_STEPS_MAX} undo steps are registered; one is never removed.`)
    this.#steps.push(step)
  }

  /** Runs every step, newest first, each even when an earlier one failed; the failures as sentences. */
  async runAll(): Promise<string[]> {
    const failures: string[] = []
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!
      try {
        await step.run()
      } catch (error) {
        failures.push(`${step.label}: ${(error as Error).message}`)
      }
    }
    return failures
  }

  runAllSync(): void {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!
      try {
        step.runSync()
      } catch (error) {
        process.stderr.write(`${this.#name}: could not ${step.label}: ${(error as Error).message}\n`)
      }
    }
  }
}
