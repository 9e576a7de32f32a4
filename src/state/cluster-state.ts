// The allocation state machine: every node applies the same committed
// commands in the same order and reaches the same state. Commands carry
// everything non-deterministic (ids, timestamps, hashes) from the node that
// proposed them; apply() only checks and records. A refused command returns
// a failure value (the same on every replica) rather than throwing.

import type { StateMachine } from '../../consensus/index.ts'
import {
  type AccountCommand,
  accountCommandTypes,
  applyAccountCommand,
  defaultGroups,
  noSshKey,
  type SshKeyPair,
  type UserRole,
  type UserStatus,
  usageOf,
} from './account-state.ts'
import {
  checkMeshSettings,
  defaultMeshSettings,
  type MemberMesh,
  type MemberMeshInfo,
  type MeshSettings,
  memberMeshOf,
  meshFullMessage,
  nextMeshIp,
  updateMemberMesh,
  upgradeMeshData,
} from './mesh-state.ts'
import {
  applyPortCommand,
  emptyPortData,
  type PortCommand,
  type PortData,
  portCommandTypes,
  prunePortMappings,
} from './port-state.ts'
import type { Usage } from './quota.ts'
import {
  applySessionCommand,
  emptySessionData,
  type SessionCommand,
  type SessionData,
  sessionCommandTypes,
} from './session-state.ts'
import { type CommandFailure, failure, StateError } from './state-error.ts'
import {
  type AllocationData,
  type AllocationSettings,
  applyVclusterCommand,
  checkAllocationSettings,
  defaultAllocationSettings,
  placePending,
  type Vcluster,
  type VclusterCommand,
  vclusterCommandTypes,
} from './vcluster-state.ts'

export interface MemberInfo extends MemberMeshInfo {
  id: string
  /** Hostname of the host, for people. */
  name: string
  /** libp2p address other members dial (a multiaddr). */
  address: string
  /** Where the portal/API answers (HOST:PORT), '' if not serving one. */
  portal: string
}

export interface Member extends MemberInfo, MemberMesh {
  joinedAt: number
  online: boolean
  /** When `online` last changed. */
  onlineChangedAt: number
  /** The leader saw its log caught up: it may be promoted to voter. */
  caughtUp: boolean
  /** A graceful leave is in progress: it is being taken out of the Raft group. */
  leaving: boolean
}

export interface JoinToken {
  id: string
  /** sha256 of the secret, hex. The secret itself is never stored. */
  secretHash: string
  createdAt: number
  expiresAt: number
  createdBy: string
  usedAt: number
  usedBy: string
  revokedAt: number
}

export interface User {
  name: string
  role: UserRole
  /** The group whose quota applies. */
  group: string
  passwordHash: string
  /** Shared by all the user's vnodes (empty until one is set). */
  sshKey: SshKeyPair
  createdAt: number
  status: UserStatus
}

export interface ClusterSettings {
  /** Voters are kept odd, up to this many (3, 5 or 7). */
  maxVoters: number
  /** A member not heard from for this long is offline. */
  offlineThresholdMs: number
}

/**
 * Commands that carry a request id (`rid`, set once by the node that
 * submits them and kept across its retries) are remembered with their
 * answer: a retry of a write that did commit after all (a timeout, a leader
 * change) gets that first answer again instead of taking effect twice
 * (Raft thesis §6.3). The oldest are forgotten first, past REQUEST_IDS_MAX.
 */
export interface RequestLog {
  ids: string[]
  results: Record<string, CommandResult>
}

/** Request ids remembered; far more writes than a retry window (requestTimeoutMs) sees. */
export const REQUEST_IDS_MAX = 4096

export interface ClusterData extends AllocationData, SessionData, PortData {
  clusterId: string
  requests: RequestLog
  createdAt: number
  settings: ClusterSettings
  /** The range hosts' WireGuard mesh addresses come from (see mesh-state.ts). */
  mesh: MeshSettings
  members: Record<string, Member>
  tokens: Record<string, JoinToken>
  users: Record<string, User>
}

