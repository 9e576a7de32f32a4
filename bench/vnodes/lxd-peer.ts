// The LXD peer: Debian 12's LXD 5.0 (package lxd) launching the same busybox
// tree as a local image.
//
// Nothing of the machine's own LXD setup is used or changed: the daemon runs
// with a private LXD_DIR in a temp dir (database, storage pool, image,
// containers all below it), the client with a private LXD_CONF, and the
// daemon itself inside the bench host (bench-host.ts), so the one NIC of its
// containers goes on that host's bridge and nothing it tries can reach the
// network (no remote image server is ever asked: the image is imported from
// tarballs made here). Settings come from a preseed rather than
// `lxd init --auto`, which would create lxdbr0 with NAT on the real host:
// a `dir` storage pool and a default profile with the root disk and one
// bridged NIC. Containers are privileged (security.privileged), as docklet's
// and the baseline's LXC containers are (root, no id map), and get the same
// cpu and memory limits.
//
// The package is installed with apt when it is missing and left installed
// afterwards (this file only removes what it made: containers, daemon, its
// temp dirs). Each run: `lxc launch` of the image, then `lxc exec -- true`
// until it succeeds; the time is from the launch call to that success. The
// container is deleted after each run (not timed).

import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { CommandRunner } from '../../runtime/command-runner.ts'
import { type BenchHost, BRIDGE, COMMAND_TIMEOUT_MS } from './bench-host.ts'
import type { StartSample } from './lxc-baseline.ts'
import { READY_GIVE_UP_MS, VNODE_LIMITS } from './lxc-baseline.ts'
import type { Teardown } from './teardown.ts'

export const LXD_PACKAGE = 'lxd'
export const APT_INSTALL_TIMEOUT_MS = 15 * 60_000
export const LXD_READY_TIMEOUT_S = 30
const IMAGE_ALIAS = 'docklet-busybox'
const STORAGE_POOL = 'bench'
const ALL_EXIT_CODES = Array.from({ length: 256 }, (_, code) => code)

/** LXD cannot be measured here; the message says why, as the bench's lxd_reason. */
export class LxdUnavailableError extends Error {
  readonly code = 'ERR_LXD_UNAVAILABLE'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'LxdUnavailableError'
  }
}

/** Installs Debian's lxd package when the lxd command is missing (unless `install` is false). */
export async function ensureLxdInstalled(
  root: CommandRunner,
  options: { install: boolean; log: (line: string) => void },
): Promise<string> {
  if (!existsSync('/usr/bin/lxd')) {
    if (!options.install) {
      throw new LxdUnavailableError(
        'LXD is not installed and --no-install was given; install it with `apt-get install -y --no-install-recommends lxd`.',
      )
    }
    options.log('installing the Debian package lxd (apt-get install --no-install-recommends lxd)')
    try {
      await root.run('apt-get', ['install', '-y', '-q', '--no-install-recommends', LXD_PACKAGE], {
        timeoutMs: APT_INSTALL_TIMEOUT_MS,
        env: { DEBIAN_FRONTEND: 'noninteractive' },
      })
    } catch (error) {
      throw new LxdUnavailableError(`Installing the Debian package lxd failed: ${(error as Error).message}`, {
        cause: error,
      })
    }
  }
  const version = await root.run('lxd', ['--version'], { timeoutMs: COMMAND_TIMEOUT_MS })
  return version.stdout.trim()
}

/** The preseed `lxd init` reads: storage and the default profile, no networks, nothing listening on TCP. */
export function lxdPreseed(): string {
  return `config: {}
networks: []
storage_pools:
- name: ${STORAGE_POOL}
  driver: dir
profiles:
- name: default
  config:
    security.privileged: "true"
    limits.cpu.allowance: ${Math.round(VNODE_LIMITS.cpuCores * 100)}ms/100ms
    limits.memory: ${VNODE_LIMITS.memoryMb}MiB
  devices:
    root:
      path: /
      pool: ${STORAGE_POOL}
      type: disk
    eth0:
      name: eth0
      nictype: bridged
      parent: ${BRIDGE}
      type: nic
`
}

export interface LxdPeerInit {
  host: BenchHost
  teardown: Teardown
  /** Runs commands in the root namespaces (the client reaches the daemon over its unix socket). */
  root: CommandRunner
  /** A temp dir of this run: LXD_DIR, LXD_CONF and the image tarballs go below it. */
  dir: string
  /** The busybox tree to import as the image. */
  rootfs: string
  /** Container names are `<prefix><run>`. */
  namePrefix: string
  log: (line: string) => void
}

