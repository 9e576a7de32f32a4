// The messages between HelperCommandRunner (in the node) and command-helper.ts
// (its child processes), and the limits both sides share.

/** Captured output beyond this is cut to its tail (the same bound as ExecaCommandRunner's). */
export const OUTPUT_BYTES_MAX = 1024 * 1024
/** After a timeout's SIGTERM, a command that is still running gets SIGKILL this much later. */
export const KILL_GRACE_MS = 5_000

export interface HelperRequest {
  id: number
  file: string
  args: string[]
  timeoutMs: number
  input?: string | Uint8Array
  env?: Record<string, string>
  cwd?: string
}

export interface HelperReply {
  id: number
  /** null when the command was killed by a signal or never started. */
  exitCode: number | null
  signal: string | null
  stdout: string
  stderr: string
  timedOut: boolean
  /** Why the command could not be started (ENOENT…), or null. */
  spawnError: string | null
}
