// Pure parsers for `ip -j -d addr show` and `bridge -j fdb show`: the link
// facts the mesh and overlay planners compare against what they want.

import { MeshParseError } from './mesh-errors.ts'

export interface IpAddress {
  family: 'inet' | 'inet6'
  local: string
  prefixLength: number
  scope: string
}

export interface VxlanInfo {
  vni: number
  local: string | null
  port: number
  learning: boolean
  device: string | null
}

export interface LinkState {
  name: string
  /** `linkinfo.info_kind` (bridge, vxlan, wireguard, veth, tun…) or null for plain devices. */
  kind: string | null
  mtu: number
  /** Administratively up (the UP flag), whatever the carrier says. */
  up: boolean
  mac: string | null
  master: string | null
  addresses: IpAddress[]
  vxlan: VxlanInfo | null
}

export interface FdbEntry {
  mac: string
  dst: string | null
  device: string | null
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function parseJsonArray(text: string, what: string): unknown[] {
  const trimmed = text.trim()
  if (trimmed === '') return []
  let parsed: unknown
  try {
    parsed = JSON.parse(trimmed)
  } catch (error) {
    throw new MeshParseError(`The output of ${what} is not JSON; check the iproute2 version.`, {
      cause: error,
    })
  }
  if (!Array.isArray(parsed)) throw new MeshParseError(`The output of ${what} is not a JSON array.`)
  return parsed
}

function parseVxlan(linkinfo: Record<string, unknown>): VxlanInfo | null {
  if (linkinfo.info_kind !== 'vxlan' || !isRecord(linkinfo.info_data)) return null
  const data = linkinfo.info_data
  return {
    vni: typeof data.id === 'number' ? data.id : -1,
    local: typeof data.local === 'string' ? data.local : null,
    port: typeof data.port === 'number' ? data.port : -1,
    learning: data.learning === true,
    device: typeof data.link === 'string' ? data.link : null,
  }
}

/** Parses `ip -j -d addr show` (or `ip -j addr show`) into one entry per link. */
export function parseIpAddrJson(text: string): LinkState[] {
  return parseJsonArray(text, '`ip -j addr show`').map((item) => {
    if (!isRecord(item) || typeof item.ifname !== 'string' || typeof item.mtu !== 'number') {
      throw new MeshParseError('An entry of `ip -j addr show` has no ifname or mtu.')
    }
    const flags = Array.isArray(item.flags) ? item.flags : []
    const linkinfo = isRecord(item.linkinfo) ? item.linkinfo : null
    const addresses: IpAddress[] = []
    for (const info of Array.isArray(item.addr_info) ? item.addr_info : []) {
      if (!isRecord(info) || typeof info.local !== 'string' || typeof info.prefixlen !== 'number') continue
      if (info.family !== 'inet' && info.family !== 'inet6') continue
      addresses.push({
        family: info.family,
        local: info.local,
        prefixLength: info.prefixlen,
        scope: typeof info.scope === 'string' ? info.scope : 'global',
      })
    }
    return {
      name: item.ifname,
      kind: linkinfo !== null && typeof linkinfo.info_kind === 'string' ? linkinfo.info_kind : null,
      mtu: item.mtu,
      up: flags.includes('UP'),
      mac: typeof item.address === 'string' && item.link_type === 'ether' ? item.address : null,
      master: typeof item.master === 'string' ? item.master : null,
      addresses,
      vxlan: linkinfo === null ? null : parseVxlan(linkinfo),
    }
  })
}

/** Parses `bridge -j fdb show`; entries without a MAC are skipped. */
export function parseFdbJson(text: string): FdbEntry[] {
  const entries: FdbEntry[] = []
  for (const item of parseJsonArray(text, '`bridge -j fdb show`')) {
    if (!isRecord(item) || typeof item.mac !== 'string') continue
    entries.push({
      mac: item.mac.toLowerCase(),
      dst: typeof item.dst === 'string' ? item.dst : null,
      device: typeof item.ifname === 'string' ? item.ifname : null,
    })
  }
  return entries
}

/** `10.0.0.1/24` → { address, prefixLength }; throws MeshParseError on anything else. */
export function parseCidr(cidr: string): { address: string; prefixLength: number } {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr)
  if (match === null || Number(match[2]) > 32 || match[1]!.split('.').some((part) => Number(part) > 255)) {
    throw new MeshParseError(`"${cidr}" is not an IPv4 address with a prefix length (e.g. 10.0.0.1/24).`)
  }
  return { address: match[1]!, prefixLength: Number(match[2]) }
}

/** The global (non link-local) IPv4/IPv6 addresses of a link, as `ADDRESS/PREFIX` strings. */
export function globalAddresses(link: LinkState): string[] {
  return link.addresses
    .filter((a) => a.scope !== 'link' && a.scope !== 'host')
    .map((a) => `${a.local}/${a.prefixLength}`)
}
