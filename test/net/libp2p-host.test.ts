// Checks the libp2p host helpers: identities round-trip through their bytes
// to a stable PeerId, bad identity bytes are refused with a clear error, and
// listen/peer addresses parse from HOST:PORT or multiaddr form. One node is
// started on 127.0.0.1:0 to check it listens where asked and stops cleanly.
// The noise fast path: its decoder takes messages split at any byte, and two
// connected nodes really use it on both ends (it replaces fields of noise's
// connection, so a libp2p upgrade that renames them fails here). Yamux with
// the window-update threshold, over an in-memory connection pair: a stream
// carrying many small messages gets a window update per half window, not
// one per message, and still delivers every byte.

import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { StreamMessageEvent } from '@libp2p/interface'
import { multiaddrConnectionPair } from '@libp2p/utils'
import { yamux } from '@libp2p/yamux'
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
import { NoiseMessageDecoder, withFewerWindowUpdates } from '../../net/libp2p-host.ts'

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

describe('noise fast path', () => {
  it('decodes noise messages split at any byte, skips empty ones, and refuses a message that never ends', () => {
    // Three messages behind 2-byte big-endian lengths: 3 bytes, 0 bytes, 300 bytes.
    const bodies = [Uint8Array.of(1, 2, 3), new Uint8Array(0), new Uint8Array(300).fill(7)]
    const wire = Buffer.concat(bodies.flatMap((b) => [Uint8Array.of(b.length >> 8, b.length & 0xff), b]))
    for (let split = 0; split <= wire.length; split++) {
      const decoder = new NoiseMessageDecoder()
      const out = [...decoder.decode(wire.subarray(0, split)), ...decoder.decode(wire.subarray(split))]
      expect(
        out.map((m) => Buffer.from(m.subarray()).toString('hex')),
        `split at ${split}`,
      ).toEqual(['010203', Buffer.from(bodies[2]!).toString('hex')])
      expect(decoder.buffer.byteLength).toBe(0)
    }
    // Like noise's own decoder, it gives up once 16 MiB are buffered.
    const flooded = new NoiseMessageDecoder()
    expect(() => [...flooded.decode(new Uint8Array(16 * 1024 * 1024 + 1))]).toThrow(
      /without completing a noise message/,
    )
  })

  it('is in effect on both ends of a connection between two nodes', async () => {
    const a = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
    const b = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
    try {
      await a.dial(b.getMultiaddrs()[0]!)
      // The listener registers its side once its upgrade finishes, just after the dialer's.
      for (let i = 0; i < 200 && b.getConnections().length === 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
      const connections = [...a.getConnections(), ...b.getConnections()]
      expect(connections.length).toBe(2)
      for (const connection of connections) {
        // The muxer reads and writes through noise's encrypted stream.
        const secured = (connection as unknown as { muxer?: { maConn?: { decoder?: unknown } } }).muxer
          ?.maConn
        expect(secured?.decoder).toBeInstanceOf(NoiseMessageDecoder)
      }
    } finally {
      await a.stop()
      await b.stop()
    }
  })
})

describe('yamux window updates', () => {
  it('answers many small messages with a window update per half window, not one per message', async () => {
    const [outbound, inbound] = multiaddrConnectionPair()
    const client = withFewerWindowUpdates(yamux())().createStreamMuxer(outbound)
    const server = withFewerWindowUpdates(yamux())().createStreamMuxer(inbound)
    // Counted before any stream exists: streams take the muxer's sendFrame when they are made.
    const serverMuxer = server as unknown as {
      sendFrame: (header: { type: number }, data?: unknown) => boolean
    }
    const sendFrame = serverMuxer.sendFrame.bind(server)
    let windowUpdates = 0
    serverMuxer.sendFrame = (header, data) => {
      if (header.type === 1) windowUpdates++ // yamux FrameType.WindowUpdate
      return sendFrame(header, data)
    }
    let receivedBytes = 0
    server.addEventListener('stream', (event) => {
      event.detail.addEventListener('message', (message: StreamMessageEvent) => {
        receivedBytes += message.data.byteLength
      })
    })
    try {
      const stream = await client.createStream()
      const messages = 2_000
      const message = new Uint8Array(300)
      // One message per turn of the event loop, so each travels as its own data frame.
      for (let i = 0; i < messages; i++) {
        if (!stream.send(message)) await stream.onDrain()
        await new Promise((resolve) => setImmediate(resolve))
      }
      for (let i = 0; i < 500 && receivedBytes < messages * message.byteLength; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
      expect(receivedBytes).toBe(messages * message.byteLength)
      // 600 kB through a 256 KiB window needs a few updates (and the first carries the ACK);
      // yamux alone sends one per data frame, 2,000 here.
      expect(windowUpdates).toBeGreaterThan(1)
      expect(windowUpdates).toBeLessThan(20)
    } finally {
      client.abort(new Error('test over'))
      server.abort(new Error('test over'))
    }
  })
})
