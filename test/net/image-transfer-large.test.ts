// Large image transfers under load, over real libp2p nodes (TCP + noise +
// yamux on 127.0.0.1, port 0): one server sends a generated 256 MiB "image"
// (never stored: chunks of a random pattern, each stamped with its index) to
// two clients at once. Each client consumes like a disk writer that stalls
// now and then (100-500 ms every 6-18 MiB, from a seeded RNG), so the
// libp2p streams are paused and resumed with megabytes buffered in libp2p
// (the case that once reset the stream after about 18 MB: a pause made
// while resume() hands over those bytes did not stick). Meanwhile each
// client calls a small RPC on the server every 50 ms over the connection
// that carries its transfer. Checks: both transfers complete, every byte
// matches (a running SHA-256 on the server's source and on each consumer),
// the server reports both as served and nothing else, every RPC call
// succeeds, and the bytes in flight between a source and its consumer stay
// bounded (no buffering of the image in RAM). About 15 s of CPU; 25-35 s
// wall time on a busy 2-core machine. Nodes and services are stopped in afterEach.

import { createHash } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Libp2p } from '@libp2p/interface'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createLibp2pHost,
  generateIdentity,
  type ImageTransferEvent,
  ImageTransferService,
  type ImageTransferServiceOptions,
  RpcService,
} from '../../net/index.ts'

const IMAGE_BYTES = 256 * 1024 * 1024
const CHUNK_BYTES = 64 * 1024
const PATTERN_BYTES = 1024 * 1024
/** Consumer stalls: one every 6-18 MiB, each 100-500 ms. */
const STALL_EVERY_BYTES_MIN = 6 * 1024 * 1024
const STALL_EVERY_BYTES_SPREAD = 12 * 1024 * 1024
const STALL_MS_MIN = 100
const STALL_MS_SPREAD = 400
/**
 * What may be in flight between a source and its consumer: what libp2p
 * held during a pause (at most the yamux window, 16 MiB) moves into the
 * client's Readable when it resumes, which grants a fresh window (16 MiB
 * more); plus socket and consumer buffers. About 33 MiB is seen; far below
 * the image, so this catches any buffering of it.
 */
const IN_FLIGHT_BYTES_MAX = 48 * 1024 * 1024
const RPC_INTERVAL_MS = 50
const RPC_TIMEOUT_MS = 10_000
/** Generous: the machine may be shared (about 15 s quiet, 25-35 s under a load of 10-15 on 2 cores). */
const TEST_TIMEOUT_MS = 120_000
const FETCH_TIMEOUT_MS = 100_000
const HASH = 'a'.repeat(64)

const nodes = new Set<Libp2p>()
const services = new Set<{ stop(): Promise<void> }>()

afterEach(async () => {
  for (const service of services) await service.stop()
  services.clear()
  for (const node of nodes) await node.stop()
  nodes.clear()
})

async function startNode(): Promise<Libp2p> {
  const node = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
  nodes.add(node)
  return node
}

/** Counts bytes as they leave a source and reach a consumer, keeping the largest gap. */
class InFlight {
  produced = 0
  consumed = 0
  maxBytes = 0
  produce(bytes: number): void {
    this.produced += bytes
    this.maxBytes = Math.max(this.maxBytes, this.produced - this.consumed)
  }
  consume(bytes: number): void {
    this.consumed += bytes
  }
}

/** The generated image: deterministic, never stored whole; hashes what it yields. */
function imageSource(pattern: Buffer, inFlight: InFlight, hash: ReturnType<typeof createHash>): Readable {
  return Readable.from(
    (function* () {
      for (let offset = 0, index = 0; offset < IMAGE_BYTES; offset += CHUNK_BYTES, index++) {
        const start = offset % PATTERN_BYTES
        const chunk = Buffer.from(pattern.subarray(start, start + CHUNK_BYTES))
        chunk.writeUInt32BE(index, 0)
        hash.update(chunk)
        inFlight.produce(chunk.byteLength)
        yield chunk
      }
    })(),
    { objectMode: false, highWaterMark: CHUNK_BYTES },
  )
}

/** A consumer that writes in bursts, like a disk writer: now and then it stalls for a while. */
function stallingSink(seed: number, inFlight: InFlight, hash: ReturnType<typeof createHash>): Writable {
  const random = mulberry32(seed)
  let nextStallAt = STALL_EVERY_BYTES_MIN + random() * STALL_EVERY_BYTES_SPREAD
  let received = 0
  return new Writable({
    highWaterMark: 256 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk)
      received += chunk.byteLength
      inFlight.consume(chunk.byteLength)
      if (received < nextStallAt) {
        setImmediate(callback)
        return
      }
      nextStallAt = received + STALL_EVERY_BYTES_MIN + random() * STALL_EVERY_BYTES_SPREAD
      setTimeout(callback, STALL_MS_MIN + random() * STALL_MS_SPREAD)
    },
  })
}

