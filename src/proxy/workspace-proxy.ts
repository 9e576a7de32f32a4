// The any-node workspace proxy: `/go/<owner>/<vcluster>/...` on every
// node's portal reaches Jupyter on vnode 0 of that vcluster, for plain HTTP
// and for WebSocket upgrades (kernels, terminals), wherever the vnode runs.
// It runs in the proxy's worker threads (proxy-worker.ts), over the view of
// the replicated state the main thread posts them (proxy-view.ts): nothing
// here touches the main thread, whose event loop runs Raft's timers.
//
// Per request: the session cookie is checked (401, or a redirect to the
// login page for a browser), then ownership (the owner or an admin; anyone
// else gets the same 404 as for a workspace that does not exist), then the
// route. A local vnode 0 is dialled directly with `Authorization: token
// <secret>` added, so the user never types Jupyter's token. A remote one is
// reached through its host's node with a signed hop header (hop-token.ts)
// that the far node verifies before it proxies locally; a hop is never
// forwarded again.
//
// Plain requests go over kept-alive upstream connections (upstream-pool.ts);
// upgrades become raw socket pairs (socket-pair.ts). Bodies stream both ways
// with backpressure. Connections are bounded (proxied requests and tunnels
// together, per worker).

import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { type ForwardedFor, plainAddress, upstreamRequestHead } from './forward-headers.ts'
import { hopHeader, hopTtlMsDefault, signHop, verifyHop } from './hop-token.ts'
import { ProxyError, sendError, sendSocketError } from './proxy-error.ts'
import { SessionChecker } from './proxy-session.ts'
import type { ProxyView, ResolvedRoute, WorkspaceEntry } from './proxy-view.ts'
import { joinSockets } from './socket-pair.ts'
import { ConnectTimeoutError, type ExchangeOwner, UpstreamPool } from './upstream-pool.ts'
import { parseWorkspacePath, workspaceKey, workspacePrefix } from './workspace-path.ts'

export const proxyConnectTimeoutMsDefault = 5_000
/** Proxied requests and WebSocket tunnels open at once, per worker. */
export const proxyConnectionsMaxDefault = 4_096
/** Where a browser without a session is sent (with ?next=<the workspace URL>). */
export const loginPathDefault = '/login'

/** What the proxy logs: a pino logger fits, and so does the worker's relay to the main thread. */
export interface ProxyLog {
  debug(fields: object, message: string): void
  info(fields: object, message: string): void
  warn(fields: object, message: string): void
  error(fields: object, message: string): void
}

/** Where the proxy reads the current view (the worker replaces it as updates arrive). */
export interface ProxyViewSource {
  readonly view: ProxyView
}

export interface WorkspaceProxyInit {
  views: ProxyViewSource
  log?: ProxyLog
  connectTimeoutMs?: number
  connectionsMax?: number
  hopTtlMs?: number
  loginPath?: string
}

export interface ProxyScope {
  /** Only verified hops from other nodes are served (the mesh listener). */
  hopOnly?: boolean
}

type ReachableRoute = Exclude<ResolvedRoute, { kind: 'refused' }>

type Decision =
  | {
      kind: 'forward'
      entry: WorkspaceEntry
      route: ReachableRoute
      user: string
      forwarded: ForwardedFor | 'keep'
    }
  | { kind: 'redirect'; location: string }

const safeMethods: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])
const unreachableCodes: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'EADDRNOTAVAIL',
])

function wantsPage(request: IncomingMessage): boolean {
  const accept = request.headers.accept
  return request.method === 'GET' && typeof accept === 'string' && accept.includes('text/html')
}

