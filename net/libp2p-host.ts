// The libp2p node every docklet host runs: TCP + noise + yamux, identity from
// an Ed25519 key the caller stores (in the data dir), nothing else. No peer
// discovery, DHT or identify: members and their addresses come from the Raft
// state, so the node only dials addresses it is given. Noise and yamux run
// with fast paths for small messages (see the end of this file).

import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type {
  ConnectionEncrypter,
  Libp2p,
  MessageStream,
  PrivateKey,
  SecuredConnection,
  StreamMuxer,
  StreamMuxerFactory,
} from '@libp2p/interface'
import { noise } from '@libp2p/noise'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { Uint8ArrayList } from 'uint8arraylist'
import { FrameDecodeError, InvalidAddressError, InvalidIdentityError, NetConfigError } from './errors.ts'
import { checkInteger } from './frame-transport-types.ts'

/** Generates a new node identity: an Ed25519 private key, protobuf-encoded (store it as is). */
export async function generateIdentity(): Promise<Uint8Array> {
  return privateKeyToProtobuf(await generateKeyPair('Ed25519'))
}

/** Decodes identity bytes from generateIdentity(); only Ed25519 keys are accepted. */
export function identityFromBytes(bytes: Uint8Array): PrivateKey {
  let key: PrivateKey
  try {
    key = privateKeyFromProtobuf(bytes)
  } catch (err) {
    throw new InvalidIdentityError(
      'The node identity does not decode as a libp2p private key; restore the identity file or create a new node.',
      { cause: err },
    )
  }
  if (key.type !== 'Ed25519') {
    throw new InvalidIdentityError(`The node identity is a ${key.type} key; docklet needs an Ed25519 key.`)
  }
  return key
}

/** The PeerId string of an identity. */
export function peerIdOfIdentity(bytes: Uint8Array): string {
  return peerIdFromPrivateKey(identityFromBytes(bytes)).toString()
}

