// npm run bench:vnodes [-- --runs 10 --warmup 1 --vcluster-nodes 50 --vcluster-hosts 3
//                         --only lxd,docklet,vcluster --no-install --out bench/results/vnodes.json
//                         --node-log-level debug --node-logs DIR]
//
// Only the vcluster figure: `--only vcluster --runs 1 --warmup 0` (the
// plain-LXC baseline always runs, here once). --node-logs writes the tail of
// each simulated host's node log to DIR/host-N.log after the vcluster run;
// with --node-log-level debug it holds the host agent's per-vnode timings.
//
// How long a busybox vnode takes from "create" to running, side by side with
// the same tree started by plain LXC and by LXD 5.0 on this machine:
//
// - lxc: `lxc-copy -s -B overlayfs` of a base container whose rootfs is the
//   tree + `lxc-start -d`, until `lxc-attach -- true` succeeds (lxc-baseline.ts).
// - lxd: `lxc launch` of the tree imported as a local image, until
//   `lxc exec -- true` succeeds (lxd-peer.ts). null, with lxd_reason, when LXD
//   cannot run here.
// - docklet: `docklet vcluster create NAME --nodes 1 --image busybox`, which
//   returns once the vnode is reported running (docklet-vnodes.ts); and one
//   vcluster of --vcluster-nodes vnodes across --vcluster-hosts simulated
//   hosts (1: the same single node). null, with docklet_reason, when the node
//   cannot do it.
//
// The tree is built once by docklet's own ImageBuilder.buildBusybox into an
// ImageStore in a temp dir; LXC and LXD both use that store's tree, docklet
// builds its own with `docklet image build busybox` (the same builder). Every
// container gets docklet's default vnode limits (1 cpu, 512 MB). The LXC and
// LXD containers run inside a private network + mount namespace
// (bench-host.ts) with one veth on a bridge that has no address and no
// uplink. Runs are interleaved (lxc, lxd, docklet, then again) so that noise
// from other work on the machine hits all three alike; the first --warmup
// runs of each are not counted. Figures are medians.
//
// Prints a table, then one JSON line (also written to --out). Progress goes to
// stderr. Containers, daemons, namespaces, mounts and temp dirs are removed at
// the end, on error and on SIGINT/SIGTERM (teardown.ts). The Debian package
// lxd, once installed by this bench, stays installed.

import { spawnSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { detectHostFeatures, ImageBuilder, ImageStore } from '../../runtime/index.ts'
import type { NodeConfig } from '../../src/config.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { missingLxcPrerequisites } from '../../test/runtime/prerequisites.ts'
import { missingPrerequisite } from '../../test/support/netns-hosts.ts'
import { median, round } from '../raft/load.ts'
import { BenchHost, COMMAND_TIMEOUT_MS } from './bench-host.ts'
import {
  type DockletSetup,
  type HostCapacity,
  measureDockletVcluster50,
  measureDockletVnodeOnce,
  prepareDocklet,
  startNetnsDocklet,
  startSingleHostDocklet,
} from './docklet-vnodes.ts'
import { LxcBaseline, type StartSample, VNODE_LIMITS } from './lxc-baseline.ts'
import { ensureLxdInstalled, LxdPeer } from './lxd-peer.ts'
import { Teardown } from './teardown.ts'

/** What --only can pick; the plain-LXC baseline always runs (every other figure is read against it). */
type Part = 'lxd' | 'docklet' | 'vcluster'
const PARTS: readonly Part[] = ['lxd', 'docklet', 'vcluster']

interface BenchOptions {
  runs: number
  warmup: number
  vclusterNodes: number
  vclusterHosts: number
  parts: Set<Part>
  install: boolean
  outPath: string
  nodeLogLevel: NodeConfig['logLevel']
  /** Where the nodes' logs of the vcluster run go; null: nowhere. */
  nodeLogsDir: string | null
}

/** A reason in the JSON is cut to this many characters (a vcluster's errors repeat per vnode). */
const REASON_CHARS_MAX = 600
const VNODE_TARGET_MS = 500
const VCLUSTER_TARGET_MS = 15_000
const LXC_OVERHEAD_TARGET = 2
/**
 * What each docklet host offers vnodes, instead of what it would measure (2
 * cores here): enough that 50 vnodes of 1 cpu and 512 MB fit. The limits are
 * caps; an idle busybox vnode uses well under 1 MB and no CPU.
 */
const HOST_CAPACITY: HostCapacity = {
  capacityCpuCores: 64,
  capacityMemoryMb: 64 * 1024,
  capacityDiskMb: 256 * 1024,
}

const benchDir = dirname(fileURLToPath(import.meta.url))
const defaultOut = join(benchDir, '..', 'results', 'vnodes.json')

function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '1' },
      'vcluster-nodes': { type: 'string', default: '50' },
      'vcluster-hosts': { type: 'string', default: '3' },
      only: { type: 'string', default: PARTS.join(',') },
      'no-install': { type: 'boolean', default: false },
      out: { type: 'string', default: defaultOut },
      'node-log-level': { type: 'string', default: 'warn' },
      'node-logs': { type: 'string' },
    },
  })
  const integer = (name: string, text: string, min: number, max: number): number => {
    const value = Number(text)
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new Error(`--${name} must be a whole number from ${min} to ${max}, got "${text}".`)
    }
    return value
  }
  const parts = new Set<Part>()
  for (const word of values.only.split(',').map((part) => part.trim())) {
    if (!(PARTS as readonly string[]).includes(word)) {
      throw new Error(
        `--only takes a comma-separated list of ${PARTS.join(', ')}; "${word}" is none of them.`,
      )
    }
    parts.add(word as Part)
  }
  const levels: ReadonlyArray<NodeConfig['logLevel']> = ['trace', 'debug', 'info', 'warn', 'error', 'silent']
  const nodeLogLevel = values['node-log-level'] as NodeConfig['logLevel']
  if (!levels.includes(nodeLogLevel)) {
    throw new Error(`--node-log-level takes one of ${levels.join(', ')}; got "${nodeLogLevel}".`)
  }
  return {
    runs: integer('runs', values.runs, 1, 100),
    warmup: integer('warmup', values.warmup, 0, 10),
    vclusterNodes: integer('vcluster-nodes', values['vcluster-nodes'], 1, 200),
    vclusterHosts: integer('vcluster-hosts', values['vcluster-hosts'], 1, 8),
    parts,
    install: !values['no-install'],
    outPath: values.out,
    nodeLogLevel,
    nodeLogsDir: values['node-logs'] ?? null,
  }
}

function toolVersion(file: string, args: string[]): string | null {
  const result = spawnSync(file, args, { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS })
  if (result.status !== 0) return null
  return (result.stdout ?? '').split('\n')[0]?.trim() || null
}

/** The filesystem type of the disk the containers' trees and upper dirs are on. */
function filesystemOf(path: string): string {
  const result = spawnSync('stat', ['-f', '-c', '%T', path], {
    encoding: 'utf8',
    timeout: COMMAND_TIMEOUT_MS,
  })
  return result.stdout?.trim() || 'unknown'
}

/** Refuses to delete a temp dir while anything is mounted below it (rm would reach into the mount). */
function removeTempDir(dir: string): void {
  const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point === dir || point.startsWith(`${dir}/`))
  if (mounted.length > 0) {
    throw new Error(`${dir} still has mounts (${mounted.join(', ')}); unmount them, then delete it.`)
  }
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 })
}

interface Samples {
  total: number[]
  create: number[]
  start: number[]
  probes: number[]
}

const emptySamples = (): Samples => ({ total: [], create: [], start: [], probes: [] })

function record(samples: Samples, sample: StartSample): void {
  samples.total.push(sample.totalMs)
  if (sample.createMs !== null) samples.create.push(sample.createMs)
  samples.start.push(sample.startMs)
  samples.probes.push(sample.probes)
}

const ms = (values: number[]): number => round(median(values), 1)
const list = (values: number[]): number[] => values.map((value) => round(value, 1))