/** A state-changing request or an upgrade from another site is refused (the session cookie is SameSite too). */
function checkOrigin(request: IncomingMessage): void {
  const origin = request.headers.origin
  if (origin === undefined) return
  let same = false
  try {
    const from = new URL(origin)
    same = from.host === new URL(`${from.protocol}//${String(request.headers.host)}`).host
  } catch {
    // 'null' and junk count as foreign.
  }
  if (!same)
    throw new ProxyError(
      'ERR_CSRF',
      403,
      `Requests from ${origin} are refused; open the workspace from the portal on ${String(request.headers.host)}.`,
    )
}

function refusal(route: ResolvedRoute & { kind: 'refused' }): ProxyError {
  return new ProxyError(route.code, route.status, route.message)
}

export class WorkspaceProxy implements ExchangeOwner<WorkspaceEntry> {
  private readonly views: ProxyViewSource
  private readonly log: ProxyLog | undefined
  private readonly connectionsMax: number
  private readonly connectTimeoutMs: number
  private readonly hopTtlMs: number
  private readonly loginPath: string
  private readonly sessions = new SessionChecker()
  private readonly pool: UpstreamPool
  private readonly tunnels = new Set<Duplex>()
  private active = 0
  private closed = false

  constructor(init: WorkspaceProxyInit) {
    this.views = init.views
    this.log = init.log
    this.connectTimeoutMs = init.connectTimeoutMs ?? proxyConnectTimeoutMsDefault
    this.connectionsMax = init.connectionsMax ?? proxyConnectionsMaxDefault
    this.hopTtlMs = init.hopTtlMs ?? hopTtlMsDefault
    this.loginPath = init.loginPath ?? loginPathDefault
    this.pool = new UpstreamPool({ connectTimeoutMs: this.connectTimeoutMs })
  }

  /** Proxied requests and tunnels open now. */
  get activeConnections(): number {
    return this.active
  }

  /** Upstream connections kept idle and in use now. */
  get upstreamConnections(): { idle: number; busy: number } {
    return this.pool.counts
  }

  /** Serves one HTTP request under /go/. */
  handleRequest(request: IncomingMessage, response: ServerResponse, scope: ProxyScope = {}): void {
    let decision: Decision
    try {
      this.checkCapacity()
      decision = this.decide(request, scope, false)
    } catch (error) {
      sendError(request, response, this.asProxyError(error))
      return
    }
    if (decision.kind === 'redirect') {
      response.writeHead(302, {
        location: decision.location,
        'content-length': 0,
        'cache-control': 'no-store',
      })
      response.end()
      return
    }
    const { route } = decision
    const url = request.url ?? '/'
    const chunked = request.headers['transfer-encoding'] !== undefined
    const head = upstreamRequestHead(request, {
      forwarded: decision.forwarded,
      authorization: route.kind === 'local' ? `token ${route.token}` : null,
      hop: route.kind === 'remote' ? this.hopFor(route, decision.user, url) : null,
      upgrade: false,
      chunked,
    })
    this.active += 1
    response.on('close', this.onResponseClosed)
    this.pool.exchange(route, request, response, head, this, decision.entry)
  }

