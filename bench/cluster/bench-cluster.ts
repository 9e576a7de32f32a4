// npm run bench:cluster [-- --join-rounds 2 --failover-trials 5 --tick-ms 20 --election-ticks 10
//                          --only docklet|etcd --out bench/results/cluster.json]
//
// Membership and failover of real docklet nodes (driven through the CLI, as a
// person would) against etcd doing the same on this machine:
//
// - join to voter: docklet: from launching `docklet join ... --detach` until
//   the leader's status lists the new member as a voter (maxVoters 7, so that
//   the 3rd, 5th and 7th joins each end in a promotion; the 2nd, 4th and 6th
//   stay standbys until the next join and are not sampled). etcd: from the
//   `member add` request (HTTP/JSON gateway) through starting the new member
//   until `member list` shows it started and voting (etcd adds voters
//   directly; a static 3-member cluster grows to 7).
// - failover: SIGKILL the leader of a 3-member cluster, then the time until
//   the first write through the CLI succeeds: `docklet token create` on a
//   survivor, one call after the other (the node retries internally until a
//   leader answers); `etcdctl put` on a survivor, a new call every 50 ms (an
//   etcd proposal forwarded to the dead leader is lost and its call waits for
//   its timeout, so single calls would measure the client's timeout). The
//   time until the survivors agree on a new leader is shown as well.
//
// Both use the same election timing: heartbeat every tick, election timeout
// electionTicks x tick (randomized up to twice that by both), pre-vote on.
// Prints a table, then one JSON line (also written to --out). Progress goes
// to stderr. Every process and temp dir is removed at the end, or on a crash.

import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { ProcessCluster, sleep, waitFor } from '../../test/support/process-cluster.ts'
import { etcdVersion } from '../raft/etcd-cluster.ts'
import { median, round } from '../raft/load.ts'
import { ProcessRegistry } from '../raft/process-registry.ts'
import { EtcdGroup } from './etcd-group.ts'

interface BenchOptions {
  joinRounds: number
  failoverTrials: number
  tickMs: number
  electionTicks: number
  systems: Array<'docklet' | 'etcd'>
  outPath: string
}

interface SystemResult {
  join_ms: number[]
  /** docklet only: until `docklet join --detach` returned (the node answers on its socket). */
  join_cli_ms: number[]
  failover_ms: number[]
  new_leader_ms: number[]
  error?: string
}

const clusterSizeMax = 7
const failoverGiveUpMs = 30_000
const etcdProbeIntervalMs = 50
const etcdProbesInflightMax = 32

const benchDir = dirname(fileURLToPath(import.meta.url))
const defaultOut = join(benchDir, '..', 'results', 'cluster.json')

function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      'join-rounds': { type: 'string', default: '2' },
      'failover-trials': { type: 'string', default: '5' },
      'tick-ms': { type: 'string', default: '20' },
      'election-ticks': { type: 'string', default: '10' },
      only: { type: 'string' },
      out: { type: 'string', default: defaultOut },
    },
  })
  const integer = (name: string, text: string, min: number, max: number) => {
    const value = Number(text)
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new Error(`--${name} must be a whole number from ${min} to ${max}, got "${text}".`)
    }
    return value
  }
  const only = values.only
  if (only !== undefined && only !== 'docklet' && only !== 'etcd') {
    throw new Error(`--only must be docklet or etcd, got "${only}".`)
  }
  return {
    joinRounds: integer('join-rounds', values['join-rounds'], 1, 10),
    failoverTrials: integer('failover-trials', values['failover-trials'], 1, 50),
    tickMs: integer('tick-ms', values['tick-ms'], 5, 1_000),
    electionTicks: integer('election-ticks', values['election-ticks'], 5, 100),
    systems: only === undefined ? ['docklet', 'etcd'] : [only],
    outPath: values.out,
  }
}

// ------------------------------------------------------------------ docklet

function dockletCluster(options: BenchOptions, maxVoters: number): ProcessCluster {
  return new ProcessCluster({
    name: 'bench-docklet-',
    config: {
      tickMs: options.tickMs,
      electionTimeoutTicks: options.electionTicks,
      heartbeatIntervalTicks: 1,
      maxVoters,
      offlineThresholdMs: 15_000,
      requestTimeoutMs: 10_000,
      snapshotEntries: 10_000,
      logLevel: 'warn',
    },
  })
}

