// Kept-alive connections to workspaces (vnode 0's Jupyter, another node's
// hop listener), and the exchange of one proxied request over one of them.
// The request head is written as one string, the response read with
// ResponseReader and handed to the client's ServerResponse as it arrives;
// a socket's listeners are attached once, when it is dialled, and each
// exchange only sets fields, so a request costs no closures and no Node
// http client objects.
//
// A connection is reused only after a complete response that allowed it,
// with the request body sent in full. Idle connections wait at most
// upstreamIdleMs, at most upstreamIdlePerTargetMax per target and
// upstreamIdleMax in all. Their idle time is enforced by one sweep timer for
// the whole pool, not by a socket timeout set and cleared around every
// exchange (each of those allocates a timer and a bound function). A
// request without a body whose reused connection fails before any byte of
// the answer is sent again once on a fresh connection (the upstream may
// have closed it just as it was picked).
// Streaming both ways keeps backpressure: the socket pauses while the
// client's response is full and the request pauses while the socket is.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import {
  type ResponseHead,
  ResponseReader,
  type ResponseSink,
  UpstreamProtocolError,
} from './upstream-response.ts'

/** Idle kept-alive sockets close after this, well before Node's or Jupyter's own idle timeouts. */
export const upstreamIdleMsDefault = 4_000
export const upstreamIdlePerTargetMax = 64
export const upstreamIdleMax = 1_024

export interface UpstreamTarget {
  address: string
  port: number
  /** Source address (a hop leaves from this host's mesh IP). */
  localAddress?: string
}

/** Who hears how an exchange failed (the workspace proxy, which words the error). */
export interface ExchangeOwner<Context> {
  upstreamFailed(
    request: IncomingMessage,
    response: ServerResponse,
    context: Context,
    error: NodeJS.ErrnoException,
  ): void
}

/** The upstream closed the connection before the response was complete. */
export class UpstreamClosedError extends Error {
  readonly code = 'ECONNRESET'
  constructor() {
    super('the upstream closed the connection')
    this.name = 'UpstreamClosedError'
  }
}

export class ConnectTimeoutError extends Error {
  readonly code = 'ETIMEDOUT'
  constructor(timeoutMs: number) {
    super(`no connection within ${timeoutMs} ms`)
    this.name = 'ConnectTimeoutError'
  }
}

const safeMethods: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])
const CHUNK_END = '\r\n'
const LAST_CHUNK = '0\r\n\r\n'

function targetKey(target: UpstreamTarget): string {
  return target.localAddress === undefined
    ? `${target.address}:${target.port}`
    : `${target.address}:${target.port}@${target.localAddress}`
}

export interface UpstreamPoolInit {
  connectTimeoutMs: number
  idleMs?: number
}

export class UpstreamPool {
  readonly connectTimeoutMs: number
  readonly idleMs: number
  private readonly idle = new Map<string, UpstreamConnection<unknown>[]>()
  private readonly busy = new Set<UpstreamConnection<unknown>>()
  private idleCount = 0
  private closed = false
  /** The sweep that closes connections idle for idleMs (null while none is due). */
  private sweepTimer: NodeJS.Timeout | null = null

  constructor(init: UpstreamPoolInit) {
    this.connectTimeoutMs = init.connectTimeoutMs
    this.idleMs = init.idleMs ?? upstreamIdleMsDefault
  }

  /** Idle and busy connections, for tests and the bench. */
  get counts(): { idle: number; busy: number } {
    return { idle: this.idleCount, busy: this.busy.size }
  }

  /**
   * Sends `request` (its head already built) to `target` and answers
   * `response` with what comes back; failures go to `owner` with `context`.
   */
  exchange<Context>(
    target: UpstreamTarget,
    request: IncomingMessage,
    response: ServerResponse,
    head: string,
    owner: ExchangeOwner<Context>,
    context: Context,
  ): void {
    const connection = this.acquire(target) as UpstreamConnection<Context>
    connection.start(request, response, head, owner, context, target)
  }

  /** Cuts every connection (the proxy is stopping). */
  close(): void {
    this.closed = true
    for (const list of this.idle.values()) for (const connection of list) connection.socket.destroy()
    this.idle.clear()
    this.idleCount = 0
    if (this.sweepTimer !== null) clearTimeout(this.sweepTimer)
    this.sweepTimer = null
    for (const connection of this.busy) connection.socket.destroy()
    this.busy.clear()
  }

  /** A fresh connection, never a reused one. */
  dial(target: UpstreamTarget): UpstreamConnection<unknown> {
    const socket = connect({
      host: target.address,
      port: target.port,
      ...(target.localAddress === undefined ? {} : { localAddress: target.localAddress }),
    })
    const connection = new UpstreamConnection<unknown>(this, targetKey(target), socket)
    this.busy.add(connection)
    return connection
  }

