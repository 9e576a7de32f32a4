// The libp2p node every docklet host runs: TCP + noise + yamux, identity from
// an Ed25519 key the caller stores (in the data dir), nothing else. No peer
// discovery, DHT or identify: members and their addresses come from the Raft
// state, so the node only dials addresses it is given.

import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { noise } from '@libp2p/noise'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { InvalidAddressError, InvalidIdentityError, NetConfigError } from './errors.ts'
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
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
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
