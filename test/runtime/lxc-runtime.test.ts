// The LXC driver on real containers: a busybox image is built, containers are
// created on overlays of it with size-limited upper layers, started, exec'd
// into, stopped and restarted, saved as an image that a second container
// boots from, found again by a second LxcRuntime over the same lxcpath, and
// destroyed with nothing left (no container, mount, loop device, cgroup or
// dir). Creates that fail half-way (injected failure, bad image, bad bridge)
// must leave nothing behind. Needs root, lxc, busybox-static (see
// prerequisites.ts); everything lives under a temp dir removed in afterAll.

import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { CommandRunner, ContainerSpec, ImageManifest } from '../../runtime/index.ts'
import { ImageBuilder, ImageStore, LxcRuntime } from '../../runtime/index.ts'
import { mountsUnder, unmountAll } from '../../runtime/mounts.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { prerequisiteVerdict } from './prerequisites.ts'

const verdict = prerequisiteVerdict()
const TIMEOUT_MS = 10_000
const PUBLIC_KEY =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnlyAAAAAAAAAAAAAAAAAAAAAAAA test@docklet'
const PRIVATE_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nZmFrZQ==\n-----END OPENSSH PRIVATE KEY-----\n'

/** Directories under /sys/fs/cgroup whose name mentions `name` (LXC names them lxc.payload.<name>…). */
function cgroupDirsNamed(name: string): string[] {
  const found: string[] = []
  const walk = (dir: string, depth: number) => {
    if (depth > 5) return
    let entries: string[]
    try {
      entries = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name)
    } catch {
      return
    }
    for (const entry of entries) {
      if (entry.includes(name)) found.push(join(dir, entry))
      walk(join(dir, entry), depth + 1)
    }
  }
  walk('/sys/fs/cgroup', 0)
  return found
}

function loopDevicesOf(file: string): string {
  return execFileSync('losetup', ['-j', file], { encoding: 'utf8' }).trim()
}

