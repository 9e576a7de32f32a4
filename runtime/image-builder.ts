// Builds docklet's own two images into an ImageStore:
// - busybox: Debian's static busybox and a few config files; seconds. Tests
//   and the bench boot it.
// - debian: debootstrap --variant=minbase from the host's own apt sources,
//   plus python3, openssh-server and Jupyter Notebook (Debian packages only:
//   no pip, PyPI need not be reachable); a few minutes.
// Both boot busybox init (/sbin/init): rcS brings up loopback, init then
// idles (no shell on a console), and halts on SIGUSR2 (lxc-config.ts
// HALT_SIGNAL). Busybox init was chosen over systemd because it boots the
// same way under cgroup v1 and v2, in any network namespace, with nothing
// to mask. In the Debian image init also keeps sshd and the Jupyter
// launcher running (respawn); the launcher starts Jupyter only when the
// host wrote JUPYTER_CONFIG_PATH into the container (renderJupyterConfig).
import { existsSync } from 'node:fs'
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises'
import { join } from 'node:path'
import type { CommandRunner } from './command-runner.ts'
import type { ContainerFile } from './container-runtime.ts'
import { ImageBuildError, InvalidSpecError, PrerequisiteMissingError } from './errors.ts'
import { type ImageManifest, type ImageStore, removeSshHostKeys } from './image-store.ts'
import { MOUNT_TIMEOUT_MS, unmountAll } from './mounts.ts'
import { Revert } from './revert.ts'

