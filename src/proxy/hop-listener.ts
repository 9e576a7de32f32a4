// Where other nodes' hops arrive when this node's portal listens on one
// address only (say its LAN address): the same port on this host's mesh IP,
// serving nothing but verified hops. A portal on the wildcard address
// already answers on the mesh IP and needs none. It runs in each proxy
// worker beside the portal listener and follows the view's hopListen
// (proxy-view.ts): the mesh address comes from the replicated state and its
// interface may come up after the node starts, so a failed listen is tried
// again.

import { createServer, type Server } from 'node:http'
import type { ProxyLog, WorkspaceProxy } from './workspace-proxy.ts'

export const hopListenRetryMsDefault = 5_000

export interface HopListenerInit {
  proxy: WorkspaceProxy
  log?: ProxyLog
  retryMs?: number
  /** Several workers share the address (SO_REUSEPORT). */
  reusePort?: boolean
  /** Called whenever the address served changes ('' for none). */
  onListening?: (address: string) => void
}

export class HopListener {
  private readonly init: HopListenerInit
  private server: Server | null = null
  /** HOST:PORT the server listens on ('' while none). */
  private address = ''
  private want: { host: string; port: number } | null = null
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

  /** Serves hops on `want` from now on (null: nowhere). */
  follow(want: { host: string; port: number } | null): void {
    this.want = want
    this.schedule()
  }

  async stop(): Promise<void> {
    this.stopped = true
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
    const want = this.want
    const wanted = want === null ? '' : `${want.host}:${want.port}`
    if (wanted === this.address && (wanted === '' || this.server !== null)) return
    await this.close()
    if (want === null) return
    const server = createServer((request, response) =>
      this.init.proxy.handleRequest(request, response, { hopOnly: true }),
    )
    server.on('upgrade', (request, socket, head: Buffer) =>
      this.init.proxy.handleUpgrade(request, socket, head, { hopOnly: true }),
    )
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen({ host: want.host, port: want.port, reusePort: this.init.reusePort === true }, () => {
          server.off('error', reject)
          resolve()
        })
      })
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      this.init.log?.warn(
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
    server.on('error', (error) =>
      this.init.log?.warn({ err: String(error) }, 'workspace hop listener failed'),
    )
    this.server = server
    this.address = wanted
    this.init.onListening?.(wanted)
  }

  private async close(): Promise<void> {
    const server = this.server
    this.server = null
    if (this.address !== '') {
      this.address = ''
      this.init.onListening?.('')
    }
    if (server === null) return
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
