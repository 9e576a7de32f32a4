// The node's container side: the runtime driver, the image store, the host
// agent, and the operations that must run on the host holding a vnode (exec,
// save), reached over RPC from whichever node received the request.

import { execFile } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import type { Libp2p } from '@libp2p/interface'
import type { Logger } from 'pino'
import { ImageTransferService, type RpcService } from '../../net/index.ts'
import {
  type ContainerRuntime,
  createRuntime,
  type ExecResult,
  ImageBuilder,
  ImageHashMismatchError,
  ImageStore,
  LxcRuntime,
} from '../../runtime/index.ts'
import { HostAgent, type MeshSource } from '../agent/host-agent.ts'
import type { ImageKind, Progress, VnodeExecResult } from '../api/api-backend.ts'
import type { NodeConfig } from '../config.ts'
import { HelperCommandRunner } from '../exec/helper-command-runner.ts'
import type { ClusterState, Command, CommandResult } from '../state/cluster-state.ts'
import { StateError } from '../state/state-error.ts'
import type { ImageVisibility } from '../state/vcluster-state.ts'

const RPC_EXEC = 'vnode.exec'
const RPC_SAVE = 'vnode.save'
export const EXEC_TIMEOUT_MS_MAX = 3_600_000
export const EXEC_ARGV_MAX = 256
const SAVE_TIMEOUT_MS = 600_000
const INIT_IMAGE_ATTEMPTS = 3
const IMAGE_FETCH_TIMEOUT_MS = 30 * 60_000
/** Tries per host when a transfer breaks off or the host is busy; other failures move on to the next host. */
const IMAGE_FETCH_ATTEMPTS_PER_HOST = 2
const IMAGE_FETCH_RETRY_CODES = new Set(['ERR_IMAGE_TRUNCATED', 'ERR_IMAGE_BUSY'])
const IMAGE_FETCH_RETRY_DELAY_MS = 1000

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

/** manifest.json must lie within this many bytes at the start of an imported image tar. */
export const IMAGE_TAR_HEAD_BYTES_MAX = 1024 * 1024
const TAR_BLOCK_BYTES = 512
const IMAGE_HASH = /^[0-9a-f]{64}$/

function badTar(message: string): StateError {
  return new StateError(
    'ERR_BAD_REQUEST',
    `${message} An image tar holds manifest.json, then rootfs/, as \`docklet image export\` writes it.`,
  )
}

function tarText(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length)
  const end = field.indexOf(0)
  return field.subarray(0, end < 0 ? field.length : end).toString('utf8')
}

/** What one pax extended header (records "LEN key=value\n") says the next entry's path is. */
function paxPath(data: Buffer): string | null {
  let path: string | null = null
  let offset = 0
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset)
    const length = Number.parseInt(data.subarray(offset, space).toString('ascii'), 10)
    if (space < 0 || !Number.isSafeInteger(length) || length <= 0) break
    const record = data.subarray(space + 1, offset + length - 1).toString('utf8')
    if (record.startsWith('path=')) path = record.slice('path='.length)
    offset += length
  }
  return path
}

/**
 * The manifest of an image tar from its first bytes: manifest.json must be
 * its first file (pax and GNU long-name headers before it are read). Null
 * while `head` is too short to tell; a refusal as a sentence otherwise.
 */
