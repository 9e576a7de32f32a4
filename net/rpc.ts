// Request/response RPC over libp2p for the control plane: forwarding writes
// to the Raft leader, `docklet join`, live status from the leader.
//
// Wire: one stream of RPC_PROTOCOL per call, so calls run concurrently and a
// slow one never holds up another (yamux streams are cheap). The caller
// writes one varint-length-prefixed JSON frame `{method, params}` and closes
// its write side; the server answers one frame `{result}` or
// `{error: {code, message, details?}}` and closes its write side. Bytes after
// the first frame are ignored. The framing is net/frame-codec.ts's, so an
// oversized length prefix is refused as soon as it is read, before the
// frame's body is buffered or allocated.
//
// Identity: noise authenticates the remote PeerId of every connection. The
// server hands it to `authorize` and to the handler; the caller returns it
// with the result and, with `expectPeerId`, refuses a peer it does not trust
// (a joining host pins the member its token names).
//
// Limits: requests and responses have byte limits on both ends; inbound
// requests in progress are capped (the excess is answered ERR_RPC_BUSY
// without being read); calls in flight are capped; every call has a
// timeout; a request that does not arrive in time is dropped; a handler
// that runs too long is answered for (ERR_RPC_HANDLER_TIMEOUT) and its slot
// freed; a stream the other side does not close soon after the exchange is
// reset.
//
// Connections: calls to a PeerId reuse libp2p's connection to it. Calls to
// a bare address share one dial and then reuse the connection of the PeerId
// found there (see #connect), and the first stream on a new connection is
// negotiated before a burst of others follows it (see #openStream).

import type {
  Connection,
  Libp2p,
  PeerId,
  Stream,
  StreamCloseEvent,
  StreamMessageEvent,
} from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { isMultiaddr, type Multiaddr } from '@multiformats/multiaddr'
import {
  FrameTooLargeError,
  NetConfigError,
  NetError,
  RpcDialError,
  RpcError,
  RpcIdentityError,
  RpcRemoteError,
  RpcTimeoutError,
} from './errors.ts'
import { encodeFrames, FRAME_BYTES_LIMIT, FrameDecoder } from './frame-codec.ts'
import { checkInteger, type PeerAddress } from './frame-transport-types.ts'
import { toMultiaddr } from './libp2p-host.ts'

export const RPC_PROTOCOL = '/docklet/rpc/1.0.0'
export const RPC_REQUEST_BYTES_MAX_DEFAULT = 4 * 1024 * 1024
export const RPC_RESPONSE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024
export const RPC_INBOUND_STREAMS_MAX_DEFAULT = 256
export const RPC_CALLS_MAX_DEFAULT = 256
export const RPC_REQUEST_READ_TIMEOUT_MS_DEFAULT = 10_000
export const RPC_HANDLER_TIMEOUT_MS_DEFAULT = 60_000

/** The longest call timeout accepted. */
const TIMEOUT_MS_MAX = 600_000
const METHOD_LENGTH_MAX = 128
const ERROR_CODE_LENGTH_MAX = 128
const ERROR_MESSAGE_LENGTH_MAX = 4096
/** Error details beyond this (as JSON) are dropped rather than sent. */
const ERROR_DETAILS_BYTES_MAX = 64 * 1024
// Streams per connection libp2p lets in beyond inboundStreamsMax, so a burst
// over the limit gets an ERR_RPC_BUSY answer instead of a bare reset.
const BUSY_STREAMS_MARGIN = 32
// yamux refuses more than 1000 streams per connection.
const STREAMS_PER_CONNECTION_LIMIT = 1000
/** Bare addresses whose PeerId is remembered for connection reuse. */
const KNOWN_ADDRESSES_MAX = 1024
/** How long the other side may take to close its end after the exchange. */
const LINGER_MS = 2000
/** Own properties of an error that are not data to forward as details. */
const NOT_DETAILS = new Set(['name', 'message', 'stack', 'cause', 'code', 'details'])

/** Who is calling: the remote PeerId, authenticated by noise. */
export interface RpcContext {
  peerId: string
  /** Aborted when the caller goes away (its timeout, a reset) or the service stops. */
  signal: AbortSignal
}

/** Answers one request; may return the result directly or a promise of it. */
export type RpcHandler = (params: unknown, context: RpcContext) => unknown

/** Decides per request whether `peerId` may call `method`. */
export type RpcAuthorize = (peerId: string, method: string) => boolean

export interface RpcRegisterOptions {
  /** Overrides the service's `authorize` for this method. */
  authorize?: RpcAuthorize
  /** Overrides the service's `handlerTimeoutMs` for this method (one that is slow by nature, like saving a container). */
  handlerTimeoutMs?: number
}

