// Runs the deterministic simulator (test/sim/simulator.ts) over a fixed set of
// 200 seeds: each seed draws its own cluster, faults and workload, runs the
// real RaftNode driver and core with the KV state machine on a simulated
// clock, network and disk for a short safety phase (5 s of virtual time),
// then heals everything and requires a leader, a committed write and
// converged members within 30 s of virtual time. Safety is checked all along
// (one leader per term, committed logs agree, applied entries are the
// committed ones) and at the end (acknowledged writes are committed, every
// key's history is linearizable). A failure names the seed; replay it with
// `npm run sim -- --seed N --verbose`. Also checks that one seed replays to
// the same event trace, that the seeds together really exercised the faults
// (and snapshots built in the background while entries were applied), and
// that the checks catch two deliberate bugs: a disk that loses synced writes,
// and reads served without ReadIndex.

import { describe, expect, it } from 'vitest'
import { drawFaultPlan } from './fault-plan.ts'
import { runSimulation, type SimStats } from './simulator.ts'

/** Short runs keep 200 seeds within about a minute on two cores; the CLI runs long ones. */
const SAFETY_MS = 5_000
const SEED_FIRST = 1
const SEEDS_PER_CASE = 50
const CASES = 4

const totals = {
  seeds: 0,
  crashes: 0,
  pauses: 0,
  partitions: 0,
  snapshotsInstalled: 0,
  snapshotsTaken: 0,
  appliesDuringSnapshots: 0,
  snapshotsChecked: 0,
  confChanges: 0,
  transfers: 0,
  leaderChanges: 0,
  indeterminate: 0,
  badFrames: 0,
  lostWrites: 0,
}

function addTotals(stats: SimStats): void {
  totals.seeds++
  totals.crashes += stats.crashes
  totals.pauses += stats.pauses
  totals.partitions += stats.partitions
  totals.snapshotsInstalled += stats.snapshotsInstalled
  totals.snapshotsTaken += stats.snapshotsTaken
  totals.appliesDuringSnapshots += stats.appliesDuringSnapshots
  totals.snapshotsChecked += stats.snapshotsChecked
  totals.confChanges += stats.confChanges
  totals.transfers += stats.transfers
  totals.leaderChanges += stats.leaderChanges
  totals.indeterminate += stats.indeterminate
  totals.badFrames += stats.badFrames
  totals.lostWrites += stats.lostWrites
}

describe('deterministic simulation of the Raft driver and core', () => {
  for (let c = 0; c < CASES; c++) {
    const first = SEED_FIRST + c * SEEDS_PER_CASE
    const last = first + SEEDS_PER_CASE - 1
    it(`keeps every safety property and recovers after healing for seeds ${first}..${last}`, async () => {
      const failures: string[] = []
      for (let seed = first; seed <= last; seed++) {
        const result = await runSimulation(seed, { safetyMs: SAFETY_MS })
        addTotals(result.stats)
        if (!result.ok) {
          failures.push(
            `seed ${seed}: ${result.violation}\n  plan: ${result.plan}\n  replay: npm run sim -- --seed ${seed} --safety-ms ${SAFETY_MS} --verbose`,
          )
          break
        }
        if (result.undecided !== null) failures.push(`seed ${seed}: ${result.undecided}`)
      }
      expect(failures).toEqual([])
    })
  }

  it('exercised crashes, pauses, partitions, snapshots, membership changes and transfers across the seeds', () => {
    expect(totals.seeds).toBe(SEEDS_PER_CASE * CASES)
    expect(totals.crashes).toBeGreaterThan(50)
    expect(totals.pauses).toBeGreaterThan(10)
    expect(totals.partitions).toBeGreaterThan(50)
    expect(totals.snapshotsInstalled).toBeGreaterThan(20)
    expect(totals.snapshotsTaken).toBeGreaterThan(100)
    // Snapshots built in slices really overlapped with applying entries.
    expect(totals.appliesDuringSnapshots).toBeGreaterThan(100)
    // Snapshots on disk were compared with the state the committed log gives at their index.
    expect(totals.snapshotsChecked).toBeGreaterThan(100)
    expect(totals.confChanges).toBeGreaterThan(20)
    expect(totals.transfers).toBeGreaterThan(10)
    expect(totals.indeterminate).toBeGreaterThan(0)
    expect(totals.badFrames).toBeGreaterThan(0)
    expect(totals.lostWrites).toBeGreaterThan(0)
  })

  it('replays a seed exactly: two runs give the same trace digest and the same counts', async () => {
    const a = await runSimulation(28, { safetyMs: SAFETY_MS })
    const b = await runSimulation(28, { safetyMs: SAFETY_MS })
    expect(a.ok).toBe(true)
    expect(b.digest).toBe(a.digest)
    expect(b.stats).toEqual(a.stats)
    const other = await runSimulation(29, { safetyMs: SAFETY_MS })
    expect(other.digest).not.toBe(a.digest)
  })

  it('reports a violation when the disk forgets writes it acknowledged as synced', async () => {
    // A lone node that loses its own synced log re-uses indexes it had
    // committed: the committed-log check must see the two versions.
    const violations: string[] = []
    for (let seed = 1; seed <= 100 && violations.length === 0; seed++) {
      const plan = drawFaultPlan(seed)
      if (plan.nodeCount !== 1 || plan.crash.probability === 0) continue
      const result = await runSimulation(seed, {
        safetyMs: SAFETY_MS,
        sabotage: { forgetSyncedWrites: true },
      })
      if (!result.ok) violations.push(result.violation ?? '')
    }
    expect(violations).toHaveLength(1)
    expect(violations[0]).toMatch(/^safety: committed logs diverge/)
  })

  it("reports a linearizability violation when reads skip ReadIndex and take any node's local state", async () => {
    const result = await runSimulation(1, { safetyMs: SAFETY_MS, sabotage: { staleReads: true } })
    expect(result.ok).toBe(false)
    expect(result.violation).toMatch(/^safety: key k\d+ is not linearizable/)
  })
})
