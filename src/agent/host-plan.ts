// What this host should run, derived from the replicated state: pure
// functions from (state, this host, what it has) to container specs, the
// vcluster networks it must carry and the reports it owes. The host agent
// executes the result; keeping the decisions here makes them unit-testable
// without containers.

import type { OverlayDesired } from '../../net/index.ts'
import { overlayMtu, overlayNames } from '../../net/index.ts'
import type { ContainerSpec, ContainerState } from '../../runtime/index.ts'
import type { ClusterData } from '../state/cluster-state.ts'
import type { Vcluster, Vnode } from '../state/vcluster-state.ts'

/** What the mesh agent offers: this host's mesh address and its peers'. */
export interface MeshView {
  interfaceName: string
  localMeshIp: string
  mtu: number
  /** Member id → mesh IP, this host included. */
  hostMeshIps: Record<string, string>
}

/** Host facts the network plan needs that the state does not hold. */
export interface HostNetwork {
  /** Where egress leaves this host (NATed there). */
  egressInterface: string
  /** Ports of the control plane vnodes must never reach (libp2p, portal). */
  controlPorts: number[]
}

/** Container names start with this, so a host (or a test machine running several clusters) can tell its own. */
export function containerPrefix(clusterId: string): string {
  return `dk-${clusterId.slice(0, 8)}`
}

export function containerName(prefix: string, vclusterId: string, index: number): string {
  return `${prefix}-${vclusterId}-${index}`
}

/** Parses a name made by containerName; null for containers that are not ours. */
export function parseContainerName(
  prefix: string,
  name: string,
): { vclusterId: string; index: number } | null {
  if (!name.startsWith(`${prefix}-`)) return null
  const match = /^([0-9]+)-([0-9]+)$/.exec(name.slice(prefix.length + 1))
  if (match === null) return null
  return { vclusterId: match[1]!, index: Number(match[2]) }
}

/** A stable MAC per vnode: locally administered 02:00 + the IPv4 address (unique inside its vcluster). */
export function vnodeMac(ip: string): string {
  const bytes = [0x02, 0x00, ...ip.split('.').map(Number)]
  return bytes.map((byte) => byte.toString(16).padStart(2, '0')).join(':')
}

/** The vnodes of a vcluster that exist (not being removed), by index. */
export function liveVnodes(vcluster: Vcluster): Vnode[] {
  return vcluster.vnodes.filter((vnode) => vnode.desired !== 'deleted')
}

export function hostsEntries(vcluster: Vcluster): Array<{ ip: string; name: string }> {
  return liveVnodes(vcluster).map((vnode) => ({ ip: vnode.ip, name: vnode.hostname }))
}

/** The vnodes placed on `hostId`, removal in progress included. */
export function vnodesOn(data: ClusterData, hostId: string): Array<{ vcluster: Vcluster; vnode: Vnode }> {
  const mine: Array<{ vcluster: Vcluster; vnode: Vnode }> = []
  for (const id of Object.keys(data.vclusters).sort((a, b) => Number(a) - Number(b))) {
    const vcluster = data.vclusters[id]!
    for (const vnode of vcluster.vnodes) if (vnode.host === hostId) mine.push({ vcluster, vnode })
  }
  return mine
}

/** The IPv4 address in a libp2p multiaddr like /ip4/10.0.0.5/tcp/7946, or null. */
export function multiaddrIp(address: string): string | null {
  const match = /^\/ip4\/([0-9.]+)\//.exec(address)
  return match === null ? null : match[1]!
}

/** The port Jupyter listens on in a workspace vnode. */
export const JUPYTER_PORT = 8888

/** Where the any-node proxy serves a vcluster's workspace (and the base URL Jupyter is started with). */
export function workspaceBaseUrl(vcluster: Pick<Vcluster, 'owner' | 'name'>): string {
  return `/go/${vcluster.owner}/${vcluster.name}/`
}

/** The vnode that serves a vcluster's workspace: vnode 0 (the agent starts Jupyter there). */
export function workspaceVnode(vcluster: Vcluster): Vnode | undefined {
  return liveVnodes(vcluster).find((vnode) => vnode.index === 0)
}

export interface SpecInput {
  prefix: string
  vcluster: Vcluster
  vnode: Vnode
  imagePath: string
  mesh: MeshView | null
  sshKey: { publicKey: string; privateKey: string } | null
  files?: ContainerSpec['files']
}

