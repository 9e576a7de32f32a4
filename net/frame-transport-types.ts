// The shape shared by every frame transport in net/ (libp2p and in-memory):
// the FrameTransport that consensus/ consumes, plus membership, statistics,
// structured events and the common limits. net/ never imports consensus/, so
// FrameTransport is restated here; TypeScript matches it structurally.

import { NetConfigError } from './errors.ts'
import { FRAME_BYTES_LIMIT } from './frame-codec.ts'

export interface SendOptions {
  /**
   * Nothing waits for this frame: it may leave at the end of the current turn
   * of the event loop rather than right after the caller's synchronous work,
   * so writing it does not delay what the caller does next. It still leaves
   * after every frame sent to the same peer before it.
   */
  deferrable?: boolean
}

/** What consensus/transport.ts expects (same shape). */
export interface FrameTransport {
  /** Queues one frame for `to`; false when it was dropped. The caller must not modify `frame` afterwards. */
  send(to: string, frame: Uint8Array, options?: SendOptions): boolean
  /** Installs the single receiver of frames from peers. */
  onFrame(handler: (from: string, frame: Uint8Array) => void): void
}

/** One member: its PeerId string and where to dial it (HOST:PORT or multiaddrs). */
export interface PeerAddress {
  id: string
  addrs: string[]
}

export interface PeerStats {
  /** Frames waiting in our queue (not yet handed to the stream). */
  queuedFrames: number
  queuedBytes: number
  /** Frames handed to the stream (or, in memory, delivered to the network). */
  sentFrames: number
  receivedFrames: number
  /** Frames refused or lost by this transport (queue full, broken stream). */
  dropped: number
  /** An outbound stream (or, in memory, a live endpoint) exists. */
  connected: boolean
}

export type TransportEventType =
  | 'connected'
  | 'disconnected'
  | 'dial-failed'
  | 'queue-full'
  | 'frame-too-large'
  | 'not-member'
  | 'protocol-error'
  | 'handler-error'

/** A structured log record; `error` carries a NetError (with `code`) when there is one. */
export interface TransportEvent {
  type: TransportEventType
  /** The peer concerned ('' when not known). */
  peer: string
  message: string
  error?: Error
  /** Back-off before the next dial, for 'dial-failed' and 'disconnected'. */
  retryInMs?: number
}

/** A FrameTransport restricted to a peer set, with statistics and a stop. */
export interface MemberFrameTransport extends FrameTransport {
  /** Replaces the peer set; removed peers lose their streams and queued frames. */
  setPeers(peers: readonly PeerAddress[]): void
  /** Per-peer counters, keyed by PeerId. */
  stats(): Record<string, PeerStats>
  /** Closes streams and cancels timers; the transport cannot be restarted. */
  stop(): Promise<void>
}

export interface FrameTransportOptions {
  /** Largest frame accepted in either direction. Default 4 MiB. */
  frameBytesMax?: number
  /** Per-peer send queue limit in frames. Default 4096. */
  queueFramesMax?: number
  /** Per-peer send queue limit in bytes. Default 64 MiB. */
  queueBytesMax?: number
  /** Receives structured events (drops, resets, reconnects) for logging. */
  onEvent?: (event: TransportEvent) => void
}

export const FRAME_BYTES_MAX_DEFAULT = 4 * 1024 * 1024
export const QUEUE_FRAMES_MAX_DEFAULT = 4096
export const QUEUE_BYTES_MAX_DEFAULT = 64 * 1024 * 1024

export interface ResolvedFrameTransportOptions {
  frameBytesMax: number
  queueFramesMax: number
  queueBytesMax: number
  onEvent: (event: TransportEvent) => void
}

export function resolveFrameTransportOptions(options: FrameTransportOptions): ResolvedFrameTransportOptions {
  const frameBytesMax = options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT
  const queueFramesMax = options.queueFramesMax ?? QUEUE_FRAMES_MAX_DEFAULT
  const queueBytesMax = options.queueBytesMax ?? QUEUE_BYTES_MAX_DEFAULT
  checkInteger('frameBytesMax', frameBytesMax, 1, FRAME_BYTES_LIMIT)
  checkInteger('queueFramesMax', queueFramesMax, 1, 2 ** 24)
  checkInteger('queueBytesMax', queueBytesMax, frameBytesMax, 2 ** 40)
  const onEvent = options.onEvent
  return {
    frameBytesMax,
    queueFramesMax,
    queueBytesMax,
    // A throwing logger must not break the transport.
    onEvent: (event) => {
      if (onEvent === undefined) return
      try {
        onEvent(event)
      } catch {}
    },
  }
}

export function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new NetConfigError(`${name} must be an integer between ${min} and ${max}; got ${value}.`)
  }
}
