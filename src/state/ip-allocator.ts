// Address and segment allocation for vclusters, as pure functions over what
// is already taken. Each vcluster gets its own subnet carved out of
// CLUSTER_NET; in it the network address, the gateway (first host address)
// and the broadcast address are never handed to a vnode. Everything is
// "lowest free first", so every replica picks the same values and addresses
// freed by a scale-in or a delete are reused.

export interface Cidr {
  /** The network address as an unsigned 32-bit number. */
  base: number
  prefix: number
}

export interface AddressPlan {
  /** The range subnets are carved from, e.g. '172.16.0.0/16'. */
  clusterNet: string
  /** The prefix length of each vcluster's subnet, e.g. 24. */
  subnetPrefix: number
}

/** Addresses a subnet can hold that are not network, gateway or broadcast. */
export const reservedAddressesPerSubnet = 3

export function parseIpv4(text: string): number | null {
  const parts = text.split('.')
  if (parts.length !== 4) return null
  let value = 0
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return null
    const byte = Number(part)
    if (byte > 255) return null
    value = value * 256 + byte
  }
  return value
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.')
}

/** Parses 'a.b.c.d/p'; the address is masked to its network (172.16.0.1/16 means 172.16.0.0/16, as in the original). */
export function parseCidr(text: string): Cidr | null {
  const [address, prefixText, extra] = text.split('/')
  if (address === undefined || prefixText === undefined || extra !== undefined) return null
  if (!/^\d{1,2}$/.test(prefixText)) return null
  const prefix = Number(prefixText)
  const value = parseIpv4(address)
  if (value === null || prefix > 32) return null
  return { base: maskTo(value, prefix), prefix }
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIpv4(cidr.base)}/${cidr.prefix}`
}

function maskTo(value: number, prefix: number): number {
  if (prefix === 0) return 0
  return (value & (~0 << (32 - prefix))) >>> 0
}

function sizeOf(prefix: number): number {
  return 2 ** (32 - prefix)
}

/** A sentence saying what is wrong with the plan, or null when it is usable. */
export function checkAddressPlan(plan: AddressPlan): string | null {
  const net = parseCidr(plan.clusterNet)
  if (net === null) return `The cluster network ${plan.clusterNet} is not an IPv4 CIDR like 172.16.0.0/16.`
  if (!Number.isInteger(plan.subnetPrefix) || plan.subnetPrefix <= net.prefix || plan.subnetPrefix > 30) {
    return `The vcluster subnet prefix /${plan.subnetPrefix} must be longer than the cluster network's /${net.prefix} and at most /30.`
  }
  return null
}

/** How many vnodes one vcluster subnet can hold. */
export function vnodesPerSubnet(subnetPrefix: number): number {
  return sizeOf(subnetPrefix) - reservedAddressesPerSubnet
}

/** The lowest subnet of the plan not in `taken`, or null when all are used. */
export function allocateSubnet(plan: AddressPlan, taken: Iterable<string>): string | null {
  const net = parseCidr(plan.clusterNet)
  if (net === null || checkAddressPlan(plan) !== null) return null
  const used = new Set<number>()
  for (const subnet of taken) {
    const cidr = parseCidr(subnet)
    if (cidr !== null) used.add(cidr.base)
  }
  const step = sizeOf(plan.subnetPrefix)
  const count = sizeOf(net.prefix) / step
  for (let i = 0; i < count; i++) {
    const base = net.base + i * step
    if (!used.has(base)) return formatCidr({ base, prefix: plan.subnetPrefix })
  }
  return null
}

/** The gateway of a subnet: its first host address. */
export function gatewayOf(subnet: string): string {
  const cidr = parseCidr(subnet)
  if (cidr === null) throw new Error(`${subnet} is not a CIDR.`)
  return formatIpv4(cidr.base + 1)
}

/**
 * The `count` lowest free addresses of the subnet (never network, gateway or
 * broadcast, never one in `taken`), or null when there are not enough.
 */
export function allocateAddresses(subnet: string, taken: Iterable<string>, count: number): string[] | null {
  const cidr = parseCidr(subnet)
  if (cidr === null) return null
  const used = new Set(taken)
  const result: string[] = []
  const last = cidr.base + sizeOf(cidr.prefix) - 2
  for (let value = cidr.base + 2; value <= last && result.length < count; value++) {
    const address = formatIpv4(value)
    if (!used.has(address)) result.push(address)
  }
  return result.length === count ? result : null
}

/** The lowest VXLAN network identifier in [min, max] not in `taken`, or null. */
export function allocateVni(taken: Iterable<number>, range: { min: number; max: number }): number | null {
  const used = new Set(taken)
  for (let vni = range.min; vni <= range.max; vni++) if (!used.has(vni)) return vni
  return null
}