export function vnodeSpec(input: SpecInput): ContainerSpec {
  const { vcluster, vnode, mesh } = input
  const prefixLength = vcluster.subnet.split('/')[1] ?? '24'
  const spec: ContainerSpec = {
    name: containerName(input.prefix, vcluster.id, vnode.index),
    hostname: vnode.hostname,
    imagePath: input.imagePath,
    limits: { ...vnode.limits },
    network:
      mesh === null
        ? null
        : {
            bridge: overlayNames(vcluster.vni).bridge,
            ip: `${vnode.ip}/${prefixLength}`,
            gateway: vcluster.gateway,
            mtu: overlayMtu(mesh.mtu),
            hwaddr: vnodeMac(vnode.ip),
          },
    hosts: hostsEntries(vcluster),
  }
  if (input.sshKey !== null && input.sshKey.publicKey !== '') spec.sshKeys = input.sshKey
  if (input.files !== undefined && input.files.length > 0) spec.files = input.files
  return spec
}

/**
 * The network this host must carry for `vcluster`: a bridge, a VXLAN to the
 * other hosts that hold its vnodes (and only those), the gateway, NAT and
 * isolation rules.
 */
export function overlayFor(
  data: ClusterData,
  vcluster: Vcluster,
  hostId: string,
  mesh: MeshView,
  host: HostNetwork,
): OverlayDesired {
  const prefixLength = vcluster.subnet.split('/')[1] ?? '24'
  const peerHosts = new Set<string>()
  const remoteVnodes: OverlayDesired['remoteVnodes'] = []
  for (const vnode of liveVnodes(vcluster)) {
    if (vnode.host === null || vnode.host === hostId) continue
    const meshIp = mesh.hostMeshIps[vnode.host]
    if (meshIp === undefined) continue // the mesh has not learnt that host yet; the next round adds it
    peerHosts.add(meshIp)
    remoteVnodes.push({ mac: vnodeMac(vnode.ip), hostMeshIp: meshIp })
  }
  const hostAddresses = new Set<string>()
  for (const member of Object.values(data.members)) {
    const ip = multiaddrIp(member.address)
    if (ip !== null) hostAddresses.add(ip)
  }
  for (const ip of Object.values(mesh.hostMeshIps)) hostAddresses.add(ip)
  return {
    vni: vcluster.vni,
    subnet: vcluster.subnet,
    gatewayAddress: `${vcluster.gateway}/${prefixLength}`,
    meshInterface: mesh.interfaceName,
    localMeshIp: mesh.localMeshIp,
    meshMtu: mesh.mtu,
    peerMeshIps: [...peerHosts].sort(),
    remoteVnodes,
    egressInterface: host.egressInterface,
    controlPorts: [...new Set(host.controlPorts)].sort((a, b) => a - b),
    hostAddresses: [...hostAddresses].sort(),
  }
}

/** Vnodes moving to `hostId` whose files the source has saved: this host creates them next. */
export function incomingOn(data: ClusterData, hostId: string): Array<{ vcluster: Vcluster; vnode: Vnode }> {
  const incoming: Array<{ vcluster: Vcluster; vnode: Vnode }> = []
  for (const id of Object.keys(data.vclusters).sort((a, b) => Number(a) - Number(b))) {
    const vcluster = data.vclusters[id]!
    for (const vnode of vcluster.vnodes)
      if (vnode.move?.to === hostId && vnode.move.image !== '' && vnode.desired !== 'deleted')
        incoming.push({ vcluster, vnode })
  }
  return incoming
}

/** The vclusters that need a network on this host: those with a live vnode here or moving here. */
export function vclustersOn(data: ClusterData, hostId: string): Vcluster[] {
  const seen = new Map<string, Vcluster>()
  for (const { vcluster, vnode } of vnodesOn(data, hostId))
    if (vnode.desired !== 'deleted') seen.set(vcluster.id, vcluster)
  for (const { vcluster } of incomingOn(data, hostId)) seen.set(vcluster.id, vcluster)
  return [...seen.values()]
}

export type VnodeAction =
  | { kind: 'create'; start: boolean }
  | { kind: 'start' }
  | { kind: 'stop' }
  | { kind: 'destroy' }
  | { kind: 'none' }

/** What to do with one vnode given what the runtime reports for its container. */
export function vnodeAction(desired: Vnode['desired'], actual: ContainerState): VnodeAction {
  if (desired === 'deleted') return actual === 'absent' ? { kind: 'none' } : { kind: 'destroy' }
  if (actual === 'absent') return { kind: 'create', start: desired === 'running' }
  if (desired === 'running' && actual === 'stopped') return { kind: 'start' }
  if (desired === 'stopped' && actual === 'running') return { kind: 'stop' }
  return { kind: 'none' }
}

/** The observed state a vnode's record should carry, given its container now. */
export function observedOf(desired: Vnode['desired'], actual: ContainerState): Vnode['observed'] {
  if (actual === 'absent') return desired === 'deleted' ? 'deleted' : 'none'
  return actual
}