export type RpcEventType =
  | 'busy'
  | 'forbidden'
  | 'unknown-method'
  | 'bad-request'
  | 'request-too-large'
  | 'request-timeout'
  | 'response-too-large'
  | 'handler-error'
  | 'handler-timeout'
  | 'identity-mismatch'

/** A structured log record of something refused or failed on this node. */
export interface RpcEvent {
  type: RpcEventType
  /** The remote PeerId (or the address dialled, for 'identity-mismatch'). */
  peer: string
  /** The method concerned ('' when the request was not read). */
  method: string
  message: string
  error?: Error
}

export interface RpcServiceOptions {
  /** Protocol id; every node must use the same. Default RPC_PROTOCOL. */
  protocol?: string
  /** Largest request frame (JSON bytes) this node sends or accepts. Default 4 MiB. */
  requestBytesMax?: number
  /** Largest response frame (JSON bytes) this node sends or accepts. Default 16 MiB. */
  responseBytesMax?: number
  /** Inbound requests being read or handled at once; the excess is answered ERR_RPC_BUSY. Default 256. */
  inboundStreamsMax?: number
  /** Outbound calls in flight at once; the excess fails with ERR_RPC_BUSY. Default 256. */
  callsMax?: number
  /** An inbound stream must deliver its whole request within this time. Default 10 s. */
  requestReadTimeoutMs?: number
  /**
   * A handler that has not settled by then gets its signal aborted, the
   * caller gets ERR_RPC_HANDLER_TIMEOUT, and its slot is freed. Default 60 s.
   */
  handlerTimeoutMs?: number
  /**
   * Policy for methods registered without their own `authorize`. Default:
   * every authenticated peer may call them.
   */
  authorize?: RpcAuthorize
  onEvent?: (event: RpcEvent) => void
}

export interface RpcCallOptions {
  /** Bound on the whole call: dial, stream negotiation, request and response. */
  timeoutMs: number
  signal?: AbortSignal
  /**
   * PeerIds the remote must have. Checked against the PeerId in a /p2p/
   * address before dialling, and against the authenticated PeerId of the
   * connection after it; a mismatch fails with RpcIdentityError.
   */
  expectPeerId?: readonly string[]
}

export interface RpcCallResult<T> {
  result: T
  /** The authenticated PeerId of the node that answered. */
  peerId: string
}

/** What the service needs from a libp2p node. */
export type RpcServiceComponents = Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dial'>

interface MethodEntry {
  handler: RpcHandler
  authorize: RpcAuthorize | undefined
  handlerTimeoutMs: number
}

interface InboundExchange {
  readonly stream: Stream
  readonly peer: string
  readonly controller: AbortController
  released: boolean
}

interface WireError {
  code: string
  message: string
  details?: Record<string, unknown>
}