export function imageTarManifest(head: Buffer): { name: string; hash: string } | null {
  if (head[0] === 0x1f && head[1] === 0x8b) throw badTar('The upload is gzip-compressed; send the plain tar.')
  let offset = 0
  let longName: string | null = null
  while (offset + TAR_BLOCK_BYTES <= head.length) {
    const block = head.subarray(offset, offset + TAR_BLOCK_BYTES)
    if (block.every((byte) => byte === 0)) throw badTar('The tar has no manifest.json.')
    let sum = 0
    for (let i = 0; i < TAR_BLOCK_BYTES; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!
    const size = Number.parseInt(tarText(block, 124, 12).trim() || '0', 8)
    if (Number.parseInt(tarText(block, 148, 8).trim(), 8) !== sum || !Number.isSafeInteger(size))
      throw badTar('The upload is not a tar.')
    const type = String.fromCharCode(block[156]!)
    const dataStart = offset + TAR_BLOCK_BYTES
    const dataEnd = dataStart + size
    const next = dataStart + Math.ceil(size / TAR_BLOCK_BYTES) * TAR_BLOCK_BYTES
    if (type === 'x' || type === 'L') {
      if (dataEnd > head.length) return null
      const data = head.subarray(dataStart, dataEnd)
      longName = type === 'x' ? (paxPath(data) ?? longName) : tarText(data, 0, data.length)
      offset = next
      continue
    }
    if (type === 'g') {
      offset = next
      continue
    }
    const prefix = tarText(block, 345, 155)
    const name = (
      longName ?? (prefix === '' ? tarText(block, 0, 100) : `${prefix}/${tarText(block, 0, 100)}`)
    ).replace(/^(\.\/)+/, '')
    if (name !== 'manifest.json' || (type !== '0' && type !== '\0'))
      throw badTar(`The tar starts with ${JSON.stringify(name)} instead of manifest.json.`)
    if (dataEnd > head.length) return null
    let manifest: { name?: unknown; hash?: unknown }
    try {
      manifest = JSON.parse(head.subarray(dataStart, dataEnd).toString('utf8')) as typeof manifest
    } catch {
      throw badTar('The manifest.json of the tar is not JSON.')
    }
    if (typeof manifest.hash !== 'string' || !IMAGE_HASH.test(manifest.hash))
      throw badTar('The manifest.json of the tar names no image hash (64 hex digits).')
    return { name: typeof manifest.name === 'string' ? manifest.name : '', hash: manifest.hash }
  }
  return null
}

/**
 * Reads an image tar's first bytes up to its manifest; answers the manifest
 * and a stream of the whole tar (those bytes, then the rest of `tar`).
 */
export async function readImageTarHead(
  tar: Readable,
): Promise<{ manifest: { name: string; hash: string }; stream: Readable }> {
  const source = tar[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  const chunks: Buffer[] = []
  let head = Buffer.alloc(0)
  try {
    for (;;) {
      const manifest = imageTarManifest(head)
      if (manifest !== null) {
        const whole = async function* () {
          try {
            yield head
            for (;;) {
              const next = await source.next()
              if (next.done === true) return
              yield next.value
            }
          } finally {
            await source.return?.()
          }
        }
        return { manifest, stream: Readable.from(whole(), { objectMode: false }) }
      }
      if (head.length >= IMAGE_TAR_HEAD_BYTES_MAX)
        throw badTar(`The tar has no manifest.json within its first ${IMAGE_TAR_HEAD_BYTES_MAX} bytes.`)
      const next = await source.next()
      if (next.done === true) throw badTar('The upload ended before the manifest.json of the tar did.')
      chunks.push(next.value)
      head = Buffer.concat(chunks)
    }
  } catch (error) {
    await source.return?.()
    throw error
  }
}

export class VnodeService {
  readonly runtime: ContainerRuntime
  readonly images: ImageStore
  /** Commands run in helper processes: a fork per command would stall this node's event loop (helper-command-runner.ts). */
  readonly runner = new HelperCommandRunner()
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
    // A prepared layer per recent kind of vnode: a create then skips mkfs and two mounts.
    if (this.runtime instanceof LxcRuntime) {
      this.runtime.keepSpares()
      // Real containers mean bursts of commands: have the helpers ready before the first one.
      this.runner.start()
    }
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
      // Saving a Debian vnode reads and hashes hundreds of MB: well past the RPC default.
      { authorize: init.isMember, handlerTimeoutMs: SAVE_TIMEOUT_MS },
    )
    service.agent.start()
    return service
  }

  async stop(): Promise<void> {
    await this.agent?.stop()
    await this.transfer?.stop().catch(() => {})
    // Containers keep running; the spare layers and their mounts go with the node.
    if (this.runtime instanceof LxcRuntime) await this.runtime.close().catch(() => {})
    this.runner.close()
  }

  /** Copies an image from the first of `hosts` that serves it; the store verifies its hash on import. */
  async fetchImage(hash: string, hosts: string[]): Promise<void> {
    let lastError: unknown = null
    for (const host of hosts) {
      for (let attempt = 1; attempt <= IMAGE_FETCH_ATTEMPTS_PER_HOST; attempt++) {
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
          // A transfer that broke off (the store kept nothing) or a busy host is worth another try.
          const code = (error as { code?: unknown }).code
          const retry =
            attempt < IMAGE_FETCH_ATTEMPTS_PER_HOST &&
            typeof code === 'string' &&
            IMAGE_FETCH_RETRY_CODES.has(code)
          this.#init.logger.warn(
            { hash, from: host, attempt, error: (error as Error).message },
            retry ? 'image fetch failed, retrying' : 'image fetch failed',
          )
          if (!retry) break
          await new Promise((resolve) => setTimeout(resolve, IMAGE_FETCH_RETRY_DELAY_MS))
        }
      }
    }
    throw new Error(
      `could not fetch image ${hash.slice(0, 12)} from ${hosts.length} host(s): ${(lastError as Error | null)?.message ?? 'no host holds it'}`,
    )
  }

  /**
   * Imports an image tar into this host's store (verified against the hash
   * its manifest names) and registers it, or, when the cluster knows the
   * image already, records that this host holds it too.
   */
  async importImage(
    tar: Readable,
    image: { name?: string; owner: string; description: string; visibility: ImageVisibility },
  ): Promise<{ id: string; registered: boolean }> {
    const { manifest, stream } = await readImageTarHead(tar)
    const hash = manifest.hash
    const held = (await this.images.get(hash)) !== null
    if (held) {
      // The bytes are here already: read the upload to its end (the client is still sending) and drop it.
      for await (const _chunk of stream) {
        // dropped
      }
    } else {
      try {
        await this.images.importTar(stream, hash)
      } catch (error) {
        if (error instanceof ImageHashMismatchError)
          throw new StateError(
            'ERR_BAD_REQUEST',
            `The tree in the image tar hashes to ${error.actual}, not to ${hash} as its manifest says: the tar is damaged or was changed. Export the image again.`,
          )
        if ((error as { code?: string }).code === 'ERR_IMAGE_TOO_LARGE')
          throw new StateError('ERR_BAD_REQUEST', (error as Error).message)
        throw error
      }
    }
    if (this.#init.state.view.images[hash] !== undefined) {
      await this.#init.submit({ type: 'image.held', at: 0, hash, host: this.#init.nodeId })
      this.#init.logger.info({ hash }, 'imported an image the cluster knew already')
      return { id: hash, registered: false }
    }
    const stored = await this.images.get(hash)
    try {
      await this.#init.submit({
        type: 'image.register',
        at: 0,
        id: hash,
        name: image.name ?? manifest.name,
        owner: image.owner,
        visibility: image.visibility,
        description: image.description,
        sizeBytes: stored?.size ?? 0,
        host: this.#init.nodeId,
      })
    } catch (error) {
      if (this.#init.state.view.images[hash] !== undefined) {
        // Another host registered the same image meanwhile: this one holds it too.
        await this.#init.submit({ type: 'image.held', at: 0, hash, host: this.#init.nodeId })
        return { id: hash, registered: false }
      }
      // Unregistered bytes would only take room: nothing can use them.
      if (!held) await this.images.remove(hash).catch(() => {})
      throw error
    }
    this.#init.logger.info({ hash }, 'imported an image')
    return { id: hash, registered: true }
  }

  /** The tar of a registered image; a host that lacks its bytes fetches them from one that holds them first. */
  async exportImage(id: string): Promise<{ stream: Readable; sizeBytes: number }> {
    const image = this.#init.state.view.images[id]
    if (image === undefined)
      throw new StateError(
        'ERR_IMAGE_NOT_FOUND',
        `There is no image ${id}; \`docklet image list\` lists them.`,
      )
    if ((await this.images.get(id)) === null) {
      const holders = image.hosts.filter((host) => host !== this.#init.nodeId)
      if (holders.length === 0)
        throw new StateError(
          'ERR_IMAGE_NOT_FOUND',
          `No host holds the bytes of the image ${image.name} any more; import it again.`,
        )
      await this.fetchImage(id, holders)
      await this.#init.submit({ type: 'image.held', at: 0, hash: id, host: this.#init.nodeId })
    }
    return this.images.openTar(id)
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
