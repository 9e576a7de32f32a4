// A cluster of real docklet node processes on 127.0.0.1, driven through the
// real CLI (`node src/cli.ts ...`). Each node gets its own temp data dir, a
// free port and a config.json with short Raft timing. The nodes are detached
// (`--detach`), so they are not our children: every pid the harness learns is
// recorded, and cleanup() SIGKILLs them and removes the temp dirs. cleanup()
// is also registered on process exit and on SIGINT/SIGTERM, so nothing
// lingers when a test fails or the run is interrupted.

import { execFile } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { NodeConfig } from '../../src/config.ts'
import { type ControlRequest, callControl } from '../../src/control/control-client.ts'
import type { ClusterStatus } from '../../src/node/docklet-node.ts'

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
export const cliPath = join(repoRoot, 'src/cli.ts')

/**
 * Raft timing for tests: 50 ms ticks, 500 ms election timeout, small snapshots so they are taken and installed.
 * No mesh: every node of these clusters shares one network namespace (and would share one WireGuard port).
 */
export const testNodeConfig: Partial<NodeConfig> = {
  mesh: 'off',
  // In-memory containers and no image builds: these tests are about the cluster, not the host.
  runtime: 'fake',
  initImages: [],
  tickMs: 50,
  electionTimeoutTicks: 10,
  offlineThresholdMs: 3_000,
  requestTimeoutMs: 4_000,
  snapshotEntries: 50,
  logLevel: 'info',
}

const cliTimeoutMsDefault = 60_000
const cliOutputBytesMax = 16 * 1024 * 1024
const bindAttemptsMax = 4
const stopGraceMs = 10_000
const logTailLines = 15

export interface CliResult {
  /** Exit code; -1 when the CLI was killed (timeout or signal). */
  code: number
  stdout: string
  stderr: string
  /** stdout parsed as JSON, or null when it is not JSON. */
  json: unknown
  durationMs: number
}

export interface ClusterNode {
  index: number
  dataDir: string
  port: number
  /** HOST:PORT the node listens on. */
  address: string
  /** PeerId. */
  id: string
  /** Pid of the running node process, 0 when it is not running. */
  pid: number
}

export interface DebugState {
  applied_index: number
  snapshot_index: number
  state_digest: string
}

export interface ProcessClusterOptions {
  /** Settings written to every node's config.json (merged over testNodeConfig). */
  config?: Partial<NodeConfig>
  /** Prefix of the temp dir. */
  name?: string
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => {
        if (address === null || typeof address === 'string')
          reject(new Error('A TCP server reported no port.'))
        else resolvePort(address.port)
      })
    })
  })
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolveSleep) => setTimeout(resolveSleep, ms))
}

/** True while the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  if (pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    // A killed node is reparented; where nobody reaps it, it stays a zombie: that is dead too.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

function commandLineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
  } catch {
    return ''
  }
}

/**
 * Calls `probe` until it returns something other than undefined/false; throws
 * an error naming `what` (and the last error or value) after timeoutMs.
 */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  what: string,
  timeoutMs: number,
  options: { intervalMs?: number; detail?: () => string } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined && value !== false) return value
      last = value
    } catch (error) {
      last = error
    }
    if (Date.now() >= deadline) {
      const lastText =
        last instanceof Error ? `last error: ${last.message}` : `last value: ${JSON.stringify(last)}`
      const detail = options.detail?.() ?? ''
      throw new Error(
        `Timed out after ${timeoutMs} ms waiting for ${what} (${lastText}).${detail === '' ? '' : `\n${detail}`}`,
      )
    }
    await sleep(options.intervalMs ?? 100)
  }
}

/** Runs the docklet CLI with Node 24 (process.execPath); never throws on a non-zero exit. */
export function runCli(args: string[], options: { timeoutMs?: number } = {}): Promise<CliResult> {
  const started = Date.now()
  return new Promise((resolveRun) => {
    const child = execFile(
      process.execPath,
      [cliPath, ...args],
      {
        cwd: repoRoot,
        timeout: options.timeoutMs ?? cliTimeoutMsDefault,
        killSignal: 'SIGKILL',
        maxBuffer: cliOutputBytesMax,
        env: { ...process.env, NO_COLOR: '1' },
      },
      (error, stdout, stderr) => {
        cliChildren.delete(child.pid ?? 0)
        let code = 0
        if (error !== null) code = typeof error.code === 'number' ? error.code : -1
        let json: unknown = null
        try {
          json = stdout.trim() === '' ? null : JSON.parse(stdout)
        } catch {
          json = null
        }
        resolveRun({ code, stdout, stderr, json, durationMs: Date.now() - started })
      },
    )
    if (child.pid !== undefined) cliChildren.add(child.pid)
  })
}

/** CLI processes still running (killed by every cluster's cleanup). */
const cliChildren = new Set<number>()

