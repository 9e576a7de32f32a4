// The behaviour every frame transport in net/ must share, as one suite that
// runs against each implementation through a harness (memory-transport.test.ts
// and libp2p-transport.test.ts call it). Frames carry a sequence number and a
// pattern so a test can tell lost, reordered and corrupted frames apart.

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type {
  FrameTransportOptions,
  MemberFrameTransport,
  PeerAddress,
  TransportEvent,
} from '../../net/index.ts'

export interface HarnessPeer {
  id: string
  address: PeerAddress
  transport: MemberFrameTransport
  /** Events reported through onEvent, oldest first (capped). */
  events: TransportEvent[]
}

export interface TransportHarness {
  /** A started endpoint with a new identity. */
  createPeer(options?: FrameTransportOptions): Promise<HarnessPeer>
  /** Stops the endpoint (and, for libp2p, its node). */
  stopPeer(peer: HarnessPeer): Promise<void>
  /** A new endpoint with the identity and address of a stopped one. */
  restartPeer(peer: HarnessPeer): Promise<HarnessPeer>
  /** A valid peer id and address where nothing answers. */
  unreachablePeer(): Promise<PeerAddress>
  /** Stops everything the harness created; runs even after a failed test. */
  cleanup(): Promise<void>
}

export const EVENTS_KEPT_MAX = 1000

export function recordEvent(events: TransportEvent[], event: TransportEvent): void {
  if (events.length < EVENTS_KEPT_MAX) events.push(event)
}

interface Received {
  from: string
  frame: Uint8Array
}

function collect(peer: HarnessPeer): Received[] {
  const received: Received[] = []
  peer.transport.onFrame((from, frame) => {
    received.push({ from, frame })
  })
  return received
}

/** Makes every peer a member of every other peer's set. */
function connectAll(...peers: HarnessPeer[]): void {
  for (const peer of peers) {
    peer.transport.setPeers(peers.filter((other) => other !== peer).map((other) => other.address))
  }
}

/** A frame of `bytes` bytes: 4-byte big-endian sequence number, then a pattern derived from it. */
function makeFrame(seq: number, bytes: number): Uint8Array {
  const frame = new Uint8Array(bytes)
  for (let i = 0; i < bytes; i++) frame[i] = (seq * 7 + i * 13) & 0xff
  if (bytes >= 4) new DataView(frame.buffer).setUint32(0, seq)
  return frame
}

function seqOf(frame: Uint8Array): number {
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0)
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/**
 * Sends numbered probe frames every 50 ms until one arrives (a restarted or
 * newly admitted link may lose the frames sent while it was being set up,
 * which Raft covers by resending). Returns the number of probes sent.
 */
