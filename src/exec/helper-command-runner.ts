// A CommandRunner that runs every command through a few small helper
// processes (command-helper.ts) instead of spawning it from this process.
//
// Why: child_process.spawn blocks the calling event loop until the child has
// exec'd. On an idle machine that is a millisecond; on a busy one (a
// 50-vnode create puts mkfs, mount and lxc-start for dozens of containers on
// two cores) it is 15-60 ms per command: eight parallel container creates
// from one process held its event loop in spawn() three quarters of the
// time, and in the node Raft heartbeats, RPCs, image transfers and the
// agent's own reports all waited behind those forks. The helpers take that
// wait (DESIGN: container operations run off the consensus path, in child
// processes where the event loop would otherwise stall), and a fork from a
// small process is cheaper too (the node's main thread CPU per create went
// down by about half). Each helper spawns one command at a time, so commands
// are spread over up to `helpers` of them.
//
// Same contract as ExecaCommandRunner: argument arrays, a timeout on every
// command (SIGTERM, then SIGKILL), output cut to its tail, CommandError naming
// the command and its stderr. Helpers start on first use (or all at once with
// start()) and exit when close() is called or this process dies (their IPC
// channel closes) and the commands they run have ended.

import { type ChildProcess, fork } from 'node:child_process'
import {
  CommandError,
  type CommandRunner,
  commandOutcome,
  quote,
  type RunOptions,
  type RunResult,
} from './command-runner.ts'
import { type HelperReply, type HelperRequest, KILL_GRACE_MS } from './helper-protocol.ts'

/** Helper processes by default: each spawns serially, and a host runs up to 8 container steps at once. */
export const HELPERS_DEFAULT = 3
export const HELPERS_MAX = 16
/** Commands waiting for or running in the helpers at once; beyond it run() fails at once. */
export const COMMANDS_IN_FLIGHT_MAX = 1024
/** After a command's timeout and kill grace, its helper has this long to answer before the command fails. */
export const HELPER_ANSWER_GRACE_MS = 10_000

const helperUrl = new URL(
  import.meta.url.endsWith('.js') ? './command-helper.js' : './command-helper.ts',
  import.meta.url,
)

export interface HelperCommandRunnerOptions {
  /** How many helper processes at most (1 to HELPERS_MAX; default HELPERS_DEFAULT). */
  helpers?: number
}

interface Pending {
  shown: string
  okExitCodes: number[]
  timeoutMs: number
  /** Fails the command if its helper never answers (the helper enforces the timeout itself). */
  deadline: NodeJS.Timeout
  resolve: (result: RunResult) => void
  reject: (error: Error) => void
}

interface Helper {
  child: ChildProcess
  pending: Map<number, Pending>
}

export class HelperCommandRunner implements CommandRunner {
  readonly #helpersMax: number
  readonly #helpers: Helper[] = []
  #nextId = 1
  #inFlight = 0
  #closed = false

  constructor(options: HelperCommandRunnerOptions = {}) {
    const helpers = options.helpers ?? HELPERS_DEFAULT
    if (!Number.isInteger(helpers) || helpers < 1 || helpers > HELPERS_MAX)
      throw new RangeError(`helpers must be a whole number from 1 to ${HELPERS_MAX}, got ${helpers}.`)
    this.#helpersMax = helpers
  }

  /** Helper processes running now (tests). */
  get helperCount(): number {
    return this.#helpers.length
  }

