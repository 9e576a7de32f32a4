// The child process behind HelperCommandRunner: it receives commands over the
// IPC channel, runs each with execa (argument array, no shell),
// and answers with the exit code and the tail of the output. It exists so
// that the fork+exec of every command happens here, in a small process,
// instead of in the node: spawn() blocks the calling event loop until the
// child has exec'd, which on a busy machine takes tens of ms per command,
// and the node's Raft, RPC and image transfers would wait behind every one.
//
// It loads only execa and node: builtins, once per helper. It exits once the node closes the
// channel (or dies) and the commands it still runs have ended; their timeouts
// keep applying until then.

import { execa } from 'execa'
import type { HelperReply, HelperRequest } from './helper-protocol.ts'
import { KILL_GRACE_MS, OUTPUT_BYTES_MAX } from './helper-protocol.ts'

/** Keeps the last OUTPUT_BYTES_MAX characters of a stream (the tail is what explains a failure). */
class Tail {
  #chunks: string[] = []
  #length = 0

  push(chunk: string): void {
    this.#chunks.push(chunk)
    this.#length += chunk.length
    if (this.#length > 2 * OUTPUT_BYTES_MAX) {
      const text = this.#chunks.join('').slice(-OUTPUT_BYTES_MAX)
      this.#chunks = [text]
      this.#length = text.length
    }
  }

  text(): string {
    const text = this.#chunks.join('')
    return text.length > OUTPUT_BYTES_MAX ? text.slice(-OUTPUT_BYTES_MAX) : text
  }
}

async function run(request: HelperRequest): Promise<HelperReply> {
  const stdout = new Tail()
  const stderr = new Tail()
  const child = execa(request.file, [...request.args], {
    ...(request.input === undefined ? { stdin: 'ignore' as const } : { input: request.input }),
    ...(request.env === undefined ? {} : { env: request.env }),
    ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
    // Output is kept here, cut to its tail; execa would buffer all of it.
    buffer: false,
    reject: false,
    timeout: request.timeoutMs,
    killSignal: 'SIGTERM',
    forceKillAfterDelay: KILL_GRACE_MS,
  })
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => stdout.push(chunk))
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk))
  const result = await child
  const started = result.exitCode !== undefined || result.signal !== undefined
  return {
    id: request.id,
    exitCode: result.exitCode ?? null,
    signal: (result.signal as NodeJS.Signals | undefined) ?? null,
    stdout: stdout.text(),
    stderr: stderr.text(),
    timedOut: result.timedOut,
    // A program that could not be started (missing, not executable): execa's reason.
    spawnError: started ? null : result.originalMessage || result.shortMessage || 'it could not be started',
  }
}

process.on('message', (message: HelperRequest) => {
  void run(message).then((reply) => {
    if (process.connected) process.send?.(reply)
  })
})
process.on('disconnect', () => {
  // Nothing more will come; the running commands finish, then the event loop empties and we exit.
  process.removeAllListeners('message')
})
