// Puts the portal behind the proxy workers: the fastify app no longer
// listens itself; listen() starts the workers on the portal's address
// (proxy-front.ts), they proxy /go/ (HTTP and WebSocket) off the main
// thread and pass every other request to the app through the portal
// bridge. Closing the app stops the workers first (tunnels included).

import type { FastifyInstance } from 'fastify'
import { ProxyFront, type ProxyFrontInit } from './proxy-front.ts'
import type { WorkerStats } from './proxy-messages.ts'

export type PortalProxyInit = Omit<ProxyFrontInit, 'server'>

export interface PortalProxy {
  /** Readies the app and serves the portal on host:port (0: the kernel picks); resolves with the port. */
  listen(options: { host: string; port: number }): Promise<number>
  /** Where other nodes' hops are served besides the portal ('' when nowhere). */
  readonly hopsListening: string
  /** Each worker's counters. */
  stats(): Promise<WorkerStats[]>
}

/** Puts `app` behind the proxy workers (call before it is ready, instead of app.listen). */
export function registerWorkspaceProxy(app: FastifyInstance, init: PortalProxyInit): PortalProxy {
  const front = new ProxyFront({ ...init, server: app.server })
  app.server.on('upgrade', (_request, socket) => {
    // Nothing on the portal upgrades but /go/ (which the workers serve); with no other listener the socket would hang.
    if (app.server.listenerCount('upgrade') === 1)
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
  })
  app.addHook('preClose', async () => {
    await front.close()
  })
  return {
    async listen(options) {
      await app.ready()
      return front.listen(options)
    },
    get hopsListening() {
      return front.hopsListening
    },
    stats: () => front.stats(),
  }
}
