// Port mappings: a public TCP port, opened on every node, forwarded to a
// port of one vnode. Public ports come from an admin-configured range; the
// state machine picks the lowest free one while applying the command, so
// every replica allocates the same port. The mapping table is bounded by
// the range, and a user's mappings by their group's portMappings quota.
// Mappings go with their vnode: after every vcluster command the ones whose
// vnode or vcluster is gone or going are dropped (prunePortMappings).

import { checkActiveUser, quotaOf } from './account-state.ts'
import type { ClusterData, CommandResult } from './cluster-state.ts'
import { failure } from './state-error.ts'

export interface PortRange {
  min: number
  max: number
}

export type PortProtocol = 'tcp'

export interface PortMapping {
  publicPort: number
  owner: string
  /** Vcluster id. */
  vcluster: string
  /** Vnode index. */
  index: number
  /** The port inside the vnode. */
  port: number
  protocol: PortProtocol
  createdAt: number
}

export interface PortData {
  portRange: PortRange
  /** Keyed by the public port (decimal). */
  portMappings: Record<string, PortMapping>
}

export type PortCommand =
  | { type: 'ports.range'; at: number; min: number; max: number }
  | {
      type: 'port.add'
      at: number
      owner: string
      vcluster: string
      index: number
      port: number
      protocol: PortProtocol
    }
  | { type: 'port.remove'; at: number; owner: string; publicPort: number }

export const portCommandTypes: ReadonlySet<string> = new Set(['ports.range', 'port.add', 'port.remove'])

export const defaultPortRange: PortRange = { min: 40_000, max: 40_999 }

export function emptyPortData(): PortData {
  return { portRange: { ...defaultPortRange }, portMappings: {} }
}

function isPort(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1 && (value as number) <= 65_535
}

/** A sentence saying what is wrong with the range, or null. */
export function checkPortRange(range: PortRange): string | null {
  if (!isPort(range.min) || !isPort(range.max) || range.min > range.max)
    return `The public port range ${String(range.min)}-${String(range.max)} must be whole numbers within 1-65535, lowest first.`
  return null
}

/** The owner's mappings, by public port. */
export function portMappingsOf(data: PortData, owner: string): PortMapping[] {
  return Object.values(data.portMappings)
    .filter((mapping) => mapping.owner === owner)
    .sort((a, b) => a.publicPort - b.publicPort)
}

/** The lowest port of the range no mapping holds, or null. */
function freePort(data: PortData): number | null {
  for (let port = data.portRange.min; port <= data.portRange.max; port++)
    if (data.portMappings[String(port)] === undefined) return port
  return null
}

/** Drops mappings whose vnode is gone or going. Returns how many. */
export function prunePortMappings(data: ClusterData): number {
  let dropped = 0
  for (const [key, mapping] of Object.entries(data.portMappings)) {
    const vcluster = data.vclusters[mapping.vcluster]
    const vnode = vcluster?.vnodes.find((v) => v.index === mapping.index)
    if (
      vcluster === undefined ||
      vcluster.status === 'deleting' ||
      vnode === undefined ||
      vnode.desired === 'deleted'
    ) {
      delete data.portMappings[key]
      dropped += 1
    }
  }
  return dropped
}

export function applyPortCommand(data: ClusterData, command: PortCommand): CommandResult {
  switch (command.type) {
    case 'ports.range': {
      const range = { min: command.min, max: command.max }
      const bad = checkPortRange(range)
      if (bad !== null) return failure('ERR_BAD_PORT_RANGE', bad)
      // Mappings outside a new range keep their port: only new ones come from it.
      data.portRange = range
      return { ok: true, min: range.min, max: range.max }
    }
    case 'port.add': {
      const vcluster = data.vclusters[command.vcluster]
      // Someone else's vcluster answers like a missing one: its existence is not revealed.
      if (vcluster === undefined || vcluster.owner !== command.owner || vcluster.status === 'deleting')
        return failure(
          'ERR_VCLUSTER_NOT_FOUND',
          `${command.owner} has no vcluster with the id ${command.vcluster}.`,
        )
      const refusedUser = checkActiveUser(data, command.owner)
      if (refusedUser !== null) return refusedUser
      const vnode = vcluster.vnodes.find((v) => v.index === command.index && v.desired !== 'deleted')
      if (vnode === undefined)
        return failure(
          'ERR_VNODE_NOT_FOUND',
          `The vcluster ${vcluster.owner}/${vcluster.name} has no vnode ${String(command.index)}.`,
        )
      if (!isPort(command.port))
        return failure(
          'ERR_BAD_PORT',
          `The port ${String(command.port)} is not a whole number within 1-65535.`,
        )
      if (command.protocol !== 'tcp')
        return failure(
          'ERR_BAD_PROTOCOL',
          `The protocol ${String(command.protocol)} is not supported; use tcp.`,
        )
      const existing = Object.values(data.portMappings).find(
        (m) => m.vcluster === vcluster.id && m.index === command.index && m.port === command.port,
      )
      if (existing !== undefined)
        return failure(
          'ERR_PORT_MAPPING_EXISTS',
          `Port ${command.port} of vnode ${command.index} is already published as ${existing.publicPort}.`,
        )
      const user = data.users[command.owner]
      if (user === undefined) return failure('ERR_USER_NOT_FOUND', `There is no user named ${command.owner}.`)
      const quota = quotaOf(data, user).portMappings
      const held = portMappingsOf(data, command.owner).length
      if (held + 1 > quota)
        return failure(
          'ERR_QUOTA_EXCEEDED',
          `Port mapping quota exceeded: you have ${Math.max(0, quota - held)} of ${quota} port mappings left. Remove a mapping first.`,
        )
      const publicPort = freePort(data)
      if (publicPort === null)
        return failure(
          'ERR_NO_PORT',
          `Every public port of ${data.portRange.min}-${data.portRange.max} is mapped; an admin can widen the range.`,
        )
      data.portMappings[String(publicPort)] = {
        publicPort,
        owner: command.owner,
        vcluster: vcluster.id,
        index: command.index,
        port: command.port,
        protocol: 'tcp',
        createdAt: command.at,
      }
      return { ok: true, publicPort }
    }
    case 'port.remove': {
      const mapping = data.portMappings[String(command.publicPort)]
      if (mapping === undefined || mapping.owner !== command.owner)
        return failure(
          'ERR_PORT_MAPPING_NOT_FOUND',
          `${command.owner} has no port mapping on public port ${String(command.publicPort)}.`,
        )
      delete data.portMappings[String(command.publicPort)]
      return { ok: true, publicPort: command.publicPort }
    }
  }
}
