// The host agent: converges what the replicated state says this host runs
// into real containers and vcluster networks, and reports what it observes
// back as commands. Desired state lives in Raft; actual state is read from
// the runtime every round, never assumed. Rounds are serialized and
// coalesced (a burst of applied commands costs one round), and a round that
// would change anything first passes a read barrier through the leader, so a
// replica still replaying its log after a restart never destroys a container
// a newer command created. With no leader the agent changes nothing: what
// runs keeps running. Within a round, the vcluster networks converge while
// images are fetched, and up to VNODE_STEPS_AT_ONCE containers are worked on
// at once; no container is made or started before its network is done.
// Between rounds, public images other hosts hold are copied here ahead of use.

import { statfs } from 'node:fs/promises'
import { availableParallelism, totalmem } from 'node:os'
import type { Logger } from 'pino'
import { applyOverlay, type CommandRunner, overlayNames, removeOverlay } from '../../net/index.ts'
import {
  type ContainerFile,
  type ContainerRuntime,
  type ContainerState,
  type ExecResult,
  type ImageStore,
  renderHostsFile,
  renderJupyterConfig,
} from '../../runtime/index.ts'
import type { ClusterData, ClusterState, Command } from '../state/cluster-state.ts'
import type { Resources } from '../state/scheduler.ts'
import type { Vcluster, Vnode } from '../state/vcluster-state.ts'
import {
  containerName,
  containerPrefix,
  type HostNetwork,
  hostsEntries,
  incomingOn,
  JUPYTER_PORT,
  type MeshView,
  observedOf,
  overlayFor,
  parseContainerName,
  vclustersOn,
  vnodeAction,
  vnodeSpec,
  vnodesOn,
  workspaceBaseUrl,
} from './host-plan.ts'

export const ROUND_INTERVAL_MS = 5_000
export const CAPACITY_INTERVAL_MS = 30_000
export const STOP_TIMEOUT_MS = 10_000
export const RETRY_BACKOFF_MS_MIN = 1_000
export const RETRY_BACKOFF_MS_MAX = 60_000
export const HOSTS_FILE_TIMEOUT_MS = 10_000
/** Container steps (create, start, stop, destroy, moves) run at once on one host. */
export const VNODE_STEPS_AT_ONCE = 8
/** A public image whose copy failed is not tried ahead of use again for this long. */
export const PREFETCH_RETRY_MS = 60_000
/** A public image is copied ahead of use only while the data dir keeps this many times its size free. */
export const PREFETCH_FREE_SPACE_FACTOR = 4

/** Runs fn over items, at most `limit` at a time; fn must not throw. */
async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!
      await fn(item)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

export interface MeshSource {
  view(): MeshView | null
  onChange(listener: () => void): () => void
}

export interface HostAgentInit {
  nodeId: string
  state: ClusterState
  runtime: ContainerRuntime
  images: ImageStore
  /** Commits a command (the node forwards it to the leader). */
  submit: (command: Command) => Promise<unknown>
  /** Resolves once the local replica has everything the leader had committed when it was called. */
  barrier: () => Promise<void>
  /** null: containers get no network (tests with the fake runtime and no mesh). */
  mesh: MeshSource | null
  network: (HostNetwork & { runner: CommandRunner }) | null
  /** Copies an image this host lacks from one of `hosts`; absent: such vnodes fail with a clear error. */
  fetchImage?: (hash: string, hosts: string[]) => Promise<void>
  /** Overrides what the host reports as its capacity (tests give simulated hosts small, distinct ones). */
  capacity?: Partial<Resources>
  /** Where disk capacity is measured. */
  dataDir: string
  logger: Logger
}

interface Retry {
  attempts: number
  notBeforeMs: number
}

/** Vnode 0 of a vcluster is its workspace: Jupyter starts there with the vcluster's base URL and token. */
function workspaceFiles(vcluster: Vcluster, vnode: Vnode): ContainerFile[] {
  if (vnode.index !== 0 || vcluster.secret === undefined) return []
  return [
    renderJupyterConfig({ port: JUPYTER_PORT, baseUrl: workspaceBaseUrl(vcluster), token: vcluster.secret }),
  ]
}