async function measure(options: BenchOptions): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error('bench:vnodes needs root (it starts containers); run it as root.')
  const missing = missingLxcPrerequisites()
  const tool = missingPrerequisite(['lxc-copy', 'lxc-destroy', 'nsenter', 'unshare', 'ip', 'tar'])
  if (tool !== null) missing.push(tool)
  if (missing.length > 0) throw new Error(`bench:vnodes cannot run: it needs ${missing.join('; ')}.`)

  const startedAt = performance.now()
  const loadAtStart = loadavg().map((value) => round(value, 2))
  const runner = new ExecaCommandRunner()
  const teardown = new Teardown()
  teardown.install()
  const dir = await mkdtemp(join(tmpdir(), 'dkvb-'))
  teardown.add({
    label: `delete ${dir}`,
    run: async () => removeTempDir(dir),
    runSync: () => removeTempDir(dir),
  })
  const tag = `${process.pid % 100_000}`
  const reasons: Record<string, string> = {}
  const lxc = emptySamples()
  const lxd = emptySamples()
  const docklet: number[] = []
  const dockletServer: number[] = []
  let lxdVersion: string | null = null
  let vclusterMs: number | null = null
  let vclusterServerMs: number | null = null
  let dockletSetupText: string | null = null
  let vclusterSetupText: string | null = null
  let summary: Record<string, unknown> = {}
  let rows: string[][] = []
  try {
    log('building the busybox image with docklet’s ImageBuilder')
    const store = new ImageStore({ dir: join(dir, 'images'), runner })
    await store.open()
    const image = await new ImageBuilder({ store, runner }).buildBusybox()
    const rootfs = store.rootfsPath(image.hash)

    log('making the bench host (network + mount namespace with an address-less bridge)')
    const host = await BenchHost.create({ root: runner, teardown, name: `dkvb${tag}`, dir })
    const baseline = await LxcBaseline.create({
      host,
      teardown,
      lxcpath: join(dir, 'lxc'),
      rootfs,
      namePrefix: `dkvb${tag}-lxc-`,
    })

    let lxdPeer: LxdPeer | null = null
    if (options.parts.has('lxd')) {
      try {
        lxdVersion = await ensureLxdInstalled(runner, { install: options.install, log })
        log(`starting a private LXD ${lxdVersion} daemon and importing the image`)
        lxdPeer = await LxdPeer.start({
          host,
          teardown,
          root: runner,
          dir: join(dir, 'lxd-peer'),
          rootfs,
          namePrefix: `dkvb${tag}-lxd-`,
          log,
        })
      } catch (error) {
        reasons.lxd_reason = (error as Error).message
        log(`LXD: ${reasons.lxd_reason}`)
      }
    } else reasons.lxd_reason = 'not measured (--only)'

    let dockletSetup: DockletSetup | null = null
    if (options.parts.has('docklet')) {
      try {
        log('starting a docklet node on this machine (docklet init --detach, lxc runtime)')
        dockletSetup = await startSingleHostDocklet({ dir, teardown, runner, capacity: HOST_CAPACITY })
        dockletSetupText = dockletSetup.description
        await prepareDocklet(dockletSetup, { vnodes: 1 })
      } catch (error) {
        reasons.docklet_reason = (error as Error).message
        log(`docklet: ${reasons.docklet_reason}`)
        await dockletSetup?.stop().catch(() => {})
        dockletSetup = null
      }
    } else reasons.docklet_reason = 'not measured (--only)'

    const total = options.warmup + options.runs
    for (let run = 0; run < total; run++) {
      if (teardown.stopping) throw new Error('Interrupted by a signal.')
      const counted = run >= options.warmup
      const label = counted ? `run ${run - options.warmup + 1}/${options.runs}` : `warm-up ${run + 1}`
      const parts: string[] = []
      const lxcSample = await baseline.measureOnce(run)
      if (counted) record(lxc, lxcSample)
      parts.push(`lxc ${lxcSample.totalMs.toFixed(0)} ms`)
      if (lxdPeer !== null) {
        try {
          const sample = await lxdPeer.measureOnce(run)
          if (counted) record(lxd, sample)
          parts.push(`lxd ${sample.totalMs.toFixed(0)} ms`)
        } catch (error) {
          reasons.lxd_reason = `LXD failed in ${label}: ${(error as Error).message}`
          log(reasons.lxd_reason)
          lxdPeer = null
        }
      }
      if (dockletSetup !== null) {
        try {
          const sample = await measureDockletVnodeOnce(dockletSetup, `dkvb${tag}-${run}`)
          if (counted) {
            docklet.push(sample.ms)
            if (sample.serverMs !== null) dockletServer.push(sample.serverMs)
          }
          parts.push(`docklet ${sample.ms.toFixed(0)} ms (node ${sample.serverMs?.toFixed(0) ?? '?'} ms)`)
        } catch (error) {
          reasons.docklet_reason = `docklet failed in ${label}: ${(error as Error).message}`
          log(reasons.docklet_reason)
          await dockletSetup.stop().catch(() => {})
          dockletSetup = null
        }
      }
      log(`${label}: ${parts.join(', ')}`)
    }

    if (teardown.stopping) throw new Error('Interrupted by a signal.')
    if (options.parts.has('vcluster')) {
      let setup: DockletSetup | null = null
      try {
        if (options.vclusterHosts === 1) {
          setup =
            dockletSetup ?? (await startSingleHostDocklet({ dir, teardown, runner, capacity: HOST_CAPACITY }))
          dockletSetup = null
        } else {
          await dockletSetup?.stop()
          dockletSetup = null
          log(`starting ${options.vclusterHosts} docklet nodes in simulated hosts`)
          setup = await startNetnsDocklet({
            hosts: options.vclusterHosts,
            teardown,
            runner,
            capacity: HOST_CAPACITY,
            logLevel: options.nodeLogLevel,
          })
        }
        await prepareDocklet(setup, { vnodes: options.vclusterNodes })
        vclusterSetupText = setup.description
        log(`docklet: one vcluster of ${options.vclusterNodes} vnodes`)
        const timing = await measureDockletVcluster50(setup, {
          name: `dkvb${tag}-big`,
          nodes: options.vclusterNodes,
        })
        vclusterMs = timing.ms
        vclusterServerMs = timing.serverMs
        log(`docklet: ${options.vclusterNodes} vnodes running after ${vclusterMs.toFixed(0)} ms`)
      } catch (error) {
        reasons.vcluster50_reason = (error as Error).message
        log(`docklet vcluster: ${reasons.vcluster50_reason}`)
      } finally {
        if (setup !== null && options.nodeLogsDir !== null) {
          const logsDir = options.nodeLogsDir
          await mkdir(logsDir, { recursive: true })
          const outputs = setup.nodeOutputs()
          for (const [host, output] of outputs.entries())
            await writeFile(join(logsDir, `host-${host}.log`), output)
          log(`node logs of the vcluster run: ${outputs.length} file(s) in ${logsDir}`)
        }
        await setup?.stop().catch((error: unknown) => log(`stopping docklet: ${(error as Error).message}`))
      }
    } else reasons.vcluster50_reason = 'not measured (--only)'
    await dockletSetup?.stop()

    const lxcMedian = ms(lxc.total)
    // A system that failed half-way has no figure: its reason says why.
    const dockletMedian = docklet.length > 0 && reasons.docklet_reason === undefined ? ms(docklet) : null
    const lxdMedian = lxd.total.length > 0 && reasons.lxd_reason === undefined ? ms(lxd.total) : null
    const overhead = dockletMedian === null ? null : round(dockletMedian / lxcMedian, 2)
    const features = detectHostFeatures()
    summary = {
      docklet:
        dockletMedian === null && vclusterMs === null
          ? null
          : {
              vnode_start_ms_median: dockletMedian,
              vcluster50_ms: vclusterMs === null ? null : round(vclusterMs, 0),
              vnode_start_ms_samples: list(docklet),
              vnode_node_ms_median: dockletServer.length > 0 ? ms(dockletServer) : null,
              vcluster50_node_ms: vclusterServerMs === null ? null : round(vclusterServerMs, 0),
              vcluster_nodes: options.vclusterNodes,
              setup: dockletSetupText,
              vcluster_setup: vclusterSetupText,
              measured:
                '`docklet vcluster create` (CLI process included) until it returns with every vnode observed running; *_node_ms: from the API accepting the create to the last vnode reported running',
            },
      lxc: {
        vnode_start_ms_median: lxcMedian,
        vnode_start_ms_samples: list(lxc.total),
        copy_ms_median: ms(lxc.create),
        start_ms_median: ms(lxc.start),
        attach_probes_median: median(lxc.probes),
        measured: 'lxc-copy -s -B overlayfs + lxc-start -d until lxc-attach -- true succeeds',
      },
      lxd:
        lxdMedian === null
          ? null
          : {
              vnode_start_ms_median: lxdMedian,
              vnode_start_ms_samples: list(lxd.total),
              launch_ms_median: ms(lxd.start),
              exec_probes_median: median(lxd.probes),
              version: lxdVersion,
              measured: 'lxc launch (local image, dir pool) until lxc exec -- true succeeds',
            },
      ...Object.fromEntries(
        Object.entries(reasons).map(([key, text]) => [
          key,
          text.length > REASON_CHARS_MAX ? `${text.slice(0, REASON_CHARS_MAX)}…` : text,
        ]),
      ),
      targets: {
        vnode_under_500ms: dockletMedian === null ? null : dockletMedian < VNODE_TARGET_MS,
        no_slower_than_lxd: dockletMedian === null || lxdMedian === null ? null : dockletMedian <= lxdMedian,
        vcluster50_under_15s: vclusterMs === null ? null : vclusterMs < VCLUSTER_TARGET_MS,
        over_lxc: overhead,
        over_lxc_under_2x: overhead === null ? null : overhead < LXC_OVERHEAD_TARGET,
      },
      settings: {
        runs: options.runs,
        warmup: options.warmup,
        limits: VNODE_LIMITS,
        image: { hash: image.hash, bytes: image.size },
        network:
          'lxc and lxd: one veth on a bridge without address or uplink, in a private network namespace; docklet: as its node configures vnodes',
      },
      machine: {
        cpus: cpus().length,
        cpu_model: cpus()[0]?.model.trim() ?? 'unknown',
        mem_gb: round(totalmem() / 1024 ** 3, 1),
        kernel: release(),
        node: process.version,
        lxc: toolVersion('lxc-start', ['--version']),
        lxd: lxdVersion,
        cgroup_version: features.cgroupVersion,
        apparmor: features.apparmorAvailable,
        tmp_filesystem: filesystemOf(dir),
        load_average_at_start: loadAtStart,
        load_average_at_end: loadavg().map((value) => round(value, 2)),
        note: 'one machine shared with other work; every container, the LXD daemon and the docklet node share its CPUs',
      },
    }
    const row = (name: string, median: number | null, samples: number[], note: string): string[] => [
      name,
      median === null ? '-' : median.toFixed(1),
      samples.map((value) => value.toFixed(0)).join(' '),
      note,
    ]
    rows = [
      ['system', 'ms (median)', 'samples', ''],
      row('docklet', dockletMedian, docklet, reasons.docklet_reason ?? ''),
      row('lxc', lxcMedian, lxc.total, ''),
      row('lxd', lxdMedian, lxd.total, reasons.lxd_reason ?? ''),
      [],
      [
        `docklet vcluster of ${options.vclusterNodes} (ms)`,
        vclusterMs === null ? '-' : vclusterMs.toFixed(0),
        '',
        reasons.vcluster50_reason ?? `target < ${VCLUSTER_TARGET_MS}`,
      ],
      ['docklet / lxc', overhead === null ? '-' : String(overhead), '', `target < ${LXC_OVERHEAD_TARGET}`],
      ['bench wall time (s)', ((performance.now() - startedAt) / 1000).toFixed(1)],
    ]
  } finally {
    log('tearing down')
    const failures = await teardown.runAll()
    teardown.uninstall()
    if (failures.length > 0) {
      for (const failure of failures) log(`could not ${failure}`)
      process.exitCode = 1
    }
  }
  for (const row of rows) {
    const last = row.length - 1
    if (last >= 0 && row[last]!.length > 120) row[last] = `${row[last]!.slice(0, 120)}…`
  }
  const widths = rows.reduce<number[]>((acc, row) => {
    row.forEach((cell, index) => {
      acc[index] = Math.max(acc[index] ?? 0, cell.length)
    })
    return acc
  }, [])
  const table = rows
    .map((row) =>
      row
        .map((cell, index) => cell.padEnd(widths[index]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
  process.stdout.write(`\n${table}\n\n`)
  const line = JSON.stringify(summary)
  await mkdir(dirname(options.outPath), { recursive: true })
  await writeFile(options.outPath, `${line}\n`)
  process.stdout.write(`${line}\n`)
}

measure(parseOptions(process.argv.slice(2))).then(
  () => process.exit(),
  (error: unknown) => {
    process.stderr.write(`bench:vnodes failed: ${(error as Error).message}\n`)
    process.exit(1)
  },
)
