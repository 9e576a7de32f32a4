// Vclusters, vnodes, images and host capacity: the allocation half of the
// replicated state. Each handler checks everything first (user, name, sizes,
// image, quota, addresses) and only then changes the state, so a refused
// command changes nothing. Placement comes from the pure scheduler, run
// while the command is applied, so every replica agrees on each vnode's host
// and IP.
//
// Removal is two-phase: delete and scale-in mark vnodes `desired: deleted`
// (the user's quota is released at once), and the vnode, its IP and its
// share of the host are freed when its host's agent reports it gone (or at
// once when it was never placed). The subnet and VNI go with the last vnode.

import { checkActiveUser, namePattern, quotaOf, usageOf } from './account-state.ts'
import type { ClusterData, CommandResult } from './cluster-state.ts'
import {
  applyMoveCommand,
  type MoveCommand,
  moveCommandTypes,
  startEvacuation,
  type VnodeMove,
} from './evacuation.ts'
import {
  allocateAddresses,
  allocateSubnet,
  allocateVni,
  checkAddressPlan,
  gatewayOf,
  vnodesPerSubnet,
} from './ip-allocator.ts'
import { checkQuota } from './quota.ts'
import {
  type HostSlot,
  type PlacementPolicy,
  type PlacementRequest,
  placementPolicies,
  placeVnodes,
  type Resources,
} from './scheduler.ts'
import { failure } from './state-error.ts'

export interface AllocationSettings {
  /** Vcluster subnets are carved from this range. */
  clusterNet: string
  /** Prefix length of each vcluster's subnet. */
  subnetPrefix: number
  vniMin: number
  vniMax: number
  policy: PlacementPolicy
  /** The largest limits one vnode may ask for. */
  vnodeMax: Resources
}

export const defaultAllocationSettings: AllocationSettings = {
  clusterNet: '172.16.0.0/16',
  subnetPrefix: 24,
  vniMin: 1000,
  vniMax: 16_777_215,
  policy: 'spread',
  vnodeMax: { cpuCores: 64, memoryMb: 262_144, diskMb: 1_048_576 },
}

export interface HostRecord {
  id: string
  /** As reported by the host's agent; null until the first report. */
  capacity: Resources | null
  capacityAt: number
  /** An admin drained it: no new vnodes are placed here. */
  drained: boolean
  drainedAt: number
}

export type ImageVisibility = 'private' | 'public'

export interface Image {
  /** The content hash. */
  id: string
  name: string
  owner: string
  visibility: ImageVisibility
  description: string
  sizeBytes: number
  createdAt: number
  /** Member ids of the hosts holding the bytes, sorted. */
  hosts: string[]
}

export type VnodeDesired = 'running' | 'stopped' | 'deleted'
export type VnodeObserved = 'none' | 'running' | 'stopped' | 'error' | 'deleted'
export type VclusterStatus = 'pending' | 'running' | 'stopped' | 'error' | 'deleting'

export interface Vnode {
  vcluster: string
  index: number
  hostname: string
  /** The member that runs it, or null while it waits for room. */
  host: string | null
  ip: string
  /** Image id (content hash). */
  image: string
  limits: Resources
  desired: VnodeDesired
  observed: VnodeObserved
  observedAt: number
  lastError: string
  /** Why it is not placed yet ('' once placed). */
  pendingReason: string
  /** Set while the vnode moves off a drained host (see evacuation.ts). */
  move?: VnodeMove
}

export interface Vcluster {
  id: string
  owner: string
  name: string
  subnet: string
  vni: number
  gateway: string
  status: VclusterStatus
  desired: 'running' | 'stopped'
  /** Image and limits new vnodes (scale-out) get. */
  image: string
  limits: Resources
  nextIndex: number
  createdAt: number
  startedAt: number
  stoppedAt: number
  /** Sorted by index. */
  vnodes: Vnode[]
  /** The workspace token (Jupyter on vnode 0), known to every node's proxy and never shown to users. */
  secret?: string
}

export interface AllocationData {
  allocation: AllocationSettings
  groups: Record<string, import('./account-state.ts').Group>
  hosts: Record<string, HostRecord>
  images: Record<string, Image>
  vclusters: Record<string, Vcluster>
  nextVclusterId: number
}

