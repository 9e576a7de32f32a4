// The any-node workspace proxy: `/go/<owner>/<vcluster>/...` on every
// node's portal reaches Jupyter on vnode 0 of that vcluster, for plain HTTP
// and for WebSocket upgrades (kernels, terminals), wherever the vnode runs.
//
// Per request: the session cookie is checked (401, or a redirect to the
// login page for a browser), then ownership (the owner or an admin; anyone
// else gets the same 404 as for a workspace that does not exist), then the
// route from the replicated state (workspace-route.ts). A local vnode 0 is
// dialled directly with `Authorization: token <secret>` added, so the user
// never types Jupyter's token. A remote one is reached through its host's
// node with a signed hop header (hop-token.ts) that the far node verifies
// before it proxies locally; a hop is never forwarded again.
//
// Bodies stream both ways (pipes, so buffering stays within a socket's
// high-water mark) and upgrades become raw socket pairs; the event loop only
// moves chunks, which keeps Raft's timers on time. Connections are bounded
// (proxied requests and tunnels together).

import { Agent, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { ClusterState } from '../state/cluster-state.ts'
import {
  downstreamResponseHeaders,
  type ForwardedFor,
  plainAddress,
  requestHead,
  upstreamRequestHeaders,
} from './forward-headers.ts'
import { hopHeader, hopTtlMsDefault, signHop, verifyHop } from './hop-token.ts'
import { ProxyError, sendError, sendSocketError } from './proxy-error.ts'
import { sessionUserOf } from './proxy-session.ts'
import { joinSockets } from './socket-pair.ts'
import {
  parseWorkspacePath,
  resolveWorkspaceRoute,
  selfMeshIp,
  type WorkspaceRoute,
  WorkspaceTable,
  workspacePrefix,
} from './workspace-route.ts'

export const proxyConnectTimeoutMsDefault = 5_000
/** Proxied requests and WebSocket tunnels open at once, on this node. */
export const proxyConnectionsMaxDefault = 4_096
/** Connections kept to one upstream (a vnode's Jupyter, another node). */
export const upstreamSocketsMaxPerHost = 256
export const upstreamFreeSocketsMax = 64
/** Idle kept-alive upstream sockets close after this, well before Node's or Jupyter's own idle timeouts. */
export const upstreamIdleMs = 4_000
/** Where a browser without a session is sent (with ?next=<the workspace URL>). */
export const loginPathDefault = '/login'

export interface WorkspaceProxyInit {
  /** The local replica; routes and sessions are read from it. */
  state: ClusterState
  /** This node's member id. */
  selfId: string
  logger?: Logger
  /** Wall clock in ms (tests pass a fake one). */
  now?: () => number
  /** The port Jupyter listens on in vnode 0 (JUPYTER_PORT; tests use their own). */
  workspacePort?: number
  connectTimeoutMs?: number
  connectionsMax?: number
  hopTtlMs?: number
  loginPath?: string
}

export interface ProxyScope {
  /** Only verified hops from other nodes are served (the mesh listener). */
  hopOnly?: boolean
}

type Decision =
  | { kind: 'forward'; route: WorkspaceRoute; user: string; forwarded: ForwardedFor | 'keep' }
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

class ConnectTimeoutError extends Error {
  readonly code = 'ETIMEDOUT'
  constructor(timeoutMs: number) {
    super(`no connection within ${timeoutMs} ms`)
    this.name = 'ConnectTimeoutError'
  }
}

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

export class WorkspaceProxy {
  private readonly state: ClusterState
  private readonly selfId: string
  private readonly log: Logger | undefined
  private readonly now: () => number
  private readonly workspacePort: number | undefined
  private readonly connectTimeoutMs: number
  private readonly connectionsMax: number
  private readonly hopTtlMs: number
  private readonly loginPath: string
  private readonly table: WorkspaceTable
  private readonly agent: Agent
  private readonly tunnels = new Set<Duplex>()
  private active = 0
  private closed = false

  constructor(init: WorkspaceProxyInit) {
    this.state = init.state
    this.selfId = init.selfId
    this.log = init.logger
    this.now = init.now ?? Date.now
    this.workspacePort = init.workspacePort
    this.connectTimeoutMs = init.connectTimeoutMs ?? proxyConnectTimeoutMsDefault
    this.connectionsMax = init.connectionsMax ?? proxyConnectionsMaxDefault
    this.hopTtlMs = init.hopTtlMs ?? hopTtlMsDefault
    this.loginPath = init.loginPath ?? loginPathDefault
    this.table = new WorkspaceTable(init.state)
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: upstreamSocketsMaxPerHost,
      maxFreeSockets: upstreamFreeSocketsMax,
      timeout: upstreamIdleMs,
    })
  }

  /** Proxied requests and tunnels open now. */
  get activeConnections(): number {
    return this.active
  }

  /** Serves one HTTP request under /go/ (the caller has hijacked the response). */
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
    const headers = upstreamRequestHeaders(request.rawHeaders, {
      forwarded: decision.forwarded,
      authorization: route.kind === 'local' ? `token ${route.token}` : null,
      hop: route.kind === 'remote' ? this.hopFor(route, decision.user, request.url ?? '/') : null,
      upgrade: false,
    })
    this.active += 1
    let released = false
    response.once('close', () => {
      if (released) return
      released = true
      this.active -= 1
    })
    this.forward(request, response, route, headers, true)
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
    const { route } = decision
    const url = request.url ?? '/'
    const headers = upstreamRequestHeaders(request.rawHeaders, {
      forwarded: decision.forwarded,
      authorization: route.kind === 'local' ? `token ${route.token}` : null,
      hop: route.kind === 'remote' ? this.hopFor(route, decision.user, url) : null,
      upgrade: true,
    })
    this.active += 1
    this.tunnels.add(socket)
    const release = () => {
      this.tunnels.delete(socket)
      this.active -= 1
    }
    const upstream = this.dial(route)
    let joined = false
    const timer = setTimeout(
      () => upstream.destroy(new ConnectTimeoutError(this.connectTimeoutMs)),
      this.connectTimeoutMs,
    )
    upstream.once('connect', () => {
      clearTimeout(timer)
      upstream.write(requestHead(request.method ?? 'GET', url, headers))
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
      sendSocketError(request, socket, this.upstreamError(route, error))
      release()
    })
  }

  /** Cuts every tunnel and idle upstream connection (the node is stopping). */
  close(): void {
    this.closed = true
    for (const socket of this.tunnels) socket.destroy()
    this.tunnels.clear()
    this.agent.destroy()
    this.table.close()
  }

  // ---------------------------------------------------------------------------

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
    this.log?.error({ err: error }, 'workspace proxy failed')
    return new ProxyError(
      'ERR_UPSTREAM_FAILED',
      502,
      'The node failed to proxy the request; its log has the details.',
    )
  }

  /** Who may go where: hop, session, ownership, route. Throws ProxyError for every refusal. */
  private decide(request: IncomingMessage, scope: ProxyScope, upgrade: boolean): Decision {
    const url = request.url ?? '/'
    const path = parseWorkspacePath(url)
    const data = this.state.view
    const hop = request.headers[hopHeader]
    if (hop !== undefined) {
      const claims =
        typeof hop === 'string' && path !== null
          ? verifyHop(data.sessionKey, hop, {
              self: this.selfId,
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
      const vcluster = this.table.find(path.owner, path.name)
      if (vcluster === undefined) throw this.notFound(path.owner, path.name, claims.user)
      const route = resolveWorkspaceRoute(data, vcluster, this.selfId, this.routeOptions())
      if (route.kind !== 'local')
        throw new ProxyError(
          'ERR_WORKSPACE_MOVED',
          502,
          `Vnode 0 of ${vcluster.owner}/${vcluster.name} is not on this host (any more); try again.`,
        )
      return { kind: 'forward', route, user: claims.user, forwarded: 'keep' }
    }
    if (scope.hopOnly === true)
      throw new ProxyError('ERR_WORKSPACE_NOT_FOUND', 404, 'This address serves only other docklet nodes.')
    if (path === null) throw this.notFound('', '', '')
    let user: ReturnType<typeof sessionUserOf>
    try {
      user = sessionUserOf(data, request.headers.cookie, this.now())
    } catch (error) {
      if (error instanceof ProxyError && !upgrade && wantsPage(request))
        return { kind: 'redirect', location: `${this.loginPath}?next=${encodeURIComponent(url)}` }
      throw error
    }
    if (upgrade || !safeMethods.has(request.method ?? 'GET')) checkOrigin(request)
    const vcluster = this.table.find(path.owner, path.name)
    if (vcluster === undefined || (vcluster.owner !== user.name && user.role !== 'admin'))
      throw this.notFound(path.owner, path.name, user.name)
    if (path.bare) {
      if (upgrade) throw this.notFound(path.owner, path.name, user.name)
      const query = url.indexOf('?')
      return {
        kind: 'redirect',
        location: `${workspacePrefix}${path.owner}/${path.name}/${query < 0 ? '' : url.slice(query)}`,
      }
    }
    const route = resolveWorkspaceRoute(data, vcluster, this.selfId, this.routeOptions())
    const socket = request.socket as Partial<TLSSocket>
    return {
      kind: 'forward',
      route,
      user: user.name,
      forwarded: {
        for: plainAddress(request.socket.remoteAddress),
        proto: socket.encrypted === true ? 'https' : 'http',
        host: request.headers.host ?? '',
      },
    }
  }

  private routeOptions(): { workspacePort?: number } {
    return this.workspacePort === undefined ? {} : { workspacePort: this.workspacePort }
  }

  private notFound(owner: string, name: string, user: string): ProxyError {
    const where = owner === '' ? 'at this address' : `at ${workspacePrefix}${owner}/${name}/`
    return new ProxyError(
      'ERR_WORKSPACE_NOT_FOUND',
      404,
      `There is no workspace ${where}${user === '' ? '' : ` that ${user} may open`}.`,
    )
  }

  private hopFor(route: WorkspaceRoute & { kind: 'remote' }, user: string, url: string): string {
    return signHop(this.state.view.sessionKey, {
      target: route.host,
      user,
      url,
      expiresAt: this.now() + this.hopTtlMs,
    })
  }

  /** A raw connection for a tunnel; a hop leaves from this host's mesh address (the far side knows it as a node). */
  private dial(route: WorkspaceRoute): Socket {
    const localAddress = route.kind === 'remote' ? selfMeshIp(this.state.view, this.selfId) : null
    return connect({
      host: route.address,
      port: route.port,
      allowHalfOpen: true,
      ...(localAddress === null || localAddress === route.address ? {} : { localAddress }),
    })
  }

  private forward(
    request: IncomingMessage,
    response: ServerResponse,
    route: WorkspaceRoute,
    headers: string[],
    mayRetry: boolean,
  ): void {
    const upstream = httpRequest({
      host: route.address,
      port: route.port,
      method: request.method,
      path: request.url,
      headers,
      agent: this.agent,
      setHost: false,
    })
    let timer: NodeJS.Timeout | undefined = setTimeout(
      () => upstream.destroy(new ConnectTimeoutError(this.connectTimeoutMs)),
      this.connectTimeoutMs,
    )
    const connected = () => {
      clearTimeout(timer)
      timer = undefined
    }
    upstream.once('socket', (socket) => {
      if (socket.connecting) socket.once('connect', connected)
      else connected()
    })
    upstream.once('response', (answer) => {
      connected()
      response.writeHead(
        answer.statusCode ?? 502,
        answer.statusMessage,
        downstreamResponseHeaders(answer.rawHeaders),
      )
      answer.pipe(response)
      answer.on('error', () => response.destroy())
      answer.once('aborted', () => response.destroy())
    })
    let failed = false
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (failed) return
      failed = true
      if (timer !== undefined) clearTimeout(timer)
      request.unpipe(upstream)
      if (response.headersSent || response.destroyed) {
        response.destroy()
        return
      }
      // A kept-alive connection the upstream had just closed: a request without a body is safe to send again.
      if (
        mayRetry &&
        upstream.reusedSocket &&
        error.code === 'ECONNRESET' &&
        safeMethods.has(request.method ?? 'GET') &&
        request.readableEnded
      ) {
        this.forward(request, response, route, headers, false)
        return
      }
      sendError(request, response, this.upstreamError(route, error))
    })
    response.once('close', () => {
      if (!response.writableFinished) upstream.destroy()
    })
    request.on('error', () => upstream.destroy())
    if (request.readableEnded) upstream.end()
    else request.pipe(upstream)
  }

  private upstreamError(route: WorkspaceRoute, error: NodeJS.ErrnoException): ProxyError {
    const label = `${route.vcluster.owner}/${route.vcluster.name}`
    const code = error.code ?? 'unknown'
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
    } else {
      const host = this.state.view.members[route.host]
      if (unreachableCodes.has(code))
        return new ProxyError(
          'ERR_HOST_UNREACHABLE',
          502,
          `Vnode 0 of ${label} runs on host ${host?.name || route.host}, which this node cannot reach at ${route.address}:${route.port} (${code})${host?.online === false ? '; that host is offline' : ''}. Try again, or open the workspace through that host's portal.`,
          { cause: error },
        )
    }
    return new ProxyError(
      'ERR_UPSTREAM_FAILED',
      502,
      `The connection to the workspace of ${label} failed before it answered (${code}); try again.`,
      { cause: error },
    )
  }
}
