// The main thread's side of the node's data plane. Proxy workers
// (proxy-worker.ts) own the portal's listening socket and proxy /go/
// themselves, and one of them forwards the mapped ports (on a node without
// a portal, that one is all there is); this class starts them, posts them the view of the
// replicated state they decide with (proxy-view.ts) after every burst of
// applied commands, feeds the requests they pass on (the API, the UI) to
// the app's server through the portal bridge, relays their log lines and
// restarts a worker that dies. So the main thread, whose event loop runs
// Raft's timers, does no per-request work for workspaces at all, and the
// API costs it what it cost before.
//
// Several workers share the portal's address with SO_REUSEPORT (the kernel
// spreads connections over them). Since a second program with the same
// option could then bind the address too, listen() first checks with a
// plain bind that nobody holds it, so a port in use still fails with
// EADDRINUSE as it did.

import type { Server as HttpServer } from 'node:http'
import { getCompileCacheDir } from 'node:module'
import { createServer } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { ClusterState } from '../state/cluster-state.ts'
import type { PortForwarderOptions } from './port-forwarder.ts'
import { PortalBridge } from './portal-bridge.ts'
import type {
  FromWorker,
  LogLevel,
  ProxyWorkerData,
  ProxyWorkerOptions,
  ToWorker,
  WorkerStats,
} from './proxy-messages.ts'
import { buildAuthView, buildRouteView, type ProxyView, viewChangeOf } from './proxy-view.ts'
import { proxyConnectionsMaxDefault } from './workspace-proxy.ts'

/** Half the cores, one to four: the other half runs the node, its containers and the workspaces. */
export const proxyWorkersDefault = Math.max(1, Math.min(4, Math.floor(availableParallelism() / 2)))
export const proxyWorkersMax = 16
export const workerStartTimeoutMs = 15_000
export const workerCloseTimeoutMs = 5_000
/** A worker that died is started again after this. */
export const workerRestartDelayMs = 1_000

const workerUrl = new URL(
  import.meta.url.endsWith('.js') ? './proxy-worker.js' : './proxy-worker.ts',
  import.meta.url,
)

/**
 * The worker's environment: the main thread's, with Node's compile cache on
 * (the one `docklet` enables, else Node's default place), so that a worker
 * starts in tens of milliseconds instead of compiling its modules anew.
 */
function workerEnv(): NodeJS.ProcessEnv {
  const cache =
    getCompileCacheDir?.() ?? process.env.NODE_COMPILE_CACHE ?? join(tmpdir(), 'node-compile-cache')
  return { ...process.env, NODE_COMPILE_CACHE: cache }
}

export class ProxyListenError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.name = 'ProxyListenError'
    this.code = code
  }
}

export interface ProxyFrontInit extends ProxyWorkerOptions {
  /** Where the portal's own requests go: the app's HTTP server (it need not listen); none without a portal. */
  server?: HttpServer
  /** The local replica; the workers' view is derived from it. */
  state: ClusterState
  /** This node's member id. */
  selfId: string
  logger?: Logger
  /** Wall clock in ms (tests pass a fake one; the workers keep its offset from theirs). */
  now?: () => number
  /** The port Jupyter listens on in vnode 0 (JUPYTER_PORT; tests use their own). */
  workspacePort?: number
  /** Worker threads serving the portal (proxyWorkersDefault). */
  workers?: number
  /** Forward the mapped ports too (in worker 0), with these options; off by default. */
  portForwarding?: boolean | PortForwarderOptions
}

interface RunningWorker {
  worker: Worker
  index: number
  /** Waiting for its stats. */
  statsWaiters: Array<(stats: WorkerStats) => void>
}

export class ProxyFront {
  private readonly init: ProxyFrontInit
  private readonly bridge: PortalBridge | null
  private workerCount: number
  private readonly running = new Map<number, RunningWorker>()
  /** The portal's host ('' while none). */
  private host = ''
  private port = 0
  /** HOST:PORT as bound ('' before listen). */
  private portal = ''
  private bridgePort = 0
  private hops = ''
  private unwatch: (() => void) | null = null
  private pending = { auth: false, routes: false }
  private scheduled = false
  private closing = false
  private restarts = 0

  constructor(init: ProxyFrontInit) {
    this.init = init
    this.workerCount = init.workers ?? proxyWorkersDefault
    if (!Number.isInteger(this.workerCount) || this.workerCount < 1 || this.workerCount > proxyWorkersMax)
      throw new RangeError(`The proxy runs 1 to ${proxyWorkersMax} workers, not ${this.workerCount}.`)
    this.bridge = init.server === undefined ? null : new PortalBridge(init.server, init.logger)
  }

