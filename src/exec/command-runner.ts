// The one way docklet runs external commands (lxc-*, ip, wg, nft, …):
// argument arrays (never a shell string), an explicit timeout, bounded
// captured output, and an error that names the command and its stderr.
// net/ and runtime/ each declare the CommandRunner shape they consume; this
// implementation satisfies both and is handed to them by src/.

import { execa } from 'execa'

export interface RunOptions {
  /** Kill the command after this long. Required: nothing runs unbounded. */
  timeoutMs: number
  /** Bytes written to the command's stdin. */
  input?: string | Uint8Array
  /** Extra environment variables. */
  env?: Record<string, string>
  /** Run in this directory. */
  cwd?: string
  /** Exit codes that are not failures (default [0]). */
  okExitCodes?: number[]
}

export interface RunResult {
  exitCode: number
  stdout: string
  stderr: string
}

export interface CommandRunner {
  run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult>
}

/** Captured output beyond this is cut (the tail is what explains a failure). */
export const OUTPUT_BYTES_MAX = 1024 * 1024

export class CommandError extends Error {
  readonly code = 'ERR_COMMAND'
  readonly command: string
  readonly exitCode: number | null
  readonly stderr: string
  constructor(
    command: string,
    exitCode: number | null,
    stderr: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    const detail = stderr.trim().split('\n').slice(-5).join(' | ')
    super(`\`${command}\` ${reason}${detail === '' ? '' : `: ${detail}`}`, options)
    this.name = 'CommandError'
    this.command = command
    this.exitCode = exitCode
    this.stderr = stderr
  }
}

/** An argument as a person would type it in a shell (for messages only; nothing runs through a shell). */
export function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`
}

function clip(text: string): string {
  return text.length > OUTPUT_BYTES_MAX ? text.slice(-OUTPUT_BYTES_MAX) : text
}

/** How a command ended, as both runners see it. */
export interface CommandEnd {
  exitCode: number | null
  signal: string | null
  stdout: string
  stderr: string
  timedOut: boolean
  /** Why the command could not be started (ENOENT…), or null. */
  spawnError: string | null
}

/** The result of a command that ended as `end`, or the CommandError that names why it failed. */
export function commandOutcome(
  shown: string,
  end: CommandEnd,
  options: Pick<RunOptions, 'timeoutMs' | 'okExitCodes'>,
): RunResult | CommandError {
  if (end.spawnError !== null && end.exitCode === null && end.signal === null)
    return new CommandError(shown, null, '', `could not run: ${end.spawnError}`)
  if (end.timedOut)
    return new CommandError(shown, null, end.stderr, `timed out after ${options.timeoutMs} ms`)
  if (end.exitCode === null)
    return new CommandError(shown, null, end.stderr, `was killed by ${end.signal ?? 'a signal'}`)
  if (!(options.okExitCodes ?? [0]).includes(end.exitCode))
    return new CommandError(shown, end.exitCode, end.stderr, `exited with ${end.exitCode}`)
  return { exitCode: end.exitCode, stdout: end.stdout, stderr: end.stderr }
}

export class ExecaCommandRunner implements CommandRunner {
  async run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
    const shown = [file, ...args].map(quote).join(' ')
    let result: Awaited<ReturnType<typeof execa>>
    try {
      result = await execa(file, [...args], {
        timeout: options.timeoutMs,
        reject: false,
        stripFinalNewline: false,
        maxBuffer: OUTPUT_BYTES_MAX,
        ...(options.input === undefined ? { stdin: 'ignore' as const } : { input: options.input }),
        ...(options.env === undefined ? {} : { env: options.env }),
        ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      })
    } catch (error) {
      throw new CommandError(shown, null, '', `could not run: ${(error as Error).message}`, { cause: error })
    }
    const started = result.exitCode !== undefined || result.signal !== undefined
    const outcome = commandOutcome(
      shown,
      {
        exitCode: result.exitCode ?? null,
        signal: result.signal ?? null,
        stdout: clip(String(result.stdout ?? '')),
        stderr: clip(String(result.stderr ?? '')),
        timedOut: result.timedOut,
        spawnError: started ? null : result.shortMessage || 'it could not be started',
      },
      options,
    )
    if (outcome instanceof Error) throw outcome
    return outcome
  }
}
