// The messages between HelperCommandRunner (in the node) and command-helper.ts
// (its child processes), and the limits both sides share.

import type { CommandEnd } from './command-runner.ts'

/** Captured output beyond this is cut to its tail: ExecaCommandRunner's bound. */
export { OUTPUT_BYTES_MAX } from './command-runner.ts'

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

/** How the command ended (command-runner.ts's CommandEnd), for the request `id`. */
export interface HelperReply extends CommandEnd {
  id: number
}
