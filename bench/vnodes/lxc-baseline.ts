// The plain-LXC baseline: what starting a container of the same busybox tree
// costs with LXC's own tools and nothing of docklet around them.
//
// A base container's rootfs is the image tree itself (dir:, through a link
// in its directory), and its config
// is the one docklet renders for a vnode (renderLxcConfig: same limits, same
// init, one veth on the bench host's bridge), so the only difference left
// is docklet's own work. Each run clones it the way LXC makes a cheap copy,
// `lxc-copy -s -B overlayfs` (an overlay snapshot: the tree is the lower
// dir, the clone gets an empty upper dir), starts the clone with
// `lxc-start -d`, then runs `lxc-attach -- true` until it succeeds: the
// container's init is running and a process can enter it. The run's time
// is from the lxc-copy call to the first successful attach; the container is
// destroyed after each run (not timed).
//
// Every lxc-* command runs inside the bench host (bench-host.ts): the veth
// goes on its bridge, and LXC's command sockets are abstract unix sockets,
// which live in a network namespace.

import { spawnSync } from 'node:child_process'
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type ContainerLimits, detectHostFeatures, renderLxcConfig } from '../../runtime/index.ts'
import { type BenchHost, BRIDGE, COMMAND_TIMEOUT_MS } from './bench-host.ts'
import type { Teardown } from './teardown.ts'

/** docklet's default vnode limits (`vcluster create` without --cpu/--memory/--disk). */
export const VNODE_LIMITS: ContainerLimits = { cpuCores: 1, memoryMb: 512, diskMb: 1024 }
/** A container whose init does not answer by then counts as failed to start. */
export const READY_GIVE_UP_MS = 30_000
const BASE_NAME = 'base'
const ALL_EXIT_CODES = Array.from({ length: 256 }, (_, code) => code)

export interface StartSample {
  /** From the create/copy call until the first successful `true` inside. */
  totalMs: number
  /** The clone (lxc-copy) or create step alone; null where one command creates and starts. */
  createMs: number | null
  /** Until the start command returned (for LXD: `lxc launch`, create included). */
  startMs: number
  /** Probes of `true` it took (each one a process spawn). */
  probes: number
}

export interface LxcBaselineInit {
  host: BenchHost
  teardown: Teardown
  /** A private lxcpath (a temp dir of this run). */
  lxcpath: string
  /** The image tree: the base container's rootfs and every clone's lower dir. */
  rootfs: string
  /** Container names are `<prefix><run>`; unique per bench run. */
  namePrefix: string
}

export class LxcBaseline {
  readonly #init: LxcBaselineInit

  private constructor(init: LxcBaselineInit) {
    this.#init = init
  }

  /** Writes the base container (never started: it is only what clones are copied from). */
  static async create(init: LxcBaselineInit): Promise<LxcBaseline> {
    const dir = join(init.lxcpath, BASE_NAME)
    await mkdir(dir, { recursive: true, mode: 0o700 })
    // lxc-copy refuses a rootfs whose path does not contain the container's name; a link does.
    const rootfs = join(dir, 'rootfs')
    await symlink(init.rootfs, rootfs)
    const config = renderLxcConfig(
      {
        name: BASE_NAME,
        hostname: BASE_NAME,
        imagePath: init.rootfs,
        limits: VNODE_LIMITS,
        network: { bridge: BRIDGE },
        hosts: [],
      },
      { rootfsPath: rootfs, logPath: join(dir, 'lxc.log') },
      detectHostFeatures(),
    )
    await writeFile(join(dir, 'config'), config, { mode: 0o600 })
    return new LxcBaseline(init)
  }

  async #lxc(command: string, args: string[], okExitCodes = [0]) {
    return this.#init.host.runner.run(command, ['-P', this.#init.lxcpath, ...args], {
      timeoutMs: COMMAND_TIMEOUT_MS,
      cwd: '/',
      okExitCodes,
    })
  }

  async measureOnce(run: number): Promise<StartSample> {
    const { host, teardown, lxcpath } = this.#init
    const name = `${this.#init.namePrefix}${run}`
    const destroy = teardown.add({
      label: `destroy LXC container ${name} in ${lxcpath}`,
      run: async () => {
        await this.#lxc('lxc-stop', ['-n', name, '-k'], [0, 1, 2])
        await this.#lxc('lxc-destroy', ['-n', name], [0, 1])
      },
      runSync: () => {
        for (const args of [
          ['lxc-stop', '-P', lxcpath, '-n', name, '-k'],
          ['lxc-destroy', '-P', lxcpath, '-n', name],
        ]) {
          spawnSync('nsenter', [`--net=/run/netns/${host.netns}`, '--', ...args], {
            stdio: 'ignore',
            timeout: COMMAND_TIMEOUT_MS,
          })
        }
      },
    })
    const startedAt = performance.now()
    await this.#lxc('lxc-copy', ['-n', BASE_NAME, '-N', name, '-s', '-B', 'overlayfs'])
    const copiedAt = performance.now()
    await this.#lxc('lxc-start', ['-n', name, '-d'])
    const runningAt = performance.now()
    let probes = 0
    for (;;) {
      probes++
      const probe = await this.#lxc('lxc-attach', ['-n', name, '--', 'true'], ALL_EXIT_CODES)
      if (probe.exitCode === 0) break
      if (performance.now() - startedAt > READY_GIVE_UP_MS) {
        throw new Error(
          `LXC container ${name} did not answer lxc-attach within ${READY_GIVE_UP_MS} ms: ${probe.stderr.trim()}`,
        )
      }
    }
    const readyAt = performance.now()
    await destroy.run()
    return {
      totalMs: readyAt - startedAt,
      createMs: copiedAt - startedAt,
      startMs: runningAt - copiedAt,
      probes,
    }
  }
}