export type VclusterCommand =
  | {
      type: 'vcluster.create'
      at: number
      owner: string
      name: string
      nodes: number
      /** An image id, or the name of one of the owner's images or of a public image. */
      image: string
      limits: Resources
      /** Random, made by the proposer: the workspace (Jupyter) token the proxy presents. */
      secret?: string
    }
  | { type: 'vcluster.scale-out'; at: number; vcluster: string; n: number }
  | { type: 'vcluster.scale-in'; at: number; vcluster: string; index: number }
  | { type: 'vcluster.start'; at: number; vcluster: string }
  | { type: 'vcluster.stop'; at: number; vcluster: string }
  | { type: 'vcluster.delete'; at: number; vcluster: string }
  | {
      type: 'vnode.observed'
      at: number
      vcluster: string
      index: number
      state: Exclude<VnodeObserved, 'none'>
      error?: string
      /** The reporting host; a report from a host that no longer holds the vnode is refused. */
      host?: string
    }
  | {
      type: 'image.register'
      at: number
      id: string
      name: string
      owner: string
      visibility?: ImageVisibility
      description?: string
      sizeBytes: number
      /** The host where the image was built or saved. */
      host?: string
    }
  | { type: 'image.share'; at: number; id: string }
  | { type: 'image.unshare'; at: number; id: string }
  | { type: 'image.delete'; at: number; id: string }
  | { type: 'image.describe'; at: number; id: string; description: string }
  | { type: 'image.held'; at: number; hash: string; host: string }
  | { type: 'host.capacity'; at: number; host: string; capacity: Resources }
  | { type: 'host.drain'; at: number; host: string; evacuate?: boolean }
  | MoveCommand
  | { type: 'host.undrain'; at: number; host: string }

export const vclusterCommandTypes: ReadonlySet<string> = new Set([
  'vcluster.create',
  'vcluster.scale-out',
  'vcluster.scale-in',
  'vcluster.start',
  'vcluster.stop',
  'vcluster.delete',
  'vnode.observed',
  'image.register',
  'image.share',
  'image.unshare',
  'image.delete',
  'image.describe',
  'image.held',
  'host.capacity',
  'host.drain',
  'host.undrain',
  ...moveCommandTypes,
])

const resourceKeys = ['cpuCores', 'memoryMb', 'diskMb'] as const
const observedStates: ReadonlyArray<string> = ['running', 'stopped', 'error', 'deleted']

/** A sentence saying what is wrong with the settings, or null. */
export function checkAllocationSettings(settings: AllocationSettings): string | null {
  const plan = checkAddressPlan({ clusterNet: settings.clusterNet, subnetPrefix: settings.subnetPrefix })
  if (plan !== null) return plan
  if (
    !Number.isInteger(settings.vniMin) ||
    !Number.isInteger(settings.vniMax) ||
    settings.vniMin < 1 ||
    settings.vniMax > 16_777_215 ||
    settings.vniMin > settings.vniMax
  ) {
    return `The VNI range ${settings.vniMin}-${settings.vniMax} must lie within 1-16777215.`
  }
  if (!placementPolicies.includes(settings.policy))
    return `The placement policy ${String(settings.policy)} is not one of ${placementPolicies.join(', ')}.`
  for (const key of resourceKeys) {
    const value = settings.vnodeMax[key]
    if (!Number.isSafeInteger(value) || value < 1)
      return `The per-vnode maximum ${key} must be a positive whole number.`
  }
  return null
}

// ---------------------------------------------------------------------------
// Derived views

function sortedVclusters(data: ClusterData): Vcluster[] {
  return Object.values(data.vclusters).sort((a, b) => Number(a.id) - Number(b.id))
}

/** The live vcluster of `owner` named `name` (one being deleted does not count). */
export function findVcluster(data: ClusterData, owner: string, name: string): Vcluster | undefined {
  return sortedVclusters(data).find(
    (vc) => vc.owner === owner && vc.name === name && vc.status !== 'deleting',
  )
}

