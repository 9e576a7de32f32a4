// Vnode placement, as a pure function: given the hosts (what each can hold
// and what is already placed on it) and the vnodes to place, in order, it
// says where each goes or, when none fits, why, in words a person can act
// on. The state machine calls it while applying a command, so every replica
// reaches the same placement; nothing here reads a clock or a random source,
// and every tie is broken by host id.

export interface Resources {
  cpuCores: number
  memoryMb: number
  diskMb: number
}

export type PlacementPolicy = 'spread' | 'pack'

export const placementPolicies: ReadonlyArray<PlacementPolicy> = ['spread', 'pack']

export interface HostSlot {
  id: string
  /** For people (the member's hostname). */
  name: string
  /** Why no vnode may be placed here, or null when the host takes new vnodes. */
  unavailable: 'offline' | 'drained' | 'leaving' | 'unreported' | null
  capacity: Resources
  /** The sum of the limits of the vnodes already placed here. */
  used: Resources
  /** How many vnodes of each vcluster are already here. */
  vnodesByVcluster: Record<string, number>
}

export interface PlacementRequest {
  vcluster: string
  limits: Resources
}

export type Placement = { host: string; reason: null } | { host: null; reason: string }

const resourceKeys = ['cpuCores', 'memoryMb', 'diskMb'] as const

function describe(key: (typeof resourceKeys)[number], n: number): string {
  if (key === 'cpuCores') return `${n} cpu ${n === 1 ? 'core' : 'cores'}`
  if (key === 'memoryMb') return `${n} MB memory`
  return `${n} MB disk`
}

/** The amount alone: the sentence already named the resource. */
function amount(key: (typeof resourceKeys)[number], n: number): string {
  if (key === 'cpuCores') return `${n} ${n === 1 ? 'core' : 'cores'}`
  return `${n} MB`
}

function free(host: HostSlot, key: (typeof resourceKeys)[number]): number {
  return host.capacity[key] - host.used[key]
}

function fits(host: HostSlot, limits: Resources): boolean {
  return resourceKeys.every((key) => free(host, key) >= limits[key])
}

/**
 * How full a host is: its most used resource, as a fraction. Compared by
 * cross-multiplication in `compareLoad`, so no float rounding decides a tie.
 */
function loadParts(host: HostSlot): [number, number] {
  let best: [number, number] = [0, 1]
  for (const key of resourceKeys) {
    const capacity = host.capacity[key]
    if (capacity <= 0) continue
    if (host.used[key] * best[1] > best[0] * capacity) best = [host.used[key], capacity]
  }
  return best
}

function compareLoad(a: HostSlot, b: HostSlot): number {
  const [ua, ca] = loadParts(a)
  const [ub, cb] = loadParts(b)
  return ua * cb - ub * ca
}

function compareIds(a: HostSlot, b: HostSlot): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

function chooseHost(candidates: HostSlot[], vcluster: string, policy: PlacementPolicy): HostSlot | undefined {
  const sorted = [...candidates].sort((a, b) => {
    const sameA = a.vnodesByVcluster[vcluster] ?? 0
    const sameB = b.vnodesByVcluster[vcluster] ?? 0
    if (policy === 'spread') {
      // Fewest of this vcluster's vnodes first, then the least loaded host.
      return sameA - sameB || compareLoad(a, b) || compareIds(a, b)
    }
    // Pack: next to this vcluster's other vnodes, then onto the fullest host that still fits.
    return sameB - sameA || compareLoad(b, a) || compareIds(a, b)
  })
  return sorted[0]
}

/** Why a vnode with these limits fits on no host, as a sentence without a leading capital. */
export function pendingReason(hosts: ReadonlyArray<HostSlot>, limits: Resources): string {
  const available = hosts.filter((host) => host.unavailable === null)
  if (available.length === 0) {
    if (hosts.length === 0) return 'no host has joined the cluster'
    const why = [...hosts]
      .sort(compareIds)
      .map((host) =>
        host.unavailable === 'unreported'
          ? `${host.name} has not reported its capacity`
          : `${host.name} is ${host.unavailable}`,
      )
    return `no host takes new vnodes: ${why.join(', ')}`
  }
  for (const key of resourceKeys) {
    let largest: HostSlot | undefined
    for (const host of [...available].sort(compareIds)) {
      if (largest === undefined || free(host, key) > free(largest, key)) largest = host
    }
    if (largest !== undefined && free(largest, key) < limits[key]) {
      return `needs ${describe(key, limits[key])}; the largest free is ${amount(key, Math.max(0, free(largest, key)))} on ${largest.name}`
    }
  }
  const needs = resourceKeys.map((key) => describe(key, limits[key])).join(', ')
  return `needs ${needs} on one host; no host has all of it free`
}

/**
 * Places the requests in order. Each placement counts against its host for
 * the requests after it. The input hosts are not modified.
 */
export function placeVnodes(
  hosts: ReadonlyArray<HostSlot>,
  requests: ReadonlyArray<PlacementRequest>,
  options: { policy: PlacementPolicy },
): Placement[] {
  const slots: HostSlot[] = hosts.map((host) => ({
    ...host,
    used: { ...host.used },
    vnodesByVcluster: { ...host.vnodesByVcluster },
  }))
  const result: Placement[] = []
  for (const request of requests) {
    const candidates = slots.filter((host) => host.unavailable === null && fits(host, request.limits))
    const host = chooseHost(candidates, request.vcluster, options.policy)
    if (host === undefined) {
      result.push({ host: null, reason: pendingReason(slots, request.limits) })
      continue
    }
    for (const key of resourceKeys) host.used[key] += request.limits[key]
    host.vnodesByVcluster[request.vcluster] = (host.vnodesByVcluster[request.vcluster] ?? 0) + 1
    result.push({ host: host.id, reason: null })
  }
  return result
}