export const BUSYBOX_PATH = '/bin/busybox'
export const CHROOT_TIMEOUT_MS = 60_000
export const DEBOOTSTRAP_TIMEOUT_MS = 60 * 60_000
export const APT_INSTALL_TIMEOUT_MS = 60 * 60_000
export const DEBOOTSTRAP_PATH = '/usr/sbin/debootstrap'
/** apt inside the build tree: no questions, and nothing of the node's environment. */
const APT_ENV: Readonly<Record<string, string>> = {
  DEBIAN_FRONTEND: 'noninteractive',
  LANG: 'C.UTF-8',
  PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
}
/** What the Debian image adds to minbase (busybox-static provides /sbin/init). */
export const DEBIAN_PACKAGES = [
  'busybox-static',
  'iproute2',
  'iputils-ping',
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

/** Where the host agent writes a workspace's Jupyter settings (see renderJupyterConfig). */
export const JUPYTER_CONFIG_PATH = '/etc/docklet/jupyter.json'
/** Output a service writes to /var/log/docklet/NAME.log is cut back to nothing past this. */
export const SERVICE_LOG_BYTES_MAX = 1024 * 1024
/** A service that exits sooner than this after starting waits this long before its restart. */
export const SERVICE_RESTART_DELAY_SECONDS = 10
/** How often a long build step reports how far it got. */
export const PROGRESS_INTERVAL_MS = 5_000

export const DEBIAN_INITTAB = `# docklet: no console shells; init runs rcS, keeps sshd and the Jupyter
# launcher running, and idles until halted.
::sysinit:/etc/init.d/rcS
::respawn:/usr/local/sbin/docklet-service sshd /usr/sbin/sshd -D -e
::respawn:/usr/local/sbin/docklet-service jupyter /usr/local/sbin/docklet-jupyter
::shutdown:/bin/sync
`

const DEBIAN_RC_S = `${RC_S}# Restart bookkeeping of docklet-service belongs to this boot only.
rm -rf /run/docklet
`

const SERVICE_SCRIPT = `#!/bin/sh
# docklet: runs one service for busybox init (respawn entries in /etc/inittab).
# A service that exits within ${SERVICE_RESTART_DELAY_SECONDS} s of its start is restarted only after
# that long, so a broken one does not spin; its output goes to
# /var/log/docklet/NAME.log, moved to NAME.log.1 once past ${SERVICE_LOG_BYTES_MAX} bytes.
name=$1
shift
mkdir -p /run/docklet /var/log/docklet
stamp=/run/docklet/$name.started
now=$(date +%s)
if [ -f "$stamp" ] && [ $((now - $(cat "$stamp"))) -lt ${SERVICE_RESTART_DELAY_SECONDS} ]; then
  sleep ${SERVICE_RESTART_DELAY_SECONDS}
fi
date +%s >"$stamp"
log=/var/log/docklet/$name.log
if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt ${SERVICE_LOG_BYTES_MAX} ]; then mv -f "$log" "$log.1"; fi
exec "$@" >>"$log" 2>&1 </dev/null
`

/*
 * The Jupyter launcher, run by init through docklet-service. It reads
 * JUPYTER_CONFIG_PATH, a JSON object written by the host agent (through
 * ContainerSpec.files; renderJupyterConfig makes it):
 *
 *   {
 *     "port": 8888,                 // TCP port, listened on at 0.0.0.0
 *     "base_url": "/go/alice/dev/", // URL prefix the node's proxy forwards; starts and ends with "/"
 *     "token": "…",                 // the token a browser (or the proxy) presents
 *     "notebook_dir": "/root"       // optional; default /root
 *   }
 *
 * Without the file the container is no workspace and the launcher idles.
 * Jupyter runs as root (allowed), opens no browser, and fails rather than
 * picking another port. Its settings go to a file only root can read, not
 * onto the command line where every process could see the token.
 */
const JUPYTER_LAUNCHER = `#!/usr/bin/python3
# docklet: starts Jupyter Notebook with the settings the host wrote to
# ${JUPYTER_CONFIG_PATH}; idles when there is none (not a workspace).
import json, os, re, sys

CONFIG = '${JUPYTER_CONFIG_PATH}'
RUNTIME = '/run/docklet/jupyter'

try:
    with open(CONFIG, encoding='utf-8') as f:
        config = json.load(f)
except FileNotFoundError:
    os.execv('/bin/sleep', ['sleep', 'infinity'])

def fail(message):
    print('docklet-jupyter: ' + CONFIG + ': ' + message, file=sys.stderr)
    sys.exit(1)

if not isinstance(config, dict):
    fail('not a JSON object')
port = config.get('port')
base_url = config.get('base_url')
token = config.get('token')
notebook_dir = config.get('notebook_dir', '/root')
if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
    fail('"port" must be an integer from 1 to 65535')
if not isinstance(base_url, str) or not re.fullmatch(r'/([A-Za-z0-9._~-]+/)*', base_url):
    fail('"base_url" must be a path that starts and ends with "/"')
if not isinstance(token, str) or token == '':
    fail('"token" must be a non-empty string')
if not isinstance(notebook_dir, str) or not notebook_dir.startswith('/'):
    fail('"notebook_dir" must be an absolute path')

os.makedirs(RUNTIME, mode=0o700, exist_ok=True)
os.makedirs(notebook_dir, exist_ok=True)
settings = {'NotebookApp': {
    'ip': '0.0.0.0',
    'port': port,
    'port_retries': 0,
    'base_url': base_url,
    'token': token,
    'open_browser': False,
    'allow_root': True,
    'allow_remote_access': True,
    'notebook_dir': notebook_dir,
}}
path = os.path.join(RUNTIME, 'jupyter_notebook_config.json')
fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, 'w') as f:
    json.dump(settings, f)
os.replace(path + '.tmp', path)
os.chdir(notebook_dir)
env = {
    'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    'HOME': '/root',
    'LANG': 'C.UTF-8',
    'SHELL': '/bin/bash',
    'TERM': 'xterm-256color',
    # Debian's python runs with frozen modules; ipykernel's debugger would warn about it in every kernel.
    'PYDEVD_DISABLE_FILE_VALIDATION': '1',
}
os.execve('/usr/bin/jupyter-notebook', ['jupyter-notebook', '--config=' + path], env)
`

/** Keeps documentation, manuals and translations out of the image (copyright files stay). */
const DPKG_EXCLUDES = `# docklet: a lean image; see runtime/image-builder.ts.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
`

export interface JupyterConfig {
  port: number
  /** URL prefix, e.g. /go/alice/dev/ (starts and ends with "/"). */
  baseUrl: string
  token: string
  /** Default /root. */
  notebookDir?: string
}

const BASE_URL_PATTERN = /^\/([A-Za-z0-9._~-]+\/)*$/
const TOKEN_PATTERN = /^[A-Za-z0-9._~-]{1,256}$/

/**
 * The file that makes a container built from the Debian image start Jupyter
 * at boot: hand it to ContainerSpec.files. Readable by root only (it holds
 * the token).
 */
export function renderJupyterConfig(config: JupyterConfig): ContainerFile {
  if (!Number.isInteger(config.port) || config.port < 1 || config.port > 65535) {
    throw new InvalidSpecError(`Jupyter port ${config.port} is invalid; use an integer from 1 to 65535.`)
  }
  if (!BASE_URL_PATTERN.test(config.baseUrl)) {
    throw new InvalidSpecError(
      `Jupyter base URL "${config.baseUrl}" is invalid; use a path like /go/alice/dev/ that starts and ends with "/".`,
    )
  }
  if (!TOKEN_PATTERN.test(config.token)) {
    throw new InvalidSpecError(
      'The Jupyter token is invalid; use 1-256 letters, digits or the characters . _ ~ -.',
    )
  }
  const notebookDir = config.notebookDir ?? '/root'
  if (!notebookDir.startsWith('/') || /[\0\n]/.test(notebookDir)) {
    throw new InvalidSpecError(`Jupyter notebook dir "${notebookDir}" must be an absolute path on one line.`)
  }
  const body = { port: config.port, base_url: config.baseUrl, token: config.token, notebook_dir: notebookDir }
  return { path: JUPYTER_CONFIG_PATH, content: `${JSON.stringify(body, null, 2)}\n`, mode: 0o600 }
}

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
  return readSourceEntries(files).filter((s) => !/-security|-updates|-backports/.test(s.suite))
}

