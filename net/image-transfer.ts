// Image transfer between hosts over libp2p: a host asks a peer for an image
// by its content hash and receives the image's bytes (the tar ImageStore
// exports) as a Node Readable, which the caller hands to
// ImageStore.importTar(stream, hash). net/ knows nothing of images beyond
// that: the serving side is given `open(hash)` and `authorize(peerId)`.
//
// Wire: one stream of IMAGE_PROTOCOL per fetch. The client writes one
// varint-length-prefixed JSON frame `{hash}` and closes its write side. The
// server answers one frame, `{sizeBytes?}` or `{error: {code, message}}`,
// then (on success) the raw bytes of the image, then closes its write side.
// A server that fails part-way resets the stream instead, so a clean end
// means everything was sent; when sizeBytes was announced the client checks
// the count as well. Integrity is the receiver's: importTar re-hashes the
// tree and keeps nothing that does not match.
//
// Backpressure, end to end: the server sends a chunk and, when the muxer
// says its buffer is full, waits for 'drain' before reading the next one
// from its source. The client pushes what arrives into its Readable and,
// when that is full, pauses the libp2p stream; yamux then stops granting the
// server send window until the consumer reads again. One trap in libp2p 3
// (@libp2p/utils AbstractMessageStream.resume()): resume() first hands the
// bytes buffered while paused to the 'message' listener and only then tells
// yamux to grant window again. A pause() from inside that hand-over (the
// Readable filled up on those bytes) is therefore undone: the stream says
// 'paused' but yamux grants window for every frame that arrives, the read
// buffer grows until it passes maxReadBufferLength, and libp2p resets the
// stream (a large transfer to a slow consumer broke off with "stream reset").
// So a pause that falls inside resume() is made after resume() returns.
//
// Limits: bytes per image (bytesMax, checked against the announced size
// before any data and against the count as data arrives), transfers at once
// in each direction, a whole-fetch timeout, an idle timeout (no progress
// while the consumer is waiting for bytes, or while the server waits for
// the client to take them), and a bound on every buffer on the way.