type WireResponse = { result: unknown } | { error: WireError }

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export class RpcService {
  readonly #node: RpcServiceComponents
  readonly #protocol: string
  readonly #requestBytesMax: number
  readonly #responseBytesMax: number
  readonly #inboundStreamsMax: number
  readonly #callsMax: number
  readonly #requestReadTimeoutMs: number
  readonly #handlerTimeoutMs: number
  readonly #authorize: RpcAuthorize | undefined
  readonly #onEvent: ((event: RpcEvent) => void) | undefined
  readonly #methods = new Map<string, MethodEntry>()
  readonly #inbound = new Set<InboundExchange>()
  readonly #stopController = new AbortController()
  /** Which PeerId answered at a bare address last (bounded, oldest dropped first). */
  readonly #peerAtAddress = new Map<string, string>()
  /** Connections on which an RPC stream was negotiated (see #openStream). */
  readonly #readyConnections = new WeakSet<Connection>()
  /** The first stream being negotiated on a connection, settled either way. */
  readonly #firstStreams = new WeakMap<Connection, Promise<void>>()
  /** Dials in flight to bare addresses (at most one per address, so bounded by callsMax). */
  readonly #dialing = new Map<string, Promise<Connection>>()
  #calls = 0
  #started = false
  #stopped = false

  constructor(node: RpcServiceComponents, options: RpcServiceOptions = {}) {
    this.#node = node
    this.#protocol = options.protocol ?? RPC_PROTOCOL
    this.#requestBytesMax = options.requestBytesMax ?? RPC_REQUEST_BYTES_MAX_DEFAULT
    this.#responseBytesMax = options.responseBytesMax ?? RPC_RESPONSE_BYTES_MAX_DEFAULT
    this.#inboundStreamsMax = options.inboundStreamsMax ?? RPC_INBOUND_STREAMS_MAX_DEFAULT
    this.#callsMax = options.callsMax ?? RPC_CALLS_MAX_DEFAULT
    this.#requestReadTimeoutMs = options.requestReadTimeoutMs ?? RPC_REQUEST_READ_TIMEOUT_MS_DEFAULT
    this.#handlerTimeoutMs = options.handlerTimeoutMs ?? RPC_HANDLER_TIMEOUT_MS_DEFAULT
    this.#authorize = options.authorize
    this.#onEvent = options.onEvent
    if (!this.#protocol.startsWith('/')) throw new NetConfigError('protocol must start with "/".')
    checkInteger('requestBytesMax', this.#requestBytesMax, 64, FRAME_BYTES_LIMIT)
    checkInteger('responseBytesMax', this.#responseBytesMax, 64, FRAME_BYTES_LIMIT)
    const streamsMax = STREAMS_PER_CONNECTION_LIMIT - BUSY_STREAMS_MARGIN
    checkInteger('inboundStreamsMax', this.#inboundStreamsMax, 1, streamsMax)
    checkInteger('callsMax', this.#callsMax, 1, streamsMax)
    checkInteger('requestReadTimeoutMs', this.#requestReadTimeoutMs, 1, TIMEOUT_MS_MAX)
    checkInteger('handlerTimeoutMs', this.#handlerTimeoutMs, 1, TIMEOUT_MS_MAX)
  }

  /**
   * Serves `method`. Methods may be registered before or after start().
   * The handler's result must be JSON-serialisable; an error it throws
   * reaches the caller as RpcRemoteError with the error's string `code`
   * (ERR_RPC_HANDLER when it has none), its message, and its own data
   * properties plus any `details` object as `details`.
   */
  register(method: string, handler: RpcHandler, options: RpcRegisterOptions = {}): void {
    checkMethod(method)
    if (this.#methods.has(method))
      throw new NetConfigError(`The RPC method "${method}" is already registered.`)
    if (options.handlerTimeoutMs !== undefined)
      checkInteger('handlerTimeoutMs', options.handlerTimeoutMs, 1, TIMEOUT_MS_MAX)
    this.#methods.set(method, {
      handler,
      authorize: options.authorize,
      handlerTimeoutMs: options.handlerTimeoutMs ?? this.#handlerTimeoutMs,
    })
  }

  /** Starts answering requests. Calling out does not need it. */
  async start(): Promise<void> {
    if (this.#stopped) throw this.#stoppedError('', '')
    if (this.#started) return
    this.#started = true
    await this.#node.handle(
      this.#protocol,
      (stream, connection) => {
        this.#onInboundStream(stream, connection)
      },
      {
        maxInboundStreams: this.#inboundStreamsMax + BUSY_STREAMS_MARGIN,
        maxOutboundStreams: this.#callsMax,
      },
    )
  }

  /** Stops serving, fails calls in flight with ERR_RPC_STOPPED and resets inbound streams. */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    this.#stopController.abort(this.#stoppedError('', ''))
    for (const exchange of this.#inbound) {
      exchange.controller.abort(this.#stoppedError('', exchange.peer))
      exchange.stream.abort(this.#stoppedError('', exchange.peer))
    }
    if (this.#started) {
      try {
        await this.#node.unhandle(this.#protocol)
      } catch {
        // The node may already be stopped; nothing is left to unregister.
      }
    }
  }

  /**
   * Calls `method` on `to`: a PeerId string (dialled through the peer store,
   * see rememberPeer), `HOST:PORT`, or a multiaddr (string or Multiaddr).
   * Rejects with RpcRemoteError (the remote's code), RpcTimeoutError,
   * RpcDialError, RpcIdentityError, or RpcError (ERR_RPC_BUSY,
   * ERR_RPC_BAD_RESPONSE, ERR_RPC_NO_RESPONSE, ERR_RPC_REQUEST_TOO_LARGE,
   * ERR_RPC_ABORTED, ERR_RPC_STOPPED).
   */
  async call<T = unknown>(
    to: string | Multiaddr,
    method: string,
    params: unknown,
    options: RpcCallOptions,
  ): Promise<RpcCallResult<T>> {
    checkInteger('timeoutMs', options.timeoutMs, 1, TIMEOUT_MS_MAX)
    checkMethod(method)
    const target = resolveTarget(to)
    const expected = options.expectPeerId
    if (this.#stopped) throw this.#stoppedError(method, target.address)
    const request = this.#encodeRequest(method, params, target.address)
    if (expected !== undefined && target.namedPeer !== undefined && !expected.includes(target.namedPeer)) {
      this.#report({
        type: 'identity-mismatch',
        peer: target.address,
        method,
        message: 'refused to dial an address naming an untrusted peer',
      })
      throw new RpcIdentityError(method, target.address, target.namedPeer, expected)
    }
    if (this.#calls >= this.#callsMax) {
      throw new RpcError(
        'ERR_RPC_BUSY',
        `Cannot call ${method}: ${this.#calls} calls are already in flight (callsMax ${this.#callsMax}); retry later.`,
        { method, peer: target.address },
      )
    }
    this.#calls++
    const timeout = AbortSignal.timeout(options.timeoutMs)
    const signals = [timeout, this.#stopController.signal]
    if (options.signal !== undefined) signals.push(options.signal)
    const signal = AbortSignal.any(signals)
    let peer = target.address
    // Why the call was cut short, if it was: our timeout, stop(), or the caller's signal.
    const interrupted = (): RpcError | undefined => {
      if (timeout.aborted) return new RpcTimeoutError(method, peer, options.timeoutMs)
      if (this.#stopController.signal.aborted) return this.#stoppedError(method, peer)
      if (options.signal?.aborted === true) {
        return new RpcError('ERR_RPC_ABORTED', `The call ${method} to ${peer} was cancelled by the caller.`, {
          method,
          peer,
          cause: options.signal.reason,
        })
      }
      return undefined
    }
    try {
      let connection: Connection
      try {
        connection = await this.#connect(target, expected, signal)
      } catch (err) {
        throw interrupted() ?? new RpcDialError(method, target.address, { cause: err })
      }
      peer = connection.remotePeer.toString()
      if (expected !== undefined && !expected.includes(peer)) {
        this.#report({
          type: 'identity-mismatch',
          peer: target.address,
          method,
          message: `the peer at ${target.address} is ${peer}, not a trusted one`,
        })
        // A connection that carries streams belongs to someone else (Raft);
        // one we opened only for this call has no business staying up.
        if (connection.streams.length === 0) {
          connection.close().catch((err: unknown) => connection.abort(toError(err)))
        }
        throw new RpcIdentityError(method, target.address, peer, expected)
      }
      let stream: Stream
      try {
        stream = await this.#openStream(connection, signal)
      } catch (err) {
        throw interrupted() ?? new RpcDialError(method, target.address, { cause: err })
      }
      const result = await this.#exchange(stream, request, { method, peer, signal, interrupted })
      return { result: result as T, peerId: peer }
    } finally {
      this.#calls--
    }
  }

  /**
   * Opens (or reuses) a connection. libp2p reuses connections by PeerId
   * only, so a bare address would cost a new connection (and handshake) per
   * call, and a burst of calls would trip the remote's per-IP connection
   * rate limit. Calls to a bare address therefore share one dial in flight,
   * and later calls dial the PeerId last found there.
   */
  async #connect(
    target: ResolvedTarget,
    expected: readonly string[] | undefined,
    signal: AbortSignal,
  ): Promise<Connection> {
    const addr = target.dialTarget
    if (!isMultiaddr(addr) || target.namedPeer !== undefined) return this.#node.dial(addr, { signal })
    const known = this.#peerAtAddress.get(target.address)
    if (known !== undefined && (expected === undefined || expected.includes(known))) {
      try {
        return await this.#node.dial(addr.encapsulate(`/p2p/${known}`), { signal })
      } catch (err) {
        // Perhaps another node took the address; the next call dials it afresh.
        this.#peerAtAddress.delete(target.address)
        throw err
      }
    }
    let dialing = this.#dialing.get(target.address)
    if (dialing === undefined) {
      // Shared by every caller, so bounded by stop() and the node's own dial
      // timeout rather than by the first caller's signal.
      dialing = this.#node.dial(addr, { signal: this.#stopController.signal })
      this.#dialing.set(target.address, dialing)
      const settled = dialing
      settled.then(
        (connection) => {
          if (this.#dialing.get(target.address) === settled) this.#dialing.delete(target.address)
          this.#rememberAddress(target.address, connection.remotePeer.toString())
        },
        () => {
          if (this.#dialing.get(target.address) === settled) this.#dialing.delete(target.address)
        },
      )
    }
    return raceSignal(dialing, signal)
  }

  /**
   * Opens an RPC stream. Until one stream on a connection has been
   * negotiated, the remote may not have finished setting the connection up,
   * and its muxer kills the whole connection when more than a few streams
   * arrive that early (yamux maxEarlyStreams, 10). So a burst of calls on a
   * new connection waits for the first stream's negotiation, one round trip.
   */
  async #openStream(connection: Connection, signal: AbortSignal): Promise<Stream> {
    const options = { signal, maxOutboundStreams: this.#callsMax }
    for (;;) {
      if (this.#readyConnections.has(connection)) return connection.newStream(this.#protocol, options)
      const first = this.#firstStreams.get(connection)
      if (first === undefined) break
      await raceSignal(first, signal)
    }
    const opening = connection.newStream(this.#protocol, options)
    const settled = opening.then(
      () => {
        this.#readyConnections.add(connection)
      },
      () => {},
    )
    this.#firstStreams.set(connection, settled)
    try {
      return await opening
    } finally {
      if (this.#firstStreams.get(connection) === settled) this.#firstStreams.delete(connection)
    }
  }

  #rememberAddress(address: string, peerId: string): void {
    this.#peerAtAddress.delete(address)
    if (this.#peerAtAddress.size >= KNOWN_ADDRESSES_MAX) {
      const oldest = this.#peerAtAddress.keys().next().value
      if (oldest !== undefined) this.#peerAtAddress.delete(oldest)
    }
    this.#peerAtAddress.set(address, peerId)
  }

  #encodeRequest(method: string, params: unknown, address: string): Uint8Array {
    let text: string
    try {
      text = JSON.stringify({ method, params: params ?? null })
    } catch (err) {
      throw new NetConfigError(`The params of ${method} are not JSON-serialisable: ${toError(err).message}`, {
        cause: err,
      })
    }
    const body = encoder.encode(text)
    if (body.byteLength > this.#requestBytesMax) {
      throw new RpcError(
        'ERR_RPC_REQUEST_TOO_LARGE',
        `The request ${method} is ${body.byteLength} bytes, over requestBytesMax (${this.#requestBytesMax}); send less per call.`,
        { method, peer: address },
      )
    }
    return body
  }

  /** Sends the request on `stream` and waits for the one response frame. */
  #exchange(
    stream: Stream,
    request: Uint8Array,
    call: { method: string; peer: string; signal: AbortSignal; interrupted: () => RpcError | undefined },
  ): Promise<unknown> {
    const { method, peer, signal } = call
    return new Promise<unknown>((resolve, reject) => {
      const frames = new FrameDecoder(this.#responseBytesMax)
      let done = false
      const fail = (error: RpcError): void => {
        if (done) return
        done = true
        signal.removeEventListener('abort', onAbort)
        stream.abort(error)
        reject(error)
      }
      const succeed = (response: WireResponse): void => {
        if (done) return
        done = true
        signal.removeEventListener('abort', onAbort)
        // The server answered before taking the whole request (busy, too
        // large): stop sending it.
        if (stream.writeStatus !== 'closed') {
          stream.abort(
            new NetError('ERR_RPC_ANSWERED', 'The server answered before reading the whole request.'),
          )
        } else {
          abortIfNotClosedSoon(stream)
        }
        if ('error' in response) {
          const { code, message, details } = response.error
          reject(
            new RpcRemoteError(
              code,
              message,
              details === undefined ? { method, peer } : { method, peer, details },
            ),
          )
        } else {
          resolve(response.result)
        }
      }
      const badResponse = (reason: string, cause?: unknown): void => {
        fail(
          new RpcError(
            'ERR_RPC_BAD_RESPONSE',
            `The response of ${peer} to ${method} is not valid: ${reason} Check that both nodes run the same docklet version.`,
            { method, peer, cause },
          ),
        )
      }
      const onAbort = (): void => {
        fail(
          call.interrupted() ??
            new RpcError('ERR_RPC_ABORTED', `The call ${method} to ${peer} was cancelled.`, { method, peer }),
        )
      }
      signal.addEventListener('abort', onAbort, { once: true })
      stream.addEventListener('message', (event: StreamMessageEvent) => {
        if (done) return
        try {
          frames.push(event.data, (frame) => {
            if (done) return
            const parsed = parseResponse(frame)
            if (typeof parsed === 'string') badResponse(parsed)
            else succeed(parsed)
          })
        } catch (err) {
          const reason =
            err instanceof FrameTooLargeError
              ? `it is over responseBytesMax (${this.#responseBytesMax} bytes).`
              : `${toError(err).message}`
          badResponse(reason, err)
        }
      })
      stream.addEventListener('close', (event: StreamCloseEvent) => {
        if (done) return
        const why = event.error === undefined ? '' : `: ${event.error.message}`
        fail(
          call.interrupted() ??
            new RpcError(
              'ERR_RPC_NO_RESPONSE',
              `The stream to ${peer} closed before the response to ${method} arrived${why}; the request may or may not have taken effect.`,
              { method, peer, cause: event.error },
            ),
        )
      })
      if (signal.aborted) {
        onAbort()
        return
      }
      try {
        stream.send(encodeFrames([request]))
      } catch (err) {
        fail(
          new RpcError(
            'ERR_RPC_NO_RESPONSE',
            `Could not send ${method} to ${peer}: ${toError(err).message}`,
            {
              method,
              peer,
              cause: err,
            },
          ),
        )
        return
      }
      // Half-close: the server reads until the frame is complete, and the
      // stream ends once its answer and end arrive. A failure here shows up
      // as the 'close' event.
      stream.close({ signal }).catch(() => {})
    })
  }

  // ---- serving -----------------------------------------------------------

  #onInboundStream(stream: Stream, connection: Connection): void {
    const peer = connection.remotePeer.toString()
    if (this.#stopped) {
      stream.abort(this.#stoppedError('', peer))
      return
    }
    if (this.#inbound.size >= this.#inboundStreamsMax) {
      this.#report({
        type: 'busy',
        peer,
        method: '',
        message: `refused a request: ${this.#inbound.size} are in progress (inboundStreamsMax ${this.#inboundStreamsMax})`,
      })
      // The request is not read; discard it so it does not fill the read buffer.
      stream.addEventListener('message', discard)
      reply(stream, {
        error: {
          code: 'ERR_RPC_BUSY',
          message: `The node is handling ${this.#inboundStreamsMax} requests already; retry later.`,
        },
      })
      return
    }
    const exchange: InboundExchange = { stream, peer, controller: new AbortController(), released: false }
    this.#inbound.add(exchange)
    const frames = new FrameDecoder(this.#requestBytesMax)
    let received = false
    const readTimer = setTimeout(() => {
      if (received) return
      received = true
      this.#report({
        type: 'request-timeout',
        peer,
        method: '',
        message: `reset a stream whose request did not arrive within ${this.#requestReadTimeoutMs} ms`,
      })
      stream.abort(new NetError('ERR_RPC_REQUEST_TIMEOUT', 'The request did not arrive in time.'))
      this.#release(exchange)
    }, this.#requestReadTimeoutMs)
    stream.addEventListener('message', (event: StreamMessageEvent) => {
      if (received) return // bytes after the request are ignored
      try {
        frames.push(event.data, (frame) => {
          if (received) return
          received = true
          clearTimeout(readTimer)
          void this.#serve(exchange, frame)
        })
      } catch (err) {
        if (received) return
        received = true
        clearTimeout(readTimer)
        const tooLarge = err instanceof FrameTooLargeError
        const error = toError(err)
        this.#report({
          type: tooLarge ? 'request-too-large' : 'bad-request',
          peer,
          method: '',
          message: `refused a request: ${error.message}`,
          error,
        })
        reply(stream, {
          error: tooLarge
            ? {
                code: 'ERR_RPC_REQUEST_TOO_LARGE',
                message: `The request is over the server's requestBytesMax (${this.#requestBytesMax} bytes); send less per call.`,
              }
            : {
                code: 'ERR_RPC_BAD_REQUEST',
                message: `The request is not a valid RPC frame: ${error.message}`,
              },
        })
        this.#release(exchange)
      }
    })
    stream.addEventListener('close', () => {
      clearTimeout(readTimer)
      // The caller is gone (or we replied and both ends closed): a handler
      // still running can stop.
      exchange.controller.abort(new NetError('ERR_RPC_STREAM_CLOSED', 'The RPC stream closed.'))
      if (!received) this.#release(exchange)
    })
  }

  async #serve(exchange: InboundExchange, frame: Uint8Array): Promise<void> {
    const { stream, peer } = exchange
    const request = parseRequest(frame)
    let response: WireResponse
    let method = ''
    if (typeof request === 'string') {
      this.#report({ type: 'bad-request', peer, method, message: `refused a request: ${request}` })
      response = { error: { code: 'ERR_RPC_BAD_REQUEST', message: `The request is not valid: ${request}` } }
    } else {
      method = request.method
      response = await this.#dispatch(exchange, request.method, request.params)
    }
    let body = encodeResponse(response)
    if (typeof body === 'string') {
      this.#report({ type: 'handler-error', peer, method, message: body })
      body = encodeResponse({ error: { code: 'ERR_RPC_HANDLER', message: body } }) as Uint8Array
    }
    if (body.byteLength > this.#responseBytesMax) {
      const message = `The response to ${method} is ${body.byteLength} bytes, over responseBytesMax (${this.#responseBytesMax}); ask for less per call.`
      this.#report({ type: 'response-too-large', peer, method, message })
      body = encodeResponse({ error: { code: 'ERR_RPC_RESPONSE_TOO_LARGE', message } }) as Uint8Array
    }
    replyBytes(stream, body)
    this.#release(exchange)
  }

  async #dispatch(exchange: InboundExchange, method: string, params: unknown): Promise<WireResponse> {
    const { peer } = exchange
    const entry = this.#methods.get(method)
    if (entry === undefined) {
      this.#report({ type: 'unknown-method', peer, method, message: 'refused an unknown method' })
      return {
        error: {
          code: 'ERR_RPC_UNKNOWN_METHOD',
          message: `This node has no RPC method "${truncate(method, METHOD_LENGTH_MAX)}"; check that both nodes run the same docklet version.`,
        },
      }
    }
    const authorize = entry.authorize ?? this.#authorize
    let allowed = true
    let thrown: Error | undefined
    if (authorize !== undefined) {
      try {
        allowed = authorize(peer, method) === true
      } catch (err) {
        // A broken policy denies rather than lets everyone in.
        allowed = false
        thrown = toError(err)
      }
    }
    if (!allowed) {
      this.#report({
        type: 'forbidden',
        peer,
        method,
        message: thrown === undefined ? 'refused an unauthorised peer' : 'refused: authorize threw',
        ...(thrown === undefined ? {} : { error: thrown }),
      })
      return {
        error: {
          code: 'ERR_RPC_FORBIDDEN',
          message: `The peer ${peer} may not call ${method} on this node.`,
        },
      }
    }
    const context: RpcContext = { peerId: peer, signal: exchange.controller.signal }
    const outcome = await settleWithin(async () => entry.handler(params, context), entry.handlerTimeoutMs)
    if (outcome === undefined) {
      const message = `The handler of ${method} did not finish within ${entry.handlerTimeoutMs} ms; it may or may not have taken effect.`
      exchange.controller.abort(new NetError('ERR_RPC_HANDLER_TIMEOUT', message))
      this.#report({ type: 'handler-timeout', peer, method, message })
      return { error: { code: 'ERR_RPC_HANDLER_TIMEOUT', message } }
    }
    if (!outcome.ok) {
      const error = toWireError(outcome.error)
      if (error.code === 'ERR_RPC_HANDLER') {
        this.#report({
          type: 'handler-error',
          peer,
          method,
          message: error.message,
          error: toError(outcome.error),
        })
      }
      return { error }
    }
    return { result: outcome.value ?? null }
  }

  #release(exchange: InboundExchange): void {
    if (exchange.released) return
    exchange.released = true
    this.#inbound.delete(exchange)
  }

  #stoppedError(method: string, peer: string): RpcError {
    return new RpcError('ERR_RPC_STOPPED', 'The RPC service is stopped.', { method, peer })
  }

  #report(event: RpcEvent): void {
    if (this.#onEvent === undefined) return
    try {
      this.#onEvent(event)
    } catch {
      // A throwing logger must not break the service.
    }
  }
}

