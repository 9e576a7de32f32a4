// Where other nodes' hops arrive when this node's portal listens on one
// address only (say its LAN address): the same port on this host's mesh IP,
// serving nothing but verified hops. A portal on the wildcard address
// already answers on the mesh IP and needs none. The mesh address comes
// from the replicated state and its interface may come up after the node
// starts, so the listener follows the state and retries a failed listen.

import { createServer, type Server } from 'node:http'
import type { Logger } from 'pino'
import type { ClusterState } from '../state/cluster-state.ts'
import type { WorkspaceProxy } from './workspace-proxy.ts'
import { isWildcardHost, selfMeshIp, splitHostPort } from './workspace-route.ts'

export const hopListenRetryMsDefault = 5_000

export interface HopListenerInit {
  proxy: WorkspaceProxy
  state: ClusterState
  selfId: string
  /** This node's portal address (HOST:PORT, '' for none). */
  portal: string
  logger?: Logger
  retryMs?: number
}

export class HopListener {
  private readonly init: HopListenerInit
  private server: Server | null = null
  /** HOST:PORT the server listens on ('' while none). */
  private address = ''
  private unwatch: (() => void) | null = null
  private retry: NodeJS.Timeout | null = null
  private busy: Promise<void> = Promise.resolve()
  private stopped = false

  constructor(init: HopListenerInit) {
    this.init = init
  }

  /** Where hops are served now ('' when nowhere). */
  get listening(): string {
    return this.address
  }

  /** Where hops should be served: the mesh IP with the portal's port, or null. */
  desired(): { host: string; port: number } | null {
    const portal = splitHostPort(this.init.portal)
    if (portal === null || isWildcardHost(portal.host)) return null
    const meshIp = selfMeshIp(this.init.state.view, this.init.selfId)
    if (meshIp === null || meshIp === portal.host) return null
    return { host: meshIp, port: portal.port }
  }

  start(): void {
    if (this.unwatch !== null) return
    this.unwatch = this.init.state.watch((command) => {
      if (command === null || command.type.startsWith('member.') || command.type === 'cluster.init')
        this.schedule()
    })
    this.schedule()
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.unwatch?.()
    this.unwatch = null
    if (this.retry !== null) clearTimeout(this.retry)
    this.retry = null
    await this.busy
    await this.close()
  }

  /** One reconciliation at a time; calls during one coalesce into the next. */
  private schedule(): void {
    this.busy = this.busy.then(() => this.reconcile())
  }

  private async reconcile(): Promise<void> {
    if (this.stopped) return
    const want = this.desired()
    const wanted = want === null ? '' : `${want.host}:${want.port}`
    if (wanted === this.address && (wanted === '' || this.server !== null)) return
    await this.close()
    if (want === null) return
    const server = createServer((request, response) =>
      this.init.proxy.handleRequest(request, response, { hopOnly: true }),
    )
    server.on('upgrade', (request, socket, head) =>
      this.init.proxy.handleUpgrade(request, socket, head, { hopOnly: true }),
    )
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen({ host: want.host, port: want.port }, () => {
          server.off('error', reject)
          resolve()
        })
      })
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      this.init.logger?.warn(
        { address: wanted, code },
        code === 'EADDRINUSE'
          ? `Cannot serve workspace hops on ${wanted}: another program uses it; other nodes cannot proxy workspaces here until it is free.`
          : `Cannot serve workspace hops on ${wanted} yet (${String(code)}); retrying.`,
      )
      this.retry ??= setTimeout(() => {
        this.retry = null
        this.schedule()
      }, this.init.retryMs ?? hopListenRetryMsDefault)
      this.retry.unref()
      return
    }
    server.on('error', (error) => this.init.logger?.warn({ err: error }, 'workspace hop listener failed'))
    this.server = server
    this.address = wanted
    this.init.logger?.info({ address: wanted }, 'serving workspace hops on the mesh')
  }

  private async close(): Promise<void> {
    const server = this.server
    this.server = null
    this.address = ''
    if (server === null) return
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
