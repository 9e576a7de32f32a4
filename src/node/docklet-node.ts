// One docklet host: the Raft node holding the cluster state, the libp2p host
// that carries Raft frames and control RPCs, and — on the leader — the
// membership controller that keeps the Raft group matching the members the
// state lists. Every node is the same; any node forwards writes to the leader.

import { createHash, randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { Readable } from 'node:stream'
import type { Libp2p } from '@libp2p/interface'
import type { Logger } from 'pino'
import {
  type Clock,
  type ConfState,
  isVoter,
  LevelLogStorage,
  NotLeaderError,
  RaftNode,
  Role,
  seededRng,
} from '../../consensus/index.ts'
import {
  type CommandRunner,
  createLibp2pHost,
  Libp2pFrameTransport,
  RpcRemoteError,
  RpcService,
  rememberPeer,
  toMultiaddr,
} from '../../net/index.ts'
import type { MeshSource } from '../agent/host-agent.ts'
import { MeshAgent } from '../agent/mesh-agent.ts'
import type { ImageKind, Progress } from '../api/api-backend.ts'
import type { NodeConfig } from '../config.ts'
import { ExecaCommandRunner } from '../exec/command-runner.ts'
import { generateSshKeyPair } from '../security/ssh-key.ts'
import {
  ClusterState,
  type Command,
  type CommandResult,
  encodeCommand,
  type Member,
  type MemberInfo,
} from '../state/cluster-state.ts'
import { isMeshEndpoint, isMeshPublicKey } from '../state/mesh-state.ts'
import { StateError } from '../state/state-error.ts'
import type { ImageVisibility } from '../state/vcluster-state.ts'
import { type DataDirPaths, type NodeRecord, writeNodeRecord } from './data-dir.ts'
import { encodeJoinToken, hashTokenSecret, newTokenSecret } from './join-token.ts'
import { type MemberObservation, planMembership } from './membership-plan.ts'
import { VnodeService } from './vnode-service.ts'

/**
 * The libp2p address other hosts should dial: --advertise if given, else the
 * listen address, else (listening on every interface) the first address that
 * is not loopback.
 */
export function advertisedAddress(libp2p: Libp2p, config: Pick<NodeConfig, 'advertise' | 'listen'>): string {
  if (config.advertise !== '') return toMultiaddr(config.advertise).toString()
  const addrs = libp2p.getMultiaddrs().map((a) => a.toString().replace(/\/p2p\/.*$/, ''))
  if (!/^(0\.0\.0\.0|\[::\]):/.test(config.listen) && addrs[0] !== undefined) return addrs[0]
  const concrete = addrs.find((a) => !a.includes('/127.')) ?? addrs[0]
  return concrete ?? toMultiaddr(config.listen).toString()
}

/** The mesh fields a joining host announced, refused when malformed (they would break every host's WireGuard). */
function joinMeshInfo(member: Partial<MemberInfo>): Pick<MemberInfo, 'meshPublicKey' | 'meshEndpoint'> {
  const { meshPublicKey, meshEndpoint } = member
  if (meshPublicKey === undefined || meshPublicKey === '') return {}
  const endpointBad = meshEndpoint !== undefined && meshEndpoint !== '' && !isMeshEndpoint(meshEndpoint)
  if (!isMeshPublicKey(meshPublicKey) || endpointBad) {
    throw Object.assign(
      new Error(
        `The joining host announced an invalid mesh key or endpoint (${String(meshPublicKey)}, ${String(meshEndpoint)}).`,
      ),
      { code: 'ERR_BAD_REQUEST' },
    )
  }
  return { meshPublicKey, meshEndpoint: meshEndpoint ?? '' }
}

/** Writes fail with this when no leader can be reached in time. */
export class QuorumLostError extends Error {
  readonly code = 'ERR_QUORUM_LOST'
  readonly reachable: number
  readonly voters: number
  constructor(reachable: number, voters: number, waitedMs: number) {
    const needed = Math.floor(voters / 2) + 1
    super(
      `Quorum is lost: this node reaches ${reachable} of ${voters} voting members and a write needs ${needed}; ` +
        `no leader answered within ${waitedMs} ms. Bring members back online, or, if a majority is gone for good, ` +
        'run `docklet admin recover --force-new-cluster` on a survivor.',
    )
    this.name = 'QuorumLostError'
    this.reachable = reachable
    this.voters = voters
  }
}

export interface MemberStatus {
  id: string
  name: string
  address: string
  portal: string
  role: 'voter' | 'standby' | 'learner' | 'joining'
  online: boolean
  last_contact_ms: number | null
  leaving: boolean
}

export interface ClusterStatus {
  cluster_id: string
  self: { id: string; pid: number; address: string }
  leader: { id: string; address: string } | null
  term: number
  commit_index: number
  applied_index: number
  members: MemberStatus[]
  /** Where the member list came from: the leader's live view, or this node's replica. */
  source: 'leader' | 'local'
}

export interface DockletNodeInit {
  config: NodeConfig
  paths: DataDirPaths
  identity: Uint8Array
  record: NodeRecord
  clock: Clock
  logger: Logger
  /** Founding member of a new cluster: bootstrap the Raft group with this node alone. */
  bootstrap: boolean
  /** Runs `wg`/`ip`/`wireguard-go` for the mesh (default: execa on this host). */
  runner?: CommandRunner
}

const RPC_SUBMIT = 'cluster.submit'
const RPC_JOIN = 'cluster.join'
const RPC_STATUS = 'cluster.status'
const CONTROLLER_INTERVAL_MS = 250

export class DockletNode {
  readonly id: string
  readonly state = new ClusterState()
  private readonly config: NodeConfig
  private readonly paths: DataDirPaths
  private record: NodeRecord
  private readonly clock: Clock
  private readonly log: Logger
  private libp2p!: Libp2p
  private transport!: Libp2pFrameTransport
  private rpc!: RpcService
  private raft!: RaftNode<CommandResult>
  private storage!: LevelLogStorage
  private stopController: (() => void) | null = null
  /** This host's WireGuard mesh; null when config.mesh is 'off'. */
  private meshAgent: MeshAgent | null = null
  private controllerBusy = false
  private stopping: Promise<void> | null = null
  private resolveStopped!: () => void
  /** Resolves when the node has stopped (after stop(), a completed leave, or a fatal error). */
  readonly stopped: Promise<void>
  advertisedAddress = ''

  private constructor(init: DockletNodeInit, id: string) {
    this.id = id
    this.config = init.config
    this.paths = init.paths
    this.record = init.record
    this.clock = init.clock
    this.log = init.logger
    this.stopped = new Promise((resolve) => {
      this.resolveStopped = resolve
    })
  }

  static async start(init: DockletNodeInit, id: string): Promise<DockletNode> {
    const node = new DockletNode(init, id)
    await node.open(init)
    return node
  }

  private async open(init: DockletNodeInit): Promise<void> {
    this.libp2p = await createLibp2pHost({ identity: init.identity, listen: this.config.listen })
    this.advertisedAddress = this.pickAdvertisedAddress()
    try {
      // Before Raft: the saved mesh comes back without a leader, and memberInfo() needs the key.
      if (this.config.mesh === 'wireguard') this.meshAgent = await this.startMesh(init)
    } catch (error) {
      await Promise.resolve(this.libp2p.stop()).catch(() => {})
      throw error
    }
    this.transport = new Libp2pFrameTransport(this.libp2p, {
      onEvent: (event) => this.log.debug({ event }, 'raft transport event'),
    })
    await this.transport.start()
    this.rpc = new RpcService(this.libp2p, { onEvent: (event) => this.log.debug({ event }, 'rpc event') })
    const isMember = (peerId: string) => this.state.member(peerId) !== undefined
    this.rpc.register(RPC_SUBMIT, (params) => this.handleSubmit(params), { authorize: isMember })
    this.rpc.register(RPC_STATUS, () => this.localStatus(true), { authorize: isMember })
    this.rpc.register(RPC_JOIN, (params, context) => this.handleJoin(params, context.peerId))
    await this.rpc.start()

    this.storage = await LevelLogStorage.open(this.paths.raft)
    this.state.watch((command) => {
      if (command === null || command.type.startsWith('member.') || command.type === 'cluster.init')
        this.refreshPeers()
    })
    this.raft = await RaftNode.create<CommandResult>({
      id: this.id,
      storage: this.storage,
      transport: this.transport,
      clock: this.clock,
      rng: seededRng(Number.parseInt(this.id.slice(-8).replace(/[^0-9a-zA-Z]/g, '0'), 36) ^ process.pid),
      stateMachine: this.state,
      raft: {
        electionTimeoutTicks: this.config.electionTimeoutTicks,
        heartbeatIntervalTicks: this.config.heartbeatIntervalTicks,
      },
      driver: {
        tickMs: this.config.tickMs,
        requestTimeoutMs: this.config.requestTimeoutMs,
        snapshotEntries: this.config.snapshotEntries,
        // Keep fewer entries than a snapshot spans, so a member that was down long enough gets the snapshot.
        compactionKeepEntries: Math.min(1_000, Math.floor(this.config.snapshotEntries / 2)),
      },
      ...(init.bootstrap ? { bootstrap: { voters: [this.id] } } : {}),
      onEvent: (event) => {
        if (event.type === 'role')
          this.log.info({ role: event.role, leader: event.leader, term: event.term }, 'raft role')
        else if (event.type === 'fatal') {
          this.log.error({ error: event.error }, 'raft stopped on a fatal error')
          void this.stop()
        } else if (event.type === 'snapshot-restored') {
          // Rare and worth seeing: this replica was replaced by the leader's state.
          this.log.info({ index: event.index }, 'installed a snapshot from the leader')
        } else if (event.type !== 'send-dropped') this.log.debug({ event }, 'raft event')
      },
      onConfChange: (_change, confState, index) => this.onConfChange(confState, index),
    })
    this.refreshPeers()
    this.raft.start()
    if (init.bootstrap && this.raft.status().term === 0) this.raft.campaign()
    this.stopController = this.clock.every(CONTROLLER_INTERVAL_MS, () => void this.controllerRound())
    await this.startVnodes()
    this.log.info(
      { id: this.id, listen: this.config.listen, advertise: this.advertisedAddress },
      'docklet node started',
    )
  }

  // ------------------------------------------------------------ vnodes

  /** The API's name for this node's member id. */
  get nodeId(): string {
    return this.id
  }

  /** Containers, images and the host agent; null until open() reaches them. */
  vnodes: VnodeService | null = null

  private async startVnodes(): Promise<void> {
    this.vnodes = await VnodeService.start({
      nodeId: this.id,
      config: this.config,
      state: this.state,
      rpc: this.rpc,
      libp2p: this.libp2p,
      submit: (command) => this.submit(command),
      barrier: () => this.raft.readIndex(),
      mesh: this.meshSource(),
      isMember: (peerId) => this.state.member(peerId) !== undefined,
      logger: this.log,
    })
  }

  /** What the host agent learns the mesh from; null when the mesh is off. */
  private meshSource(): MeshSource | null {
    return this.meshAgent
  }

  private startMesh(init: DockletNodeInit): Promise<MeshAgent> {
    return MeshAgent.start({
      selfId: this.id,
      state: this.state,
      runner: init.runner ?? new ExecaCommandRunner(),
      logger: this.log,
      dataDir: this.config.dataDir,
      advertisedAddress: this.advertisedAddress,
      interfaceName: this.config.meshInterface,
      listenPort: this.config.meshListenPort,
      persistentKeepaliveS: this.config.meshPersistentKeepaliveS,
    })
  }

  /** The WireGuard mesh of this host (view() and onChange() for the host agent); null when it is off. */
  get mesh(): MeshAgent | null {
    return this.meshAgent
  }

  private requireVnodes(): VnodeService {
    if (this.vnodes === null) throw new StateError('ERR_STOPPED', 'This docklet node is not running.')
    return this.vnodes
  }

  execVnode(vclusterId: string, index: number, argv: string[], options: { timeoutMs: number }) {
    return this.requireVnodes().execVnode(vclusterId, index, argv, options)
  }

  saveVnode(
    vclusterId: string,
    index: number,
    image: { name: string; owner: string; description: string },
    onProgress?: (progress: Progress) => void,
  ) {
    return this.requireVnodes().saveVnode(vclusterId, index, image, onProgress)
  }

  /** After init: the founding host builds the configured images in the background, once. */
  buildInitialImages(): void {
    const admin = () =>
      Object.values(this.state.view.users).find((user) => user.role === 'admin')?.name ?? null
    void this.vnodes
      ?.buildInitialImages(admin)
      .catch((error: unknown) =>
        this.log.warn({ error: (error as Error).message }, 'background image builds stopped'),
      )
  }

  imageBuilds() {
    return [...(this.vnodes?.builds.values() ?? [])].map((build) => ({ ...build }))
  }

  buildImage(kind: ImageKind, onProgress?: (progress: Progress) => void) {
    const admin = Object.values(this.state.view.users).find((user) => user.role === 'admin')
    return this.requireVnodes().buildImage(kind, admin?.name ?? 'admin', onProgress)
  }

  importImage(
    tar: Readable,
    image: { name?: string; owner: string; description: string; visibility: ImageVisibility },
  ) {
    return this.requireVnodes().importImage(tar, image)
  }

  exportImage(id: string) {
    return this.requireVnodes().exportImage(id)
  }

  private pickAdvertisedAddress(): string {
    return advertisedAddress(this.libp2p, this.config)
  }

  /** The member record this host announces. */
  memberInfo(): MemberInfo {
    return {
      id: this.id,
      name: hostname(),
      address: this.advertisedAddress,
      portal: this.config.portal,
      ...this.meshAgent?.memberInfo(),
    }
  }

  // ------------------------------------------------------------ peers

  private refreshPeers(): void {
    const peers = new Map<string, string>()
    for (const seed of this.record.seedPeers) peers.set(seed.id, seed.address)
    for (const member of this.state.members()) peers.set(member.id, member.address)
    peers.delete(this.id)
    const list = [...peers].map(([id, address]) => ({ id, addrs: [address] }))
    for (const peer of list) {
      rememberPeer(this.libp2p, peer).catch((error: unknown) =>
        this.log.warn({ peer: peer.id, error: (error as Error).message }, 'cannot remember a member address'),
      )
    }
    this.transport.setPeers(list)
  }

  private onConfChange(confState: ConfState, index: number): void {
    this.log.info({ index, voters: confState.voters, learners: confState.learners }, 'membership changed')
    const inGroup = isVoter(confState, this.id) || confState.learners.includes(this.id)
    if (!inGroup && this.state.member(this.id)?.leaving === true) {
      // Our own removal was applied: the leave is complete.
      this.record = { ...this.record, left: true }
      writeNodeRecord(this.paths, this.record)
      this.log.info('this host left the cluster')
      setTimeout(() => void this.stop(), 200)
    }
  }

  // ------------------------------------------------------------ writes

  /**
   * Commits a command through the leader (forwarding when this node is not
   * the leader) and returns its result. Throws StateError when the state
   * machine refused it and QuorumLostError when no leader answered in time.
   */
  async submit(command: Command): Promise<CommandResult & { ok: true }> {
    const deadline = this.clock.nowMs() + this.config.requestTimeoutMs
    const receivedBefore = this.receivedFrames()
    // One request id for every attempt: a retry of a write that committed after all gets its first answer.
    command = { ...command, rid: randomUUID() } as unknown as Command
    let lastError: unknown = null
    while (this.clock.nowMs() < deadline) {
      if (this.stopping !== null) throw new StateError('ERR_STOPPED', 'This docklet node is stopping.')
      const leader = this.raft.leader()
      try {
        let result: CommandResult
        if (leader === this.id) {
          result = await this.raft.propose(encodeCommand({ ...command, at: Date.now() } as Command))
        } else if (leader !== '') {
          const remaining = Math.max(100, Math.floor(deadline - this.clock.nowMs()))
          const answer = await this.rpc.call<CommandResult>(
            leader,
            RPC_SUBMIT,
            { command },
            { timeoutMs: remaining },
          )
          result = answer.result
        } else {
          await this.sleep(this.config.tickMs)
          continue
        }
        if (!result.ok) throw new StateError(result.error.code, result.error.message)
        return result
      } catch (error) {
        if (error instanceof StateError) throw error
        if (
          error instanceof RpcRemoteError &&
          error.code.startsWith('ERR_') &&
          !this.isRetryable(error.code)
        ) {
          throw new StateError(error.code, error.message)
        }
        lastError = error
        await this.sleep(this.config.tickMs)
      }
    }
    this.log.debug({ error: (lastError as Error | null)?.message }, 'write gave up')
    throw this.quorumError(receivedBefore)
  }

  private isRetryable(code: string): boolean {
    return [
      'ERR_NOT_LEADER',
      'ERR_TIMEOUT',
      'ERR_PROPOSAL_DROPPED',
      'ERR_STOPPED',
      'ERR_RPC_TIMEOUT',
      'ERR_RPC_BUSY',
    ].includes(code)
  }

  private receivedFrames(): Map<string, number> {
    return new Map(Object.entries(this.transport.stats()).map(([id, peer]) => [id, peer.receivedFrames]))
  }

  private quorumError(receivedBefore: Map<string, number>): QuorumLostError {
    const conf = this.raft.status().confState
    const voters = conf.voters
    const stats = this.transport.stats()
    // Reachable: the voter sent us a frame while we waited (this node campaigns meanwhile,
    // so live voters answer). An open connection proves nothing: a frozen or cut-off host keeps it.
    const heard = (id: string) => (stats[id]?.receivedFrames ?? 0) > (receivedBefore.get(id) ?? 0)
    const reachable = voters.filter((id) => id === this.id || heard(id)).length
    return new QuorumLostError(reachable, voters.length, this.config.requestTimeoutMs)
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms))
  }

  private async handleSubmit(params: unknown): Promise<CommandResult> {
    const command = (params as { command?: Command }).command
    if (command === undefined || typeof command.type !== 'string') {
      throw Object.assign(new Error('A forwarded write carries no command.'), { code: 'ERR_BAD_REQUEST' })
    }
    if (!this.raft.isLeader()) throw new NotLeaderError(this.raft.leader())
    // The leader stamps the time, so every check against it (token expiry) uses one clock.
    return this.raft.propose(encodeCommand({ ...command, at: Date.now() } as Command))
  }

  // ------------------------------------------------------------ join

  private async handleJoin(params: unknown, peerId: string): Promise<unknown> {
    const p = params as { tokenId?: unknown; secret?: unknown; member?: Partial<MemberInfo> }
    if (typeof p.tokenId !== 'string' || typeof p.secret !== 'string' || p.member === undefined) {
      throw Object.assign(new Error('A join request needs tokenId, secret and member.'), {
        code: 'ERR_BAD_REQUEST',
      })
    }
    const member: MemberInfo = {
      // The joining host is who its connection proves it is, whatever it claims.
      id: peerId,
      name: String(p.member.name ?? ''),
      address: String(p.member.address ?? ''),
      portal: String(p.member.portal ?? ''),
      ...joinMeshInfo(p.member),
    }
    try {
      toMultiaddr(member.address)
    } catch {
      throw Object.assign(new Error(`The joining host announced an invalid address "${member.address}".`), {
        code: 'ERR_BAD_REQUEST',
      })
    }
    await this.submit({
      type: 'member.join',
      at: 0,
      tokenId: p.tokenId,
      secretHash: hashTokenSecret(p.secret),
      member,
    })
    return {
      clusterId: this.state.view.clusterId,
      members: this.state.members().map((m) => ({ id: m.id, address: m.address })),
    }
  }

  // ------------------------------------------------------------ tokens

  async createToken(
    ttlMs: number,
    createdBy: string,
  ): Promise<{ id: string; token: string; expires_at: string }> {
    const { id, secret, secretHash } = newTokenSecret()
    const expiresAt = Date.now() + ttlMs
    await this.submit({ type: 'token.create', at: 0, id, secretHash, expiresAt, createdBy })
    const token = encodeJoinToken({
      clusterId: this.state.view.clusterId,
      id,
      secret,
      expiresAt,
      members: this.state.members().map((m) => ({ id: m.id, address: m.address })),
    })
    return { id, token, expires_at: new Date(expiresAt).toISOString() }
  }

  listTokens(): Array<{
    id: string
    created_at: string
    expires_at: string
    state: string
    used_by: string
  }> {
    const now = Date.now()
    return Object.values(this.state.view.tokens)
      .sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id))
      .map((t) => ({
        id: t.id,
        created_at: new Date(t.createdAt).toISOString(),
        expires_at: new Date(t.expiresAt).toISOString(),
        state:
          t.revokedAt !== 0 ? 'revoked' : t.usedAt !== 0 ? 'used' : t.expiresAt <= now ? 'expired' : 'valid',
        used_by: t.usedBy,
      }))
  }

  async revokeToken(id: string): Promise<void> {
    await this.submit({ type: 'token.revoke', at: 0, id })
  }

  // ------------------------------------------------------------ membership

  /** Graceful leave: hand over leadership, leave the Raft group, stop. */
  async leave(): Promise<void> {
    const members = this.state.members()
    if (members.length <= 1) {
      throw new StateError(
        'ERR_LAST_MEMBER',
        'This is the only member of the cluster; there is no cluster to leave.',
      )
    }
    if (this.raft.isLeader()) {
      const voters = this.raft.status().confState.voters.filter((v) => v !== this.id)
      const target = voters.find((v) => this.state.member(v)?.online === true) ?? voters[0]
      if (target !== undefined) {
        this.log.info({ to: target }, 'leaving: handing leadership over')
        await this.raft.transferLeadership(target)
      }
    }
    await this.submit({ type: 'member.leaving', at: 0, id: this.id })
  }

  async removeMember(id: string, force: boolean): Promise<void> {
    const member = this.state.member(id)
    if (member === undefined)
      throw new StateError('ERR_MEMBER_NOT_FOUND', `No member has the id ${id}; see \`docklet status\`.`)
    if (id === this.id)
      throw new StateError('ERR_REMOVE_SELF', 'To remove this host, run `docklet leave` on it.')
    if (member.online && !force) {
      throw new StateError(
        'ERR_MEMBER_ONLINE',
        `Member ${id} is online; run \`docklet leave\` on it, or add --force to remove it anyway.`,
      )
    }
    await this.submit({ type: 'member.remove', at: 0, id })
  }

  // ------------------------------------------------------------ controller

  private async controllerRound(): Promise<void> {
    if (this.controllerBusy || this.stopping !== null || !this.raft.isLeader()) return
    this.controllerBusy = true
    try {
      await this.finishInit()
      if (this.state.view.clusterId === '') return
      const status = this.raft.status()
      const observed = new Map<string, MemberObservation>()
      for (const [id, progress] of status.progress) {
        observed.set(id, {
          lastContactMs: id === this.id ? 0 : progress.idleTicks * this.config.tickMs,
          match: progress.match,
        })
      }
      const actions = planMembership({
        leaderId: this.id,
        members: this.state.members(),
        confState: status.confState,
        observed,
        commitIndex: status.commit,
        maxVoters: this.state.view.settings.maxVoters,
        offlineThresholdMs: this.state.view.settings.offlineThresholdMs,
        catchUpLagEntries: 64,
      })
      for (const action of actions) {
        if (!this.raft.isLeader()) return
        if (action.type === 'liveness') {
          this.log.info({ changes: action.changes }, 'member liveness changed')
          await this.raft.propose(
            encodeCommand({ type: 'member.liveness', at: Date.now(), changes: action.changes }),
          )
        } else if (action.type === 'caught-up') {
          await this.raft.propose(encodeCommand({ type: 'member.caught-up', at: Date.now(), id: action.id }))
        } else if (action.type === 'forget') {
          this.log.info({ id: action.id }, 'removing a member that left')
          await this.raft.propose(encodeCommand({ type: 'member.remove', at: Date.now(), id: action.id }))
        } else {
          this.log.info({ reason: action.reason }, 'changing Raft membership')
          await this.raft.proposeConfChange(action.change)
        }
      }
    } catch (error) {
      this.log.debug({ error: (error as Error).message }, 'controller round did not finish')
    } finally {
      this.controllerBusy = false
    }
  }

  /** The founder commits cluster.init (with the admin account) once it leads. */
  private async finishInit(): Promise<void> {
    const pending = this.record.pendingInit
    if (pending === null) return
    if (this.state.view.clusterId === '') {
      const result = await this.raft.propose(
        encodeCommand({
          type: 'cluster.init',
          at: Date.now(),
          clusterId: pending.clusterId,
          member: this.memberInfo(),
          admin: {
            name: pending.adminName,
            passwordHash: pending.passwordHash,
            sshKey: generateSshKeyPair(`docklet:${pending.adminName}`),
          },
          settings: { maxVoters: this.config.maxVoters, offlineThresholdMs: this.config.offlineThresholdMs },
          mesh: { network: this.config.meshNetwork },
          allocation: { clusterNet: this.config.clusterNet, policy: this.config.placementPolicy },
        }),
      )
      if (!result.ok) throw new StateError(result.error.code, result.error.message)
    }
    this.record = { ...this.record, pendingInit: null }
    writeNodeRecord(this.paths, this.record)
  }

  /** Announces a changed address after a restart. */
  async announce(): Promise<void> {
    const known = this.state.member(this.id)
    const info = this.memberInfo()
    if (known === undefined) return
    const meshSame =
      this.meshAgent === null ||
      (known.meshPublicKey === info.meshPublicKey &&
        known.meshEndpoint === info.meshEndpoint &&
        !!known.meshIp)
    if (
      known.address === info.address &&
      known.portal === info.portal &&
      known.name === info.name &&
      meshSame
    )
      return
    await this.submit({ type: 'member.update', at: 0, member: info })
  }

  // ------------------------------------------------------------ status

  roleOf(member: Member, confState: ConfState): MemberStatus['role'] {
    if (confState.voters.includes(member.id) || confState.votersOutgoing.includes(member.id)) return 'voter'
    if (confState.learners.includes(member.id) || confState.learnersNext.includes(member.id)) {
      return member.caughtUp ? 'standby' : 'learner'
    }
    return 'joining'
  }

  /** This node's view; with `live` on the leader, contact times come from its heartbeats. */
  localStatus(live: boolean): ClusterStatus {
    const status = this.raft.status()
    const leaderMember = status.leader === '' ? undefined : this.state.member(status.leader)
    const isLeader = status.role === Role.Leader
    return {
      cluster_id: this.state.view.clusterId,
      self: { id: this.id, pid: process.pid, address: this.advertisedAddress },
      leader: status.leader === '' ? null : { id: status.leader, address: leaderMember?.address ?? '' },
      term: status.term,
      commit_index: status.commit,
      applied_index: status.applied,
      members: this.state.members().map((member) => {
        const progress = status.progress.get(member.id)
        let lastContact: number | null = null
        if (member.id === this.id) lastContact = 0
        else if (live && isLeader && progress !== undefined)
          lastContact = progress.idleTicks * this.config.tickMs
        return {
          id: member.id,
          name: member.name,
          address: member.address,
          portal: member.portal,
          role: this.roleOf(member, status.confState),
          online:
            isLeader && live && progress !== undefined
              ? progress.idleTicks * this.config.tickMs < this.state.view.settings.offlineThresholdMs
              : member.online,
          last_contact_ms: lastContact,
          leaving: member.leaving,
        }
      }),
      source: isLeader ? 'leader' : 'local',
    }
  }

  /** The cluster's status, from the leader when one answers, else this node's replica. */
  async status(): Promise<ClusterStatus> {
    const leader = this.raft.leader()
    if (leader === '' || leader === this.id) return this.localStatus(true)
    try {
      const { result } = await this.rpc.call<ClusterStatus>(leader, RPC_STATUS, {}, { timeoutMs: 1_000 })
      // The leader's view, with this node as "self".
      return { ...result, self: { id: this.id, pid: process.pid, address: this.advertisedAddress } }
    } catch {
      return this.localStatus(false)
    }
  }

  raftStatus() {
    return this.raft.status()
  }

  /** Where this replica stands, with a digest of its state: equal digests at equal indexes mean equal replicas. */
  stateDigest(): { applied_index: number; snapshot_index: number; state_digest: string } {
    const status = this.raft.status()
    const digest = createHash('sha256').update(this.state.snapshot()).digest('hex')
    return { applied_index: status.applied, snapshot_index: status.snapshotIndex, state_digest: digest }
  }

  // ------------------------------------------------------------ stop

  stop(): Promise<void> {
    if (this.stopping !== null) return this.stopping
    this.stopping = (async () => {
      this.stopController?.()
      this.stopController = null
      // A host that left takes its mesh interface with it; otherwise the data plane outlives the node.
      if (this.record.left) {
        await this.meshAgent
          ?.removeInterface()
          .catch((error: unknown) =>
            this.log.warn({ error: (error as Error).message }, 'could not remove the mesh interface'),
          )
      } else await this.meshAgent?.stop()
      await this.vnodes?.stop().catch(() => {})
      await this.raft.stop().catch(() => {})
      await this.rpc.stop().catch(() => {})
      await this.transport.stop().catch(() => {})
      await Promise.resolve(this.libp2p.stop()).catch(() => {})
      await this.storage.close().catch(() => {})
      this.log.info('docklet node stopped')
      this.resolveStopped()
    })()
    return this.stopping
  }
}