/** Every member as the scheduler sees it: what it can hold, what is placed on it, and whether it takes more. */
export function hostSlots(data: ClusterData): HostSlot[] {
  const slots = new Map<string, HostSlot>()
  for (const id of Object.keys(data.members).sort()) {
    const member = data.members[id]
    if (member === undefined) continue
    const record = data.hosts[id]
    const unavailable = member.leaving
      ? 'leaving'
      : !member.online
        ? 'offline'
        : record?.drained === true
          ? 'drained'
          : (record?.capacity ?? null) === null
            ? 'unreported'
            : null
    slots.set(id, {
      id,
      name: member.name,
      unavailable,
      capacity: { ...(record?.capacity ?? { cpuCores: 0, memoryMb: 0, diskMb: 0 }) },
      used: { cpuCores: 0, memoryMb: 0, diskMb: 0 },
      vnodesByVcluster: {},
    })
  }
  for (const vcluster of Object.values(data.vclusters)) {
    for (const vnode of vcluster.vnodes) {
      // A moving vnode holds room on both hosts until the move completes.
      for (const host of vnode.move === undefined ? [vnode.host] : [vnode.host, vnode.move.to]) {
        const slot = host === null ? undefined : slots.get(host)
        if (slot === undefined) continue
        for (const key of resourceKeys) slot.used[key] += vnode.limits[key]
        slot.vnodesByVcluster[vcluster.id] = (slot.vnodesByVcluster[vcluster.id] ?? 0) + 1
      }
    }
  }
  return [...slots.values()]
}

function refreshStatus(vcluster: Vcluster): void {
  if (vcluster.status === 'deleting') return
  const active = vcluster.vnodes.filter((vnode) => vnode.desired !== 'deleted')
  if (active.some((vnode) => vnode.observed === 'error')) vcluster.status = 'error'
  else if (vcluster.desired === 'stopped') vcluster.status = 'stopped'
  else vcluster.status = active.every((vnode) => vnode.observed === 'running') ? 'running' : 'pending'
}

/**
 * Places every vnode still waiting for a host, in vcluster then index order,
 * on the capacity there is now. Returns how many it placed.
 */
export function placePending(data: ClusterData): number {
  const waiting: Vnode[] = []
  for (const vcluster of sortedVclusters(data))
    for (const vnode of vcluster.vnodes)
      if (vnode.host === null && vnode.desired !== 'deleted') waiting.push(vnode)
  if (waiting.length === 0) return 0
  const placements = placeVnodes(
    hostSlots(data),
    waiting.map((vnode) => ({ vcluster: vnode.vcluster, limits: vnode.limits })),
    { policy: data.allocation.policy },
  )
  let placed = 0
  waiting.forEach((vnode, i) => {
    const placement = placements[i]
    if (placement === undefined) return
    vnode.host = placement.host
    vnode.pendingReason = placement.reason ?? ''
    if (placement.host !== null) placed += 1
  })
  return placed
}

// ---------------------------------------------------------------------------
// Checks that return a failure or null

function checkLimits(data: ClusterData, limits: Resources | undefined): CommandResult | null {
  if (limits === undefined || typeof limits !== 'object')
    return failure('ERR_BAD_SIZE', 'The vnode limits (cpu cores, memory MB, disk MB) are missing.')
  const max = data.allocation.vnodeMax
  const names = { cpuCores: 'cpu cores', memoryMb: 'memory MB', diskMb: 'disk MB' }
  for (const key of resourceKeys) {
    const value = limits[key]
    if (!Number.isSafeInteger(value) || value < 1) {
      return failure(
        'ERR_BAD_SIZE',
        `The ${names[key]} of a vnode must be a positive whole number, not ${String(value)}.`,
      )
    }
    if (value > max[key]) {
      return failure('ERR_BAD_SIZE', `The ${names[key]} of a vnode can be at most ${max[key]}, not ${value}.`)
    }
  }
  return null
}

