import { createLibp2pHost, generateIdentity } from '../../net/index.ts'
const batch = Number(process.env.BATCH ?? 65536)
const total = 100 * 1024 * 1024
const a = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
const b = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
let got = 0
let done: () => void
const finished = new Promise<void>((r) => (done = r))
await b.handle('/x/1', (stream) => {
  stream.addEventListener('message', (e) => {
    got += e.data.byteLength
    if (got >= total) done()
  })
})
const s = await a.dialProtocol(b.getMultiaddrs(), '/x/1')
const buf = new Uint8Array(batch)
let sent = 0
const waits: number[] = []
const t0 = performance.now()
while (sent < total) {
  const ok = s.send(buf)
  sent += batch
  if (!ok) {
    const w = performance.now()
    await s.onDrain()
    waits.push(performance.now() - w)
  }
}
await finished
const secs = (performance.now() - t0) / 1000
waits.sort((x, y) => x - y)
console.log({ batch, MBps: (total / secs / 1e6).toFixed(1), drains: waits.length, p50: waits[waits.length >> 1]?.toFixed(2), max: waits.at(-1)?.toFixed(1), over20: waits.filter((w) => w > 20).length })
await a.stop(); await b.stop()