async function dockletJoins(options: BenchOptions): Promise<{ voter: number[]; cli: number[] }> {
  const voter: number[] = []
  const cli: number[] = []
  for (let round = 1; round <= options.joinRounds; round++) {
    const cluster = dockletCluster(options, clusterSizeMax)
    try {
      await cluster.init()
      for (let size = 2; size <= clusterSizeMax; size++) {
        const { token } = await cluster.cliOk<{ token: string }>(0, ['token', 'create'])
        // Even sizes: the new member waits as a standby for a partner (voters stay odd); not sampled.
        if (size % 2 === 0) {
          await cluster.joinWithToken(token, { via: 0 })
          continue
        }
        const known = new Set((await cluster.quickStatus(0)).members.map((m) => m.id))
        const startedAt = performance.now()
        // Watch the leader while the CLI runs: the member may be a voter before `join --detach` returns.
        let voterMs = Number.NaN
        let failed = false
        const watching = (async () => {
          while (Number.isNaN(voterMs) && !failed && performance.now() - startedAt < 30_000) {
            const status = await cluster.quickStatus(0).catch(() => null)
            if (status?.members.some((m) => !known.has(m.id) && m.role === 'voter'))
              voterMs = performance.now() - startedAt
            else await sleep(20)
          }
        })()
        try {
          await cluster.joinWithToken(token, { via: 0 })
        } catch (error) {
          failed = true
          throw error
        }
        const cliMs = performance.now() - startedAt
        await watching
        if (Number.isNaN(voterMs)) {
          throw new Error(
            `docklet: member ${size} did not become a voter within 30 s.\n${cluster.logTails()}`,
          )
        }
        voter.push(voterMs)
        cli.push(cliMs)
        log(
          `docklet join round ${round}: member ${size} is a voter ${voterMs.toFixed(0)} ms after \`docklet join\` started (the CLI returned after ${cliMs.toFixed(0)} ms)`,
        )
      }
    } finally {
      await cluster.cleanup()
    }
  }
  return { voter, cli }
}

async function dockletFailover(options: BenchOptions): Promise<{ failover: number[]; leader: number[] }> {
  const failover: number[] = []
  const leader: number[] = []
  const cluster = dockletCluster(options, 3)
  try {
    await cluster.init()
    await cluster.join(2)
    await waitFor(
      async () => (await cluster.quickStatus(0)).members.filter((m) => m.role === 'voter').length === 3,
      'three voters',
      30_000,
    )
    for (let trial = 1; trial <= options.failoverTrials; trial++) {
      const old = await cluster.waitLeader(30_000)
      await cluster.waitConverged(30_000)
      const survivors = cluster.running().filter((i) => i !== old)
      const writer = survivors[0]!
      const killedAt = performance.now()
      const killed = cluster.kill(old)
      let leaderMs = Number.NaN
      const watching = (async () => {
        while (performance.now() - killedAt < failoverGiveUpMs) {
          const statuses = await Promise.all(survivors.map((i) => cluster.quickStatus(i).catch(() => null)))
          const id = statuses[0]?.leader?.id
          if (
            id !== undefined &&
            id !== cluster.node(old).id &&
            statuses.every((s) => s?.leader?.id === id)
          ) {
            leaderMs = performance.now() - killedAt
            return
          }
          await sleep(10)
        }
      })()
      let writeMs = Number.NaN
      while (performance.now() - killedAt < failoverGiveUpMs) {
        const result = await cluster.cli(writer, ['token', 'create'])
        if (result.code === 0) {
          writeMs = performance.now() - killedAt
          break
        }
        log(`docklet failover trial ${trial}: a write failed: ${result.stdout.trim()}`)
      }
      await Promise.all([killed, watching])
      if (Number.isNaN(writeMs))
        throw new Error(`docklet: no write succeeded within ${failoverGiveUpMs} ms of the kill.`)
      failover.push(writeMs)
      leader.push(leaderMs)
      log(
        `docklet failover trial ${trial}: new leader after ${leaderMs.toFixed(0)} ms, first CLI write after ${writeMs.toFixed(0)} ms`,
      )
      await cluster.restart(old)
    }
  } finally {
    await cluster.cleanup()
  }
  return { failover, leader }
}