function checkCount(count: number, what: string, room: number): CommandResult | null {
  if (!Number.isSafeInteger(count) || count < 1)
    return failure(
      'ERR_BAD_SIZE',
      `The number of ${what} must be a positive whole number, not ${String(count)}.`,
    )
  if (count > room)
    return failure(
      'ERR_BAD_SIZE',
      `The vcluster subnet has room for ${room} more vnodes, not ${count}; use a shorter subnet prefix for more.`,
    )
  return null
}

type Resolved = { ok: true; image: Image } | { ok: false; result: CommandResult }

/** An image `owner` may use: one of theirs or a public one, by id or by name. */
function resolveImage(data: ClusterData, owner: string, ref: string): Resolved {
  const usable = (image: Image) => image.owner === owner || image.visibility === 'public'
  const byId = data.images[ref]
  if (byId !== undefined && usable(byId)) return { ok: true, image: byId }
  const all = Object.values(data.images).sort((a, b) => (a.id < b.id ? -1 : 1))
  const own = all.find((image) => image.owner === owner && image.name === ref)
  if (own !== undefined) return { ok: true, image: own }
  const shared = all.filter((image) => image.visibility === 'public' && image.name === ref)
  const [only, second] = shared
  if (only !== undefined && second === undefined) return { ok: true, image: only }
  if (only !== undefined) {
    return {
      ok: false,
      result: failure(
        'ERR_IMAGE_AMBIGUOUS',
        `Several public images are named ${ref} (owners ${shared.map((image) => image.owner).join(', ')}); name it by its id.`,
      ),
    }
  }
  return {
    ok: false,
    result: failure(
      'ERR_IMAGE_NOT_FOUND',
      `No image ${ref} is registered for ${owner} or shared publicly; \`docklet image list\` shows the images you can use.`,
    ),
  }
}

function getVcluster(data: ClusterData, id: string): { vcluster: Vcluster } | { result: CommandResult } {
  const vcluster = data.vclusters[id]
  if (vcluster === undefined)
    return { result: failure('ERR_VCLUSTER_NOT_FOUND', `There is no vcluster with the id ${id}.`) }
  return { vcluster }
}

function refuseDeleting(vcluster: Vcluster): CommandResult | null {
  if (vcluster.status !== 'deleting') return null
  return failure('ERR_VCLUSTER_DELETING', `The vcluster ${vcluster.owner}/${vcluster.name} is being deleted.`)
}

function newVnodes(vcluster: Vcluster, count: number, ips: string[]): Vnode[] {
  const vnodes: Vnode[] = []
  for (let i = 0; i < count; i++) {
    const index = vcluster.nextIndex + i
    vnodes.push({
      vcluster: vcluster.id,
      index,
      hostname: `host-${index}`,
      host: null,
      ip: ips[i] ?? '',
      image: vcluster.image,
      limits: { ...vcluster.limits },
      desired: vcluster.desired,
      observed: 'none',
      observedAt: 0,
      lastError: '',
      pendingReason: '',
    })
  }
  return vnodes
}

/** Places `vnodes` (not yet in the state) with the hosts as they are; fills host and pendingReason. */
function placeNew(data: ClusterData, vnodes: Vnode[]): void {
  const requests: PlacementRequest[] = vnodes.map((vnode) => ({
    vcluster: vnode.vcluster,
    limits: vnode.limits,
  }))
  const placements = placeVnodes(hostSlots(data), requests, { policy: data.allocation.policy })
  vnodes.forEach((vnode, i) => {
    const placement = placements[i]
    if (placement === undefined) return
    vnode.host = placement.host
    vnode.pendingReason = placement.reason ?? ''
  })
}

function vnodeSummary(vnode: Vnode): Record<string, unknown> {
  return { index: vnode.index, host: vnode.host, ip: vnode.ip, pendingReason: vnode.pendingReason }
}

function totals(limits: Resources, count: number): Partial<Record<keyof Resources | 'vnodes', number>> {
  return {
    cpuCores: limits.cpuCores * count,
    memoryMb: limits.memoryMb * count,
    diskMb: limits.diskMb * count,
    vnodes: count,
  }
}

