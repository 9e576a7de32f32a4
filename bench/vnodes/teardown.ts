// Undo steps for everything bench:vnodes makes on the machine (namespaces,
// daemons, containers, mounts, temp dirs), run newest first. Each step is
// registered right after the thing it undoes exists, so a failure half-way
// undoes exactly what was made (the Revert habit of runtime/).
//
// SIGINT/SIGTERM run the asynchronous steps, then exit; a second signal, or
// an exit that nobody awaited (an uncaught error), runs the synchronous
// fallbacks, since nothing asynchronous runs in an exit handler any more.

/** More steps than this means a loop registers without ever removing: a programmer error. */
export const TEARDOWN_STEPS_MAX = 1000

export interface TeardownStep {
  /** What the step undoes, for the report when it fails ("delete network namespace X"). */
  label: string
  run(): Promise<void>
  /** Best effort from an exit handler, where only synchronous work runs. */
  runSync?(): void
}

export interface RegisteredStep {
  /** Runs the step now (e.g. after each measured container) and forgets it. */
  run(): Promise<void>
  /** Forgets the step: what it undoes is gone already. */
  forget(): void
}

export class TeardownError extends Error {
  readonly code = 'ERR_BENCH_TEARDOWN'
  constructor(failures: string[]) {
    super(`Cleaning up after the benchmark failed; remove what is named here by hand: ${failures.join('; ')}`)
    this.name = 'TeardownError'
  }
}

export class Teardown {
  readonly #steps: TeardownStep[] = []
  #running: Promise<string[]> | null = null
  #signalled = false
  readonly #onExit = () => this.runAllSync()
  readonly #onSignal = (signal: NodeJS.Signals) => {
    const exitCode = signal === 'SIGINT' ? 130 : 143
    if (this.#signalled) {
      this.runAllSync()
      process.exit(exitCode)
    }
    this.#signalled = true
    process.stderr.write(`bench:vnodes: received ${signal}, cleaning up (send it again to force)\n`)
    void this.runAll().finally(() => process.exit(exitCode))
  }

  /** True once a signal asked the run to stop: the measuring loop must not start anything new. */
  get stopping(): boolean {
    return this.#signalled
  }

  /** Installs the exit and signal handlers; call once, before anything is made. */
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

  /** Registers an undo step, to run at the end unless it is run or dropped earlier through the handle. */
  add(step: TeardownStep): RegisteredStep {
    if (this.#steps.length >= TEARDOWN_STEPS_MAX) {
      throw new Error(`More than ${TEARDOWN_STEPS_MAX} teardown steps are registered; one is never removed.`)
    }
    this.#steps.push(step)
    const forget = (): void => {
      const index = this.#steps.indexOf(step)
      if (index >= 0) this.#steps.splice(index, 1)
    }
    return {
      forget,
      run: async () => {
        forget()
        await step.run()
      },
    }
  }

  /** Runs every step, newest first, each even when an earlier one failed; the failures as sentences. */
  runAll(): Promise<string[]> {
    this.#running ??= (async () => {
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
    })().finally(() => {
      this.#running = null
    })
    return this.#running
  }

  runAllSync(): void {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!
      try {
        step.runSync?.()
      } catch (error) {
        process.stderr.write(`bench:vnodes: could not ${step.label}: ${(error as Error).message}\n`)
      }
    }
  }
}