function joinArgs(peer: string, token: string, dataDir: string, listen: string): string[] {
  return [
    'join',
    peer,
    '--token',
    token,
    '--data-dir',
    dataDir,
    '--listen',
    listen,
    '--portal',
    '',
    '--detach',
    '--json',
  ]
}

function describeCli(args: string[], result: CliResult): string {
  return `\`docklet ${args.join(' ')}\` exited ${result.code} after ${result.durationMs} ms\nstdout: ${result.stdout.trim()}\nstderr: ${result.stderr.trim()}`
}

export class ProcessCluster {
  readonly root: string
  readonly nodes: ClusterNode[] = []
  private readonly config: Partial<NodeConfig>
  /** Every node pid ever seen, with its data dir: cleanup kills those still alive. */
  private readonly pids = new Map<number, string>()
  private cleaned = false
  private tries = 0
  private readonly onExit = () => this.cleanupSync()
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.cleanupSync()
    process.exit(signal === 'SIGINT' ? 130 : 143)
  }

  constructor(options: ProcessClusterOptions = {}) {
    this.root = mkdtempSync(join(tmpdir(), options.name ?? 'docklet-pc-'))
    this.config = { ...testNodeConfig, ...options.config }
    process.on('exit', this.onExit)
    process.on('SIGINT', this.onSignal)
    process.on('SIGTERM', this.onSignal)
  }

  node(index: number): ClusterNode {
    const node = this.nodes[index]
    if (node === undefined) throw new Error(`The cluster has no node ${index}.`)
    return node
  }

  /** Runs the CLI against node i's data dir (adds --data-dir and, unless json is false, --json). */
  cli(
    index: number,
    args: string[],
    options: { json?: boolean; timeoutMs?: number } = {},
  ): Promise<CliResult> {
    const extra = ['--data-dir', this.node(index).dataDir]
    if (options.json !== false) extra.push('--json')
    return runCli([...args, ...extra], options)
  }

  /** Like cli(), but throws (with the CLI's output) on a non-zero exit; returns the parsed JSON. */
  async cliOk<T = Record<string, unknown>>(
    index: number,
    args: string[],
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    const result = await this.cli(index, args, options)
    if (result.code !== 0 || result.json === null) throw new Error(describeCli(args, result))
    return result.json as T
  }

  /** Calls node i's control socket directly (fast; used for polling). */
  control<T>(index: number, request: ControlRequest): Promise<T> {
    return callControl<T>(join(this.node(index).dataDir, 'docklet.sock'), { timeoutMs: 5_000, ...request })
  }

  /** `docklet status --json` on node i. */
  status(index: number): Promise<ClusterStatus> {
    return this.cliOk<ClusterStatus>(index, ['status'])
  }

  /** Status through the control socket (no CLI process), for polling loops. */
  quickStatus(index: number): Promise<ClusterStatus> {
    return this.control<ClusterStatus>(index, { method: 'GET', path: '/v1/status' })
  }

  debugState(index: number): Promise<DebugState> {
    return this.control<DebugState>(index, { method: 'GET', path: '/v1/debug/state' })
  }

  /** Creates a new one-node cluster as node 0. */
  async init(): Promise<ClusterNode> {
    if (this.nodes.length > 0) throw new Error('init() creates node 0; this cluster already has nodes.')
    return this.startNew((dataDir, listen) => [
      'init',
      '--data-dir',
      dataDir,
      '--listen',
      listen,
      '--portal',
      '',
      '--detach',
      '--json',
    ])
  }

  /** Joins `count` new nodes one after the other, each with a fresh token from node `via` and contacting it. */
  async join(count = 1, options: { via?: number } = {}): Promise<ClusterNode[]> {
    const via = options.via ?? this.firstRunning()
    const joined: ClusterNode[] = []
    for (let i = 0; i < count; i++) {
      const { token } = await this.cliOk<{ token: string }>(via, ['token', 'create'])
      joined.push(await this.joinWithToken(token, { via }))
    }
    return joined
  }

  /** Joins one new node with the given token, contacting node `via`. */
  joinWithToken(token: string, options: { via?: number } = {}): Promise<ClusterNode> {
    const peer = this.node(options.via ?? this.firstRunning()).address
    return this.startNew((dataDir, listen) => joinArgs(peer, token, dataDir, listen))
  }

  /**
   * Runs `docklet join` for a new data dir (not added to the nodes) and returns
   * what the CLI said; for joins that are expected to be refused.
   */
  async tryJoin(peer: string, token: string): Promise<CliResult> {
    const dataDir = this.newDataDir(`try-${++this.tries}`)
    const result = await runCli(joinArgs(peer, token, dataDir, `127.0.0.1:${await freePort()}`))
    this.notePidFile(dataDir)
    return result
  }

  private firstRunning(): number {
    const index = this.nodes.findIndex((n) => n.pid !== 0)
    if (index < 0) throw new Error('No node of the cluster is running.')
    return index
  }

  /** A fresh data dir (with config.json) for a node this harness does not start itself. */
  newDataDir(label: string): string {
    const dataDir = join(this.root, label)
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    writeFileSync(join(dataDir, 'config.json'), `${JSON.stringify(this.config)}\n`)
    return dataDir
  }

  private async startNew(argsFor: (dataDir: string, listen: string) => string[]): Promise<ClusterNode> {
    const index = this.nodes.length
    let last: CliResult | null = null
    let lastArgs: string[] = []
    for (let attempt = 0; attempt < bindAttemptsMax; attempt++) {
      const port = await freePort()
      const address = `127.0.0.1:${port}`
      // A fresh dir per attempt: a failed init may have written its record already.
      const dataDir = this.newDataDir(`n${index}-${attempt}`)
      lastArgs = argsFor(dataDir, address)
      const result = await runCli(lastArgs)
      this.notePidFile(dataDir)
      if (result.code === 0) {
        const node: ClusterNode = { index, dataDir, port, address, id: '', pid: 0 }
        this.nodes.push(node)
        await this.refresh(index)
        return node
      }
      last = result
      // Someone else took the port between our probe and the node's bind: try another.
      if (!/EADDRINUSE|address already in use/i.test(result.stdout + result.stderr)) break
    }
    throw new Error(describeCli(lastArgs, last!))
  }

  /** Reads node i's id and pid from its control socket and records the pid. */
  async refresh(index: number): Promise<ClusterNode> {
    const node = this.node(index)
    const status = await waitFor(
      () => this.quickStatus(index),
      `node ${index} to answer on its control socket`,
      20_000,
    )
    node.id = status.self.id
    node.pid = status.self.pid
    this.pids.set(node.pid, node.dataDir)
    return node
  }

  private notePidFile(dataDir: string): void {
    try {
      const pid = Number.parseInt(readFileSync(join(dataDir, 'docklet.pid'), 'utf8'), 10)
      if (pid > 0) this.pids.set(pid, dataDir)
    } catch {
      // No pid file: the node did not get far enough to write one.
    }
  }

  /** SIGKILL node i, as a crash; resolves once the process is gone. */
  async kill(index: number): Promise<void> {
    const node = this.node(index)
    if (node.pid === 0) return
    try {
      process.kill(node.pid, 'SIGKILL')
    } catch {
      // Already gone.
    }
    await waitFor(() => !isAlive(node.pid), `node ${index} (pid ${node.pid}) to die`, 10_000, {
      intervalMs: 20,
    })
    node.pid = 0
  }

  /** SIGTERM node i (a clean stop); SIGKILL if it has not exited within a grace period. */
  async stop(index: number): Promise<void> {
    const node = this.node(index)
    if (node.pid === 0) return
    try {
      process.kill(node.pid, 'SIGTERM')
    } catch {
      // Already gone.
    }
    try {
      await waitFor(() => !isAlive(node.pid), `node ${index} to stop on SIGTERM`, stopGraceMs, {
        intervalMs: 50,
      })
    } catch (error) {
      process.kill(node.pid, 'SIGKILL')
      throw error
    } finally {
      node.pid = 0
    }
  }

  /** Waits for node i's process to exit by itself (after a leave). */
  async waitExit(index: number, timeoutMs: number): Promise<void> {
    const node = this.node(index)
    const pid = node.pid
    await waitFor(() => !isAlive(pid), `node ${index} (pid ${pid}) to exit`, timeoutMs, {
      intervalMs: 50,
      detail: () => this.logTail(index),
    })
    node.pid = 0
  }

  /** SIGSTOP: the process is frozen, as if the network to it were cut. */
  pause(index: number): void {
    const node = this.node(index)
    if (node.pid !== 0) process.kill(node.pid, 'SIGSTOP')
  }

  resume(index: number): void {
    const node = this.node(index)
    if (node.pid !== 0) process.kill(node.pid, 'SIGCONT')
  }

  /** `docklet start --detach` on node i's data dir. */
  async restart(index: number): Promise<ClusterNode> {
    const node = this.node(index)
    if (node.pid !== 0 && isAlive(node.pid))
      throw new Error(`Node ${index} is still running (pid ${node.pid}).`)
    const args = ['start', '--data-dir', node.dataDir, '--detach', '--json']
    const result = await runCli(args)
    this.notePidFile(node.dataDir)
    if (result.code !== 0) throw new Error(`${describeCli(args, result)}\n${this.logTail(index)}`)
    return this.refresh(index)
  }

  /** Indexes of the nodes whose process runs. */
  running(): number[] {
    return this.nodes.filter((n) => n.pid !== 0).map((n) => n.index)
  }

  indexOf(id: string): number {
    const index = this.nodes.findIndex((n) => n.id === id)
    if (index < 0) throw new Error(`No node of this harness has the id ${id}.`)
    return index
  }

  /**
   * Waits until every running node (or those given) names the same leader,
   * which is one of them; returns the leader's index.
   */
  async waitLeader(timeoutMs = 20_000, among = this.running()): Promise<number> {
    return waitFor(
      async () => {
        const statuses = await Promise.all(among.map((i) => this.quickStatus(i)))
        const leader = statuses[0]?.leader?.id
        if (leader === undefined || !statuses.every((s) => s.leader?.id === leader)) return undefined
        const index = this.nodes.findIndex((n) => n.id === leader)
        return index >= 0 && among.includes(index) ? index : undefined
      },
      'a leader that every running node agrees on',
      timeoutMs,
      { detail: () => this.logTails(among) },
    )
  }

  /** Waits until the given nodes report the same applied index and state digest; returns it. */
  async waitConverged(timeoutMs = 20_000, among = this.running()): Promise<DebugState> {
    return waitFor(
      async () => {
        const states = await Promise.all(among.map((i) => this.debugState(i)))
        const first = states[0]
        if (first === undefined) return undefined
        const same = states.every(
          (s) => s.applied_index === first.applied_index && s.state_digest === first.state_digest,
        )
        return same ? first : undefined
      },
      'every running node to report the same applied index and state digest',
      timeoutMs,
      { intervalMs: 200, detail: () => this.logTails(among) },
    )
  }

  /** The last lines of node i's log (detached nodes log to <dataDir>/docklet.log). */
  logTail(index: number, lines = logTailLines): string {
    const node = this.nodes[index]
    if (node === undefined) return ''
    try {
      const text = readFileSync(join(node.dataDir, 'docklet.log'), 'utf8').trimEnd().split('\n')
      return `--- node ${index} log (last ${lines} lines) ---\n${text.slice(-lines).join('\n')}`
    } catch {
      return `--- node ${index}: no log ---`
    }
  }

  /** Size of node i's log now, to read only what it writes afterwards (see logSince). */
  logBytes(index: number): number {
    try {
      return statSync(join(this.node(index).dataDir, 'docklet.log')).size
    } catch {
      return 0
    }
  }

  /** node i's structured log lines written after byte `offset`, parsed (other lines skipped). */
  logSince(index: number, offset: number): Array<Record<string, unknown>> {
    let text: string
    try {
      text = readFileSync(join(this.node(index).dataDir, 'docklet.log'))
        .subarray(offset)
        .toString('utf8')
    } catch {
      return []
    }
    return text.split('\n').flatMap((line) => {
      try {
        const parsed: unknown = JSON.parse(line)
        return parsed !== null && typeof parsed === 'object' ? [parsed as Record<string, unknown>] : []
      } catch {
        return []
      }
    })
  }

  logTails(indexes: number[] = this.nodes.map((n) => n.index)): string {
    return indexes.map((i) => this.logTail(i)).join('\n')
  }

  /** Kills every node and CLI process this harness started and removes the temp dirs. */
  async cleanup(): Promise<void> {
    const pids = this.killAll()
    await waitFor(() => pids.every((pid) => !isAlive(pid)), 'the cluster processes to die', 10_000, {
      intervalMs: 20,
    }).catch(() => {})
    this.cleanupSync()
  }

  private killAll(): number[] {
    for (const dir of existsSync(this.root) ? readdirSync(this.root) : [])
      this.notePidFile(join(this.root, dir))
    // Only processes that still run on one of our data dirs: a recorded pid may have been reused since.
    const nodes = [...this.pids]
      .filter(([pid, dataDir]) => commandLineOf(pid).includes(dataDir))
      .map(([pid]) => pid)
    const pids = [...nodes, ...cliChildren]
    for (const pid of pids) {
      // SIGKILL also ends a SIGSTOPped process.
      if (isAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // Gone meanwhile.
        }
      }
    }
    for (const node of this.nodes) node.pid = 0
    return pids
  }

  /** Synchronous last resort (exit handlers cannot wait). */
  cleanupSync(): void {
    if (this.cleaned) return
    this.killAll()
    this.cleaned = true
    process.off('exit', this.onExit)
    process.off('SIGINT', this.onSignal)
    process.off('SIGTERM', this.onSignal)
    if (process.env.DOCKLET_TEST_KEEP === '1') {
      process.stderr.write(`process-cluster: kept ${this.root} (DOCKLET_TEST_KEEP=1)\n`)
      return
    }
    try {
      rmSync(this.root, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 })
    } catch {
      process.stderr.write(`process-cluster: could not remove ${this.root}; delete it by hand\n`)
    }
  }
}
