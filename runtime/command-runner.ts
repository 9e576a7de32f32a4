// The shape of the external-command runner runtime/ consumes (types only).
// runtime/ must not import src/, so it declares what it needs here; src/exec's
// ExecaCommandRunner satisfies it and is handed in by the caller.

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
