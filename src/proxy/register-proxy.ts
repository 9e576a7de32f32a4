// Puts the workspace proxy on the portal's fastify app: `/go/*` for every
// method (bodies are left unread, so they stream through instead of being
// parsed), WebSocket upgrades on the app's server, the mesh listener for
// other nodes' hops once the portal listens, and everything cut when the
// app closes (upgraded sockets are no longer the server's to close).

import type { FastifyInstance } from 'fastify'
import { HopListener } from './hop-listener.ts'
import { WorkspaceProxy, type WorkspaceProxyInit } from './workspace-proxy.ts'
import { workspacePrefix } from './workspace-route.ts'

export interface PortalProxyInit extends WorkspaceProxyInit {
  /** This node's portal address (HOST:PORT): where other nodes' hops arrive. */
  portal: string
  /** How long to wait before a failed mesh listen is tried again. */
  hopListenRetryMs?: number
}

export interface PortalProxy {
  proxy: WorkspaceProxy
  /** The mesh listener for other nodes' hops, once the portal listens. */
  readonly hops: HopListener | null
}

/** The portal address with the port it really got (a configured port 0 is the kernel's pick). */
function boundPortal(app: FastifyInstance, portal: string): string {
  const address = app.server.address()
  const match = /^(.*):(\d+)$/.exec(portal)
  if (match === null || address === null || typeof address !== 'object') return portal
  return `${match[1]}:${address.port}`
}

/** Registers /go/* on `app` (call before it listens). */
export function registerWorkspaceProxy(app: FastifyInstance, init: PortalProxyInit): PortalProxy {
  const proxy = new WorkspaceProxy(init)
  let hops: HopListener | null = null
  void app.register(async (scope) => {
    // The body stays in the request stream, to be piped to the workspace.
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null))
    scope.all(`${workspacePrefix}*`, (request, reply) => {
      reply.hijack()
      proxy.handleRequest(request.raw, reply.raw)
    })
  })
  app.server.on('upgrade', (request, socket, head: Buffer) => {
    if ((request.url ?? '').startsWith(workspacePrefix)) {
      proxy.handleUpgrade(request, socket, head)
      return
    }
    // Nothing else on the portal upgrades; with no other listener the socket would hang.
    if (app.server.listenerCount('upgrade') === 1)
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
  })
  app.addHook('onListen', async () => {
    hops = new HopListener({
      proxy,
      state: init.state,
      selfId: init.selfId,
      portal: boundPortal(app, init.portal),
      ...(init.logger === undefined ? {} : { logger: init.logger }),
      ...(init.hopListenRetryMs === undefined ? {} : { retryMs: init.hopListenRetryMs }),
    })
    hops.start()
  })
  app.addHook('preClose', async () => {
    // Tunnels first: the servers would wait for them.
    proxy.close()
    await hops?.stop()
  })
  return {
    proxy,
    get hops() {
      return hops
    },
  }
}
