// What one seed simulates ("swarm testing", as TigerBeetle's VOPR does): every
// seed draws its own cluster size, Raft settings, network, disk, clock skew,
// fault rates and workload, so that across many seeds rare combinations come
// up (a lossy network with tiny snapshot chunks and a leader transfer during a
// one-way partition) that one hand-picked mix would never reach.

import type { DriverConfig, RaftConfig } from '../../consensus/config.ts'
import type { ClockSkew } from './sim-clock.ts'
import type { NetworkOptions } from './sim-network.ts'
import { SimRandom } from './sim-random.ts'
import type { StorageLatency } from './sim-storage.ts'

export const PartitionMode = {
  /** One node (often the leader) cut from the rest. */
  IsolateSingle: 'isolate-single',
  /** A random group of random size against the rest. */
  UniformSize: 'uniform-size',
  /** A minority (which may hold the leader) against a majority. */
  MajorityMinority: 'majority-minority',
  /** Random directed links cut, each on its own. */
  RandomLinks: 'random-links',
  /** Any of the above, drawn per partition. */
  Mixed: 'mixed',
} as const
export type PartitionMode = (typeof PartitionMode)[keyof typeof PartitionMode]

export interface FaultPlan {
  seed: number
  nodeCount: number
  clientCount: number
  keyCount: number
  raft: Partial<RaftConfig>
  driver: Partial<DriverConfig>
  /** Per node, n1 first; one more than nodeCount for the node that joins later. */
  clocks: ClockSkew[]
  network: NetworkOptions
  storage: StorageLatency
  /**
   * How the KV state machine makes snapshots: at once (as a state machine
   * without snapshotAsync), or in slices of sliceBytes with a pause of
   * yieldMs (virtual) between them while the node goes on applying.
   */
  snapshots: { mode: 'sync' | 'async'; sliceBytes: number; yieldMs: number }
  /** How often fault dice are rolled. */
  faultIntervalMs: number
  partition: {
    mode: PartitionMode
    /** Only one direction of each cut link (a node hears but is not heard, or the reverse). */
    asymmetric: boolean
    /** Chance per fault interval that a partition starts, once the network was stable long enough. */
    probability: number
    durationMeanMs: number
    stabilityMs: number
  }
  clog: { probability: number; durationMeanMs: number }
  crash: { probability: number; downMeanMs: number; stabilityMs: number }
  /** Process pauses (SIGSTOP/SIGCONT): the node keeps its memory but runs nothing for a while. */
  pause: { probability: number; durationMeanMs: number }
  /** Chance per fault interval of a membership change (remove/add learner/promote/demote). */
  confChangeProbability: number
  /** Chance per fault interval of a leader transfer. */
  transferProbability: number
  workload: {
    thinkMeanMs: number
    /** The client gives up on an operation after this (it is then indeterminate). */
    opTimeoutMs: number
    readFraction: number
    /** Of reads: the share served through the log instead of ReadIndex. */
    logReadFraction: number
    /** Of ReadIndex reads: the share sent to a random node instead of the presumed leader. */
    followerReadFraction: number
    casFraction: number
    /** Writes carrying a client session, which are retried (same seq) after a timeout. */
    sessionFraction: number
  }
  safetyMs: number
  livenessMs: number
}

export interface PlanOptions {
  /** Virtual length of the safety phase; drawn in [20 s, 60 s] when not given. */
  safetyMs?: number
  /** Bound on the liveness phase; 30 s when not given. */
  livenessMs?: number
}

