// The node's container side: the runtime driver, the image store, the host
// agent, and the operations that must run on the host holding a vnode (exec,
// save), reached over RPC from whichever node received the request.

import { execFile } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Libp2p } from '@libp2p/interface'
import type { Logger } from 'pino'
import { ImageTransferService, type RpcService } from '../../net/index.ts'
import {
  type ContainerRuntime,
  createRuntime,
  type ExecResult,
  ImageBuilder,
  ImageStore,
} from '../../runtime/index.ts'
import { HostAgent, type MeshSource } from '../agent/host-agent.ts'
import type { ImageKind, Progress, VnodeExecResult } from '../api/api-backend.ts'
import type { NodeConfig } from '../config.ts'
import { ExecaCommandRunner } from '../exec/command-runner.ts'
import type { ClusterState, Command, CommandResult } from '../state/cluster-state.ts'
import { StateError } from '../state/state-error.ts'

const RPC_EXEC = 'vnode.exec'
const RPC_SAVE = 'vnode.save'
export const EXEC_TIMEOUT_MS_MAX = 3_600_000
export const EXEC_ARGV_MAX = 256
const SAVE_TIMEOUT_MS = 600_000
const INIT_IMAGE_ATTEMPTS = 3
const IMAGE_FETCH_TIMEOUT_MS = 30 * 60_000

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms).unref())
}

export interface VnodeServiceInit {
  nodeId: string
  config: NodeConfig
  state: ClusterState
  rpc: RpcService
  libp2p: Libp2p
  submit: (command: Command) => Promise<CommandResult & { ok: true }>
  barrier: () => Promise<void>
  mesh: MeshSource | null
  isMember: (peerId: string) => boolean
  logger: Logger
}

/** The interface of the default route, where vnode egress is NATed; '' when the host has none. */
export async function defaultRouteInterface(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('ip', ['-j', 'route', 'show', 'default'], { timeout: 5_000 })
    const routes = JSON.parse(stdout) as Array<{ dev?: string }>
    return routes[0]?.dev ?? ''
  } catch {
    return ''
  }
}

function portOf(address: string): number | null {
  const match = /:(\d+)$/.exec(address) ?? /\/tcp\/(\d+)/.exec(address)
  return match === null ? null : Number(match[1])
}

export class VnodeService {
  readonly runtime: ContainerRuntime
  readonly images: ImageStore
  readonly runner = new ExecaCommandRunner()
  agent!: HostAgent
  transfer!: ImageTransferService
  readonly #init: VnodeServiceInit

  private constructor(init: VnodeServiceInit) {
    this.#init = init
    this.runtime = createRuntime(init.config.runtime, {
      lxcpath: join(init.config.dataDir, 'lxc'),
      runner: this.runner,
    })
    this.images = new ImageStore({ dir: join(init.config.dataDir, 'images'), runner: this.runner })
  }

  static async start(init: VnodeServiceInit): Promise<VnodeService> {
    const service = new VnodeService(init)
    await service.images.open()
    const { config } = init
    const egress = config.egressInterface !== '' ? config.egressInterface : await defaultRouteInterface()
    const controlPorts = [portOf(config.listen), portOf(config.portal)].filter(
      (port): port is number => port !== null,
    )
    const capacity: Record<string, number> = {}
    capacity.cpuCores =
      config.capacityCpuCores > 0 ? config.capacityCpuCores : availableParallelism() * config.cpuOvercommit
    if (config.capacityMemoryMb > 0) capacity.memoryMb = config.capacityMemoryMb
    if (config.capacityDiskMb > 0) capacity.diskMb = config.capacityDiskMb
    if (init.mesh !== null && egress === '')
      init.logger.warn('this host has no default route: vnodes get no egress (set egressInterface)')
    service.transfer = new ImageTransferService(init.libp2p, {
      authorize: init.isMember,
      open: async (hash) => {
        if ((await service.images.get(hash)) === null) return null
        return service.images.openTar(hash)
      },
      onEvent: (event) =>
        init.logger.info(
          { peer: event.peer, hash: event.hash, event: event.type },
          `image transfer: ${event.message}`,
        ),
    })
    await service.transfer.start()
    service.agent = new HostAgent({
      nodeId: init.nodeId,
      state: init.state,
      runtime: service.runtime,
      images: service.images,
      submit: init.submit,
      barrier: init.barrier,
      mesh: init.mesh,
      network:
        init.mesh === null ? null : { runner: service.runner, egressInterface: egress || 'lo', controlPorts },
      capacity,
      fetchImage: (hash, hosts) => service.fetchImage(hash, hosts),
      dataDir: config.dataDir,
      logger: init.logger,
    })
    init.rpc.register(
      RPC_EXEC,
      async (params) => {
        const p = params as { vcluster: string; index: number; argv: string[]; timeoutMs: number }
        return service.agent.exec(p.vcluster, p.index, p.argv, p.timeoutMs)
      },
      { authorize: init.isMember },
    )
    init.rpc.register(
      RPC_SAVE,
      async (params) => {
        const p = params as {
          vcluster: string
          index: number
          name: string
          owner: string
          description: string
        }
        return service.saveHere(p.vcluster, p.index, p)
      },
      { authorize: init.isMember },
    )
    service.agent.start()
    return service
  }

