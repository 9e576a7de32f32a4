// The Debian workspace image, built for real with debootstrap and apt from
// the host's apt sources (minutes, network to the Debian mirror): under
// CI=true or DOCKLET_TEST_DEBIAN_IMAGE=1, or whenever a current image is
// cached (else skipped, saying why). The image is built once into the
// cache that test/support/debian-image-cache.ts keeps for every test file
// (DOCKLET_TEST_DEBIAN_CACHE, default /var/cache/docklet-test) and reused by
// later runs while it is current; DOCKLET_TEST_DEBIAN_REBUILD=1 builds it
// again. Checks the
// build's progress lines, that the image verifies and holds python3, sshd,
// jupyter and busybox init, then boots it under LxcRuntime (no network but
// loopback): python3 runs, sshd answers on port 22, Jupyter answers on the
// port and base URL of the config file the host writes (token required) and
// starts a kernel; without that file no Jupyter runs. Containers live in a
// temp lxcpath; afterAll stops and removes them (mounts, loop devices, dirs)
// even when a test failed; the cache stays. Always run (pure, no root): the
// Jupyter config file the host writes, and the apt sources an image gets.

import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ContainerSpec, ImageManifest, ImageStore } from '../../runtime/index.ts'
import { imageAptSources, JUPYTER_CONFIG_PATH, LxcRuntime, renderJupyterConfig } from '../../runtime/index.ts'
import { mountsUnder, unmountAll } from '../../runtime/mounts.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import {
  DEBIAN_BUILD_TIMEOUT_MS,
  debianImageVerdict,
  ensureDebianImage,
} from '../support/debian-image-cache.ts'
import { prerequisiteVerdict } from './prerequisites.ts'

const BUILD_TIMEOUT_MS = DEBIAN_BUILD_TIMEOUT_MS
const EXEC_TIMEOUT_MS = 30_000
const JUPYTER_PORT = 8888
const BASE_URL = '/go/alice/dev/'
const TOKEN = 'test-token-0123456789abcdef'

/** Runs in the container: asks Jupyter for its version, with and without the token; prints JSON. */
const PROBE_JUPYTER = `
import json, sys, urllib.error, urllib.request as u
base = 'http://127.0.0.1:${JUPYTER_PORT}${BASE_URL}api/'
out = {}
try:
    out['version'] = json.load(u.urlopen(base + '?token=${TOKEN}', timeout=5))['version']
except Exception as e:
    print(json.dumps({'error': repr(e)})); sys.exit(1)
try:
    u.urlopen(base + 'contents', timeout=5); out['without_token'] = 200
except urllib.error.HTTPError as e:
    out['without_token'] = e.code
try:
    u.urlopen('http://127.0.0.1:${JUPYTER_PORT}/api/contents?token=${TOKEN}', timeout=5); out['outside_base_url'] = 200
except urllib.error.HTTPError as e:
    out['outside_base_url'] = e.code
print(json.dumps(out))
`

/**
 * Runs in the container: starts a kernel through Jupyter's API, then talks
 * to it (jupyter_client, over its connection file) to run code; prints the
 * code's output.
 */
const PROBE_KERNEL = `
import json, os, time, urllib.request as u
from jupyter_client import BlockingKernelClient
base = 'http://127.0.0.1:${JUPYTER_PORT}${BASE_URL}api/kernels'
headers = {'Authorization': 'token ${TOKEN}', 'Content-Type': 'application/json'}
kernel = json.load(u.urlopen(u.Request(base, data=b'{}', headers=headers, method='POST'), timeout=30))
path = '/root/.local/share/jupyter/runtime/kernel-' + kernel['id'] + '.json'
for _ in range(300):
    if os.path.exists(path):
        break
    time.sleep(0.1)
client = BlockingKernelClient(connection_file=path)
client.load_connection_file()
client.start_channels()
# The connection file appears before the kernel listens; until then the heartbeat says "dead".
for attempt in range(60):
    try:
        client.wait_for_ready(timeout=60)
        break
    except RuntimeError:
        time.sleep(0.5)
client.execute_interactive('print(6 * 7)', timeout=60)
`

/** Runs in the container: the first bytes sshd sends on port 22. */
const PROBE_SSHD = `
import socket
s = socket.create_connection(('127.0.0.1', 22), timeout=5)
print(s.recv(64).decode().strip())
`