  run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
    const shown = [file, ...args].map(quote).join(' ')
    if (this.#closed)
      return Promise.reject(new CommandError(shown, null, '', 'was not run: the command runner is closed'))
    if (this.#inFlight >= COMMANDS_IN_FLIGHT_MAX)
      return Promise.reject(
        new CommandError(
          shown,
          null,
          '',
          `was not run: ${COMMANDS_IN_FLIGHT_MAX} commands are already in flight; retry once some have finished`,
        ),
      )
    let helper: Helper
    try {
      helper = this.#pick()
    } catch (error) {
      return Promise.reject(
        new CommandError(shown, null, '', `could not run: ${(error as Error).message}`, { cause: error }),
      )
    }
    const id = this.#nextId++
    const request: HelperRequest = {
      id,
      file,
      args: [...args],
      timeoutMs: options.timeoutMs,
      ...(options.input === undefined ? {} : { input: options.input }),
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    }
    return new Promise<RunResult>((resolve, reject) => {
      const deadline = setTimeout(
        () =>
          this.#settle(
            helper,
            id,
            new CommandError(shown, null, '', 'got no answer from its command helper; it may still run'),
          ),
        options.timeoutMs + KILL_GRACE_MS + HELPER_ANSWER_GRACE_MS,
      )
      deadline.unref()
      helper.pending.set(id, {
        shown,
        okExitCodes: options.okExitCodes ?? [0],
        timeoutMs: options.timeoutMs,
        deadline,
        resolve,
        reject,
      })
      this.#inFlight += 1
      if (helper.pending.size === 1) this.#ref(helper, true)
      helper.child.send(request, (error) => {
        if (error !== null && error !== undefined)
          this.#settle(helper, id, new CommandError(shown, null, '', `could not run: ${error.message}`))
      })
    })
  }

  /**
   * Starts every helper now, so that their own start (a Node process each)
   * is not paid by the first burst of commands.
   */
  start(): void {
    if (this.#closed) return
    while (this.#helpers.length < this.#helpersMax) this.#start()
  }

  /** Closes the helpers: they exit once the commands they run have ended; later run() calls fail. */
  close(): void {
    this.#closed = true
    for (const helper of this.#helpers.splice(0)) {
      this.#failAll(helper, 'the command runner was closed while it ran')
      if (helper.child.connected) helper.child.disconnect()
    }
  }

  /** The least busy helper; a new one while all are busy and there may be more. */
  #pick(): Helper {
    let best: Helper | undefined
    for (const helper of this.#helpers)
      if (best === undefined || helper.pending.size < best.pending.size) best = helper
    if (best !== undefined && (best.pending.size === 0 || this.#helpers.length >= this.#helpersMax))
      return best
    return this.#start()
  }

  #start(): Helper {
    const child = fork(helperUrl, [], {
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    })
    const helper: Helper = { child, pending: new Map() }
    this.#helpers.push(helper)
    child.on('message', (reply: HelperReply) => this.#answer(helper, reply))
    child.once('error', (error) => this.#lost(helper, `the command helper failed: ${error.message}`))
    child.once('exit', (code, signal) =>
      this.#lost(helper, `the command helper exited (${signal ?? `code ${code}`})`),
    )
    this.#ref(helper, false)
    return helper
  }

  /** Helpers hold this process open only while they run something for it. */
  #ref(helper: Helper, on: boolean): void {
    const channel = helper.child.channel as { ref?: () => void; unref?: () => void } | null | undefined
    if (on) {
      helper.child.ref()
      channel?.ref?.()
    } else {
      helper.child.unref()
      channel?.unref?.()
    }
  }

  #answer(helper: Helper, reply: HelperReply): void {
    const pending = helper.pending.get(reply.id)
    if (pending === undefined) return
    this.#settle(helper, reply.id, commandOutcome(pending.shown, reply, pending))
  }

  #settle(helper: Helper, id: number, outcome: RunResult | Error): void {
    const pending = helper.pending.get(id)
    if (pending === undefined) return
    helper.pending.delete(id)
    clearTimeout(pending.deadline)
    this.#inFlight -= 1
    if (helper.pending.size === 0) this.#ref(helper, false)
    if (outcome instanceof Error) pending.reject(outcome)
    else pending.resolve(outcome)
  }

  #failAll(helper: Helper, why: string): void {
    for (const [id, pending] of [...helper.pending])
      this.#settle(helper, id, new CommandError(pending.shown, null, '', `did not finish: ${why}`))
  }

  /** A helper that died: its commands fail (they may have run; callers retry idempotently), the next run starts another. */
  #lost(helper: Helper, why: string): void {
    const index = this.#helpers.indexOf(helper)
    if (index >= 0) this.#helpers.splice(index, 1)
    this.#failAll(helper, why)
  }
}
