// The proxy front on real loopback sockets: worker threads own the portal's
// address, proxy /go/ off the main thread and pass everything else to the
// app. Checks that the app still sees each client's own address and
// connection (one bridge connection per client connection) and gets chunked
// bodies whole; that workspace requests are answered while the main thread
// is blocked for a second (a client in a child process times them); that a
// revoked session stops working in the workers at once; that upstream
// connections are kept alive and chunked uploads stream through; and that
// several workers share the address and a port in use still fails with
// EADDRINUSE; and that a node without a portal forwards mapped ports in a
// worker of its own.

import { spawn } from 'node:child_process'
import { request as httpRequest } from 'node:http'
import { createServer, type Server } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ProxyFront } from '../../src/proxy/proxy-front.ts'
import { type PortalProxy, registerWorkspaceProxy } from '../../src/proxy/register-proxy.ts'
import type { Vcluster } from '../../src/state/vcluster-state.ts'
import { waitFor } from '../support/process-cluster.ts'
import { FakeJupyter, httpCall, NODE_A, ProxyCluster, sha256 } from './proxy-fixture.ts'

const HOST = '127.0.0.1'
/** Test clients come from an address of their own, as clients on the LAN would. */
const CLIENT = '127.0.0.9'
const WAIT_MS = 5_000

let cluster: ProxyCluster
let dev: Vcluster
let jupyter: FakeJupyter
let jupyterConnections = 0
let app: FastifyInstance
let proxy: PortalProxy
let port = 0
let appConnections = 0

beforeAll(async () => {
  cluster = ProxyCluster.create()
  dev = cluster.vcluster('alice', 'dev', NODE_A)
  jupyter = await FakeJupyter.start(dev.vnodes[0]!.ip)
  jupyter.server.on('connection', () => {
    jupyterConnections += 1
  })
  app = Fastify()
  app.get('/whoami', async (request) => ({ ip: request.ip, port: request.socket.remotePort }))
  app.post('/count', async (request) => ({ bytes: (request.body as Buffer).length }))
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_request, body, done) =>
    done(null, body),
  )
  app.server.on('connection', () => {
    appConnections += 1
  })
  proxy = registerWorkspaceProxy(app, {
    state: cluster.state,
    selfId: NODE_A,
    now: () => cluster.backend.nowMs,
    workspacePort: jupyter.port,
  })
  port = await proxy.listen({ host: HOST, port: 0 })
})

afterAll(async () => {
  await app?.close()
  await jupyter?.close()
})

function workspace(path: string, cookie = cluster.cookie('alice')) {
  return httpCall({ host: HOST, port, path: `/go/alice/dev${path}`, headers: { cookie } })
}

/** Sends requests on one kept-alive connection from CLIENT, one after the other. */
async function onOneConnection(paths: string[]): Promise<Array<{ status: number; text: string }>> {
  const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 })
  try {
    const answers: Array<{ status: number; text: string }> = []
    for (const path of paths)
      answers.push(
        await new Promise((resolve, reject) => {
          const request = httpRequest({ host: HOST, port, path, agent, localAddress: CLIENT }, (response) => {
            let text = ''
            response.on('data', (chunk: Buffer) => {
              text += chunk.toString()
            })
            response.on('end', () => resolve({ status: response.statusCode ?? 0, text }))
          })
          request.on('error', reject)
          request.end()
        }),
      )
    return answers
  } finally {
    agent.destroy()
  }
}