/**
 * What apt inside an image of `suite` should use: the host's entries for the
 * release itself, its -updates and its -security suites (so the image gets
 * the fixes the host gets), main component only.
 */
export function imageAptSources(files: Array<{ name: string; text: string }>, suite: string): AptSource[] {
  const wanted = new Set([suite, `${suite}-updates`, `${suite}-security`])
  return readSourceEntries(files)
    .filter((s) => wanted.has(s.suite))
    .map((s) => ({ ...s, components: ['main'] }))
}

/** Every http(s) deb entry with the main component. */
function readSourceEntries(files: Array<{ name: string; text: string }>): AptSource[] {
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
  return sources.filter((s) => /^https?:\/\//.test(s.uri) && s.components.includes('main'))
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

  async #writeInitFiles(root: string, files = { inittab: INITTAB, rcS: RC_S }): Promise<void> {
    await mkdir(join(root, 'etc/init.d'), { recursive: true })
    await writeFile(join(root, 'etc/inittab'), files.inittab, { mode: 0o644 })
    await writeExecutable(join(root, 'etc/init.d/rcS'), files.rcS)
  }

  /** Runs `work`, reporting `probe()` as a progress line whenever what it says changes. */
  async #watch<T>(
    progress: (line: string) => void,
    label: string,
    work: () => Promise<T>,
    probe: () => Promise<string>,
  ): Promise<T> {
    const startedMs = Date.now()
    let last = ''
    let probing = false
    const timer = setInterval(() => {
      if (probing) return
      probing = true
      probe()
        .then((text) => {
          if (text === last) return
          last = text
          progress(`${label}: ${text} (${Math.round((Date.now() - startedMs) / 1000)} s)`)
        })
        .catch(() => {}) // a probe racing the tree it reads is not worth failing a build over
        .finally(() => {
          probing = false
        })
    }, PROGRESS_INTERVAL_MS)
    try {
      return await work()
    } finally {
      clearInterval(timer)
    }
  }

  /**
   * The Debian workspace image: debootstrap minbase from the host's mirror,
   * then DEBIAN_PACKAGES with apt inside the tree (download, then install,
   * from the release and its -updates and -security suites), then the tree
   * is trimmed (no apt lists, package caches, docs, logs, SSH host keys or
   * host resolver config) and given docklet's init files. `onProgress` gets
   * a line per step and, while a long step runs, a line whenever its count
   * moves (read from the tree every PROGRESS_INTERVAL_MS: the runner returns
   * a command's output only when it ends). With `packageCacheDir`, the
   * packages are kept there (pruned to what this build installed) and the
   * next build downloads only what changed.
   */
  async buildDebian(
    options: { name?: string; onProgress?: (line: string) => void; packageCacheDir?: string } = {},
  ): Promise<ImageManifest> {
    const progress = options.onProgress ?? (() => {})
    const startedMs = Date.now()
    if (!existsSync(DEBOOTSTRAP_PATH)) {
      throw new PrerequisiteMissingError(DEBOOTSTRAP_PATH, 'install the Debian package debootstrap')
    }
    const suite = await this.#hostSuite()
    const sourceFiles = await readAptSourceFiles()
    const source = parseAptSources(sourceFiles).find((s) => s.suite === suite)
    if (source === undefined) {
      throw new ImageBuildError(
        `No Debian mirror for ${suite} found in /etc/apt/sources.list or /etc/apt/sources.list.d; add one with the main component.`,
      )
    }
    const cacheDir = options.packageCacheDir
    if (cacheDir !== undefined) {
      if (!cacheDir.startsWith('/') || /[\s,]/.test(cacheDir)) {
        throw new InvalidSpecError(
          `Package cache dir "${cacheDir}" must be an absolute path without spaces or ','.`,
        )
      }
      await mkdir(cacheDir, { recursive: true, mode: 0o755 })
    }
    const staging = await this.#store.createStaging('debian')
    const root = join(staging, 'rootfs')
    const archives = join(root, 'var/cache/apt/archives')
    const revert = new Revert()
    revert.add('remove the staging dir', () => rm(staging, { recursive: true, force: true }))
    try {
      progress(`debootstrap: Debian ${suite} minbase from ${source.uri}`)
      await this.#watch(
        progress,
        'debootstrap',
        () =>
          this.#runner.run(
            DEBOOTSTRAP_PATH,
            [
              '--variant=minbase',
              ...(cacheDir === undefined ? [] : [`--cache-dir=${cacheDir}`]),
              suite,
              root,
              source.uri,
            ],
            { timeoutMs: DEBOOTSTRAP_TIMEOUT_MS },
          ),
        async () => {
          const fetched = Math.max(
            (await debFiles(archives)).length,
            cacheDir === undefined ? 0 : (await debFiles(cacheDir)).length,
          )
          const { unpacked, configured } = await dpkgProgress(root)
          return `${fetched} packages fetched, ${unpacked} unpacked, ${configured} configured`
        },
      )
      // No service may start inside the build tree, and what apt adds stays lean.
      await writeFile(join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 })
      await writeFile(join(root, 'etc/dpkg/dpkg.cfg.d/docklet-excludes'), DPKG_EXCLUDES, { mode: 0o644 })
      const aptSources = imageAptSources(sourceFiles, suite)
      await writeFile(
        join(root, 'etc/apt/sources.list'),
        `${aptSources.map((s) => `deb ${s.uri} ${s.suite} main`).join('\n')}\n`,
        { mode: 0o644 },
      )
      const proc = join(root, 'proc')
      revert.add('unmount /proc of the build tree', () => unmountAll(this.#runner, proc))
      await this.#runner.run('mount', ['-t', 'proc', 'proc', proc], { timeoutMs: MOUNT_TIMEOUT_MS })
      const apt = (args: string[], timeoutMs: number) =>
        this.#runner.run('chroot', [root, 'apt-get', ...args], { timeoutMs, env: APT_ENV })
      progress(`apt: updating package lists (${aptSources.map((s) => s.suite).join(', ')})`)
      await apt(['-q', 'update'], APT_INSTALL_TIMEOUT_MS)
      if (cacheDir !== undefined) await copyDebs(cacheDir, archives)
      const install = ['install', '-y', '-q', '--no-install-recommends', ...DEBIAN_PACKAGES]
      const plan = await apt([...install, '--simulate'], CHROOT_TIMEOUT_MS)
      const packageCount = plan.stdout.split('\n').filter((line) => line.startsWith('Inst ')).length
      const uris = await apt([...install, '--print-uris', '-qq'], CHROOT_TIMEOUT_MS)
      const downloadBytes = uris.stdout
        .split('\n')
        .map((line) => /^'[^']+' \S+ (\d+) /.exec(line)?.[1])
        .reduce((sum, size) => sum + (size === undefined ? 0 : Number(size)), 0)
      const seededBytes = await bytesOf(archives)
      progress(`apt: downloading ${packageCount} packages (${megabytes(downloadBytes)} MB)`)
      await this.#watch(
        progress,
        'apt download',
        () => apt([...install, '--download-only'], APT_INSTALL_TIMEOUT_MS),
        async () => {
          const done = (await bytesOf(archives)) + (await bytesOf(join(archives, 'partial'))) - seededBytes
          return `${megabytes(Math.min(done, downloadBytes))}/${megabytes(downloadBytes)} MB`
        },
      )
      const base = await dpkgProgress(root)
      progress(`apt: installing ${packageCount} packages (${DEBIAN_PACKAGES.join(', ')} and what they need)`)
      await this.#watch(
        progress,
        'apt install',
        () => apt(install, APT_INSTALL_TIMEOUT_MS),
        async () => {
          const now = await dpkgProgress(root)
          const unpacked = Math.max(0, now.unpacked - base.unpacked)
          const configured = Math.max(0, now.configured - base.configured)
          return `${unpacked}/${packageCount} unpacked, ${configured}/${packageCount} configured`
        },
      )
      if (cacheDir !== undefined) {
        await copyDebs(archives, cacheDir)
        await pruneDebs(cacheDir, await installedDebNames(root))
      }
      progress('cleaning up the tree')
      await apt(['clean'], CHROOT_TIMEOUT_MS)
      await unmountAll(this.#runner, proc)
      await this.#trimDebianTree(root)
      await rm(join(root, 'sbin/init'), { force: true })
      await symlink('/bin/busybox', join(root, 'sbin/init'))
      await this.#writeInitFiles(root, { inittab: DEBIAN_INITTAB, rcS: DEBIAN_RC_S })
      await mkdir(join(root, 'usr/local/sbin'), { recursive: true, mode: 0o755 })
      await writeExecutable(join(root, 'usr/local/sbin/docklet-service'), SERVICE_SCRIPT)
      await writeExecutable(join(root, 'usr/local/sbin/docklet-jupyter'), JUPYTER_LAUNCHER)
      await mkdir(join(root, 'etc/docklet'), { recursive: true, mode: 0o755 })
      progress('hashing the image')
      const manifest = await this.#store.commitTree(root, { name: options.name ?? 'debian' })
      await rm(staging, { recursive: true, force: true })
      revert.success()
      const seconds = Math.round((Date.now() - startedMs) / 1000)
      progress(`done: image ${manifest.hash} (${megabytes(manifest.size)} MB, ${seconds} s)`)
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

  /** Takes out of a built tree what a container does not need or must not share. */
  async #trimDebianTree(root: string): Promise<void> {
    await rm(join(root, 'usr/sbin/policy-rc.d'), { force: true })
    await rm(join(root, 'var/lib/apt/lists'), { recursive: true, force: true })
    await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true, mode: 0o700 })
    for (const name of await readdir(join(root, 'var/cache/apt')).catch(() => [] as string[])) {
      if (name.endsWith('.bin')) await rm(join(root, 'var/cache/apt', name), { force: true })
    }
    await rm(join(root, 'var/cache/debconf/config.dat-old'), { force: true })
    await rm(join(root, 'var/cache/debconf/templates.dat-old'), { force: true })
    // Every container would otherwise share the host keys; rcS makes a container's own.
    await removeSshHostKeys(root)
    // What debootstrap installed before the dpkg excludes were in place.
    await this.#runner.run(
      'find',
      [
        join(root, 'usr/share/doc'),
        '-mindepth',
        '1',
        '!',
        '-type',
        'd',
        '!',
        '-name',
        'copyright',
        '-delete',
      ],
      { timeoutMs: CHROOT_TIMEOUT_MS },
    )
    await this.#runner.run(
      'find',
      [join(root, 'usr/share/doc'), '-mindepth', '1', '-type', 'd', '-empty', '-delete'],
      { timeoutMs: CHROOT_TIMEOUT_MS },
    )
    for (const dir of ['usr/share/man', 'usr/share/info', 'usr/share/lintian']) {
      await emptyDir(join(root, dir))
    }
    for (const name of await readdir(join(root, 'usr/share/locale')).catch(() => [] as string[])) {
      if (name !== 'locale.alias')
        await rm(join(root, 'usr/share/locale', name), { recursive: true, force: true })
    }
    // Logs of the build (apt, dpkg, debootstrap) describe the build host, not the container.
    await this.#runner.run('find', [join(root, 'var/log'), '-type', 'f', '-delete'], {
      timeoutMs: CHROOT_TIMEOUT_MS,
    })
    // debootstrap copied the build host's resolver config; the host agent writes a container's own.
    await rm(join(root, 'etc/resolv.conf'), { force: true })
    await writeFile(join(root, 'etc/resolv.conf'), '# Written by the docklet host agent.\n', { mode: 0o644 })
    await writeFile(join(root, 'etc/hostname'), 'localhost\n', { mode: 0o644 })
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