  private acquire(target: UpstreamTarget): UpstreamConnection<unknown> {
    const list = this.idle.get(targetKey(target))
    for (;;) {
      const connection = list?.pop()
      if (connection === undefined) return this.dial(target)
      this.idleCount -= 1
      // Closed while idle, its close event not yet seen: never hand it out.
      if (connection.socket.destroyed) continue
      this.busy.add(connection)
      return connection
    }
  }

  /** Called by a connection whose exchange ended; keeps it when it may serve another. */
  released(connection: UpstreamConnection<unknown>, reusable: boolean): void {
    this.busy.delete(connection)
    const socket = connection.socket
    if (!reusable || this.closed || socket.destroyed || this.idleCount >= upstreamIdleMax) {
      socket.destroy()
      return
    }
    let list = this.idle.get(connection.key)
    if (list === undefined) {
      list = []
      this.idle.set(connection.key, list)
    }
    if (list.length >= upstreamIdlePerTargetMax) {
      socket.destroy()
      return
    }
    connection.idleSinceMs = performance.now()
    list.push(connection)
    this.idleCount += 1
    if (this.sweepTimer === null) this.scheduleSweep(this.idleMs)
  }

  /** Called by a connection that closed (idle or not). */
  gone(connection: UpstreamConnection<unknown>): void {
    if (this.busy.delete(connection)) return
    const list = this.idle.get(connection.key)
    const index = list?.indexOf(connection) ?? -1
    if (index < 0) return
    list!.splice(index, 1)
    this.idleCount -= 1
    if (list!.length === 0) this.idle.delete(connection.key)
  }

  private scheduleSweep(delayMs: number): void {
    this.sweepTimer = setTimeout(this.sweep, delayMs)
    // An idle upstream connection must not keep the worker alive.
    this.sweepTimer.unref()
  }

  /** Closes the connections idle for idleMs; runs again when the next one will be. */
  private readonly sweep = (): void => {
    this.sweepTimer = null
    const now = performance.now()
    let next = Number.POSITIVE_INFINITY
    for (const [key, list] of this.idle) {
      // Each list is a stack: the longest idle are at its bottom.
      let expired = 0
      while (expired < list.length && now - list[expired]!.idleSinceMs >= this.idleMs) expired++
      for (const connection of list.splice(0, expired)) connection.socket.destroy()
      this.idleCount -= expired
      if (list.length === 0) this.idle.delete(key)
      else next = Math.min(next, list[0]!.idleSinceMs + this.idleMs)
    }
    if (next !== Number.POSITIVE_INFINITY) this.scheduleSweep(Math.max(1, next - now))
  }
}

export class UpstreamConnection<Context> implements ResponseSink {
  readonly socket: Socket
  readonly key: string
  /** When it last went idle in the pool (performance.now(): monotonic, and cheaper than Date.now()). */
  idleSinceMs = 0
  private readonly pool: UpstreamPool
  private readonly reader = new ResponseReader()
  private connected = false
  /** It has completed an exchange before this one. */
  private reused = false
  private connectTimer: NodeJS.Timeout | null = null
  // The current exchange (null between exchanges).
  private request: IncomingMessage | null = null
  private response: ServerResponse | null = null
  private owner: ExchangeOwner<Context> | null = null
  private context: Context | null = null
  private head = ''
  private target: UpstreamTarget | null = null
  /** The request body has been sent in full. */
  private sent = true
  private chunked = false
  private ended = false

  constructor(pool: UpstreamPool, key: string, socket: Socket) {
    this.pool = pool
    this.key = key
    this.socket = socket
    socket.setNoDelay(true)
    socket.on('connect', this.onConnect)
    socket.on('data', this.onData)
    socket.on('error', this.onError)
    socket.on('close', this.onClose)
    socket.on('drain', this.onSocketDrain)
    this.connectTimer = setTimeout(this.onConnectTimeout, pool.connectTimeoutMs)
  }

  start(
    request: IncomingMessage,
    response: ServerResponse,
    head: string,
    owner: ExchangeOwner<Context>,
    context: Context,
    target: UpstreamTarget,
  ): void {
    this.request = request
    this.response = response
    this.owner = owner
    this.context = context
    this.head = head
    this.target = target
    this.ended = false
    this.reader.reset(request.method ?? 'GET')
    response.on('close', this.onResponseClose)
    this.socket.write(head, 'latin1')
    const headers = request.headers
    const transferEncoding = headers['transfer-encoding']
    const length = headers['content-length']
    this.chunked = transferEncoding !== undefined
    this.sent = !this.chunked && (length === undefined || length === '0')
    if (this.sent) return
    request.on('data', this.onRequestData)
    request.on('end', this.onRequestEnd)
    request.on('error', this.onRequestError)
  }

  // --- ResponseSink ------------------------------------------------------------

