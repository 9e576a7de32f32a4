// Raft frames over libp2p. Each frame travels behind a varint length prefix
// on a long-lived stream of RAFT_PROTOCOL.
//
// Streams: every node sends on its own outbound stream to each peer and only
// reads from inbound streams, so a pair of nodes uses two streams (on one
// connection when possible: libp2p reuses an open connection to the peer).
// Keeping each stream one-way means no request/response state, and either
// side can redial on its own without coordinating with the other.
//
// Sending: send() only queues (bounded per peer). A microtask, or an early
// flush once a batch is full, coalesces waiting frames into one
// stream.send(): at a few hundred bytes per frame, that is what lifts
// throughput from ~30k sends/s to well above it. A deferrable frame waits
// for setImmediate instead (the end of this turn of the event loop), so that
// writing it does not hold up what the caller does next, such as answering
// a client; a frame that is not deferrable flushes everything queued before
// it, so one peer's frames always leave in order. When stream.send() returns
// false the stream is full; we stop writing until its 'drain' event.
//
// Connecting: dials are lazy (the first queued frame starts one), time-boxed
// by an AbortSignal, and retried with capped exponential back-off while
// frames wait; a stream that closes schedules a redial the same way.
//
// Receiving: only members' streams are read. Frames are parsed as bytes
// arrive and handed to the handler synchronously. A bad or oversized length
// prefix resets the stream (the peer redials) and is reported.

import type { Connection, Libp2p, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Multiaddr } from '@multiformats/multiaddr'
import { Uint8ArrayList } from 'uint8arraylist'
import {
  DialError,
  FrameTooLargeError,
  NetConfigError,
  NetError,
  NotMemberError,
  QueueFullError,
  TransportStoppedError,
} from './errors.ts'
import { encodeFrames, FrameDecoder, varintLength, writeVarint } from './frame-codec.ts'
import {
  checkInteger,
  type FrameTransportOptions,
  type MemberFrameTransport,
  type PeerAddress,
  type PeerStats,
  type ResolvedFrameTransportOptions,
  resolveFrameTransportOptions,
  type SendOptions,
  type TransportEvent,
} from './frame-transport-types.ts'
import { toMultiaddr } from './libp2p-host.ts'

export const RAFT_PROTOCOL = '/docklet/raft/1.0.0'

/** What the transport needs from a libp2p node. */
export type Libp2pFrameTransportComponents = Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol'>

export interface Libp2pFrameTransportOptions extends FrameTransportOptions {
  /** Protocol id; every member must use the same. Default RAFT_PROTOCOL. */
  protocol?: string
  /** First redial delay after a failure. Default 50 ms. */
  reconnectDelayMsMin?: number
  /** Cap of the doubling redial delay. Default 2000 ms. */
  reconnectDelayMsMax?: number
  /** Limit for one dial plus protocol negotiation. Default 5000 ms. */
  dialTimeoutMs?: number
  /** Most bytes coalesced into one stream.send(). Default 64 KiB. */
  batchBytesMax?: number
  /** Wait this long for a stream to flush on stop() before resetting it. Default 1000 ms. */
  closeTimeoutMs?: number
}

// Frames queued before an early (synchronous) flush; below it, the
// end-of-tick microtask flushes, so one Raft Ready becomes one write.
const EARLY_FLUSH_FRAMES = 256
// A queue's array is compacted when this many consumed slots lead it.
const QUEUE_COMPACT_SLOTS = 1024
// libp2p limits per connection; a peer needs one stream (a second one
// briefly, while a replaced stream is being torn down).
const STREAMS_PER_CONNECTION_MAX = 4

interface PeerState {
  readonly id: string
  addrs: Multiaddr[]
  removed: boolean
  // Send queue: frames[head..] are waiting.
  frames: Uint8Array[]
  head: number
  queuedBytes: number
  fullReported: boolean
  stream: Stream | undefined
  streamOpenedAtMs: number
  needsDrain: boolean
  flushScheduled: boolean
  deferredFlushScheduled: boolean
  dialAbort: AbortController | undefined
  retryTimer: ReturnType<typeof setTimeout> | undefined
  failures: number
  inbound: Stream | undefined
  sentFrames: number
  receivedFrames: number
  dropped: number
}

