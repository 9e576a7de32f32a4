// The child process behind HelperCommandRunner: it receives commands over the
// IPC channel, runs each with child_process.spawn (argument array, no shell),
// and answers with the exit code and the tail of the output. It exists so
// that the fork+exec of every command happens here, in a small process,
// instead of in the node: spawn() blocks the calling event loop until the
// child has exec'd, which on a busy machine takes tens of ms per command,
// and the node's Raft, RPC and image transfers would wait behind every one.
//
// Only node: builtins, so it starts fast. It exits once the node closes the
// channel (or dies) and the commands it still runs have ended; their timeouts
// keep applying until then.

import { spawn } from 'node:child_process'
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

function run(request: HelperRequest): Promise<HelperReply> {
  return new Promise((resolve) => {
    const stdout = new Tail()
    const stderr = new Tail()
    let timedOut = false
    let spawnError: string | null = null
    let settled = false
    const child = spawn(request.file, request.args, {
      stdio: [request.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(request.env === undefined ? {} : { env: { ...process.env, ...request.env } }),
      ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
    })
    let killTimer: NodeJS.Timeout | null = null
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGTERM')
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS)
    }, request.timeoutMs)
    const finish = (exitCode: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (killTimer !== null) clearTimeout(killTimer)
      resolve({
        id: request.id,
        exitCode,
        signal,
        stdout: stdout.text(),
        stderr: stderr.text(),
        timedOut,
        spawnError,
      })
    }
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => stdout.push(chunk))
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk))
    child.once('error', (error) => {
      spawnError = error.message
      // A process that never started emits no 'close'.
      if (child.pid === undefined) finish(null, null)
    })
    child.once('close', (code, signal) => finish(code, signal))
    if (request.input !== undefined && child.stdin !== null) {
      // A command that exits without reading its input closes the pipe: that is its business.
      child.stdin.on('error', () => {})
      child.stdin.end(request.input)
    }
  })
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
