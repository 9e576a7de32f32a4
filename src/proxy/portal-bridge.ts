// How the portal's own requests (the API, the UI: everything but /go/) get
// from the proxy workers, which own the portal's listening socket, to the
// fastify app in the main thread. A worker opens one loopback connection
// to the bridge per client connection that needs it (kept alive with it,
// so the app sees one connection per client, as before) and tells the main
// thread over its message port which client that connection stands for,
// keyed by the connection's local port. The bridge hands each accepted
// connection to the app's server (`emit('connection')`) with the client's
// address in place of its own, so request.ip and the login limiter see the
// browser, not the worker. Nothing is added to the bytes: the app's HTTP
// parser reads the socket as it would read the browser's.
//
// A connection nobody announced within bridgeAnnounceWaitMs is closed: only
// the workers' own connections reach the app.

import {
  Agent,
  type Server as HttpServer,
  request as httpRequest,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http'
import { connect, createServer, type Server, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { downstreamResponseHeaders } from './forward-headers.ts'
import { ProxyError, sendError, sendSocketError } from './proxy-error.ts'
import { joinSockets } from './socket-pair.ts'
import type { ProxyLog } from './workspace-proxy.ts'

export const bridgeHost = '127.0.0.1'
/** How long an announcement waits for its connection, or a connection for its announcement. */
export const bridgeAnnounceWaitMs = 5_000
/** Connections and announcements waiting for each other, at most (each side). */
export const bridgePendingMax = 4_096

export interface BridgeClient {
  /** The bridge connection's local port (the key). */
  port: number
  address: string
  family: string
  remotePort: number
}

/** Request headers that belong to the client's connection, not to the bridge's. */
const CONNECTION_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'expect',
])

function pretend(socket: Socket, client: BridgeClient): void {
  Object.defineProperty(socket, 'remoteAddress', { value: client.address, configurable: true })
  Object.defineProperty(socket, 'remoteFamily', { value: client.family, configurable: true })
  Object.defineProperty(socket, 'remotePort', { value: client.remotePort, configurable: true })
}

/** The main thread's end: accepts the workers' connections and feeds them to the app's server. */
export class PortalBridge {
  private readonly target: HttpServer
  private readonly log: ProxyLog | undefined
  private readonly server: Server
  private readonly sockets = new Set<Socket>()
  private readonly announced = new Map<number, { client: BridgeClient; timer: NodeJS.Timeout }>()
  private readonly waiting = new Map<number, { socket: Socket; timer: NodeJS.Timeout }>()

  constructor(target: HttpServer, log?: ProxyLog) {
    this.target = target
    this.log = log
    this.server = createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.accept(socket))
  }

  /** Listens on a loopback port; resolves with it. */
  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host: bridgeHost, port: 0 }, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    return (this.server.address() as { port: number }).port
  }

  /** A worker says which client the connection from `client.port` stands for. */
  announce(client: BridgeClient): void {
    const socket = this.waiting.get(client.port)
    if (socket !== undefined) {
      clearTimeout(socket.timer)
      this.waiting.delete(client.port)
      this.hand(socket.socket, client)
      return
    }
    if (this.announced.size >= bridgePendingMax) return
    const timer = setTimeout(() => this.announced.delete(client.port), bridgeAnnounceWaitMs)
    timer.unref()
    this.announced.set(client.port, { client, timer })
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
    for (const { timer } of this.announced.values()) clearTimeout(timer)
    for (const { timer } of this.waiting.values()) clearTimeout(timer)
    this.announced.clear()
    this.waiting.clear()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    // The workers dial from the loopback address itself; its port then names one live connection.
    if (socket.remoteAddress !== bridgeHost) {
      socket.destroy()
      return
    }
    const port = socket.remotePort ?? 0
    const known = this.announced.get(port)
    if (known !== undefined) {
      clearTimeout(known.timer)
      this.announced.delete(port)
      this.hand(socket, known.client)
      return
    }
    if (this.waiting.size >= bridgePendingMax) {
      socket.destroy()
      return
    }
    const timer = setTimeout(() => {
      this.waiting.delete(port)
      this.log?.warn({ port }, 'closed a portal bridge connection that no proxy worker announced')
      socket.destroy()
    }, bridgeAnnounceWaitMs)
    timer.unref()
    this.waiting.set(port, { socket, timer })
  }

  private hand(socket: Socket, client: BridgeClient): void {
    pretend(socket, client)
    this.target.emit('connection', socket)
    socket.resume()
  }
}

