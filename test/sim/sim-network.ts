// The network in the simulator: one FrameTransport endpoint per node
// incarnation, frames carried as bytes (the driver's own encoding) with a
// random one-way delay (a minimum plus an exponential part, so frames
// reorder), loss, duplication, a per-path capacity, clogged paths (frames
// held until the clog clears), directed cuts (symmetric and asymmetric
// partitions) and, rarely, corruption. A corrupted frame is delivered only
// when it no longer decodes, to check that the driver drops it; one that still
// decodes into another valid message is dropped instead, as a real transport's
// MAC (noise) would, since Raft does not defend against forged messages.

import { decodeMessage } from '../../consensus/codec.ts'
import { DecodeError } from '../../consensus/errors.ts'
import type { FrameTransport } from '../../consensus/transport.ts'
import { EventKind, type EventQueue } from './event-queue.ts'
import type { SimRandom } from './sim-random.ts'

export interface NetworkOptions {
  delayMinMs: number
  /** Mean of the exponential part of the one-way delay. */
  delayMeanMs: number
  lossProbability: number
  duplicateProbability: number
  corruptProbability: number
  /** Frames in flight on one directed path; beyond it frames are dropped (a full queue). */
  pathCapacityMax: number
}

export interface NetworkStats {
  sent: number
  delivered: number
  dropped: number
  duplicated: number
  corruptedDelivered: number
  corruptedDropped: number
  /** Decoder failures that were not a DecodeError: a codec bug. */
  decoderCrashes: string[]
}

/** Largest frame the simulator's corruption check decodes (bigger than any the driver sends). */
const DECODE_CHECK_BYTES_MAX = 64 * 1024 * 1024

interface Endpoint {
  incarnation: number
  handler: ((from: string, frame: Uint8Array) => void) | null
  /** A paused process reads no frame before this virtual time; they wait in its socket. */
  pausedUntilMs: number
}

export class SimNetwork {
  private readonly queue: EventQueue
  private readonly random: SimRandom
  options: NetworkOptions
  private readonly endpoints = new Map<string, Endpoint>()
  /** Directed cuts "from>to": every frame on them is dropped. */
  private readonly cuts = new Set<string>()
  /** Directed clogs "from>to" -> virtual time they clear. */
  private readonly clogs = new Map<string, number>()
  private readonly inFlight = new Map<string, number>()
  /** When false, loss, duplication, corruption and clogs are off (the liveness phase). */
  faultsEnabled = true
  readonly stats: NetworkStats = {
    sent: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    corruptedDelivered: 0,
    corruptedDropped: 0,
    decoderCrashes: [],
  }

  constructor(queue: EventQueue, random: SimRandom, options: NetworkOptions) {
    this.queue = queue
    this.random = random
    this.options = options
  }

  /** Registers a node id so frames to it are accepted (even while it is down). */
  addNode(id: string): void {
    if (!this.endpoints.has(id)) this.endpoints.set(id, { incarnation: 0, handler: null, pausedUntilMs: 0 })
  }

  /** A transport for a new incarnation of `id`; the previous one goes dead. */
  attach(id: string): FrameTransport {
    this.addNode(id)
    const endpoint = this.endpoints.get(id)!
    const incarnation = ++endpoint.incarnation
    endpoint.handler = null
    return {
      send: (to, frame) => (endpoint.incarnation === incarnation ? this.send(id, to, frame) : false),
      onFrame: (handler) => {
        if (endpoint.incarnation === incarnation) endpoint.handler = handler
      },
    }
  }

  /** The node crashed: its transport is dead and frames to it are lost until it restarts. */
  detach(id: string): void {
    const endpoint = this.endpoints.get(id)
    if (endpoint === undefined) return
    endpoint.incarnation++
    endpoint.handler = null
  }

  pause(id: string, untilMs: number): void {
    const endpoint = this.endpoints.get(id)
    if (endpoint !== undefined) endpoint.pausedUntilMs = untilMs
  }