  async stop(): Promise<void> {
    await this.agent?.stop()
    await this.transfer?.stop().catch(() => {})
  }

  /** Copies an image from the first of `hosts` that serves it; the store verifies its hash on import. */
  async fetchImage(hash: string, hosts: string[]): Promise<void> {
    let lastError: unknown = null
    for (const host of hosts) {
      try {
        const started = Date.now()
        const fetched = await this.transfer.fetch(host, hash, {
          timeoutMs: IMAGE_FETCH_TIMEOUT_MS,
          expectPeerId: [host],
        })
        await this.images.importTar(fetched.stream, hash)
        this.#init.logger.info({ hash, from: host, ms: Date.now() - started }, 'image fetched')
        return
      } catch (error) {
        lastError = error
        this.#init.logger.warn({ hash, from: host, error: (error as Error).message }, 'image fetch failed')
      }
    }
    throw new Error(
      `could not fetch image ${hash.slice(0, 12)} from ${hosts.length} host(s): ${(lastError as Error | null)?.message ?? 'no host holds it'}`,
    )
  }

  #hostOf(vclusterId: string, index: number): string {
    const vcluster = this.#init.state.view.vclusters[vclusterId]
    const vnode = vcluster?.vnodes.find((v) => v.index === index && v.desired !== 'deleted')
    if (vcluster === undefined || vnode === undefined)
      throw new StateError('ERR_VNODE_NOT_FOUND', `The vcluster ${vclusterId} has no vnode ${index}.`)
    if (vnode.host === null)
      throw new StateError(
        'ERR_VNODE_PENDING',
        `vnode ${index} of ${vcluster.owner}/${vcluster.name} is not placed on a host yet: ${vnode.pendingReason}`,
      )
    return vnode.host
  }

  async execVnode(
    vclusterId: string,
    index: number,
    argv: string[],
    options: { timeoutMs: number },
  ): Promise<VnodeExecResult> {
    if (!Array.isArray(argv) || argv.length === 0 || argv.length > EXEC_ARGV_MAX)
      throw new StateError('ERR_BAD_REQUEST', `Give a command of 1 to ${EXEC_ARGV_MAX} arguments to run.`)
    const timeoutMs = Math.min(Math.max(1_000, options.timeoutMs), EXEC_TIMEOUT_MS_MAX)
    const host = this.#hostOf(vclusterId, index)
    if (host === this.#init.nodeId) return this.agent.exec(vclusterId, index, argv, timeoutMs)
    const answer = await this.#init.rpc.call<ExecResult>(
      host,
      RPC_EXEC,
      { vcluster: vclusterId, index, argv, timeoutMs },
      { timeoutMs: timeoutMs + 5_000 },
    )
    return answer.result
  }

  async saveHere(
    vclusterId: string,
    index: number,
    image: { name: string; owner: string; description: string },
  ): Promise<{ id: string }> {
    const manifest = await this.agent.save(vclusterId, index, image.name)
    await this.#init.submit({
      type: 'image.register',
      at: 0,
      id: manifest.hash,
      name: image.name,
      owner: image.owner,
      visibility: 'private',
      description: image.description,
      sizeBytes: manifest.size,
      host: this.#init.nodeId,
    })
    return { id: manifest.hash }
  }

  async saveVnode(
    vclusterId: string,
    index: number,
    image: { name: string; owner: string; description: string },
    onProgress?: (progress: Progress) => void,
  ): Promise<{ id: string }> {
    const host = this.#hostOf(vclusterId, index)
    onProgress?.({ step: `saving vnode ${index} on its host` })
    if (host === this.#init.nodeId) return this.saveHere(vclusterId, index, image)
    const answer = await this.#init.rpc.call<{ id: string }>(
      host,
      RPC_SAVE,
      { vcluster: vclusterId, index, ...image },
      { timeoutMs: SAVE_TIMEOUT_MS },
    )
    return answer.result
  }

  /**
   * After `docklet init`: builds the configured images in the background,
   * once (a marker file per image in the data dir), so the first workspace
   * needs no manual step. Waits for the cluster to exist first.
   */
  async buildInitialImages(owner: () => string | null): Promise<void> {
    for (const kind of this.#init.config.initImages) {
      const marker = join(this.#init.config.dataDir, `init-image-${kind}.done`)
      if (existsSync(marker)) continue
      for (let attempt = 1; attempt <= INIT_IMAGE_ATTEMPTS; attempt++) {
        const admin = owner()
        if (admin === null) {
          await sleep(1_000)
          continue
        }
        try {
          const started = Date.now()
          this.#init.logger.info({ image: kind }, 'building an image in the background (docklet init)')
          const { id } = await this.buildImage(kind, admin, (progress) =>
            this.#init.logger.info({ image: kind, step: progress.step }, 'image build progress'),
          )
          writeFileSync(marker, `${id}\n`)
          this.#init.logger.info({ image: kind, id, ms: Date.now() - started }, 'image ready')
          break
        } catch (error) {
          this.#init.logger.warn(
            { image: kind, attempt, error: (error as Error).message },
            `building the ${kind} image failed; run \`docklet image build ${kind}\` to retry by hand`,
          )
          if ((error as { code?: string }).code === 'ERR_STOPPED') return
          await sleep(5_000 * attempt)
        }
      }
    }
  }

  /** Builds one of docklet's own images here and registers it as public, owned by `owner`. */
  async buildImage(
    kind: ImageKind,
    owner: string,
    onProgress?: (progress: Progress) => void,
  ): Promise<{ id: string }> {
    if (this.builds.has(kind))
      throw new StateError(
        'ERR_BUILD_RUNNING',
        `The ${kind} image is being built on this host already; wait for it.`,
      )
    const build = { kind, step: `building the ${kind} image`, startedAt: Date.now() }
    this.builds.set(kind, build)
    try {
      return await this.#build(kind, owner, (progress) => {
        build.step = progress.step
        onProgress?.(progress)
      })
    } finally {
      this.builds.delete(kind)
    }
  }

  /** Builds running here, by kind, with their latest step. */
  readonly builds = new Map<ImageKind, { kind: ImageKind; step: string; startedAt: number }>()

  async #build(
    kind: ImageKind,
    owner: string,
    onProgress: (progress: Progress) => void,
  ): Promise<{ id: string }> {
    const builder = new ImageBuilder({ store: this.images, runner: this.runner })
    onProgress?.({ step: `building the ${kind} image` })
    const manifest =
      kind === 'busybox'
        ? await builder.buildBusybox({ name: 'busybox' })
        : await builder.buildDebian({ name: 'debian', onProgress: (line) => onProgress?.({ step: line }) })
    onProgress?.({ step: 'registering the image', fraction: 1 })
    if (this.#init.state.view.images[manifest.hash] !== undefined) {
      // The same bytes are registered already (built before, here or elsewhere): this host holds them too.
      await this.#init.submit({ type: 'image.held', at: 0, hash: manifest.hash, host: this.#init.nodeId })
      return { id: manifest.hash }
    }
    await this.#init.submit({
      type: 'image.register',
      at: 0,
      id: manifest.hash,
      name: kind,
      owner,
      visibility: 'public',
      description:
        kind === 'busybox' ? 'BusyBox, for tests and tiny jobs' : 'Debian 12 with Python and Jupyter',
      sizeBytes: manifest.size,
      host: this.#init.nodeId,
    })
    return { id: manifest.hash }
  }
}
