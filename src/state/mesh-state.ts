// The WireGuard mesh part of the replicated state: the range hosts' mesh
// addresses come from (chosen at cluster.init), and per member its WireGuard
// public key, its endpoint and its mesh address. Addresses are handed out
// when a member is applied (cluster.init, member.join), lowest free first, so
// every replica picks the same one; a removed member's address is free again
// because "taken" is always derived from the members the state lists.
// Everything here is pure: no I/O, no clock, no randomness.

import { type Cidr, formatIpv4, parseCidr } from './ip-allocator.ts'

export interface MeshSettings {
  /** Hosts' mesh addresses come from this IPv4 range (network and broadcast excluded). */
  network: string
}

/**
 * Clear of the vcluster range (172.16.0.0/16) and of the multi-host test
 * harness (LAN 10.213.0.0/24, outside 10.214.0.1).
 */
export const defaultMeshSettings: MeshSettings = { network: '10.210.0.0/16' }
/** A shorter prefix would swallow most of 10/8; a longer one than /30 holds fewer than two hosts. */
export const MESH_PREFIX_MIN = 8
export const MESH_PREFIX_MAX = 30

/** What a host announces about its mesh (part of MemberInfo; absent from hosts without one). */
export interface MemberMeshInfo {
  /** Base64 WireGuard public key; '' when the host runs no mesh. */
  meshPublicKey?: string
  /** IP:PORT other hosts send WireGuard packets to; '' when unknown (the host only calls in). */
  meshEndpoint?: string
}

/**
 * What the state records per member ('' for what is not known). The state
 * machine always sets all three; they are optional in the type only so that
 * member records written before the mesh existed still type-check.
 */
export interface MemberMesh {
  meshPublicKey?: string
  meshEndpoint?: string
  /** This host's address in the mesh range, without prefix. */
  meshIp?: string
}

/** The part of the cluster data the mesh functions read and write. */
export interface MeshData {
  mesh: MeshSettings
  members: Record<string, MemberMesh & { id: string; joinedAt: number }>
}

/** A host as the mesh sees it: a member with a key and an address. */
export interface MeshHost {
  id: string
  publicKey: string
  /** '' when the host gave none (it calls in, e.g. behind NAT). */
  endpoint: string
  meshIp: string
}

const KEY_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/
const ENDPOINT_PATTERN = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(\d{1,5})$/

/** True for a base64 Curve25519 key as `wg` prints it (44 characters). */
export function isMeshPublicKey(text: unknown): text is string {
  return typeof text === 'string' && KEY_PATTERN.test(text)
}

/** True for IP:PORT or [IPv6]:PORT with a port from 1 to 65535. */
export function isMeshEndpoint(text: unknown): text is string {
  if (typeof text !== 'string') return false
  const match = ENDPOINT_PATTERN.exec(text)
  if (match === null) return false
  const port = Number(match[3])
  if (port < 1 || port > 65535) return false
  return !text.startsWith('[')
    ? text
        .split(':')[0]!
        .split('.')
        .every((part) => Number(part) <= 255)
    : true
}

function rangeOf(cidr: Cidr): { first: number; last: number } {
  return { first: cidr.base, last: cidr.base + 2 ** (32 - cidr.prefix) - 1 }
}

/** A sentence saying what is wrong with the mesh settings, or null when they are usable. */
export function checkMeshSettings(settings: MeshSettings, clusterNet: string): string | null {
  const mesh = typeof settings.network === 'string' ? parseCidr(settings.network) : null
  if (mesh === null) {
    return `The mesh network ${String(settings.network)} is not an IPv4 CIDR like ${defaultMeshSettings.network}.`
  }
  if (mesh.prefix < MESH_PREFIX_MIN || mesh.prefix > MESH_PREFIX_MAX) {
    return `The mesh network ${settings.network} must have a prefix from /${MESH_PREFIX_MIN} to /${MESH_PREFIX_MAX}.`
  }
  const vclusters = parseCidr(clusterNet)
  if (vclusters !== null) {
    const a = rangeOf(mesh)
    const b = rangeOf(vclusters)
    if (a.first <= b.last && b.first <= a.last) {
      return `The mesh network ${settings.network} overlaps the vcluster network ${clusterNet}; pick a range apart from it.`
    }
  }
  return null
}

