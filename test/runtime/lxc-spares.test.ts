// The LXC driver's spare layers (keepSpares): after a create, the runtime
// prepares, while idle, a formatted, mounted layer with an overlay over the
// same image; the next create of that kind renames it into place and runs no
// mkfs and no mount, yet gives a container with its own hostname, files and
// disk limit. A spare is not used for another disk size, nor once its image
// directory was replaced; close() removes every spare and leaves containers
// running; a new runtime sweeps the spares a killed one left. Commands are
// counted through a recording CommandRunner around the real one. Needs root,
// lxc, busybox-static (prerequisites.ts); everything lives under a temp dir
// removed in afterAll.

import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { cp, mkdtemp, rename, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { CommandRunner, ContainerSpec, ImageManifest } from '../../runtime/index.ts'
import { ImageBuilder, ImageStore, LxcRuntime } from '../../runtime/index.ts'
import { SPARE_IDLE_MS } from '../../runtime/lxc-runtime.ts'
import { mountsUnder, unmountAll } from '../../runtime/mounts.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { prerequisiteVerdict } from './prerequisites.ts'

const verdict = prerequisiteVerdict()
const TIMEOUT_MS = 10_000
const SPARE_WAIT_MS = 20_000

describe.skipIf(verdict.skip)('LxcRuntime spare layers on real LXC', () => {
  const real: CommandRunner = new ExecaCommandRunner()
  /** Every command run by the runtimes under test, as "file arg0". */
  const ran: string[] = []
  const runner: CommandRunner = {
    run: (file, args, options) => {
      ran.push(`${file} ${args[0] ?? ''}`)
      return real.run(file, args, options)
    },
  }
  const names = ['a', 'b', 'c', 'd'].map((letter) => `dks-${process.pid}-${letter}`)
  let root = ''
  let lxcpath = ''
  let spareDir = ''
  let store: ImageStore
  let busybox: ImageManifest
  let runtime: LxcRuntime

  const spec = (name: string, overrides: Partial<ContainerSpec> = {}): ContainerSpec => ({
    name,
    hostname: `h-${name.slice(-1)}`,
    imagePath: store.rootfsPath(busybox.hash),
    limits: { cpuCores: 0.5, memoryMb: 64, diskMb: 32 },
    network: null,
    hosts: [{ ip: '172.16.0.2', name: 'host-0' }],
    ...overrides,
  })

  /** Resolves once `spares` spares are mounted (each: its layer and its overlay). */
  async function spareReady(spares = 1): Promise<void> {
    const deadline = Date.now() + SPARE_WAIT_MS
    while ((await mountsUnder(spareDir)).length < 2 * spares) {
      if (Date.now() > deadline)
        throw new Error(`No spare was mounted under ${spareDir} in ${SPARE_WAIT_MS} ms.`)
      await new Promise((done) => setTimeout(done, 50))
    }
  }

  /** Waits for the runtime's idle delay and then some, so a spare round that would start has started. */
  const idle = () => new Promise((done) => setTimeout(done, SPARE_IDLE_MS * 4))

  beforeAll(async () => {
    if (verdict.failure !== null) throw new Error(verdict.failure)
    root = await mkdtemp(join(tmpdir(), 'docklet-spares-'))
    lxcpath = join(root, 'lxc')
    spareDir = join(lxcpath, '.spare')
    store = new ImageStore({ dir: join(root, 'store'), runner: real })
    await store.open()
    busybox = await new ImageBuilder({ store, runner: real }).buildBusybox()
    runtime = new LxcRuntime({ lxcpath, runner })
    runtime.keepSpares()
  })

  afterAll(async () => {
    if (root === '') return
    await runtime?.close().catch(() => {})
    for (const name of names) {
      try {
        execFileSync('lxc-stop', ['-P', lxcpath, '-n', name, '-k'], { stdio: 'ignore' })
      } catch {}
    }
    for (const point of await mountsUnder(root)) await unmountAll(real, point).catch(() => {})
    await rm(root, { recursive: true, force: true })
  })

  it('creates the next container of a kind from a spare, without mkfs or mount', async () => {
    await runtime.create(spec(names[0]!))
    await runtime.start(names[0]!)
    await spareReady()
    expect(await runtime.list()).toHaveLength(1) // the spare is no container

    ran.length = 0
    await runtime.create(
      spec(names[1]!, { files: [{ path: '/etc/role', content: 'second\n', mode: 0o640 }] }),
    )
    expect(ran.filter((command) => command.startsWith('mkfs') || command.startsWith('mount'))).toEqual([])
    await runtime.start(names[1]!)
    const hostname = await runtime.exec(names[1]!, ['hostname'], { timeoutMs: TIMEOUT_MS })
    expect(hostname.stdout).toBe('h-b\n')
    const role = await runtime.exec(names[1]!, ['cat', '/etc/role'], { timeoutMs: TIMEOUT_MS })
    expect(role.stdout).toBe('second\n')
    const dd = await runtime.exec(names[1]!, ['dd', 'if=/dev/zero', 'of=/big', 'bs=1M', 'count=40'], {
      timeoutMs: TIMEOUT_MS,
    })
    expect(dd.stderr).toContain('No space left on device')
    // The first container's files are its own: the spare was a fresh layer.
    const other = await runtime.exec(names[0]!, ['ls', '/etc/role'], { timeoutMs: TIMEOUT_MS })
    expect(other.exitCode).not.toBe(0)
  })

  it('makes its own layers for another disk size or once the image directory was replaced', async () => {
    await spareReady()
    ran.length = 0
    await runtime.create(spec(names[2]!, { limits: { cpuCores: 0.5, memoryMb: 64, diskMb: 48 } }))
    expect(ran.filter((command) => command.startsWith('mkfs'))).toHaveLength(1)
    await runtime.destroy(names[2]!)

    await spareReady(2) // one per disk size: nothing is being made while the next create is counted
    const imagePath = store.rootfsPath(busybox.hash)
    await rename(imagePath, `${imagePath}.old`)
    await cp(`${imagePath}.old`, imagePath, { recursive: true, verbatimSymlinks: true })
    ran.length = 0
    await runtime.create(spec(names[2]!))
    expect(ran.filter((command) => command.startsWith('mkfs'))).toHaveLength(1)
    await runtime.start(names[2]!)
    const ls = await runtime.exec(names[2]!, ['ls', '/bin/busybox'], { timeoutMs: TIMEOUT_MS })
    expect(ls.exitCode).toBe(0)
    await runtime.destroy(names[2]!)
    await rm(`${imagePath}.old`, { recursive: true, force: true })
  })

  it('removes its spares on close and leaves the containers running', async () => {
    await spareReady()
    await runtime.close()
    expect(await mountsUnder(spareDir)).toEqual([])
    expect(existsSync(spareDir)).toBe(false)
    const states = (await new LxcRuntime({ lxcpath, runner }).list()).map((info) => info.state)
    expect(states).toEqual(['running', 'running'])
    await idle()
    expect(await mountsUnder(spareDir)).toEqual([]) // a closed runtime makes no new spare
  })

  it('sweeps the spares a killed runtime left, and destroys containers made from spares completely', async () => {
    const killed = new LxcRuntime({ lxcpath, runner })
    killed.keepSpares()
    await killed.create(spec(names[3]!))
    await spareReady() // and never closed, as if its process had died

    runtime = new LxcRuntime({ lxcpath, runner })
    runtime.keepSpares()
    const deadline = Date.now() + SPARE_WAIT_MS
    while (existsSync(spareDir) && Date.now() < deadline) await new Promise((done) => setTimeout(done, 50))
    expect(existsSync(spareDir)).toBe(false)

    for (const name of [names[0]!, names[1]!, names[3]!]) await runtime.destroy(name)
    await runtime.close()
    expect(await runtime.list()).toEqual([])
    expect(await mountsUnder(lxcpath)).toEqual([])
    expect(execFileSync('losetup', ['-a'], { encoding: 'utf8' })).not.toContain(lxcpath)
  })
})

describe.runIf(verdict.failure !== null)('LxcRuntime spare layer prerequisites', () => {
  it('are present on this CI host', () => {
    throw new Error(verdict.failure ?? '')
  })
})