  onHead(head: ResponseHead): void {
    const response = this.response
    if (response === null || response.destroyed) return
    try {
      response.writeHead(head.status, head.statusMessage, head.headers)
    } catch (error) {
      // A header value Node will not send (a bare LF, a NUL): the response cannot be passed on.
      this.fail(new UpstreamProtocolError(`a header the proxy cannot pass on: ${(error as Error).message}`))
    }
  }

  onBody(bytes: Buffer, last: boolean): void {
    const response = this.response
    if (response === null || response.destroyed) return
    if (last) {
      this.ended = true
      response.end(bytes)
      return
    }
    if (!response.write(bytes) && !this.socket.isPaused()) {
      this.socket.pause()
      response.once('drain', this.onResponseDrain)
    }
  }

  // --- socket events -------------------------------------------------------------

  private readonly onConnect = (): void => {
    this.connected = true
    if (this.connectTimer !== null) clearTimeout(this.connectTimer)
    this.connectTimer = null
  }

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = null
    if (!this.connected) this.socket.destroy(new ConnectTimeoutError(this.pool.connectTimeoutMs))
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.response === null) {
      // An idle connection has nothing to say: the upstream broke the protocol.
      this.socket.destroy()
      return
    }
    let done: boolean
    try {
      done = this.reader.push(chunk, this)
    } catch (error) {
      this.fail(error as NodeJS.ErrnoException)
      return
    }
    // The sink may have failed the exchange half-way through the chunk.
    if (done && this.response !== null) this.finish()
  }

  private readonly onError = (error: NodeJS.ErrnoException): void => {
    if (this.response !== null) this.fail(error)
  }

  private readonly onClose = (): void => {
    if (this.connectTimer !== null) clearTimeout(this.connectTimer)
    this.connectTimer = null
    if (this.response !== null) {
      // A body that runs to the close ends here; anything else was cut.
      if (this.reader.closed()) this.finish()
      else this.fail(new UpstreamClosedError())
    }
    this.pool.gone(this as UpstreamConnection<unknown>)
  }

  private readonly onSocketDrain = (): void => {
    this.request?.resume()
  }

  private readonly onResponseDrain = (): void => {
    this.socket.resume()
  }

  private readonly onResponseClose = (): void => {
    // The client went away (or the response finished, which finish() saw first).
    if (this.response !== null && !this.response.writableFinished) this.socket.destroy()
  }

  private readonly onRequestData = (chunk: Buffer): void => {
    let ok: boolean
    if (this.chunked) {
      this.socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1')
      this.socket.write(chunk)
      ok = this.socket.write(CHUNK_END, 'latin1')
    } else ok = this.socket.write(chunk)
    if (!ok) this.request!.pause()
  }

  private readonly onRequestEnd = (): void => {
    if (this.chunked && !this.socket.destroyed) this.socket.write(LAST_CHUNK, 'latin1')
    this.sent = true
    this.detachRequest()
  }

  private readonly onRequestError = (): void => {
    this.socket.destroy()
  }

  // --- ends of an exchange -----------------------------------------------------

  private finish(): void {
    const response = this.response!
    if (!this.ended && !response.destroyed) response.end()
    const reusable =
      this.reader.head?.keepAlive === true && !this.reader.excess && this.sent && !this.socket.destroyed
    this.reused = true
    this.clear()
    this.detachRequest()
    this.pool.released(this as UpstreamConnection<unknown>, reusable)
  }

  private fail(error: NodeJS.ErrnoException): void {
    const request = this.request!
    const response = this.response!
    const owner = this.owner!
    const context = this.context as Context
    const retry =
      this.reused &&
      this.reader.untouched &&
      this.sent &&
      !this.chunked &&
      safeMethods.has(request.method ?? 'GET') &&
      (error.code === 'ECONNRESET' || error.code === 'EPIPE')
    const head = this.head
    const target = this.target!
    this.clear()
    this.detachRequest()
    this.socket.destroy()
    if (retry && !response.destroyed) {
      const fresh = this.pool.dial(target) as UpstreamConnection<Context>
      fresh.start(request, response, head, owner, context, target)
      return
    }
    if (response.headersSent || response.destroyed) {
      response.destroy()
      return
    }
    owner.upstreamFailed(request, response, context, error)
  }

  private clear(): void {
    this.response?.off('close', this.onResponseClose)
    this.response?.off('drain', this.onResponseDrain)
    this.response = null
    this.owner = null
    this.context = null
    this.head = ''
    this.target = null
    if (this.socket.isPaused()) this.socket.resume()
  }

  private detachRequest(): void {
    const request = this.request
    if (request === null) return
    request.off('data', this.onRequestData)
    request.off('end', this.onRequestEnd)
    request.off('error', this.onRequestError)
    this.request = null
    // Answered before its body was all sent: the rest is read and dropped, so the client's connection goes on.
    if (!this.sent && !request.readableEnded) request.resume()
  }
}
