// Checks Libp2pFrameTransport over real libp2p nodes (TCP + noise + yamux on
// 127.0.0.1, port 0): first the shared conformance suite, then what only a
// byte stream can get wrong: a peer announcing an oversized frame or sending
// an invalid length prefix on a raw stream of the protocol must get its stream
// reset and reported, while the node keeps serving other peers.
// Every node a test starts is stopped in afterEach so vitest exits.

import { createServer } from 'node:net'
import type { Libp2p, Stream } from '@libp2p/interface'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createLibp2pHost,
  generateIdentity,
  Libp2pFrameTransport,
  type Libp2pFrameTransportOptions,
  peerIdOfIdentity,
  RAFT_PROTOCOL,
  type TransportEvent,
} from '../../net/index.ts'
import {
  frameTransportConformance,
  type HarnessPeer,
  recordEvent,
  type TransportHarness,
} from './frame-transport-conformance.ts'

interface LivePeer extends HarnessPeer {
  node: Libp2p
  identity: Uint8Array
  listen: string
  transport: Libp2pFrameTransport
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

function libp2pHarness(): TransportHarness & {
  start(identity: Uint8Array, listen: string, options?: Libp2pFrameTransportOptions): Promise<LivePeer>
  rawNode(): Promise<Libp2p>
} {
  const live = new Set<LivePeer>()
  const rawNodes = new Set<Libp2p>()
  const start = async (
    identity: Uint8Array,
    listen: string,
    options: Libp2pFrameTransportOptions = {},
  ): Promise<LivePeer> => {
    const node = await createLibp2pHost({ identity, listen })
    const events: TransportEvent[] = []
    const transport = new Libp2pFrameTransport(node, {
      ...options,
      onEvent: (event) => recordEvent(events, event),
    })
    const id = node.peerId.toString()
    const peer: LivePeer = {
      id,
      address: { id, addrs: node.getMultiaddrs().map(String) },
      transport,
      events,
      node,
      identity,
      listen: node
        .getMultiaddrs()[0]!
        .toString()
        .replace(/\/p2p\/.*$/, ''),
    }
    live.add(peer)
    await transport.start()
    return peer
  }
  const stop = async (peer: HarnessPeer): Promise<void> => {
    const livePeer = peer as LivePeer
    live.delete(livePeer)
    await livePeer.transport.stop()
    await livePeer.node.stop()
  }
  return {
    start,
    createPeer: async (options) => start(await generateIdentity(), '127.0.0.1:0', options),
    stopPeer: stop,
    restartPeer: async (peer) => {
      const old = peer as LivePeer
      return start(old.identity, old.listen)
    },
    unreachablePeer: async () => ({
      id: peerIdOfIdentity(await generateIdentity()),
      addrs: [`127.0.0.1:${await closedPort()}`],
    }),
    rawNode: async () => {
      const node = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
      rawNodes.add(node)
      return node
    },
    cleanup: async () => {
      await Promise.all([...live].map(stop))
      await Promise.all([...rawNodes].map((node) => node.stop()))
      rawNodes.clear()
    },
  }
}

frameTransportConformance('libp2p', libp2pHarness)

describe('libp2p frame transport: hostile streams', () => {
  const harness = libp2pHarness()

  afterEach(async () => {
    await harness.cleanup()
  })

  async function closed(stream: Stream): Promise<Error | undefined> {
    if (stream.status !== 'open') return undefined
    return new Promise((resolve) => {
      stream.addEventListener('close', (event) => resolve(event.error), { once: true })
    })
  }

  /**
   * b (frameBytesMax 1024) admits a and a raw node; the raw node writes `bytes`
   * on a protocol stream. Returns what the raw side saw and b's events.
   */
  async function rawWrite(bytes: Uint8Array) {
    const a = await harness.createPeer()
    const b = await harness.start(await generateIdentity(), '127.0.0.1:0', { frameBytesMax: 1024 })
    const raw = await harness.rawNode()
    const rawId = raw.peerId.toString()
    const atB: Array<{ from: string; bytes: number }> = []
    b.transport.onFrame((from, frame) => atB.push({ from, bytes: frame.byteLength }))
    b.transport.setPeers([a.address, { id: rawId, addrs: [] }])
    a.transport.setPeers([b.address])
    const stream = await raw.dialProtocol(b.node.getMultiaddrs(), RAFT_PROTOCOL, {
      signal: AbortSignal.timeout(5000),
    })
    const closing = closed(stream)
    stream.send(bytes)
    const error = await closing
    return { a, b, raw, atB, error }
  }

  it('resets a stream whose length prefix exceeds frameBytesMax, reports it, and keeps serving others', async () => {
    // Varint 1025 (0x81 0x08), then a few body bytes that must never be buffered as a frame.
    const { a, b, atB, error } = await rawWrite(Uint8Array.of(0x81, 0x08, 1, 2, 3))
    expect(error?.name).toBe('StreamResetError')
    const report = b.events.find((e) => e.type === 'frame-too-large')
    expect(report?.error?.name).toBe('FrameTooLargeError')
    expect(atB).toEqual([])
    expect(a.transport.send(b.id, new Uint8Array(1024))).toBe(true)
    const deadline = Date.now() + 10_000
    while (atB.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(atB).toEqual([{ from: a.id, bytes: 1024 }])
  })

  it('resets a stream carrying bytes that are not a length prefix, reports it, and keeps serving others', async () => {
    // Six continuation bytes: longer than any valid varint prefix.
    const { a, b, raw, atB, error } = await rawWrite(new Uint8Array(6).fill(0x80))
    expect(error?.name).toBe('StreamResetError')
    const report = b.events.find((e) => e.type === 'protocol-error')
    expect(report?.error?.name).toBe('FrameDecodeError')
    expect(a.transport.send(b.id, Uint8Array.of(7))).toBe(true)
    // The raw peer is still a member: a fresh, well-formed stream from it is accepted.
    const again = await raw.dialProtocol(b.node.getMultiaddrs(), RAFT_PROTOCOL, {
      signal: AbortSignal.timeout(5000),
    })
    again.send(Uint8Array.of(2, 0xaa, 0xbb))
    const deadline = Date.now() + 10_000
    while (atB.length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(atB).toContainEqual({ from: a.id, bytes: 1 })
    expect(atB).toContainEqual({ from: raw.peerId.toString(), bytes: 2 })
  })

  it('redials with back-off instead of a tight loop while a peer is unreachable', async () => {
    const a = await harness.start(await generateIdentity(), '127.0.0.1:0', {
      reconnectDelayMsMin: 50,
      reconnectDelayMsMax: 400,
    })
    const port = await closedPort()
    const id = peerIdOfIdentity(await generateIdentity())
    a.transport.setPeers([{ id, addrs: [`127.0.0.1:${port}`] }])
    a.transport.send(id, Uint8Array.of(1))
    await new Promise((resolve) => setTimeout(resolve, 1200))
    const failures = a.events.filter((e) => e.type === 'dial-failed')
    // 50, 100, 200, 400, 400… (with up to 25% jitter less) fit at most ~6 dials in 1.2 s.
    expect(failures.length).toBeGreaterThanOrEqual(3)
    expect(failures.length).toBeLessThanOrEqual(7)
    const delays = failures.map((e) => e.retryInMs ?? 0)
    expect(Math.max(...delays)).toBeLessThanOrEqual(400)
    expect(delays[0]).toBeGreaterThanOrEqual(50)
    expect(a.transport.stats()[id]).toMatchObject({ queuedFrames: 1, connected: false })
  })
})