/** Calls `ping` on `to` every RPC_INTERVAL_MS until stopped; every call must succeed. */
function keepCalling(rpc: RpcService, to: string): { stop: () => Promise<{ calls: number; maxMs: number }> } {
  let running = true
  let calls = 0
  let maxMs = 0
  let failure: unknown = null
  const loop = (async () => {
    while (running) {
      const started = Date.now()
      await rpc.call(to, 'ping', { started }, { timeoutMs: RPC_TIMEOUT_MS })
      calls++
      maxMs = Math.max(maxMs, Date.now() - started)
      await new Promise((resolve) => setTimeout(resolve, RPC_INTERVAL_MS))
    }
  })().catch((err: unknown) => {
    failure = err
  })
  return {
    stop: async () => {
      running = false
      await loop
      if (failure !== null) throw failure
      return { calls, maxMs }
    },
  }
}

describe('ImageTransferService with large images', () => {
  it(
    'delivers a 256 MiB image intact to two slow, stalling receivers at once while RPCs keep flowing on the same connection',
    async () => {
      const pattern = Buffer.alloc(PATTERN_BYTES)
      const random = mulberry32(7)
      for (let at = 0; at < PATTERN_BYTES; at += 4) pattern.writeUInt32LE(Math.floor(random() * 2 ** 32), at)

      const serverNode = await startNode()
      const flights = new Map<string, InFlight>()
      const sourceHashes: string[] = []
      const events: ImageTransferEvent[] = []
      const serverOptions: ImageTransferServiceOptions = {
        open: async (_hash, context) => {
          const inFlight = new InFlight()
          flights.set(context.peerId, inFlight)
          const hash = createHash('sha256')
          const stream = imageSource(pattern, inFlight, hash)
          stream.on('end', () => sourceHashes.push(hash.digest('hex')))
          return { stream, sizeBytes: IMAGE_BYTES }
        },
        authorize: () => true,
        onEvent: (event) => events.push(event),
      }
      const server = new ImageTransferService(serverNode, serverOptions)
      services.add(server)
      await server.start()
      const serverRpc = new RpcService(serverNode)
      services.add(serverRpc)
      serverRpc.register('ping', (params) => params)
      await serverRpc.start()
      const serverAddr = serverNode.getMultiaddrs()[0]!.toString()

      const clients = await Promise.all(
        [1, 2].map(async (seed) => {
          const node = await startNode()
          const images = new ImageTransferService(node)
          services.add(images)
          const rpc = new RpcService(node)
          services.add(rpc)
          // The RPC dials first, so the fetch shares its connection.
          await rpc.call(serverAddr, 'ping', {}, { timeoutMs: RPC_TIMEOUT_MS })
          return { seed, node, images, rpc }
        }),
      )

      const started = Date.now()
      const callers = clients.map((client) => keepCalling(client.rpc, serverAddr))
      const results = await Promise.allSettled(
        clients.map(async (client) => {
          const fetched = await client.images.fetch(serverAddr, HASH, { timeoutMs: FETCH_TIMEOUT_MS })
          expect(fetched.sizeBytes).toBe(IMAGE_BYTES)
          const hash = createHash('sha256')
          const inFlight = flights.get(client.node.peerId.toString())!
          await pipeline(fetched.stream, stallingSink(client.seed, inFlight, hash))
          return { bytes: inFlight.consumed, hash: hash.digest('hex') }
        }),
      )
      const elapsedMs = Date.now() - started
      const rpcStats = await Promise.all(callers.map((caller) => caller.stop()))

      for (const result of results) {
        if (result.status === 'rejected') throw result.reason
      }
      const received = results.map((result) => (result.status === 'fulfilled' ? result.value : null))
      expect(sourceHashes).toHaveLength(2)
      expect(sourceHashes[0]).toBe(sourceHashes[1])
      for (const result of received) {
        expect(result?.bytes).toBe(IMAGE_BYTES)
        expect(result?.hash).toBe(sourceHashes[0])
      }
      expect(events.filter((event) => event.type === 'served')).toHaveLength(2)
      expect(events.filter((event) => event.type !== 'served')).toEqual([])
      expect(flights.size).toBe(2)
      for (const inFlight of flights.values()) expect(inFlight.maxBytes).toBeLessThan(IN_FLIGHT_BYTES_MAX)
      for (const stats of rpcStats) expect(stats.calls).toBeGreaterThan(elapsedMs / (RPC_INTERVAL_MS * 20))
      for (const client of clients) expect(client.node.getConnections(serverNode.peerId)).toHaveLength(1)
      console.log(
        `image-transfer-large: ${((2 * IMAGE_BYTES) / 1024 ** 2).toFixed(0)} MiB in ${elapsedMs} ms; ` +
          `in flight max ${[...flights.values()].map((f) => (f.maxBytes / 1024 ** 2).toFixed(1)).join(', ')} MiB; ` +
          `rpc calls ${rpcStats.map((s) => s.calls).join(', ')}, slowest ${Math.max(...rpcStats.map((s) => s.maxMs))} ms`,
      )
    },
    TEST_TIMEOUT_MS,
  )
})

/** A small seeded PRNG (mulberry32): the same stalls on every run. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