export class LxdPeer {
  readonly #init: LxdPeerInit
  readonly #env: Record<string, string>

  private constructor(init: LxdPeerInit, env: Record<string, string>) {
    this.#init = init
    this.#env = env
  }

  /** Starts a private LXD daemon, initialises it and imports the image; throws LxdUnavailableError. */
  static async start(init: LxdPeerInit): Promise<LxdPeer> {
    const { dir, root } = init
    const lxdDir = join(dir, 'lxd')
    const env = { LXD_DIR: lxdDir, LXD_CONF: join(dir, 'client') }
    await mkdir(lxdDir, { recursive: true, mode: 0o711 })
    await mkdir(env.LXD_CONF, { recursive: true, mode: 0o700 })
    const daemon = init.host.spawn(
      'the LXD daemon',
      'lxd',
      ['--group', 'root', '--logfile', join(dir, 'lxd.log')],
      env,
    )
    const peer = new LxdPeer(init, env)
    try {
      await root.run('lxd', ['waitready', '--timeout', String(LXD_READY_TIMEOUT_S)], {
        timeoutMs: (LXD_READY_TIMEOUT_S + 10) * 1000,
        env,
      })
      await root.run('lxd', ['init', '--preseed'], {
        timeoutMs: COMMAND_TIMEOUT_MS,
        env,
        input: lxdPreseed(),
      })
      await peer.#importImage()
    } catch (error) {
      const why = daemon.isRunning() ? '' : ` The daemon exited: ${daemon.outputTail().slice(-600)}`
      throw new LxdUnavailableError(`LXD did not come up here: ${(error as Error).message}${why}`, {
        cause: error,
      })
    }
    return peer
  }

  async #importImage(): Promise<void> {
    const { dir, rootfs, root } = this.#init
    const meta = join(dir, 'image-meta')
    await mkdir(meta)
    const metadata = `architecture: ${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}
creation_date: ${Math.floor(Date.now() / 1000)}
properties:
  description: docklet busybox (bench:vnodes)
  os: busybox
`
    await writeFile(join(meta, 'metadata.yaml'), metadata)
    const metaTar = join(dir, 'meta.tar')
    const rootfsTar = join(dir, 'rootfs.tar')
    const tar = (args: string[]) => root.run('tar', args, { timeoutMs: COMMAND_TIMEOUT_MS })
    // Uncompressed: LXD's dir pool unpacks the image for every container, so gzip would only slow it down.
    await tar(['-C', meta, '-cf', metaTar, 'metadata.yaml'])
    await tar(['-C', rootfs, '--numeric-owner', '-cf', rootfsTar, '.'])
    await this.#lxcClient(['image', 'import', metaTar, rootfsTar, '--alias', IMAGE_ALIAS])
  }

  #lxcClient(args: string[], okExitCodes = [0]) {
    return this.#init.root.run('lxc', args, { timeoutMs: COMMAND_TIMEOUT_MS, env: this.#env, okExitCodes })
  }

  async measureOnce(run: number): Promise<StartSample> {
    const name = `${this.#init.namePrefix}${run}`
    const remove = this.#init.teardown.add({
      label: `delete LXD container ${name}`,
      run: async () => {
        await this.#lxcClient(['delete', '--force', name], [0, 1])
      },
      runSync: () => {
        spawnSync('lxc', ['delete', '--force', name], {
          stdio: 'ignore',
          timeout: COMMAND_TIMEOUT_MS,
          env: { ...process.env, ...this.#env },
        })
      },
    })
    const startedAt = performance.now()
    await this.#lxcClient(['launch', IMAGE_ALIAS, name, '--quiet'])
    const launchedAt = performance.now()
    let probes = 0
    for (;;) {
      probes++
      const probe = await this.#lxcClient(['exec', name, '--', 'true'], ALL_EXIT_CODES)
      if (probe.exitCode === 0) break
      if (performance.now() - startedAt > READY_GIVE_UP_MS) {
        throw new Error(
          `LXD container ${name} did not answer lxc exec within ${READY_GIVE_UP_MS} ms: ${probe.stderr.trim()}`,
        )
      }
    }
    const readyAt = performance.now()
    await remove.run()
    // lxc launch creates and starts in one call; its create part is not visible from outside.
    return { totalMs: readyAt - startedAt, createMs: null, startMs: launchedAt - startedAt, probes }
  }
}