/** Removes a vnode for good; the vcluster goes with its last vnode once it is being deleted. */
function dropVnode(data: ClusterData, vcluster: Vcluster, index: number): void {
  vcluster.vnodes = vcluster.vnodes.filter((vnode) => vnode.index !== index)
  if (vcluster.status === 'deleting' && vcluster.vnodes.length === 0) delete data.vclusters[vcluster.id]
}

// ---------------------------------------------------------------------------
// Handlers

function create(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: 'vcluster.create' }>,
): CommandResult {
  const refusedUser = checkActiveUser(data, command.owner)
  if (refusedUser !== null) return refusedUser
  if (typeof command.name !== 'string' || !namePattern.test(command.name)) {
    return failure(
      'ERR_BAD_NAME',
      `The vcluster name ${JSON.stringify(command.name)} is not valid: use a letter or _, then up to 31 letters, digits, _ or -.`,
    )
  }
  if (findVcluster(data, command.owner, command.name) !== undefined) {
    return failure(
      'ERR_VCLUSTER_EXISTS',
      `${command.owner} already has a vcluster named ${command.name}; pick another name or delete that one first.`,
    )
  }
  const badCount = checkCount(command.nodes, 'vnodes', vnodesPerSubnet(data.allocation.subnetPrefix))
  if (badCount !== null) return badCount
  const badLimits = checkLimits(data, command.limits)
  if (badLimits !== null) return badLimits
  const image = resolveImage(data, command.owner, command.image)
  if (!image.ok) return image.result
  const user = data.users[command.owner]
  if (user === undefined) return failure('ERR_USER_NOT_FOUND', `There is no user named ${command.owner}.`)
  const overQuota = checkQuota(quotaOf(data, user), usageOf(data, command.owner), {
    request: { ...totals(command.limits, command.nodes), vclusters: 1 },
    what: 'the vcluster',
  })
  if (overQuota !== null)
    return failure('ERR_QUOTA_EXCEEDED', `${overQuota[0]?.toUpperCase()}${overQuota.slice(1)}`)
  const vclusters = Object.values(data.vclusters)
  const subnet = allocateSubnet(
    { clusterNet: data.allocation.clusterNet, subnetPrefix: data.allocation.subnetPrefix },
    vclusters.map((vc) => vc.subnet),
  )
  if (subnet === null) {
    return failure(
      'ERR_NO_SUBNET',
      `Every /${data.allocation.subnetPrefix} subnet of ${data.allocation.clusterNet} is in use; delete a vcluster or widen the cluster network.`,
    )
  }
  const vni = allocateVni(
    vclusters.map((vc) => vc.vni),
    { min: data.allocation.vniMin, max: data.allocation.vniMax },
  )
  if (vni === null)
    return failure('ERR_NO_VNI', 'Every VXLAN network identifier is in use; delete a vcluster.')
  const ips = allocateAddresses(subnet, [], command.nodes)
  if (ips === null)
    return failure('ERR_BAD_SIZE', `The subnet ${subnet} cannot hold ${command.nodes} vnodes.`)

  // Everything checked: from here on the command succeeds.
  const id = String(data.nextVclusterId)
  const vcluster: Vcluster = {
    id,
    owner: command.owner,
    name: command.name,
    subnet,
    vni,
    gateway: gatewayOf(subnet),
    status: 'pending',
    desired: 'running',
    image: image.image.id,
    limits: { ...command.limits },
    nextIndex: 0,
    createdAt: command.at,
    startedAt: command.at,
    stoppedAt: 0,
    vnodes: [],
    ...(typeof command.secret === 'string' && /^[0-9a-f]{16,128}$/.test(command.secret)
      ? { secret: command.secret }
      : {}),
  }
  const vnodes = newVnodes(vcluster, command.nodes, ips)
  placeNew(data, vnodes)
  vcluster.vnodes = vnodes
  vcluster.nextIndex = command.nodes
  data.nextVclusterId += 1
  data.vclusters[id] = vcluster
  refreshStatus(vcluster)
  return { ok: true, id, subnet, vni, vnodes: vnodes.map(vnodeSummary) }
}