  /** Serves one upgrade request under /go/ on its raw socket. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, scope: ProxyScope = {}): void {
    socket.pause()
    socket.on('error', () => socket.destroy())
    let decision: Decision
    try {
      this.checkCapacity()
      decision = this.decide(request, scope, true)
      if (decision.kind !== 'forward') throw new Error('an upgrade is never redirected')
    } catch (error) {
      sendSocketError(request, socket, this.asProxyError(error))
      return
    }
    const { route, entry } = decision
    const url = request.url ?? '/'
    const requestHead = upstreamRequestHead(request, {
      forwarded: decision.forwarded,
      authorization: route.kind === 'local' ? `token ${route.token}` : null,
      hop: route.kind === 'remote' ? this.hopFor(route, decision.user, url) : null,
      upgrade: true,
      chunked: false,
    })
    const upstream = connect({
      host: route.address,
      port: route.port,
      allowHalfOpen: true,
      ...(route.kind === 'remote' && route.localAddress !== undefined
        ? { localAddress: route.localAddress }
        : {}),
    })
    this.active += 1
    // Both ends: a half-closed end would otherwise linger after close().
    this.tunnels.add(socket)
    this.tunnels.add(upstream)
    const release = () => {
      this.tunnels.delete(socket)
      this.tunnels.delete(upstream)
      this.active -= 1
    }
    let joined = false
    const timer = setTimeout(
      () => upstream.destroy(new ConnectTimeoutError(this.connectTimeoutMs)),
      this.connectTimeoutMs,
    )
    upstream.once('connect', () => {
      clearTimeout(timer)
      upstream.write(requestHead, 'latin1')
      if (head.length > 0) upstream.write(head)
      joined = true
      joinSockets(socket, upstream, release)
    })
    let failed = false
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (joined || failed) return
      failed = true
      clearTimeout(timer)
      upstream.destroy()
      sendSocketError(request, socket, this.upstreamError(entry, error))
      release()
    })
  }

  /** Cuts every tunnel and upstream connection (the node is stopping). */
  close(): void {
    this.closed = true
    for (const socket of this.tunnels) socket.destroy()
    this.tunnels.clear()
    this.pool.close()
  }

  /** ExchangeOwner: an upstream failed before the response started. */
  upstreamFailed(
    request: IncomingMessage,
    response: ServerResponse,
    entry: WorkspaceEntry,
    error: NodeJS.ErrnoException,
  ): void {
    sendError(request, response, this.upstreamError(entry, error))
  }

  // ---------------------------------------------------------------------------

  private readonly onResponseClosed = (): void => {
    this.active -= 1
  }

  private checkCapacity(): void {
    if (this.closed)
      throw new ProxyError(
        'ERR_PROXY_BUSY',
        503,
        'This docklet node is stopping; try another node or again soon.',
      )
    if (this.active >= this.connectionsMax)
      throw new ProxyError(
        'ERR_PROXY_BUSY',
        503,
        `This node proxies ${this.connectionsMax} connections already, its limit; try again in a moment.`,
      )
  }

  private asProxyError(error: unknown): ProxyError {
    if (error instanceof ProxyError) return error
    this.log?.error({ err: String((error as Error)?.stack ?? error) }, 'workspace proxy failed')
    return new ProxyError(
      'ERR_UPSTREAM_FAILED',
      502,
      'The node failed to proxy the request; its log has the details.',
    )
  }

  private now(): number {
    return Date.now() + this.views.view.clockOffsetMs
  }

