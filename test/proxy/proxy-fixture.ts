// A two-host cluster for the proxy tests, all on loopback: one replicated
// state (a fake backend applying commands at once, as in the API tests)
// that both "nodes" read, as replicas would. The state's mesh range is
// 127.0.0.0/24, so node-a's mesh IP is 127.0.0.1 and node-b's 127.0.0.2, and
// vclusters get subnets of 127.16.0.0/16: every address the proxy dials is
// a loopback address a test server can listen on. A fake Jupyter (HTTP echo
// of what it received, a slow stream, a body echo, WebSocket echo) stands
// in vnode 0 on its vnode IP.

import { createHash, randomBytes } from 'node:crypto'
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
} from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { pino } from 'pino'
import { type Command, encodeCommand } from '../../src/state/cluster-state.ts'
import type { Vcluster } from '../../src/state/vcluster-state.ts'
import { FakeBackend, sessionFor } from '../api/api-fixture.ts'
import { serveEcho } from './ws-frames.ts'

export const NODE_A = 'node-a'
export const NODE_B = 'node-b'
/** Well-formed WireGuard public keys (the state only keeps well-formed ones). */
export const MESH_KEY_A = `${'A'.repeat(43)}=`
export const MESH_KEY_B = `${'B'.repeat(42)}A=`
export const MESH_IP_A = '127.0.0.1'
export const MESH_IP_B = '127.0.0.2'
const BUSYBOX = 'cd'.repeat(32)

/** A pino logger whose lines the test can read. */
export function capturedLogger(): { logger: pino.Logger; lines: () => Array<Record<string, unknown>> } {
  const lines: string[] = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) })
  return { logger, lines: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) }
}

export class ProxyCluster {
  readonly backend = new FakeBackend()

  get state() {
    return this.backend.state
  }

  apply(command: Command): void {
    const result = this.backend.state.apply(encodeCommand({ ...command, at: this.backend.nowMs } as Command))
    if (!result.ok) throw new Error(`${command.type} was refused: ${result.error.message}`)
  }

  /**
   * node-a founds the cluster, node-b joins; both on the mesh, both with
   * room; users alice and bob. `clusterNet` replaces the vclusters' loopback
   * range (the bench puts vnode 0 in a network namespace).
   */
  static create(options: { clusterNet?: string } = {}): ProxyCluster {
    const cluster = new ProxyCluster()
    const a = cluster.backend
    cluster.apply({
      type: 'cluster.init',
      at: 0,
      clusterId: 'proxy-test',
      member: memberInfo(NODE_A, MESH_KEY_A, ''),
      admin: { name: 'admin', passwordHash: 'unused' },
      settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
      allocation: { clusterNet: options.clusterNet ?? '127.16.0.0/16', subnetPrefix: 24 },
      mesh: { network: '127.0.0.0/24' },
    })
    cluster.apply({
      type: 'token.create',
      at: 0,
      id: 'join-b',
      secretHash: 'hash-b',
      expiresAt: a.nowMs + 3_600_000,
      createdBy: 'admin',
    })
    cluster.apply({
      type: 'member.join',
      at: 0,
      tokenId: 'join-b',
      secretHash: 'hash-b',
      member: memberInfo(NODE_B, MESH_KEY_B, ''),
    })
    for (const host of [NODE_A, NODE_B])
      cluster.apply({
        type: 'host.capacity',
        at: 0,
        host,
        capacity: { cpuCores: 16, memoryMb: 32_000, diskMb: 100_000 },
      })
    for (const name of ['alice', 'bob'])
      cluster.apply({
        type: 'user.add',
        at: 0,
        name,
        role: 'user',
        group: 'user',
        passwordHash: 'unused',
        sshKey: { publicKey: '', privateKey: '' },
      })
    cluster.apply({
      type: 'group.quota',
      at: 0,
      name: 'user',
      quota: { vclusters: 16, vnodes: 16, cpuCores: 64, memoryMb: 64_000, diskMb: 64_000 },
    })
    cluster.apply({ type: 'session.key', at: 0, key: randomBytes(32).toString('hex') })
    cluster.apply({
      type: 'image.register',
      at: 0,
      id: BUSYBOX,
      name: 'busybox',
      owner: 'admin',
      visibility: 'public',
      sizeBytes: 1024,
    })
    const meshA = cluster.state.view.members[NODE_A]?.meshIp
    const meshB = cluster.state.view.members[NODE_B]?.meshIp
    if (meshA !== MESH_IP_A || meshB !== MESH_IP_B)
      throw new Error(
        `The fixture expected mesh IPs ${MESH_IP_A} and ${MESH_IP_B}, got ${meshA} and ${meshB}.`,
      )
    return cluster
  }

