// State objects as the API shows them: only what a caller may see (no
// password hashes, no private keys), with vclusters named rather than
// numbered where a person reads them. Shapes match api-schemas.ts.

import type { Group } from '../state/account-state.ts'
import type { ClusterData, User } from '../state/cluster-state.ts'
import type { PortMapping } from '../state/port-state.ts'
import type { Resources } from '../state/scheduler.ts'
import { hostSlots, type Image, type Vcluster, type Vnode } from '../state/vcluster-state.ts'

export interface UserView {
  name: string
  role: User['role']
  group: string
  status: User['status']
  createdAt: number
}

export function userView(user: User): UserView {
  return {
    name: user.name,
    role: user.role,
    group: user.group,
    status: user.status,
    createdAt: user.createdAt,
  }
}

export function groupView(data: Readonly<ClusterData>, group: Group) {
  return {
    name: group.name,
    quota: { ...group.quota },
    members: Object.values(data.users).filter((user) => user.group === group.name).length,
    createdAt: group.createdAt,
  }
}

function vnodeView(vnode: Vnode) {
  return {
    index: vnode.index,
    hostname: vnode.hostname,
    host: vnode.host,
    ip: vnode.ip,
    image: vnode.image,
    limits: { ...vnode.limits },
    desired: vnode.desired,
    observed: vnode.observed,
    observedAt: vnode.observedAt,
    lastError: vnode.lastError,
    pendingReason: vnode.pendingReason,
    movingTo: vnode.move?.to ?? null,
  }
}

export function vclusterView(vcluster: Vcluster) {
  return {
    id: vcluster.id,
    name: vcluster.name,
    owner: vcluster.owner,
    status: vcluster.status,
    desired: vcluster.desired,
    subnet: vcluster.subnet,
    gateway: vcluster.gateway,
    vni: vcluster.vni,
    image: vcluster.image,
    limits: { ...vcluster.limits },
    createdAt: vcluster.createdAt,
    startedAt: vcluster.startedAt,
    stoppedAt: vcluster.stoppedAt,
    vnodes: vcluster.vnodes.map(vnodeView),
  }
}

export function imageView(image: Image) {
  return {
    id: image.id,
    name: image.name,
    owner: image.owner,
    visibility: image.visibility,
    description: image.description,
    sizeBytes: image.sizeBytes,
    createdAt: image.createdAt,
    hosts: [...image.hosts],
  }
}

export function portMappingView(data: Readonly<ClusterData>, mapping: PortMapping) {
  return {
    publicPort: mapping.publicPort,
    vcluster: data.vclusters[mapping.vcluster]?.name ?? '',
    index: mapping.index,
    port: mapping.port,
    protocol: mapping.protocol,
    createdAt: mapping.createdAt,
  }
}

export function hostViews(data: Readonly<ClusterData>) {
  return hostSlots(data as ClusterData).map((slot) => {
    const member = data.members[slot.id]
    const record = data.hosts[slot.id]
    const capacity: Resources | null = record?.capacity ?? null
    return {
      id: slot.id,
      name: slot.name,
      address: member?.address ?? '',
      online: member?.online ?? false,
      leaving: member?.leaving ?? false,
      drained: record?.drained ?? false,
      drainedAt: record?.drainedAt ?? 0,
      capacity: capacity === null ? null : { ...capacity },
      capacityAt: record?.capacityAt ?? 0,
      used: { ...slot.used },
      vnodes: Object.values(slot.vnodesByVcluster).reduce((sum, n) => sum + n, 0),
      unavailable: slot.unavailable,
    }
  })
}
