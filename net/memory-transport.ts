// An in-process network of frame transports with the same behaviour as the
// libp2p one, for tests and simulations: peer sets, bounded per-peer queues,
// frames held while the peer is down and delivered when it comes back, and
// asynchronous delivery (never inside send(), like a real network). The
// network adds fault hooks: partitions between two ids, random loss from an
// injectable random source, and a delivery delay.

import { FrameTooLargeError, NetConfigError, NotMemberError, QueueFullError } from './errors.ts'
import {
  type FrameTransportOptions,
  type MemberFrameTransport,
  type PeerAddress,
  type PeerStats,
  type ResolvedFrameTransportOptions,
  resolveFrameTransportOptions,
  type TransportEvent,
} from './frame-transport-types.ts'

export interface MemoryNetworkOptions {
  /** Source of randomness for drops; pass a seeded one for reproducible runs. Default Math.random. */
  random?: () => number
}

/** How a transport and its network reach each other (internal to this module). */
export interface NetworkPort {
  /** Called once by the transport's constructor. */
  attach(endpoint: Endpoint): void
  isUp(id: string): boolean
  transmit(from: string, to: string, frames: Uint8Array[]): void
  detach(id: string, transport: MemoryFrameTransport): void
}

interface Endpoint {
  transport: MemoryFrameTransport
  receive(from: string, frame: Uint8Array): void
  peerUp(id: string): void
}

export class MemoryNetwork {
  readonly #endpoints = new Map<string, Endpoint>()
  readonly #partitions = new Set<string>()
  readonly #timers = new Set<ReturnType<typeof setTimeout>>()
  readonly #random: () => number
  #dropRate = 0
  #delayMs = 0
  #faultDrops = 0

  constructor(options: MemoryNetworkOptions = {}) {
    this.#random = options.random ?? Math.random
  }

  /** Creates the endpoint for `id`. The id must not have a running endpoint. */
  createTransport(id: string, options: FrameTransportOptions = {}): MemoryFrameTransport {
    if (id === '') throw new NetConfigError('A memory transport needs a non-empty id.')
    if (this.#endpoints.has(id)) {
      throw new NetConfigError(`A transport for ${id} is already running; stop it before creating another.`)
    }
    const slot: { endpoint?: Endpoint } = {}
    const port: NetworkPort = {
      attach: (attached) => {
        slot.endpoint = attached
      },
      isUp: (peer) => this.#endpoints.has(peer),
      transmit: (from, to, frames) => this.#transmit(from, to, frames),
      detach: (peer, transport) => {
        if (this.#endpoints.get(peer)?.transport === transport) this.#endpoints.delete(peer)
      },
    }
    const transport = new MemoryFrameTransport(id, port, options)
    const endpoint = slot.endpoint
    if (endpoint === undefined) throw new Error('MemoryFrameTransport did not attach to its network')
    this.#endpoints.set(id, endpoint)
    for (const [other, peerEndpoint] of this.#endpoints) {
      if (other !== id) peerEndpoint.peerUp(id)
    }
    return transport
  }

  /** Drops every frame between `a` and `b`, both ways, until healed. */
  partition(a: string, b: string): void {
    this.#partitions.add(linkKey(a, b))
  }

  heal(a: string, b: string): void {
    this.#partitions.delete(linkKey(a, b))
  }

  healAll(): void {
    this.#partitions.clear()
  }

  /** Drops each frame with this probability (0 to 1). */
  setDropRate(rate: number): void {
    if (!(rate >= 0 && rate <= 1))
      throw new NetConfigError(`The drop rate must be between 0 and 1; got ${rate}.`)
    this.#dropRate = rate
  }

  /** Delays every delivery by this many milliseconds (0: next microtask). */
  setDelayMs(delayMs: number): void {
    if (!(Number.isInteger(delayMs) && delayMs >= 0)) {
      throw new NetConfigError(`The delay must be a whole number of milliseconds; got ${delayMs}.`)
    }
    this.#delayMs = delayMs
  }

  /** Frames lost to partitions, random drops, or a peer that went down while they were in flight. */
  get faultDrops(): number {
    return this.#faultDrops
  }

  /** Stops every endpoint and cancels delayed deliveries. */
  async close(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    await Promise.all([...this.#endpoints.values()].map((endpoint) => endpoint.transport.stop()))
    this.#endpoints.clear()
  }

  #transmit(from: string, to: string, frames: Uint8Array[]): void {
    let passing = frames
    if (this.#partitions.has(linkKey(from, to))) {
      this.#faultDrops += frames.length
      return
    }
    if (this.#dropRate > 0) {
      passing = frames.filter(() => this.#random() >= this.#dropRate)
      this.#faultDrops += frames.length - passing.length
    }
    if (this.#delayMs === 0) {
      this.#deliver(from, to, passing)
      return
    }
    // Equal delays fire in order, so one link stays FIFO.
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      this.#deliver(from, to, passing)
    }, this.#delayMs)
    this.#timers.add(timer)
  }

  #deliver(from: string, to: string, frames: Uint8Array[]): void {
    const endpoint = this.#endpoints.get(to)
    if (endpoint === undefined) {
      this.#faultDrops += frames.length
      return
    }
    for (const frame of frames) endpoint.receive(from, frame)
  }
}

interface MemoryPeerState {
  frames: Uint8Array[]
  queuedBytes: number
  fullReported: boolean
  flushScheduled: boolean
  sentFrames: number
  receivedFrames: number
  dropped: number
}

export class MemoryFrameTransport implements MemberFrameTransport {
  readonly id: string
  readonly #port: NetworkPort
  readonly #options: ResolvedFrameTransportOptions
  readonly #peers = new Map<string, MemoryPeerState>()
  #handler: ((from: string, frame: Uint8Array) => void) | undefined
  #stopped = false