// ------------------------------------------------------------------ etcd

function etcdTiming(options: BenchOptions) {
  return { heartbeatIntervalMs: options.tickMs, electionTimeoutMs: options.tickMs * options.electionTicks }
}

async function etcdAdds(
  registry: ProcessRegistry,
  version: string,
  options: BenchOptions,
): Promise<number[]> {
  const samples: number[] = []
  for (let round = 1; round <= options.joinRounds; round++) {
    const group = new EtcdGroup(registry, { version, timing: etcdTiming(options) })
    try {
      await group.start(3)
      while (group.size() < clusterSizeMax) {
        const ms = await group.addMember(30_000)
        samples.push(ms)
        log(
          `etcd add round ${round}: member ${group.size()} started and voting ${ms.toFixed(0)} ms after member add`,
        )
      }
    } finally {
      await group.stop()
    }
  }
  return samples
}

async function etcdFailover(
  registry: ProcessRegistry,
  version: string,
  options: BenchOptions,
): Promise<{ failover: number[]; leader: number[] }> {
  const failover: number[] = []
  const leader: number[] = []
  const group = new EtcdGroup(registry, { version, timing: etcdTiming(options) })
  try {
    await group.start(3)
    for (let trial = 1; trial <= options.failoverTrials; trial++) {
      await group.waitCaughtUp(30_000)
      const old = await group.leader(30_000)
      const survivors = group.running().filter((m) => m !== old)
      const writer = survivors[0]!
      const killedAt = performance.now()
      const killed = group.kill(old)
      let leaderMs = Number.NaN
      const watching = group.leader(failoverGiveUpMs).then(() => {
        leaderMs = performance.now() - killedAt
      })
      let writeMs = Number.NaN
      let inflight = 0
      let probes = 0
      const pending: Array<Promise<void>> = []
      while (Number.isNaN(writeMs) && performance.now() - killedAt < failoverGiveUpMs) {
        if (inflight < etcdProbesInflightMax) {
          inflight++
          probes++
          pending.push(
            group.put(writer, `failover-${trial}-${probes}`, 'x').then((ok) => {
              inflight--
              if (ok && Number.isNaN(writeMs)) writeMs = performance.now() - killedAt
            }),
          )
        }
        await sleep(etcdProbeIntervalMs)
      }
      await Promise.all([killed, watching, ...pending])
      if (Number.isNaN(writeMs))
        throw new Error(`etcd: no put succeeded within ${failoverGiveUpMs} ms of the kill.`)
      failover.push(writeMs)
      leader.push(leaderMs)
      log(
        `etcd failover trial ${trial}: new leader after ${leaderMs.toFixed(0)} ms, first etcdctl put after ${writeMs.toFixed(0)} ms (${probes} calls)`,
      )
      group.restart(old)
    }
  } finally {
    await group.stop()
  }
  return { failover, leader }
}

// ------------------------------------------------------------------ report

function cell(values: number[]): string {
  if (values.length === 0) return 'n/a'
  const sorted = [...values].sort((a, b) => a - b)
  return `${median(values).toFixed(0)} (${sorted[0]!.toFixed(0)}-${sorted[sorted.length - 1]!.toFixed(0)}, n=${values.length})`
}

function table(results: Record<string, SystemResult>): string {
  const rows: Array<[string, string, string]> = [
    ['ms: median (min-max, n)', 'docklet', 'etcd'],
    ['join / member add -> voter', cell(results.docklet?.join_ms ?? []), cell(results.etcd?.join_ms ?? [])],
    ['join -> `join --detach` returned', cell(results.docklet?.join_cli_ms ?? []), '-'],
    [
      'SIGKILL leader -> first CLI write',
      cell(results.docklet?.failover_ms ?? []),
      cell(results.etcd?.failover_ms ?? []),
    ],
    [
      'SIGKILL leader -> new leader agreed',
      cell(results.docklet?.new_leader_ms ?? []),
      cell(results.etcd?.new_leader_ms ?? []),
    ],
  ]
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]!.length)))
  return rows.map((r) => r.map((text, c) => text.padEnd(widths[c]!)).join('  ')).join('\n')
}

