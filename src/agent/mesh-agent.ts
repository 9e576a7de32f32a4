// The mesh agent: keeps this host's WireGuard interface matching the mesh the
// replicated state describes (every other member with a key and a mesh
// address is a peer). At node start, before Raft, it brings back the last
// applied configuration from disk, so the data plane works while no leader
// exists; then, after every state change that can touch the mesh, it
// converges the interface again: one apply at a time, bursts coalesced, a
// failed apply retried with a bounded back-off, and every successful apply
// saved for the next start. Plans and commands come from net/ (planMesh,
// applyMesh); this file only decides what is desired and when to apply it.

import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import {
  applyMesh,
  type CommandRunner,
  ensureMeshKey,
  loadMeshConfig,
  type MeshDesired,
  meshMtuFromUnderlay,
  parseIpAddrJson,
} from '../../net/index.ts'
import type { ClusterState, Command } from '../state/cluster-state.ts'
import { type MemberMeshInfo, type MeshData, meshHosts, meshPrefixLength } from '../state/mesh-state.ts'

/** A burst of applied commands within this window costs one apply. */
export const MESH_DEBOUNCE_MS = 50
/** First and longest wait before a failed apply is tried again (doubling in between). */
export const MESH_RETRY_MS_MIN = 500
export const MESH_RETRY_MS_MAX = 30_000
/** The interface is re-read this often even when the state did not change (wireguard-go may have died). */
export const MESH_RESYNC_INTERVAL_MS = 30_000
export const MESH_COMMAND_TIMEOUT_MS = 10_000
/** Change listeners (the host agent, a few tests); more is a leak. */
export const MESH_LISTENERS_MAX = 16
/** Assumed when no interface carries this host's endpoint address (e.g. an advertised NAT address). */
export const UNDERLAY_MTU_DEFAULT = 1500

/** What the host agent needs from the mesh: where this host is, and where the others are. */
export interface MeshView {
  interfaceName: string
  localMeshIp: string
  mtu: number
  /** Member id → mesh IP, this host included. */
  hostMeshIps: Record<string, string>
}

export class MeshAgentError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'MeshAgentError'
    this.code = code
  }
}

/** Where the mesh keeps its files in a data dir (the directory is root-only). */
export function meshPaths(dataDir: string): { dir: string; privateKey: string; stateFile: string } {
  const dir = join(dataDir, 'mesh')
  return { dir, privateKey: join(dir, 'wg.key'), stateFile: join(dir, 'mesh.json') }
}

/**
 * The WireGuard endpoint other hosts use: the IP of this host's advertised
 * libp2p address with the mesh port; '' when that address names no concrete IP.
 */
export function meshEndpointFor(advertisedAddress: string, listenPort: number): string {
  const [, protocol, host] = advertisedAddress.split('/')
  if (protocol === 'ip4' && host !== undefined && host !== '0.0.0.0') return `${host}:${listenPort}`
  if (protocol === 'ip6' && host !== undefined && host !== '::') return `[${host}]:${listenPort}`
  return ''
}

/**
 * The mesh fields of this host's member record: ensures the key pair (private
 * key root-only in the data dir) and derives the endpoint. Used at start and by
 * `docklet join`, which must announce them before the node ever runs.
 */
export async function localMeshInfo(
  runner: CommandRunner,
  options: { dataDir: string; advertisedAddress: string; listenPort: number; commandTimeoutMs?: number },
): Promise<Required<MemberMeshInfo>> {
  const { privateKey } = meshPaths(options.dataDir)
  let publicKey: string
  try {
    ;({ publicKey } = await ensureMeshKey(runner, privateKey, {
      commandTimeoutMs: options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS,
    }))
  } catch (error) {
    throw new MeshAgentError(
      'ERR_MESH_KEY',
      `The WireGuard key ${privateKey} could not be read or created (${(error as Error).message}). ` +
        'Install wireguard-tools, or set "mesh": "off" in the config to run this node without a mesh.',
      { cause: error },
    )
  }
  return {
    meshPublicKey: publicKey,
    meshEndpoint: meshEndpointFor(options.advertisedAddress, options.listenPort),
  }
}

export interface DesiredMeshOptions {
  selfId: string
  /** This host's own public key: a member announcing it too (a copied data dir) is no peer. */
  publicKey: string
  interfaceName: string
  privateKeyPath: string
  listenPort: number
  mtu: number
  persistentKeepaliveS: number
}

/**
 * The WireGuard configuration the state asks of this host, or null while the
 * state does not list this host with a mesh address yet (a joiner catching up):
 * then nothing is changed.
 */
export function desiredMeshFromState(data: MeshData, options: DesiredMeshOptions): MeshDesired | null {
  const self = data.members[options.selfId]
  if (!self?.meshIp) return null
  const peers = meshHosts(data)
    .filter((host) => host.id !== options.selfId && host.publicKey !== options.publicKey)
    .map((host) => ({
      publicKey: host.publicKey,
      ...(host.endpoint === '' ? {} : { endpoint: host.endpoint }),
      allowedIps: [`${host.meshIp}/32`],
      persistentKeepaliveS: options.persistentKeepaliveS,
      label: host.id,
    }))
  return {
    interfaceName: options.interfaceName,
    privateKeyPath: options.privateKeyPath,
    listenPort: options.listenPort,
    address: `${self.meshIp}/${meshPrefixLength(data.mesh)}`,
    mtu: options.mtu,
    peers,
  }
}

