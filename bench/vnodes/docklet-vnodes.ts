// The docklet side of bench:vnodes, driven through the CLI as a person
// would: `docklet vcluster create NAME --nodes N --image busybox --json`
// returns once every vnode of the vcluster is reported running (placed by
// the leader, created and started by the host agent, observed state
// committed), and the time of that call is the figure. Then
// `docklet vcluster delete NAME` (not timed), and the next run starts once
// the host has removed the containers and is idle again: the node prepares a
// spare layer for the kind of vnode it made last (LxcRuntime.keepSpares)
// when idle, which must not overlap the next run of a peer. So the runs after
// the warm-up measure a create that finds a spare ready, as a host that
// creates vnodes of one kind again and again does. Likewise with several
// hosts: the image is built on one, and the runs start once every host has
// copied it (hosts copy public images in the background), unless that takes
// more than a minute.
//
// Where the node runs is a DockletSetup, so the measuring functions do not
// care: startSingleHostDocklet (one `docklet init --detach` on this machine,
// lxc runtime, no mesh) and startNetnsDocklet (real nodes in simulated
// hosts, test/support/netns-cluster.ts, one per network + mount namespace
// with the real mesh). Anything that fails is thrown as a DockletBenchError
// whose message becomes the bench's docklet_reason.

import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { CommandRunner, RunResult } from '../../runtime/command-runner.ts'
import { LxcRuntime } from '../../runtime/index.ts'
import { mountsUnder, unmountAll } from '../../runtime/mounts.ts'
import type { NodeConfig } from '../../src/config.ts'
import { DOCKLET_BIN, NetnsCluster } from '../../test/support/netns-cluster.ts'
import { isAlive } from '../../test/support/process-cluster.ts'
import { VNODE_LIMITS } from './lxc-baseline.ts'
import type { Teardown } from './teardown.ts'

/** A CLI call that is not a vcluster create (quota, image build, delete). */
export const CLI_TIMEOUT_MS = 120_000
/** What the CLI prints is cut to this many bytes (a 50-vnode vcluster is a few tens of KB of JSON). */
const CLI_OUTPUT_BYTES_MAX = 4 * 1024 * 1024
/** `vcluster create` waits for its vnodes this long (its --timeout). */
export const CREATE_WAIT_S = 600
/** Until the containers of a deleted vcluster are gone from the host(s). */
export const SETTLE_GIVE_UP_MS = 120_000
/** Then until the node has its spare layer ready; without one by then the bench goes on. */
const SPARE_GIVE_UP_MS = 10_000
/** Until every host holds the image; without that by then the bench goes on (first use fetches it). */
const IMAGE_COPIES_GIVE_UP_MS = 60_000
const SETTLE_POLL_MS = 100
const NODE_STOP_GRACE_MS = 15_000
const IMAGE_NAME = 'busybox'

/**
 * The containers in an lxcpath: its entries, less the hidden ones (the node
 * keeps prepared layers in .spare/ while it runs).
 */
async function containerDirs(lxcpath: string): Promise<string[]> {
  return (await readdir(lxcpath).catch(() => [] as string[])).filter((entry) => !entry.startsWith('.'))
}

/** Something on the docklet side failed; the message is a sentence for docklet_reason. */
export class DockletBenchError extends Error {
  readonly code = 'ERR_DOCKLET_BENCH'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'DockletBenchError'
  }
}

/** What a host offers vnodes (config.json); the bench sets it so that a big vcluster fits on one machine. */
export type HostCapacity = Pick<NodeConfig, 'capacityCpuCores' | 'capacityMemoryMb' | 'capacityDiskMb'>

/** A running docklet cluster the bench can drive. */
export interface DockletSetup {
  /** How the nodes run, for the JSON ("1 node on this machine, lxc runtime, no mesh"). */
  readonly description: string
  /** Hosts that take vnodes. */
  readonly hosts: number
  /** Runs `docklet ARGS --data-dir D --json` against one node; never throws on a non-zero exit. */
  cli(args: string[], options: { timeoutMs: number }): Promise<RunResult>
  /** Resolves once no vnode container is left on any host (after a delete). */
  settled(): Promise<void>
  /** Stops the nodes and removes everything they made; registered in the Teardown as well. */
  stop(): Promise<void>
  /** The tail of each node's own output (its log), when the bench holds it; [] otherwise. */
  nodeOutputs(): string[]
}