function scaleOut(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: 'vcluster.scale-out' }>,
): CommandResult {
  const found = getVcluster(data, command.vcluster)
  if ('result' in found) return found.result
  const { vcluster } = found
  const deleting = refuseDeleting(vcluster)
  if (deleting !== null) return deleting
  const refusedUser = checkActiveUser(data, vcluster.owner)
  if (refusedUser !== null) return refusedUser
  const room = vnodesPerSubnet(data.allocation.subnetPrefix) - vcluster.vnodes.length
  const badCount = checkCount(command.n, 'vnodes to add', room)
  if (badCount !== null) return badCount
  const user = data.users[vcluster.owner]
  if (user === undefined) return failure('ERR_USER_NOT_FOUND', `There is no user named ${vcluster.owner}.`)
  const overQuota = checkQuota(quotaOf(data, user), usageOf(data, vcluster.owner), {
    request: totals(vcluster.limits, command.n),
    what: command.n === 1 ? 'the new vnode' : `the ${command.n} new vnodes`,
  })
  if (overQuota !== null)
    return failure('ERR_QUOTA_EXCEEDED', `${overQuota[0]?.toUpperCase()}${overQuota.slice(1)}`)
  const ips = allocateAddresses(
    vcluster.subnet,
    vcluster.vnodes.map((vnode) => vnode.ip),
    command.n,
  )
  if (ips === null)
    return failure(
      'ERR_NO_ADDRESS',
      `The subnet ${vcluster.subnet} has no room for ${command.n} more vnodes.`,
    )
  const vnodes = newVnodes(vcluster, command.n, ips)
  placeNew(data, vnodes)
  vcluster.vnodes.push(...vnodes)
  vcluster.nextIndex += command.n
  refreshStatus(vcluster)
  return { ok: true, id: vcluster.id, vnodes: vnodes.map(vnodeSummary) }
}

function scaleIn(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: 'vcluster.scale-in' }>,
): CommandResult {
  const found = getVcluster(data, command.vcluster)
  if ('result' in found) return found.result
  const { vcluster } = found
  const deleting = refuseDeleting(vcluster)
  if (deleting !== null) return deleting
  const vnode = vcluster.vnodes.find((v) => v.index === command.index && v.desired !== 'deleted')
  if (vnode === undefined)
    return failure(
      'ERR_VNODE_NOT_FOUND',
      `The vcluster ${vcluster.owner}/${vcluster.name} has no vnode ${command.index}.`,
    )
  if (vcluster.vnodes.filter((v) => v.desired !== 'deleted').length === 1) {
    return failure(
      'ERR_LAST_VNODE',
      `Vnode ${command.index} is the last one of ${vcluster.owner}/${vcluster.name}; delete the vcluster instead.`,
    )
  }
  if (vnode.host === null) dropVnode(data, vcluster, vnode.index)
  else vnode.desired = 'deleted'
  refreshStatus(vcluster)
  placePending(data)
  return { ok: true, id: vcluster.id, index: command.index }
}

function setDesired(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: 'vcluster.start' | 'vcluster.stop' }>,
): CommandResult {
  const found = getVcluster(data, command.vcluster)
  if ('result' in found) return found.result
  const { vcluster } = found
  const deleting = refuseDeleting(vcluster)
  if (deleting !== null) return deleting
  const desired = command.type === 'vcluster.start' ? 'running' : 'stopped'
  if (desired === 'running') {
    const refusedUser = checkActiveUser(data, vcluster.owner)
    if (refusedUser !== null) return refusedUser
  }
  if (vcluster.desired !== desired) {
    vcluster.desired = desired
    if (desired === 'running') vcluster.startedAt = command.at
    else vcluster.stoppedAt = command.at
  }
  for (const vnode of vcluster.vnodes) if (vnode.desired !== 'deleted') vnode.desired = desired
  refreshStatus(vcluster)
  return { ok: true, id: vcluster.id, status: vcluster.status }
}

function remove(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: 'vcluster.delete' }>,
): CommandResult {
  const found = getVcluster(data, command.vcluster)
  if ('result' in found) return found.result
  const { vcluster } = found
  if (vcluster.status === 'deleting') return { ok: true, id: vcluster.id, retried: true }
  vcluster.status = 'deleting'
  vcluster.stoppedAt = command.at
  for (const vnode of [...vcluster.vnodes]) {
    if (vnode.host === null) dropVnode(data, vcluster, vnode.index)
    else vnode.desired = 'deleted'
  }
  placePending(data)
  return { ok: true, id: vcluster.id, gone: data.vclusters[vcluster.id] === undefined }
}