/** The worker's end: forwards a client's non-/go/ requests and upgrades to the app over the bridge. */
export class PortalBridgeClient {
  private readonly port: number
  private readonly announce: (client: BridgeClient) => void
  private readonly agents = new WeakMap<Socket, Agent>()
  private readonly live = new Set<Agent>()
  private readonly tunnels = new Set<Duplex>()

  constructor(init: { port: number; announce: (client: BridgeClient) => void }) {
    this.port = init.port
    this.announce = init.announce
  }

  forward(request: IncomingMessage, response: ServerResponse): void {
    const headers: string[] = []
    const raw = request.rawHeaders
    for (let i = 0; i + 1 < raw.length; i += 2)
      if (!CONNECTION_HEADERS.has(raw[i]!.toLowerCase())) headers.push(raw[i]!, raw[i + 1]!)
    const upstream = httpRequest({
      method: request.method,
      path: request.url,
      headers,
      agent: this.agentFor(request.socket),
      setHost: false,
    })
    upstream.once('response', (answer) => {
      response.writeHead(
        answer.statusCode ?? 502,
        answer.statusMessage,
        downstreamResponseHeaders(answer.rawHeaders),
      )
      answer.pipe(response)
      answer.on('error', () => response.destroy())
      answer.once('aborted', () => response.destroy())
    })
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      request.unpipe(upstream)
      sendError(request, response, this.failure(error))
    })
    response.once('close', () => {
      if (!response.writableFinished) upstream.destroy()
    })
    request.on('error', () => upstream.destroy())
    request.pipe(upstream)
  }

  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy())
    const upstream = this.dial(request.socket)
    this.tunnels.add(socket)
    this.tunnels.add(upstream)
    const release = () => {
      this.tunnels.delete(socket)
      this.tunnels.delete(upstream)
    }
    let joined = false
    upstream.once('connect', () => {
      let text = `${request.method} ${request.url} HTTP/1.1\r\n`
      const raw = request.rawHeaders
      for (let i = 0; i + 1 < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`
      upstream.write(`${text}\r\n`, 'latin1')
      if (head.length > 0) upstream.write(head)
      joined = true
      joinSockets(socket, upstream, release)
    })
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (joined) return
      release()
      sendSocketError(request, socket, this.failure(error))
    })
  }

  close(): void {
    for (const agent of this.live) agent.destroy()
    this.live.clear()
    for (const socket of this.tunnels) socket.destroy()
    this.tunnels.clear()
  }

  /** One bridge connection per client connection: the app sees the client's connections as they are. */
  private agentFor(client: Socket): Agent {
    let agent = this.agents.get(client)
    if (agent !== undefined) return agent
    const created = new Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 })
    created.createConnection = () => this.dial(client)
    this.agents.set(client, created)
    this.live.add(created)
    client.once('close', () => {
      created.destroy()
      this.live.delete(created)
    })
    agent = created
    return agent
  }

  private dial(client: Socket): Socket {
    const socket = connect({ host: bridgeHost, port: this.port, localAddress: bridgeHost, noDelay: true })
    socket.once('connect', () =>
      this.announce({
        port: socket.localPort ?? 0,
        address: client.remoteAddress ?? '',
        family: client.remoteFamily ?? 'IPv4',
        remotePort: client.remotePort ?? 0,
      }),
    )
    return socket
  }

  private failure(error: NodeJS.ErrnoException): ProxyError {
    return new ProxyError(
      'ERR_PORTAL_FAILED',
      502,
      `This node's portal did not answer (${error.code ?? error.message}); try again, or check the node's log.`,
      { cause: error },
    )
  }
}