  /** Where the portal listens (HOST:PORT, '' before listen). */
  get address(): string {
    return this.portal
  }

  /** Where other nodes' hops are served besides the portal ('' when nowhere). */
  get hopsListening(): string {
    return this.hops
  }

  /** Workers dead and started again since listen. */
  get workerRestarts(): number {
    return this.restarts
  }

  /** Starts the workers on host:port (0: the kernel picks); resolves with the port. Throws ProxyListenError. */
  async listen(options: { host: string; port: number }): Promise<number> {
    if (this.bridge === null) throw new Error('A proxy front that serves the portal needs the app server.')
    this.host = options.host
    this.bridgePort = await this.bridge.listen()
    try {
      if (this.workerCount > 1 && options.port !== 0) await checkFree(options.host, options.port)
      this.port = await this.startWorker(0, options.port)
      for (let index = 1; index < this.workerCount; index++) await this.startWorker(index, this.port)
    } catch (error) {
      await this.close()
      throw error
    }
    this.portal = `${options.host.includes(':') ? `[${options.host}]` : options.host}:${this.port}`
    this.follow()
    return this.port
  }

  /** Starts one worker that forwards the mapped ports only (a node that serves no portal). */
  async start(): Promise<void> {
    if (this.init.portForwarding === undefined || this.init.portForwarding === false)
      throw new Error('A proxy front without a portal has nothing to do unless it forwards ports.')
    this.workerCount = 1
    try {
      await this.startWorker(0, 0)
    } catch (error) {
      await this.close()
      throw error
    }
    this.follow()
  }

  /** Each worker's counters (for tests and the bench). */
  async stats(): Promise<WorkerStats[]> {
    return Promise.all(
      [...this.running.values()].map(
        (running) =>
          new Promise<WorkerStats>((resolve) => {
            running.statsWaiters.push(resolve)
            this.send(running, { type: 'stats' })
          }),
      ),
    )
  }

  async close(): Promise<void> {
    this.closing = true
    this.unwatch?.()
    this.unwatch = null
    await Promise.all([...this.running.values()].map((running) => this.stopWorker(running)))
    this.running.clear()
    await this.bridge?.close()
  }

  // ---------------------------------------------------------------------------

  private follow(): void {
    this.unwatch = this.init.state.watch((command) => this.stateChanged(command?.type ?? null))
    // The bound port is known now: where hops are served follows from it.
    this.stateChanged(null)
  }

  private view(): ProxyView {
    const data = this.init.state.view
    return {
      selfId: this.init.selfId,
      clockOffsetMs: this.clockOffsetMs(),
      auth: buildAuthView(data),
      routes: buildRouteView(data, this.init.selfId, this.routeOptions()),
    }
  }

  private routeOptions(): { portal: string; workspacePort?: number } {
    return this.init.workspacePort === undefined
      ? { portal: this.portal }
      : { portal: this.portal, workspacePort: this.init.workspacePort }
  }

  private clockOffsetMs(): number {
    return this.init.now === undefined ? 0 : this.init.now() - Date.now()
  }

  /** Watchers must be quick: the view is rebuilt once after the current burst of commands. */
  private stateChanged(type: string | null): void {
    const change = viewChangeOf(type)
    this.pending.auth ||= change.auth
    this.pending.routes ||= change.routes
    if (this.scheduled || (!this.pending.auth && !this.pending.routes)) return
    this.scheduled = true
    setImmediate(() => this.postView())
  }

  private postView(): void {
    this.scheduled = false
    if (this.closing) return
    const data = this.init.state.view
    const message: ToWorker = { type: 'view', clockOffsetMs: this.clockOffsetMs() }
    if (this.pending.auth) message.auth = buildAuthView(data)
    if (this.pending.routes) message.routes = buildRouteView(data, this.init.selfId, this.routeOptions())
    this.pending = { auth: false, routes: false }
    for (const running of this.running.values()) this.send(running, message)
  }

  private send(running: RunningWorker, message: ToWorker): void {
    running.worker.postMessage(message)
  }