/** The CLI's last JSON line, or a DockletBenchError with what it said. */
export async function dockletJson<T>(
  setup: DockletSetup,
  args: string[],
  options: { timeoutMs?: number } = {},
): Promise<T> {
  const result = await setup.cli(args, { timeoutMs: options.timeoutMs ?? CLI_TIMEOUT_MS })
  const last = result.stdout.trim().split('\n').at(-1) ?? ''
  let parsed: unknown = null
  try {
    parsed = JSON.parse(last)
  } catch {}
  const error = (parsed as { error?: { message?: string } } | null)?.error
  if (result.exitCode !== 0 || parsed === null || error !== undefined) {
    const said = error?.message ?? `${result.stdout.trim().slice(-400)} ${result.stderr.trim().slice(-400)}`
    throw new DockletBenchError(`\`docklet ${args.join(' ')}\` exited ${result.exitCode}: ${said.trim()}`)
  }
  return parsed as T
}

/**
 * Makes the node ready for `vnodes` vnodes at once: every group's quota is
 * raised (the admin's default allows 8), and the busybox image is built
 * unless the cluster has it already.
 */
export async function prepareDocklet(setup: DockletSetup, options: { vnodes: number }): Promise<void> {
  const groups = await dockletJson<Array<{ name: string }>>(setup, ['admin', 'group', 'list'])
  for (const group of groups) {
    await dockletJson(setup, [
      'admin',
      'group',
      'quota',
      group.name,
      '--vnodes',
      String(options.vnodes),
      '--vclusters',
      String(options.vnodes),
      '--cpu',
      String(options.vnodes * VNODE_LIMITS.cpuCores),
      '--memory',
      String(options.vnodes * VNODE_LIMITS.memoryMb),
      '--disk',
      String(options.vnodes * VNODE_LIMITS.diskMb),
    ])
  }
  const images = await dockletJson<Array<{ name: string }>>(setup, ['image', 'list'])
  if (!images.some((image) => image.name === IMAGE_NAME)) {
    await dockletJson(setup, ['image', 'build', IMAGE_NAME], { timeoutMs: 600_000 })
  }
  if (setup.hosts > 1) {
    // Hosts copy public images in the background (HostAgent): a cluster that had the image for
    // more than a moment has it everywhere, so the runs start once it has (as they wait for spares).
    await waitUntil(
      `the ${IMAGE_NAME} image to be copied to every host`,
      async () => {
        const listed = await dockletJson<Array<{ name: string; hosts?: string[] }>>(setup, ['image', 'list'])
        return (listed.find((image) => image.name === IMAGE_NAME)?.hosts?.length ?? 0) >= setup.hosts
      },
      IMAGE_COPIES_GIVE_UP_MS,
    ).catch(() => {})
  }
}

/** One `vcluster create` as the bench sees it. */
export interface CreateTiming {
  /** The CLI call, process start included: what a person waits for. */
  ms: number
  /**
   * From the vcluster's createdAt (stamped by the API when it accepted the
   * request) to the last vnode's observedAt (stamped when its host reported
   * it running): the node's part, without the CLI process and its polling.
   */
  serverMs: number | null
}

interface VclusterAnswer {
  createdAt?: number
  vnodes?: Array<{ observed?: string; observedAt?: number }>
}

