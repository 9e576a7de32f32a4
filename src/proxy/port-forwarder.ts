// Port mappings on the data plane: for every mapping in the replicated state
// (public port P → port Q of vnode V) this node listens on P and forwards
// each TCP connection: straight to V's IP and Q when V runs on this host
// (only this host can reach it), else over the mesh to P on the node of V's
// host, which forwards locally. A connection that comes from another node's
// mesh address is such a hop and is never forwarded again, so nodes that
// disagree for a moment (a vnode moving) cannot bounce a connection around.
//
// It runs in a proxy worker thread (proxy-worker.ts), off the main thread,
// over the routes part of the view the main thread posts (proxy-view.ts
// resolves every mapping to its target). Listeners follow the view: opened
// as mappings appear, closed (with their connections) as they go; a mapping
// whose target moves keeps its listener, and only new connections take the
// new path. A port in use is logged and tried again later, never fatal.
// Connections are bounded.

import { connect, createServer, type Server, type Socket } from 'node:net'
import { plainAddress } from './forward-headers.ts'
import type { RouteView } from './proxy-view.ts'
import { joinSockets } from './socket-pair.ts'
import type { ProxyLog } from './workspace-proxy.ts'

/** Forwarded connections open at once on this node, over all ports. */
export const portConnectionsMaxDefault = 4_096
export const portConnectTimeoutMsDefault = 5_000
/** A port that could not be opened is tried again this often. */
export const portRetryMsDefault = 10_000
/** All addresses: a mapped port is public, and other nodes' hops arrive on the mesh address. */
export const portListenHostDefault = '0.0.0.0'

export interface PortForwarderOptions {
  /** Address to listen on (tests give each node its own loopback address). */
  listenHost?: string
  connectionsMax?: number
  connectTimeoutMs?: number
  retryMs?: number
}

export interface PortForwarderInit extends PortForwarderOptions {
  /** Where the current routes are read (the worker replaces them as updates arrive). */
  views: { readonly view: { readonly routes: RouteView } }
  log?: ProxyLog
}

interface Listener {
  server: Server
  sockets: Set<Socket>
}

export class PortForwarder {
  private readonly init: PortForwarderInit
  private readonly listenHost: string
  private readonly connectionsMax: number
  private readonly connectTimeoutMs: number
  private readonly listeners = new Map<number, Listener>()
  /** Ports whose listen failed, with the time of the failure. */
  private readonly failed = new Map<number, number>()
  private active = 0
  private pending = false
  private retry: NodeJS.Timeout | null = null
  private stopped = false

  constructor(init: PortForwarderInit) {
    this.init = init
    this.listenHost = init.listenHost ?? portListenHostDefault
    this.connectionsMax = init.connectionsMax ?? portConnectionsMaxDefault
    this.connectTimeoutMs = init.connectTimeoutMs ?? portConnectTimeoutMsDefault
  }

  /** The public ports this node listens on now, ascending. */
  get ports(): number[] {
    return [...this.listeners]
      .filter(([, listener]) => listener.server.listening)
      .map(([port]) => port)
      .sort((a, b) => a - b)
  }

  /** Forwarded connections open now. */
  get activeConnections(): number {
    return this.active
  }