export function drawFaultPlan(seed: number, options: PlanOptions = {}): FaultPlan {
  const r = SimRandom.stream(seed, 'plan')
  const nodeCount = r.weighted<number>([
    [1, 1],
    [3, 5],
    [5, 4],
  ])
  const tickMs = 10
  const electionTimeoutTicks = r.between(8, 20)
  const heartbeatIntervalTicks = r.between(1, Math.min(3, electionTimeoutTicks - 1))
  const bothChecks = r.chance(0.75)
  const snapshotEntries = r.between(20, 200)
  const smallChunks = r.chance(0.3)
  const raft: Partial<RaftConfig> = {
    electionTimeoutTicks,
    heartbeatIntervalTicks,
    preVote: bothChecks || r.chance(0.5),
    checkQuorum: bothChecks || r.chance(0.5),
    messageBytesMax: r.chance(0.3) ? r.between(1024, 4096) : 1024 * 1024,
    // KV commands are far smaller; a small limit lets small messages exist.
    proposalBytesMax: 1024,
    entriesPerAppendMax: r.chance(0.3) ? r.between(1, 16) : 4096,
    inflightAppendsMax: r.chance(0.3) ? r.between(1, 8) : 256,
    snapshotChunksInflightMax: r.between(1, 4),
    readIndexPendingMax: r.chance(0.1) ? r.between(1, 8) : 65_536,
    transferTimeoutTicks: electionTimeoutTicks,
  }
  raft.snapshotChunkBytesMax = smallChunks ? r.between(16, 512) : raft.messageBytesMax
  const requestTimeoutMs = r.between(800, 3000)
  const driver: Partial<DriverConfig> = {
    tickMs,
    snapshotEntries,
    compactionKeepEntries: r.chance(0.4) ? 0 : r.between(0, Math.floor(snapshotEntries / 2)),
    requestTimeoutMs,
  }
  const skewMax = r.pick([0, 0.001, 0.01, 0.05, 0.1])
  const clocks: ClockSkew[] = []
  for (let i = 0; i <= nodeCount; i++) {
    clocks.push({ rate: 1 + r.range(-skewMax, skewMax), offsetMs: r.range(0, 1_000_000) })
  }
  const network: NetworkOptions = {
    delayMinMs: r.range(0, 3),
    delayMeanMs: r.range(0.5, 10),
    lossProbability: r.chance(0.2) ? 0 : r.range(0, 0.3),
    duplicateProbability: r.chance(0.3) ? 0 : r.range(0, 0.2),
    corruptProbability: r.chance(0.5) ? 0 : r.range(0, 0.01),
    pathCapacityMax: r.chance(0.3) ? r.between(8, 64) : 4096,
  }
  // Drawn from a stream of its own, so the draws above stay what they were before snapshots could be asynchronous.
  const s = SimRandom.stream(seed, 'snapshots')
  const snapshots: FaultPlan['snapshots'] = {
    mode: s.chance(0.75) ? 'async' : 'sync',
    // The simulator's states are a few hundred bytes: small slices make a snapshot span many yields.
    sliceBytes: s.chance(0.2) ? 1024 * 1024 : s.between(8, 128),
    yieldMs: s.chance(0.3) ? s.range(5, 50) : s.range(0, 2),
  }
  // Some seeds get a slow disk: syncs that take a good part of an election timeout.
  const storage: StorageLatency = r.chance(0.2)
    ? { writeMinMs: r.range(2, 10), writeMeanMs: r.range(10, 60) }
    : { writeMinMs: r.range(0, 2), writeMeanMs: r.range(0.1, 5) }
  return {
    seed,
    nodeCount,
    clientCount: r.between(2, 6),
    keyCount: r.between(3, 8),
    raft,
    driver,
    clocks,
    network,
    storage,
    snapshots,
    faultIntervalMs: 100,
    partition: {
      mode: r.pick(Object.values(PartitionMode)),
      asymmetric: r.chance(0.3),
      probability: r.chance(0.2) ? 0 : r.range(0.005, 0.08),
      durationMeanMs: r.range(200, 4000),
      stabilityMs: r.range(100, 3000),
    },
    clog: { probability: r.chance(0.5) ? 0 : r.range(0, 0.01), durationMeanMs: r.range(50, 1000) },
    crash: {
      probability: r.chance(0.2) ? 0 : r.range(0.001, 0.015),
      downMeanMs: r.range(100, 3000),
      stabilityMs: r.range(0, 2000),
    },
    pause: { probability: r.chance(0.5) ? 0 : r.range(0, 0.005), durationMeanMs: r.range(100, 2000) },
    confChangeProbability: r.chance(0.3) ? 0 : r.range(0.005, 0.05),
    transferProbability: r.chance(0.3) ? 0 : r.range(0.005, 0.03),
    workload: {
      thinkMeanMs: r.range(2, 60),
      opTimeoutMs: requestTimeoutMs + r.between(0, 1000),
      readFraction: r.range(0.2, 0.5),
      logReadFraction: r.range(0, 0.3),
      followerReadFraction: r.range(0, 0.4),
      casFraction: r.range(0.1, 0.4),
      sessionFraction: r.range(0, 1),
    },
    safetyMs: options.safetyMs ?? r.between(20_000, 60_000),
    livenessMs: options.livenessMs ?? 30_000,
  }
}

/** One line that says what a seed drew, for failure reports. */
export function describePlan(plan: FaultPlan): string {
  const n = plan.network
  const pct = (p: number) => `${(p * 100).toFixed(1)}%`
  return [
    `nodes=${plan.nodeCount} clients=${plan.clientCount} keys=${plan.keyCount}`,
    `election=${plan.raft.electionTimeoutTicks}t hb=${plan.raft.heartbeatIntervalTicks}t preVote=${plan.raft.preVote} checkQuorum=${plan.raft.checkQuorum}`,
    `snapEvery=${plan.driver.snapshotEntries} keep=${plan.driver.compactionKeepEntries} chunk=${plan.raft.snapshotChunkBytesMax}B snap=${plan.snapshots.mode === 'sync' ? 'sync' : `async/${plan.snapshots.sliceBytes}B/${plan.snapshots.yieldMs.toFixed(1)}ms`}`,
    `delay=${n.delayMinMs.toFixed(1)}+${n.delayMeanMs.toFixed(1)}ms loss=${pct(n.lossProbability)} dup=${pct(n.duplicateProbability)} corrupt=${pct(n.corruptProbability)}`,
    `partition=${plan.partition.mode}${plan.partition.asymmetric ? '/asym' : ''}@${pct(plan.partition.probability)} crash=${pct(plan.crash.probability)} pause=${pct(plan.pause.probability)} disk=${plan.storage.writeMinMs.toFixed(1)}+${plan.storage.writeMeanMs.toFixed(1)}ms conf=${pct(plan.confChangeProbability)} transfer=${pct(plan.transferProbability)}`,
    `safety=${plan.safetyMs}ms`,
  ].join(' ')
}