/** One `vcluster create` of `nodes` vnodes with the baseline's limits; the vcluster is deleted after. */
async function createAndDelete(setup: DockletSetup, name: string, nodes: number): Promise<CreateTiming> {
  const startedAt = performance.now()
  const created = await dockletJson<VclusterAnswer>(
    setup,
    [
      'vcluster',
      'create',
      name,
      '--nodes',
      String(nodes),
      '--image',
      IMAGE_NAME,
      '--cpu',
      String(VNODE_LIMITS.cpuCores),
      '--memory',
      String(VNODE_LIMITS.memoryMb),
      '--disk',
      String(VNODE_LIMITS.diskMb),
      '--timeout',
      String(CREATE_WAIT_S),
    ],
    { timeoutMs: (CREATE_WAIT_S + 60) * 1000 },
  )
  const ms = performance.now() - startedAt
  const vnodes = created.vnodes ?? []
  const running = vnodes.filter((vnode) => vnode.observed === 'running').length
  const lastObservedAt = Math.max(...vnodes.map((vnode) => vnode.observedAt ?? Number.NaN))
  const serverMs =
    created.createdAt !== undefined && Number.isFinite(lastObservedAt)
      ? lastObservedAt - created.createdAt
      : null
  await dockletJson(setup, ['vcluster', 'delete', name])
  await setup.settled()
  if (running !== nodes) {
    throw new DockletBenchError(
      `\`docklet vcluster create ${name}\` returned with ${running} of ${nodes} vnodes running.`,
    )
  }
  return { ms, serverMs }
}

/** One busybox vnode from create to running (the bench interleaves these with its peers' runs). */
export function measureDockletVnodeOnce(setup: DockletSetup, name: string): Promise<CreateTiming> {
  return createAndDelete(setup, name, 1)
}

/** One busybox vnode from create to running, `runs` times. */
export async function measureDockletVnode(
  setup: DockletSetup,
  options: { runs: number; namePrefix: string },
): Promise<CreateTiming[]> {
  const samples: CreateTiming[] = []
  for (let run = 0; run < options.runs; run++) {
    samples.push(await measureDockletVnodeOnce(setup, `${options.namePrefix}${run}`))
  }
  return samples
}

/** A vcluster of `nodes` busybox vnodes (50 by default) from create to all running. */
export function measureDockletVcluster50(
  setup: DockletSetup,
  options: { name: string; nodes?: number },
): Promise<CreateTiming> {
  return createAndDelete(setup, options.name, options.nodes ?? 50)
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => resolvePort(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}

function runNode(args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolveRun) => {
    execFile(
      process.execPath,
      [DOCKLET_BIN, ...args],
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: CLI_OUTPUT_BYTES_MAX },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1
        resolveRun({ exitCode: code, stdout, stderr })
      },
    )
  })
}

const sleep = (ms: number): Promise<void> => new Promise((resolveSleep) => setTimeout(resolveSleep, ms))

async function waitUntil(what: string, done: () => Promise<boolean>, giveUpMs: number): Promise<void> {
  const deadline = Date.now() + giveUpMs
  while (!(await done())) {
    if (Date.now() > deadline)
      throw new DockletBenchError(`Gave up after ${giveUpMs} ms waiting for ${what}.`)
    await sleep(SETTLE_POLL_MS)
  }
}

/**
 * One node on this machine: `docklet init --detach` on a fresh data dir in
 * `dir`, listening on a free loopback port, no portal, no mesh (so, for now,
 * vnodes without a network interface), lxc runtime, no image built at init,
 * and `capacity` instead of what the node would measure.
 * stop() SIGTERMs the node, then destroys any container left in its lxcpath.
 */