  private workerData(index: number, port: number): ProxyWorkerData {
    const perWorker = Math.max(
      1,
      Math.floor((this.init.connectionsMax ?? proxyConnectionsMaxDefault) / this.workerCount),
    )
    const options: ProxyWorkerOptions = { connectionsMax: perWorker }
    if (this.init.connectTimeoutMs !== undefined) options.connectTimeoutMs = this.init.connectTimeoutMs
    if (this.init.hopTtlMs !== undefined) options.hopTtlMs = this.init.hopTtlMs
    if (this.init.loginPath !== undefined) options.loginPath = this.init.loginPath
    if (this.init.hopListenRetryMs !== undefined) options.hopListenRetryMs = this.init.hopListenRetryMs
    const level = this.init.logger?.level
    const forwarding = this.init.portForwarding
    return {
      index,
      portal: this.host === '' ? null : { host: this.host, port },
      ports:
        index !== 0 || forwarding === undefined || forwarding === false
          ? null
          : forwarding === true
            ? {}
            : forwarding,
      reusePort: this.workerCount > 1,
      bridgePort: this.bridgePort,
      view: this.view(),
      logLevel:
        level === 'debug' || level === 'trace'
          ? 'debug'
          : level === 'info'
            ? 'info'
            : level === 'error' || level === 'fatal'
              ? 'error'
              : 'warn',
      options,
    }
  }

  /** Starts worker `index` on `port`; resolves with the port it listens on. */
  private startWorker(index: number, port: number): Promise<number> {
    const worker = new Worker(workerUrl, {
      workerData: this.workerData(index, port),
      name: `docklet-proxy-${index}`,
      env: workerEnv(),
    })
    const running: RunningWorker = { worker, index, statsWaiters: [] }
    this.running.set(index, running)
    return new Promise<number>((resolve, reject) => {
      let started = false
      const timer = setTimeout(() => {
        void worker.terminate()
        reject(
          new ProxyListenError(
            'ETIMEDOUT',
            `The proxy worker did not start within ${workerStartTimeoutMs} ms.`,
          ),
        )
      }, workerStartTimeoutMs)
      worker.on('message', (message: FromWorker) => {
        switch (message.type) {
          case 'listening':
            started = true
            clearTimeout(timer)
            resolve(message.port)
            break
          case 'listen-failed':
            clearTimeout(timer)
            reject(new ProxyListenError(message.code, message.message))
            break
          case 'bridge':
            this.bridge?.announce(message.client)
            break
          case 'hops':
            this.hops = message.address
            if (message.address !== '')
              this.init.logger?.info({ address: message.address }, 'serving workspace hops on the mesh')
            break
          case 'log':
            this.log(message.level, message.fields, message.message)
            break
          case 'stats':
            running.statsWaiters.shift()?.(message.stats)
            break
          case 'closed':
            break
        }
      })
      worker.on('error', (error) => {
        this.init.logger?.error({ err: error, worker: index }, 'a proxy worker failed')
        if (!started) {
          clearTimeout(timer)
          reject(new ProxyListenError('ERR_WORKER', `The proxy worker failed to start: ${error.message}`))
        }
      })
      worker.on('exit', (code) => {
        if (this.running.get(index) === running) this.running.delete(index)
        for (const waiter of running.statsWaiters.splice(0))
          waiter({ active: 0, upstreamIdle: 0, upstreamBusy: 0, ports: [], portConnections: 0 })
        if (!started || this.closing) return
        this.init.logger?.error(
          { worker: index, code },
          `A proxy worker stopped (exit code ${code}); workspaces on this node are served by the others and it starts again in ${workerRestartDelayMs} ms.`,
        )
        setTimeout(() => this.restart(index), workerRestartDelayMs).unref()
      })
    })
  }

  private restart(index: number): void {
    if (this.closing) return
    this.restarts += 1
    this.startWorker(index, this.port).catch((error: Error) => {
      this.init.logger?.error({ err: error, worker: index }, 'a proxy worker could not start again; retrying')
      if (!this.closing) setTimeout(() => this.restart(index), workerRestartDelayMs).unref()
    })
  }

  private async stopWorker(running: RunningWorker): Promise<void> {
    const exited = new Promise<void>((resolve) => running.worker.once('exit', () => resolve()))
    try {
      this.send(running, { type: 'close' })
    } catch {
      // Already gone.
    }
    const timer = setTimeout(() => void running.worker.terminate(), workerCloseTimeoutMs)
    await exited
    clearTimeout(timer)
  }

  private log(level: LogLevel, fields: Record<string, unknown>, message: string): void {
    const logger = this.init.logger
    if (logger === undefined) return
    logger[level](fields, message)
  }
}

/** Throws ProxyListenError EADDRINUSE when something holds host:port (a plain bind, without SO_REUSEPORT). */
async function checkFree(host: string, port: number): Promise<void> {
  const probe = createServer()
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (error: NodeJS.ErrnoException) =>
      reject(new ProxyListenError(error.code ?? 'unknown', error.message)),
    )
    probe.listen({ host, port }, () => resolve())
  })
  await new Promise<void>((resolve) => probe.close(() => resolve()))
}