import { Readable } from 'node:stream'
import type { Connection, Libp2p, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { isMultiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Uint8ArrayList } from 'uint8arraylist'
import { NetConfigError, NetError } from './errors.ts'
import { encodeFrames, FrameDecoder } from './frame-codec.ts'
import { checkInteger } from './frame-transport-types.ts'
import { toMultiaddr } from './libp2p-host.ts'

export const IMAGE_PROTOCOL = '/docklet/image/1.0.0'
/** Largest image a fetch accepts unless told otherwise (the store's own import limit is the same). */
export const IMAGE_BYTES_MAX_DEFAULT = 64 * 1024 ** 3
/** Images served at once; the excess is answered ERR_IMAGE_BUSY. */
export const IMAGE_SERVE_TRANSFERS_MAX_DEFAULT = 4
/** Fetches in flight at once from this node. */
export const IMAGE_FETCH_TRANSFERS_MAX_DEFAULT = 4
/** No progress for this long fails a transfer (the server's open() included). */
export const IMAGE_IDLE_TIMEOUT_MS_DEFAULT = 120_000
/** The request frame must arrive within this time. */
export const IMAGE_REQUEST_READ_TIMEOUT_MS_DEFAULT = 10_000

const REQUEST_BYTES_MAX = 1024
const RESPONSE_HEADER_BYTES_MAX = 8 * 1024
const ERROR_MESSAGE_LENGTH_MAX = 2048
const TIMEOUT_MS_MAX = 24 * 60 * 60_000
/**
 * Bytes libp2p may hold for a paused client stream. yamux lets the sender
 * run up to its receive window (at most 16 MiB) ahead of a pause, so this
 * must exceed it, or a pause would reset the stream. (It holds only while
 * pauses stick; see the header on resume().)
 */
const STREAM_READ_BUFFER_BYTES_MAX = 32 * 1024 * 1024
/** Bytes queued in a server stream beyond what the muxer took; the server waits for drain long before. */
const STREAM_WRITE_BUFFER_BYTES_MAX = 8 * 1024 * 1024
/** What the client's Readable buffers before the libp2p stream is paused. */
const READABLE_BUFFER_BYTES_MAX = 1024 * 1024
const HASH_PATTERN = /^[0-9a-f]{64}$/

/** What the serving side hands out for a hash it holds. */
export interface ImageSource {
  stream: Readable
  /** Announced to the client, which checks it against bytesMax at once and the byte count at the end. */
  sizeBytes?: number
}

export interface ImageOpenContext {
  peerId: string
  /** Aborted when the transfer ends early (client gone, idle timeout, stop()). */
  signal: AbortSignal
}

/** The image's bytes, or null when this host does not have it. */
export type ImageOpen = (hash: string, context: ImageOpenContext) => Promise<ImageSource | null>

export type ImageTransferEventType =
  | 'served'
  | 'busy'
  | 'forbidden'
  | 'not-found'
  | 'bad-request'
  | 'request-timeout'
  | 'open-failed'
  | 'send-failed'

/** A structured log record of something this node served, refused or failed to serve. */
export interface ImageTransferEvent {
  type: ImageTransferEventType
  peer: string
  hash: string
  message: string
  error?: Error
}

export interface ImageTransferServiceOptions {
  /** Needed to serve (start()); fetching works without it. */
  open?: ImageOpen
  /** Which peers may fetch images from this node; needed to serve. */
  authorize?: (peerId: string) => boolean
  /** Protocol id; every node must use the same. Default IMAGE_PROTOCOL. */
  protocol?: string
  /** Images served at once. Default 4. */
  serveTransfersMax?: number
  /** Fetches in flight at once. Default 4. */
  fetchTransfersMax?: number
  /** Default idle timeout of fetches, and the server's bound on waiting for open() or for the client to read. Default 120 s. */
  idleTimeoutMs?: number
  /** The request frame must arrive within this time. Default 10 s. */
  requestReadTimeoutMs?: number
  onEvent?: (event: ImageTransferEvent) => void
}

export interface ImageFetchProgress {
  /** Image bytes received so far. */
  bytes: number
  /** The size the server announced, when it did. */
  totalBytes?: number
}

export interface ImageFetchOptions {
  /** Bound on the whole fetch, from dial to the last byte. */
  timeoutMs: number
  /** No progress for this long fails the fetch (time the consumer spends not reading does not count). */
  idleTimeoutMs?: number
  /** Refuse an image larger than this. Default 64 GiB. */
  bytesMax?: number
  signal?: AbortSignal
  /** Called for every chunk that arrives. */
  onProgress?: (progress: ImageFetchProgress) => void
  /** PeerIds the serving node must have; another one fails with ERR_IMAGE_IDENTITY. */
  expectPeerId?: readonly string[]
}

export interface ImageFetch {
  /** The image's bytes; errors with ImageTransferError if the transfer fails part-way. Destroy it to cancel. */
  stream: Readable
  sizeBytes?: number
  /** The authenticated PeerId of the node that serves it. */
  peerId: string
}

/** What the service needs from a libp2p node. */
export type ImageTransferComponents = Pick<Libp2p, 'handle' | 'unhandle' | 'dial'>

/**
 * A fetch or serve failed. `code` says why: ERR_IMAGE_NOT_FOUND (the peer
 * lacks the image), ERR_IMAGE_FORBIDDEN (the peer does not serve us),
 * ERR_IMAGE_BUSY, ERR_IMAGE_SOURCE (the peer could not read it),
 * ERR_IMAGE_TOO_LARGE, ERR_IMAGE_TRUNCATED, ERR_IMAGE_TIMEOUT,
 * ERR_IMAGE_DIAL, ERR_IMAGE_IDENTITY, ERR_IMAGE_BAD_RESPONSE,
 * ERR_IMAGE_BAD_REQUEST, ERR_IMAGE_ABORTED, ERR_IMAGE_STOPPED.
 */
export class ImageTransferError extends NetError {
  readonly hash: string
  readonly peer: string
  constructor(code: string, message: string, options: { hash: string; peer: string; cause?: unknown }) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ImageTransferError'
    this.hash = options.hash
    this.peer = options.peer
  }
}