describe("the portal's own requests", () => {
  it("reach the app with the client's address, one app connection per client connection", async () => {
    const before = appConnections
    const answers = await onOneConnection(['/whoami', '/whoami', '/nothing'])
    expect(answers.map((a) => a.status)).toEqual([200, 200, 404])
    const first = JSON.parse(answers[0]!.text) as { ip: string; port: number }
    const second = JSON.parse(answers[1]!.text) as { ip: string; port: number }
    expect(first.ip).toBe(CLIENT)
    // The same client connection, seen by the app as one connection with the client's port.
    expect(second.port).toBe(first.port)
    expect(appConnections - before).toBe(1)
  })

  it('get a chunked request body whole', async () => {
    const body = Buffer.alloc(300_000, 7)
    const answer = await new Promise<string>((resolve, reject) => {
      const request = httpRequest(
        {
          host: HOST,
          port,
          path: '/count',
          method: 'POST',
          headers: { 'content-type': 'application/octet-stream' },
          agent: false,
        },
        (response) => {
          let text = ''
          response.on('data', (chunk: Buffer) => {
            text += chunk.toString()
          })
          response.on('end', () => resolve(text))
        },
      )
      request.on('error', reject)
      // No Content-Length: Node sends the body chunked.
      request.write(body.subarray(0, 100_000))
      setTimeout(() => request.end(body.subarray(100_000)), 20)
    })
    expect(JSON.parse(answer)).toEqual({ bytes: body.length })
  })
})

describe('workspaces, off the main thread', () => {
  it('are answered while the main thread is blocked for a second', async () => {
    // The workspace and its client live in another process (this thread is about to stop):
    // it serves vnode 0 of alice/busy, requests it through the proxy every 20 ms for 2.5 s,
    // then reports the slowest answer.
    const busy = cluster.vcluster('alice', 'busy', NODE_A)
    const script = `
      const http = require('node:http')
      const [cookie, vnodeIp, vnodePort] = process.argv.slice(1)
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      const get = () => new Promise((resolve, reject) => {
        const started = performance.now()
        http.get({ host: '${HOST}', port: ${port}, path: '/go/alice/busy/api/status', agent,
          headers: { cookie } }, (response) => {
          response.resume()
          response.on('end', () => resolve({ status: response.statusCode, ms: performance.now() - started }))
        }).on('error', reject)
      })
      const server = http.createServer((request, response) => response.end('ok'))
      server.listen(Number(vnodePort), vnodeIp, async () => {
        await get()
        console.log('started')
        const until = performance.now() + 2500
        let slowest = 0, statuses = new Set()
        while (performance.now() < until) {
          const answer = await get()
          slowest = Math.max(slowest, answer.ms)
          statuses.add(answer.status)
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        console.log(JSON.stringify({ slowest, statuses: [...statuses] }))
        agent.destroy()
        server.close()
      })
    `
    const child = spawn(
      process.execPath,
      ['-e', script, cluster.cookie('alice'), busy.vnodes[0]!.ip, String(jupyter.port)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString()
    })
    try {
      await waitFor(() => output.includes('started'), 'the client in the child process', 10_000)
      await new Promise((resolve) => setTimeout(resolve, 200))
      const blockedUntil = Date.now() + 1_000
      while (Date.now() < blockedUntil) {
        // Busy: no timer, no socket, no message of this thread runs now.
      }
      await exited
      const report = JSON.parse(output.trim().split('\n').at(-1)!) as { slowest: number; statuses: number[] }
      expect(report.statuses).toEqual([200])
      // Had the main thread served them, one request would have waited most of the second.
      expect(report.slowest).toBeLessThan(600)
    } finally {
      child.kill()
    }
  })

  it('refuse a session in every worker once it is revoked', async () => {
    const cookie = cluster.cookie('alice')
    expect((await workspace('/api/status', cookie)).status).toBe(200)
    const token = cookie.slice('docklet_session='.length)
    const claims = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as {
      s: string
      e: number
    }
    cluster.apply({ type: 'session.revoke', at: 0, user: 'alice', session: claims.s, expiresAt: claims.e })
    const answer = await waitFor(
      async () => {
        const refused = await workspace('/api/status', cookie)
        return refused.status === 401 ? refused : undefined
      },
      'the revocation to reach the workers',
      WAIT_MS,
      { intervalMs: 10 },
    )
    expect(JSON.parse(answer.text)).toMatchObject({ error: { code: 'ERR_SESSION_REVOKED' } })
  })

  it('keep upstream connections alive across requests', async () => {
    const before = jupyterConnections
    for (let i = 0; i < 20; i++) expect((await workspace(`/api/contents/${i}`)).status).toBe(200)
    expect(jupyterConnections - before).toBeLessThanOrEqual(2)
    const [stats] = await proxy.stats()
    expect(stats?.upstreamIdle).toBeGreaterThanOrEqual(1)
  })

  it('stream a chunked upload to the workspace and back unchanged', async () => {
    const parts = [Buffer.alloc(70_000, 1), Buffer.alloc(1, 2), Buffer.alloc(200_000, 3)]
    const echoed = await new Promise<Buffer>((resolve, reject) => {
      const request = httpRequest(
        {
          host: HOST,
          port,
          path: '/go/alice/dev/api/echo',
          method: 'PUT',
          headers: { cookie: cluster.cookie('alice') },
          agent: false,
        },
        (response) => {
          const chunks: Buffer[] = []
          response.on('data', (chunk: Buffer) => chunks.push(chunk))
          response.on('end', () => resolve(Buffer.concat(chunks)))
        },
      )
      request.on('error', reject)
      for (const part of parts) request.write(part)
      request.end()
    })
    expect(sha256(echoed)).toBe(sha256(Buffer.concat(parts)))
    const seen = jupyter.seen.at(-1)!
    expect(seen.headers['transfer-encoding']).toBe('chunked')
  })
})