/**
 * Adds a peer's addresses (HOST:PORT or multiaddrs) to the node's peer store,
 * so `call(peerId, …)` can dial it by PeerId. Invalid ids or addresses are
 * rejected before the store is touched.
 */
export async function rememberPeer(node: Pick<Libp2p, 'peerStore'>, peer: PeerAddress): Promise<void> {
  let peerId: PeerId
  try {
    peerId = peerIdFromString(peer.id)
  } catch (err) {
    throw new NetConfigError(`The peer id "${peer.id}" is not a valid libp2p PeerId.`, { cause: err })
  }
  const multiaddrs = peer.addrs.map((address) => {
    const addr = toMultiaddr(address)
    const named = p2pComponent(addr)
    if (named === undefined) return addr
    if (named !== peer.id) {
      throw new NetConfigError(`The address "${address}" names peer ${named}, not ${peer.id}.`)
    }
    return addr.decapsulateCode(421) // the peer store keeps transport addresses; 421 is /p2p
  })
  await node.peerStore.merge(peerId, { multiaddrs })
}

// ---- wire helpers ----------------------------------------------------------

function checkMethod(method: string): void {
  if (typeof method !== 'string' || method.length === 0 || method.length > METHOD_LENGTH_MAX) {
    throw new NetConfigError(`An RPC method name must be 1 to ${METHOD_LENGTH_MAX} characters.`)
  }
}

