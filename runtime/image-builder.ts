// Builds docklet's own two images into an ImageStore:
// - busybox: Debian's static busybox and a few config files; seconds. Tests
//   and the bench boot it.
// - debian: debootstrap --variant=minbase from the host's own apt sources,
//   plus python3, openssh-server and Jupyter Notebook; minutes.
// Both boot busybox init (/sbin/init) with the same inittab: rcS brings up
// loopback and init then idles (no shell on a console), and halts on SIGUSR2
// (lxc-config.ts HALT_SIGNAL). Services (sshd, jupyter) are started by the
// host agent with exec, as the original docklet did.

import { chmod, copyFile, mkdir, open, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { CommandRunner } from './command-runner.ts'
import { ImageBuildError, PrerequisiteMissingError } from './errors.ts'
import type { ImageManifest, ImageStore } from './image-store.ts'
import { MOUNT_TIMEOUT_MS, unmountAll } from './mounts.ts'
import { Revert } from './revert.ts'

export const BUSYBOX_PATH = '/bin/busybox'
export const CHROOT_TIMEOUT_MS = 60_000
export const DEBOOTSTRAP_TIMEOUT_MS = 60 * 60_000
export const APT_INSTALL_TIMEOUT_MS = 60 * 60_000
/** What the Debian image adds to minbase (busybox-static provides /sbin/init). */
export const DEBIAN_PACKAGES = [
  'busybox-static',
  'iproute2',
  'python3',
  'openssh-server',
  'jupyter-notebook',
] as const

export const INITTAB = `# docklet: no console shells; init runs rcS, then idles until halted.
::sysinit:/etc/init.d/rcS
::shutdown:/bin/sync
`

const RC_S = `#!/bin/sh
# docklet: the network interface is configured by LXC; bring up loopback.
ip link set lo up 2>/dev/null || ifconfig lo up
hostname -F /etc/hostname 2>/dev/null || true
# Images carry no SSH host keys (every container would share them); make them here.
if [ -x /usr/bin/ssh-keygen ]; then ssh-keygen -A >/dev/null 2>&1; mkdir -p /run/sshd; fi
`

/** True when the ELF file has no program interpreter, i.e. runs without a libc in the image. */
export function isStaticElf(header: Buffer): boolean {
  if (header.length < 64 || header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2) return false
  const phoff = Number(header.readBigUInt64LE(0x20))
  const phentsize = header.readUInt16LE(0x36)
  const phnum = header.readUInt16LE(0x38)
  for (let i = 0; i < phnum; i += 1) {
    const offset = phoff + i * phentsize
    if (offset + 4 > header.length) return false
    if (header.readUInt32LE(offset) === 3) return false // PT_INTERP
  }
  return true
}

export interface AptSource {
  uri: string
  suite: string
  components: string[]
}

/**
 * The host's Debian archive entries (not security or updates suites), from
 * one-line .list files and deb822 .sources files. Pure: tests feed text.
 */
export function parseAptSources(files: Array<{ name: string; text: string }>): AptSource[] {
  const sources: AptSource[] = []
  for (const file of files) {
    if (file.name.endsWith('.sources')) {
      for (const stanza of file.text.split(/\n\s*\n/)) {
        const fields = new Map<string, string>()
        for (const line of stanza.split('\n')) {
          if (line.startsWith('#')) continue
          const match = /^([A-Za-z-]+):\s*(.*)$/.exec(line)
          if (match !== null) fields.set(match[1]!.toLowerCase(), match[2]!.trim())
        }
        if (!(fields.get('types') ?? '').split(/\s+/).includes('deb')) continue
        if (fields.get('enabled')?.toLowerCase() === 'no') continue
        const components = (fields.get('components') ?? '').split(/\s+/).filter((c) => c !== '')
        for (const uri of (fields.get('uris') ?? '').split(/\s+/).filter((u) => u !== '')) {
          for (const suite of (fields.get('suites') ?? '').split(/\s+/).filter((s) => s !== '')) {
            sources.push({ uri, suite, components })
          }
        }
      }
    } else {
      for (const raw of file.text.split('\n')) {
        const line = raw
          .replace(/#.*$/, '')
          .replace(/\[[^\]]*\]/, '')
          .trim()
        const [type, uri, suite, ...components] = line.split(/\s+/)
        if (type === 'deb' && uri !== undefined && suite !== undefined)
          sources.push({ uri, suite, components })
      }
    }
  }
  return sources.filter(
    (s) =>
      /^https?:\/\//.test(s.uri) &&
      !/-security|-updates|-backports/.test(s.suite) &&
      s.components.includes('main'),
  )
}

async function readAptSourceFiles(): Promise<Array<{ name: string; text: string }>> {
  const files: Array<{ name: string; text: string }> = []
  const read = async (path: string) => {
    try {
      files.push({ name: path, text: await readFile(path, 'utf8') })
    } catch {}
  }
  await read('/etc/apt/sources.list')
  const names = await readdir('/etc/apt/sources.list.d').catch(() => [] as string[])
  for (const name of names.sort()) {
    if (name.endsWith('.list') || name.endsWith('.sources')) await read(join('/etc/apt/sources.list.d', name))
  }
  return files
}

export interface ImageBuilderInit {
  store: ImageStore
  runner: CommandRunner
}

export class ImageBuilder {
  readonly #store: ImageStore
  readonly #runner: CommandRunner

  constructor(init: ImageBuilderInit) {
    this.#store = init.store
    this.#runner = init.runner
  }

  async buildBusybox(options: { name?: string } = {}): Promise<ImageManifest> {
    const header = Buffer.alloc(4096)
    try {
      const file = await open(BUSYBOX_PATH, 'r')
      try {
        await file.read(header, 0, header.length, 0)
      } finally {
        await file.close()
      }
    } catch {
      throw new PrerequisiteMissingError(BUSYBOX_PATH, 'install the Debian package busybox-static')
    }
    if (!isStaticElf(header)) {
      throw new PrerequisiteMissingError(
        `A static ${BUSYBOX_PATH}`,
        'install busybox-static instead of busybox',
      )
    }
    const staging = await this.#store.createStaging('busybox')
    try {
      const root = join(staging, 'rootfs')
      for (const dir of [
        'bin',
        'sbin',
        'usr/bin',
        'usr/sbin',
        'etc/init.d',
        'dev',
        'proc',
        'sys',
        'run',
        'tmp',
      ]) {
        await mkdir(join(root, dir), { recursive: true, mode: 0o755 })
      }
      for (const dir of ['root', 'home', 'var/log', 'var/tmp'])
        await mkdir(join(root, dir), { recursive: true })
      await chmod(join(root, 'root'), 0o700)
      await chmod(join(root, 'tmp'), 0o1777)
      await chmod(join(root, 'var/tmp'), 0o1777)
      await copyFile(BUSYBOX_PATH, join(root, 'bin/busybox'))
      await chmod(join(root, 'bin/busybox'), 0o755)
      // Inside a chroot, --install puts each applet's link where it belongs (/bin/sh, /sbin/init…).
      await this.#runner.run('chroot', [root, '/bin/busybox', '--install', '-s'], {
        timeoutMs: CHROOT_TIMEOUT_MS,
      })
      await this.#writeInitFiles(root)
      await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n', { mode: 0o644 })
      await writeFile(join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o600 })
      await writeFile(join(root, 'etc/group'), 'root:x:0:\n', { mode: 0o644 })
      await writeFile(join(root, 'etc/hostname'), 'localhost\n', { mode: 0o644 })
      await writeFile(join(root, 'etc/hosts'), '127.0.0.1\tlocalhost\n', { mode: 0o644 })
      return await this.#store.commitTree(root, { name: options.name ?? 'busybox' })
    } finally {
      await rm(staging, { recursive: true, force: true })
    }
  }

  async #writeInitFiles(root: string): Promise<void> {
    await mkdir(join(root, 'etc/init.d'), { recursive: true })
    await writeFile(join(root, 'etc/inittab'), INITTAB, { mode: 0o644 })
    await writeFile(join(root, 'etc/init.d/rcS'), RC_S, { mode: 0o755 })
    await chmod(join(root, 'etc/init.d/rcS'), 0o755)
  }

  /**
   * debootstrap minbase from the host's apt mirror, then the packages with
   * apt inside the tree. Progress comes as one line per step (the runner
   * returns a command's output when it ends, so apt's own lines are not
   * streamed).
   */
  async buildDebian(
    options: { name?: string; onProgress?: (line: string) => void } = {},
  ): Promise<ImageManifest> {
    const progress = options.onProgress ?? (() => {})
    const suite = await this.#hostSuite()
    const sources = parseAptSources(await readAptSourceFiles())
    const source = sources.find((s) => s.suite === suite) ?? sources[0]
    if (source === undefined) {
      throw new ImageBuildError(
        'No Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d; add one with the main component.',
      )
    }
    const staging = await this.#store.createStaging('debian')
    const root = join(staging, 'rootfs')
    const revert = new Revert()
    revert.add('remove the staging dir', () => rm(staging, { recursive: true, force: true }))
    try {
      progress(`debootstrap: minbase ${source.suite} from ${source.uri} (a few minutes)`)
      await this.#runner.run('debootstrap', ['--variant=minbase', source.suite, root, source.uri], {
        timeoutMs: DEBOOTSTRAP_TIMEOUT_MS,
      })
      // No service may start inside the build tree.
      await writeFile(join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 })
      const proc = join(root, 'proc')
      revert.add('unmount /proc of the build tree', () => unmountAll(this.#runner, proc))
      await this.#runner.run('mount', ['-t', 'proc', 'proc', proc], { timeoutMs: MOUNT_TIMEOUT_MS })
      const env = {
        DEBIAN_FRONTEND: 'noninteractive',
        LANG: 'C.UTF-8',
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      }
      progress('apt: updating package lists')
      await this.#runner.run('chroot', [root, 'apt-get', 'update'], {
        timeoutMs: APT_INSTALL_TIMEOUT_MS,
        env,
      })
      progress(`apt: installing ${DEBIAN_PACKAGES.join(', ')}`)
      await this.#runner.run(
        'chroot',
        [root, 'apt-get', 'install', '-y', '--no-install-recommends', ...DEBIAN_PACKAGES],
        { timeoutMs: APT_INSTALL_TIMEOUT_MS, env },
      )
      progress('cleaning up the tree')
      await this.#runner.run('chroot', [root, 'apt-get', 'clean'], { timeoutMs: CHROOT_TIMEOUT_MS, env })
      await unmountAll(this.#runner, proc)
      await rm(join(root, 'usr/sbin/policy-rc.d'), { force: true })
      await rm(join(root, 'var/lib/apt/lists'), { recursive: true, force: true })
      await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true })
      for (const name of await readdir(join(root, 'etc/ssh')).catch(() => [] as string[])) {
        if (name.startsWith('ssh_host_')) await rm(join(root, 'etc/ssh', name), { force: true })
      }
      await rm(join(root, 'sbin/init'), { force: true })
      await symlink('/bin/busybox', join(root, 'sbin/init'))
      await this.#writeInitFiles(root)
      await writeFile(join(root, 'etc/hostname'), 'localhost\n', { mode: 0o644 })
      progress('hashing the image')
      const manifest = await this.#store.commitTree(root, { name: options.name ?? 'debian' })
      await rm(staging, { recursive: true, force: true })
      revert.success()
      progress(`done: image ${manifest.hash} (${Math.round(manifest.size / 1024 / 1024)} MB)`)
      return manifest
    } catch (error) {
      return revert.fail(
        'Building the Debian image',
        new ImageBuildError(`Building the Debian image failed: ${(error as Error).message}`, {
          cause: error,
        }),
      )
    }
  }

  /** The host's Debian codename (bookworm…), from /etc/os-release. */
  async #hostSuite(): Promise<string> {
    const text = await readFile('/etc/os-release', 'utf8').catch(() => '')
    const codename = /^VERSION_CODENAME=("?)([a-z]+)\1$/m.exec(text)?.[2]
    if (codename === undefined) {
      throw new ImageBuildError('Cannot tell the Debian release from /etc/os-release (VERSION_CODENAME).')
    }
    return codename
  }
}