describe('several workers', () => {
  let holder: Server | undefined
  const extra: FastifyInstance[] = []

  afterAll(async () => {
    for (const other of extra) await other.close()
    await new Promise<void>((resolve) => (holder === undefined ? resolve() : holder.close(() => resolve())))
  })

  it('share the portal address, and a port in use still fails with EADDRINUSE', async () => {
    const two = Fastify()
    extra.push(two)
    const front = registerWorkspaceProxy(two, {
      state: cluster.state,
      selfId: NODE_A,
      now: () => cluster.backend.nowMs,
      workspacePort: jupyter.port,
      workers: 2,
    })
    const shared = await front.listen({ host: HOST, port: 0 })
    expect(await front.stats()).toHaveLength(2)
    for (let i = 0; i < 10; i++) {
      const answer = await httpCall({
        host: HOST,
        port: shared,
        path: '/go/alice/dev/api/status',
        headers: { cookie: cluster.cookie('alice') },
      })
      expect(answer.status).toBe(200)
    }

    holder = createServer()
    await new Promise<void>((resolve) => holder!.listen({ host: HOST, port: 0 }, () => resolve()))
    const taken = (holder.address() as { port: number }).port
    const blocked = Fastify()
    extra.push(blocked)
    const refused = registerWorkspaceProxy(blocked, { state: cluster.state, selfId: NODE_A, workers: 2 })
    await expect(refused.listen({ host: HOST, port: taken })).rejects.toMatchObject({ code: 'EADDRINUSE' })
  })
})

describe('port mappings', () => {
  it('are forwarded by a worker of their own on a node without a portal', async () => {
    const front = new ProxyFront({
      state: cluster.state,
      selfId: NODE_A,
      portForwarding: { listenHost: HOST, retryMs: 100 },
    })
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen({ host: HOST, port: 0 }, () => resolve()))
    const publicPort = (probe.address() as { port: number }).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    try {
      await front.start()
      cluster.apply({ type: 'ports.range', at: 0, min: publicPort, max: publicPort })
      cluster.apply({
        type: 'port.add',
        at: 0,
        owner: 'alice',
        vcluster: dev.id,
        index: 0,
        port: jupyter.port,
        protocol: 'tcp',
      })
      await waitFor(
        async () => (await front.stats())[0]?.ports.includes(publicPort),
        'the worker to listen on the mapped port',
        WAIT_MS,
      )
      // Plain TCP to vnode 0: the fake Jupyter answers without any session.
      const answer = await httpCall({ host: HOST, port: publicPort, path: '/tree' })
      expect(answer.status).toBe(200)
      expect(JSON.parse(answer.text)).toMatchObject({ url: '/tree', vnode: dev.vnodes[0]!.ip })
    } finally {
      await front.close()
    }
  })
})