export async function startSingleHostDocklet(init: {
  dir: string
  teardown: Teardown
  runner: CommandRunner
  capacity: HostCapacity
}): Promise<DockletSetup> {
  const dataDir = join(init.dir, 'docklet')
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const config: Partial<NodeConfig> = {
    runtime: 'lxc',
    mesh: 'off',
    initImages: [],
    logLevel: 'warn',
    ...init.capacity,
  }
  await writeFile(join(dataDir, 'config.json'), `${JSON.stringify(config)}\n`, { mode: 0o600 })
  const lxcpath = join(dataDir, 'lxc')
  const pidFile = join(dataDir, 'docklet.pid')
  const nodePid = (): number => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0)
  const stop = async (): Promise<void> => {
    const pid = nodePid()
    if (pid > 0 && isAlive(pid)) {
      process.kill(pid, 'SIGTERM')
      await waitUntil('the docklet node to stop', async () => !isAlive(pid), NODE_STOP_GRACE_MS).catch(() => {
        if (isAlive(pid)) process.kill(pid, 'SIGKILL')
      })
    }
    // Containers outlive the node by design; the bench's must not outlive the bench.
    const runtime = new LxcRuntime({ lxcpath, runner: init.runner })
    for (const container of await runtime.list()) await runtime.destroy(container.name)
    // The node removes its spare layers when it stops; not when it had to be killed.
    for (const point of await mountsUnder(join(lxcpath, '.spare'))) await unmountAll(init.runner, point)
  }
  const stopStep = init.teardown.add({
    label: `stop the docklet node of ${dataDir} and destroy its containers`,
    run: stop,
    runSync: () => {
      const pid = nodePid()
      if (pid > 0 && isAlive(pid)) process.kill(pid, 'SIGKILL')
    },
  })
  const port = await freePort()
  const initArgs = [
    'init',
    '--detach',
    '--data-dir',
    dataDir,
    '--listen',
    `127.0.0.1:${port}`,
    '--portal',
    '',
  ]
  const started = await runNode([...initArgs, '--json'], CLI_TIMEOUT_MS)
  if (started.exitCode !== 0) {
    throw new DockletBenchError(
      `\`docklet ${initArgs.join(' ')}\` exited ${started.exitCode}: ${started.stdout.trim()} ${started.stderr.trim()}`,
    )
  }
  return {
    description:
      '1 node on this machine (docklet init --detach), lxc runtime, mesh off; its spare layer ready before each run',
    hosts: 1,
    cli: (args, options) => runNode([...args, '--data-dir', dataDir, '--json'], options.timeoutMs),
    settled: async () => {
      await waitUntil(
        `the containers in ${lxcpath} to be removed`,
        async () => (await containerDirs(lxcpath)).length === 0,
        SETTLE_GIVE_UP_MS,
      )
      // A spare is ready when both its mounts are (the layer, then the overlay on it).
      await waitUntil(
        'the node to prepare its spare layer',
        async () => (await mountsUnder(join(lxcpath, '.spare'))).length >= 2,
        SPARE_GIVE_UP_MS,
      ).catch(() => {})
    },
    stop: () => stopStep.run(),
    // A detached node's output goes nowhere the bench can read.
    nodeOutputs: () => [],
  }
}

/**
 * `hosts` real nodes in simulated hosts (test/support/netns-cluster.ts): host
 * 0 inits, the others join; lxc runtime, real WireGuard mesh; each host
 * offers `capacity`.
 */
export async function startNetnsDocklet(init: {
  hosts: number
  teardown: Teardown
  runner: CommandRunner
  capacity: HostCapacity
  /** The nodes' log level ('warn' by default); 'debug' adds the host agent's timings. */
  logLevel?: NodeConfig['logLevel']
}): Promise<DockletSetup> {
  const cluster = await NetnsCluster.create({
    hosts: init.hosts,
    runner: init.runner,
    config: { runtime: 'lxc', logLevel: init.logLevel ?? 'warn', ...init.capacity },
  })
  const stopStep = init.teardown.add({
    label: 'tear down the simulated hosts of the docklet cluster',
    run: () => cluster.teardown(),
  })
  await cluster.startAll()
  const anyExitCode = Array.from({ length: 256 }, (_, code) => code)
  return {
    description: `${init.hosts} nodes in simulated hosts (network + mount namespaces), lxc runtime, WireGuard mesh`,
    hosts: init.hosts,
    cli: (args, options) =>
      cluster.harness.run(
        0,
        process.execPath,
        [DOCKLET_BIN, ...args, '--data-dir', cluster.dataDir(0), '--json'],
        {
          timeoutMs: options.timeoutMs,
          okExitCodes: anyExitCode,
        },
      ),
    settled: () =>
      waitUntil(
        'the containers of every simulated host to be removed',
        async () => {
          for (const host of cluster.harness.hosts) {
            if ((await containerDirs(join(host.dataDir, 'lxc'))).length > 0) return false
          }
          return true
        },
        SETTLE_GIVE_UP_MS,
      ),
    stop: () => stopStep.run(),
    nodeOutputs: () => cluster.nodes.map((node) => node.process?.output() ?? ''),
  }
}