  /** Records where a node's portal listens, as the node announces it. */
  setPortal(id: string, portal: string): void {
    this.apply({
      type: 'member.update',
      at: 0,
      member: memberInfo(id, id === NODE_A ? MESH_KEY_A : MESH_KEY_B, portal),
    })
  }

  /** A vcluster of `owner` with its one vnode on `host`, reported running (unless told otherwise). */
  vcluster(owner: string, name: string, host: string, options: { running?: boolean } = {}): Vcluster {
    const other = host === NODE_A ? NODE_B : NODE_A
    this.apply({ type: 'host.drain', at: 0, host: other })
    this.apply({
      type: 'vcluster.create',
      at: 0,
      owner,
      name,
      nodes: 1,
      image: 'busybox',
      limits: { cpuCores: 1, memoryMb: 64, diskMb: 64 },
      secret: randomBytes(16).toString('hex'),
    })
    this.apply({ type: 'host.undrain', at: 0, host: other })
    const vcluster = Object.values(this.state.view.vclusters).find(
      (vc) => vc.owner === owner && vc.name === name && vc.status !== 'deleting',
    )!
    if (vcluster.vnodes[0]?.host !== host)
      throw new Error(`vnode 0 of ${owner}/${name} did not land on ${host}.`)
    if (options.running !== false)
      this.apply({ type: 'vnode.observed', at: 0, vcluster: vcluster.id, index: 0, state: 'running', host })
    return vcluster
  }

  cookie(user: string, ttlMs?: number): string {
    return sessionFor(this.backend, user, ttlMs).cookie
  }
}

function memberInfo(id: string, meshPublicKey: string, portal: string) {
  const ip = id === NODE_A ? MESH_IP_A : MESH_IP_B
  return {
    id,
    name: id === NODE_A ? 'host-a' : 'host-b',
    address: `/ip4/${ip}/tcp/1`,
    portal,
    meshPublicKey,
    meshEndpoint: `${ip}:51820`,
  }
}

export interface Seen {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
}

/**
 * The stand-in for Jupyter in vnode 0: answers every request with JSON of
 * what it received; `/slow` sends a first chunk and the rest only once
 * `release()` is called; `/echo` streams the request body back; upgrades are
 * WebSocket echoes that prefix what they send with the vnode's IP.
 */
export class FakeJupyter {
  readonly server: Server
  readonly seen: Seen[] = []
  readonly upgrades: Seen[] = []
  private readonly tunnels = new Set<Duplex>()
  private releases: Array<() => void> = []

  private constructor(server: Server) {
    this.server = server
  }

  static async start(address: string, port = 0): Promise<FakeJupyter> {
    const server = createServer()
    const jupyter = new FakeJupyter(server)
    const record = (request: IncomingMessage): Seen => ({
      method: request.method ?? '',
      url: request.url ?? '',
      headers: { ...request.headers },
    })
    server.on('request', (request, response) => {
      const seen = record(request)
      jupyter.seen.push(seen)
      if (request.url?.endsWith('/slow')) {
        response.writeHead(200, { 'content-type': 'text/plain' })
        response.write('first;')
        jupyter.releases.push(() => response.end('last'))
        return
      }
      if (request.url?.endsWith('/echo')) {
        response.writeHead(200, { 'content-type': 'application/octet-stream' })
        request.pipe(response)
        return
      }
      request.resume()
      request.on('end', () => {
        response.writeHead(200, [
          'content-type',
          'application/json',
          'set-cookie',
          'jupyter-a=1; Path=/',
          'set-cookie',
          'jupyter-b=2; Path=/',
        ])
        response.end(JSON.stringify({ ...seen, vnode: address }))
      })
    })
    server.on('upgrade', (request, socket, head: Buffer) => {
      jupyter.upgrades.push(record(request))
      jupyter.tunnels.add(socket)
      socket.once('close', () => jupyter.tunnels.delete(socket))
      serveEcho(request, socket, head, `${address}:`)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: address, port }, () => resolve())
    })
    return jupyter
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port
  }

  /** Lets every held /slow response finish. */
  release(): void {
    for (const finish of this.releases.splice(0)) finish()
  }

  async close(): Promise<void> {
    this.release()
    for (const socket of this.tunnels) socket.destroy()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

export interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  text: string
}

/** One HTTP request on its own connection; resolves with the whole answer. */
export function httpCall(options: {
  host: string
  port: number
  path: string
  method?: string
  headers?: Record<string, string>
  body?: Buffer
  timeoutMs?: number
}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      {
        host: options.host,
        port: options.port,
        path: options.path,
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
        agent: false,
        timeout: options.timeoutMs ?? 10_000,
      },
      (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('error', reject)
        response.on('end', () => {
          const body = Buffer.concat(chunks)
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body,
            text: body.toString(),
          })
        })
      },
    )
    request.on('timeout', () => request.destroy(new Error(`no answer from ${options.path} in time`)))
    request.on('error', reject)
    request.end(options.body)
  })
}