  cut(from: string, to: string): void {
    this.cuts.add(`${from}>${to}`)
  }

  isCut(from: string, to: string): boolean {
    return this.cuts.has(`${from}>${to}`)
  }

  get partitioned(): boolean {
    return this.cuts.size > 0
  }

  clog(from: string, to: string, untilMs: number): void {
    this.clogs.set(`${from}>${to}`, untilMs)
  }

  /** Removes every cut and clog. */
  heal(): void {
    this.cuts.clear()
    this.clogs.clear()
  }

  healCuts(): void {
    this.cuts.clear()
  }

  private send(from: string, to: string, frame: Uint8Array): boolean {
    if (!this.endpoints.has(to) || to === from) return false
    this.stats.sent++
    const path = `${from}>${to}`
    if (this.cuts.has(path)) {
      this.stats.dropped++
      return true
    }
    if (this.faultsEnabled && this.random.chance(this.options.lossProbability)) {
      this.stats.dropped++
      return true
    }
    let copies = 1
    if (this.faultsEnabled && this.random.chance(this.options.duplicateProbability)) {
      copies = 2
      this.stats.duplicated++
    }
    for (let copy = 0; copy < copies; copy++) {
      let bytes = copy === 0 ? frame : new Uint8Array(frame)
      if (this.faultsEnabled && this.random.chance(this.options.corruptProbability)) {
        const corrupted = this.corrupt(bytes)
        if (corrupted === null) {
          this.stats.corruptedDropped++
          continue
        }
        bytes = corrupted
        this.stats.corruptedDelivered++
      }
      const inFlight = this.inFlight.get(path) ?? 0
      if (inFlight >= this.options.pathCapacityMax) {
        this.stats.dropped++
        continue
      }
      this.inFlight.set(path, inFlight + 1)
      let atMs =
        this.queue.nowMs + this.options.delayMinMs + this.random.exponential(this.options.delayMeanMs)
      const clearsMs = this.faultsEnabled ? this.clogs.get(path) : undefined
      if (clearsMs !== undefined) {
        if (clearsMs <= this.queue.nowMs) this.clogs.delete(path)
        else atMs = Math.max(atMs, clearsMs + this.random.exponential(this.options.delayMeanMs))
      }
      const payload = bytes
      this.queue.at(atMs, EventKind.Deliver, () => this.deliver(from, to, path, payload))
    }
    return true
  }

  private deliver(from: string, to: string, path: string, frame: Uint8Array): void {
    const endpoint = this.endpoints.get(to)
    if (endpoint !== undefined && this.queue.nowMs < endpoint.pausedUntilMs) {
      // Held in the socket until the process runs again (in arrival order).
      this.queue.at(endpoint.pausedUntilMs, EventKind.Deliver, () => this.deliver(from, to, path, frame))
      return
    }
    this.inFlight.set(path, (this.inFlight.get(path) ?? 1) - 1)
    // A partition that started while the frame was in flight drops it too.
    if (endpoint?.handler == null || this.cuts.has(path)) {
      this.stats.dropped++
      return
    }
    this.stats.delivered++
    this.queue.mix(frame.length)
    endpoint.handler(from, frame)
  }

  /** A damaged copy that no longer decodes, or null when the damage left a valid message. */
  private corrupt(frame: Uint8Array): Uint8Array | null {
    let damaged: Uint8Array
    if (frame.length > 1 && this.random.chance(0.5)) {
      damaged = frame.slice(0, this.random.int(frame.length))
    } else {
      damaged = new Uint8Array(frame)
      const position = this.random.int(damaged.length)
      damaged[position] = damaged[position]! ^ (1 << this.random.int(8))
    }
    try {
      decodeMessage(damaged, { bytesMax: DECODE_CHECK_BYTES_MAX })
      return null
    } catch (error) {
      if (!(error instanceof DecodeError)) {
        this.stats.decoderCrashes.push(`${(error as Error).name}: ${(error as Error).message}`)
      }
      return damaged
    }
  }
}
