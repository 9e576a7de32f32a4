// Checks the libp2p host helpers: identities round-trip through their bytes
// to a stable PeerId, bad identity bytes are refused with a clear error, and
// listen/peer addresses parse from HOST:PORT or multiaddr form. One node is
// started on 127.0.0.1:0 to check it listens where asked and stops cleanly.

import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { describe, expect, it } from 'vitest'
import {
  createLibp2pHost,
  generateIdentity,
  InvalidAddressError,
  InvalidIdentityError,
  identityFromBytes,
  peerIdOfIdentity,
  toMultiaddr,
} from '../../net/index.ts'

describe('libp2p host', () => {
  it('derives the same PeerId from the same identity bytes every time', async () => {
    const identity = await generateIdentity()
    const id = peerIdOfIdentity(identity)
    expect(id).toMatch(/^12D3KooW/)
    expect(peerIdOfIdentity(Uint8Array.from(identity))).toBe(id)
    expect(identityFromBytes(identity).type).toBe('Ed25519')
    expect(peerIdOfIdentity(await generateIdentity())).not.toBe(id)
  })

  it('refuses identity bytes that are not an Ed25519 private key', async () => {
    expect(() => identityFromBytes(Uint8Array.of(1, 2, 3))).toThrow(InvalidIdentityError)
    const secp = privateKeyToProtobuf(await generateKeyPair('secp256k1'))
    expect(() => identityFromBytes(secp)).toThrow(/Ed25519/)
  })

  it('parses HOST:PORT and multiaddr addresses and refuses anything else', () => {
    expect(toMultiaddr('127.0.0.1:7000').toString()).toBe('/ip4/127.0.0.1/tcp/7000')
    expect(toMultiaddr('[::1]:7000').toString()).toBe('/ip6/::1/tcp/7000')
    expect(toMultiaddr('node-1.example:7000').toString()).toBe('/dns/node-1.example/tcp/7000')
    expect(toMultiaddr('/ip4/127.0.0.1/tcp/0').toString()).toBe('/ip4/127.0.0.1/tcp/0')
    for (const bad of ['127.0.0.1', '127.0.0.1:70000', ':7000', '/nonsense/1', 'a b:1']) {
      expect(() => toMultiaddr(bad), bad).toThrow(InvalidAddressError)
    }
  })

  it('starts a node with the given identity on the given address and stops it', async () => {
    const identity = await generateIdentity()
    const node = await createLibp2pHost({ identity, listen: '127.0.0.1:0' })
    try {
      expect(node.peerId.toString()).toBe(peerIdOfIdentity(identity))
      const addrs = node.getMultiaddrs().map(String)
      expect(addrs.length).toBe(1)
      expect(addrs[0]).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/[1-9]\d*\/p2p\/12D3KooW/)
    } finally {
      await node.stop()
    }
    expect(node.status).toBe('stopped')
  })
})
