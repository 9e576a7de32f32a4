// A proxy worker thread: the node's data plane, off the main thread.
// It listens on the portal's address (with the other workers when there
// are several, SO_REUSEPORT spreading connections over them), proxies
// /go/ itself (workspace-proxy.ts) with the view of the state the main
// thread posts, serves other nodes' hops on the mesh address
// (hop-listener.ts), and passes everything else (the API, the UI) to the
// main thread's app over the portal bridge (portal-bridge.ts). One worker
// also forwards the mapped ports (port-forwarder.ts); on a node without a
// portal that is all it does. Started by ProxyFront (proxy-front.ts) with
// ProxyWorkerData; see proxy-messages.ts.

import { createServer } from 'node:http'
import { parentPort, workerData } from 'node:worker_threads'
import { HopListener } from './hop-listener.ts'
import { PortForwarder } from './port-forwarder.ts'
import { PortalBridgeClient } from './portal-bridge.ts'
import type { FromWorker, LogLevel, ProxyWorkerData, ToWorker } from './proxy-messages.ts'
import type { ProxyView } from './proxy-view.ts'
import { workspacePrefix } from './workspace-path.ts'
import { type ProxyLog, WorkspaceProxy } from './workspace-proxy.ts'

/** As fastify's default: browsers keep their portal connections between clicks. */
export const portalKeepAliveTimeoutMs = 72_000
/** Log lines sent to the main thread per second, at most (a storm of failures must not flood it). */
export const workerLogLinesPerSecondMax = 50

const LEVELS: Record<LogLevel, number> = { debug: 20, info: 30, warn: 40, error: 50 }

if (parentPort === null)
  throw new Error('proxy-worker.ts runs only as a worker thread (ProxyFront starts it).')
const port = parentPort
const data = workerData as ProxyWorkerData
let view: ProxyView = data.view

function post(message: FromWorker): void {
  port.postMessage(message)
}

let logWindowStart = 0
let logLines = 0
function relay(level: LogLevel) {
  return (fields: object, message: string): void => {
    if (LEVELS[level] < LEVELS[data.logLevel]) return
    const now = Date.now()
    if (now - logWindowStart >= 1_000) {
      logWindowStart = now
      logLines = 0
    }
    if (++logLines > workerLogLinesPerSecondMax) return
    post({ type: 'log', level, fields: { worker: data.index, ...fields }, message })
  }
}
const log: ProxyLog = {
  debug: relay('debug'),
  info: relay('info'),
  warn: relay('warn'),
  error: relay('error'),
}

const views = {
  get view() {
    return view
  },
}
const proxy = new WorkspaceProxy({ views, log, ...data.options })
const ports = data.ports === null ? null : new PortForwarder({ views, log, ...data.ports })
const bridge = new PortalBridgeClient({
  port: data.bridgePort,
  announce: (client) => post({ type: 'bridge', client }),
})
const hops = new HopListener({
  proxy,
  log,
  reusePort: data.reusePort,
  ...(data.options.hopListenRetryMs === undefined ? {} : { retryMs: data.options.hopListenRetryMs }),
  onListening: (address) => {
    if (data.index === 0) post({ type: 'hops', address })
  },
})

const server = createServer({ noDelay: true }, (request, response) => {
  if (request.url?.startsWith(workspacePrefix) === true) proxy.handleRequest(request, response)
  else bridge.forward(request, response)
})
server.keepAliveTimeout = portalKeepAliveTimeoutMs
// Uploads to a workspace may take long; slow headers are still cut by headersTimeout.
server.requestTimeout = 0
server.on('upgrade', (request, socket, head: Buffer) => {
  if (request.url?.startsWith(workspacePrefix) === true) proxy.handleUpgrade(request, socket, head)
  else bridge.upgrade(request, socket, head)
})

let closing = false
async function close(): Promise<void> {
  if (closing) return
  closing = true
  // Tunnels first: the servers would wait for them.
  proxy.close()
  bridge.close()
  server.closeAllConnections()
  await Promise.all([
    new Promise<void>((resolve) => server.close(() => resolve())),
    hops.stop(),
    ports?.stop(),
  ])
  post({ type: 'closed' })
  port.close()
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'view') {
    view = {
      selfId: view.selfId,
      clockOffsetMs: message.clockOffsetMs,
      auth: message.auth ?? view.auth,
      routes: message.routes ?? view.routes,
    }
    if (message.routes !== undefined) {
      if (data.portal !== null) hops.follow(view.routes.hopListen)
      ports?.follow()
    }
  } else if (message.type === 'stats') {
    const upstream = proxy.upstreamConnections
    post({
      type: 'stats',
      stats: {
        active: proxy.activeConnections,
        upstreamIdle: upstream.idle,
        upstreamBusy: upstream.busy,
        ports: ports?.ports ?? [],
        portConnections: ports?.activeConnections ?? 0,
      },
    })
  } else if (message.type === 'close') void close()
})

ports?.follow()
if (data.portal === null) post({ type: 'listening', port: 0 })
else {
  const portal = data.portal
  const listenFailed = (error: NodeJS.ErrnoException) => {
    post({ type: 'listen-failed', code: error.code ?? 'unknown', message: error.message })
    void close()
  }
  server.once('error', listenFailed)
  server.listen({ host: portal.host, port: portal.port, reusePort: data.reusePort }, () => {
    server.off('error', listenFailed)
    server.on('error', (error) => log.warn({ err: String(error) }, 'the portal listener failed'))
    post({ type: 'listening', port: (server.address() as { port: number }).port })
    hops.follow(view.routes.hopListen)
  })
}