  /** Who may go where: hop, session, ownership, route. Throws ProxyError for every refusal. */
  private decide(request: IncomingMessage, scope: ProxyScope, upgrade: boolean): Decision {
    const url = request.url ?? '/'
    const path = parseWorkspacePath(url)
    const view = this.views.view
    const hop = request.headers[hopHeader]
    if (hop !== undefined) {
      const claims =
        typeof hop === 'string' && path !== null
          ? verifyHop(view.auth.sessionKey, hop, {
              self: view.selfId,
              url,
              nowMs: this.now(),
              ttlMs: this.hopTtlMs,
            })
          : null
      if (claims === null || path === null)
        throw new ProxyError(
          'ERR_HOP_INVALID',
          403,
          'The X-Docklet-Hop header is not valid here: it is only for docklet nodes, for one path, for a few seconds.',
        )
      const entry = view.routes.workspaces.get(workspaceKey(path.owner, path.name))
      if (entry === undefined) throw this.notFound(path.owner, path.name, claims.user)
      const route = entry.route
      if (route.kind === 'refused') throw refusal(route)
      if (route.kind !== 'local')
        throw new ProxyError(
          'ERR_WORKSPACE_MOVED',
          502,
          `Vnode 0 of ${entry.owner}/${entry.name} is not on this host (any more); try again.`,
        )
      return { kind: 'forward', entry, route, user: claims.user, forwarded: 'keep' }
    }
    if (scope.hopOnly === true)
      throw new ProxyError('ERR_WORKSPACE_NOT_FOUND', 404, 'This address serves only other docklet nodes.')
    if (path === null) throw this.notFound('', '', '')
    let user: ReturnType<SessionChecker['userOf']>
    try {
      user = this.sessions.userOf(view.auth, request.headers.cookie, this.now())
    } catch (error) {
      if (error instanceof ProxyError && !upgrade && wantsPage(request))
        return { kind: 'redirect', location: `${this.loginPath}?next=${encodeURIComponent(url)}` }
      throw error
    }
    if (upgrade || !safeMethods.has(request.method ?? 'GET')) checkOrigin(request)
    const entry = view.routes.workspaces.get(workspaceKey(path.owner, path.name))
    if (entry === undefined || (entry.owner !== user.name && user.role !== 'admin'))
      throw this.notFound(path.owner, path.name, user.name)
    if (path.bare) {
      if (upgrade) throw this.notFound(path.owner, path.name, user.name)
      const query = url.indexOf('?')
      return {
        kind: 'redirect',
        location: `${workspacePrefix}${path.owner}/${path.name}/${query < 0 ? '' : url.slice(query)}`,
      }
    }
    const route = entry.route
    if (route.kind === 'refused') throw refusal(route)
    return {
      kind: 'forward',
      entry,
      route,
      user: user.name,
      // The portal serves plain HTTP; a TLS terminator in front of it is the client here.
      forwarded: {
        for: plainAddress(request.socket.remoteAddress),
        proto: 'http',
        host: request.headers.host ?? '',
      },
    }
  }

  private notFound(owner: string, name: string, user: string): ProxyError {
    const where = owner === '' ? 'at this address' : `at ${workspacePrefix}${owner}/${name}/`
    return new ProxyError(
      'ERR_WORKSPACE_NOT_FOUND',
      404,
      `There is no workspace ${where}${user === '' ? '' : ` that ${user} may open`}.`,
    )
  }

  private hopFor(route: ReachableRoute & { kind: 'remote' }, user: string, url: string): string {
    return signHop(this.views.view.auth.sessionKey, {
      target: route.host,
      user,
      url,
      expiresAt: this.now() + this.hopTtlMs,
    })
  }

  private upstreamError(entry: WorkspaceEntry, error: NodeJS.ErrnoException): ProxyError {
    const label = `${entry.owner}/${entry.name}`
    const route = entry.route
    const code = error.code ?? 'unknown'
    if (route.kind === 'refused') return refusal(route)
    this.log?.debug(
      { code, address: route.address, port: route.port, kind: route.kind },
      'workspace upstream failed',
    )
    if (route.kind === 'local') {
      if (code === 'ECONNREFUSED')
        return new ProxyError(
          'ERR_WORKSPACE_NO_JUPYTER',
          503,
          `Nothing answers on port ${route.port} of vnode 0 of ${label}: its image may have no Jupyter (the busybox image has none), or Jupyter is still starting; try again in a moment.`,
          { cause: error },
        )
      if (unreachableCodes.has(code))
        return new ProxyError(
          'ERR_WORKSPACE_UNREACHABLE',
          502,
          `Vnode 0 of ${label} (${route.address}) does not answer (${code}); check that it runs.`,
          { cause: error },
        )
    } else if (unreachableCodes.has(code))
      return new ProxyError(
        'ERR_HOST_UNREACHABLE',
        502,
        `Vnode 0 of ${label} runs on host ${route.hostName}, which this node cannot reach at ${route.address}:${route.port} (${code})${route.hostOffline ? '; that host is offline' : ''}. Try again, or open the workspace through that host's portal.`,
        { cause: error },
      )
    return new ProxyError(
      'ERR_UPSTREAM_FAILED',
      502,
      `The connection to the workspace of ${label} failed before it answered (${code}); try again.`,
      { cause: error },
    )
  }
}
