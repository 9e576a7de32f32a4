// One-way throughput of Libp2pFrameTransport: two libp2p nodes in this
// process on 127.0.0.1, node A sends fixed-size frames to node B as fast as
// the transport's queue accepts them. Prints JSON.
//
//   node bench/transport/bench-transport.ts [frameBytes=200] [frames=200000]
//   BATCH_BYTES=32768 node bench/transport/bench-transport.ts   (coalescing limit; default 64 KiB)

import {
  createLibp2pHost,
  generateIdentity,
  Libp2pFrameTransport,
  type Libp2pFrameTransportOptions,
} from '../../net/index.ts'

const frameBytes = Number(process.argv[2] ?? 200)
const frames = Number(process.argv[3] ?? 200_000)
const warmupFrames = 5_000
// The producer hands over at most this many frames per event-loop turn, the
// way a Raft driver sends one Ready's messages per turn.
const framesPerTurn = 1_000

async function startPeer(options: Libp2pFrameTransportOptions = {}) {
  const node = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
  const transport = new Libp2pFrameTransport(node, options)
  await transport.start()
  const id = node.peerId.toString()
  return { node, transport, id, address: { id, addrs: node.getMultiaddrs().map(String) } }
}

const a = await startPeer({ batchBytesMax: Number(process.env.BATCH_BYTES ?? 64 * 1024) })
const b = await startPeer()
a.transport.setPeers([b.address])
b.transport.setPeers([a.address])

let received = 0
let receivedBytes = 0
b.transport.onFrame((_from, frame) => {
  received++
  receivedBytes += frame.byteLength
})

async function run(count: number): Promise<{ seconds: number; cpuSeconds: number; refused: number }> {
  const target = received + count
  const frame = new Uint8Array(frameBytes).fill(7)
  const queueLow = 2_048
  let sent = 0
  let refused = 0
  const startedAt = process.hrtime.bigint()
  const cpuAtStart = process.cpuUsage()
  while (received < target) {
    const queued = a.transport.stats()[b.id]?.queuedFrames ?? 0
    if (sent < count && queued < queueLow) {
      const turn = Math.min(framesPerTurn, count - sent)
      for (let i = 0; i < turn; i++) {
        if (a.transport.send(b.id, frame)) sent++
        else refused++
      }
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
  const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9
  const cpu = process.cpuUsage(cpuAtStart)
  return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, refused }
}

await run(warmupFrames)
const { seconds, cpuSeconds, refused } = await run(frames)
const stats = a.transport.stats()[b.id]

await a.transport.stop()
await b.transport.stop()
await a.node.stop()
await b.node.stop()

console.log(
  JSON.stringify(
    {
      bench: 'libp2p-frame-transport-one-way',
      node: process.version,
      frameBytes,
      frames,
      batchBytesMax: Number(process.env.BATCH_BYTES ?? 64 * 1024),
      seconds: Number(seconds.toFixed(3)),
      framesPerSecond: Math.round(frames / seconds),
      megabytesPerSecond: Number(((frames * frameBytes) / seconds / 1e6).toFixed(1)),
      // Both nodes share this process; CPU time is less sensitive to a busy machine than wall time.
      cpuSeconds: Number(cpuSeconds.toFixed(3)),
      framesPerCpuSecond: Math.round(frames / cpuSeconds),
      refusedSends: refused,
      receivedBytes,
      senderDropped: stats?.dropped ?? 0,
    },
    null,
    2,
  ),
)
