// The pure parts of runtime/, without LXC: the rendered LXC config (limits
// for cgroup v1 and v2, network or none), spec validation, the apt sources
// parser the Debian build reads its mirror with, the revert helper, the fake
// runtime later layers test against, and that files written into a container
// tree cannot escape it through the tree's own symlinks (root only: chown).

import { lstat, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import {
  type ContainerSpec,
  FakeRuntime,
  parseAptSources,
  Revert,
  renderLxcConfig,
  validateContainerSpec,
} from '../../runtime/index.ts'
import { writeFileInRoot } from '../../runtime/root-files.ts'

const base: ContainerSpec = {
  name: 'alice-vc1-0',
  hostname: 'host-0',
  imagePath: '/var/lib/docklet/images/abc/rootfs',
  limits: { cpuCores: 1.5, memoryMb: 512, diskMb: 1024 },
  network: null,
  hosts: [{ ip: '172.16.0.2', name: 'host-0' }],
}
const paths = { rootfsPath: '/d/lxc/alice-vc1-0/rootfs', logPath: '/d/lxc/alice-vc1-0/lxc.log' }

describe('renderLxcConfig', () => {
  it('writes cgroup v1 limits with memsw when the host has it, and no network for a null network', () => {
    const config = renderLxcConfig(base, paths, {
      cgroupVersion: 1,
      memswAvailable: true,
      apparmorAvailable: false,
    })
    expect(config).toContain('lxc.cgroup.memory.limit_in_bytes = 536870912\n')
    expect(config).toContain('lxc.cgroup.memory.memsw.limit_in_bytes = 536870912\n')
    expect(config).toContain('lxc.cgroup.cpu.cfs_quota_us = 150000\n')
    expect(config).toContain('lxc.net.0.type = empty\n')
    expect(config).toContain('lxc.apparmor.profile = unconfined\n')
    expect(config).toContain('lxc.rootfs.path = dir:/d/lxc/alice-vc1-0/rootfs\n')
  })

  it('writes cgroup v2 limits and a veth on the bridge with address, gateway and mtu', () => {
    const spec = {
      ...base,
      network: { bridge: 'vc-1', ip: '172.16.0.2/24', gateway: '172.16.0.1', mtu: 1370 },
    }
    const config = renderLxcConfig(spec, paths, {
      cgroupVersion: 2,
      memswAvailable: false,
      apparmorAvailable: true,
    })
    expect(config).toContain('lxc.cgroup2.memory.max = 536870912\n')
    expect(config).toContain('lxc.cgroup2.cpu.max = 150000 100000\n')
    expect(config).not.toContain('lxc.cgroup.')
    expect(config).not.toContain('apparmor')
    expect(config).toContain('lxc.net.0.link = vc-1\nlxc.net.0.ipv4.address = 172.16.0.2/24\n')
    expect(config).toContain('lxc.net.0.ipv4.gateway = 172.16.0.1\nlxc.net.0.mtu = 1370\n')
  })
})

describe('validateContainerSpec', () => {
  it('accepts a complete spec', () => {
    expect(() => validateContainerSpec(base)).not.toThrow()
  })

  it.each([
    ['a name with a slash', { name: 'a/b' }, 'Container name'],
    ['a hostname with a newline', { hostname: 'host\nlxc.x = 1' }, 'Hostname'],
    ['zero memory', { limits: { cpuCores: 1, memoryMb: 0, diskMb: 100 } }, 'limits.memoryMb'],
    ['a disk too small for ext4', { limits: { cpuCores: 1, memoryMb: 64, diskMb: 4 } }, 'limits.diskMb'],
    ['an address without prefix', { network: { ip: '172.16.0.2' } }, 'network.ip'],
    ['a relative file path', { files: [{ path: 'etc/x', content: '', mode: 0o644 }] }, 'File path'],
    ['a file path with ..', { files: [{ path: '/etc/../../x', content: '', mode: 0o644 }] }, 'File path'],
  ])('refuses %s with a message naming the field', (_, change, field) => {
    expect(() => validateContainerSpec({ ...base, ...change } as ContainerSpec)).toThrow(field)
  })
})

describe('parseAptSources', () => {
  it('reads deb822 and one-line sources, leaving out security and update suites', () => {
    const sources = parseAptSources([
      {
        name: '/etc/apt/sources.list.d/debian.sources',
        text: 'Types: deb\nURIs: http://deb.example.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.example.org/debian-security\nSuites: bookworm-security\nComponents: main\n',
      },
      {
        name: '/etc/apt/sources.list',
        text: '# comment\ndeb [arch=amd64] http://mirror.example.net/debian trixie main contrib\n',
      },
    ])
    expect(sources).toEqual([
      { uri: 'http://deb.example.org/debian', suite: 'bookworm', components: ['main'] },
      { uri: 'http://mirror.example.net/debian', suite: 'trixie', components: ['main', 'contrib'] },
    ])
  })
})

describe('Revert', () => {
  it('runs undo steps in reverse on failure and rethrows the original error', async () => {
    const undone: string[] = []
    const revert = new Revert()
    revert.add('one', () => void undone.push('one'))
    revert.add('two', () => void undone.push('two'))
    await expect(revert.fail('Doing x', new Error('step three failed'))).rejects.toThrow('step three failed')
    expect(undone).toEqual(['two', 'one'])
  })

  it('reports undo steps that fail too, after attempting all of them', async () => {
    const undone: string[] = []
    const revert = new Revert()
    revert.add('one', () => void undone.push('one'))
    revert.add('two', () => {
      throw new Error('busy')
    })
    await expect(revert.fail('Doing x', new Error('boom'))).rejects.toMatchObject({
      code: 'ERR_REVERT_FAILED',
    })
    expect(undone).toEqual(['one'])
  })
})

describe('FakeRuntime', () => {
  it('follows the same lifecycle rules as the real driver', async () => {
    const fake = new FakeRuntime()
    await fake.create(base)
    await expect(fake.create(base)).rejects.toMatchObject({ code: 'ERR_CONTAINER_EXISTS' })
    await expect(fake.exec(base.name, ['hostname'], { timeoutMs: 1000 })).rejects.toMatchObject({
      code: 'ERR_CONTAINER_NOT_RUNNING',
    })
    await fake.start(base.name)
    expect((await fake.exec(base.name, ['hostname'], { timeoutMs: 1000 })).stdout).toBe('host-0\n')
    expect((await fake.exec(base.name, ['cat', '/etc/hosts'], { timeoutMs: 1000 })).stdout).toContain(
      '172.16.0.2\thost-0',
    )
    await fake.destroy(base.name)
    await fake.destroy(base.name)
    expect(await fake.state(base.name)).toBe('absent')
  })

  it('fails the next call of an operation on request, for retry tests', async () => {
    const fake = new FakeRuntime()
    await fake.create(base)
    fake.failNext('start', new Error('lxc-start failed'))
    await expect(fake.start(base.name)).rejects.toThrow('lxc-start failed')
    await fake.start(base.name)
    expect(await fake.state(base.name)).toBe('running')
    expect(fake.calls.filter((c) => c.operation === 'start')).toHaveLength(2)
  })
})

describe.skipIf(process.getuid?.() !== 0)('writeFileInRoot', () => {
  const dirs: string[] = []
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  })

  it('follows the tree’s symlinks inside the tree, never onto the host', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'docklet-rootfiles-'))
    dirs.push(dir)
    const root = join(dir, 'root')
    const outside = join(dir, 'outside')
    await mkdir(join(root, 'real'), { recursive: true })
    await mkdir(outside)
    // An absolute link that, followed on the host, would point outside the tree.
    await symlink(outside, join(root, 'escape'))
    await symlink('/real', join(root, 'inside'))
    await writeFileInRoot(root, '/escape/x', 'a', { mode: 0o644 })
    await writeFileInRoot(root, '/inside/y', 'b', { mode: 0o600 })
    expect(await readFile(join(root, outside, 'x'), 'utf8')).toBe('a')
    expect(await readFile(join(root, 'real/y'), 'utf8')).toBe('b')
    expect(((await lstat(join(root, 'real/y'))).mode & 0o777).toString(8)).toBe('600')
    await expect(lstat(join(outside, 'x'))).rejects.toMatchObject({ code: 'ENOENT' })
  })
})
