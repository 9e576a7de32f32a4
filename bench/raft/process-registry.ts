// Every process and temp dir the benchmark creates is registered here, so that
// nothing outlives the run: stop() cleans up in order, and exit/signal
// handlers kill and delete synchronously if the run dies half-way.

import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Lines of a child's stderr kept for the error report, unless the caller asks for more. */
const stderrLinesMaxDefault = 40
const stopGraceMs = 2_000

export interface ManagedProcess {
  readonly label: string
  readonly child: ChildProcess
  readonly pid: number
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<void>
  /** The last lines the process wrote to stderr, for error messages. */
  stderrTail(): string
  isRunning(): boolean
}

export class ProcessRegistry {
  private readonly processes = new Set<ManagedProcess>()
  private readonly tempDirs = new Set<string>()
  private readonly stderrLinesMax: number
  private readonly onExit = () => this.killAllSync()
  private readonly onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`bench: received ${signal}, cleaning up\n`)
    this.killAllSync()
    process.exit(signal === 'SIGINT' ? 130 : 143)
  }

  constructor(options: { stderrLinesMax?: number } = {}) {
    this.stderrLinesMax = options.stderrLinesMax ?? stderrLinesMaxDefault
    process.on('exit', this.onExit)
    process.on('SIGINT', this.onSignal)
    process.on('SIGTERM', this.onSignal)
  }

  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), prefix))
    this.tempDirs.add(dir)
    return dir
  }

  spawn(label: string, command: string, args: string[], options: SpawnOptions = {}): ManagedProcess {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], ...options })
    if (child.pid === undefined) throw new Error(`Could not start ${label} (${command}); is it installed?`)
    const lines: string[] = []
    let partial = ''
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n')
      partial = parts.pop() ?? ''
      for (const line of parts) {
        lines.push(line)
        if (lines.length > this.stderrLinesMax) lines.shift()
      }
    })
    child.stdout?.resume()
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve())
      child.once('error', () => resolve())
    })
    const managed: ManagedProcess = {
      label,
      child,
      pid: child.pid,
      exited,
      stderrTail: () => [...lines, partial].join('\n').trim(),
      isRunning: () => child.exitCode === null && child.signalCode === null,
    }
    this.processes.add(managed)
    void exited.then(() => this.processes.delete(managed))
    return managed
  }

  /** SIGKILL, as a crash would; resolves once the process is gone. */
  async kill(managed: ManagedProcess): Promise<void> {
    if (managed.isRunning()) managed.child.kill('SIGKILL')
    await managed.exited
  }

  /** SIGTERM, then SIGKILL after a grace period. */
  async terminate(managed: ManagedProcess): Promise<void> {
    if (!managed.isRunning()) return
    managed.child.kill('SIGTERM')
    const timer = setTimeout(() => managed.child.kill('SIGKILL'), stopGraceMs)
    await managed.exited
    clearTimeout(timer)
  }

  removeTempDir(dir: string): void {
    rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 })
    this.tempDirs.delete(dir)
  }

  /** Stops every process and deletes every temp dir; the registry stays usable. */
  async cleanup(): Promise<void> {
    await Promise.all([...this.processes].map((p) => this.terminate(p)))
    for (const dir of [...this.tempDirs]) this.removeTempDir(dir)
  }

  /** Final cleanup: also removes the process handlers. */
  async close(): Promise<void> {
    await this.cleanup()
    process.off('exit', this.onExit)
    process.off('SIGINT', this.onSignal)
    process.off('SIGTERM', this.onSignal)
  }

  /** Last resort from exit and signal handlers, where nothing asynchronous runs any more. */
  killAllSync(): void {
    for (const p of this.processes) {
      if (p.isRunning()) p.child.kill('SIGKILL')
    }
    for (const dir of this.tempDirs) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 })
      } catch {
        // A process may still hold files for a moment; the message below names what is left.
        process.stderr.write(`bench: could not remove ${dir}; delete it by hand\n`)
      }
    }
    this.tempDirs.clear()
  }
}
