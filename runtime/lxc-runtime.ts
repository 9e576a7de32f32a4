// The real driver: LXC system containers driven through lxc-* commands.
//
// Everything of a container lives under <lxcpath>/<name>/, and every lxc-*
// call gets `-P <lxcpath>`, so several simulated hosts on one machine keep
// apart (only cgroup names are machine-wide: container names must be unique
// across them, which the allocation state guarantees).
//
//   config        LXC config, rendered by lxc-config.ts
//   docklet.json  what was asked for; written last, so its presence marks a
//                 complete container (a dir without it is a crashed create)
//   disk.img      sparse ext4 file of diskMb, loop-mounted at layer/: the
//                 size-limited writable layer (a write beyond it is ENOSPC
//                 inside the container; survives stop/start and reboots,
//                 unlike a tmpfs, and costs no RAM)
//   layer/upper, layer/work   the overlay's upper and work dirs
//   rootfs/       overlay mount: lower = image (read-only), upper = layer/upper
//   lxc.log       LXC's own log; its tail explains a failed start
//
// With keepSpares() (the node turns it on), <lxcpath>/.spare/ holds one
// prepared layer per kind of container made recently (image × disk size):
// disk.img formatted, layer/ mounted, rootfs/ an overlay over the image. It
// is made while the runtime is idle, and a create of that kind renames it
// into place instead of running mkfs and two mounts, the slowest part of a
// create. lxc-ls and list() ignore it (no config, no docklet.json).
//
// We mount the overlay ourselves rather than with LXC's `overlay:` rootfs so
// that its options are ours: redirect_dir, metacopy and index off keep the
// upper layer a plain tree plus whiteouts, which is what an image save reads.
// Containers are started with `lxc-start -d`: the LXC monitor is reparented to
// init, so they keep running when the node process dies, and a new LxcRuntime
// over the same lxcpath finds them (list/state).

import { existsSync, readFileSync, type Stats } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm, stat, statfs, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { CommandRunner } from './command-runner.ts'
import {
  assertContainerName,
  type ContainerInfo,
  type ContainerMetrics,
  type ContainerRuntime,
  type ContainerSpec,
  type ContainerState,
  type ExecOptions,
  type ExecResult,
  renderHostsFile,
  sshKeyFileName,
  validateContainerSpec,
} from './container-runtime.ts'
import {
  BridgeNotFoundError,
  ContainerExistsError,
  ContainerNotFoundError,
  ContainerNotRunningError,
  ContainerStartError,
  ImageNotFoundError,
  InvalidSpecError,
} from './errors.ts'
import { type LxcHostFeatures, renderLxcConfig } from './lxc-config.ts'
import { isMounted, MOUNT_TIMEOUT_MS, mountsUnder, unmountAll } from './mounts.ts'
import { Revert } from './revert.ts'
import { ensureDirInRoot, writeFileInRoot } from './root-files.ts'

export const LXC_COMMAND_TIMEOUT_MS = 30_000
export const MKFS_TIMEOUT_MS = 120_000
/** The LXC log is cut back to nothing before a start once it grows past this. */
export const LXC_LOG_BYTES_MAX = 1024 * 1024
/** Lines of the LXC log quoted in a start error. */
export const LOG_TAIL_LINES = 8
/** A clean environment for exec: nothing of the node's leaks in. */
export const EXEC_ENV: Readonly<Record<string, string>> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
}
const ALL_EXIT_CODES = Array.from({ length: 256 }, (_, code) => code)
/** Kinds of container (image × disk size) a spare layer is kept for; the most recently created win. */
export const SPARE_KINDS_MAX = 2
/** Spares are made once no container operation has run for this long, so they never slow one down. */
export const SPARE_IDLE_MS = 250
/** Where spares live, inside lxcpath (so a rename moves one into place); not a valid container name. */
const SPARE_DIR = '.spare'

/** The files of one container (or spare) directory. */
interface Layout {
  dir: string
  config: string
  record: string
  disk: string
  layer: string
  upper: string
  work: string
  rootfs: string
  log: string
}

function layoutOf(dir: string): Layout {
  return {
    dir,
    config: join(dir, 'config'),
    record: join(dir, 'docklet.json'),
    disk: join(dir, 'disk.img'),
    layer: join(dir, 'layer'),
    upper: join(dir, 'layer', 'upper'),
    work: join(dir, 'layer', 'work'),
    rootfs: join(dir, 'rootfs'),
    log: join(dir, 'lxc.log'),
  }
}