const IPV4 = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/
const IPV6 = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/
const DNS_NAME = /^([a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?):(\d{1,5})$/

/**
 * Turns `HOST:PORT` (IPv4, [IPv6] or a DNS name) or a multiaddr string into
 * a Multiaddr. Throws InvalidAddressError otherwise.
 */
export function toMultiaddr(address: string): Multiaddr {
  const text = address.trim()
  if (text.startsWith('/')) {
    try {
      return multiaddr(text)
    } catch (err) {
      throw new InvalidAddressError(address, { cause: err })
    }
  }
  let protocol = 'ip4'
  let match = IPV4.exec(text)
  if (match === null && (match = IPV6.exec(text)) !== null) protocol = 'ip6'
  if (match === null && (match = DNS_NAME.exec(text)) !== null) protocol = 'dns'
  if (match === null) throw new InvalidAddressError(address)
  const host = match[1]!
  const port = Number(match[2])
  if (port > 65535) throw new InvalidAddressError(address)
  try {
    return multiaddr(`/${protocol}/${host}/tcp/${port}`)
  } catch (err) {
    throw new InvalidAddressError(address, { cause: err })
  }
}

export interface Libp2pHostOptions {
  /** Protobuf-encoded Ed25519 private key (from generateIdentity()). */
  identity: Uint8Array
  /** Where to listen: HOST:PORT or multiaddrs; port 0 picks a free port. */
  listen: string | string[]
  /** Open connections allowed in total. Default 64 (a cluster has a few hosts). */
  connectionsMax?: number
  /** New inbound connections accepted per second from one IP address. Default 16. */
  inboundConnectionsPerSecondMax?: number
  /** Upgrades in progress (handshakes) allowed at once. Default 16. */
  pendingConnectionsMax?: number
  /** Whole-dial limit, including all addresses of a peer. Default 10 s. */
  dialTimeoutMs?: number
}

/** Creates and starts the node. The caller stops it with `node.stop()`. */
export async function createLibp2pHost(options: Libp2pHostOptions): Promise<Libp2p> {
  const privateKey = identityFromBytes(options.identity)
  const listen = (Array.isArray(options.listen) ? options.listen : [options.listen]).map((address) =>
    toMultiaddr(address).toString(),
  )
  if (listen.length === 0) throw new NetConfigError('listen must name at least one address.')
  const connectionsMax = options.connectionsMax ?? 64
  const inboundPerSecondMax = options.inboundConnectionsPerSecondMax ?? 16
  const pendingMax = options.pendingConnectionsMax ?? 16
  const dialTimeoutMs = options.dialTimeoutMs ?? 10_000
  checkInteger('connectionsMax', connectionsMax, 1, 10_000)
  checkInteger('inboundConnectionsPerSecondMax', inboundPerSecondMax, 1, 10_000)
  checkInteger('pendingConnectionsMax', pendingMax, 1, 10_000)
  checkInteger('dialTimeoutMs', dialTimeoutMs, 1, 600_000)
  try {
    return await createNode()
  } catch (err) {
    const text = String((err as Error)?.message ?? err)
    if (text.includes('EADDRINUSE')) {
      throw new NetConfigError(
        `Cannot listen on ${listen.join(', ')}: the address is already in use (is another docklet node running there?).`,
        { cause: err },
      )
    }
    if (text.includes('EADDRNOTAVAIL')) {
      throw new NetConfigError(
        `Cannot listen on ${listen.join(', ')}: no interface of this host has that address.`,
        {
          cause: err,
        },
      )
    }
    throw err
  }

  function createNode(): Promise<Libp2p> {
    return createLibp2p({
      privateKey,
      addresses: { listen },
      transports: [tcp({ maxConnections: connectionsMax })],
      connectionEncrypters: [noiseWithFastPath()],
      streamMuxers: [withFewerWindowUpdates(yamux())],
      connectionManager: {
        maxConnections: connectionsMax,
        maxIncomingPendingConnections: pendingMax,
        inboundConnectionThreshold: inboundPerSecondMax,
        dialTimeout: dialTimeoutMs,
        // A handful of addresses per member is all we ever give it.
        maxPeerAddrsToDial: 8,
        maxParallelDials: 16,
        maxDialQueueLength: 64,
      },
      // The connection monitor stays on (the default): its periodic ping
      // aborts connections whose peer vanished without closing TCP, which
      // is what makes the frame transport notice and redial.
      nodeInfo: { name: 'docklet', version: '0.1.0' },
    })
  }
}

// ---- noise fast path ---------------------------------------------------
//
// Two costs of @libp2p/noise 17 dominated a Raft message's trip between
// members (measured: ~290 us of CPU per round trip of two 300-byte frames,
// against ~135 us without them):
// - its decoder reads a frame's 2-byte length with a function that throws a
//   RangeError when fewer than 2 bytes are buffered, which is the case at the
//   end of every received chunk, so every chunk paid for an exception and its
//   stack trace;
// - each encrypted message reaches the TCP socket as two writes (the length,
//   then the ciphertext), so two syscalls and often two TCP segments.
// After the handshake we swap in a decoder that checks the length before
// reading it, and hand the socket one buffer per message. Both touch fields
// of noise's connection class that are not public API (pinned version);
// when they are not there as expected, the connection keeps noise's own code.

const NOISE_LENGTH_BYTES = 2
/** Bytes noise's own decoder buffers before it gives up on a connection. */
const NOISE_BUFFER_BYTES_MAX = 16 * 1024 * 1024

/** Noise's length-prefixed message decoder, without an exception per chunk. */
export class NoiseMessageDecoder {
  readonly buffer: Uint8ArrayList

  constructor() {
    this.buffer = new Uint8ArrayList()
  }

  *decode(data: Uint8Array | Uint8ArrayList): Generator<Uint8ArrayList> {
    const buffer = this.buffer
    buffer.append(data)
    if (buffer.byteLength > NOISE_BUFFER_BYTES_MAX) {
      // Noise aborts the connection on it; the peer redials.
      throw new FrameDecodeError(
        `The peer sent ${buffer.byteLength} bytes without completing a noise message (limit ${NOISE_BUFFER_BYTES_MAX}).`,
      )
    }
    while (buffer.byteLength >= NOISE_LENGTH_BYTES) {
      const end = NOISE_LENGTH_BYTES + ((buffer.get(0) << 8) | buffer.get(1))
      if (buffer.byteLength < end) return
      const message = buffer.sublist(NOISE_LENGTH_BYTES, end)
      buffer.consume(end)
      if (message.byteLength > 0) yield message
    }
  }
}

/** The parts of noise's EncryptedMessageStream the fast path replaces or uses. */
interface NoiseConnectionInternals {
  decoder?: { buffer?: { byteLength?: number }; decode?: unknown }
  encrypt?: (data: Uint8ArrayList) => Uint8ArrayList
  sendData?: (data: Uint8ArrayList) => { sentBytes: number; canSendMore: boolean }
  stream?: { send?: (data: Uint8Array) => boolean }
}

/** Applies the fast path to a freshly secured connection; returns whether it could. */
export function applyNoiseFastPath(secured: SecuredConnection): boolean {
  const conn = secured.connection as unknown as NoiseConnectionInternals
  const lower = conn.stream
  const { encrypt } = conn
  if (
    typeof encrypt !== 'function' ||
    typeof conn.sendData !== 'function' ||
    typeof lower?.send !== 'function' ||
    typeof conn.decoder?.decode !== 'function' ||
    // Bytes already buffered by noise's decoder would be lost in the swap.
    conn.decoder.buffer?.byteLength !== 0
  ) {
    return false
  }
  conn.decoder = new NoiseMessageDecoder()
  conn.sendData = (data) => {
    // subarray() joins the length and the ciphertext into one buffer.
    const bytes = encrypt.call(conn, data).subarray()
    return { sentBytes: data.byteLength, canSendMore: lower.send!(bytes) }
  }
  return true
}

/** noise(), with applyNoiseFastPath on every connection it secures. */
function noiseWithFastPath(): ReturnType<typeof noise> {
  const factory = noise()
  return (components) => {
    const inner = factory(components)
    // Everything else (protocol id, capabilities) comes from noise itself.
    const outer: ConnectionEncrypter = Object.create(inner)
    outer.secureOutbound = async (connection, options) => {
      const secured = await inner.secureOutbound(connection, options)
      applyNoiseFastPath(secured)
      return secured
    }
    outer.secureInbound = async (connection, options) => {
      const secured = await inner.secureInbound(connection, options)
      applyNoiseFastPath(secured)
      return secured
    }
    return outer as ReturnType<ReturnType<typeof noise>>
  }
}

// ---- yamux window updates ----------------------------------------------
//
// @libp2p/yamux 8 answers every data frame it receives with a window update
// (its "is an update needed" test is true as soon as one byte of the window
// is used). For Raft's small frames that doubled the frames on the wire: the
// receiver encrypted and wrote one back for each, and the sender woke up to
// read it. Like go-yamux and HTTP/2, we send the update only once half of
// the receive window is used; the sender still has the other half to go on
// with while the update travels, so a stream never stalls for it. Updates
// that carry a SYN or ACK (a stream opening) and paused or closing streams
// keep yamux's own logic. This touches fields of yamux's stream class that
// are not public API (pinned version); when they are not there as expected,
// the stream keeps yamux's own code.

/** Yamux's StreamState values (stream.js) in which an update carries no flag. */
const YAMUX_STATE_SYN_SENT = 1
const YAMUX_STATE_ESTABLISHED = 3

/** The parts of YamuxStream the threshold reads or replaces. */
interface YamuxStreamInternals {
  state?: unknown
  recvWindow?: unknown
  recvWindowCapacity?: unknown
  sendWindowUpdate?: () => void
}

/** Makes `stream` send a window update only once half its receive window is used; returns whether it could. */
export function applyWindowUpdateThreshold(stream: unknown): boolean {
  const s = stream as YamuxStreamInternals
  const original = s.sendWindowUpdate
  if (typeof original !== 'function' || typeof s.recvWindow !== 'number') return false
  if (typeof s.recvWindowCapacity !== 'number' || typeof s.state !== 'number') return false
  s.sendWindowUpdate = () => {
    const quiet = s.state === YAMUX_STATE_ESTABLISHED || s.state === YAMUX_STATE_SYN_SENT
    if (quiet && (s.recvWindowCapacity as number) > (s.recvWindow as number) / 2) return
    original.call(s)
  }
  return true
}

/** The yamux muxer factory `factory`, with applyWindowUpdateThreshold on every stream its muxers open. */
export function withFewerWindowUpdates(factory: ReturnType<typeof yamux>): ReturnType<typeof yamux> {
  return () => {
    const inner: StreamMuxerFactory = factory()
    // Everything else (protocol id) comes from yamux itself.
    const outer: StreamMuxerFactory = Object.create(inner)
    outer.createStreamMuxer = (maConn: MessageStream): StreamMuxer => {
      const muxer = inner.createStreamMuxer(maConn)
      // Both inbound and outbound streams are made by _newStream.
      const internals = muxer as unknown as { _newStream?: (...args: unknown[]) => unknown }
      const newStream = internals._newStream
      if (typeof newStream === 'function') {
        internals._newStream = (...args: unknown[]) => {
          const stream = newStream.apply(muxer, args)
          applyWindowUpdateThreshold(stream)
          return stream
        }
      }
      return muxer
    }
    return outer as ReturnType<ReturnType<typeof yamux>>
  }
}