/** The prefix length of the mesh range (the mesh interface's address carries it). */
export function meshPrefixLength(settings: MeshSettings): number {
  return parseCidr(settings.network)?.prefix ?? 0
}

/** The lowest address of the range no member holds (never network or broadcast), or null when all are taken. */
export function nextMeshIp(data: MeshData): string | null {
  const cidr = parseCidr(data.mesh.network)
  if (cidr === null) return null
  const taken = new Set<string>()
  for (const member of Object.values(data.members)) if (member.meshIp) taken.add(member.meshIp)
  const { first, last } = rangeOf(cidr)
  for (let value = first + 1; value < last; value++) {
    const address = formatIpv4(value)
    if (!taken.has(address)) return address
  }
  return null
}

/** The sentence a join gets when the mesh range is full. */
export function meshFullMessage(data: MeshData): string {
  return `Every address of the mesh network ${data.mesh.network} is taken; remove a member that is gone for good.`
}

/**
 * The mesh fields a new member starts with: what it announced (kept only when
 * well-formed, so a bad value cannot break other hosts' WireGuard) and `meshIp`.
 */
export function memberMeshOf(info: MemberMeshInfo, meshIp: string): Required<MemberMesh> {
  return {
    meshPublicKey: isMeshPublicKey(info.meshPublicKey) ? info.meshPublicKey : '',
    meshEndpoint: isMeshEndpoint(info.meshEndpoint) ? info.meshEndpoint : '',
    meshIp,
  }
}

/**
 * Applies what a member announced in member.update: fields it sent replace
 * the recorded ones (a field it left out stays), and a member without a mesh
 * address (one admitted before the mesh existed) gets one if the range has room.
 */
export function updateMemberMesh(data: MeshData, id: string, info: MemberMeshInfo): void {
  const member = data.members[id]
  if (member === undefined) return
  if (info.meshPublicKey !== undefined) member.meshPublicKey = memberMeshOf(info, '').meshPublicKey
  if (info.meshEndpoint !== undefined) member.meshEndpoint = memberMeshOf(info, '').meshEndpoint
  if (!member.meshIp) member.meshIp = nextMeshIp(data) ?? ''
}

/**
 * Fills what a snapshot taken before the mesh existed lacks. It hands out no
 * addresses: replicas restore snapshots of different ages, and only an
 * address assigned by a logged command (the member's next member.update) is
 * the same on all of them.
 */
export function upgradeMeshData(data: MeshData): void {
  data.mesh = { ...defaultMeshSettings, ...data.mesh }
  for (const member of Object.values(data.members)) {
    member.meshPublicKey ??= ''
    member.meshEndpoint ??= ''
    member.meshIp ??= ''
  }
}

/**
 * The hosts of the mesh: members with a public key and an address, in join
 * order. When two members announce the same key (a copied data dir), only the
 * first keeps it: WireGuard cannot tell them apart.
 */
export function meshHosts(data: MeshData): MeshHost[] {
  const members = Object.values(data.members).sort(
    (a, b) => a.joinedAt - b.joinedAt || a.id.localeCompare(b.id),
  )
  const keys = new Set<string>()
  const hosts: MeshHost[] = []
  for (const member of members) {
    if (!member.meshPublicKey || !member.meshIp || keys.has(member.meshPublicKey)) continue
    keys.add(member.meshPublicKey)
    hosts.push({
      id: member.id,
      publicKey: member.meshPublicKey,
      endpoint: member.meshEndpoint ?? '',
      meshIp: member.meshIp,
    })
  }
  return hosts
}