describe('renderJupyterConfig', () => {
  it('renders the JSON file the Jupyter launcher reads, readable by root only', () => {
    const file = renderJupyterConfig({ port: 8888, baseUrl: '/go/alice/dev/', token: 'abc-123' })
    expect(file.path).toBe(JUPYTER_CONFIG_PATH)
    expect(file.mode).toBe(0o600)
    expect(JSON.parse(String(file.content))).toEqual({
      port: 8888,
      base_url: '/go/alice/dev/',
      token: 'abc-123',
      notebook_dir: '/root',
    })
  })

  it.each([
    ['a port out of range', { port: 70000 }, 'port'],
    ['a base URL without the trailing slash', { baseUrl: '/go/alice/dev' }, 'base URL'],
    ['a base URL with a quote', { baseUrl: '/go/a"b/' }, 'base URL'],
    ['an empty token', { token: '' }, 'token'],
    ['a relative notebook dir', { notebookDir: 'work' }, 'notebook dir'],
  ])('refuses %s with a message naming it', (_, change, field) => {
    const config = { port: 8888, baseUrl: '/go/alice/dev/', token: 'abc', ...change }
    expect(() => renderJupyterConfig(config)).toThrow(field)
  })
})

describe('imageAptSources', () => {
  it('gives an image the release, -updates and -security entries of the host, main only', () => {
    const files = [
      {
        name: '/etc/apt/sources.list.d/debian.sources',
        text: 'Types: deb\nURIs: http://deb.example.org/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\n\nTypes: deb\nURIs: http://deb.example.org/debian-security\nSuites: bookworm-security\nComponents: main\n',
      },
      {
        name: '/etc/apt/sources.list.d/other.list',
        text: 'deb https://apt.example.com/node nodistro main\n',
      },
    ]
    expect(imageAptSources(files, 'bookworm')).toEqual([
      { uri: 'http://deb.example.org/debian', suite: 'bookworm', components: ['main'] },
      { uri: 'http://deb.example.org/debian', suite: 'bookworm-updates', components: ['main'] },
      { uri: 'http://deb.example.org/debian-security', suite: 'bookworm-security', components: ['main'] },
    ])
  })
})

const verdict = prerequisiteVerdict()

// Runs with a current cached image, and builds one first under CI (the workspace browser test needs it too).
const cachedImage = verdict.skip ? null : debianImageVerdict()

