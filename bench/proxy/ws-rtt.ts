// The WebSocket echo round trip of bench:proxy: opens one WebSocket to the
// given URL (through a proxy, or straight to the backend), then sends
// --count small text messages one after the other, each after the previous
// echo arrived, and times each round trip. The first --warmup are not
// counted. Prints one JSON line: {median_ms, p99_ms, count}.
//
// Usage: node bench/proxy/ws-rtt.ts --host H --port P --path /go/alice/bench/ws
//          [--cookie 'docklet_session=…'] [--count 300] [--warmup 30]

import { parseArgs } from 'node:util'
import { openWebSocket } from '../../test/proxy/ws-frames.ts'

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    path: { type: 'string', default: '/' },
    cookie: { type: 'string', default: '' },
    count: { type: 'string', default: '300' },
    warmup: { type: 'string', default: '30' },
  },
})
const port = Number(values.port)
const count = Number(values.count)
const warmup = Number(values.warmup)
const headers: Record<string, string> = { origin: `http://${values.host}:${port}` }
if (values.cookie !== '') headers.cookie = values.cookie
const ws = await openWebSocket(values.host, port, values.path, headers)
if (ws.status !== 101) {
  process.stderr.write(
    `The WebSocket handshake through ${values.host}:${port} answered ${ws.status}: ${ws.body}\n`,
  )
  process.exit(1)
}
const times: number[] = []
const message = 'x'.repeat(32)
for (let i = 0; i < warmup + count; i++) {
  const start = performance.now()
  ws.send(message)
  const echo = await ws.receive(5_000)
  const elapsed = performance.now() - start
  if (echo !== message) throw new Error(`The echo came back changed: ${echo.slice(0, 40)}`)
  if (i >= warmup) times.push(elapsed)
}
ws.close()
times.sort((a, b) => a - b)
const at = (p: number) => times[Math.min(times.length - 1, Math.floor(times.length * p))]!
process.stdout.write(
  `${JSON.stringify({ median_ms: Number(at(0.5).toFixed(4)), p99_ms: Number(at(0.99).toFixed(4)), count })}\n`,
)
