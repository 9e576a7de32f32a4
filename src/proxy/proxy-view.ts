// What the proxy's worker threads know of the replicated state: a compact
// snapshot the main thread derives after applied commands and posts to
// them, so that a proxied request needs nothing from the main thread (whose
// event loop runs Raft's timers). Two parts, rebuilt and posted separately:
//
// - auth: the session key, each user's role, whether they may log in, their
//   session generation, and the revoked session ids: all a worker needs to
//   check a session cookie exactly as the API does (proxy-session.ts).
// - routes: per owner/name the vcluster's workspace route as seen from this
//   node (workspace-route.ts), already resolved to a target or to the
//   refusal sentence (a hop names the mesh IP it leaves from); where other
//   nodes' hops are to be served; and per mapped public port its target
//   (port-forwarder.ts), with the members' mesh IPs that mark a hop.
//
// Which commands touch which part is decided by command type, and a type
// this file does not know rebuilds both, so a new kind of command can make
// a worker's view stale only by being listed here wrongly. Everything is
// plain data (Maps, Sets, strings), cheap to post with structured clone.

import type { UserRole } from '../state/account-state.ts'
import type { ClusterData } from '../state/cluster-state.ts'
import { sessionGenerationOf } from '../state/session-state.ts'
import type { Vcluster } from '../state/vcluster-state.ts'
import { ProxyError, type ProxyErrorCode } from './proxy-error.ts'
import { workspaceKey } from './workspace-path.ts'
import {
  isWildcardHost,
  memberMeshIps,
  resolveWorkspaceRoute,
  selfMeshIp,
  splitHostPort,
} from './workspace-route.ts'

export interface ProxyUser {
  role: UserRole
  /** The user may log in now (status 'normal'). */
  active: boolean
  /** Sessions issued under an older generation are void. */
  generation: number
}

export interface AuthView {
  /** Hex HMAC key of session tokens ('' until the cluster has one). */
  sessionKey: string
  users: Map<string, ProxyUser>
  /** Ids of logged-out sessions that have not expired yet. */
  revoked: Set<string>
}

export type ResolvedRoute =
  | { kind: 'local'; address: string; port: number; token: string }
  | {
      kind: 'remote'
      /** The member id of the host that runs vnode 0. */
      host: string
      /** Its name, for error sentences. */
      hostName: string
      hostOffline: boolean
      address: string
      port: number
      /** This host's mesh IP, the source of the hop (absent off the mesh). */
      localAddress?: string
    }
  | { kind: 'refused'; code: ProxyErrorCode; status: number; message: string }

export interface WorkspaceEntry {
  owner: string
  name: string
  route: ResolvedRoute
}

/** Where a connection to a mapped public port goes from this node. */
export type PortRoute =
  | { kind: 'local'; host: string; port: number }
  /** Over the mesh to the same public port on the node of the vnode's host. */
  | { kind: 'remote'; host: string; port: number; localAddress: string }
  | { kind: 'drop'; reason: string }

export interface RouteView {
  /** `owner/name` → the live vcluster of that name (the lowest id, as findVcluster picks). */
  workspaces: Map<string, WorkspaceEntry>
  /** Mapped public port → its target. */
  ports: Map<number, PortRoute>
  /** Every member's mesh IP: a connection from one (not this host's) is another node's hop. */
  memberMeshIps: Set<string>
  /** Where other nodes' hops are served besides the portal itself (null: the portal serves them). */
  hopListen: { host: string; port: number } | null
}

export interface ProxyView {
  /** This node's member id. */
  selfId: string
  /** Added to the worker's Date.now() (non-zero only when a test hands the proxy its own clock). */
  clockOffsetMs: number
  auth: AuthView
  routes: RouteView
}

export interface RouteViewOptions {
  /** The port Jupyter listens on in vnode 0 (tests use their own). */
  workspacePort?: number
  /** This node's portal address as bound (HOST:PORT), '' before it listens. */
  portal: string
}

export function buildAuthView(data: Readonly<ClusterData>): AuthView {
  const users = new Map<string, ProxyUser>()
  for (const user of Object.values(data.users))
    users.set(user.name, {
      role: user.role,
      active: user.status === 'normal',
      generation: sessionGenerationOf(data, user.name),
    })
  return { sessionKey: data.sessionKey, users, revoked: new Set(Object.keys(data.revokedSessions)) }
}