  /** Follows the current view: call after every routes update (and once to start). */
  follow(): void {
    this.schedule()
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.retry !== null) clearTimeout(this.retry)
    this.retry = null
    await Promise.all([...this.listeners.keys()].map((port) => this.close(port)))
  }

  /** Reconciles once after the current burst of updates. */
  private schedule(): void {
    if (this.pending || this.stopped) return
    this.pending = true
    setImmediate(() => {
      this.pending = false
      this.reconcile()
    })
  }

  private reconcile(): void {
    if (this.stopped) return
    const wanted = new Set(this.init.views.view.routes.ports.keys())
    for (const port of this.listeners.keys()) if (!wanted.has(port)) void this.close(port)
    for (const port of this.failed.keys()) if (!wanted.has(port)) this.failed.delete(port)
    const retryMs = this.init.retryMs ?? portRetryMsDefault
    const now = Date.now()
    for (const port of wanted) {
      if (this.listeners.has(port)) continue
      const failedAt = this.failed.get(port)
      // A port that failed lately waits for its retry, however often the state changes meanwhile.
      if (failedAt !== undefined && now - failedAt < retryMs) {
        this.retryLater()
        continue
      }
      this.open(port)
    }
  }

  private open(port: number): void {
    const sockets = new Set<Socket>()
    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(port, socket, sockets))
    server.maxConnections = this.connectionsMax
    this.listeners.set(port, { server, sockets })
    server.on('error', (error: NodeJS.ErrnoException) => {
      if (server.listening) {
        // An accept failed (out of file descriptors, say): the port stays open.
        this.init.log?.warn(
          { port, code: error.code },
          `A connection to mapped port ${port} failed: ${error.message}`,
        )
        return
      }
      if (this.listeners.get(port)?.server === server) this.listeners.delete(port)
      this.failed.set(port, Date.now())
      this.init.log?.warn(
        { port, code: error.code },
        error.code === 'EADDRINUSE'
          ? `The mapped public port ${port} is in use by another program on this host; connections to it here do not reach the vnode until it is free (retrying every ${this.init.retryMs ?? portRetryMsDefault} ms).`
          : `Cannot listen on the mapped public port ${port}: ${error.message}; retrying.`,
      )
      this.retryLater()
    })
    server.listen({ host: this.listenHost, port }, () => {
      this.failed.delete(port)
      this.init.log?.info({ port }, 'forwarding a mapped port')
    })
  }

  private retryLater(): void {
    if (this.retry !== null || this.stopped) return
    this.retry = setTimeout(() => {
      this.retry = null
      this.failed.clear()
      this.schedule()
    }, this.init.retryMs ?? portRetryMsDefault)
    this.retry.unref()
  }

  private async close(port: number): Promise<void> {
    const listener = this.listeners.get(port)
    if (listener === undefined) return
    this.listeners.delete(port)
    // The mapping is gone: its connections go with it.
    for (const socket of listener.sockets) socket.destroy()
    await new Promise<void>((resolve) => listener.server.close(() => resolve()))
    this.init.log?.info({ port }, 'stopped forwarding a mapped port')
  }

  /** Where a connection to `port` from `remoteAddress` goes now, or a reason to drop it. */
  target(
    port: number,
    remoteAddress: string,
  ): { host: string; port: number; localAddress?: string } | string {
    const routes = this.init.views.view.routes
    const route = routes.ports.get(port)
    if (route === undefined) return 'no mapping'
    if (route.kind === 'drop') return route.reason
    if (route.kind === 'local') return route
    // Another node's mesh address: a hop (this host's own is a local client's).
    if (remoteAddress !== route.localAddress && routes.memberMeshIps.has(remoteAddress))
      return 'a hop for a vnode that is not on this host'
    return route
  }

  private accept(port: number, socket: Socket, sockets: Set<Socket>): void {
    if (this.active >= this.connectionsMax) {
      socket.destroy()
      return
    }
    const target = this.target(port, plainAddress(socket.remoteAddress))
    if (typeof target === 'string') {
      this.init.log?.debug({ port, reason: target }, 'dropped a connection to a mapped port')
      socket.destroy()
      return
    }
    this.active += 1
    sockets.add(socket)
    socket.on('error', () => socket.destroy())
    const release = () => {
      sockets.delete(socket)
      this.active -= 1
    }
    const upstream = connect({
      allowHalfOpen: true,
      host: target.host,
      port: target.port,
      ...(target.localAddress === undefined ? {} : { localAddress: target.localAddress }),
    })
    const timer = setTimeout(() => upstream.destroy(new Error('connect timeout')), this.connectTimeoutMs)
    let joined = false
    upstream.once('connect', () => {
      clearTimeout(timer)
      joined = true
      joinSockets(socket, upstream, release)
    })
    let failed = false
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (joined || failed) return
      failed = true
      clearTimeout(timer)
      this.init.log?.debug(
        { port, target: `${target.host}:${target.port}`, code: error.code },
        'mapped port target failed',
      )
      socket.destroy()
      release()
    })
  }
}