interface ResolvedTarget {
  dialTarget: PeerId | Multiaddr
  /** How the target is named in errors (the PeerId, or the multiaddr). */
  address: string
  /** The PeerId the target names, if any. */
  namedPeer: string | undefined
}

function resolveTarget(to: string | Multiaddr): ResolvedTarget {
  let addr: Multiaddr
  if (isMultiaddr(to)) {
    addr = to
  } else if (to.startsWith('/') || to.includes(':')) {
    addr = toMultiaddr(to)
  } else {
    try {
      return { dialTarget: peerIdFromString(to), address: to, namedPeer: to }
    } catch (err) {
      throw new NetConfigError(`"${to}" is neither a PeerId, HOST:PORT nor a multiaddr.`, { cause: err })
    }
  }
  return { dialTarget: addr, address: addr.toString(), namedPeer: p2pComponent(addr) }
}

function p2pComponent(addr: Multiaddr): string | undefined {
  return addr.getComponents().findLast((component) => component.name === 'p2p')?.value
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function parseJson(frame: Uint8Array): unknown {
  return JSON.parse(decoder.decode(frame))
}

/** The request, or why it is invalid. */
function parseRequest(frame: Uint8Array): { method: string; params: unknown } | string {
  let value: unknown
  try {
    value = parseJson(frame)
  } catch {
    return 'it is not UTF-8 JSON.'
  }
  if (!isRecord(value)) return 'it is not a JSON object.'
  const { method, params } = value
  if (typeof method !== 'string' || method.length === 0 || method.length > METHOD_LENGTH_MAX) {
    return `"method" must be a string of 1 to ${METHOD_LENGTH_MAX} characters.`
  }
  return { method, params: params ?? null }
}

/** The response, or why it is invalid. */
function parseResponse(frame: Uint8Array): WireResponse | string {
  let value: unknown
  try {
    value = parseJson(frame)
  } catch {
    return 'it is not UTF-8 JSON.'
  }
  if (!isRecord(value)) return 'it is not a JSON object.'
  if ('error' in value) {
    const error = value.error
    if (!isRecord(error)) return '"error" is not an object.'
    const { code, message, details } = error
    if (typeof code !== 'string' || code.length === 0 || code.length > ERROR_CODE_LENGTH_MAX) {
      return '"error.code" is not a short string.'
    }
    if (typeof message !== 'string') return '"error.message" is not a string.'
    if (details !== undefined && !isRecord(details)) return '"error.details" is not an object.'
    return {
      error: {
        code,
        message: truncate(message, ERROR_MESSAGE_LENGTH_MAX),
        ...(details === undefined ? {} : { details }),
      },
    }
  }
  if ('result' in value) return { result: value.result }
  return 'it has neither "result" nor "error".'
}

/** JSON bytes of a response, or why the result cannot be encoded. */
function encodeResponse(response: WireResponse): Uint8Array | string {
  let text: string
  try {
    text = JSON.stringify(response)
  } catch (err) {
    return `The handler's result is not JSON-serialisable: ${toError(err).message}`
  }
  return encoder.encode(text)
}

/** What crosses the wire of an error a handler threw. */
function toWireError(err: unknown): WireError {
  const error = toError(err)
  const code = (err as { code?: unknown } | null)?.code
  const message = truncate(error.message, ERROR_MESSAGE_LENGTH_MAX)
  if (typeof code !== 'string' || code.length === 0 || code.length > ERROR_CODE_LENGTH_MAX) {
    return { code: 'ERR_RPC_HANDLER', message }
  }
  const details = errorDetails(err)
  return details === undefined ? { code, message } : { code, message, details }
}

/**
 * The data an error carries: its own enumerable properties (e.g.
 * NotLeaderError's `leader`) and the entries of a `details` object; values
 * that do not serialise are left out, and all of it if it is too large.
 */
function errorDetails(err: unknown): Record<string, unknown> | undefined {
  if (!isRecord(err)) return undefined
  const candidates: [string, unknown][] = Object.entries(err).filter(([key]) => !NOT_DETAILS.has(key))
  if (isRecord(err.details)) candidates.push(...Object.entries(err.details))
  const details: Record<string, unknown> = {}
  let count = 0
  for (const [key, value] of candidates) {
    try {
      if (JSON.stringify(value) === undefined) continue
    } catch {
      continue
    }
    details[key] = value
    count++
  }
  if (count === 0) return undefined
  if (encoder.encode(JSON.stringify(details)).byteLength > ERROR_DETAILS_BYTES_MAX) return undefined
  return details
}

function reply(stream: Stream, response: WireResponse): void {
  replyBytes(stream, encodeResponse(response) as Uint8Array)
}

/** Writes the response frame, half-closes, and resets the stream if the caller does not finish soon. */
function replyBytes(stream: Stream, body: Uint8Array): void {
  if (stream.status !== 'open' || stream.writeStatus !== 'writable') return
  try {
    stream.send(encodeFrames([body]))
  } catch (err) {
    stream.abort(toError(err))
    return
  }
  stream.close({ signal: AbortSignal.timeout(LINGER_MS) }).catch((err: unknown) => stream.abort(toError(err)))
  abortIfNotClosedSoon(stream)
}

/** Bounds how long a finished exchange's stream waits for the other side's end. */
function abortIfNotClosedSoon(stream: Stream): void {
  if (stream.status !== 'open') return
  const timer = setTimeout(() => {
    stream.abort(new NetError('ERR_RPC_LINGER', 'The other side did not close the RPC stream in time.'))
  }, LINGER_MS)
  stream.addEventListener('close', () => clearTimeout(timer), { once: true })
}

function discard(): void {}

/** Runs `work`; its outcome, or undefined when it has not settled within `timeoutMs`. */
function settleWithin(
  work: () => Promise<unknown>,
  timeoutMs: number,
): Promise<{ ok: true; value: unknown } | { ok: false; error: unknown } | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs)
    work().then(
      (value) => {
        clearTimeout(timer)
        resolve({ ok: true, value })
      },
      (error: unknown) => {
        clearTimeout(timer)
        resolve({ ok: false, error })
      },
    )
  })
}

/** `promise`, or a rejection with the signal's reason once `signal` aborts. */
function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      },
    )
  })
}

function truncate(text: string, lengthMax: number): string {
  return text.length <= lengthMax ? text : `${text.slice(0, lengthMax - 1)}…`
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}
