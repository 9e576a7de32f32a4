// The proxy's pool of kept-alive upstream connections
// (src/proxy/upstream-pool.ts) between a front server and a backend on
// loopback, with the backend counting the connections it gets and sees
// closed. Checks that a connection serves the next request while it is
// idle for less than idleMs (also when it is used again and again for
// longer than idleMs in all), that the pool's one sweep closes it once it
// has been idle for idleMs, and that many requests at once over the pool
// each get their own answer.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { upstreamRequestHead } from '../../src/proxy/forward-headers.ts'
import { type ExchangeOwner, UpstreamPool } from '../../src/proxy/upstream-pool.ts'
import { waitFor } from '../support/process-cluster.ts'
import { httpCall } from './proxy-fixture.ts'

const HOST = '127.0.0.1'
/** Long enough that a busy machine's event-loop delays do not make a connection expire between uses. */
const IDLE_MS = 1_000
const WAIT_MS = 5_000

let backend: Server
let front: Server
let pool: UpstreamPool
let frontPort = 0
let opened = 0
let closed = 0

const owner: ExchangeOwner<null> = {
  upstreamFailed(_request, response, _context, error) {
    response.writeHead(502, { 'content-type': 'text/plain' })
    response.end(`upstream failed: ${error.code}`)
  },
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen({ host: HOST, port: 0 }, () => resolve()))
  return (server.address() as AddressInfo).port
}

beforeAll(async () => {
  backend = createServer((request, response) => {
    request.resume()
    request.on('end', () => {
      const body = JSON.stringify({ url: request.url, port: request.socket.remotePort })
      response.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      })
      response.end(body)
    })
  })
  // The backend keeps connections far longer than the pool does: the pool must close them itself.
  backend.keepAliveTimeout = 60_000
  backend.on('connection', (socket) => {
    opened += 1
    socket.once('close', () => {
      closed += 1
    })
  })
  const backendPort = await listen(backend)
  pool = new UpstreamPool({ connectTimeoutMs: WAIT_MS, idleMs: IDLE_MS })
  front = createServer((request: IncomingMessage, response: ServerResponse) => {
    const head = upstreamRequestHead(request, {
      forwarded: { for: HOST, proto: 'http', host: request.headers.host ?? '' },
      authorization: null,
      hop: null,
      upgrade: false,
      chunked: false,
    })
    pool.exchange({ address: HOST, port: backendPort }, request, response, head, owner, null)
  })
  frontPort = await listen(front)
})

afterAll(async () => {
  pool?.close()
  for (const server of [front, backend]) {
    server?.closeAllConnections()
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()))
  }
})

async function get(path: string): Promise<{ url: string; port: number }> {
  const answer = await httpCall({ host: HOST, port: frontPort, path })
  expect(answer.status).toBe(200)
  return JSON.parse(answer.text) as { url: string; port: number }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Waits until the pool holds no connection and the backend saw every one it opened closed. */
async function drained(): Promise<void> {
  await waitFor(
    () => pool.counts.idle === 0 && pool.counts.busy === 0 && closed === opened,
    'the pool to close its idle connections',
    IDLE_MS + WAIT_MS,
  )
}

describe('the upstream pool', () => {
  it('serves the next request on the same connection while it has been idle for less than idleMs', async () => {
    await drained()
    const before = opened
    const first = await get('/a')
    expect(pool.counts).toEqual({ idle: 1, busy: 0 })
    // Used again and again, each time before idleMs, for longer than idleMs in all.
    for (const path of ['/b', '/c', '/d']) {
      await sleep(IDLE_MS / 2)
      expect((await get(path)).port).toBe(first.port)
    }
    expect(opened - before).toBe(1)
  })

  it('closes a connection once it has been idle for idleMs, not before', async () => {
    await drained()
    const before = closed
    await get('/once')
    const idleAt = performance.now()
    expect(pool.counts.idle).toBe(1)
    await waitFor(() => closed > before, 'the idle connection to be closed', IDLE_MS + WAIT_MS)
    expect(performance.now() - idleAt).toBeGreaterThanOrEqual(IDLE_MS - 50)
    expect(pool.counts).toEqual({ idle: 0, busy: 0 })
  })

  it('gives each of many requests at once its own answer', async () => {
    const paths = Array.from({ length: 40 }, (_, i) => `/many/${i}`)
    const answers = await Promise.all(paths.map((path) => get(path)))
    expect(answers.map((answer) => answer.url)).toEqual(paths)
    expect(pool.counts.busy).toBe(0)
  })
})
