// npm run bench:raft [-- --duration-s 5 --warmup-s 1 --clients 1,64 --value-bytes 256 --failover-trials 5
//                        --only docklet|etcd --rounds 1 --out bench/results/raft.json --verbose]
//
// The docklet Raft KV (3 members, libp2p, classic-level with sync) against a
// 3-member etcd cluster on this machine, with the same load generator:
// closed-loop writes at each client count, failover time after SIGKILL of the
// leader, and peak RSS per member. Prints a table, then one JSON line (also
// written to bench/results/raft.json). Progress goes to stderr.
//
// Diagnostics: DOCKLET_BENCH_NODE_ARGS adds Node flags to every docklet member
// (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"), and DOCKLET_BENCH_LOG_DIR makes
// each member append its whole log there (Raft events with snapshot timings,
// event-loop stalls of 30 ms or more), not just the stderr tail kept here.
// DOCKLET_BENCH_LATENCY_DIR gets one CSV per system and client count with
// every measured write's completion time and latency.

import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { BenchCluster } from './bench-cluster.ts'
import { DockletCluster, dockletTiming } from './docklet-cluster.ts'
import { EtcdCluster, etcdVersion } from './etcd-cluster.ts'
import {
  defaultFailoverOptions,
  defaultLoadOptions,
  type LoadResult,
  measureFailover,
  median,
  round,
  runWriteLoad,
} from './load.ts'
import { measureLoadCeiling } from './load-ceiling.ts'
import { type MachineInfo, machineInfo } from './machine-info.ts'
import { ProcessRegistry } from './process-registry.ts'
import { RssSampler } from './rss-sampler.ts'

type SystemName = 'docklet' | 'etcd'

interface BenchOptions {
  durationMs: number
  warmupMs: number
  clients: number[]
  valueBytes: number
  failoverTrials: number
  systems: SystemName[]
  outPath: string
  /** Print the members' last stderr lines at the end of each system's run. */
  verbose: boolean
  /** Each system runs this many times, in alternating order; results are medians across rounds. */
  rounds: number
}

type PhaseResult = Pick<LoadResult, 'writes_per_s' | 'p50_ms' | 'p99_ms'> & {
  errors: number
  redirects: number
}

interface SystemResult {
  [phase: `c${number}`]: PhaseResult
  failover_ms_median?: number
  failover_ms?: number[]
  rss_mb_max?: number
  settings?: Record<string, string | number | boolean>
  /** Rounds combined into this result (see --rounds). */
  rounds?: number
  error?: string
}