/** The view a configuration gives: peers without a label (none written by this agent) are left out. */
export function meshViewOf(desired: MeshDesired, selfId: string): MeshView {
  const localMeshIp = desired.address.split('/')[0] ?? ''
  const hostMeshIps: Record<string, string> = { [selfId]: localMeshIp }
  for (const peer of desired.peers) {
    const ip = peer.allowedIps[0]?.split('/')[0]
    if (peer.label !== undefined && ip !== undefined) hostMeshIps[peer.label] = ip
  }
  return { interfaceName: desired.interfaceName, localMeshIp, mtu: desired.mtu, hostMeshIps }
}

export interface MeshAgentInit {
  selfId: string
  state: Pick<ClusterState, 'view' | 'watch'>
  runner: CommandRunner
  logger: Logger
  dataDir: string
  /** This host's advertised libp2p address (a multiaddr); its IP is the WireGuard endpoint. */
  advertisedAddress: string
  interfaceName: string
  listenPort: number
  persistentKeepaliveS: number
  debounceMs?: number
  retryMsMin?: number
  retryMsMax?: number
  resyncIntervalMs?: number
  commandTimeoutMs?: number
}

/** Commands after which the mesh may differ; the rest (vclusters, users…) cannot change it. */
function touchesMesh(command: Command | null): boolean {
  return command === null || command.type === 'cluster.init' || command.type.startsWith('member.')
}

export class MeshAgent {
  readonly publicKey: string
  readonly endpoint: string
  readonly #init: MeshAgentInit
  readonly #paths: ReturnType<typeof meshPaths>
  readonly #log: Logger
  readonly #listeners = new Set<() => void>()
  #view: MeshView | null = null
  /** The configuration last applied (or restored), as JSON, to skip applies that would change nothing. */
  #appliedJson = ''
  #appliedInterface: string | null = null
  #mtu: number | null = null
  #timer: NodeJS.Timeout | null = null
  #resync: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null
  #dirty = false
  #force = true
  #failures = 0
  #stopped = false
  #unwatch: (() => void) | null = null

  private constructor(init: MeshAgentInit, info: Required<MemberMeshInfo>) {
    this.#init = init
    this.#paths = meshPaths(init.dataDir)
    this.#log = init.logger.child({ component: 'mesh' })
    this.publicKey = info.meshPublicKey
    this.endpoint = info.meshEndpoint
  }