// ---- helpers of the Debian build ------------------------------------------

async function writeExecutable(path: string, content: string): Promise<void> {
  await writeFile(path, content, { mode: 0o755 })
  await chmod(path, 0o755) // writeFile keeps the mode of a file that already exists
}

/** Removes what is inside `dir`, keeping `dir`. */
async function emptyDir(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    await rm(join(dir, name), { recursive: true, force: true })
  }
}

async function debFiles(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((name) => name.endsWith('.deb'))
}

/** Bytes of the regular files directly in `dir` (0 when it does not exist). */
async function bytesOf(dir: string): Promise<number> {
  let total = 0
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const stats = await lstat(join(dir, name)).catch(() => null)
    if (stats?.isFile() === true) total += stats.size
  }
  return total
}

async function dpkgStatus(root: string): Promise<string> {
  return readFile(join(root, 'var/lib/dpkg/status'), 'utf8').catch(() => '')
}

/** Packages dpkg has unpacked (configured or not) and configured in the tree so far. */
async function dpkgProgress(root: string): Promise<{ unpacked: number; configured: number }> {
  const status = await dpkgStatus(root)
  return {
    unpacked:
      status.match(
        /^Status: install ok (unpacked|half-configured|triggers-awaited|triggers-pending|installed)$/gm,
      )?.length ?? 0,
    configured: status.match(/^Status: install ok installed$/gm)?.length ?? 0,
  }
}