export class HostAgent {
  readonly #init: HostAgentInit
  readonly #log: Logger
  #running = false
  #dirty = false
  #stopped = false
  #timer: NodeJS.Timeout | null = null
  #capacityTimer: NodeJS.Timeout | null = null
  #unwatch: Array<() => void> = []
  #round: Promise<void> | null = null
  /** Per container: when it may be retried after a failure. */
  readonly #retries = new Map<string, Retry>()
  /** Per container: the /etc/hosts it was last given, to rewrite it when the vcluster changes. */
  readonly #hostsWritten = new Map<string, string>()
  /** Per VNI: the network last applied (JSON), so an unchanged one costs nothing. */
  readonly #overlays = new Map<number, string>()
  #overlaysScanned = false
  #lastCapacity = ''
  #lastReport = new Map<string, string>()

  constructor(init: HostAgentInit) {
    this.#init = init
    this.#log = init.logger.child({ component: 'agent' })
  }

  start(): void {
    this.#unwatch.push(
      this.#init.state.watch((command) => {
        // Another host saying how its vnode runs changes nothing here: in a big create those
        // reports come dozens a second, and each would cost a round (a list of every container).
        if (command?.type === 'vnode.observed' && command.host !== this.#init.nodeId) return
        this.kick()
      }),
    )
    if (this.#init.mesh !== null) this.#unwatch.push(this.#init.mesh.onChange(() => this.kick()))
    this.#timer = setInterval(() => this.kick(), ROUND_INTERVAL_MS)
    this.#capacityTimer = setInterval(() => void this.reportCapacity(), CAPACITY_INTERVAL_MS)
    void this.reportCapacity()
    this.kick()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    for (const unwatch of this.#unwatch) unwatch()
    if (this.#timer !== null) clearInterval(this.#timer)
    if (this.#capacityTimer !== null) clearInterval(this.#capacityTimer)
    await this.#round?.catch(() => {})
  }

  /** Asks for a round soon; rounds never overlap, and a burst of kicks costs one more round. */
  kick(): void {
    if (this.#stopped) return
    if (this.#running) {
      this.#dirty = true
      return
    }
    this.#running = true
    this.#round = (async () => {
      try {
        do {
          this.#dirty = false
          await this.#reconcile()
        } while (this.#dirty && !this.#stopped)
      } catch (error) {
        this.#log.warn({ error: (error as Error).message }, 'agent round failed; the next round retries')
      } finally {
        this.#running = false
      }
    })()
  }

  /** Resolves after a round that started after this call has finished (tests and CLI waits). */
  async settle(): Promise<void> {
    this.kick()
    while (this.#running) await this.#round
  }

  #capacityBusy = false

  async reportCapacity(): Promise<void> {
    if (this.#stopped || this.#init.state.view.clusterId === '' || this.#capacityBusy) return
    this.#capacityBusy = true
    try {
      await this.#reportCapacity()
    } finally {
      this.#capacityBusy = false
    }
  }

  async #reportCapacity(): Promise<void> {
    const capacity = await this.measureCapacity()
    const key = JSON.stringify(capacity)
    const host = this.#init.state.view.hosts[this.#init.nodeId]
    if (key === this.#lastCapacity && host?.capacity !== null && host !== undefined) return
    try {
      await this.#init.submit({ type: 'host.capacity', at: 0, host: this.#init.nodeId, capacity })
      this.#lastCapacity = key
    } catch (error) {
      this.#log.debug({ error: (error as Error).message }, 'capacity report failed; retrying later')
    }
  }

  async measureCapacity(): Promise<Resources> {
    const override = this.#init.capacity ?? {}
    let diskMb = override.diskMb
    if (diskMb === undefined) {
      const fs = await statfs(this.#init.dataDir)
      diskMb = Math.floor((fs.bavail * fs.bsize) / (1024 * 1024))
    }
    return {
      cpuCores: override.cpuCores ?? availableParallelism(),
      memoryMb: override.memoryMb ?? Math.floor(totalmem() / (1024 * 1024)),
      diskMb,
    }
  }

  // ---------------------------------------------------------------- rounds

  async #reconcile(): Promise<void> {
    const data = this.#init.state.view
    if (data.clusterId === '') return
    // A new cluster (or a host that just joined) learns this host's capacity at once, not in 30 s.
    if ((data.hosts[this.#init.nodeId]?.capacity ?? null) === null) void this.reportCapacity()
    const prefix = containerPrefix(data.clusterId)
    const actual = new Map<string, ContainerState>()
    for (const info of await this.#init.runtime.list())
      if (parseContainerName(prefix, info.name) !== null) actual.set(info.name, info.state)
    const mine = vnodesOn(data, this.#init.nodeId)
    const incoming = incomingOn(data, this.#init.nodeId)
    const wanted = new Set(
      [...mine, ...incoming].map(({ vcluster, vnode }) => containerName(prefix, vcluster.id, vnode.index)),
    )
    const orphans = [...actual.keys()].filter((name) => !wanted.has(name))
    const needsChange =
      orphans.length > 0 ||
      incoming.length > 0 ||
      mine.some(
        ({ vnode }) => vnode.move !== undefined && vnode.move.image === '' && vnode.desired !== 'deleted',
      ) ||
      mine.some(({ vcluster, vnode }) => {
        const name = containerName(prefix, vcluster.id, vnode.index)
        const state = actual.get(name) ?? 'absent'
        return (
          vnodeAction(vnode.desired, state).kind !== 'none' ||
          observedOf(vnode.desired, state) !== vnode.observed
        )
      })
    const roundStartedMs = performance.now()
    if (needsChange || !this.#overlaysScanned || this.#networkChanged()) {
      // Everything below acts on the state: make sure it is not behind the leader.
      try {
        await this.#init.barrier()
      } catch (error) {
        this.#log.debug({ error: (error as Error).message }, 'no leader; the agent keeps what runs')
        return
      }
    }
    const fresh = this.#init.state.view
    const barrierMs = performance.now() - roundStartedMs
    // The vcluster networks converge while images are fetched and containers are removed: a vnode
    // waits for them only right before it makes or starts its container (which needs the bridge).
    let networksMs = 0
    const networks = this.#convergeNetworks().finally(() => {
      networksMs = performance.now() - roundStartedMs - barrierMs
    })
    const networkReady: Promise<void> = networks.catch((error: unknown) => {
      throw new Error(`this host's vcluster networks could not be read: ${(error as Error).message}`)
    })
    // A failure is the round's (awaited below); the vnodes that waited for it fail on their own.
    networkReady.catch(() => {})
    const mineNow = vnodesOn(fresh, this.#init.nodeId)
    const incomingNow = incomingOn(fresh, this.#init.nodeId)
    const wantedNow = new Set(
      [...mineNow, ...incomingNow].map(({ vcluster, vnode }) =>
        containerName(prefix, vcluster.id, vnode.index),
      ),
    )
    for (const name of actual.keys()) {
      if (wantedNow.has(name)) continue
      await this.#guard(name, async () => {
        this.#log.info({ container: name }, 'removing a container the state no longer places here')
        await this.#init.runtime.destroy(name)
        this.#hostsWritten.delete(name)
      })
    }
    const report = async (command: Command | null): Promise<void> => {
      if (command === null) return
      try {
        const submittedMs = performance.now()
        await this.#init.submit(command)
        this.#log.debug(
          { report: command.type, ms: Math.round(performance.now() - submittedMs) },
          'report committed',
        )
      } catch (error) {
        this.#log.debug({ error: (error as Error).message, report: command.type }, 'report not committed')
        this.#lastReport.clear()
      }
    }
    // Containers are independent: converge several at once (each waits mostly on lxc and mount),
    // and report each as soon as it is done, so a big vcluster's first vnodes show up early.
    await forEachLimited(mineNow, VNODE_STEPS_AT_ONCE, async ({ vcluster, vnode }) => {
      const name = containerName(prefix, vcluster.id, vnode.index)
      await report(
        vnode.move !== undefined && vnode.desired !== 'deleted'
          ? await this.#moveOut(name, vcluster, vnode, actual.get(name) ?? 'absent')
          : await this.#convergeVnode(prefix, vcluster, vnode, actual.get(name) ?? 'absent', networkReady),
      )
    })
    await forEachLimited(incomingNow, VNODE_STEPS_AT_ONCE, async ({ vcluster, vnode }) => {
      const name = containerName(prefix, vcluster.id, vnode.index)
      await report(
        await this.#moveIn(prefix, name, vcluster, vnode, actual.get(name) ?? 'absent', networkReady),
      )
    })
    await networks
    if (orphans.length > 0) this.#dirty = true // networks of vclusters that left go on the next round
    this.#prefetchImages(fresh)
    if (needsChange)
      this.#log.debug(
        {
          vnodes: mineNow.length,
          barrierMs: Math.round(barrierMs),
          networksMs: Math.round(networksMs),
          ms: Math.round(performance.now() - roundStartedMs),
        },
        'agent round',
      )
  }

  #networkChanged(): boolean {
    const mesh = this.#init.mesh?.view() ?? null
    if (mesh === null || this.#init.network === null) return false
    const data = this.#init.state.view
    const want = new Map<number, string>()
    for (const vcluster of vclustersOn(data, this.#init.nodeId))
      want.set(
        vcluster.vni,
        JSON.stringify(overlayFor(data, vcluster, this.#init.nodeId, mesh, this.#init.network)),
      )
    if (want.size !== this.#overlays.size) return true
    for (const [vni, json] of want) if (this.#overlays.get(vni) !== json) return true
    return false
  }

  async #convergeNetworks(): Promise<void> {
    const mesh = this.#init.mesh?.view() ?? null
    const network = this.#init.network
    if (mesh === null || network === null) return
    const data = this.#init.state.view
    if (!this.#overlaysScanned) {
      // After a restart: find the vcluster networks this host still has, so unneeded ones are removed.
      const links = await network.runner.run('ip', ['-o', 'link', 'show', 'type', 'bridge'], {
        timeoutMs: 10_000,
      })
      for (const match of links.stdout.matchAll(/^\d+: dkb(\d+)[:@]/gm))
        if (!this.#overlays.has(Number(match[1]))) this.#overlays.set(Number(match[1]), '')
      this.#overlaysScanned = true
    }
    const desired = new Map<number, Vcluster>()
    for (const vcluster of vclustersOn(data, this.#init.nodeId)) desired.set(vcluster.vni, vcluster)
    for (const [vni, vcluster] of desired) {
      const overlay = overlayFor(data, vcluster, this.#init.nodeId, mesh, network)
      const json = JSON.stringify(overlay)
      if (this.#overlays.get(vni) === json) continue
      try {
        const ran = await applyOverlay(network.runner, overlay)
        this.#overlays.set(vni, json)
        if (ran.length > 0)
          this.#log.info({ vcluster: vcluster.id, vni, steps: ran.length }, 'vcluster network converged')
      } catch (error) {
        this.#overlays.delete(vni)
        this.#log.warn(
          { vcluster: vcluster.id, vni, error: (error as Error).message },
          'vcluster network not converged; retrying next round',
        )
      }
    }
    for (const vni of [...this.#overlays.keys()]) {
      if (desired.has(vni)) continue
      try {
        // Containers on the bridge go first (the caller destroys orphans after this; a bridge in use is kept).
        const inUse = await this.#bridgeInUse(vni)
        if (inUse) continue
        await removeOverlay(network.runner, vni)
        this.#overlays.delete(vni)
        this.#log.info({ vni }, 'vcluster network removed from this host')
      } catch (error) {
        this.#log.warn({ vni, error: (error as Error).message }, 'vcluster network not removed; retrying')
      }
    }
  }

  async #bridgeInUse(vni: number): Promise<boolean> {
    const runner = this.#init.network?.runner
    if (runner === undefined) return false
    const result = await runner.run('ip', ['-o', 'link', 'show', 'master', overlayNames(vni).bridge], {
      timeoutMs: 10_000,
      okExitCodes: [0, 1],
    })
    // The VXLAN device is the bridge's own port; anything else is a container's veth.
    return result.stdout
      .split('\n')
      .some((line) => line.trim() !== '' && !line.includes(overlayNames(vni).vxlan))
  }

  /** Runs one step for a container unless it is backing off after a failure; returns the error, if any. */
  async #guard(name: string, step: () => Promise<void>): Promise<Error | null | 'backing-off'> {
    const retry = this.#retries.get(name)
    if (retry !== undefined && Date.now() < retry.notBeforeMs) return 'backing-off'
    try {
      await step()
      this.#retries.delete(name)
      return null
    } catch (error) {
      const attempts = (retry?.attempts ?? 0) + 1
      const delay = Math.min(RETRY_BACKOFF_MS_MAX, RETRY_BACKOFF_MS_MIN * 2 ** (attempts - 1))
      this.#retries.set(name, { attempts, notBeforeMs: Date.now() + delay })
      setTimeout(() => this.kick(), delay + 10).unref()
      this.#log.warn(
        { container: name, attempts, retryInMs: delay, error: (error as Error).message },
        'container step failed',
      )
      return error as Error
    }
  }

  async #convergeVnode(
    prefix: string,
    vcluster: Vcluster,
    vnode: Vnode,
    before: ContainerState,
    networkReady: Promise<void>,
  ): Promise<Command | null> {
    const { runtime } = this.#init
    const name = containerName(prefix, vcluster.id, vnode.index)
    const action = vnodeAction(vnode.desired, before)
    let failed: Error | null | 'backing-off' = null
    if (action.kind === 'create') {
      failed = await this.#guard(name, async () => {
        const startedMs = performance.now()
        await this.#ensureImage(vnode.image)
        const imageMs = performance.now()
        await networkReady
        const networkMs = performance.now()
        const mesh = this.#init.mesh?.view() ?? null
        if (this.#init.mesh !== null && mesh === null)
          throw new Error('the mesh is not up yet, so the vcluster network cannot be attached')
        const user = this.#init.state.view.users[vcluster.owner]
        const spec = vnodeSpec({
          prefix,
          vcluster,
          vnode,
          imagePath: this.#init.images.rootfsPath(vnode.image),
          mesh: this.#init.network === null ? null : mesh,
          sshKey: user?.sshKey ?? null,
          files: workspaceFiles(vcluster, vnode),
        })
        await runtime.create(spec)
        const createdMs = performance.now()
        this.#hostsWritten.set(name, JSON.stringify(spec.hosts))
        if (action.start) await runtime.start(name)
        this.#log.info(
          {
            container: name,
            vcluster: vcluster.id,
            index: vnode.index,
            imageMs: Math.round(imageMs - startedMs),
            networkMs: Math.round(networkMs - imageMs),
            createMs: Math.round(createdMs - networkMs),
            startMs: Math.round(performance.now() - createdMs),
          },
          'vnode created',
        )
      })
    } else if (action.kind === 'start') {
      failed = await this.#guard(name, async () => {
        await networkReady
        await runtime.start(name)
      })
    } else if (action.kind === 'stop') {
      failed = await this.#guard(name, () => runtime.stop(name, { timeoutMs: STOP_TIMEOUT_MS }))
    } else if (action.kind === 'destroy') {
      failed = await this.#guard(name, async () => {
        await runtime.destroy(name)
        this.#hostsWritten.delete(name)
        this.#log.info({ container: name }, 'vnode removed')
      })
    }
    // After a step that worked, the container is where the step left it; ask the runtime only otherwise.
    const after: ContainerState =
      action.kind === 'none' || failed === 'backing-off'
        ? before
        : failed !== null
          ? await runtime.state(name)
          : action.kind === 'create'
            ? action.start
              ? 'running'
              : 'stopped'
            : action.kind === 'start'
              ? 'running'
              : action.kind === 'stop'
                ? 'stopped'
                : 'absent'
    if (after === 'running') await this.#refreshHostsFile(name, vcluster)
    if (failed === 'backing-off') return null
    if (failed !== null && vnode.desired !== 'deleted') {
      const error = `${failed.message}`.slice(0, 2_000)
      if (vnode.observed === 'error' && vnode.lastError === error) return null
      return this.#report(vcluster, vnode, 'error', error)
    }
    const observed = observedOf(vnode.desired, after)
    if (observed === vnode.observed || observed === 'none') return null
    return this.#report(vcluster, vnode, observed)
  }

  /** Source side of a move: stop the container and save its files, once. */
  async #moveOut(
    name: string,
    vcluster: Vcluster,
    vnode: Vnode,
    before: ContainerState,
  ): Promise<Command | null> {
    const move = vnode.move!
    if (move.image !== '' || before === 'absent') return null
    let image = ''
    const failed = await this.#guard(name, async () => {
      if (before === 'running') await this.#init.runtime.stop(name, { timeoutMs: STOP_TIMEOUT_MS })
      const upper = await this.#init.runtime.upperDir(name)
      const manifest = await this.#init.images.saveUpper(
        upper,
        vnode.image,
        `move-${vcluster.id}-${vnode.index}`,
      )
      image = manifest.hash
      this.#log.info({ container: name, to: move.to, image }, 'vnode saved for its move')
    })
    if (failed !== null || image === '') return null
    return {
      type: 'vnode.move-saved',
      at: 0,
      vcluster: vcluster.id,
      index: vnode.index,
      host: this.#init.nodeId,
      image,
    }
  }

  /** Target side of a move: fetch the saved files, create and start the container, then take the vnode over. */
  async #moveIn(
    prefix: string,
    name: string,
    vcluster: Vcluster,
    vnode: Vnode,
    before: ContainerState,
    networkReady: Promise<void>,
  ): Promise<Command | null> {
    const move = vnode.move!
    const failed = await this.#guard(name, async () => {
      await this.#shareFetch(move.image, async () => {
        if ((await this.#init.images.get(move.image)) !== null) return
        if (this.#init.fetchImage === undefined)
          throw new Error(`the moved files of ${name} are on ${move.from} and this host cannot fetch images`)
        await this.#init.fetchImage(move.image, [move.from])
      })
      await networkReady
      const mesh = this.#init.mesh?.view() ?? null
      if (before === 'absent') {
        const user = this.#init.state.view.users[vcluster.owner]
        await this.#init.runtime.create(
          vnodeSpec({
            prefix,
            vcluster,
            vnode,
            imagePath: this.#init.images.rootfsPath(move.image),
            mesh: this.#init.network === null ? null : mesh,
            sshKey: user?.sshKey ?? null,
            files: workspaceFiles(vcluster, vnode),
          }),
        )
      }
      if (vnode.desired === 'running' && (await this.#init.runtime.state(name)) !== 'running')
        await this.#init.runtime.start(name)
      this.#log.info({ container: name, from: move.from }, 'vnode moved here')
    })
    if (failed !== null) return null
    return { type: 'vnode.moved', at: 0, vcluster: vcluster.id, index: vnode.index, host: this.#init.nodeId }
  }

  #report(
    vcluster: Vcluster,
    vnode: Vnode,
    state: 'running' | 'stopped' | 'error' | 'deleted',
    error?: string,
  ) {
    const key = `${vcluster.id}/${vnode.index}`
    const value = `${state}:${error ?? ''}:${vnode.observedAt}`
    if (this.#lastReport.get(key) === value) return null
    this.#lastReport.set(key, value)
    return {
      type: 'vnode.observed',
      at: 0,
      vcluster: vcluster.id,
      index: vnode.index,
      state,
      host: this.#init.nodeId,
      ...(error === undefined ? {} : { error }),
    } as Command
  }

  /** Keeps a running vnode's /etc/hosts listing its vcluster's vnodes as they come and go. */
  async #refreshHostsFile(name: string, vcluster: Vcluster): Promise<void> {
    const entries = hostsEntries(vcluster)
    const json = JSON.stringify(entries)
    if (this.#hostsWritten.get(name) === json) return
    let result: ExecResult
    try {
      result = await this.#init.runtime.exec(
        name,
        ['/bin/sh', '-c', 'cat > /etc/hosts.docklet && mv /etc/hosts.docklet /etc/hosts'],
        { timeoutMs: HOSTS_FILE_TIMEOUT_MS, input: renderHostsFile(entries) },
      )
    } catch (error) {
      this.#log.debug({ container: name, error: (error as Error).message }, '/etc/hosts not refreshed yet')
      return
    }
    if (result.exitCode === 0) this.#hostsWritten.set(name, json)
  }

  /** Public images this host copied ahead of use, or found it had; never fetched again. */
  readonly #prefetched = new Set<string>()
  /** Per public image: when its copy ahead of use last failed. */
  readonly #prefetchFailedAt = new Map<string, number>()
  #prefetching = false

  /**
   * Copies one public image this host lacks, in the background: public
   * images are the ones any user may start anywhere (docklet's own busybox
   * and Debian images among them), so every host keeps them, as the original
   * docklet's shared image store made every image local, and the first
   * vcluster on a host does not wait for a transfer. A vnode that needs the
   * image meanwhile joins the same fetch. Private images still travel on
   * first use. One image at a time, and only while the data dir stays roomy.
   */
  #prefetchImages(data: ClusterData): void {
    if (this.#prefetching || this.#stopped || this.#init.fetchImage === undefined) return
    const nodeId = this.#init.nodeId
    const image = Object.values(data.images).find(
      (candidate) =>
        candidate.visibility === 'public' &&
        !candidate.hosts.includes(nodeId) &&
        candidate.hosts.length > 0 &&
        !this.#prefetched.has(candidate.id) &&
        Date.now() - (this.#prefetchFailedAt.get(candidate.id) ?? 0) >= PREFETCH_RETRY_MS,
    )
    if (image === undefined) return
    this.#prefetching = true
    void (async () => {
      try {
        const fs = await statfs(this.#init.dataDir)
        if (fs.bavail * fs.bsize < PREFETCH_FREE_SPACE_FACTOR * image.sizeBytes) {
          this.#log.debug(
            { image: image.name, sizeBytes: image.sizeBytes },
            'no room to copy a public image ahead',
          )
          this.#prefetchFailedAt.set(image.id, Date.now())
          return
        }
        await this.#ensureImage(image.id)
        this.#prefetched.add(image.id)
      } catch (error) {
        this.#prefetchFailedAt.set(image.id, Date.now())
        this.#log.debug(
          { image: image.name, error: (error as Error).message },
          'public image not copied ahead',
        )
      } finally {
        this.#prefetching = false
      }
    })()
  }

  /** Fetches in flight, by image: vnodes created at once share one fetch. */
  readonly #fetches = new Map<string, Promise<void>>()

  #shareFetch(hash: string, fetch: () => Promise<void>): Promise<void> {
    const inFlight = this.#fetches.get(hash)
    if (inFlight !== undefined) return inFlight
    const started = fetch().finally(() => this.#fetches.delete(hash))
    this.#fetches.set(hash, started)
    return started
  }

  #ensureImage(hash: string): Promise<void> {
    return this.#shareFetch(hash, () => this.#ensureImageOnce(hash))
  }

  async #ensureImageOnce(hash: string): Promise<void> {
    if ((await this.#init.images.get(hash)) !== null) return
    const image = this.#init.state.view.images[hash]
    if (image === undefined) throw new Error(`image ${hash.slice(0, 12)} is not in the cluster's image list`)
    const holders = image.hosts.filter((host) => host !== this.#init.nodeId)
    if (this.#init.fetchImage === undefined || holders.length === 0)
      throw new Error(
        `image ${image.name} (${hash.slice(0, 12)}) is not on this host and no other host holds it`,
      )
    this.#log.info({ image: image.name, hash, from: holders }, 'fetching an image from another host')
    await this.#init.fetchImage(hash, holders)
    await this.#init.submit({ type: 'image.held', at: 0, hash, host: this.#init.nodeId })
  }

  // ------------------------------------------------------- direct operations

  /** The running container of a vnode on this host, or a sentence saying why there is none. */
  containerOf(vclusterId: string, index: number): string {
    const data = this.#init.state.view
    const vcluster = data.vclusters[vclusterId]
    const vnode = vcluster?.vnodes.find((v) => v.index === index && v.desired !== 'deleted')
    if (vcluster === undefined || vnode === undefined)
      throw Object.assign(new Error(`vcluster ${vclusterId} has no vnode ${index}.`), {
        code: 'ERR_VNODE_NOT_FOUND',
      })
    if (vnode.host !== this.#init.nodeId)
      throw Object.assign(new Error(`vnode ${index} of vcluster ${vclusterId} does not run on this host.`), {
        code: 'ERR_VNODE_ELSEWHERE',
      })
    return containerName(containerPrefix(data.clusterId), vclusterId, index)
  }

  async exec(vclusterId: string, index: number, argv: string[], timeoutMs: number): Promise<ExecResult> {
    const name = this.containerOf(vclusterId, index)
    const state = await this.#init.runtime.state(name)
    if (state !== 'running')
      throw Object.assign(
        new Error(
          `vnode ${index} of vcluster ${vclusterId} is ${state === 'absent' ? 'not created yet' : 'stopped'}; start the vcluster first.`,
        ),
        { code: 'ERR_VNODE_NOT_RUNNING' },
      )
    return this.#init.runtime.exec(name, argv, { timeoutMs })
  }

  /** Stores the vnode's writable layer as an image on this host; the caller registers it. */
  async save(vclusterId: string, index: number, name: string) {
    const container = this.containerOf(vclusterId, index)
    const vnode = this.#init.state.view.vclusters[vclusterId]!.vnodes.find((v) => v.index === index)!
    const upper = await this.#init.runtime.upperDir(container)
    return this.#init.images.saveUpper(upper, vnode.image, name)
  }
}
