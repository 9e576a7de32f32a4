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

export class ExecaCommandRunner implements CommandRunner {
  async run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
    const shown = [file, ...args].map(quote).join(' ')
    const ok = options.okExitCodes ?? [0]
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
    const stdout = clip(String(result.stdout ?? ''))
    const stderr = clip(String(result.stderr ?? ''))
    if (result.timedOut)
      throw new CommandError(shown, null, stderr, `timed out after ${options.timeoutMs} ms`)
    if (result.failed && result.exitCode === undefined) {
      throw new CommandError(shown, null, stderr, `failed: ${result.shortMessage ?? 'unknown error'}`)
    }
    const exitCode = result.exitCode ?? -1
    if (!ok.includes(exitCode)) throw new CommandError(shown, exitCode, stderr, `exited with ${exitCode}`)
    return { exitCode, stdout, stderr }
  }
}
