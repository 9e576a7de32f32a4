// The workspace proxy on real loopback sockets: two nodes' portals (node-a
// on 127.0.0.1, node-b on 127.0.0.12 with its mesh address 127.0.0.2), each
// served by its proxy worker threads in front of its app, over one
// replicated state, and fake Jupyters listening on the vnode IPs. Checks
// who gets through (owner and admin; another user gets the 404 a missing
// workspace gets; no session gets 401 or, in a browser, the login page),
// that Jupyter's token is injected and the portal's cookies are not passed
// on, X-Forwarded-*, the hop to the vnode's host over the mesh listener and
// the refusal of forged, expired, misdirected and other-path hop headers,
// streaming in both directions, WebSocket upgrades (local and across the
// hop) that survive route changes, the error sentences, and the connection
// bound.

import { randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { signHop } from '../../src/proxy/hop-token.ts'
import { type PortalProxy, registerWorkspaceProxy } from '../../src/proxy/register-proxy.ts'
import { hashPassword } from '../../src/security/password.ts'
import type { Vcluster } from '../../src/state/vcluster-state.ts'
import { portal } from '../api/api-fixture.ts'
import { waitFor } from '../support/process-cluster.ts'
import {
  FakeJupyter,
  httpCall,
  MESH_IP_B,
  NODE_A,
  NODE_B,
  ProxyCluster,
  type Seen,
  sha256,
} from './proxy-fixture.ts'
import { openWebSocket } from './ws-frames.ts'

const HOST_A = '127.0.0.1'
const HOST_B = '127.0.0.12'

let cluster: ProxyCluster
let local: Vcluster
let remote: Vcluster
let jupyters: FakeJupyter[] = []
let workspacePort = 0
const apps: FastifyInstance[] = []
let proxyB: PortalProxy
let portA = 0
let portB = 0

async function startNode(
  app: FastifyInstance,
  selfId: string,
  host: string,
  extra: { connectionsMax?: number } = {},
): Promise<{ port: number; portal: PortalProxy }> {
  const portalProxy = registerWorkspaceProxy(app, {
    state: cluster.state,
    selfId,
    now: () => cluster.backend.nowMs,
    workspacePort,
    connectTimeoutMs: 1_000,
    hopListenRetryMs: 100,
    ...extra,
  })
  apps.push(app)
  const port = await portalProxy.listen({ host, port: 0 })
  return { port, portal: portalProxy }
}

beforeAll(async () => {
  cluster = ProxyCluster.create()
  local = cluster.vcluster('alice', 'local', NODE_A)
  remote = cluster.vcluster('alice', 'remote', NODE_B)
  const first = await FakeJupyter.start(local.vnodes[0]!.ip)
  workspacePort = first.port
  jupyters = [first, await FakeJupyter.start(remote.vnodes[0]!.ip, workspacePort)]
  const a = await startNode(portal(cluster.backend), NODE_A, HOST_A)
  const b = await startNode(Fastify(), NODE_B, HOST_B)
  portA = a.port
  portB = b.port
  proxyB = b.portal
  cluster.setPortal(NODE_A, `${HOST_A}:${portA}`)
  cluster.setPortal(NODE_B, `${HOST_B}:${portB}`)
  await waitFor(
    async () => proxyB.hopsListening === `${MESH_IP_B}:${portB}`,
    "node-b's hop listener on its mesh address",
    5_000,
  )
})

afterAll(async () => {
  for (const app of apps.splice(0)) await app.close()
  for (const jupyter of jupyters) await jupyter.close()
})

function viaA(path: string, headers: Record<string, string> = {}, method = 'GET', body?: Buffer) {
  return httpCall({
    host: HOST_A,
    port: portA,
    path,
    headers,
    method,
    ...(body === undefined ? {} : { body }),
  })
}

function seenBy(answer: { text: string }): Seen & { vnode: string } {
  return JSON.parse(answer.text) as Seen & { vnode: string }
}

function errorCode(answer: { text: string }): string {
  return (JSON.parse(answer.text) as { error: { code: string } }).error.code
}

describe('who gets through', () => {
  it("serves the owner's workspace with Jupyter's token, X-Forwarded-* and without the portal's cookies", async () => {
    const answer = await viaA('/go/alice/local/api/status?x=1', {
      cookie: `${cluster.cookie('alice')}; docklet_csrf=abc; jupyter-xsrf=keep`,
      authorization: 'token guessed',
      'x-forwarded-for': '6.6.6.6',
      'x-csrf-token': 'abc',
    })
    expect(answer.status).toBe(200)
    const seen = seenBy(answer)
    expect(seen.vnode).toBe(local.vnodes[0]!.ip)
    expect(seen.url).toBe('/go/alice/local/api/status?x=1')
    expect(seen.headers.authorization).toBe(`token ${local.secret}`)
    expect(seen.headers.cookie).toBe('jupyter-xsrf=keep')
    expect(seen.headers['x-csrf-token']).toBeUndefined()
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(seen.headers['x-forwarded-proto']).toBe('http')
    expect(seen.headers['x-forwarded-host']).toBe(`${HOST_A}:${portA}`)
    expect(seen.headers.host).toBe(`${HOST_A}:${portA}`)
    // Repeated response headers survive the trip.
    expect(answer.headers['set-cookie']).toEqual(['jupyter-a=1; Path=/', 'jupyter-b=2; Path=/'])
  })

  it('lets an admin in, and gives another user the 404 a workspace that does not exist gets', async () => {
    const admin = await viaA('/go/alice/local/tree', { cookie: cluster.cookie('admin') })
    expect(admin.status).toBe(200)
    const bob = await viaA('/go/alice/local/tree', { cookie: cluster.cookie('bob') })
    const missing = await viaA('/go/alice/nothing/tree', { cookie: cluster.cookie('bob') })
    expect(bob.status).toBe(404)
    expect(missing.status).toBe(404)
    expect(errorCode(bob)).toBe('ERR_WORKSPACE_NOT_FOUND')
    expect(errorCode(missing)).toBe('ERR_WORKSPACE_NOT_FOUND')
    expect(bob.text).not.toContain('alice/local is')
  })

  it('answers 401 without a valid session, and sends a browser to the login page', async () => {
    const none = await viaA('/go/alice/local/api/status')
    expect(none.status).toBe(401)
    expect(errorCode(none)).toBe('ERR_UNAUTHENTICATED')
    const expired = await viaA('/go/alice/local/api/status', { cookie: cluster.cookie('alice', -1) })
    expect(expired.status).toBe(401)
    expect(errorCode(expired)).toBe('ERR_SESSION_EXPIRED')
    const token = cluster.cookie('alice').slice('docklet_session='.length)
    const tampered = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A')
    const forged = await viaA('/go/alice/local/api/status', { cookie: `docklet_session=${tampered}` })
    expect(forged.status).toBe(401)
    const browser = await viaA('/go/alice/local/tree?a=b', { accept: 'text/html,application/xhtml+xml' })
    expect(browser.status).toBe(302)
    expect(browser.headers.location).toBe(`/login?next=${encodeURIComponent('/go/alice/local/tree?a=b')}`)
  })

  it('accepts the session a login on the portal sets', async () => {
    // Login checks an argon2 hash: give alice a real one first.
    cluster.apply({
      type: 'user.password',
      at: 0,
      name: 'alice',
      passwordHash: await hashPassword('alice-pw-1'),
    })
    const login = await httpCall({
      host: HOST_A,
      port: portA,
      path: '/api/v1/session',
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: Buffer.from(JSON.stringify({ name: 'alice', password: 'alice-pw-1' })),
    })
    expect(login.status).toBe(200)
    const cookie = (login.headers['set-cookie'] ?? []).map((line) => line.split(';')[0]).join('; ')
    const answer = await viaA('/go/alice/local/api/status', { cookie })
    expect(answer.status).toBe(200)
  })

  it('sends the bare workspace path to the one with a slash, keeping the query', async () => {
    const answer = await viaA('/go/alice/local?token=x', { cookie: cluster.cookie('alice') })
    expect(answer.status).toBe(302)
    expect(answer.headers.location).toBe('/go/alice/local/?token=x')
  })

  it('refuses a state-changing request from another site', async () => {
    const answer = await viaA(
      '/go/alice/local/api/contents',
      {
        cookie: cluster.cookie('alice'),
        origin: 'http://evil.example',
      },
      'POST',
      Buffer.from('{}'),
    )
    expect(answer.status).toBe(403)
    expect(errorCode(answer)).toBe('ERR_CSRF')
  })
})

describe('across hosts', () => {
  it("reaches vnode 0 on another host through that node's mesh listener, token added there", async () => {
    const before = jupyters[1]!.seen.length
    const answer = await viaA('/go/alice/remote/api/kernels', {
      cookie: `${cluster.cookie('alice')}; other=1`,
      'x-forwarded-for': '6.6.6.6',
    })
    expect(answer.status).toBe(200)
    const seen = seenBy(answer)
    expect(seen.vnode).toBe(remote.vnodes[0]!.ip)
    expect(seen.headers.authorization).toBe(`token ${remote.secret}`)
    expect(seen.headers['x-docklet-hop']).toBeUndefined()
    expect(seen.headers.cookie).toBe('other=1')
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(seen.headers['x-forwarded-host']).toBe(`${HOST_A}:${portA}`)
    expect(jupyters[1]!.seen.length).toBe(before + 1)
  })

  it('refuses hop headers that are forged, expired, for another node or for another path', async () => {
    const key = cluster.state.view.sessionKey
    const path = '/go/alice/remote/api/kernels'
    const now = cluster.backend.nowMs
    const hop = (claims: Partial<{ target: string; url: string; expiresAt: number }>, signingKey = key) =>
      signHop(signingKey, { target: NODE_B, user: 'alice', url: path, expiresAt: now + 10_000, ...claims })
    const atB = (header: string, where = MESH_IP_B, at = path) =>
      httpCall({ host: where, port: portB, path: at, headers: { 'x-docklet-hop': header } })
    expect((await atB(hop({}))).status).toBe(200)
    for (const bad of [
      hop({}, randomBytes(32).toString('hex')),
      hop({ expiresAt: now - 1 }),
      hop({ expiresAt: now + 3_600_000 }),
      hop({ target: NODE_A }),
      hop({ url: '/go/alice/remote/other' }),
      `${hop({}).split('.')[0]}.AAAA`,
      'garbage',
    ]) {
      const answer = await atB(bad)
      expect(answer.status, bad).toBe(403)
      expect(errorCode(answer)).toBe('ERR_HOP_INVALID')
    }
    // A good header replayed on another path, and on the public portal for a node it is not for.
    expect((await atB(hop({}), MESH_IP_B, '/go/alice/remote/api/sessions')).status).toBe(403)
    const atA = await httpCall({ host: HOST_A, port: portA, path, headers: { 'x-docklet-hop': hop({}) } })
    expect(atA.status).toBe(403)
    // The mesh listener serves hops only.
    const plain = await httpCall({
      host: MESH_IP_B,
      port: portB,
      path,
      headers: { cookie: cluster.cookie('alice') },
    })
    expect(plain.status).toBe(404)
  })

  it('says so when the host of vnode 0 cannot be reached', async () => {
    cluster.setPortal(NODE_B, `${HOST_B}:1`)
    try {
      const answer = await viaA('/go/alice/remote/api/kernels', { cookie: cluster.cookie('alice') })
      expect(answer.status).toBe(502)
      expect(errorCode(answer)).toBe('ERR_HOST_UNREACHABLE')
      expect(answer.text).toContain('host-b')
    } finally {
      cluster.setPortal(NODE_B, `${HOST_B}:${portB}`)
    }
  })
})

describe('streaming', () => {
  it('passes the first bytes of a response on before the workspace has finished it', async () => {
    const jupyter = jupyters[1]!
    const { first, rest } = await new Promise<{ first: string; rest: string }>((resolve, reject) => {
      const request = httpRequest(
        {
          host: HOST_A,
          port: portA,
          path: '/go/alice/remote/files/slow',
          headers: { cookie: cluster.cookie('alice') },
          agent: false,
        },
        (response) => {
          let first = ''
          let rest = ''
          response.on('data', (chunk: Buffer) => {
            if (first === '') {
              first = chunk.toString()
              // Only now may the workspace finish: the first chunk came through on its own.
              jupyter.release()
            } else rest += chunk.toString()
          })
          response.on('end', () => resolve({ first, rest }))
          response.on('error', reject)
        },
      )
      request.on('error', reject)
      request.end()
    })
    expect(first).toBe('first;')
    expect(rest).toBe('last')
  })

  it('streams a large request body through the hop and back unchanged', async () => {
    const body = randomBytes(8 * 1024 * 1024)
    const answer = await viaA(
      '/go/alice/remote/api/echo',
      { cookie: cluster.cookie('alice'), 'content-type': 'application/octet-stream' },
      'PUT',
      body,
    )
    expect(answer.status).toBe(200)
    expect(answer.body.length).toBe(body.length)
    expect(sha256(answer.body)).toBe(sha256(body))
  })
})

describe('WebSockets', () => {
  it('opens a WebSocket to a local and to a remote vnode 0, with the token on the upgrade', async () => {
    for (const [vcluster, jupyter] of [
      [local, jupyters[0]!],
      [remote, jupyters[1]!],
    ] as const) {
      const ws = await openWebSocket(HOST_A, portA, `/go/alice/${vcluster.name}/api/kernels/k1/channels`, {
        cookie: cluster.cookie('alice'),
        origin: `http://${HOST_A}:${portA}`,
      })
      try {
        expect(ws.status).toBe(101)
        expect(ws.acceptOk).toBe(true)
        ws.send('hello')
        expect(await ws.receive()).toBe(`${vcluster.vnodes[0]!.ip}:hello`)
        const upgrade = jupyter.upgrades.at(-1)!
        expect(upgrade.headers.authorization).toBe(`token ${vcluster.secret}`)
        expect(upgrade.headers.cookie).toBeUndefined()
        expect(upgrade.headers.origin).toBe(`http://${HOST_A}:${portA}`)
        expect(upgrade.headers.host).toBe(`${HOST_A}:${portA}`)
      } finally {
        ws.close()
      }
    }
  })

  it('refuses an upgrade without a session, from another site, or for another user', async () => {
    const path = '/go/alice/local/terminals/websocket/1'
    const none = await openWebSocket(HOST_A, portA, path)
    expect(none.status).toBe(401)
    const foreign = await openWebSocket(HOST_A, portA, path, {
      cookie: cluster.cookie('alice'),
      origin: 'http://evil.example',
    })
    expect(foreign.status).toBe(403)
    const bob = await openWebSocket(HOST_A, portA, path, { cookie: cluster.cookie('bob') })
    expect(bob.status).toBe(404)
  })

  it('keeps open WebSockets while the route table changes', async () => {
    const ws = await openWebSocket(HOST_A, portA, '/go/alice/remote/api/kernels/k2/channels', {
      cookie: cluster.cookie('alice'),
    })
    try {
      expect(ws.status).toBe(101)
      ws.send('one')
      expect(await ws.receive()).toBe(`${remote.vnodes[0]!.ip}:one`)
      const other = cluster.vcluster('bob', 'churn', NODE_B)
      cluster.apply({ type: 'vcluster.stop', at: 0, vcluster: other.id })
      cluster.apply({ type: 'vcluster.delete', at: 0, vcluster: other.id })
      cluster.setPortal(NODE_B, `${HOST_B}:${portB}`)
      ws.send('two')
      expect(await ws.receive()).toBe(`${remote.vnodes[0]!.ip}:two`)
    } finally {
      ws.close()
    }
  })
})

describe('why a workspace cannot be opened', () => {
  it('says the vcluster is stopped, in a page for a browser', async () => {
    const stopped = cluster.vcluster('alice', 'stopped', NODE_A)
    cluster.apply({ type: 'vcluster.stop', at: 0, vcluster: stopped.id })
    const json = await viaA('/go/alice/stopped/tree', { cookie: cluster.cookie('alice') })
    expect(json.status).toBe(503)
    expect(errorCode(json)).toBe('ERR_WORKSPACE_STOPPED')
    const page = await viaA('/go/alice/stopped/tree', {
      cookie: cluster.cookie('alice'),
      accept: 'text/html',
    })
    expect(page.status).toBe(503)
    expect(page.headers['content-type']).toMatch(/^text\/html/)
    expect(page.text).toContain('The vcluster alice/stopped is stopped; start it to open its workspace.')
  })

  it('says vnode 0 is not running yet, and that nothing answers when no Jupyter listens', async () => {
    cluster.vcluster('alice', 'pending', NODE_A, { running: false })
    const pending = await viaA('/go/alice/pending/tree', { cookie: cluster.cookie('alice') })
    expect(pending.status).toBe(503)
    expect(errorCode(pending)).toBe('ERR_WORKSPACE_NOT_RUNNING')
    // Running, but its vnode IP has no fake Jupyter: like the busybox image, which has none.
    cluster.vcluster('alice', 'bare', NODE_B)
    const bare = await viaA('/go/alice/bare/tree', { cookie: cluster.cookie('alice') })
    expect(bare.status).toBe(503)
    expect(errorCode(bare)).toBe('ERR_WORKSPACE_NO_JUPYTER')
  })

  it('answers 503 past its connection limit instead of queueing', async () => {
    const { port } = await startNode(portal(cluster.backend), NODE_A, HOST_A, { connectionsMax: 1 })
    const jupyter = jupyters[0]!
    const held = new Promise<number>((resolve, reject) => {
      const request = httpRequest(
        {
          host: HOST_A,
          port,
          path: '/go/alice/local/slow',
          headers: { cookie: cluster.cookie('alice') },
          agent: false,
        },
        (response) => {
          response.resume()
          response.on('end', () => resolve(response.statusCode ?? 0))
        },
      )
      request.on('error', reject)
      request.end()
    })
    await waitFor(
      async () => jupyter.seen.some((s) => s.url.endsWith('/slow') && s.headers.host === `${HOST_A}:${port}`),
      'the held request',
      5_000,
    )
    const refused = await httpCall({
      host: HOST_A,
      port,
      path: '/go/alice/local/tree',
      headers: { cookie: cluster.cookie('alice') },
    })
    expect(refused.status).toBe(503)
    expect(errorCode(refused)).toBe('ERR_PROXY_BUSY')
    jupyter.release()
    expect(await held).toBe(200)
    const after = await httpCall({
      host: HOST_A,
      port,
      path: '/go/alice/local/tree',
      headers: { cookie: cluster.cookie('alice') },
    })
    expect(after.status).toBe(200)
  })
})