/** What a container needs that does not depend on its name: made ahead by keepSpares(). */
interface SpareKind {
  imagePath: string
  diskMb: number
}

interface Spare extends SpareKind {
  dir: string
  /** The image directory it overlays, so a spare over a since replaced directory is never used. */
  imageDev: number
  imageIno: number
}

const kindKey = (kind: SpareKind): string => `${kind.diskMb}:${kind.imagePath}`

/** The options of a container's overlay: a plain upper tree plus whiteouts (what an image save reads). */
function overlayOptions(p: Layout, imagePath: string): string {
  return [
    `lowerdir=${imagePath}`,
    `upperdir=${p.upper}`,
    `workdir=${p.work}`,
    'redirect_dir=off',
    'index=off',
    'metacopy=off',
    'xino=off',
  ].join(',')
}

/**
 * An fstab with the layer's two mounts: disk.img (loop) at layer/, then the
 * overlay at rootfs/. null when a path holds whitespace or a backslash,
 * which fstab would need escaped (the caller then mounts one by one).
 */
function renderLayersFstab(p: Layout, imagePath: string, source: string): string | null {
  const options = overlayOptions(p, imagePath)
  const fields = [p.disk, p.layer, p.rootfs, source, options]
  if (fields.some((field) => /[\s\\#]/.test(field))) return null
  return `${p.disk} ${p.layer} ext4 loop 0 0\n${source} ${p.rootfs} overlay ${options} 0 0\n`
}

/** What docklet.json holds. */
interface ContainerRecord {
  name: string
  hostname: string
  imagePath: string
  limits: ContainerSpec['limits']
  bridge: string | null
}

export interface LxcRuntimeInit {
  /** Directory holding every container of this host (created if missing). */
  lxcpath: string
  runner: CommandRunner
  /** Override what is detected from /sys (tests, unusual hosts). */
  hostFeatures?: Partial<LxcHostFeatures>
}

export function detectHostFeatures(): LxcHostFeatures {
  const apparmorEnabled = (() => {
    try {
      return readFileSync('/sys/module/apparmor/parameters/enabled', 'utf8').trim() === 'Y'
    } catch {
      return false
    }
  })()
  return {
    cgroupVersion: existsSync('/sys/fs/cgroup/cgroup.controllers') ? 2 : 1,
    memswAvailable: existsSync('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes'),
    apparmorAvailable: apparmorEnabled && existsSync('/sys/kernel/security/apparmor'),
  }
}

export class LxcRuntime implements ContainerRuntime {
  readonly lxcpath: string
  readonly #runner: CommandRunner
  readonly #features: LxcHostFeatures
  /** One operation at a time per container: the agent may retry while a start is still running. */
  readonly #locks = new Map<string, Promise<unknown>>()
  /** Created by this process and not started since: known stopped, so start() skips asking LXC. */
  readonly #freshlyCreated = new Set<string>()
  /** create/start/stop/destroy calls in progress; spares are made only at 0. */
  #busy = 0
  #sparesOn = false
  #closed = false
  /** Kinds to keep a spare for, most recent last (at most SPARE_KINDS_MAX). */
  #spareKinds: SpareKind[] = []
  /** Spares ready to be taken, by kindKey. */
  readonly #spares = new Map<string, Spare>()
  /** Spares that cannot be used (their image changed): removed by the next spare round. */
  #spareTrash: Spare[] = []
  #spareSeq = 0
  #spareSwept = false
  #spareTimer: NodeJS.Timeout | null = null
  #spareRound: Promise<void> | null = null
  /** mke2fs before 1.47 lacks assume_storage_prezeroed; false once one said so. */
  #mkfsPrezeroed = true

  constructor(init: LxcRuntimeInit) {
    if (!init.lxcpath.startsWith('/') || /[,:\n]/.test(init.lxcpath)) {
      throw new InvalidSpecError(`lxcpath "${init.lxcpath}" must be an absolute path without ',' or ':'.`)
    }
    this.lxcpath = init.lxcpath.replace(/\/+$/, '')
    this.#runner = init.runner
    this.#features = { ...detectHostFeatures(), ...init.hostFeatures }
  }

  #dir(name: string): string {
    return join(this.lxcpath, name)
  }

  #paths(name: string): Layout {
    return layoutOf(this.#dir(name))
  }

  async #serialize<T>(name: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(name) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(operation)
    this.#locks.set(name, next)
    this.#busy += 1
    try {
      return await next
    } finally {
      if (this.#locks.get(name) === next) this.#locks.delete(name)
      this.#busy -= 1
      if (this.#busy === 0) this.#scheduleSpares()
    }
  }

  async #record(name: string): Promise<ContainerRecord | null> {
    try {
      return JSON.parse(await readFile(this.#paths(name).record, 'utf8')) as ContainerRecord
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw error
    }
  }

  async #requireRecord(name: string): Promise<ContainerRecord> {
    assertContainerName(name)
    const record = await this.#record(name)
    if (record === null) throw new ContainerNotFoundError(name)
    return record
  }

  async #lxcState(name: string): Promise<ContainerState> {
    const result = await this.#runner.run('lxc-info', ['-P', this.lxcpath, '-n', name, '-s', '-H'], {
      timeoutMs: LXC_COMMAND_TIMEOUT_MS,
      okExitCodes: [0, 1],
    })
    if (result.exitCode !== 0) return 'stopped'
    // STARTING, STOPPING, FROZEN…: processes exist, so it counts as running.
    return result.stdout.trim() === 'STOPPED' ? 'stopped' : 'running'
  }

  async #mountLayers(name: string, imagePath: string): Promise<void> {
    const p = this.#paths(name)
    if (!(await isMounted(p.layer))) {
      await this.#runner.run('mount', ['-t', 'ext4', '-o', 'loop', p.disk, p.layer], {
        timeoutMs: MOUNT_TIMEOUT_MS,
      })
    }
    if (!(await isMounted(p.rootfs))) await this.#mountOverlay(p, imagePath, `docklet-${name}`)
  }

  async #mountOverlay(p: Layout, imagePath: string, source: string): Promise<void> {
    await this.#runner.run('mount', ['-t', 'overlay', '-o', overlayOptions(p, imagePath), source, p.rootfs], {
      timeoutMs: MOUNT_TIMEOUT_MS,
    })
  }

  /**
   * Makes p.dir with a formatted disk.img mounted at layer/ and rootfs/ an
   * overlay of the image over layer/upper, registering the undo steps in
   * `revert` as it goes.
   */
  async #makeLayers(p: Layout, kind: SpareKind, source: string, revert: Revert): Promise<void> {
    await mkdir(p.dir, { mode: 0o700 })
    revert.add('remove the container directory', () => rm(p.dir, { recursive: true, force: true }))
    await writeFile(p.disk, '')
    await truncate(p.disk, kind.diskMb * 1024 * 1024)
    // Two commands, not three: mkfs puts upper/ and work/ on the new file system, and one
    // `mount -a` over a two-line fstab makes both mounts. Each command is a process start,
    // which on a host making dozens of containers at once costs more than the mount itself.
    const skeleton = join(p.dir, 'skeleton')
    await mkdir(skeleton, { mode: 0o755 })
    await mkdir(join(skeleton, 'upper'), { mode: 0o755 })
    await mkdir(join(skeleton, 'work'), { mode: 0o700 })
    await this.#mkfs(p.disk, skeleton)
    await rm(skeleton, { recursive: true, force: true })
    await mkdir(p.layer)
    await mkdir(p.rootfs)
    revert.add('unmount the layers', async () => {
      await unmountAll(this.#runner, p.rootfs)
      await unmountAll(this.#runner, p.layer)
    })
    const fstab = renderLayersFstab(p, kind.imagePath, source)
    if (fstab === null) {
      await this.#runner.run('mount', ['-t', 'ext4', '-o', 'loop', p.disk, p.layer], {
        timeoutMs: MOUNT_TIMEOUT_MS,
      })
      await this.#mountOverlay(p, kind.imagePath, source)
      return
    }
    const fstabPath = join(p.dir, 'layers.fstab')
    await writeFile(fstabPath, fstab, { mode: 0o600 })
    // -T: this file instead of /etc/fstab; entries are mounted in order, the loop file first.
    await this.#runner.run('mount', ['-a', '-T', fstabPath], { timeoutMs: MOUNT_TIMEOUT_MS })
    await rm(fstabPath, { force: true })
  }

  /** Formats `disk` as ext4 holding a copy of `skeleton` (the layer's upper/ and work/). */
  async #mkfs(disk: string, skeleton: string): Promise<void> {
    // -m 0: no blocks reserved for root, since root in the container is who writes.
    const args = ['-q', '-F', '-m', '0', '-L', 'docklet', '-d', skeleton]
    if (this.#mkfsPrezeroed) {
      // The file was just truncated, so it reads as zeros: mke2fs need not write
      // the journal and inode tables (33 MB for 1 GB), nor the kernel zero them
      // in the background after the mount (ext4lazyinit).
      try {
        await this.#runner.run('mkfs.ext4', [...args, '-E', 'assume_storage_prezeroed=1', disk], {
          timeoutMs: MKFS_TIMEOUT_MS,
        })
        return
      } catch (error) {
        const said = `${(error as { stderr?: string }).stderr ?? ''} ${(error as Error).message}`
        if (!/bad option/i.test(said)) throw error
        this.#mkfsPrezeroed = false
      }
    }
    await this.#runner.run('mkfs.ext4', [...args, disk], { timeoutMs: MKFS_TIMEOUT_MS })
  }

  async #unmountAndRemove(name: string): Promise<void> {
    const p = this.#paths(name)
    for (const point of await mountsUnder(p.dir)) await unmountAll(this.#runner, point)
    // A crash between attaching the loop device and mounting it leaves the device attached.
    if (existsSync(p.disk)) {
      const attached = await this.#runner.run('losetup', ['-j', p.disk], { timeoutMs: MOUNT_TIMEOUT_MS })
      for (const line of attached.stdout.split('\n')) {
        const device = line.split(':')[0]
        if (device?.startsWith('/dev/loop')) {
          await this.#runner.run('losetup', ['-d', device], { timeoutMs: MOUNT_TIMEOUT_MS })
        }
      }
    }
    await rm(p.dir, { recursive: true, force: true })
  }

  async create(spec: ContainerSpec): Promise<void> {
    validateContainerSpec(spec)
    if (/,/.test(spec.imagePath))
      throw new InvalidSpecError(`Image path "${spec.imagePath}" must not contain ','.`)
    return this.#serialize(spec.name, async () => {
      const p = this.#paths(spec.name)
      if (existsSync(p.dir)) {
        if ((await this.#record(spec.name)) !== null) throw new ContainerExistsError(spec.name)
        await this.#unmountAndRemove(spec.name) // leftover of a create that crashed half-way
      }
      const image = await stat(spec.imagePath).catch(() => null)
      if (image === null || !image.isDirectory()) throw new ImageNotFoundError(`at ${spec.imagePath}`)
      const bridge = spec.network?.bridge
      if (bridge !== undefined && !existsSync(`/sys/class/net/${bridge}/bridge`))
        throw new BridgeNotFoundError(bridge)

      const kind: SpareKind = { imagePath: spec.imagePath, diskMb: spec.limits.diskMb }
      const revert = new Revert()
      try {
        await mkdir(this.lxcpath, { recursive: true })
        if (await this.#adoptSpare(kind, image, p.dir)) {
          revert.add('remove the container directory', () => rm(p.dir, { recursive: true, force: true }))
          revert.add('unmount the layers', async () => {
            await unmountAll(this.#runner, p.rootfs)
            await unmountAll(this.#runner, p.layer)
          })
        } else {
          await this.#makeLayers(p, kind, `docklet-${spec.name}`, revert)
        }
        this.#wantSpare(kind)
        await this.#writeGuestFiles(spec, p.rootfs)
        await writeFile(
          p.config,
          renderLxcConfig(spec, { rootfsPath: p.rootfs, logPath: p.log }, this.#features),
          { mode: 0o600 },
        )
        const record: ContainerRecord = {
          name: spec.name,
          hostname: spec.hostname,
          imagePath: spec.imagePath,
          limits: spec.limits,
          bridge: bridge ?? null,
        }
        await writeFile(`${p.record}.tmp`, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 })
        await rename(`${p.record}.tmp`, p.record)
        revert.success()
        this.#freshlyCreated.add(spec.name)
      } catch (error) {
        await revert.fail(`Creating container ${spec.name}`, error)
      }
    })
  }

  // ------------------------------------------------------------ spares

  /**
   * From now on, keeps a prepared layer ready for the kinds of container
   * created most recently (see the header). Spares a killed process left are
   * removed first. Off by default: they hold a loop device and two mounts
   * each, which a caller must know to expect (close() removes them).
   */
  keepSpares(): void {
    if (this.#closed) return
    this.#sparesOn = true
    this.#scheduleSpares()
  }

  /** Stops making spares and removes every one, with their mounts; containers are left as they are. */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#spareTimer !== null) clearTimeout(this.#spareTimer)
    this.#spareTimer = null
    await this.#spareRound
    if (!this.#sparesOn) return
    this.#spares.clear()
    this.#spareTrash = []
    await this.#sweepSpares()
  }

  /** Moves a ready spare of `kind` to `dir`; false when there is none (the caller makes the layers). */
  async #adoptSpare(kind: SpareKind, image: Stats, dir: string): Promise<boolean> {
    const key = kindKey(kind)
    const spare = this.#spares.get(key)
    if (spare === undefined) return false
    this.#spares.delete(key)
    if (spare.imageDev !== image.dev || spare.imageIno !== image.ino) {
      this.#spareTrash.push(spare)
      return false
    }
    try {
      await rename(spare.dir, dir)
      return true
    } catch {
      this.#spareTrash.push(spare)
      return false
    }
  }

  #wantSpare(kind: SpareKind): void {
    if (!this.#sparesOn) return
    const key = kindKey(kind)
    this.#spareKinds = [...this.#spareKinds.filter((wanted) => kindKey(wanted) !== key), kind]
    for (const dropped of this.#spareKinds.splice(
      0,
      Math.max(0, this.#spareKinds.length - SPARE_KINDS_MAX),
    )) {
      const spare = this.#spares.get(kindKey(dropped))
      this.#spares.delete(kindKey(dropped))
      if (spare !== undefined) this.#spareTrash.push(spare)
    }
  }

  #scheduleSpares(): void {
    if (!this.#sparesOn || this.#closed) return
    if (this.#spareTimer !== null) clearTimeout(this.#spareTimer)
    this.#spareTimer = setTimeout(() => {
      this.#spareTimer = null
      if (this.#spareRound === null)
        this.#spareRound = this.#spareRoundOnce().finally(() => (this.#spareRound = null))
    }, SPARE_IDLE_MS)
    this.#spareTimer.unref()
  }

  /** Removes unusable spares, then makes the missing ones while nothing else runs. Never throws. */
  async #spareRoundOnce(): Promise<void> {
    try {
      if (!this.#spareSwept) {
        await this.#sweepSpares()
        this.#spareSwept = true
      }
      for (const spare of this.#spareTrash.splice(0)) await this.#removeSpare(spare)
      for (const kind of [...this.#spareKinds].reverse()) {
        if (this.#closed || this.#busy > 0) return
        if (this.#spares.has(kindKey(kind))) continue
        const image = await stat(kind.imagePath).catch(() => null)
        if (image === null || !image.isDirectory()) continue
        const spare: Spare = {
          ...kind,
          dir: join(this.lxcpath, SPARE_DIR, `${++this.#spareSeq}`),
          imageDev: image.dev,
          imageIno: image.ino,
        }
        const revert = new Revert()
        try {
          await mkdir(join(this.lxcpath, SPARE_DIR), { recursive: true, mode: 0o700 })
          await this.#makeLayers(layoutOf(spare.dir), kind, 'docklet-spare', revert)
          revert.success()
        } catch (error) {
          // Only a head start is lost: a create makes its own layers and reports its own errors.
          await revert.fail('Preparing a spare layer', error).catch(() => {})
          return
        }
        const stillWanted = this.#spareKinds.some((wanted) => kindKey(wanted) === kindKey(kind))
        if (this.#closed || !stillWanted) await this.#removeSpare(spare)
        else this.#spares.set(kindKey(kind), spare)
      }
    } catch {
      // As above: spares are an optimization; the next idle moment tries again.
    }
  }

  async #removeSpare(spare: Spare): Promise<void> {
    const p = layoutOf(spare.dir)
    await unmountAll(this.#runner, p.rootfs)
    await unmountAll(this.#runner, p.layer)
    await rm(p.dir, { recursive: true, force: true })
  }

  /** Unmounts and removes everything under .spare/, whoever made it. */
  async #sweepSpares(): Promise<void> {
    const root = join(this.lxcpath, SPARE_DIR)
    for (const point of await mountsUnder(root)) await unmountAll(this.#runner, point)
    await rm(root, { recursive: true, force: true })
  }

  /** Files the container gets at create: written through the overlay, so they land in the upper layer. */
  async #writeGuestFiles(spec: ContainerSpec, rootfs: string): Promise<void> {
    await writeFileInRoot(rootfs, '/etc/hostname', `${spec.hostname}\n`, { mode: 0o644 })
    await writeFileInRoot(rootfs, '/etc/hosts', renderHostsFile(spec.hosts), { mode: 0o644 })
    if (spec.sshKeys !== undefined) {
      await ensureDirInRoot(rootfs, '/root', { mode: 0o700 })
      await ensureDirInRoot(rootfs, '/root/.ssh', { mode: 0o700 })
      const base = sshKeyFileName(spec.sshKeys.publicKey)
      const publicKey = spec.sshKeys.publicKey.endsWith('\n')
        ? spec.sshKeys.publicKey
        : `${spec.sshKeys.publicKey}\n`
      const privateKey = spec.sshKeys.privateKey.endsWith('\n')
        ? spec.sshKeys.privateKey
        : `${spec.sshKeys.privateKey}\n`
      await writeFileInRoot(rootfs, `/root/.ssh/${base}`, privateKey, { mode: 0o600 })
      await writeFileInRoot(rootfs, `/root/.ssh/${base}.pub`, publicKey, { mode: 0o644 })
      await writeFileInRoot(rootfs, '/root/.ssh/authorized_keys', publicKey, { mode: 0o600 })
    }
    for (const file of spec.files ?? []) {
      await writeFileInRoot(rootfs, file.path, file.content, { mode: file.mode })
    }
  }

  async start(name: string): Promise<void> {
    const record = await this.#requireRecord(name)
    return this.#serialize(name, async () => {
      const known = this.#freshlyCreated.delete(name)
      if (!known && (await this.#lxcState(name)) === 'running') return
      const p = this.#paths(name)
      if (record.bridge !== null && !existsSync(`/sys/class/net/${record.bridge}/bridge`)) {
        throw new BridgeNotFoundError(record.bridge)
      }
      // After a host reboot the mounts are gone; the layer itself is on disk.
      await this.#mountLayers(name, record.imagePath)
      const log = await stat(p.log).catch(() => null)
      if (log !== null && log.size > LXC_LOG_BYTES_MAX) await truncate(p.log, 0)
      try {
        // With -d, lxc-start returns once the container reached RUNNING (or failed): no lxc-wait needed.
        await this.#runner.run('lxc-start', ['-P', this.lxcpath, '-n', name, '-d'], {
          timeoutMs: LXC_COMMAND_TIMEOUT_MS,
          cwd: '/',
        })
      } catch (error) {
        throw new ContainerStartError(name, await this.#logTail(name), { cause: error })
      }
    })
  }

  async #logTail(name: string): Promise<string> {
    try {
      const text = await readFile(this.#paths(name).log, 'utf8')
      const lines = text
        .trim()
        .split('\n')
        .filter((line) => /ERROR|WARN/.test(line))
      const tail = lines.slice(-LOG_TAIL_LINES).join(' | ')
      return tail === '' ? 'lxc-start failed without logging why' : tail
    } catch {
      return 'lxc-start failed and left no log'
    }
  }

  async stop(name: string, options: { timeoutMs: number }): Promise<void> {
    await this.#requireRecord(name)
    return this.#serialize(name, async () => {
      if ((await this.#lxcState(name)) === 'stopped') return
      const seconds = Math.max(1, Math.ceil(options.timeoutMs / 1000))
      // lxc-stop asks init to halt and kills the container after -t seconds.
      // Exit 2: it had already stopped.
      await this.#runner.run('lxc-stop', ['-P', this.lxcpath, '-n', name, '-t', String(seconds)], {
        timeoutMs: seconds * 1000 + LXC_COMMAND_TIMEOUT_MS,
        okExitCodes: [0, 2],
      })
    })
  }

  async destroy(name: string): Promise<void> {
    assertContainerName(name)
    return this.#serialize(name, async () => {
      this.#freshlyCreated.delete(name)
      const p = this.#paths(name)
      if (existsSync(p.config) && (await this.#lxcState(name)) === 'running') {
        await this.#runner.run('lxc-stop', ['-P', this.lxcpath, '-n', name, '-k'], {
          timeoutMs: LXC_COMMAND_TIMEOUT_MS,
          okExitCodes: [0, 2],
        })
      }
      // Not lxc-destroy: it would delete through our rootfs mount. Removing
      // the directory is all that destroying a container means to LXC.
      await this.#unmountAndRemove(name)
    })
  }

  async exec(name: string, argv: readonly string[], options: ExecOptions): Promise<ExecResult> {
    await this.#requireRecord(name)
    if (argv.length === 0) throw new InvalidSpecError('exec needs a command: argv is empty.')
    if ((await this.#lxcState(name)) !== 'running') throw new ContainerNotRunningError(name)
    const env = Object.entries(EXEC_ENV).flatMap(([key, value]) => ['-v', `${key}=${value}`])
    const result = await this.#runner.run(
      'lxc-attach',
      ['-P', this.lxcpath, '-n', name, '--clear-env', ...env, '--', ...argv],
      {
        timeoutMs: options.timeoutMs,
        cwd: '/',
        okExitCodes: ALL_EXIT_CODES,
        ...(options.input === undefined ? {} : { input: options.input }),
      },
    )
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr }
  }

  async state(name: string): Promise<ContainerState> {
    assertContainerName(name)
    if ((await this.#record(name)) === null) return 'absent'
    return this.#lxcState(name)
  }

  async list(): Promise<ContainerInfo[]> {
    let names: string[]
    try {
      names = (await readdir(this.lxcpath)).sort()
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw error
    }
    const found: Array<{ name: string; record: ContainerRecord }> = []
    for (const name of names) {
      const record = await this.#record(name).catch(() => null)
      if (record !== null) found.push({ name, record })
    }
    // With no container there is nothing to ask LXC (lxc-ls costs a process start).
    if (found.length === 0) return []
    const running = await this.#runner.run('lxc-ls', ['-P', this.lxcpath, '--running', '-1'], {
      timeoutMs: LXC_COMMAND_TIMEOUT_MS,
    })
    const runningNames = new Set(running.stdout.split('\n').map((line) => line.trim()))
    return found.map(({ name, record }) => ({
      name,
      hostname: record.hostname,
      imagePath: record.imagePath,
      state: runningNames.has(name) ? 'running' : 'stopped',
    }))
  }

  async #cgroupValue(name: string, key: string): Promise<string> {
    const result = await this.#runner.run('lxc-cgroup', ['-P', this.lxcpath, '-n', name, key], {
      timeoutMs: LXC_COMMAND_TIMEOUT_MS,
    })
    return result.stdout.trim()
  }

  async metrics(name: string): Promise<ContainerMetrics> {
    const record = await this.#requireRecord(name)
    const p = this.#paths(name)
    let diskUsedBytes = 0
    if (await isMounted(p.layer)) {
      const fs = await statfs(p.layer)
      diskUsedBytes = (fs.blocks - fs.bfree) * fs.bsize
    }
    const base = { diskUsedBytes, diskLimitBytes: record.limits.diskMb * 1024 * 1024 }
    if ((await this.#lxcState(name)) !== 'running') {
      return { cpuUsageMs: 0, memoryUsageBytes: 0, memoryLimitBytes: null, ...base }
    }
    if (this.#features.cgroupVersion === 1) {
      const [cpu, memory, limit] = await Promise.all([
        this.#cgroupValue(name, 'cpuacct.usage'),
        this.#cgroupValue(name, 'memory.usage_in_bytes'),
        this.#cgroupValue(name, 'memory.limit_in_bytes'),
      ])
      return {
        cpuUsageMs: Number(cpu) / 1e6,
        memoryUsageBytes: Number(memory),
        memoryLimitBytes: Number(limit),
        ...base,
      }
    }
    const [cpuStat, memory, limit] = await Promise.all([
      this.#cgroupValue(name, 'cpu.stat'),
      this.#cgroupValue(name, 'memory.current'),
      this.#cgroupValue(name, 'memory.max'),
    ])
    const usageUsec = /usage_usec (\d+)/.exec(cpuStat)?.[1] ?? '0'
    return {
      cpuUsageMs: Number(usageUsec) / 1000,
      memoryUsageBytes: Number(memory),
      memoryLimitBytes: limit === 'max' ? null : Number(limit),
      ...base,
    }
  }

  async upperDir(name: string): Promise<string> {
    await this.#requireRecord(name)
    const p = this.#paths(name)
    // The upper dir lives on the loop-mounted layer; after a reboot it must be mounted to be read.
    if (!(await isMounted(p.layer))) {
      await this.#runner.run('mount', ['-t', 'ext4', '-o', 'loop', p.disk, p.layer], {
        timeoutMs: MOUNT_TIMEOUT_MS,
      })
    }
    return p.upper
  }
}