export class Libp2pFrameTransport implements MemberFrameTransport {
  readonly #node: Libp2pFrameTransportComponents
  readonly #options: ResolvedFrameTransportOptions
  readonly #protocol: string
  readonly #delayMsMin: number
  readonly #delayMsMax: number
  readonly #dialTimeoutMs: number
  readonly #batchBytesMax: number
  readonly #closeTimeoutMs: number
  readonly #selfId: string
  readonly #peers = new Map<string, PeerState>()
  #handler: ((from: string, frame: Uint8Array) => void) | undefined
  #started = false
  #stopped = false

  constructor(node: Libp2pFrameTransportComponents, options: Libp2pFrameTransportOptions = {}) {
    this.#node = node
    this.#options = resolveFrameTransportOptions(options)
    this.#protocol = options.protocol ?? RAFT_PROTOCOL
    this.#delayMsMin = options.reconnectDelayMsMin ?? 50
    this.#delayMsMax = options.reconnectDelayMsMax ?? 2000
    this.#dialTimeoutMs = options.dialTimeoutMs ?? 5000
    this.#batchBytesMax = options.batchBytesMax ?? 64 * 1024
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 1000
    checkInteger('reconnectDelayMsMin', this.#delayMsMin, 1, 60_000)
    checkInteger('reconnectDelayMsMax', this.#delayMsMax, this.#delayMsMin, 600_000)
    checkInteger('dialTimeoutMs', this.#dialTimeoutMs, 1, 600_000)
    checkInteger('batchBytesMax', this.#batchBytesMax, 1024, 16 * 1024 * 1024)
    checkInteger('closeTimeoutMs', this.#closeTimeoutMs, 0, 60_000)
    if (!this.#protocol.startsWith('/')) throw new NetConfigError('protocol must start with "/".')
    this.#selfId = node.peerId.toString()
  }

  /** Registers the protocol handler; frames are accepted from then on. */
  async start(): Promise<void> {
    if (this.#stopped) throw new TransportStoppedError()
    if (this.#started) return
    this.#started = true
    await this.#node.handle(
      this.#protocol,
      (stream, connection) => {
        this.#onInboundStream(stream, connection)
      },
      {
        maxInboundStreams: STREAMS_PER_CONNECTION_MAX,
        maxOutboundStreams: STREAMS_PER_CONNECTION_MAX,
      },
    )
    for (const peer of this.#peers.values()) this.#connect(peer)
  }

  /**
   * Keeps a stream open to every member, not only to those we have frames
   * for: after a leader dies, the first pre-vote must not wait for a dial
   * and a handshake (that delay split votes in the failover benchmark).
   */
  #connect(peer: PeerState): void {
    if (!this.#started || this.#stopped || peer.removed) return
    if (peer.stream !== undefined || peer.dialAbort !== undefined || peer.retryTimer !== undefined) return
    void this.#dial(peer)
  }

  onFrame(handler: (from: string, frame: Uint8Array) => void): void {
    this.#handler = handler
  }

  setPeers(peers: readonly PeerAddress[]): void {
    if (this.#stopped) return
    // Validate everything before changing anything.
    const next = new Map<string, Multiaddr[]>()
    for (const peer of peers) {
      if (peer.id === this.#selfId) continue
      next.set(peer.id, dialAddresses(peer))
    }
    for (const [id, state] of this.#peers) {
      if (!next.has(id)) this.#removePeer(state)
    }
    for (const [id, addrs] of next) {
      const state = this.#peers.get(id)
      if (state !== undefined) {
        state.addrs = addrs
        continue
      }
      const added = newPeerState(id, addrs)
      this.#peers.set(id, added)
      this.#connect(added)
    }
  }

  send(to: string, frame: Uint8Array, options?: SendOptions): boolean {
    if (this.#stopped) return false
    const peer = this.#peers.get(to)
    if (peer === undefined) {
      this.#report({
        type: 'not-member',
        peer: to,
        message: 'send to a peer outside the peer set',
        error: new NotMemberError(to, 'to'),
      })
      return false
    }
    if (frame.byteLength > this.#options.frameBytesMax) {
      peer.dropped++
      const error = new FrameTooLargeError(frame.byteLength, this.#options.frameBytesMax)
      this.#report({ type: 'frame-too-large', peer: to, message: error.message, error })
      return false
    }
    const queuedFrames = peer.frames.length - peer.head
    if (
      queuedFrames >= this.#options.queueFramesMax ||
      peer.queuedBytes + frame.byteLength > this.#options.queueBytesMax
    ) {
      peer.dropped++
      // One report per episode: a full queue under load would otherwise log every frame.
      if (!peer.fullReported) {
        peer.fullReported = true
        const error = new QueueFullError(to, this.#options.queueFramesMax, this.#options.queueBytesMax)
        this.#report({ type: 'queue-full', peer: to, message: error.message, error })
      }
      return false
    }
    peer.fullReported = false
    peer.frames.push(frame)
    peer.queuedBytes += frame.byteLength
    if (peer.stream === undefined) {
      if (peer.dialAbort === undefined && peer.retryTimer === undefined) void this.#dial(peer)
      return true
    }
    if (peer.needsDrain) return true
    if (queuedFrames + 1 >= EARLY_FLUSH_FRAMES || peer.queuedBytes >= this.#batchBytesMax) {
      this.#flush(peer)
    } else if (options?.deferrable === true) {
      if (!peer.flushScheduled && !peer.deferredFlushScheduled) {
        peer.deferredFlushScheduled = true
        setImmediate(() => {
          peer.deferredFlushScheduled = false
          this.#flush(peer)
        })
      }
    } else if (!peer.flushScheduled) {
      peer.flushScheduled = true
      queueMicrotask(() => {
        peer.flushScheduled = false
        this.#flush(peer)
      })
    }
    return true
  }

  stats(): Record<string, PeerStats> {
    const result: Record<string, PeerStats> = {}
    for (const [id, peer] of this.#peers) {
      result[id] = {
        queuedFrames: peer.frames.length - peer.head,
        queuedBytes: peer.queuedBytes,
        sentFrames: peer.sentFrames,
        receivedFrames: peer.receivedFrames,
        dropped: peer.dropped,
        connected: peer.stream !== undefined,
      }
    }
    return result
  }

  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    const closing: Promise<void>[] = []
    for (const peer of this.#peers.values()) {
      peer.removed = true
      this.#cancelConnecting(peer)
      const outbound = peer.stream
      peer.stream = undefined
      if (outbound !== undefined) closing.push(closeStream(outbound, this.#closeTimeoutMs))
      peer.inbound?.abort(new TransportStoppedError())
      peer.inbound = undefined
    }
    this.#peers.clear()
    if (this.#started) {
      try {
        await this.#node.unhandle(this.#protocol)
      } catch {
        // The node may already be stopped; nothing is left to unregister.
      }
    }
    await Promise.all(closing)
  }

  #removePeer(peer: PeerState): void {
    peer.removed = true
    this.#peers.delete(peer.id)
    this.#cancelConnecting(peer)
    const error = new NotMemberError(peer.id, 'to')
    peer.stream?.abort(error)
    peer.stream = undefined
    peer.inbound?.abort(error)
    peer.inbound = undefined
    peer.frames = []
    peer.head = 0
    peer.queuedBytes = 0
  }

  #cancelConnecting(peer: PeerState): void {
    if (peer.retryTimer !== undefined) clearTimeout(peer.retryTimer)
    peer.retryTimer = undefined
    peer.dialAbort?.abort(new TransportStoppedError())
    peer.dialAbort = undefined
  }

  // ---- outbound ----------------------------------------------------------

  async #dial(peer: PeerState): Promise<void> {
    const abort = new AbortController()
    peer.dialAbort = abort
    const signal = AbortSignal.any([abort.signal, AbortSignal.timeout(this.#dialTimeoutMs)])
    let stream: Stream
    try {
      // Without addresses, the peer store may still know the peer (it dialed us).
      const target = peer.addrs.length > 0 ? peer.addrs : peerIdFromString(peer.id)
      stream = await this.#node.dialProtocol(target, this.#protocol, { signal })
    } catch (err) {
      if (peer.dialAbort !== abort) return // removed or stopped meanwhile
      peer.dialAbort = undefined
      peer.failures++
      const retryInMs = this.#scheduleRetry(peer)
      this.#report({
        type: 'dial-failed',
        peer: peer.id,
        message: `dial failed (attempt ${peer.failures})`,
        error: new DialError(peer.id, { cause: err }),
        retryInMs,
      })
      return
    }
    if (peer.dialAbort !== abort) {
      stream.abort(new TransportStoppedError())
      return
    }
    peer.dialAbort = undefined
    peer.stream = stream
    peer.streamOpenedAtMs = Date.now()
    peer.needsDrain = false
    stream.addEventListener('drain', () => {
      if (peer.stream !== stream) return
      peer.needsDrain = false
      this.#flush(peer)
    })
    stream.addEventListener('close', (event: StreamCloseEvent) => {
      this.#onOutboundClosed(peer, stream, event.error)
    })
    // The remote never writes on our outbound stream; discard anything it
    // sends so it cannot pile up in the read buffer.
    stream.addEventListener('message', () => {})
    this.#report({ type: 'connected', peer: peer.id, message: 'outbound stream open' })
    this.#flush(peer)
  }

  #onOutboundClosed(peer: PeerState, stream: Stream, error: Error | undefined): void {
    if (peer.stream !== stream) return
    peer.stream = undefined
    peer.needsDrain = false
    if (peer.removed || this.#stopped) return
    // A stream that lived long enough counts as a success; one that dies
    // right after opening (a peer that rejects us) keeps doubling the delay.
    if (Date.now() - peer.streamOpenedAtMs >= this.#delayMsMax) peer.failures = 0
    peer.failures++
    const retryInMs = this.#scheduleRetry(peer)
    this.#report({
      type: 'disconnected',
      peer: peer.id,
      message: error === undefined ? 'outbound stream closed' : `outbound stream closed: ${error.message}`,
      ...(error === undefined ? {} : { error }),
      retryInMs,
    })
  }

  /** Arms the redial timer: members are redialled with bounded back-off until removed. */
  #scheduleRetry(peer: PeerState): number {
    const exponent = Math.min(peer.failures - 1, 30)
    const capped = Math.min(this.#delayMsMax, this.#delayMsMin * 2 ** exponent)
    // Jitter keeps two nodes that lost each other from redialing in lockstep.
    const delayMs = Math.max(this.#delayMsMin, Math.round(capped * (0.75 + Math.random() * 0.25)))
    peer.retryTimer = setTimeout(() => {
      peer.retryTimer = undefined
      if (peer.removed || this.#stopped || peer.stream !== undefined) return
      void this.#dial(peer)
    }, delayMs)
    return delayMs
  }

  /** Writes waiting frames until the queue is empty or the stream needs a drain. */
  #flush(peer: PeerState): void {
    const stream = peer.stream
    if (stream === undefined || peer.needsDrain) return
    while (peer.head < peer.frames.length) {
      const { chunk, count, bytes } = this.#takeBatch(peer)
      peer.queuedBytes -= bytes
      let canSendMore: boolean
      try {
        canSendMore = stream.send(chunk)
      } catch (err) {
        // The stream closed under us; these frames are lost (Raft resends).
        const error = err instanceof Error ? err : new Error(String(err))
        peer.dropped += count
        this.#onOutboundClosed(peer, stream, error)
        stream.abort(error)
        return
      }
      peer.sentFrames += count
      if (!canSendMore) {
        // The chunk is buffered by the stream; wait for 'drain' before more.
        peer.needsDrain = true
        return
      }
    }
  }

  /** Dequeues one write's worth: many small frames in one buffer, or one big frame. */
  #takeBatch(peer: PeerState): { chunk: Uint8Array | Uint8ArrayList; count: number; bytes: number } {
    const first = peer.frames[peer.head]!
    if (varintLength(first.byteLength) + first.byteLength >= this.#batchBytesMax) {
      this.#dequeue(peer, 1)
      const prefix = new Uint8Array(varintLength(first.byteLength))
      writeVarint(first.byteLength, prefix, 0)
      return { chunk: new Uint8ArrayList(prefix, first), count: 1, bytes: first.byteLength }
    }
    let end = peer.head
    let encodedBytes = 0
    let bytes = 0
    while (end < peer.frames.length) {
      const frame = peer.frames[end]!
      const size = varintLength(frame.byteLength) + frame.byteLength
      if (encodedBytes + size > this.#batchBytesMax) break
      encodedBytes += size
      bytes += frame.byteLength
      end++
    }
    const chunk = encodeFrames(peer.frames.slice(peer.head, end))
    const count = end - peer.head
    this.#dequeue(peer, count)
    return { chunk, count, bytes }
  }

  #dequeue(peer: PeerState, count: number): void {
    for (let i = peer.head; i < peer.head + count; i++) peer.frames[i] = EMPTY
    peer.head += count
    if (peer.head === peer.frames.length) {
      peer.frames = []
      peer.head = 0
    } else if (peer.head >= QUEUE_COMPACT_SLOTS && peer.head * 2 >= peer.frames.length) {
      peer.frames = peer.frames.slice(peer.head)
      peer.head = 0
    }
  }

  // ---- inbound -----------------------------------------------------------

  #onInboundStream(stream: Stream, connection: Connection): void {
    const from = connection.remotePeer.toString()
    const peer = this.#peers.get(from)
    if (peer === undefined || this.#stopped) {
      const error = this.#stopped ? new TransportStoppedError() : new NotMemberError(from, 'from')
      this.#report({
        type: 'not-member',
        peer: from,
        message: 'refused a stream from a peer outside the peer set',
        error,
      })
      stream.abort(error)
      return
    }
    // The sender keeps one outbound stream per peer, so a new one means the
    // old one is dead on its side; drop ours too.
    peer.inbound?.abort(new NetError('ERR_STREAM_REPLACED', `A newer stream from ${from} replaced this one.`))
    peer.inbound = stream
    const decoder = new FrameDecoder(this.#options.frameBytesMax)
    const deliver = (frame: Uint8Array): void => {
      // The handler may remove the sender while a chunk is being parsed.
      if (peer.removed) return
      peer.receivedFrames++
      const handler = this.#handler
      if (handler === undefined) return
      try {
        handler(from, frame)
      } catch (err) {
        this.#report({
          type: 'handler-error',
          peer: from,
          message: 'the frame handler threw',
          error: err instanceof Error ? err : new Error(String(err)),
        })
      }
    }
    stream.addEventListener('message', (event: StreamMessageEvent) => {
      if (peer.removed || peer.inbound !== stream) return
      try {
        decoder.push(event.data, deliver)
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err))
        const type = error instanceof FrameTooLargeError ? 'frame-too-large' : 'protocol-error'
        this.#report({ type, peer: from, message: `reset the inbound stream: ${error.message}`, error })
        peer.inbound = undefined
        stream.abort(error)
      }
    })
    stream.addEventListener('close', () => {
      if (peer.inbound === stream) peer.inbound = undefined
    })
  }

  #report(event: TransportEvent): void {
    this.#options.onEvent(event)
  }
}

const EMPTY = new Uint8Array(0)

function newPeerState(id: string, addrs: Multiaddr[]): PeerState {
  return {
    id,
    addrs,
    removed: false,
    frames: [],
    head: 0,
    queuedBytes: 0,
    fullReported: false,
    stream: undefined,
    streamOpenedAtMs: 0,
    needsDrain: false,
    flushScheduled: false,
    deferredFlushScheduled: false,
    dialAbort: undefined,
    retryTimer: undefined,
    failures: 0,
    inbound: undefined,
    sentFrames: 0,
    receivedFrames: 0,
    dropped: 0,
  }
}

/** Multiaddrs ending in /p2p/<id>, so a dial checks the remote identity and reuses open connections. */
function dialAddresses(peer: PeerAddress): Multiaddr[] {
  try {
    peerIdFromString(peer.id)
  } catch (err) {
    throw new NetConfigError(`The peer id "${peer.id}" is not a valid libp2p PeerId.`, { cause: err })
  }
  return peer.addrs.map((address) => {
    const addr = toMultiaddr(address)
    const named = addr.getComponents().findLast((component) => component.name === 'p2p')?.value
    if (named === undefined) return addr.encapsulate(`/p2p/${peer.id}`)
    if (named !== peer.id) {
      throw new NetConfigError(`The address "${address}" names peer ${named}, not ${peer.id}.`)
    }
    return addr
  })
}

async function closeStream(stream: Stream, timeoutMs: number): Promise<void> {
  try {
    await stream.close({ signal: AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
  }
}
