// Port mappings on real loopback sockets: two nodes' forwarders (node-a on
// 127.0.0.1, node-b on 127.0.0.2, which are also their mesh addresses) over
// the routes view each would get from one replicated state (run here in the
// test's thread; a node runs it in a proxy worker), and TCP echo servers on the vnode IPs standing in
// for services in vnodes. Checks local forwarding with half-close, the hop
// to the vnode's host (and that a hop is never forwarded again), listeners
// that follow the mappings (closing with their connections, reopening, open
// connections kept while other mappings change), a port in use reported and
// taken once free, and the connection bound.

import { randomBytes } from 'node:crypto'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PortForwarder } from '../../src/proxy/port-forwarder.ts'
import { buildRouteView } from '../../src/proxy/proxy-view.ts'
import type { Vcluster } from '../../src/state/vcluster-state.ts'
import { waitFor } from '../support/process-cluster.ts'
import {
  capturedLogger,
  MESH_IP_A,
  MESH_IP_B,
  NODE_A,
  NODE_B,
  ProxyCluster,
  sha256,
} from './proxy-fixture.ts'

const RETRY_MS = 200
/** Test clients come from an address that is no node's, as clients on the LAN would. */
const CLIENT = '127.0.0.9'
const WAIT_MS = 5_000

let cluster: ProxyCluster
let onA: Vcluster
let onB: Vcluster
const echoes: Server[] = []
const forwarders: PortForwarder[] = []
const unwatches: Array<() => void> = []
let echoPortA = 0
let echoPortB = 0
let forwarderA: PortForwarder
let forwarderB: PortForwarder
const logA = capturedLogger()

/** An echo server that answers a half-close with its own end, as a well-behaved service does. */
async function startEcho(host: string): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => socket.destroy())
    socket.pipe(socket)
  })
  echoes.push(server)
  await new Promise<void>((resolve) => server.listen({ host, port: 0 }, () => resolve()))
  return (server.address() as { port: number }).port
}

/** A port free on every loopback address the tests use. */
async function freePort(): Promise<number> {
  for (;;) {
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen({ host: MESH_IP_A, port: 0 }, () => resolve()))
    const port = (probe.address() as { port: number }).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const free = await Promise.all(
      [MESH_IP_A, MESH_IP_B, '127.0.0.3'].map(
        (host) =>
          new Promise<boolean>((resolve) => {
            const check = createServer()
            check.once('error', () => resolve(false))
            check.listen({ host, port }, () => check.close(() => resolve(true)))
          }),
      ),
    )
    if (free.every(Boolean)) return port
  }
}

/** Maps `port` of vnode 0 of `vcluster` on exactly `publicPort`. */
function map(vcluster: Vcluster, port: number, publicPort: number): void {
  cluster.apply({ type: 'ports.range', at: 0, min: publicPort, max: publicPort })
  cluster.apply({
    type: 'port.add',
    at: 0,
    owner: 'alice',
    vcluster: vcluster.id,
    index: 0,
    port,
    protocol: 'tcp',
  })
  if (cluster.state.view.portMappings[String(publicPort)]?.port !== port)
    throw new Error(`the mapping did not get public port ${publicPort}`)
}

interface Exchange {
  received: Buffer
  /** The far side ended its half cleanly (an echo server does after our end). */
  ended: boolean
}

/** Sends `data`, half-closes, and collects what comes back until the socket closes. */
function exchange(host: string, port: number, data: Buffer, localAddress = CLIENT): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, allowHalfOpen: true, localAddress })
    const chunks: Buffer[] = []
    let ended = false
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('end', () => {
      ended = true
      socket.end()
    })
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNRESET') return
      reject(error)
    })
    socket.on('close', () => resolve({ received: Buffer.concat(chunks), ended }))
    socket.on('connect', () => socket.end(data))
  })
}

/** An open connection that echoes: `ping()` sends a line and waits for it back. */
async function openConnection(
  host: string,
  port: number,
): Promise<{ socket: Socket; ping: (text: string) => Promise<string> }> {
  const socket = connect({ host, port, localAddress: CLIENT })
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('error', reject)
  })
  socket.on('error', () => {})
  return {
    socket,
    ping: (text) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no echo in time')), WAIT_MS)
        socket.once('data', (chunk: Buffer) => {
          clearTimeout(timer)
          resolve(chunk.toString())
        })
        socket.write(text)
      }),
  }
}

/**
 * A forwarder as a proxy worker runs it, over the routes view; here the view
 * is derived from the state on every read and followed after every command,
 * as the main thread's posts would have it.
 */
function start(
  init: Omit<Partial<ConstructorParameters<typeof PortForwarder>[0]>, 'views'> & {
    selfId: string
    listenHost: string
  },
) {
  const { selfId, ...options } = init
  const views = {
    get view() {
      return { routes: buildRouteView(cluster.state.view, selfId, { portal: '' }) }
    },
  }
  const forwarder = new PortForwarder({ views, retryMs: RETRY_MS, connectTimeoutMs: 1_000, ...options })
  unwatches.push(cluster.state.watch(() => forwarder.follow()))
  forwarder.follow()
  forwarders.push(forwarder)
  return forwarder
}

let portToA = 0
let portToB = 0