function observed(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: 'vnode.observed' }>,
): CommandResult {
  const found = getVcluster(data, command.vcluster)
  if ('result' in found) return found.result
  const { vcluster } = found
  const vnode = vcluster.vnodes.find((v) => v.index === command.index)
  if (vnode === undefined)
    return failure('ERR_VNODE_NOT_FOUND', `The vcluster ${vcluster.id} has no vnode ${command.index}.`)
  if (!observedStates.includes(command.state))
    return failure(
      'ERR_BAD_STATE',
      `The observed state ${String(command.state)} is not one of ${observedStates.join(', ')}.`,
    )
  if (command.host !== undefined && command.host !== vnode.host) {
    return failure(
      'ERR_STALE_REPORT',
      `Host ${command.host} reported vnode ${command.index} of vcluster ${vcluster.id}, which lives on ${vnode.host ?? 'no host'}.`,
    )
  }
  if (command.state === 'deleted' && vnode.desired === 'deleted') {
    dropVnode(data, vcluster, vnode.index)
    if (data.vclusters[vcluster.id] !== undefined) refreshStatus(vcluster)
    placePending(data)
    return { ok: true, removed: true }
  }
  // A container gone without being asked to go is simply not there yet: the agent recreates it.
  vnode.observed = command.state === 'deleted' ? 'none' : command.state
  vnode.observedAt = command.at
  if (command.state === 'error') vnode.lastError = command.error ?? 'unknown error'
  refreshStatus(vcluster)
  return { ok: true, status: vcluster.status }
}

function applyImageCommand(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: `image.${string}` }>,
): CommandResult {
  if (command.type === 'image.register') {
    const refusedUser = checkActiveUser(data, command.owner)
    if (refusedUser !== null) return refusedUser
    if (typeof command.id !== 'string' || !/^[0-9a-f]{16,128}$/.test(command.id))
      return failure(
        'ERR_BAD_IMAGE_ID',
        `The image id ${JSON.stringify(command.id)} is not a lowercase hex content hash.`,
      )
    if (data.images[command.id] !== undefined)
      return failure(
        'ERR_IMAGE_EXISTS',
        `An image with the content hash ${command.id} is already registered.`,
      )
    if (typeof command.name !== 'string' || !namePattern.test(command.name))
      return failure(
        'ERR_BAD_NAME',
        `The image name ${JSON.stringify(command.name)} is not valid: use a letter or _, then up to 31 letters, digits, _ or -.`,
      )
    if (
      Object.values(data.images).some((image) => image.owner === command.owner && image.name === command.name)
    )
      return failure('ERR_IMAGE_EXISTS', `${command.owner} already has an image named ${command.name}.`)
    if (!Number.isSafeInteger(command.sizeBytes) || command.sizeBytes < 0)
      return failure(
        'ERR_BAD_SIZE',
        `The image size must be a whole number of bytes, not ${String(command.sizeBytes)}.`,
      )
    const visibility = command.visibility ?? 'private'
    if (visibility !== 'private' && visibility !== 'public')
      return failure(
        'ERR_BAD_VISIBILITY',
        `The visibility ${String(visibility)} is not one of private, public.`,
      )
    if (command.host !== undefined && data.members[command.host] === undefined)
      return failure('ERR_MEMBER_NOT_FOUND', `No member has the id ${command.host}.`)
    const user = data.users[command.owner]
    if (user === undefined) return failure('ERR_USER_NOT_FOUND', `There is no user named ${command.owner}.`)
    const overQuota = checkQuota(quotaOf(data, user), usageOf(data, command.owner), {
      request: { images: 1 },
      what: 'the image',
    })
    if (overQuota !== null)
      return failure(
        'ERR_QUOTA_EXCEEDED',
        `${overQuota[0]?.toUpperCase()}${overQuota.slice(1)} Delete an image first.`,
      )
    data.images[command.id] = {
      id: command.id,
      name: command.name,
      owner: command.owner,
      visibility,
      description: command.description ?? '',
      sizeBytes: command.sizeBytes,
      createdAt: command.at,
      hosts: command.host === undefined ? [] : [command.host],
    }
    return { ok: true, id: command.id }
  }
  const id = command.type === 'image.held' ? command.hash : command.id
  const image = data.images[id]
  if (image === undefined) return failure('ERR_IMAGE_NOT_FOUND', `No image has the id ${id}.`)
  switch (command.type) {
    case 'image.share':
    case 'image.unshare':
      image.visibility = command.type === 'image.share' ? 'public' : 'private'
      return { ok: true, id, visibility: image.visibility }
    case 'image.describe':
      image.description = String(command.description)
      return { ok: true, id }
    case 'image.held':
      if (data.members[command.host] === undefined)
        return failure('ERR_MEMBER_NOT_FOUND', `No member has the id ${command.host}.`)
      if (!image.hosts.includes(command.host)) image.hosts = [...image.hosts, command.host].sort()
      return { ok: true, id }
    case 'image.delete': {
      const users = sortedVclusters(data).filter((vc) => vc.vnodes.some((vnode) => vnode.image === id))
      if (users.length > 0) {
        return failure(
          'ERR_IMAGE_IN_USE',
          `The image ${image.name} is used by the vclusters ${users.map((vc) => `${vc.owner}/${vc.name}`).join(', ')}; delete them first.`,
        )
      }
      delete data.images[id]
      return { ok: true, id }
    }
  }
}