/** File names apt and debootstrap give the .deb of each installed package (":" of an epoch is "%3a"). */
async function installedDebNames(root: string): Promise<Set<string>> {
  const names = new Set<string>()
  for (const stanza of (await dpkgStatus(root)).split(/\n\s*\n/)) {
    if (!/^Status: install ok installed$/m.test(stanza)) continue
    const field = (key: string) => new RegExp(`^${key}: (.+)$`, 'm').exec(stanza)?.[1]
    const name = field('Package')
    const version = field('Version')
    const arch = field('Architecture')
    if (name !== undefined && version !== undefined && arch !== undefined) {
      names.add(`${name}_${version.replaceAll(':', '%3a')}_${arch}.deb`)
    }
  }
  return names
}

/** Copies the .deb files of `from` that `to` lacks. */
async function copyDebs(from: string, to: string): Promise<void> {
  const present = new Set(await debFiles(to))
  for (const name of await debFiles(from)) {
    if (!present.has(name)) await copyFile(join(from, name), join(to, name))
  }
}

/** Bounds the package cache: only the packages of the last build stay. */
async function pruneDebs(dir: string, keep: Set<string>): Promise<void> {
  for (const name of await debFiles(dir)) {
    if (!keep.has(name)) await rm(join(dir, name), { force: true })
  }
}

function megabytes(bytes: number): number {
  return Math.round(bytes / 1024 / 1024)
}