beforeAll(async () => {
  cluster = ProxyCluster.create()
  onA = cluster.vcluster('alice', 'on-a', NODE_A)
  onB = cluster.vcluster('alice', 'on-b', NODE_B)
  echoPortA = await startEcho(onA.vnodes[0]!.ip)
  echoPortB = await startEcho(onB.vnodes[0]!.ip)
  forwarderA = start({ selfId: NODE_A, listenHost: MESH_IP_A, log: logA.logger })
  forwarderB = start({ selfId: NODE_B, listenHost: MESH_IP_B })
  portToA = await freePort()
  map(onA, echoPortA, portToA)
  portToB = await freePort()
  map(onB, echoPortB, portToB)
  await waitFor(
    () => [forwarderA, forwarderB].every((f) => f.ports.includes(portToA) && f.ports.includes(portToB)),
    'both nodes to listen on both mapped ports',
    WAIT_MS,
  )
})

afterAll(async () => {
  for (const unwatch of unwatches) unwatch()
  for (const forwarder of forwarders) await forwarder.stop()
  for (const server of echoes) {
    server.close()
  }
})

describe('forwarding', () => {
  it("forwards a mapped port to the vnode on this node's host, passing the half-close on", async () => {
    const answer = await exchange(MESH_IP_A, portToA, Buffer.from('hello'))
    expect(answer.received.toString()).toBe('hello')
    expect(answer.ended).toBe(true)
  })

  it("reaches a vnode on another host through that host's node, both ways, bytes intact", async () => {
    const data = randomBytes(4 * 1024 * 1024)
    const viaA = await exchange(MESH_IP_A, portToB, data)
    expect(viaA.received.length).toBe(data.length)
    expect(sha256(viaA.received)).toBe(sha256(data))
    const viaB = await exchange(MESH_IP_B, portToA, Buffer.from('from b'))
    expect(viaB.received.toString()).toBe('from b')
  })

  it('carries a hop through the far node: both nodes hold the connection while it is open', async () => {
    const open = await openConnection(MESH_IP_A, portToB)
    try {
      expect(await open.ping('x')).toBe('x')
      expect(forwarderA.activeConnections).toBe(1)
      expect(forwarderB.activeConnections).toBe(1)
    } finally {
      open.socket.destroy()
    }
    await waitFor(
      () => forwarderA.activeConnections === 0 && forwarderB.activeConnections === 0,
      'both nodes to let the connection go',
      WAIT_MS,
    )
  })

  it('never forwards a connection from another node again', async () => {
    // From node-b's mesh address to node-a, for the vnode on node-b: a hop that went astray.
    const answer = await exchange(MESH_IP_A, portToB, Buffer.from('loop?'), MESH_IP_B)
    expect(answer.received.length).toBe(0)
  })
})

describe('listeners follow the mappings', () => {
  it('closes a port with its connections when the mapping goes, and opens it when it comes back', async () => {
    const open = await openConnection(MESH_IP_A, portToA)
    expect(await open.ping('before')).toBe('before')
    const closed = new Promise<void>((resolve) => open.socket.once('close', () => resolve()))
    cluster.apply({ type: 'port.remove', at: 0, owner: 'alice', publicPort: portToA })
    await closed
    await waitFor(
      () => !forwarderA.ports.includes(portToA) && !forwarderB.ports.includes(portToA),
      'the listeners to close',
      WAIT_MS,
    )
    await expect(exchange(MESH_IP_A, portToA, Buffer.from('x'))).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    })
    map(onA, echoPortA, portToA)
    await waitFor(() => forwarderA.ports.includes(portToA), 'the listener to reopen', WAIT_MS)
    expect((await exchange(MESH_IP_A, portToA, Buffer.from('again'))).received.toString()).toBe('again')
  })

  it('reports a port in use without failing, keeps other connections, and takes the port once free', async () => {
    const open = await openConnection(MESH_IP_A, portToB)
    const busyPort = await freePort()
    const blocker = createServer()
    await new Promise<void>((resolve) => blocker.listen({ host: MESH_IP_A, port: busyPort }, () => resolve()))
    // Only the listening matters here: the vnode port behind it need not answer.
    map(onA, 7, busyPort)
    await waitFor(
      () => logA.lines().some((line) => line.port === busyPort && line.code === 'EADDRINUSE'),
      'the busy port to be reported',
      WAIT_MS,
    )
    await waitFor(() => forwarderB.ports.includes(busyPort), 'node-b to take the port it has free', WAIT_MS)
    expect(forwarderA.ports).not.toContain(busyPort)
    expect(await open.ping('still here')).toBe('still here')
    await new Promise<void>((resolve) => blocker.close(() => resolve()))
    await waitFor(() => forwarderA.ports.includes(busyPort), 'node-a to take the port once free', WAIT_MS)
    open.socket.destroy()
  })

  it('drops connections past its bound instead of queueing them', async () => {
    const bounded = start({ selfId: NODE_A, listenHost: '127.0.0.3', connectionsMax: 1 })
    await waitFor(() => bounded.ports.includes(portToA), 'the bounded forwarder to listen', WAIT_MS)
    const first = await openConnection('127.0.0.3', portToA)
    expect(await first.ping('one')).toBe('one')
    const second = await exchange('127.0.0.3', portToA, Buffer.from('two'))
    expect(second.received.length).toBe(0)
    first.socket.destroy()
    await waitFor(() => bounded.activeConnections === 0, 'the first connection to end', WAIT_MS)
    expect((await exchange('127.0.0.3', portToA, Buffer.from('three'))).received.toString()).toBe('three')
    await bounded.stop()
  })
})