describe.skipIf(verdict.skip)('LxcRuntime on real LXC', () => {
  const runner: CommandRunner = new ExecaCommandRunner()
  const suffix = `${process.pid}`
  const nameA = `dkt-${suffix}-a`
  const nameB = `dkt-${suffix}-b`
  const nameNet = `dkt-${suffix}-n`
  const bridge = `dkbr${suffix}`.slice(0, 15)
  let root = ''
  let lxcpath = ''
  let store: ImageStore
  let runtime: LxcRuntime
  let busybox: ImageManifest

  const spec = (name: string, imagePath: string, overrides: Partial<ContainerSpec> = {}): ContainerSpec => ({
    name,
    hostname: 'host-0',
    imagePath,
    limits: { cpuCores: 0.5, memoryMb: 64, diskMb: 32 },
    network: null,
    hosts: [
      { ip: '172.16.0.2', name: 'host-0' },
      { ip: '172.16.0.3', name: 'host-1' },
    ],
    ...overrides,
  })

  beforeAll(async () => {
    if (verdict.failure !== null) throw new Error(verdict.failure)
    root = await mkdtemp(join(tmpdir(), 'docklet-lxc-'))
    lxcpath = join(root, 'lxc')
    store = new ImageStore({ dir: join(root, 'store'), runner })
    await store.open()
    busybox = await new ImageBuilder({ store, runner }).buildBusybox()
    runtime = new LxcRuntime({ lxcpath, runner })
  })

  afterAll(async () => {
    if (root === '') return
    for (const name of [nameA, nameB, nameNet]) {
      try {
        execFileSync('lxc-stop', ['-P', lxcpath, '-n', name, '-k'], { stdio: 'ignore' })
      } catch {}
    }
    for (const point of await mountsUnder(root)) await unmountAll(runner, point).catch(() => {})
    for (const name of [nameA, nameB, nameNet]) {
      const disk = join(lxcpath, name, 'disk.img')
      if (existsSync(disk)) {
        for (const line of loopDevicesOf(disk).split('\n')) {
          const device = line.split(':')[0]
          if (device?.startsWith('/dev/loop')) execFileSync('losetup', ['-d', device])
        }
      }
    }
    try {
      execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' })
    } catch {}
    await rm(root, { recursive: true, force: true })
  })

  it('creates a stopped container whose files, hostname and hosts are as specified', async () => {
    await runtime.create(
      spec(nameA, store.rootfsPath(busybox.hash), {
        sshKeys: { publicKey: PUBLIC_KEY, privateKey: PRIVATE_KEY },
        files: [{ path: '/etc/docklet/role', content: 'worker\n', mode: 0o640 }],
      }),
    )
    expect(await runtime.state(nameA)).toBe('stopped')
    await runtime.start(nameA)
    expect(await runtime.state(nameA)).toBe('running')

    const hostname = await runtime.exec(nameA, ['hostname'], { timeoutMs: TIMEOUT_MS })
    expect(hostname).toEqual({ exitCode: 0, stdout: 'host-0\n', stderr: '' })
    const hosts = await runtime.exec(nameA, ['cat', '/etc/hosts'], { timeoutMs: TIMEOUT_MS })
    expect(hosts.stdout).toContain('172.16.0.2\thost-0\n172.16.0.3\thost-1\n')
    const ssh = await runtime.exec(nameA, ['stat', '-c', '%a %n', '/root/.ssh', '/root/.ssh/id_ed25519'], {
      timeoutMs: TIMEOUT_MS,
    })
    expect(ssh.stdout).toBe('700 /root/.ssh\n600 /root/.ssh/id_ed25519\n')
    const keys = await runtime.exec(nameA, ['cat', '/root/.ssh/authorized_keys'], { timeoutMs: TIMEOUT_MS })
    expect(keys.stdout).toBe(`${PUBLIC_KEY}\n`)
    const role = await runtime.exec(nameA, ['stat', '-c', '%a', '/etc/docklet/role'], {
      timeoutMs: TIMEOUT_MS,
    })
    expect(role.stdout).toBe('640\n')
  })

  it('exec passes stdin, a clean environment and the exit code through', async () => {
    const piped = await runtime.exec(nameA, ['cat'], { timeoutMs: TIMEOUT_MS, input: 'from stdin' })
    expect(piped.stdout).toBe('from stdin')
    const failed = await runtime.exec(nameA, ['sh', '-c', 'echo oops >&2; exit 3'], { timeoutMs: TIMEOUT_MS })
    expect(failed.exitCode).toBe(3)
    expect(failed.stderr).toContain('oops')
    const env = await runtime.exec(nameA, ['env'], { timeoutMs: TIMEOUT_MS })
    expect(env.stdout).not.toContain('VITEST')
    expect(env.stdout).toContain('HOME=/root')
  })

  it('enforces the memory and cpu limits through cgroups and the disk limit with ENOSPC', async () => {
    const metrics = await runtime.metrics(nameA)
    expect(metrics.memoryLimitBytes).toBe(64 * 1024 * 1024)
    expect(metrics.memoryUsageBytes).toBeGreaterThan(0)
    expect(metrics.cpuUsageMs).toBeGreaterThan(0)
    expect(metrics.diskLimitBytes).toBe(32 * 1024 * 1024)
    const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers')
    const cpu = execFileSync(
      'lxc-cgroup',
      ['-P', lxcpath, '-n', nameA, v2 ? 'cpu.max' : 'cpu.cfs_quota_us'],
      {
        encoding: 'utf8',
      },
    )
    expect(cpu.trim()).toBe(v2 ? '50000 100000' : '50000')

    const dd = await runtime.exec(nameA, ['dd', 'if=/dev/zero', 'of=/big', 'bs=1M', 'count=40'], {
      timeoutMs: TIMEOUT_MS,
    })
    expect(dd.exitCode).not.toBe(0)
    expect(dd.stderr).toContain('No space left on device')
    await runtime.exec(nameA, ['rm', '-f', '/big'], { timeoutMs: TIMEOUT_MS })
    expect((await runtime.metrics(nameA)).diskUsedBytes).toBeLessThan(16 * 1024 * 1024)
  })

  it('keeps running containers across a new runtime instance and outside the node process tree', async () => {
    const second = new LxcRuntime({ lxcpath, runner })
    expect(await second.list()).toEqual([
      { name: nameA, hostname: 'host-0', imagePath: store.rootfsPath(busybox.hash), state: 'running' },
    ])
    const pid = Number(
      execFileSync('lxc-info', ['-P', lxcpath, '-n', nameA, '-p', '-H'], { encoding: 'utf8' }).trim(),
    )
    const ancestors: number[] = []
    for (let current = pid; current > 1 && ancestors.length < 64; ) {
      const parent = Number(/PPid:\s+(\d+)/.exec(readFileSync(`/proc/${current}/status`, 'utf8'))?.[1] ?? '1')
      ancestors.push(parent)
      current = parent
    }
    // lxc-start -d double-forks: the container hangs off init, not off us, so a SIGKILL of the node spares it.
    expect(ancestors).not.toContain(process.pid)
  })

  it('keeps written files across stop and start, and a saved image carries them to a new container', async () => {
    await runtime.exec(nameA, ['sh', '-c', 'echo kept > /root/note.txt && rm /usr/bin/yes'], {
      timeoutMs: TIMEOUT_MS,
    })
    await runtime.stop(nameA, { timeoutMs: 5000 })
    expect(await runtime.state(nameA)).toBe('stopped')
    await runtime.start(nameA)
    const note = await runtime.exec(nameA, ['cat', '/root/note.txt'], { timeoutMs: TIMEOUT_MS })
    expect(note.stdout).toBe('kept\n')
    await runtime.stop(nameA, { timeoutMs: 5000 })

    const saved = await store.saveUpper(await runtime.upperDir(nameA), busybox.hash, 'saved')
    expect(saved.parent).toBe(busybox.hash)
    expect(saved.hash).not.toBe(busybox.hash)
    await store.verify(saved.hash)

    await runtime.create(spec(nameB, store.rootfsPath(saved.hash), { hostname: 'host-1' }))
    await runtime.start(nameB)
    const copied = await runtime.exec(nameB, ['cat', '/root/note.txt'], { timeoutMs: TIMEOUT_MS })
    expect(copied.stdout).toBe('kept\n')
    const deleted = await runtime.exec(nameB, ['ls', '/usr/bin/yes'], { timeoutMs: TIMEOUT_MS })
    expect(deleted.exitCode).not.toBe(0)
    expect((await runtime.exec(nameB, ['hostname'], { timeoutMs: TIMEOUT_MS })).stdout).toBe('host-1\n')
  })

  it('destroys containers with nothing left behind, and destroying again is a no-op', async () => {
    await runtime.destroy(nameA)
    await runtime.destroy(nameB)
    await runtime.destroy(nameB)
    expect(await runtime.list()).toEqual([])
    expect(await runtime.state(nameA)).toBe('absent')
    expect(execFileSync('lxc-ls', ['-P', lxcpath, '-1'], { encoding: 'utf8' }).trim()).toBe('')
    expect(await mountsUnder(lxcpath)).toEqual([])
    expect(cgroupDirsNamed(nameA)).toEqual([])
    expect(cgroupDirsNamed(nameB)).toEqual([])
    expect(existsSync(join(lxcpath, nameA))).toBe(false)
    expect(existsSync(join(lxcpath, nameB))).toBe(false)
  })

  it('attaches a container to a bridge with its address, gateway and mtu', async () => {
    execFileSync('ip', ['link', 'add', 'name', bridge, 'type', 'bridge'])
    execFileSync('ip', ['link', 'set', bridge, 'up'])
    await runtime.create(
      spec(nameNet, store.rootfsPath(busybox.hash), {
        network: {
          bridge,
          ip: '10.251.7.2/24',
          gateway: '10.251.7.1',
          mtu: 1370,
          hwaddr: '02:00:0a:fb:07:02',
        },
      }),
    )
    await runtime.start(nameNet)
    const link = await runtime.exec(nameNet, ['ip', 'addr', 'show', 'eth0'], { timeoutMs: TIMEOUT_MS })
    expect(link.stdout).toContain('mtu 1370')
    expect(link.stdout).toContain('inet 10.251.7.2/24')
    expect(link.stdout).toContain('02:00:0a:fb:07:02')
    const route = await runtime.exec(nameNet, ['ip', 'route'], { timeoutMs: TIMEOUT_MS })
    expect(route.stdout).toContain('default via 10.251.7.1')
    await runtime.destroy(nameNet)
    expect(existsSync(join(lxcpath, nameNet))).toBe(false)
  })

  it('leaves nothing behind when a create fails half-way', async () => {
    const failing: CommandRunner = {
      run: async (file, args, options) => {
        if (file === 'mount' && args.includes('overlay')) throw new Error('injected: overlay mount failed')
        const result = await runner.run(file, args, options)
        // `mount -a` makes both layer mounts: fail it after they are made, the worst case to undo.
        if (file === 'mount' && args.includes('-a')) throw new Error('injected: overlay mount failed')
        return result
      },
    }
    const flaky = new LxcRuntime({ lxcpath, runner: failing })
    await expect(flaky.create(spec(nameA, store.rootfsPath(busybox.hash)))).rejects.toThrow('injected')
    expect(existsSync(join(lxcpath, nameA))).toBe(false)
    expect(await mountsUnder(lxcpath)).toEqual([])
    expect(execFileSync('losetup', ['-a'], { encoding: 'utf8' })).not.toContain(lxcpath)
  })

  it('refuses a missing image or bridge before touching the host', async () => {
    await expect(runtime.create(spec(nameA, join(root, 'no-such-image')))).rejects.toMatchObject({
      code: 'ERR_IMAGE_NOT_FOUND',
    })
    await expect(
      runtime.create(spec(nameA, store.rootfsPath(busybox.hash), { network: { bridge: 'dk-no-such-br' } })),
    ).rejects.toMatchObject({ code: 'ERR_BRIDGE_NOT_FOUND' })
    expect(existsSync(join(lxcpath, nameA))).toBe(false)
    expect(await mountsUnder(root)).toEqual([])
  })
})

describe.runIf(verdict.failure !== null)('LxcRuntime prerequisites', () => {
  it('are present on this CI host', () => {
    throw new Error(verdict.failure ?? '')
  })
})