const clientsMax = 1_024
/** Where to write per-write latency traces (see the header); unset: none. */
const latencyTraceDir = process.env.DOCKLET_BENCH_LATENCY_DIR || undefined
const loadCeilingDurationMs = 2_000
// Results live in the source tree's bench/results, also when running compiled from dist/bench/raft.
const benchDir = dirname(fileURLToPath(import.meta.url)).replace(/\/dist\/bench\//, '/bench/')

function log(line: string): void {
  process.stderr.write(`[bench:raft ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      'duration-s': { type: 'string', default: String(defaultLoadOptions.durationMs / 1000) },
      'warmup-s': { type: 'string', default: String(defaultLoadOptions.warmupMs / 1000) },
      clients: { type: 'string', default: '1,64' },
      'value-bytes': { type: 'string', default: String(defaultLoadOptions.valueBytes) },
      'failover-trials': { type: 'string', default: String(defaultFailoverOptions.trials) },
      only: { type: 'string' },
      out: { type: 'string', default: join(benchDir, '..', 'results', 'raft.json') },
      verbose: { type: 'boolean', default: false },
      rounds: { type: 'string', default: '1' },
    },
    strict: true,
  })
  const number = (name: string, text: string, min: number, max: number): number => {
    const n = Number(text)
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new Error(`--${name} must be a number between ${min} and ${max}, got "${text}".`)
    }
    return n
  }
  const clients = values.clients.split(',').map((c) => Math.round(number('clients', c.trim(), 1, clientsMax)))
  if (values.only !== undefined && values.only !== 'docklet' && values.only !== 'etcd') {
    throw new Error(`--only must be "docklet" or "etcd", got "${values.only}".`)
  }
  return {
    durationMs: number('duration-s', values['duration-s'], 0.1, 3_600) * 1000,
    warmupMs: number('warmup-s', values['warmup-s'], 0, 600) * 1000,
    clients: [...new Set(clients)],
    valueBytes: Math.round(number('value-bytes', values['value-bytes'], 1, 1024 * 1024)),
    failoverTrials: Math.round(number('failover-trials', values['failover-trials'], 0, 100)),
    systems: values.only === undefined ? ['docklet', 'etcd'] : [values.only],
    outPath: values.out,
    verbose: values.verbose,
    rounds: Math.round(number('rounds', values.rounds, 1, 20)),
  }
}

async function benchSystem(cluster: BenchCluster, options: BenchOptions): Promise<SystemResult> {
  const result: SystemResult = { settings: cluster.settings }
  const sampler = new RssSampler(() => cluster.pids())
  try {
    log(`${cluster.name}: starting 3 members`)
    await cluster.start()
    sampler.start()
    for (const clients of options.clients) {
      const leader = await cluster.findLeader(30_000)
      log(
        `${cluster.name}: ${clients} client(s), ${options.valueBytes} B values, ${options.warmupMs / 1000} s warm-up + ${options.durationMs / 1000} s against leader ${leader}`,
      )
      const load = await runWriteLoad(
        { url: cluster.url(leader), writes: cluster.writes },
        {
          ...defaultLoadOptions,
          clients,
          durationMs: options.durationMs,
          warmupMs: options.warmupMs,
          valueBytes: options.valueBytes,
          ...(latencyTraceDir === undefined
            ? {}
            : { latencyTracePath: join(latencyTraceDir, `${cluster.name}-c${clients}.csv`) }),
        },
      )
      log(
        `${cluster.name}: c${clients}: ${load.writes_per_s} writes/s, p50 ${load.p50_ms} ms, p99 ${load.p99_ms} ms, ${load.errors} errors, ${load.redirects} redirects${load.errorSamples.length > 0 ? `; errors: ${load.errorSamples.join(' | ')}` : ''}`,
      )
      result[`c${clients}`] = {
        writes_per_s: load.writes_per_s,
        p50_ms: load.p50_ms,
        p99_ms: load.p99_ms,
        errors: load.errors,
        redirects: load.redirects,
      }
    }
    if (options.failoverTrials > 0) {
      log(`${cluster.name}: failover, ${options.failoverTrials} trial(s)`)
      const times = await measureFailover(cluster, {
        ...defaultFailoverOptions,
        trials: options.failoverTrials,
        beforeKill: () => sampler.sampleNow(),
        log,
      })
      result.failover_ms = times.map((t) => round(t, 1))
      result.failover_ms_median = round(median(times), 1)
    }
  } catch (error) {
    result.error = (error as Error).message
    log(`${cluster.name}: FAILED: ${result.error}`)
    if (!options.verbose) log(cluster.stderrTails())
  } finally {
    if (options.verbose) log(cluster.stderrTails())
    sampler.stop()
    result.rss_mb_max = sampler.maxMb
    log(`${cluster.name}: stopping`)
    await cluster.stop()
  }
  return result
}

/** Medians across rounds for rates, latencies and failover (all trials pooled); the maximum for RSS. */
function combineRounds(rounds: SystemResult[], options: BenchOptions): SystemResult {
  if (rounds.length === 1) return rounds[0]!
  const combined: SystemResult = { settings: rounds[0]?.settings, rounds: rounds.length }
  const errors = rounds.flatMap((r) => (r.error === undefined ? [] : [r.error]))
  if (errors.length > 0) combined.error = errors.join(' | ')
  for (const c of options.clients) {
    const phases = rounds.flatMap((r) => (r[`c${c}`] === undefined ? [] : [r[`c${c}`]!]))
    if (phases.length === 0) continue
    combined[`c${c}`] = {
      writes_per_s: round(median(phases.map((p) => p.writes_per_s)), 1),
      p50_ms: round(median(phases.map((p) => p.p50_ms)), 3),
      p99_ms: round(median(phases.map((p) => p.p99_ms)), 3),
      errors: phases.reduce((sum, p) => sum + p.errors, 0),
      redirects: phases.reduce((sum, p) => sum + p.redirects, 0),
    }
  }
  const failovers = rounds.flatMap((r) => r.failover_ms ?? [])
  if (failovers.length > 0) {
    combined.failover_ms = failovers
    combined.failover_ms_median = round(median(failovers), 1)
  }
  combined.rss_mb_max = Math.max(...rounds.map((r) => r.rss_mb_max ?? 0))
  return combined
}

function formatTable(results: Partial<Record<SystemName, SystemResult>>, options: BenchOptions): string {
  const header = ['system']
  for (const c of options.clients) header.push(`c${c} w/s`, `c${c} p50 ms`, `c${c} p99 ms`)
  header.push('failover ms (median)', 'peak RSS MB (max member)')
  const rows: string[][] = [header]
  for (const name of options.systems) {
    const r = results[name]
    if (r === undefined) continue
    const row: string[] = [name]
    for (const c of options.clients) {
      const phase = r[`c${c}`]
      row.push(
        ...(phase === undefined
          ? ['-', '-', '-']
          : [phase.writes_per_s, phase.p50_ms, phase.p99_ms].map(String)),
      )
    }
    row.push(String(r.failover_ms_median ?? '-'), String(r.rss_mb_max ?? '-'))
    rows.push(row)
  }
  const widths = header.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)))
  const lines = rows.map((row) => row.map((cell, i) => cell.padStart(widths[i] ?? 0)).join('  '))
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '))
  return lines.join('\n')
}

function describeSettings(results: Partial<Record<SystemName, SystemResult>>, machine: MachineInfo): string {
  const lines = Object.entries(results).map(
    ([name, r]) =>
      `${name}: ${Object.entries(r?.settings ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(', ')}${r?.error === undefined ? '' : `\n  ERROR: ${r.error}`}`,
  )
  lines.push(
    `machine: ${machine.cpus} x ${machine.cpu_model}, ${machine.mem_gb} GB, node ${machine.node}, etcd ${machine.etcd_version ?? 'n/a'}`,
  )
  lines.push(`disk: ${machine.disk_fsync}`)
  if (machine.loadgen_ceiling !== undefined) {
    const c = machine.loadgen_ceiling
    lines.push(
      `load generator alone (no-op server, ${c.clients} clients): ${c.writes_per_s} writes/s, p50 ${c.p50_ms} ms`,
    )
  }
  lines.push(`note: ${machine.note}`)
  return lines.join('\n')
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  const version = options.systems.includes('etcd') ? etcdVersion() : null
  log('probing fdatasync latency')
  const machine = machineInfo(version)
  const registry = new ProcessRegistry({ stderrLinesMax: options.verbose ? 400 : 40 })
  const results: Partial<Record<SystemName, SystemResult>> = {}
  const ceilingClients = Math.max(...options.clients)
  try {
    log(`load generator ceiling: ${ceilingClients} client(s) against a no-op HTTP server`)
    const ceiling = await measureLoadCeiling(registry, {
      clients: ceilingClients,
      durationMs: loadCeilingDurationMs,
      valueBytes: options.valueBytes,
    })
    machine.loadgen_ceiling = {
      clients: ceilingClients,
      writes_per_s: ceiling.writes_per_s,
      p50_ms: ceiling.p50_ms,
    }
    log(`load generator ceiling: ${ceiling.writes_per_s} writes/s at ${ceilingClients} client(s)`)
    const perSystem = new Map<SystemName, SystemResult[]>(options.systems.map((name) => [name, []]))
    for (let round = 1; round <= options.rounds; round++) {
      // Alternate the order so slow drift in the machine's load does not always favour the same system.
      const order = round % 2 === 1 ? options.systems : [...options.systems].reverse()
      for (const system of order) {
        if (options.rounds > 1) log(`round ${round}/${options.rounds}: ${system}`)
        const cluster =
          system === 'etcd'
            ? new EtcdCluster(registry, {
                version: version!,
                timing: {
                  heartbeatIntervalMs: dockletTiming.tickMs,
                  electionTimeoutMs: dockletTiming.electionTimeoutMs,
                },
              })
            : new DockletCluster(registry)
        perSystem.get(system)!.push(await benchSystem(cluster, options))
      }
    }
    for (const [system, rounds] of perSystem) results[system] = combineRounds(rounds, options)
  } finally {
    await registry.close()
  }
  const report = { ...results, machine }
  const json = JSON.stringify(report)
  writeFileSync(options.outPath, `${JSON.stringify(report, null, 2)}\n`)
  log(`wrote ${options.outPath}`)
  process.stdout.write(`${formatTable(results, options)}\n\n${describeSettings(results, machine)}\n${json}\n`)
  return Object.values(results).some((r) => r?.error !== undefined) ? 1 : 0
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`bench:raft failed: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  },
)