function resolved(
  data: Readonly<ClusterData>,
  vcluster: Vcluster,
  selfId: string,
  port?: number,
): ResolvedRoute {
  try {
    const route = resolveWorkspaceRoute(
      data,
      vcluster,
      selfId,
      port === undefined ? {} : { workspacePort: port },
    )
    if (route.kind === 'local')
      return { kind: 'local', address: route.address, port: route.port, token: route.token }
    const host = data.members[route.host]
    const localAddress = selfMeshIp(data, selfId)
    return {
      kind: 'remote',
      host: route.host,
      hostName: host?.name || route.host,
      hostOffline: host?.online === false,
      address: route.address,
      port: route.port,
      // A hop leaves from this host's mesh address: the far side knows it as a node.
      ...(localAddress === null || localAddress === route.address ? {} : { localAddress }),
    }
  } catch (error) {
    if (!(error instanceof ProxyError)) throw error
    return { kind: 'refused', code: error.code, status: error.status, message: error.message }
  }
}

/** Where hops to this node arrive when its portal listens on one address only: its mesh IP, same port. */
function hopListenAddress(
  data: Readonly<ClusterData>,
  selfId: string,
  portal: string,
): { host: string; port: number } | null {
  const bound = splitHostPort(portal)
  if (bound === null || isWildcardHost(bound.host)) return null
  const meshIp = selfMeshIp(data, selfId)
  if (meshIp === null || meshIp === bound.host) return null
  return { host: meshIp, port: bound.port }
}

/** Every mapped public port's target as seen from `selfId`'s node. */
export function portRoutes(data: Readonly<ClusterData>, selfId: string): Map<number, PortRoute> {
  const routes = new Map<number, PortRoute>()
  const self = selfMeshIp(data, selfId)
  const meshIps = memberMeshIps(data)
  for (const mapping of Object.values(data.portMappings)) {
    const vnode = data.vclusters[mapping.vcluster]?.vnodes.find(
      (v) => v.index === mapping.index && v.desired !== 'deleted',
    )
    let route: PortRoute
    if (vnode === undefined || vnode.host === null)
      route = { kind: 'drop', reason: 'the vnode is not placed' }
    else if (vnode.host === selfId) route = { kind: 'local', host: vnode.ip, port: mapping.port }
    else {
      const far = data.members[vnode.host]
      route =
        self === null || far === undefined || !meshIps.has(far.meshIp ?? '')
          ? { kind: 'drop', reason: 'the vnode is on a host this node reaches through no mesh' }
          : { kind: 'remote', host: far.meshIp!, port: mapping.publicPort, localAddress: self }
    }
    routes.set(mapping.publicPort, route)
  }
  return routes
}

export function buildRouteView(
  data: Readonly<ClusterData>,
  selfId: string,
  options: RouteViewOptions,
): RouteView {
  const workspaces = new Map<string, WorkspaceEntry>()
  // Lowest id first, as findVcluster picks; a vcluster being deleted no longer serves.
  const all = Object.values(data.vclusters).sort((a, b) => Number(a.id) - Number(b.id))
  for (const vcluster of all) {
    const key = workspaceKey(vcluster.owner, vcluster.name)
    if (vcluster.status === 'deleting' || workspaces.has(key)) continue
    workspaces.set(key, {
      owner: vcluster.owner,
      name: vcluster.name,
      route: resolved(data, vcluster, selfId, options.workspacePort),
    })
  }
  return {
    workspaces,
    ports: portRoutes(data, selfId),
    memberMeshIps: memberMeshIps(data),
    hopListen: hopListenAddress(data, selfId, options.portal),
  }
}

/** Commands that change nothing a proxy reads. */
const UNRELATED_PREFIXES = ['login.', 'image.', 'token.', 'noop']
/** Commands that change sessions or users (and nothing of the routes but through users). */
const AUTH_PREFIXES = ['session.', 'user.password', 'settings.registration']
/** Commands that change placement, hosts or vclusters (and no session). */
const ROUTE_PREFIXES = ['vcluster.', 'vnode.', 'member.', 'host.', 'port', 'cluster.', 'group.']

export interface ViewChange {
  auth: boolean
  routes: boolean
}

/** Which parts of the view an applied command may change (null: a snapshot replaced everything). */
export function viewChangeOf(commandType: string | null): ViewChange {
  if (commandType === null) return { auth: true, routes: true }
  if (UNRELATED_PREFIXES.some((prefix) => commandType.startsWith(prefix)))
    return { auth: false, routes: false }
  if (AUTH_PREFIXES.some((prefix) => commandType.startsWith(prefix))) return { auth: true, routes: false }
  if (ROUTE_PREFIXES.some((prefix) => commandType.startsWith(prefix))) return { auth: false, routes: true }
  // user.add/remove/status/role and anything new: both, to be safe.
  return { auth: true, routes: true }
}
