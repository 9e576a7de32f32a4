// Where a workspace request goes, derived from the replicated state alone
// (every node derives the same table; there is nothing else to configure):
// `/go/<owner>/<vcluster>/...` → vnode 0 of that vcluster, where Jupyter
// listens. When vnode 0 runs on this host the proxy dials its IP (only this
// host holds the vcluster's bridge and gateway); otherwise it hops to the
// node of the host that runs it, over the WireGuard mesh (that host's mesh
// IP and portal port), or over the host's portal address when the cluster
// runs without a mesh. Pure functions; proxy-view.ts tabulates them for the
// proxy's workers.

import { JUPYTER_PORT, workspaceVnode } from '../agent/host-plan.ts'
import type { ClusterData, Member } from '../state/cluster-state.ts'
import { isMeshPublicKey } from '../state/mesh-state.ts'
import type { Vcluster } from '../state/vcluster-state.ts'
import { ProxyError } from './proxy-error.ts'

export { parseWorkspacePath, type WorkspacePath, workspacePrefix } from './workspace-path.ts'

export type WorkspaceRoute =
  | { kind: 'local'; vcluster: Vcluster; address: string; port: number; token: string }
  | { kind: 'remote'; vcluster: Vcluster; host: string; address: string; port: number }

/** HOST and PORT of a HOST:PORT (or [v6]:PORT) address; null for '' or junk. */
export function splitHostPort(address: string): { host: string; port: number } | null {
  const match = /^(.*):(\d{1,5})$/.exec(address)
  if (match === null) return null
  const port = Number(match[2])
  if (port < 1 || port > 65_535) return null
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port }
}

export function isWildcardHost(host: string): boolean {
  return host === '' || host === '0.0.0.0' || host === '::'
}

function onMesh(member: Member | undefined): member is Member & { meshIp: string } {
  return member !== undefined && isMeshPublicKey(member.meshPublicKey) && !!member.meshIp
}

/**
 * Where this node reaches another member's node for a hop: its mesh IP when
 * both hosts are on the mesh, else its portal's own address; always the
 * portal's port. Null when that host serves no portal or names no address.
 */
export function hopAddress(
  data: Readonly<ClusterData>,
  selfId: string,
  targetId: string,
): { address: string; port: number } | null {
  const target = data.members[targetId]
  const portal = splitHostPort(target?.portal ?? '')
  if (target === undefined || portal === null) return null
  if (onMesh(data.members[selfId]) && onMesh(target)) return { address: target.meshIp, port: portal.port }
  if (isWildcardHost(portal.host)) return null
  return { address: portal.host, port: portal.port }
}

/** The mesh IPs of every member on the mesh: connections from them are other nodes' hops. */
export function memberMeshIps(data: Readonly<ClusterData>): Set<string> {
  const ips = new Set<string>()
  for (const member of Object.values(data.members)) if (onMesh(member)) ips.add(member.meshIp)
  return ips
}

/** This node's own mesh IP when it is on the mesh (the source address of its hops), else null. */
export function selfMeshIp(data: Readonly<ClusterData>, selfId: string): string | null {
  const self = data.members[selfId]
  return onMesh(self) ? self.meshIp : null
}

function hostName(data: Readonly<ClusterData>, id: string): string {
  return data.members[id]?.name || id
}

/**
 * Where the workspace of `vcluster` is served from this node, or a
 * ProxyError saying why it cannot be (stopped, vnode 0 not running, no
 * Jupyter configured, its host unreachable).
 */
export function resolveWorkspaceRoute(
  data: Readonly<ClusterData>,
  vcluster: Vcluster,
  selfId: string,
  options: { workspacePort?: number } = {},
): WorkspaceRoute {
  const label = `${vcluster.owner}/${vcluster.name}`
  if (vcluster.desired === 'stopped')
    throw new ProxyError(
      'ERR_WORKSPACE_STOPPED',
      503,
      `The vcluster ${label} is stopped; start it to open its workspace.`,
    )
  const vnode = workspaceVnode(vcluster)
  if (vnode === undefined)
    throw new ProxyError(
      'ERR_WORKSPACE_NOT_RUNNING',
      503,
      `The vcluster ${label} has no vnode 0, which serves the workspace.`,
    )
  if (vnode.host === null)
    throw new ProxyError(
      'ERR_WORKSPACE_NOT_RUNNING',
      503,
      `Vnode 0 of ${label} waits for a host${vnode.pendingReason === '' ? '' : ` (${vnode.pendingReason})`}; try again when the vcluster runs.`,
    )
  if (vnode.observed !== 'running')
    throw new ProxyError(
      'ERR_WORKSPACE_NOT_RUNNING',
      503,
      vnode.observed === 'error'
        ? `Vnode 0 of ${label} failed${vnode.lastError === '' ? '' : `: ${vnode.lastError}`}.`
        : `Vnode 0 of ${label} is not running yet; try again in a moment.`,
    )
  if (vcluster.secret === undefined)
    throw new ProxyError(
      'ERR_WORKSPACE_NO_JUPYTER',
      503,
      `The vcluster ${label} was created without a workspace (no Jupyter token); create it through the portal or the CLI to get one.`,
    )
  if (vnode.host === selfId)
    return {
      kind: 'local',
      vcluster,
      address: vnode.ip,
      port: options.workspacePort ?? JUPYTER_PORT,
      token: vcluster.secret,
    }
  const hop = hopAddress(data, selfId, vnode.host)
  if (hop === null)
    throw new ProxyError(
      'ERR_HOST_UNREACHABLE',
      502,
      `Vnode 0 of ${label} runs on host ${hostName(data, vnode.host)}, which serves no portal this node can reach; open the workspace through that host's portal.`,
    )
  return { kind: 'remote', vcluster, host: vnode.host, ...hop }
}