function applyHostCommand(
  data: ClusterData,
  command: Extract<VclusterCommand, { type: `host.${string}` }>,
): CommandResult {
  if (data.members[command.host] === undefined)
    return failure('ERR_MEMBER_NOT_FOUND', `No member has the id ${command.host}.`)
  if (command.type === 'host.capacity') {
    for (const key of resourceKeys) {
      const value = command.capacity?.[key]
      if (!Number.isSafeInteger(value) || (value as number) < 0)
        return failure(
          'ERR_BAD_SIZE',
          `The host's ${key} must be a whole number of 0 or more, not ${String(value)}.`,
        )
    }
  }
  const record = (data.hosts[command.host] ??= {
    id: command.host,
    capacity: null,
    capacityAt: 0,
    drained: false,
    drainedAt: 0,
  })
  if (command.type === 'host.capacity') {
    record.capacity = {
      cpuCores: command.capacity.cpuCores,
      memoryMb: command.capacity.memoryMb,
      diskMb: command.capacity.diskMb,
    }
    record.capacityAt = command.at
  } else if (command.type === 'host.drain') {
    if (!record.drained) record.drainedAt = command.at
    record.drained = true
    if (command.evacuate === true) {
      const { moving, stuck } = startEvacuation(data, command.host, hostSlots(data))
      return { ok: true, host: command.host, placed: 0, moving, stuck }
    }
  } else {
    record.drained = false
  }
  const placed = command.type === 'host.drain' ? 0 : placePending(data)
  return { ok: true, host: command.host, placed }
}

export function applyVclusterCommand(data: ClusterData, command: VclusterCommand): CommandResult {
  switch (command.type) {
    case 'vcluster.create':
      return create(data, command)
    case 'vcluster.scale-out':
      return scaleOut(data, command)
    case 'vcluster.scale-in':
      return scaleIn(data, command)
    case 'vcluster.start':
    case 'vcluster.stop':
      return setDesired(data, command)
    case 'vcluster.delete':
      return remove(data, command)
    case 'vnode.observed':
      return observed(data, command)
    case 'image.register':
    case 'image.share':
    case 'image.unshare':
    case 'image.delete':
    case 'image.describe':
    case 'image.held':
      return applyImageCommand(data, command)
    case 'host.capacity':
    case 'host.drain':
    case 'host.undrain':
      return applyHostCommand(data, command)
    case 'vnode.move-saved':
    case 'vnode.moved':
      return applyMoveCommand(data, command)
  }
}