describe.runIf(!verdict.skip && cachedImage?.action !== 'skip')('the Debian image', () => {
  const runner = new ExecaCommandRunner()
  const suffix = `${process.pid}`
  const names = [`dkt-${suffix}-deb`, `dkt-${suffix}-deb-plain`] as const
  let root = ''
  let lxcpath = ''
  let store: ImageStore
  let image: ImageManifest
  let runtime: LxcRuntime
  const progress: string[] = []
  let built = false
  let buildSeconds = 0

  beforeAll(async () => {
    if (verdict.failure !== null) throw new Error(verdict.failure)
    root = await mkdtemp(join(tmpdir(), 'docklet-debian-'))
    lxcpath = join(root, 'lxc')
    runtime = new LxcRuntime({ lxcpath, runner })
    const cached = await ensureDebianImage({
      onProgress: (line) => {
        progress.push(line)
        console.log(`[debian image] ${line}`)
      },
    })
    store = cached.store
    image = cached.manifest
    built = cached.built
    buildSeconds = cached.buildSeconds
  }, BUILD_TIMEOUT_MS)

  afterAll(async () => {
    if (root === '') return
    for (const name of names) {
      try {
        execFileSync('lxc-stop', ['-P', lxcpath, '-n', name, '-k'], { stdio: 'ignore' })
      } catch {}
    }
    for (const point of await mountsUnder(root)) await unmountAll(runner, point).catch(() => {})
    for (const name of names) {
      const disk = join(lxcpath, name, 'disk.img')
      if (!existsSync(disk)) continue
      for (const line of execFileSync('losetup', ['-j', disk], { encoding: 'utf8' }).trim().split('\n')) {
        const device = line.split(':')[0]
        if (device?.startsWith('/dev/loop')) execFileSync('losetup', ['-d', device])
      }
    }
    await rm(root, { recursive: true, force: true })
  })

  const spec = (name: string, files: ContainerSpec['files']): ContainerSpec => ({
    name,
    hostname: 'host-0',
    imagePath: store.rootfsPath(image.hash),
    limits: { cpuCores: 1, memoryMb: 512, diskMb: 256 },
    network: null,
    hosts: [{ ip: '172.16.0.2', name: 'host-0' }],
    files,
  })

  const exec = async (name: string, argv: string[]) =>
    runtime.exec(name, argv, { timeoutMs: EXEC_TIMEOUT_MS })

  /** Runs argv until it exits 0 (services take seconds to come up after boot); the last result. */
  const execUntilOk = async (name: string, argv: string[], timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const result = await exec(name, argv)
      if (result.exitCode === 0 || Date.now() > deadline) return result
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
  }

  it(
    'is built (or taken from the cache) with progress lines, verifies, and holds python3, sshd, jupyter and busybox init',
    async () => {
      if (built) {
        expect(progress[0]).toMatch(/^debootstrap: Debian \w+ minbase from http/)
        expect(progress.some((line) => line.startsWith('apt install: '))).toBe(true)
        expect(progress.at(-1)).toContain(image.hash)
        console.log(`[debian image] built in ${buildSeconds} s, ${Math.round(image.size / 1024 / 1024)} MB`)
      }
      await store.verify(image.hash)
      const rootfs = store.rootfsPath(image.hash)
      for (const path of [
        'usr/bin/python3',
        'usr/sbin/sshd',
        'usr/bin/jupyter-notebook',
        'bin/busybox',
        'etc/inittab',
        'usr/local/sbin/docklet-jupyter',
      ]) {
        expect(existsSync(join(rootfs, path)), path).toBe(true)
      }
      // Lean: no apt lists, no downloaded packages, no SSH host keys shared by every container.
      expect(readdirSync(join(rootfs, 'var/lib/apt/lists')).filter((n) => n !== 'partial')).toEqual([])
      expect(readdirSync(join(rootfs, 'var/cache/apt/archives')).filter((n) => n.endsWith('.deb'))).toEqual(
        [],
      )
      expect(readdirSync(join(rootfs, 'etc/ssh')).filter((n) => n.startsWith('ssh_host_'))).toEqual([])
    },
    BUILD_TIMEOUT_MS,
  )

  it('boots under LxcRuntime with sshd, and Jupyter on the port, base URL and token of its config file', async () => {
    const name = names[0]
    await runtime.create(
      spec(name, [renderJupyterConfig({ port: JUPYTER_PORT, baseUrl: BASE_URL, token: TOKEN })]),
    )
    await runtime.start(name)
    const python = await exec(name, ['python3', '-c', 'import sys; print(sys.version_info[0])'])
    expect(python).toMatchObject({ exitCode: 0, stdout: '3\n' })
    expect((await execUntilOk(name, ['python3', '-c', PROBE_SSHD])).stdout).toMatch(/^SSH-2\.0-OpenSSH/)
    const answer = await execUntilOk(name, ['python3', '-c', PROBE_JUPYTER])
    expect(answer.exitCode, answer.stdout + answer.stderr).toBe(0)
    expect(JSON.parse(answer.stdout)).toEqual({
      version: expect.stringMatching(/^6\./),
      without_token: 403,
      outside_base_url: 404,
    })
    const kernel = await exec(name, ['python3', '-c', PROBE_KERNEL])
    expect(kernel.stdout, kernel.stderr).toBe('42\n')
    const listening = await exec(name, ['cat', '/proc/net/tcp'])
    // 0.0.0.0:8888 in LISTEN (state 0A).
    expect(listening.stdout).toMatch(
      new RegExp(`00000000:${JUPYTER_PORT.toString(16).toUpperCase()} 00000000:0000 0A`),
    )
    await runtime.stop(name, { timeoutMs: 10_000 })
    expect(await runtime.state(name)).toBe('stopped')
    await runtime.destroy(name)
    expect(existsSync(join(lxcpath, name))).toBe(false)
  }, 180_000)

  it('boots without Jupyter when the host wrote no config file', async () => {
    const name = names[1]
    await runtime.create(spec(name, []))
    await runtime.start(name)
    expect((await execUntilOk(name, ['python3', '-c', PROBE_SSHD])).stdout).toMatch(/^SSH-2\.0-OpenSSH/)
    expect((await exec(name, ['test', '-e', JUPYTER_CONFIG_PATH])).exitCode).toBe(1)
    const processes = await exec(name, ['ps', '-eo', 'args'])
    expect(processes.stdout).toContain('sshd')
    expect(processes.stdout).not.toContain('jupyter-notebook')
    await runtime.destroy(name)
    expect(await mountsUnder(join(lxcpath, name))).toEqual([])
    expect(existsSync(join(lxcpath, name))).toBe(false)
  }, 120_000)
})
