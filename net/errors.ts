// Errors of the net layer. Each has a stable `code`; callers switch on it.
// Transport errors are mostly reported through the `onEvent` callback rather
// than thrown, because Raft treats a lost frame as normal and retries.

export class NetError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'NetError'
    this.code = code
  }
}

/** An option or argument is invalid; the message names it. */
export class NetConfigError extends NetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NET_CONFIG', message, options)
    this.name = 'NetConfigError'
  }
}

/** A listen or peer address is neither `HOST:PORT` nor a multiaddr. */
export class InvalidAddressError extends NetError {
  constructor(address: string, options?: { cause?: unknown }) {
    super(
      'ERR_INVALID_ADDRESS',
      `The address "${address}" is not valid; give HOST:PORT (e.g. 127.0.0.1:7000) or a multiaddr (e.g. /ip4/127.0.0.1/tcp/7000).`,
      options,
    )
    this.name = 'InvalidAddressError'
  }
}

/** The identity bytes do not decode to an Ed25519 private key. */
export class InvalidIdentityError extends NetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_IDENTITY', message, options)
    this.name = 'InvalidIdentityError'
  }
}

/** A frame is larger than `frameBytesMax` (outbound: refused; inbound: the stream is reset). */
export class FrameTooLargeError extends NetError {
  readonly frameBytes: number
  readonly frameBytesMax: number
  constructor(frameBytes: number, frameBytesMax: number) {
    super(
      'ERR_FRAME_TOO_LARGE',
      `A frame of at least ${frameBytes} bytes exceeds frameBytesMax (${frameBytesMax}); split the message or raise the limit on every node.`,
    )
    this.name = 'FrameTooLargeError'
    this.frameBytes = frameBytes
    this.frameBytesMax = frameBytesMax
  }
}

/** The bytes on a stream are not a valid sequence of length-prefixed frames. */
export class FrameDecodeError extends NetError {
  constructor(message: string) {
    super('ERR_FRAME_DECODE', message)
    this.name = 'FrameDecodeError'
  }
}

/** A frame was addressed to, or came from, a PeerId outside the membership. */
export class NotMemberError extends NetError {
  readonly peer: string
  constructor(peer: string, direction: 'to' | 'from') {
    super(
      'ERR_NOT_MEMBER',
      direction === 'to'
        ? `Cannot send to ${peer}: it is not in the peer set; add it with setPeers() first.`
        : `Dropped frames from ${peer}: it is not in the peer set.`,
    )
    this.name = 'NotMemberError'
    this.peer = peer
  }
}

/** The per-peer send queue is at its frame or byte limit; the frame was dropped. */
export class QueueFullError extends NetError {
  readonly peer: string
  constructor(peer: string, framesMax: number, bytesMax: number) {
    super(
      'ERR_QUEUE_FULL',
      `The send queue for ${peer} is full (limit ${framesMax} frames / ${bytesMax} bytes); frames are dropped until it drains.`,
    )
    this.name = 'QueueFullError'
    this.peer = peer
  }
}

/** Dialing a peer failed; the transport retries with back-off. */
export class DialError extends NetError {
  readonly peer: string
  constructor(peer: string, options?: { cause?: unknown }) {
    const cause = options?.cause instanceof Error ? `: ${options.cause.message}` : ''
    super('ERR_DIAL', `Could not open a stream to ${peer}${cause}; retrying with back-off.`, options)
    this.name = 'DialError'
    this.peer = peer
  }
}

/** The transport is stopped. */
export class TransportStoppedError extends NetError {
  constructor() {
    super('ERR_TRANSPORT_STOPPED', 'The frame transport is stopped.')
    this.name = 'TransportStoppedError'
  }
}

/**
 * An RPC call failed. `code` says why: ERR_RPC_BUSY, ERR_RPC_STOPPED,
 * ERR_RPC_ABORTED, ERR_RPC_NO_RESPONSE, ERR_RPC_BAD_RESPONSE,
 * ERR_RPC_REQUEST_TOO_LARGE, or one of the subclasses' codes.
 */
export class RpcError extends NetError {
  /** The method called ('' when not known). */
  readonly method: string
  /** The remote PeerId, or the address dialled when the PeerId is not known yet. */
  readonly peer: string
  constructor(code: string, message: string, options: { method: string; peer: string; cause?: unknown }) {
    super(code, message, options)
    this.name = 'RpcError'
    this.method = options.method
    this.peer = options.peer
  }
}

/**
 * The remote answered with an error. `code` and `message` are the remote's
 * (a handler's own code such as ERR_NOT_LEADER, or ERR_RPC_FORBIDDEN,
 * ERR_RPC_UNKNOWN_METHOD, ERR_RPC_HANDLER, ERR_RPC_BUSY…); `details` holds
 * the data the remote error carried (e.g. `{ leader }`).
 */
export class RpcRemoteError extends RpcError {
  readonly details: Record<string, unknown>
  constructor(
    code: string,
    message: string,
    options: { method: string; peer: string; details?: Record<string, unknown> },
  ) {
    super(code, message, options)
    this.name = 'RpcRemoteError'
    this.details = options.details ?? {}
  }
}

/** No response arrived within the call's timeout; the remote may still have acted on the request. */
export class RpcTimeoutError extends RpcError {
  readonly timeoutMs: number
  constructor(method: string, peer: string, timeoutMs: number) {
    super(
      'ERR_RPC_TIMEOUT',
      `The call ${method} to ${peer} got no response within ${timeoutMs} ms; it may or may not have taken effect. Check that the peer is up, then retry.`,
      { method, peer },
    )
    this.name = 'RpcTimeoutError'
    this.timeoutMs = timeoutMs
  }
}

/** The connection or the RPC stream to `address` could not be opened. */
export class RpcDialError extends RpcError {
  readonly address: string
  constructor(method: string, address: string, options: { cause: unknown }) {
    const reason = options.cause instanceof Error ? options.cause.message : String(options.cause)
    super(
      'ERR_RPC_DIAL',
      `Could not reach ${address} to call ${method}: ${reason}. Check the address and that docklet runs there.`,
      { method, peer: address, cause: options.cause },
    )
    this.name = 'RpcDialError'
    this.address = address
  }
}

/** The peer reached at `address` is not one of the PeerIds the caller trusts. */
export class RpcIdentityError extends RpcError {
  readonly address: string
  readonly actual: string
  readonly expected: readonly string[]
  constructor(method: string, address: string, actual: string, expected: readonly string[]) {
    super(
      'ERR_RPC_IDENTITY',
      `The peer at ${address} is ${actual}, which this token does not trust (expected one of ${expected.join(', ')}).`,
      { method, peer: actual },
    )
    this.name = 'RpcIdentityError'
    this.address = address
    this.actual = actual
    this.expected = expected
  }
}
