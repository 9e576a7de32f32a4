// The simulator's command line:
//   npm run sim -- --seed-start N --seeds K   runs seeds N..N+K-1
//   npm run sim -- --seed N [--verbose]       replays one seed (same result every time)
// Options: --safety-ms M (virtual length of the safety phase; default drawn
// per seed, 20-60 s), --liveness-ms M (default 30 s), --verbose (one line per
// notable event). Stops at the first violation, printing the seed and the
// reason, and exits 1. The last line printed is always a one-line JSON summary.

import { parseArgs } from 'node:util'
import { runSimulation, type SimStats } from './simulator.ts'

function usage(message: string): never {
  process.stderr.write(
    `${message}\nUsage: node test/sim/run-sim.ts [--seed N | --seed-start N --seeds K] [--safety-ms M] [--liveness-ms M] [--verbose]\n`,
  )
  process.exit(2)
}

function integer(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) usage(`--${name} must be a whole number >= 0, got ${value}.`)
  return n
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      'seed-start': { type: 'string' },
      seeds: { type: 'string' },
      'safety-ms': { type: 'string' },
      'liveness-ms': { type: 'string' },
      verbose: { type: 'boolean', default: false },
    },
  })
  const single = values.seed !== undefined
  const seedStart = single ? integer('seed', values.seed, 0) : integer('seed-start', values['seed-start'], 1)
  const seeds = single ? 1 : integer('seeds', values.seeds, 100)
  const safetyMs =
    values['safety-ms'] === undefined ? undefined : integer('safety-ms', values['safety-ms'], 0)
  const livenessMs =
    values['liveness-ms'] === undefined ? undefined : integer('liveness-ms', values['liveness-ms'], 0)
  const verbose = values.verbose === true
  const log = verbose ? (line: string) => process.stdout.write(`${line}\n`) : undefined

  const totals: Omit<SimStats, 'events' | 'virtualMs' | 'badFrames' | 'lostWrites' | 'indeterminate'> = {
    ops: 0,
    leaderChanges: 0,
    crashes: 0,
    pauses: 0,
    partitions: 0,
    snapshotsInstalled: 0,
    snapshotsTaken: 0,
    appliesDuringSnapshots: 0,
    snapshotsChecked: 0,
    confChanges: 0,
    transfers: 0,
  }
  let violations = 0
  let undecided = 0
  let ran = 0
  const started = performance.now()
  for (let seed = seedStart; seed < seedStart + seeds; seed++) {
    const result = await runSimulation(seed, { safetyMs, livenessMs, log })
    ran++
    for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += result.stats[key]
    if (result.undecided !== null) {
      undecided++
      process.stdout.write(`seed ${seed}: ${result.undecided}\n`)
    }
    if (verbose || single) {
      process.stdout.write(
        `seed ${seed}: ${result.ok ? 'ok' : 'VIOLATION'} digest ${result.digest} ${JSON.stringify(result.stats)}\n  ${result.plan}\n`,
      )
    }
    if (!result.ok) {
      violations++
      process.stdout.write(`VIOLATION seed ${seed}: ${result.violation}\n  plan: ${result.plan}\n`)
      process.stdout.write(`  replay: npm run sim -- --seed ${seed} --verbose\n`)
      break
    }
  }
  const summary = {
    seeds: ran,
    violations,
    undecided,
    seed_start: seedStart,
    ops: totals.ops,
    leader_changes: totals.leaderChanges,
    crashes: totals.crashes,
    pauses: totals.pauses,
    partitions: totals.partitions,
    snapshots_installed: totals.snapshotsInstalled,
    snapshots_taken: totals.snapshotsTaken,
    applies_during_snapshots: totals.appliesDuringSnapshots,
    snapshots_checked: totals.snapshotsChecked,
    conf_changes: totals.confChanges,
    transfers: totals.transfers,
    elapsed_ms: Math.round(performance.now() - started),
  }
  process.stdout.write(`${JSON.stringify(summary)}\n`)
  process.exitCode = violations > 0 ? 1 : 0
}

await main()