interface ServeExchange {
  readonly stream: Stream
  readonly peer: string
  readonly controller: AbortController
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export class ImageTransferService {
  readonly #node: ImageTransferComponents
  readonly #open: ImageOpen | undefined
  readonly #authorize: ((peerId: string) => boolean) | undefined
  readonly #protocol: string
  readonly #serveTransfersMax: number
  readonly #fetchTransfersMax: number
  readonly #idleTimeoutMs: number
  readonly #requestReadTimeoutMs: number
  readonly #onEvent: ((event: ImageTransferEvent) => void) | undefined
  readonly #serving = new Set<ServeExchange>()
  readonly #fetching = new Set<Stream>()
  readonly #stopController = new AbortController()
  #fetchesStarting = 0
  #started = false
  #stopped = false

  constructor(node: ImageTransferComponents, options: ImageTransferServiceOptions = {}) {
    this.#node = node
    this.#open = options.open
    this.#authorize = options.authorize
    this.#protocol = options.protocol ?? IMAGE_PROTOCOL
    this.#serveTransfersMax = options.serveTransfersMax ?? IMAGE_SERVE_TRANSFERS_MAX_DEFAULT
    this.#fetchTransfersMax = options.fetchTransfersMax ?? IMAGE_FETCH_TRANSFERS_MAX_DEFAULT
    this.#idleTimeoutMs = options.idleTimeoutMs ?? IMAGE_IDLE_TIMEOUT_MS_DEFAULT
    this.#requestReadTimeoutMs = options.requestReadTimeoutMs ?? IMAGE_REQUEST_READ_TIMEOUT_MS_DEFAULT
    this.#onEvent = options.onEvent
    if (!this.#protocol.startsWith('/')) throw new NetConfigError('protocol must start with "/".')
    checkInteger('serveTransfersMax', this.#serveTransfersMax, 1, 256)
    checkInteger('fetchTransfersMax', this.#fetchTransfersMax, 1, 256)
    checkInteger('idleTimeoutMs', this.#idleTimeoutMs, 1, TIMEOUT_MS_MAX)
    checkInteger('requestReadTimeoutMs', this.#requestReadTimeoutMs, 1, TIMEOUT_MS_MAX)
  }

  /** Starts serving images (needs `open` and `authorize`). */
  async start(): Promise<void> {
    if (this.#stopped) throw new NetConfigError('The image transfer service is stopped; create a new one.')
    if (this.#started) return
    if (this.#open === undefined || this.#authorize === undefined) {
      throw new NetConfigError('Serving images needs both `open` and `authorize`.')
    }
    this.#started = true
    await this.#node.handle(
      this.#protocol,
      (stream, connection) => {
        this.#onInboundStream(stream, connection)
      },
      {
        // A few more than served at once, so the excess gets an ERR_IMAGE_BUSY answer rather than a reset.
        maxInboundStreams: this.#serveTransfersMax + 8,
        maxOutboundStreams: this.#fetchTransfersMax,
      },
    )
  }

  /** Stops serving and fetching: every transfer in progress is reset. */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    const stopped = new NetError('ERR_IMAGE_STOPPED', 'The image transfer service stopped.')
    this.#stopController.abort(stopped)
    for (const exchange of this.#serving) {
      exchange.controller.abort(stopped)
      exchange.stream.abort(stopped)
    }
    for (const stream of this.#fetching) stream.abort(stopped)
    if (this.#started) {
      try {
        await this.#node.unhandle(this.#protocol)
      } catch {
        // The node may already be stopped; nothing is left to unregister.
      }
    }
  }

  /**
   * Asks `to` (a PeerId known to the peer store, HOST:PORT or a multiaddr)
   * for the image `hash`. Resolves once the peer has said it will send it;
   * the bytes then come through the returned stream. Rejects with
   * ImageTransferError.
   */
  async fetch(to: string | Multiaddr, hash: string, options: ImageFetchOptions): Promise<ImageFetch> {
    checkInteger('timeoutMs', options.timeoutMs, 1, TIMEOUT_MS_MAX)
    const idleTimeoutMs = options.idleTimeoutMs ?? this.#idleTimeoutMs
    checkInteger('idleTimeoutMs', idleTimeoutMs, 1, TIMEOUT_MS_MAX)
    const bytesMax = options.bytesMax ?? IMAGE_BYTES_MAX_DEFAULT
    checkInteger('bytesMax', bytesMax, 1, Number.MAX_SAFE_INTEGER)
    if (!HASH_PATTERN.test(hash)) throw new NetConfigError(`"${hash}" is not an image hash (64 hex digits).`)
    const target = resolveTarget(to)
    let peer = target.address
    const error = (code: string, message: string, cause?: unknown) =>
      new ImageTransferError(code, message, { hash, peer, ...(cause === undefined ? {} : { cause }) })
    if (this.#stopped) throw error('ERR_IMAGE_STOPPED', 'The image transfer service is stopped.')
    if (this.#fetching.size + this.#fetchesStarting >= this.#fetchTransfersMax) {
      throw error(
        'ERR_IMAGE_BUSY',
        `Cannot fetch image ${hash}: ${this.#fetchTransfersMax} fetches are already in progress (fetchTransfersMax); retry later.`,
      )
    }
    const timeout = AbortSignal.timeout(options.timeoutMs)
    const signals = [timeout, this.#stopController.signal]
    if (options.signal !== undefined) signals.push(options.signal)
    const signal = AbortSignal.any(signals)
    const interrupted = (): ImageTransferError | undefined => {
      if (timeout.aborted) {
        return error(
          'ERR_IMAGE_TIMEOUT',
          `Fetching image ${hash} from ${peer} did not finish within ${options.timeoutMs} ms; check the peer and retry with a longer timeout.`,
        )
      }
      if (this.#stopController.signal.aborted) {
        return error('ERR_IMAGE_STOPPED', 'The image transfer service stopped.')
      }
      if (options.signal?.aborted === true) {
        return error('ERR_IMAGE_ABORTED', `Fetching image ${hash} was cancelled.`, options.signal.reason)
      }
      return undefined
    }
    this.#fetchesStarting++
    let stream: Stream
    try {
      let connection: Connection
      try {
        connection = await this.#node.dial(target.dialTarget, { signal })
      } catch (err) {
        throw (
          interrupted() ??
          error(
            'ERR_IMAGE_DIAL',
            `Could not reach ${target.address} to fetch image ${hash}: ${toError(err).message}. Check that docklet runs there.`,
            err,
          )
        )
      }
      peer = connection.remotePeer.toString()
      const expected = options.expectPeerId
      if (expected !== undefined && !expected.includes(peer)) {
        throw error(
          'ERR_IMAGE_IDENTITY',
          `The peer at ${target.address} is ${peer}, not one of the hosts expected to serve image ${hash}.`,
        )
      }
      try {
        stream = await connection.newStream(this.#protocol, {
          signal,
          maxOutboundStreams: this.#fetchTransfersMax,
        })
      } catch (err) {
        throw (
          interrupted() ??
          error(
            'ERR_IMAGE_DIAL',
            `Could not open an image stream to ${peer}: ${toError(err).message}. Check that both nodes run the same docklet version.`,
            err,
          )
        )
      }
    } finally {
      this.#fetchesStarting--
    }
    this.#fetching.add(stream)
    stream.addEventListener('close', () => this.#fetching.delete(stream), { once: true })
    stream.maxReadBufferLength = STREAM_READ_BUFFER_BYTES_MAX
    return receive(stream, {
      hash,
      peer,
      bytesMax,
      idleTimeoutMs,
      signal,
      interrupted,
      error,
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    })
  }

  // ---- serving -----------------------------------------------------------

  #onInboundStream(stream: Stream, connection: Connection): void {
    const peer = connection.remotePeer.toString()
    if (this.#stopped) {
      stream.abort(new NetError('ERR_IMAGE_STOPPED', 'The image transfer service stopped.'))
      return
    }
    stream.maxWriteBufferLength = STREAM_WRITE_BUFFER_BYTES_MAX
    if (this.#serving.size >= this.#serveTransfersMax) {
      this.#report({
        type: 'busy',
        peer,
        hash: '',
        message: `refused: ${this.#serving.size} transfers in progress`,
      })
      stream.addEventListener('message', discard)
      replyError(stream, {
        code: 'ERR_IMAGE_BUSY',
        message: `The peer is already sending ${this.#serveTransfersMax} images; retry later.`,
      })
      return
    }
    const exchange: ServeExchange = { stream, peer, controller: new AbortController() }
    this.#serving.add(exchange)
    const frames = new FrameDecoder(REQUEST_BYTES_MAX)
    let received = false
    const readTimer = setTimeout(() => {
      if (received) return
      received = true
      this.#report({ type: 'request-timeout', peer, hash: '', message: 'the request did not arrive in time' })
      stream.abort(new NetError('ERR_IMAGE_REQUEST_TIMEOUT', 'The request did not arrive in time.'))
      this.#serving.delete(exchange)
    }, this.#requestReadTimeoutMs)
    stream.addEventListener('message', (event: StreamMessageEvent) => {
      if (received) return
      try {
        frames.push(event.data, (frame) => {
          if (received) return
          received = true
          clearTimeout(readTimer)
          void this.#serve(exchange, frame).finally(() => this.#serving.delete(exchange))
        })
      } catch (err) {
        received = true
        clearTimeout(readTimer)
        this.#report({ type: 'bad-request', peer, hash: '', message: toError(err).message })
        replyError(stream, { code: 'ERR_IMAGE_BAD_REQUEST', message: 'The request is not a valid frame.' })
        this.#serving.delete(exchange)
      }
    })
    stream.addEventListener('close', (event: StreamCloseEvent) => {
      clearTimeout(readTimer)
      exchange.controller.abort(
        event.error ?? new NetError('ERR_IMAGE_STREAM_CLOSED', 'The image stream closed.'),
      )
      if (!received) this.#serving.delete(exchange)
    })
  }

  async #serve(exchange: ServeExchange, frame: Uint8Array): Promise<void> {
    const { stream, peer } = exchange
    const hash = parseRequest(frame)
    if (hash === null) {
      this.#report({ type: 'bad-request', peer, hash: '', message: 'the request names no valid hash' })
      replyError(stream, {
        code: 'ERR_IMAGE_BAD_REQUEST',
        message:
          'The request must be {"hash": <64 hex digits>}; check that both nodes run the same docklet version.',
      })
      return
    }
    let allowed = false
    try {
      allowed = this.#authorize?.(peer) === true
    } catch {
      allowed = false // a broken policy denies rather than lets everyone in
    }
    if (!allowed) {
      this.#report({ type: 'forbidden', peer, hash, message: 'refused an unauthorised peer' })
      replyError(stream, {
        code: 'ERR_IMAGE_FORBIDDEN',
        message: `The peer does not send images to ${peer}; only cluster members may fetch them.`,
      })
      return
    }
    const idle = AbortSignal.timeout(this.#idleTimeoutMs)
    const opening = this.#open!(hash, { peerId: peer, signal: exchange.controller.signal })
    let source: ImageSource | null
    try {
      source = await raceSignal(opening, AbortSignal.any([idle, exchange.controller.signal]))
    } catch (err) {
      // A source that arrives after we gave up on it must still be released.
      opening.then((late) => late?.stream.destroy()).catch(() => {})
      if (exchange.controller.signal.aborted && !idle.aborted) {
        this.#report({
          type: 'send-failed',
          peer,
          hash,
          message: 'the client went away before the image was ready',
        })
        return
      }
      const error = toError(err)
      this.#report({ type: 'open-failed', peer, hash, message: error.message, error })
      replyError(stream, {
        code: idle.aborted ? 'ERR_IMAGE_TIMEOUT' : 'ERR_IMAGE_SOURCE',
        message: idle.aborted
          ? `The peer did not get image ${hash} ready within ${this.#idleTimeoutMs} ms; retry later.`
          : `The peer could not read image ${hash}: ${truncate(error.message, ERROR_MESSAGE_LENGTH_MAX)}`,
      })
      return
    }
    if (source === null) {
      this.#report({ type: 'not-found', peer, hash, message: 'this node does not have the image' })
      replyError(stream, {
        code: 'ERR_IMAGE_NOT_FOUND',
        message: `The peer does not have image ${hash}; fetch it from a host that holds it.`,
      })
      return
    }
    const { stream: input, sizeBytes } = source
    try {
      if (sizeBytes !== undefined && (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0)) {
        throw new NetError('ERR_IMAGE_SOURCE', `open() returned an invalid sizeBytes (${sizeBytes}).`)
      }
      sendFrame(stream, sizeBytes === undefined ? {} : { sizeBytes })
      let sent = 0
      for await (const chunk of input) {
        const bytes = toBytes(chunk)
        sent += bytes.byteLength
        if (sizeBytes !== undefined && sent > sizeBytes) {
          throw new NetError(
            'ERR_IMAGE_SOURCE',
            `The image source gave more than the ${sizeBytes} bytes it announced.`,
          )
        }
        if (!stream.send(bytes)) await this.#drained(exchange)
      }
      if (sizeBytes !== undefined && sent !== sizeBytes) {
        throw new NetError(
          'ERR_IMAGE_SOURCE',
          `The image source ended after ${sent} of the ${sizeBytes} bytes it announced.`,
        )
      }
      await stream.close({ signal: this.#idleSignal(exchange) })
      this.#report({ type: 'served', peer, hash, message: `sent ${sent} bytes` })
    } catch (err) {
      const error = toError(err)
      this.#report({ type: 'send-failed', peer, hash, message: error.message, error })
      // A reset, not a clean end: the client must not take a partial image for a whole one.
      stream.abort(error)
    } finally {
      input.destroy()
    }
  }

  /**
   * Waits until the muxer takes more bytes: the client read some. (Not
   * stream.onDrain(): in this libp2p version its promise stays resolved
   * after the first drain, so it would stop waiting from then on.)
   */
  async #drained(exchange: ServeExchange): Promise<void> {
    const { stream } = exchange
    while (stream.writableNeedsDrain) {
      const signal = this.#idleSignal(exchange)
      await new Promise<void>((resolve, reject) => {
        const finish = (error?: unknown): void => {
          stream.removeEventListener('drain', onDrain)
          stream.removeEventListener('close', onClose)
          signal.removeEventListener('abort', onAbort)
          if (error === undefined) resolve()
          else reject(error)
        }
        const onDrain = (): void => finish()
        const onClose = (event: StreamCloseEvent): void =>
          finish(event.error ?? new NetError('ERR_IMAGE_STREAM_CLOSED', 'The image stream closed.'))
        const onAbort = (): void =>
          finish(
            exchange.controller.signal.aborted
              ? exchange.controller.signal.reason
              : new NetError(
                  'ERR_IMAGE_TIMEOUT',
                  `The client took no bytes for ${this.#idleTimeoutMs} ms; gave up sending.`,
                ),
          )
        if (signal.aborted) {
          onAbort()
          return
        }
        stream.addEventListener('drain', onDrain)
        stream.addEventListener('close', onClose)
        signal.addEventListener('abort', onAbort)
      })
      // The stream's own drain listener sends the queued bytes in a microtask
      // queued before this continuation; writableNeedsDrain now says whether
      // they all went.
    }
  }

  /** Aborts when the client takes no bytes for idleTimeoutMs, or the transfer ends. */
  #idleSignal(exchange: ServeExchange): AbortSignal {
    return AbortSignal.any([AbortSignal.timeout(this.#idleTimeoutMs), exchange.controller.signal])
  }

  #report(event: ImageTransferEvent): void {
    if (this.#onEvent === undefined) return
    try {
      this.#onEvent(event)
    } catch {
      // A throwing logger must not break the service.
    }
  }
}

// ---- receiving -------------------------------------------------------------

interface ReceiveContext {
  hash: string
  peer: string
  bytesMax: number
  idleTimeoutMs: number
  signal: AbortSignal
  interrupted: () => ImageTransferError | undefined
  error: (code: string, message: string, cause?: unknown) => ImageTransferError
  onProgress?: (progress: ImageFetchProgress) => void
}

/**
 * Sends the request, waits for the header, and turns the rest of the
 * stream into a Readable with backpressure. Resolves once the header says
 * the image is coming; rejects (and resets the stream) otherwise.
 */
function receive(stream: Stream, context: ReceiveContext): Promise<ImageFetch> {
  const { hash, peer, bytesMax, idleTimeoutMs, signal, error } = context
  return new Promise<ImageFetch>((resolve, reject) => {
    // Header phase: `pending` holds bytes until the header frame is complete.
    let pending = new Uint8Array(0)
    let readable: Readable | null = null
    let sizeBytes: number | undefined
    let bytes = 0
    let settled = false
    let finished = false
    let idleTimer: ReturnType<typeof setTimeout> | undefined
    let deferredFailure: ImageTransferError | null = null
    // True while stream.resume() runs; a pause wanted meanwhile waits for its return.
    let resuming = false
    let pauseAfterResume = false

    const armIdle = (): void => {
      clearTimeout(idleTimer)
      idleTimer = setTimeout(() => {
        fail(
          error(
            'ERR_IMAGE_TIMEOUT',
            `No bytes of image ${hash} arrived from ${peer} for ${idleTimeoutMs} ms; check the peer and retry.`,
          ),
        )
      }, idleTimeoutMs)
    }
    const cleanup = (): void => {
      clearTimeout(idleTimer)
      signal.removeEventListener('abort', onAbort)
    }
    /** Ends the transfer with `failure`: rejects the fetch, or errors the Readable after it. */
    const fail = (failure: ImageTransferError): void => {
      if (finished) return
      finished = true
      cleanup()
      stream.abort(failure)
      if (!settled) {
        settled = true
        reject(failure)
      } else if (readable !== null && readable.listenerCount('error') > 0) {
        readable.destroy(failure)
      } else {
        // Nobody listens for errors yet (the caller is still getting ready
        // to read): an 'error' now would be uncaught. It is raised as soon
        // as a listener comes (pipeline and for-await both add one).
        deferredFailure = failure
      }
    }
    /** Stops yamux granting window to the sender; read() resumes. */
    const pauseForConsumer = (): void => {
      if (stream.readStatus !== 'readable') return
      // The consumer is behind: its time does not count as the peer's idleness.
      clearTimeout(idleTimer)
      stream.pause()
    }
    const onAbort = (): void => {
      fail(context.interrupted() ?? error('ERR_IMAGE_ABORTED', `Fetching image ${hash} was cancelled.`))
    }

    const onHeader = (header: unknown): void => {
      if (!isRecord(header)) {
        fail(error('ERR_IMAGE_BAD_RESPONSE', `The answer of ${peer} is not a JSON object.`))
        return
      }
      if ('error' in header) {
        const remote = isRecord(header.error) ? header.error : {}
        const code =
          typeof remote.code === 'string' && /^ERR_[A-Z_]{1,64}$/.test(remote.code) ? remote.code : ''
        const message = typeof remote.message === 'string' ? remote.message : ''
        if (code === '') {
          fail(error('ERR_IMAGE_BAD_RESPONSE', `The answer of ${peer} carries an invalid error.`))
        } else {
          fail(error(code, truncate(message, ERROR_MESSAGE_LENGTH_MAX)))
        }
        return
      }
      const announced = header.sizeBytes
      if (announced !== undefined && (!Number.isSafeInteger(announced) || (announced as number) < 0)) {
        fail(error('ERR_IMAGE_BAD_RESPONSE', `The answer of ${peer} announces an invalid size.`))
        return
      }
      if (typeof announced === 'number') {
        if (announced > bytesMax) {
          fail(
            error(
              'ERR_IMAGE_TOO_LARGE',
              `Image ${hash} is ${announced} bytes, more than the ${bytesMax} bytes allowed; raise the limit to fetch it.`,
            ),
          )
          return
        }
        sizeBytes = announced
      }
      readable = new Readable({
        highWaterMark: READABLE_BUFFER_BYTES_MAX,
        read: () => {
          if (stream.readStatus !== 'paused' || finished) return
          armIdle()
          resuming = true
          pauseAfterResume = false
          try {
            // Hands us what was buffered while paused (see onData), then grants window.
            stream.resume()
          } catch {
            // The stream is already closing; 'end' or 'close' settles the transfer.
          } finally {
            resuming = false
          }
          // The window resume() just granted is all the sender gets until the consumer reads again.
          if (pauseAfterResume && !finished) pauseForConsumer()
        },
        destroy: (err, callback) => {
          // The consumer gave up (or we failed it): stop the sender too.
          if (!finished) {
            finished = true
            cleanup()
            stream.abort(err ?? new NetError('ERR_IMAGE_ABORTED', 'The receiver stopped reading the image.'))
          }
          callback(err)
        },
      })
      readable.on('newListener', (event: string) => {
        const failure = deferredFailure
        if (event !== 'error' || failure === null) return
        deferredFailure = null
        // The listener is added right after this event: raise the error once it is.
        process.nextTick(() => readable?.destroy(failure))
      })
      settled = true
      resolve({ stream: readable, peerId: peer, ...(sizeBytes === undefined ? {} : { sizeBytes }) })
    }

    const onData = (chunk: Uint8Array): void => {
      if (finished || readable === null) return
      bytes += chunk.byteLength
      if (bytes > bytesMax) {
        fail(error('ERR_IMAGE_TOO_LARGE', `Image ${hash} is larger than the ${bytesMax} bytes allowed.`))
        return
      }
      if (sizeBytes !== undefined && bytes > sizeBytes) {
        fail(error('ERR_IMAGE_BAD_RESPONSE', `${peer} sent more than the ${sizeBytes} bytes it announced.`))
        return
      }
      context.onProgress?.({ bytes, ...(sizeBytes === undefined ? {} : { totalBytes: sizeBytes }) })
      const wantsMore = readable.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
      if (wantsMore) return
      // A pause now would be undone by the rest of resume() (see the header).
      if (resuming) pauseAfterResume = true
      else pauseForConsumer()
    }

    const onChunk = (chunk: Uint8Array): void => {
      armIdle()
      if (readable !== null) {
        onData(chunk)
        return
      }
      // Still reading the header: join the bytes and look for a complete frame.
      const joined = new Uint8Array(pending.byteLength + chunk.byteLength)
      joined.set(pending)
      joined.set(chunk, pending.byteLength)
      pending = joined
      const frame = splitFrame(pending)
      if (frame === 'too-large') {
        fail(
          error(
            'ERR_IMAGE_BAD_RESPONSE',
            `The answer of ${peer} has a header over ${RESPONSE_HEADER_BYTES_MAX} bytes.`,
          ),
        )
        return
      }
      if (frame === null) return
      let header: unknown
      try {
        header = JSON.parse(decoder.decode(frame.body))
      } catch {
        fail(error('ERR_IMAGE_BAD_RESPONSE', `The answer of ${peer} is not JSON.`))
        return
      }
      pending = new Uint8Array(0)
      onHeader(header)
      if (!finished && frame.rest.byteLength > 0) onData(frame.rest)
    }

    stream.addEventListener('message', (event: StreamMessageEvent) => {
      if (finished) return
      for (const chunk of chunksOf(event.data)) {
        if (finished) return
        onChunk(chunk)
      }
    })
    // 'end': everything the peer sent has been delivered (after a clean close or a reset).
    stream.addEventListener('end', () => {
      if (finished) return
      if (stream.status === 'reset' || stream.status === 'aborted') {
        // libp2p dispatches 'close' with the reason (a reset, an overflowing
        // read buffer) right after this 'end': let it fail the transfer with
        // that cause, and fail it here only if it does not.
        queueMicrotask(() => fail(truncated()))
        return
      }
      if (readable === null) {
        fail(error('ERR_IMAGE_BAD_RESPONSE', `${peer} closed the stream without answering.`))
        return
      }
      if (sizeBytes !== undefined && bytes !== sizeBytes) {
        fail(truncated())
        return
      }
      finished = true
      cleanup()
      readable.push(null)
    })
    stream.addEventListener('close', (event: StreamCloseEvent) => {
      if (finished || event.error === undefined) return
      fail(context.interrupted() ?? truncated(event.error))
    })
    function truncated(cause?: unknown): ImageTransferError {
      if (readable === null) {
        return error(
          'ERR_IMAGE_BAD_RESPONSE',
          `The stream to ${peer} was reset before it answered for image ${hash}; retry.`,
          cause,
        )
      }
      const total = sizeBytes === undefined ? '' : ` of ${sizeBytes}`
      return error(
        'ERR_IMAGE_TRUNCATED',
        `The transfer of image ${hash} from ${peer} broke off after ${bytes}${total} bytes; nothing was kept, retry.`,
        cause,
      )
    }

    signal.addEventListener('abort', onAbort, { once: true })
    if (signal.aborted) {
      onAbort()
      return
    }
    armIdle()
    try {
      stream.send(encodeFrames([encoder.encode(JSON.stringify({ hash }))]))
    } catch (err) {
      fail(error('ERR_IMAGE_DIAL', `Could not send the request for image ${hash} to ${peer}.`, err))
      return
    }
    // Half-close: the request is complete; a failure shows up as 'close'.
    stream.close({ signal }).catch(() => {})
  })
}

// ---- wire helpers ----------------------------------------------------------

/** The first frame of `bytes` and what follows it; null while incomplete. */
function splitFrame(bytes: Uint8Array): { body: Uint8Array; rest: Uint8Array } | null | 'too-large' {
  let length = 0
  let weight = 1
  for (let at = 0; at < bytes.byteLength && at < 5; at++) {
    const byte = bytes[at]!
    length += (byte & 0x7f) * weight
    weight *= 128
    if (length > RESPONSE_HEADER_BYTES_MAX) return 'too-large'
    if ((byte & 0x80) === 0) {
      const start = at + 1
      if (bytes.byteLength < start + length) return null
      return { body: bytes.subarray(start, start + length), rest: bytes.subarray(start + length) }
    }
  }
  return bytes.byteLength >= 5 ? 'too-large' : null
}

function chunksOf(data: Uint8Array | Uint8ArrayList): Iterable<Uint8Array> {
  return data instanceof Uint8Array ? [data] : data
}

function toBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk
  if (typeof chunk === 'string') return Buffer.from(chunk)
  throw new NetError('ERR_IMAGE_SOURCE', 'The image source must yield bytes.')
}

function parseRequest(frame: Uint8Array): string | null {
  try {
    const value: unknown = JSON.parse(decoder.decode(frame))
    if (isRecord(value) && typeof value.hash === 'string' && HASH_PATTERN.test(value.hash)) return value.hash
  } catch {
    // Not JSON: answered as a bad request.
  }
  return null
}

function sendFrame(stream: Stream, value: unknown): void {
  stream.send(encodeFrames([encoder.encode(JSON.stringify(value))]))
}

/** Answers with an error frame and half-closes; the client resets or closes its end. */
function replyError(stream: Stream, error: { code: string; message: string }): void {
  if (stream.status !== 'open' || stream.writeStatus !== 'writable') return
  try {
    sendFrame(stream, { error })
  } catch (err) {
    stream.abort(toError(err))
    return
  }
  stream
    .close({ signal: AbortSignal.timeout(IMAGE_REQUEST_READ_TIMEOUT_MS_DEFAULT) })
    .catch((err: unknown) => {
      stream.abort(toError(err))
    })
}

interface ResolvedTarget {
  dialTarget: ReturnType<typeof peerIdFromString> | Multiaddr
  address: string
}

function resolveTarget(to: string | Multiaddr): ResolvedTarget {
  if (isMultiaddr(to)) return { dialTarget: to, address: to.toString() }
  if (to.startsWith('/') || to.includes(':')) {
    const addr = toMultiaddr(to)
    return { dialTarget: addr, address: addr.toString() }
  }
  try {
    return { dialTarget: peerIdFromString(to), address: to }
  } catch (err) {
    throw new NetConfigError(`"${to}" is neither a PeerId, HOST:PORT nor a multiaddr.`, { cause: err })
  }
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

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function discard(): void {}

function truncate(text: string, lengthMax: number): string {
  return text.length <= lengthMax ? text : `${text.slice(0, lengthMax - 1)}…`
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}