async function probeUntilDelivered(
  sender: HarnessPeer,
  receiverId: string,
  received: Received[],
  timeoutMs = 10_000,
): Promise<number> {
  const probeBase = 0x7000_0000
  const deadline = Date.now() + timeoutMs
  let probes = 0
  while (
    !received.some((r) => r.from === sender.id && r.frame.byteLength === 8 && seqOf(r.frame) >= probeBase)
  ) {
    if (Date.now() > deadline) throw new Error(`No probe from ${sender.id} arrived within ${timeoutMs} ms.`)
    sender.transport.send(receiverId, makeFrame(probeBase + probes++, 8))
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return probes
}

export function frameTransportConformance(name: string, makeHarness: () => TransportHarness): void {
  describe(`${name}: frame transport conformance`, () => {
    let harness: TransportHarness

    beforeEach(() => {
      harness = makeHarness()
    })

    afterEach(async () => {
      await harness.cleanup()
    })

    it('delivers frames of 0 bytes, 1 byte and 1 MiB intact and in order', async () => {
      const a = await harness.createPeer()
      const b = await harness.createPeer()
      connectAll(a, b)
      const received = collect(b)
      const sizes = [0, 1, 4, 127, 128, 300, 16_384, 65_535, 65_536, 70_000, 1024 * 1024, 0, 1, 5]
      const frames = sizes.map((bytes, seq) => makeFrame(seq, bytes))
      for (const frame of frames) expect(a.transport.send(b.id, frame)).toBe(true)
      await waitFor('all frames', () => received.length >= frames.length)
      expect(received.map((r) => r.frame.byteLength)).toEqual(sizes)
      received.forEach((r, i) => {
        expect(r.from).toBe(a.id)
        expect(Buffer.from(r.frame).equals(Buffer.from(frames[i]!))).toBe(true)
      })
      expect(a.transport.stats()[b.id]).toMatchObject({
        sentFrames: frames.length,
        queuedFrames: 0,
        dropped: 0,
      })
      expect(b.transport.stats()[a.id]?.receivedFrames).toBe(frames.length)
    })

    it('delivers 10,000 small frames sent in one synchronous loop, all in order', async () => {
      const a = await harness.createPeer({ queueFramesMax: 16_384 })
      const b = await harness.createPeer()
      connectAll(a, b)
      const received = collect(b)
      // The burst can outrun the socket, so the queue is sized to hold all of
      // it; the first frame opens the link so the burst meets an open stream.
      a.transport.send(b.id, makeFrame(0, 8))
      await waitFor('the first frame', () => received.length === 1)
      const count = 10_000
      let accepted = 0
      for (let seq = 1; seq <= count; seq++) if (a.transport.send(b.id, makeFrame(seq, 8))) accepted++
      expect(accepted).toBe(count)
      await waitFor('10,000 frames', () => received.length >= count + 1)
      expect(received.length).toBe(count + 1)
      const outOfOrder = received.findIndex((r, i) => seqOf(r.frame) !== i)
      expect(outOfOrder).toBe(-1)
    })

    it('delivers deferrable frames in order with the frames around them, also when only deferrable ones wait', async () => {
      const a = await harness.createPeer()
      const b = await harness.createPeer()
      connectAll(a, b)
      const received = collect(b)
      a.transport.send(b.id, makeFrame(0, 8))
      await waitFor('the first frame', () => received.length === 1)
      // Mixed (every third frame not deferrable), then a tail of deferrable frames only.
      const count = 1_000
      for (let seq = 1; seq <= count; seq++) {
        const deferrable = seq % 3 !== 0 || seq > count - 10
        expect(a.transport.send(b.id, makeFrame(seq, 300), { deferrable })).toBe(true)
      }
      await waitFor('1,000 frames', () => received.length >= count + 1)
      expect(received.findIndex((r, i) => seqOf(r.frame) !== i)).toBe(-1)
    })

    it('carries traffic in both directions at once', async () => {
      const a = await harness.createPeer()
      const b = await harness.createPeer()
      connectAll(a, b)
      const atA = collect(a)
      const atB = collect(b)
      const count = 2000
      for (let seq = 0; seq < count; seq++) {
        expect(a.transport.send(b.id, makeFrame(seq, 64))).toBe(true)
        expect(b.transport.send(a.id, makeFrame(seq, 200))).toBe(true)
      }
      await waitFor('frames both ways', () => atA.length >= count && atB.length >= count)
      expect(atB.map((r) => seqOf(r.frame))).toEqual([...Array(count).keys()])
      expect(atA.map((r) => seqOf(r.frame))).toEqual([...Array(count).keys()])
      expect(atB.every((r) => r.from === a.id && r.frame.byteLength === 64)).toBe(true)
      expect(atA.every((r) => r.from === b.id && r.frame.byteLength === 200)).toBe(true)
    })

    it('connects three peers, each receiving every other peer’s frames in that peer’s order', async () => {
      const peers = [await harness.createPeer(), await harness.createPeer(), await harness.createPeer()]
      connectAll(...peers)
      const inboxes = peers.map(collect)
      const count = 300
      for (let seq = 0; seq < count; seq++) {
        for (const sender of peers) {
          for (const receiver of peers) {
            if (receiver !== sender)
              expect(sender.transport.send(receiver.id, makeFrame(seq, 100))).toBe(true)
          }
        }
      }
      await waitFor('frames at all three peers', () => inboxes.every((inbox) => inbox.length >= 2 * count))
      peers.forEach((receiver, r) => {
        const inbox = inboxes[r]!
        expect(inbox.length).toBe(2 * count)
        for (const sender of peers) {
          if (sender === receiver) continue
          const seqs = inbox.filter((x) => x.from === sender.id).map((x) => seqOf(x.frame))
          expect(seqs).toEqual([...Array(count).keys()])
        }
      })
    })

    it('refuses to send to a peer outside the peer set and reports it', async () => {
      const a = await harness.createPeer()
      const b = await harness.createPeer()
      const stranger = await harness.unreachablePeer()
      a.transport.setPeers([b.address])
      expect(a.transport.send(stranger.id, makeFrame(1, 10))).toBe(false)
      expect(a.transport.send(a.id, makeFrame(2, 10))).toBe(false)
      expect(a.events.some((e) => e.type === 'not-member' && e.peer === stranger.id)).toBe(true)
      expect(Object.keys(a.transport.stats())).toEqual([b.id])
    })

    it('refuses a frame larger than frameBytesMax at send and counts it as dropped', async () => {
      const a = await harness.createPeer({ frameBytesMax: 1024 })
      const b = await harness.createPeer()
      connectAll(a, b)
      const received = collect(b)
      expect(a.transport.send(b.id, makeFrame(1, 1025))).toBe(false)
      expect(a.transport.send(b.id, makeFrame(2, 1024))).toBe(true)
      await waitFor('the frame that fits', () => received.length === 1)
      expect(received[0]!.frame.byteLength).toBe(1024)
      expect(a.transport.stats()[b.id]?.dropped).toBe(1)
      expect(
        a.events.some((e) => e.type === 'frame-too-large' && e.error?.name === 'FrameTooLargeError'),
      ).toBe(true)
    })

    it('does not deliver frames from a peer outside the receiver’s set, and delivers once it is admitted', async () => {
      const a = await harness.createPeer()
      const b = await harness.createPeer()
      a.transport.setPeers([b.address])
      b.transport.setPeers([])
      const received = collect(b)
      for (let seq = 0; seq < 5; seq++) a.transport.send(b.id, makeFrame(seq, 16))
      await waitFor('b to report the non-member', () =>
        b.events.some((e) => e.type === 'not-member' && e.peer === a.id),
      )
      // Give any frame that slipped through time to show up.
      await new Promise((resolve) => setTimeout(resolve, 100))
      expect(received).toEqual([])
      expect(b.transport.stats()).toEqual({})
      b.transport.setPeers([a.address])
      await probeUntilDelivered(a, b.id, received)
      expect(received.every((r) => r.from === a.id)).toBe(true)
    })

    it('reconnects to a receiver that was stopped and restarted, and later frames arrive in order', async () => {
      const a = await harness.createPeer()
      let b = await harness.createPeer()
      connectAll(a, b)
      let received = collect(b)
      a.transport.send(b.id, makeFrame(0, 32))
      await waitFor('the first frame', () => received.length === 1)
      await harness.stopPeer(b)
      // Sent while b is down: queued (or lost with the old stream).
      for (let seq = 1; seq <= 3; seq++) a.transport.send(b.id, makeFrame(seq, 32))
      b = await harness.restartPeer(b)
      received = collect(b)
      b.transport.setPeers([a.address])
      await probeUntilDelivered(a, b.id, received)
      const start = received.length
      for (let seq = 100; seq < 200; seq++) expect(a.transport.send(b.id, makeFrame(seq, 32))).toBe(true)
      await waitFor('frames after the restart', () => received.length >= start + 100)
      expect(received.slice(start).map((r) => seqOf(r.frame))).toEqual(
        [...Array(100).keys()].map((i) => i + 100),
      )
      expect(a.transport.stats()[b.id]?.connected).toBe(true)
    })

    it('bounds the queue for an unreachable peer: sends fail once it is full and drops are counted', async () => {
      const a = await harness.createPeer({ queueFramesMax: 8 })
      const unreachable = await harness.unreachablePeer()
      a.transport.setPeers([unreachable])
      const results = [...Array(20).keys()].map((seq) => a.transport.send(unreachable.id, makeFrame(seq, 10)))
      expect(results.filter((ok) => ok).length).toBe(8)
      expect(results.slice(0, 8).every((ok) => ok)).toBe(true)
      expect(a.transport.stats()[unreachable.id]).toMatchObject({
        queuedFrames: 8,
        queuedBytes: 80,
        dropped: 12,
        connected: false,
      })
      // One report per episode of fullness, not one per dropped frame.
      expect(a.events.filter((e) => e.type === 'queue-full').length).toBe(1)
    })

    it('drops a removed peer’s queue and refuses further frames for it', async () => {
      const a = await harness.createPeer()
      const unreachable = await harness.unreachablePeer()
      a.transport.setPeers([unreachable])
      expect(a.transport.send(unreachable.id, makeFrame(1, 10))).toBe(true)
      a.transport.setPeers([])
      expect(a.transport.stats()).toEqual({})
      expect(a.transport.send(unreachable.id, makeFrame(2, 10))).toBe(false)
    })
  })
}