function loadAverage(): string {
  try {
    return execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8', timeout: 2_000 }).trim()
  } catch {
    return 'unknown'
  }
}

async function main(): Promise<void> {
  if (Number(process.versions.node.split('.')[0]) < 22) {
    throw new Error(
      `bench:cluster needs Node 22 or newer (this is ${process.version}); run it with /opt/node24/bin/node.`,
    )
  }
  const options = parseOptions(process.argv.slice(2))
  const registry = new ProcessRegistry()
  const results: Record<string, SystemResult> = {}
  const electionMs = options.tickMs * options.electionTicks
  log(
    `bench:cluster: heartbeat ${options.tickMs} ms, election timeout ${electionMs} ms (both systems); load average ${loadAverage()}`,
  )
  let version: string | null = null
  try {
    for (const system of options.systems) {
      const result: SystemResult = { join_ms: [], join_cli_ms: [], failover_ms: [], new_leader_ms: [] }
      results[system] = result
      try {
        if (system === 'docklet') {
          const joins = await dockletJoins(options)
          result.join_ms = joins.voter
          result.join_cli_ms = joins.cli
          const failover = await dockletFailover(options)
          result.failover_ms = failover.failover
          result.new_leader_ms = failover.leader
        } else {
          version = etcdVersion()
          result.join_ms = await etcdAdds(registry, version, options)
          const failover = await etcdFailover(registry, version, options)
          result.failover_ms = failover.failover
          result.new_leader_ms = failover.leader
        }
      } catch (error) {
        result.error = (error as Error).message
        log(`${system} failed: ${result.error}`)
      }
    }
  } finally {
    await registry.close()
  }

  const rounded = (values: number[]) => values.map((v) => round(v, 1))
  const medianOrNull = (values: number[]) => (values.length === 0 ? null : round(median(values), 1))
  const docklet = results.docklet
  const etcd = results.etcd
  const summary = {
    docklet: {
      join_to_voter_ms_median: medianOrNull(docklet?.join_ms ?? []),
      failover_ms_median: medianOrNull(docklet?.failover_ms ?? []),
      new_leader_ms_median: medianOrNull(docklet?.new_leader_ms ?? []),
      join_to_voter_ms: rounded(docklet?.join_ms ?? []),
      join_cli_return_ms: rounded(docklet?.join_cli_ms ?? []),
      failover_ms: rounded(docklet?.failover_ms ?? []),
      ...(docklet?.error === undefined ? {} : { error: docklet.error }),
    },
    etcd: {
      member_add_ms_median: medianOrNull(etcd?.join_ms ?? []),
      failover_ms_median: medianOrNull(etcd?.failover_ms ?? []),
      new_leader_ms_median: medianOrNull(etcd?.new_leader_ms ?? []),
      member_add_ms: rounded(etcd?.join_ms ?? []),
      failover_ms: rounded(etcd?.failover_ms ?? []),
      version,
      ...(etcd?.error === undefined ? {} : { error: etcd.error }),
    },
    settings: {
      heartbeat_interval_ms: options.tickMs,
      election_timeout_ms: electionMs,
      pre_vote: true,
      docklet_write: 'docklet token create --json on a survivor, one call after the other',
      etcd_write: `etcdctl put on a survivor, a new call every ${etcdProbeIntervalMs} ms`,
      docklet_join:
        'docklet join --detach until the leader lists it as voter (maxVoters 7; 3rd, 5th, 7th member)',
      etcd_join: 'member add + start until member list shows it started, not learner (4th to 7th member)',
      cpus: cpus().length,
      load_average_at_end: loadAverage(),
    },
  }
  process.stdout.write(`\n${table(results)}\n\n`)
  const line = JSON.stringify(summary)
  mkdirSync(dirname(options.outPath), { recursive: true })
  writeFileSync(options.outPath, `${line}\n`)
  process.stdout.write(`${line}\n`)
  if (docklet?.error !== undefined || etcd?.error !== undefined) process.exitCode = 1
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:cluster failed: ${(error as Error).message}\n`)
  process.exit(1)
})