  /** Use MemoryNetwork.createTransport(). */
  constructor(id: string, port: NetworkPort, options: FrameTransportOptions) {
    this.id = id
    this.#port = port
    this.#options = resolveFrameTransportOptions(options)
    port.attach({
      transport: this,
      receive: (from, frame) => this.#receive(from, frame),
      peerUp: (peer) => {
        const state = this.#peers.get(peer)
        if (state !== undefined && state.frames.length > 0) this.#scheduleFlush(peer, state)
      },
    })
  }

  onFrame(handler: (from: string, frame: Uint8Array) => void): void {
    this.#handler = handler
  }

  setPeers(peers: readonly PeerAddress[]): void {
    if (this.#stopped) return
    const next = new Set(peers.map((peer) => peer.id).filter((id) => id !== this.id))
    for (const id of this.#peers.keys()) {
      if (!next.has(id)) this.#peers.delete(id)
    }
    for (const id of next) {
      if (!this.#peers.has(id)) {
        this.#peers.set(id, {
          frames: [],
          queuedBytes: 0,
          fullReported: false,
          flushScheduled: false,
          sentFrames: 0,
          receivedFrames: 0,
          dropped: 0,
        })
      }
    }
  }

  send(to: string, frame: Uint8Array): boolean {
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
    if (
      peer.frames.length >= this.#options.queueFramesMax ||
      peer.queuedBytes + frame.byteLength > this.#options.queueBytesMax
    ) {
      peer.dropped++
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
    this.#scheduleFlush(to, peer)
    return true
  }

  stats(): Record<string, PeerStats> {
    const result: Record<string, PeerStats> = {}
    for (const [id, peer] of this.#peers) {
      result[id] = {
        queuedFrames: peer.frames.length,
        queuedBytes: peer.queuedBytes,
        sentFrames: peer.sentFrames,
        receivedFrames: peer.receivedFrames,
        dropped: peer.dropped,
        connected: this.#port.isUp(id),
      }
    }
    return result
  }

  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    this.#peers.clear()
    this.#port.detach(this.id, this)
  }

  #scheduleFlush(to: string, peer: MemoryPeerState): void {
    if (peer.flushScheduled) return
    peer.flushScheduled = true
    queueMicrotask(() => {
      peer.flushScheduled = false
      // Frames wait while the peer is down, like a transport that redials.
      if (this.#stopped || this.#peers.get(to) !== peer || !this.#port.isUp(to)) return
      const frames = peer.frames
      peer.frames = []
      peer.queuedBytes = 0
      peer.sentFrames += frames.length
      this.#port.transmit(this.id, to, frames)
    })
  }

  #receive(from: string, frame: Uint8Array): void {
    if (this.#stopped) return
    const peer = this.#peers.get(from)
    if (peer === undefined) {
      this.#report({
        type: 'not-member',
        peer: from,
        message: 'dropped a frame from a peer outside the peer set',
        error: new NotMemberError(from, 'from'),
      })
      return
    }
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

  #report(event: TransportEvent): void {
    this.#options.onEvent(event)
  }
}

function linkKey(a: string, b: string): string {
  return a < b ? `${a}\n${b}` : `${b}\n${a}`
}