export type Command =
  | {
      type: 'cluster.init'
      at: number
      clusterId: string
      member: MemberInfo
      admin: { name: string; passwordHash: string; sshKey?: SshKeyPair }
      settings: ClusterSettings
      /** Address range, VNI range, placement policy, per-vnode maxima; defaults for what is left out. */
      allocation?: Partial<AllocationSettings>
      /** The mesh address range; the default for what is left out. */
      mesh?: Partial<MeshSettings>
    }
  | { type: 'token.create'; at: number; id: string; secretHash: string; expiresAt: number; createdBy: string }
  | { type: 'token.revoke'; at: number; id: string }
  | { type: 'member.join'; at: number; tokenId: string; secretHash: string; member: MemberInfo }
  | { type: 'member.update'; at: number; member: MemberInfo }
  | { type: 'member.caught-up'; at: number; id: string }
  | { type: 'member.liveness'; at: number; changes: Array<{ id: string; online: boolean }> }
  | { type: 'member.leaving'; at: number; id: string }
  | { type: 'member.remove'; at: number; id: string }
  | { type: 'noop'; at: number }
  | AccountCommand
  | VclusterCommand
  | SessionCommand
  | PortCommand

export type CommandResult = { ok: true; [key: string]: unknown } | CommandFailure

export const defaultClusterSettings: ClusterSettings = { maxVoters: 3, offlineThresholdMs: 15_000 }

function emptyData(): ClusterData {
  return {
    clusterId: '',
    createdAt: 0,
    settings: { ...defaultClusterSettings },
    mesh: { ...defaultMeshSettings },
    members: {},
    tokens: {},
    users: {},
    allocation: { ...defaultAllocationSettings, vnodeMax: { ...defaultAllocationSettings.vnodeMax } },
    groups: {},
    hosts: {},
    images: {},
    vclusters: {},
    nextVclusterId: 1,
    requests: { ids: [], results: {} },
    ...emptySessionData(),
    ...emptyPortData(),
  }
}

/**
 * Fills what a snapshot taken before users, groups and vclusters existed
 * lacks, so an old snapshot restores into a working state.
 */
function upgradeData(data: ClusterData): ClusterData {
  data.allocation = {
    ...defaultAllocationSettings,
    ...data.allocation,
    vnodeMax: { ...defaultAllocationSettings.vnodeMax, ...data.allocation?.vnodeMax },
  }
  if (data.clusterId !== '') {
    for (const [name, group] of Object.entries(defaultGroups(data.createdAt))) data.groups[name] ??= group
  }
  for (const user of Object.values(data.users)) {
    user.group ??= user.role === 'admin' ? 'admin' : 'user'
    user.sshKey ??= { ...noSshKey }
  }
  upgradeMeshData(data)
  data.requests ??= { ids: [], results: {} }
  return data
}

/** JSON with object keys sorted, so equal states encode to equal bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v
    const sorted: Record<string, unknown> = {}
    for (const key of Object.keys(v as Record<string, unknown>).sort())
      sorted[key] = (v as Record<string, unknown>)[key]
    return sorted
  })
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export function encodeCommand(command: Command): Uint8Array {
  return encoder.encode(JSON.stringify(command))
}

const ok = (extra: Record<string, unknown> = {}): CommandResult => ({ ok: true, ...extra })

/** Sees each applied command and its result; both null after a snapshot replaced the state. */
export type StateListener = (command: Command | null, result: CommandResult | null) => void

export class ClusterState implements StateMachine<CommandResult> {
  private data: ClusterData = emptyData()
  private readonly listeners = new Set<StateListener>()