  /**
   * Ensures the key pair, restores the last saved configuration (errors are
   * logged: the state will be applied anyway), then follows the state.
   * Throws MeshAgentError only when the key cannot be had.
   */
  static async start(init: MeshAgentInit): Promise<MeshAgent> {
    const info = await localMeshInfo(init.runner, {
      dataDir: init.dataDir,
      advertisedAddress: init.advertisedAddress,
      listenPort: init.listenPort,
      commandTimeoutMs: init.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS,
    })
    const agent = new MeshAgent(init, info)
    await agent.#restore()
    agent.#unwatch = init.state.watch((command) => {
      if (touchesMesh(command)) agent.#schedule(init.debounceMs ?? MESH_DEBOUNCE_MS)
    })
    agent.#resync = setInterval(() => {
      agent.#force = true
      agent.#schedule(0)
    }, init.resyncIntervalMs ?? MESH_RESYNC_INTERVAL_MS)
    agent.#resync.unref()
    agent.#schedule(0)
    return agent
  }

  /** The mesh fields this host announces in its member record. */
  memberInfo(): Required<MemberMeshInfo> {
    return { meshPublicKey: this.publicKey, meshEndpoint: this.endpoint }
  }

  /** The mesh as last applied, or null while nothing has been applied yet. */
  view(): MeshView | null {
    return this.#view
  }

  /** Calls `listener` after each apply that changed the view. Returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    if (this.#listeners.size >= MESH_LISTENERS_MAX) {
      throw new MeshAgentError(
        'ERR_MESH_LISTENERS',
        `The mesh agent already has ${MESH_LISTENERS_MAX} change listeners (MESH_LISTENERS_MAX); unsubscribe unused ones.`,
      )
    }
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Stops following the state; the interface keeps running (the data plane outlives the node). */
  async stop(): Promise<void> {
    this.#stopped = true
    this.#unwatch?.()
    this.#unwatch = null
    if (this.#timer !== null) clearTimeout(this.#timer)
    if (this.#resync !== null) clearInterval(this.#resync)
    this.#timer = null
    this.#resync = null
    await this.#running
    this.#listeners.clear()
  }

  /**
   * For a host that left the cluster: stops, deletes the interface (a
   * wireguard-go daemon exits with it) and the saved configuration, so the
   * next start restores nothing. The key stays with the data dir.
   */
  async removeInterface(): Promise<void> {
    await this.stop()
    const name = this.#appliedInterface ?? this.#init.interfaceName
    await this.#init.runner.run('ip', ['link', 'del', 'dev', name], {
      timeoutMs: this.#init.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS,
      okExitCodes: [0, 1],
    })
    await rm(this.#paths.stateFile, { force: true })
    this.#view = null
    this.#log.info({ interface: name }, 'removed the mesh interface: this host left the cluster')
  }

  async #restore(): Promise<void> {
    try {
      const saved = await loadMeshConfig(this.#paths.stateFile)
      if (saved === null) return
      const result = await applyMesh(this.#init.runner, saved, {
        commandTimeoutMs: this.#init.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS,
      })
      this.#record(saved)
      this.#log.info(
        { interface: saved.interfaceName, peers: saved.peers.length, commands: result.commands.length },
        'restored the saved mesh configuration',
      )
    } catch (error) {
      this.#log.warn(
        { error: (error as Error).message, file: this.#paths.stateFile },
        'could not restore the saved mesh configuration; the mesh comes back once the state is applied',
      )
    }
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return
    this.#dirty = true
    if (this.#running !== null || this.#timer !== null) return
    this.#timer = setTimeout(() => this.#run(), delayMs)
  }

  #run(): void {
    this.#timer = null
    if (this.#stopped) return
    this.#dirty = false
    const force = this.#force
    this.#force = false
    this.#running = this.#converge(force)
      .then(
        () => {
          this.#failures = 0
        },
        (error: unknown) => {
          this.#failures++
          this.#force = true
          const retryMs = Math.min(
            this.#init.retryMsMax ?? MESH_RETRY_MS_MAX,
            (this.#init.retryMsMin ?? MESH_RETRY_MS_MIN) * 2 ** Math.min(this.#failures - 1, 16),
          )
          this.#log.warn(
            { error: (error as Error).message, failures: this.#failures, retryMs },
            'converging the WireGuard mesh failed; retrying',
          )
          if (!this.#stopped) this.#timer = setTimeout(() => this.#run(), retryMs)
        },
      )
      .finally(() => {
        this.#running = null
        if (this.#dirty && this.#timer === null) this.#schedule(this.#init.debounceMs ?? MESH_DEBOUNCE_MS)
      })
  }

  async #converge(force: boolean): Promise<void> {
    const desired = desiredMeshFromState(this.#init.state.view, {
      selfId: this.#init.selfId,
      publicKey: this.publicKey,
      interfaceName: this.#init.interfaceName,
      privateKeyPath: this.#paths.privateKey,
      listenPort: this.#init.listenPort,
      mtu: await this.#underlayMtu(),
      persistentKeepaliveS: this.#init.persistentKeepaliveS,
    })
    if (desired === null) return
    const json = JSON.stringify(desired)
    if (!force && json === this.#appliedJson) return
    const timeoutMs = this.#init.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS
    if (this.#appliedInterface !== null && this.#appliedInterface !== desired.interfaceName) {
      // The interface was renamed in the config: the old one would keep the same key and port.
      await this.#init.runner.run('ip', ['link', 'del', 'dev', this.#appliedInterface], {
        timeoutMs,
        okExitCodes: [0, 1],
      })
    }
    const result = await applyMesh(this.#init.runner, desired, {
      stateFile: this.#paths.stateFile,
      commandTimeoutMs: timeoutMs,
    })
    if (result.commands.length > 0) {
      this.#log.info(
        {
          implementation: result.implementation,
          peers: desired.peers.map((peer) => peer.label),
          commands: result.commands.map((command) => [command.file, ...command.args].join(' ')),
        },
        'converged the WireGuard mesh',
      )
    }
    this.#record(desired)
  }

  #record(desired: MeshDesired): void {
    this.#appliedJson = JSON.stringify(desired)
    this.#appliedInterface = desired.interfaceName
    const view = meshViewOf(desired, this.#init.selfId)
    if (JSON.stringify(view) === JSON.stringify(this.#view)) return
    this.#view = view
    for (const listener of this.#listeners) {
      try {
        listener()
      } catch (error) {
        this.#log.warn({ error: (error as Error).message }, 'a mesh change listener failed')
      }
    }
  }

  /** The mesh MTU from the MTU of the interface that holds this host's endpoint address. */
  async #underlayMtu(): Promise<number> {
    if (this.#mtu !== null) return this.#mtu
    const ip = this.endpoint.replace(/:\d+$/, '').replace(/^\[|\]$/g, '')
    if (ip !== '') {
      const result = await this.#init.runner.run('ip', ['-j', 'addr', 'show'], {
        timeoutMs: this.#init.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS,
      })
      const link = parseIpAddrJson(result.stdout).find((candidate) =>
        candidate.addresses.some((address) => address.local === ip),
      )
      if (link !== undefined) {
        this.#mtu = meshMtuFromUnderlay(link.mtu)
        return this.#mtu
      }
    }
    this.#log.debug({ endpoint: this.endpoint }, 'no interface holds the endpoint address; assuming MTU 1500')
    return meshMtuFromUnderlay(UNDERLAY_MTU_DEFAULT)
  }
}