  /**
   * Calls `listener` after every applied command and after a snapshot
   * replaced the state (command null). Listeners must not throw and must be
   * quick: they run on the apply path. Returns the unsubscribe function.
   */
  watch(listener: StateListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  private notify(command: Command | null, result: CommandResult | null): void {
    for (const listener of this.listeners) listener(command, result)
  }

  get view(): Readonly<ClusterData> {
    return this.data
  }

  member(id: string): Member | undefined {
    return this.data.members[id]
  }

  members(): Member[] {
    return Object.values(this.data.members).sort(
      (a, b) => a.joinedAt - b.joinedAt || a.id.localeCompare(b.id),
    )
  }

  /** What `user` holds now (summed over their vclusters, vnodes and images). */
  usage(user: string): Usage {
    return usageOf(this.data, user)
  }

  vcluster(id: string): Vcluster | undefined {
    return this.data.vclusters[id]
  }

  apply(bytes: Uint8Array): CommandResult {
    let command: Command
    try {
      command = JSON.parse(decoder.decode(bytes)) as Command
    } catch {
      return failure('ERR_BAD_COMMAND', 'The command is not valid JSON.')
    }
    const rid = (command as { rid?: unknown }).rid
    if (typeof rid === 'string') {
      // A retry of a write already applied: its first answer, and nothing changes.
      const earlier = this.data.requests.results[rid]
      if (earlier !== undefined) return earlier
    }
    const result = this.dispatch(command)
    if (typeof rid === 'string') this.remember(rid, result)
    this.notify(command, result)
    return result
  }

  private remember(rid: string, result: CommandResult): void {
    const requests = this.data.requests
    // A copy: the answer must not change with the state it may point into.
    requests.results[rid] = JSON.parse(JSON.stringify(result)) as CommandResult
    requests.ids.push(rid)
    while (requests.ids.length > REQUEST_IDS_MAX) delete requests.results[requests.ids.shift()!]
  }

  private dispatch(command: Command): CommandResult {
    const d = this.data
    if (command.type !== 'cluster.init' && d.clusterId === '' && command.type !== 'noop') {
      return failure('ERR_NOT_INITIALIZED', 'The cluster is not initialized yet.')
    }
    if (accountCommandTypes.has(command.type)) return applyAccountCommand(d, command as AccountCommand)
    if (vclusterCommandTypes.has(command.type)) {
      const result = applyVclusterCommand(d, command as VclusterCommand)
      // A port mapping goes with its vnode (scale-in, delete).
      if (result.ok) prunePortMappings(d)
      return result
    }
    if (sessionCommandTypes.has(command.type)) return applySessionCommand(d, command as SessionCommand)
    if (portCommandTypes.has(command.type)) return applyPortCommand(d, command as PortCommand)
    switch (command.type) {
      case 'noop':
        return ok()
      case 'cluster.init': {
        if (d.clusterId !== '')
          return failure('ERR_ALREADY_INITIALIZED', `The cluster ${d.clusterId} is already initialized.`)
        const allocation: AllocationSettings = {
          ...defaultAllocationSettings,
          ...command.allocation,
          vnodeMax: { ...defaultAllocationSettings.vnodeMax, ...command.allocation?.vnodeMax },
        }
        const badAllocation = checkAllocationSettings(allocation)
        if (badAllocation !== null) return failure('ERR_BAD_SETTINGS', badAllocation)
        const mesh: MeshSettings = { ...defaultMeshSettings, ...command.mesh }
        const badMesh = checkMeshSettings(mesh, allocation.clusterNet)
        if (badMesh !== null) return failure('ERR_BAD_SETTINGS', badMesh)
        d.mesh = mesh
        d.allocation = allocation
        d.groups = defaultGroups(command.at)
        d.clusterId = command.clusterId
        d.createdAt = command.at
        d.settings = { ...command.settings }
        d.members[command.member.id] = this.newMember(command.member, command.at, nextMeshIp(d) ?? '')
        d.users[command.admin.name] = {
          name: command.admin.name,
          role: 'admin',
          group: 'admin',
          passwordHash: command.admin.passwordHash,
          sshKey: { ...(command.admin.sshKey ?? noSshKey) },
          createdAt: command.at,
          status: 'normal',
        }
        return ok({ clusterId: d.clusterId })
      }
      case 'token.create': {
        if (d.tokens[command.id] !== undefined)
          return failure('ERR_TOKEN_EXISTS', `A token with id ${command.id} exists.`)
        d.tokens[command.id] = {
          id: command.id,
          secretHash: command.secretHash,
          createdAt: command.at,
          expiresAt: command.expiresAt,
          createdBy: command.createdBy,
          usedAt: 0,
          usedBy: '',
          revokedAt: 0,
        }
        this.pruneTokens(command.at)
        return ok({ id: command.id, expiresAt: command.expiresAt })
      }
      case 'token.revoke': {
        const token = d.tokens[command.id]
        if (token === undefined)
          return failure('ERR_TOKEN_NOT_FOUND', `No join token has the id ${command.id}.`)
        if (token.revokedAt === 0) token.revokedAt = command.at
        return ok({ id: command.id })
      }
      case 'member.join':
        return this.join(command)
      case 'member.update': {
        const member = d.members[command.member.id]
        if (member === undefined)
          return failure('ERR_MEMBER_NOT_FOUND', `No member has the id ${command.member.id}.`)
        member.address = command.member.address
        member.name = command.member.name
        member.portal = command.member.portal
        updateMemberMesh(d, member.id, command.member)
        return ok()
      }
      case 'member.caught-up': {
        const member = d.members[command.id]
        if (member === undefined)
          return failure('ERR_MEMBER_NOT_FOUND', `No member has the id ${command.id}.`)
        member.caughtUp = true
        return ok()
      }
      case 'member.liveness': {
        let cameOnline = false
        for (const change of command.changes) {
          const member = d.members[change.id]
          if (member === undefined || member.online === change.online) continue
          member.online = change.online
          member.onlineChangedAt = command.at
          if (change.online) cameOnline = true
        }
        // A host back online may have room for vnodes waiting for one.
        if (cameOnline) placePending(d)
        return ok()
      }
      case 'member.leaving': {
        const member = d.members[command.id]
        if (member === undefined)
          return failure('ERR_MEMBER_NOT_FOUND', `No member has the id ${command.id}.`)
        member.leaving = true
        return ok()
      }
      case 'member.remove': {
        if (d.members[command.id] === undefined) {
          return failure('ERR_MEMBER_NOT_FOUND', `No member has the id ${command.id}.`)
        }
        if (Object.keys(d.members).length === 1) {
          return failure('ERR_LAST_MEMBER', 'The last member of a cluster cannot be removed.')
        }
        delete d.members[command.id]
        delete d.hosts[command.id]
        return ok()
      }
      default:
        return failure(
          'ERR_UNKNOWN_COMMAND',
          `Unknown command type ${String((command as { type: unknown }).type)}.`,
        )
    }
  }

  private newMember(info: MemberInfo, at: number, meshIp: string): Member {
    return {
      ...info,
      ...memberMeshOf(info, meshIp),
      joinedAt: at,
      online: true,
      onlineChangedAt: at,
      caughtUp: false,
      leaving: false,
    }
  }

  private join(command: Extract<Command, { type: 'member.join' }>): CommandResult {
    const d = this.data
    const token = d.tokens[command.tokenId]
    // One message for unknown and wrong secret: a guesser learns nothing.
    if (token === undefined || token.secretHash !== command.secretHash) {
      return failure(
        'ERR_TOKEN_INVALID',
        'The join token is not valid for this cluster. Create a new one with `docklet token create`.',
      )
    }
    if (token.revokedAt !== 0) {
      return failure(
        'ERR_TOKEN_REVOKED',
        `The join token ${token.id} was revoked. Create a new one with \`docklet token create\`.`,
      )
    }
    if (token.usedAt !== 0) {
      if (token.usedBy === command.member.id && d.members[command.member.id] !== undefined) {
        // The same host retrying its own join (its answer was lost): same outcome.
        return ok({ memberId: command.member.id, retried: true })
      }
      return failure(
        'ERR_TOKEN_USED',
        `The join token ${token.id} was already used by ${token.usedBy}; tokens are single-use. Create a new one with \`docklet token create\`.`,
      )
    }
    if (command.at >= token.expiresAt) {
      return failure(
        'ERR_TOKEN_EXPIRED',
        `The join token ${token.id} expired at ${new Date(token.expiresAt).toISOString()}. Create a new one with \`docklet token create\`.`,
      )
    }
    if (d.members[command.member.id] !== undefined) {
      return failure(
        'ERR_MEMBER_EXISTS',
        `A member with the id ${command.member.id} is already in the cluster.`,
      )
    }
    const meshIp = nextMeshIp(d)
    if (meshIp === null) return failure('ERR_MESH_FULL', meshFullMessage(d))
    token.usedAt = command.at
    token.usedBy = command.member.id
    d.members[command.member.id] = this.newMember(command.member, command.at, meshIp)
    return ok({ memberId: command.member.id })
  }

  /** Keeps the token table bounded: tokens that ended more than a day ago are dropped. */
  private pruneTokens(now: number): void {
    const dayMs = 24 * 3600 * 1000
    for (const [id, token] of Object.entries(this.data.tokens)) {
      const ended = Math.max(token.usedAt, token.revokedAt, token.expiresAt <= now ? token.expiresAt : 0)
      if (ended !== 0 && now - ended > dayMs) delete this.data.tokens[id]
    }
  }

  /**
   * Offline repair for `docklet admin recover --force-new-cluster`: keeps only
   * member `id` (never applied from the log; the recovered node starts from a
   * snapshot taken after this). Returns the ids it removed.
   */
  forgetMembersExcept(id: string): string[] {
    const self = this.data.members[id]
    if (self === undefined) throw new StateError('ERR_MEMBER_NOT_FOUND', `No member has the id ${id}.`)
    const removed = Object.keys(this.data.members).filter((other) => other !== id)
    for (const other of removed) delete this.data.members[other]
    // Alone, this host is the voter: a leave in progress or a pending promotion no longer applies.
    self.leaving = false
    self.caughtUp = true
    self.online = true
    return removed
  }

  snapshot(): Uint8Array {
    return encoder.encode(canonicalJson(this.data))
  }

  restore(bytes: Uint8Array): void {
    this.data =
      bytes.length === 0
        ? emptyData()
        : upgradeData({ ...emptyData(), ...(JSON.parse(decoder.decode(bytes)) as ClusterData) })
    this.notify(null, null)
  }
}
