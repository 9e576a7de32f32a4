// The deterministic simulator (after TigerBeetle's VOPR): N real RaftNode
// drivers with the real core and the KV state machine, in one process, on a
// simulated clock, network and disk, all driven by one event queue in virtual
// time and one seed.
//
// How determinism holds: nothing here or in consensus/ reads real time or real
// randomness; every timer, frame delivery, disk completion, fault and client
// step is an event of the queue. The driver runs its Ready loop in microtasks
// and awaits disk promises that only the queue resolves, so after each event
// the simulator lets the queued microtasks run (see drainMicrotasks) before
// taking the next event.
//
// A run has two phases. In the safety phase anything goes: crashes that lose
// unsynced writes, partitions (symmetric, one-way), loss, duplication,
// reordering, clogged paths, corrupted frames, clock skew, membership changes
// and leader transfers, while clients write and read. In the liveness phase
// the network heals, crashed nodes restart and faults stop; within a bound a
// leader must exist, a client write must commit and every member must reach
// the same applied index and state. Safety is checked all along (see
// safety-checker.ts) and at the end: acknowledged writes are in the committed
// log, and every key's history is linearizable.

import { allMembers, isJoint } from '../../consensus/membership.ts'
import { type RaftEvent, RaftNode } from '../../consensus/raft-node.ts'
import type { StateMachine } from '../../consensus/state-machine.ts'
import { type ConfChange, ConfChangeOp, ConfChangeTransition, type ConfState } from '../../consensus/types.ts'
import { type KvResult, KvStateMachine } from '../support/kv-state-machine.ts'
import { checkLinearizability } from '../support/linearizability.ts'
import { registerModel } from '../support/linearizability-model.ts'
import { EventKind, EventQueue } from './event-queue.ts'
import { describePlan, drawFaultPlan, type FaultPlan, PartitionMode } from './fault-plan.ts'
import { SafetyChecker } from './safety-checker.ts'
import { type ClientHost, type LiveNode, type Outcome, SimClient, type SimOperation } from './sim-client.ts'
import { type ClockSkew, SimClock } from './sim-clock.ts'
import { SimNetwork } from './sim-network.ts'
import { SimRandom } from './sim-random.ts'
import { SimStorage } from './sim-storage.ts'

export interface SimOptions {
  /** Virtual length of the safety phase (default: drawn per seed, 20-60 s). */
  safetyMs?: number
  /** Bound on the liveness phase (default 30 s). */
  livenessMs?: number
  /** Receives one line per notable event (crash, partition, role change...). */
  log?: (line: string) => void
  /** Wall-clock budget of the linearizability check. */
  checkTimeoutMs?: number
  /** Deliberate bugs in the simulated environment, to check that the checks catch them. */
  sabotage?: { forgetSyncedWrites?: boolean; staleReads?: boolean }
}

export interface SimStats {
  ops: number
  indeterminate: number
  leaderChanges: number
  crashes: number
  pauses: number
  partitions: number
  snapshotsInstalled: number
  snapshotsTaken: number
  /** Entries applied while a snapshot was being built in the background (async snapshot seeds). */
  appliesDuringSnapshots: number
  /** Snapshots on disk whose state was compared with the committed log's at their index. */
  snapshotsChecked: number
  confChanges: number
  transfers: number
  badFrames: number
  lostWrites: number
  events: number
  virtualMs: number
}

export interface SimResult {
  seed: number
  ok: boolean
  /** "safety: ..." or "liveness: ..." when ok is false. */
  violation: string | null
  /** Set when the linearizability check ran out of budget (not a violation, not a pass either). */
  undecided: string | null
  /** Digest of the event trace and the history: equal for two runs of one seed. */
  digest: string
  stats: SimStats
  plan: string
}

/** Wall-clock budget of the linearizability check by default. */
const CHECK_TIMEOUT_MS = 20_000
/**
 * Without pre-vote, a voter whose log and configuration lag far behind keeps
 * campaigning at ever higher terms, while the candidate that could win sits at
 * a lower term: the core (like etcd) ignores a Vote of a stale term without
 * answering, so that candidate never learns the higher term and the two terms
 * random-walk apart (seed 2258). The Raft paper (§5.1) and hashicorp/raft
 * answer such a Vote with the current term, which ends it; the core's tests
 * pin the etcd behaviour, so this is reported, not failed.
 */

/** How often the liveness phase looks at the cluster. */
const LIVENESS_POLL_MS = 20
/**
 * Events in one second of virtual time beyond which a run is stopped as a
 * message storm (a livelock that would otherwise run for hours). Healthy runs
 * stay near 5,000.
 */
const EVENTS_PER_VIRTUAL_SECOND_MAX = 50_000

interface SimNode {
  id: string
  founding: boolean
  started: boolean
  /** Running or starting (not crashed, not decommissioned). */
  up: boolean
  incarnation: number
  storage: SimStorage
  skew: ClockSkew
  clock: SimClock | null
  live: LiveNode | null
  /** Highest index applied (or restored) by the running incarnation. */
  lastApplied: number
  /** No crash before this time (crash stability window). */
  stableUntilMs: number
  /** Stopped for good in the liveness phase because it is no longer a member. */
  decommissioned: boolean
  /** The process is paused (SIGSTOP) until this virtual time. */
  pausedUntilMs: number
}

/**
 * Lets the microtasks queued by an event run: each `await` lets one more
 * generation of them run (those queued before it), so 64 of them cover the
 * driver's Ready loop, storage continuations and client steps, which chain
 * far fewer. (A full drain through setImmediate gives identical traces but
 * costs an event-loop turn per event, four times the whole run.) Work deeper
 * than that would simply go on after the next event: still deterministic.
 */
const MICROTASK_GENERATIONS = 64
const drainMicrotasks = async (): Promise<void> => {
  for (let i = 0; i < MICROTASK_GENERATIONS; i++) await null
}

interface CheckedStateMachineHooks {
  onApply: (data: Uint8Array, index: number, duringSnapshot: boolean) => void
  /** Offer snapshotAsync, and report a background snapshot that is not the state it was started at. */
  onSnapshotMismatch: (() => void) | null
}

/**
 * A state machine that reports every apply to the checker before passing it
 * on. It offers snapshotAsync only when the plan says so (without it the
 * driver takes the synchronous path a state machine like docklet's uses),
 * and then checks each background snapshot against the state encoded at once
 * when it started: applies and restores go on meanwhile.
 */
class CheckedStateMachine implements StateMachine<KvResult> {
  private readonly kv: KvStateMachine
  private readonly hooks: CheckedStateMachineHooks
  private snapshotsBuilding = 0
  readonly snapshotAsync?: (options: { signal: AbortSignal }) => Promise<Uint8Array>
  constructor(kv: KvStateMachine, hooks: CheckedStateMachineHooks) {
    this.kv = kv
    this.hooks = hooks
    const onMismatch = hooks.onSnapshotMismatch
    if (onMismatch !== null) {
      this.snapshotAsync = async (options) => {
        const expected = kv.snapshot()
        this.snapshotsBuilding++
        try {
          const bytes = await kv.snapshotAsync(options)
          if (!bytesEqual(bytes, expected)) onMismatch()
          return bytes
        } finally {
          this.snapshotsBuilding--
        }
      }
    }
  }
  apply(data: Uint8Array, index: number): KvResult {
    this.hooks.onApply(data, index, this.snapshotsBuilding > 0)
    return this.kv.apply(data, index)
  }
  snapshot(): Uint8Array {
    return this.kv.snapshot()
  }
  restore(data: Uint8Array): void {
    this.kv.restore(data)
  }
}

export class Simulation implements ClientHost {
  readonly seed: number
  readonly plan: FaultPlan
  readonly queue = new EventQueue()
  readonly checker = new SafetyChecker()
  private readonly options: SimOptions
  private readonly faultRandom: SimRandom
  private readonly network: SimNetwork
  private readonly nodes = new Map<string, SimNode>()
  private readonly foundingIds: string[]
  private readonly keys: string[]
  private readonly clients: SimClient[] = []
  private probe: SimClient | null = null
  private readonly history: SimOperation[] = []
  private readonly ackedValues: string[] = []
  private faultsOn = true
  private confBusy = false
  private partitionUntilMs = 0
  private partitionStableUntilMs = 0
  private finished = false
  private livenessCause = ''
  private readonly stats: SimStats = {
    ops: 0,
    indeterminate: 0,
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
    badFrames: 0,
    lostWrites: 0,
    events: 0,
    virtualMs: 0,
  }

  constructor(seed: number, options: SimOptions = {}) {
    this.seed = seed
    this.options = options
    this.plan = drawFaultPlan(seed, { safetyMs: options.safetyMs, livenessMs: options.livenessMs })
    this.faultRandom = SimRandom.stream(seed, 'faults')
    this.network = new SimNetwork(this.queue, SimRandom.stream(seed, 'network'), this.plan.network)
    const storageRandom = SimRandom.stream(seed, 'storage')
    this.foundingIds = []
    for (let i = 1; i <= this.plan.nodeCount + 1; i++) {
      const id = `n${i}`
      const founding = i <= this.plan.nodeCount
      if (founding) this.foundingIds.push(id)
      this.network.addNode(id)
      this.nodes.set(id, {
        id,
        founding,
        started: false,
        up: false,
        incarnation: 0,
        storage: new SimStorage(id, this.queue, storageRandom, {
          latency: this.plan.storage,
          onDurable: (storage) => this.checker.observeDurable(storage),
          forgetSyncedWrites: options.sabotage?.forgetSyncedWrites ?? false,
        }),
        skew: this.plan.clocks[i - 1]!,
        clock: null,
        live: null,
        lastApplied: 0,
        stableUntilMs: 0,
        decommissioned: false,
        pausedUntilMs: 0,
      })
    }
    this.keys = []
    for (let i = 1; i <= this.plan.keyCount; i++) this.keys.push(`k${i}`)
  }

  // ------------------------------------------------------------ ClientHost

  nowMs(): number {
    return this.queue.nowMs
  }

  nodeIds(): string[] {
    const ids: string[] = []
    for (const node of this.nodes.values()) if (node.started) ids.push(node.id)
    return ids
  }

  liveNode(id: string): LiveNode | null {
    const node = this.nodes.get(id)
    // A paused process accepts no connection: the client tries elsewhere.
    if (node === undefined || this.queue.nowMs < node.pausedUntilMs) return null
    return node.live
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.queue.after(ms, EventKind.Client, resolve)
    })
  }

  settle<T>(promise: Promise<T>, timeoutMs: number): Promise<Outcome<T>> {
    return new Promise((resolve) => {
      let done = false
      const timer = this.queue.after(timeoutMs, EventKind.Client, () => {
        if (done) return
        done = true
        resolve({ kind: 'timeout' })
      })
      promise.then(
        (value) => {
          if (done) return
          done = true
          timer.cancelled = true
          resolve({ kind: 'ok', value })
        },
        (error: unknown) => {
          if (done) return
          done = true
          timer.cancelled = true
          resolve({ kind: 'error', error: error instanceof Error ? error : new Error(String(error)) })
        },
      )
    })
  }

  record(op: SimOperation): void {
    this.history.push(op)
    this.queue.mix(op.clientId)
    this.queue.mix(op.returnMs === Number.POSITIVE_INFINITY ? -1 : Math.round(op.returnMs * 1000))
  }

  acked(value: string): void {
    this.ackedValues.push(value)
  }

  trace(line: string): void {
    this.log(line)
  }

  // ------------------------------------------------------------------ run

  async run(): Promise<SimResult> {
    this.log(`plan: ${describePlan(this.plan)}`)
    for (const id of this.foundingIds) this.startNode(this.nodes.get(id)!)
    const workload = {
      keys: this.keys,
      ...this.plan.workload,
      staleReads: this.options.sabotage?.staleReads ?? false,
    }
    for (let i = 0; i < this.plan.clientCount; i++) {
      const client = new SimClient(i, this, SimRandom.stream(this.seed, `client:${i}`), workload)
      this.clients.push(client)
      client
        .run()
        .catch((error: unknown) => this.checker.fail(`simulator: client ${i} crashed: ${String(error)}`))
    }
    this.queue.after(this.plan.faultIntervalMs, EventKind.Fault, () => this.faultTick())
    this.queue.at(this.plan.safetyMs, EventKind.Control, () => {
      this.livenessPhase().catch((error: unknown) =>
        this.checker.fail(`simulator: liveness phase crashed: ${(error as Error).stack ?? String(error)}`),
      )
    })

    let second = -1
    let eventsThisSecond = 0
    while (!this.finished && this.checker.violation === null) {
      const event = this.queue.pop()
      if (event === undefined) {
        this.checker.fail('liveness: the simulation ran out of events before the liveness phase ended')
        break
      }
      if (Math.floor(event.timeMs / 1000) !== second) {
        second = Math.floor(event.timeMs / 1000)
        eventsThisSecond = 0
      }
      if (++eventsThisSecond > EVENTS_PER_VIRTUAL_SECOND_MAX) {
        this.checker.fail(
          `liveness: message storm: more than ${EVENTS_PER_VIRTUAL_SECOND_MAX} events in virtual second ${second}; ${this.describeNodes()}`,
        )
        break
      }
      try {
        event.fn()
      } catch (error) {
        this.checker.fail(
          `safety: an exception escaped a ${kindName(event.kind)} event: ${(error as Error).stack ?? String(error)}`,
        )
      }
      await drainMicrotasks()
      this.pollLeaders()
    }
    this.stats.events = this.queue.processed
    this.stats.snapshotsChecked = this.checker.snapshotsChecked
    this.stats.virtualMs = Math.round(this.queue.nowMs)
    this.shutdown()
    return this.finish()
  }

  private finish(): SimResult {
    for (const client of this.clients) client.abandon()
    this.probe?.abandon()
    let undecided: string | null = null
    if (this.checker.violation === null && this.network.stats.decoderCrashes.length > 0) {
      this.checker.fail(
        `safety: the decoder threw a non-DecodeError: ${this.network.stats.decoderCrashes[0]}`,
      )
    }
    if (this.checker.violation === null) {
      for (const value of this.ackedValues) {
        if (!this.checker.committedValues.has(value)) {
          this.checker.fail(`safety: acknowledged write ${value} is not in the committed log`)
          break
        }
      }
    }
    if (this.checker.violation === null) {
      const result = checkLinearizability(this.history, registerModel, {
        timeoutMs: this.options.checkTimeoutMs ?? CHECK_TIMEOUT_MS,
      })
      if (!result.ok && !result.timedOut) {
        this.checker.fail(
          `safety: key ${result.failingKey} is not linearizable: ${result.partial?.message ?? ''}`,
        )
      } else if (result.timedOut) {
        undecided = `linearizability check undecided (${result.unknownReason}) for keys ${result.unknownKeys?.join(',')}`
      }
    }
    this.stats.ops = this.history.length
    this.stats.indeterminate = this.history.filter((op) => op.returnMs === Number.POSITIVE_INFINITY).length
    for (const node of this.nodes.values()) this.stats.lostWrites += node.storage.lostWrites
    this.queue.mix(this.history.length)
    return {
      seed: this.seed,
      ok: this.checker.violation === null,
      violation: this.checker.violation,
      undecided,
      digest: this.queue.traceDigest,
      stats: this.stats,
      plan: describePlan(this.plan),
    }
  }

  private shutdown(): void {
    for (const client of this.clients) client.stopped = true
    for (const node of this.nodes.values()) {
      node.clock?.dispose()
      node.live = null
    }
    this.queue.clear()
  }

  private log(line: string): void {
    this.options.log?.(`[${this.queue.nowMs.toFixed(1).padStart(9)} ms] ${line}`)
  }

  // ---------------------------------------------------------------- nodes

  private startNode(node: SimNode): void {
    const incarnation = ++node.incarnation
    node.started = true
    node.up = true
    node.decommissioned = false
    node.lastApplied = node.storage.snapshot?.meta.index ?? 0
    const clock = new SimClock(this.queue, node.skew)
    node.clock = clock
    const { snapshots } = this.plan
    // Yields go through the node's own clock: deterministic, held while the
    // node is paused, and never resumed once it crashed (the clock is disposed).
    const kv = new KvStateMachine({
      snapshotSliceBytes: snapshots.sliceBytes,
      yieldToLoop: () =>
        new Promise<void>((resolve) => {
          const stop = clock.every(snapshots.yieldMs, () => {
            stop()
            resolve()
          })
        }),
    })
    const stateMachine = new CheckedStateMachine(kv, {
      onApply: (data, index, duringSnapshot) => {
        if (node.incarnation !== incarnation) return
        if (index <= node.lastApplied) {
          this.checker.fail(`safety: ${node.id} applied index ${index} after index ${node.lastApplied}`)
        }
        node.lastApplied = index
        if (duringSnapshot) this.stats.appliesDuringSnapshots++
        this.checker.observeApply(node.id, index, data, node.storage)
      },
      onSnapshotMismatch:
        snapshots.mode === 'sync'
          ? null
          : () => {
              if (node.incarnation !== incarnation) return
              this.checker.fail(
                `safety: ${node.id} built a snapshot in the background that is not the state it started from`,
              )
            },
    })
    RaftNode.create<KvResult>({
      id: node.id,
      storage: node.storage.open(),
      transport: this.network.attach(node.id),
      clock,
      rng: SimRandom.stream(this.seed, `raft:${node.id}:${incarnation}`),
      stateMachine,
      raft: this.plan.raft,
      driver: this.plan.driver,
      bootstrap: node.founding ? { voters: this.foundingIds } : undefined,
      onEvent: (event) => {
        if (node.incarnation === incarnation) this.onNodeEvent(node, event)
      },
    }).then(
      (raft) => {
        if (node.incarnation !== incarnation) return
        node.live = { raft, kv }
        raft.start()
      },
      (error: unknown) => {
        if (node.incarnation === incarnation)
          this.checker.fail(`safety: ${node.id} failed to start: ${String(error)}`)
      },
    )
    this.log(`${node.id} starts (incarnation ${incarnation})`)
  }

  /** Stops a node abruptly: no graceful stop, unsynced writes lost, its timers and frames gone. */
  /** Pauses a node's process: no timer, no frame, no disk completion reaches it until untilMs. */
  private pauseNode(node: SimNode, untilMs: number): void {
    node.pausedUntilMs = untilMs
    if (node.clock !== null) node.clock.pausedUntilMs = untilMs
    node.storage.pausedUntilMs = untilMs
    this.network.pause(node.id, untilMs)
  }

  private crashNode(node: SimNode, why: string): void {
    this.pauseNode(node, 0)
    node.incarnation++
    node.up = false
    node.clock?.dispose()
    node.clock = null
    node.live = null
    this.network.detach(node.id)
    node.storage.crash()
    this.log(`${node.id} ${why}`)
  }

  private onNodeEvent(node: SimNode, event: RaftEvent): void {
    switch (event.type) {
      case 'role':
        if (event.role === 'leader') {
          this.stats.leaderChanges++
          this.checker.observeLeader(node.id, event.term as number, 'role event')
        }
        this.log(
          `${node.id} is ${String(event.role)} in term ${String(event.term)} (leader ${String(event.leader) || '-'})`,
        )
        break
      case 'fatal':
        this.checker.fail(
          `safety: ${node.id} stopped on a fatal error: ${String(event.error)}\n${String(event.stack)}`,
        )
        break
      case 'snapshot-restored': {
        const index = event.index as number
        this.stats.snapshotsInstalled++
        if (index <= node.lastApplied) {
          this.checker.fail(
            `safety: ${node.id} restored a snapshot at ${index} after applying ${node.lastApplied}`,
          )
        }
        node.lastApplied = index
        this.log(`${node.id} installed a snapshot at ${index}`)
        break
      }
      case 'snapshot-taken':
        this.stats.snapshotsTaken++
        break
      case 'conf-change':
        this.log(
          `${node.id} applied conf change at ${String(event.index)}: ${describeConf(event.confState as ConfState)}`,
        )
        break
      case 'bad-frame':
        this.stats.badFrames++
        break
      case 'misaddressed-frame':
        this.checker.fail(`safety: ${node.id} got a misaddressed frame ${JSON.stringify(event)}`)
        break
      default:
        break
    }
  }

  /**
   * After every event: any node that leads must be the only leader of its
   * term. Role events alone could miss a node that stepped down and won again
   * between two Ready rounds. The term is read off the core directly: status()
   * copies the whole progress table, too slow to call after every event.
   */
  private pollLeaders(): void {
    for (const node of this.nodes.values()) {
      const raft = node.live?.raft
      if (raft?.isLeader()) this.checker.observeLeader(node.id, coreTerm(raft), 'a poll after an event')
    }
  }

  /** The live node that leads in the highest term, if any. */
  private currentLeader(): { node: SimNode; raft: RaftNode<KvResult> } | null {
    let best: { node: SimNode; raft: RaftNode<KvResult>; term: number } | null = null
    for (const node of this.nodes.values()) {
      const raft = node.live?.raft
      if (raft === undefined || !raft.isLeader() || this.queue.nowMs < node.pausedUntilMs) continue
      const term = raft.status().term
      if (best === null || term > best.term) best = { node, raft, term }
    }
    return best
  }

  // --------------------------------------------------------------- faults

  private faultTick(): void {
    if (!this.faultsOn) return
    const r = this.faultRandom
    const now = this.queue.nowMs
    const plan = this.plan
    // Partitions.
    if (this.network.partitioned && now >= this.partitionUntilMs) {
      this.network.healCuts()
      this.partitionStableUntilMs = now + plan.partition.stabilityMs
      this.log('partition healed')
    } else if (
      !this.network.partitioned &&
      now >= this.partitionStableUntilMs &&
      r.chance(plan.partition.probability)
    ) {
      this.startPartition()
    }
    // Clogged paths.
    const started = this.nodeIds()
    if (plan.clog.probability > 0) {
      for (const from of started) {
        for (const to of started) {
          if (from !== to && r.chance(plan.clog.probability)) {
            this.network.clog(from, to, now + r.exponential(plan.clog.durationMeanMs))
          }
        }
      }
    }
    // Crashes; each crashed node restarts after a random down time.
    for (const node of this.nodes.values()) {
      if (!node.up || now < node.stableUntilMs || !r.chance(plan.crash.probability)) continue
      this.stats.crashes++
      this.crashNode(node, 'crashes')
      const downMs = r.exponential(plan.crash.downMeanMs)
      this.queue.after(downMs, EventKind.Fault, () => {
        if (!node.up && !node.decommissioned) {
          node.stableUntilMs = this.queue.nowMs + plan.crash.stabilityMs
          this.startNode(node)
        }
      })
    }
    // Pauses.
    for (const node of this.nodes.values()) {
      if (node.live === null || now < node.pausedUntilMs || !r.chance(plan.pause.probability)) continue
      this.stats.pauses++
      const untilMs = now + r.exponential(plan.pause.durationMeanMs)
      this.pauseNode(node, untilMs)
      this.log(`${node.id} pauses until ${untilMs.toFixed(0)} ms`)
    }
    if (!this.confBusy && r.chance(plan.confChangeProbability)) this.changeMembership()
    if (r.chance(plan.transferProbability)) this.transferLeader()
    this.queue.after(plan.faultIntervalMs, EventKind.Fault, () => this.faultTick())
  }

  private startPartition(): void {
    const r = this.faultRandom
    const ids = this.nodeIds()
    if (ids.length < 2) return
    let mode = this.plan.partition.mode
    if (mode === PartitionMode.Mixed) {
      mode = r.pick([
        PartitionMode.IsolateSingle,
        PartitionMode.UniformSize,
        PartitionMode.MajorityMinority,
        PartitionMode.RandomLinks,
      ])
    }
    const leader = this.currentLeader()?.node.id
    let group: string[] = []
    if (mode === PartitionMode.RandomLinks) {
      let cuts = 0
      for (const from of ids) {
        for (const to of ids) {
          if (from !== to && r.chance(0.3)) {
            this.network.cut(from, to)
            cuts++
          }
        }
      }
      if (cuts === 0) return
    } else {
      if (mode === PartitionMode.IsolateSingle) {
        group = [leader !== undefined && r.chance(0.5) ? leader : r.pick(ids)]
      } else if (mode === PartitionMode.UniformSize) {
        group = r.shuffle(ids).slice(0, r.between(1, ids.length - 1))
      } else {
        const minority = Math.max(1, Math.floor(ids.length / 2))
        const others = r.shuffle(ids.filter((id) => id !== leader))
        group =
          leader !== undefined && r.chance(0.5)
            ? [leader, ...others].slice(0, minority)
            : others.slice(0, minority)
      }
      // Asymmetric: only one direction of every link between the groups is cut.
      const direction = this.plan.partition.asymmetric ? r.pick(['out', 'in'] as const) : 'both'
      for (const a of group) {
        for (const b of ids) {
          if (group.includes(b)) continue
          if (direction !== 'in') this.network.cut(a, b)
          if (direction !== 'out') this.network.cut(b, a)
        }
      }
    }
    this.stats.partitions++
    this.partitionUntilMs = this.queue.nowMs + r.exponential(this.plan.partition.durationMeanMs)
    this.log(
      `partition (${mode}${this.plan.partition.asymmetric ? ', one-way' : ''}) ${group.join(',')} until ${this.partitionUntilMs.toFixed(0)} ms`,
    )
  }

  /** Removes a voter, adds a non-member back as learner, promotes a learner, demotes a voter, or swaps two (joint). */
  private changeMembership(): void {
    const leader = this.currentLeader()
    if (leader === null) return
    const conf = leader.raft.status().confState
    if (isJoint(conf)) return
    const r = this.faultRandom
    const members = allMembers(conf)
    const nonMembers = [...this.nodes.keys()].filter((id) => !members.includes(id))
    const choices: Array<() => ConfChange> = []
    const change = (changes: ConfChange['changes']): ConfChange => ({
      transition: ConfChangeTransition.Auto,
      changes,
      context: new Uint8Array(0),
    })
    if (nonMembers.length > 0) {
      choices.push(() => {
        const id = r.pick(nonMembers)
        const node = this.nodes.get(id)!
        if (!node.started) this.startNode(node)
        return change([{ op: ConfChangeOp.AddLearner, node: id }])
      })
    }
    if (conf.learners.length > 0) {
      choices.push(() => change([{ op: ConfChangeOp.AddVoter, node: r.pick(conf.learners) }]))
    }
    if (conf.voters.length >= 2) {
      choices.push(() => change([{ op: ConfChangeOp.Remove, node: r.pick(conf.voters) }]))
      choices.push(() => change([{ op: ConfChangeOp.AddLearner, node: r.pick(conf.voters) }]))
      if (conf.learners.length > 0) {
        // Two voters change at once: this goes through a joint configuration, left automatically.
        choices.push(() =>
          change([
            { op: ConfChangeOp.AddVoter, node: r.pick(conf.learners) },
            { op: ConfChangeOp.AddLearner, node: r.pick(conf.voters) },
          ]),
        )
      }
    }
    if (choices.length === 0) return
    const cc = r.pick(choices)()
    const what = cc.changes
      .map((c) => `${['add-voter', 'add-learner', 'remove'][c.op]} ${c.node}`)
      .join(' + ')
    this.log(`membership: ${leader.node.id} proposes ${what}`)
    this.confBusy = true
    void this.settle(leader.raft.proposeConfChange(cc), this.plan.workload.opTimeoutMs).then((outcome) => {
      this.confBusy = false
      if (outcome.kind === 'ok') {
        this.stats.confChanges++
        this.log(`membership: ${what} applied`)
      } else {
        this.log(
          `membership: ${what} failed (${outcome.kind === 'error' ? outcome.error.message : 'timeout'})`,
        )
      }
    })
  }

  private transferLeader(): void {
    const leader = this.currentLeader()
    if (leader === null) return
    const conf = leader.raft.status().confState
    const voters = [...new Set([...conf.voters, ...conf.votersOutgoing])].filter(
      (id) => id !== leader.node.id,
    )
    if (voters.length === 0) return
    const to = this.faultRandom.pick(voters)
    this.log(`transfer: ${leader.node.id} hands leadership to ${to}`)
    void this.settle(leader.raft.transferLeadership(to), this.plan.workload.opTimeoutMs).then((outcome) => {
      if (outcome.kind === 'ok') {
        this.stats.transfers++
        this.log(`transfer: ${to} leads`)
      }
    })
  }

  // -------------------------------------------------------------- liveness

  private async livenessPhase(): Promise<void> {
    this.log('liveness phase: network healed, faults off, crashed nodes restart')
    this.faultsOn = false
    for (const client of this.clients) client.stopped = true
    this.network.heal()
    this.network.faultsEnabled = false
    for (const node of this.nodes.values())
      if (node.pausedUntilMs > this.queue.nowMs) this.pauseNode(node, this.queue.nowMs)
    for (const node of this.nodes.values()) if (node.started && !node.up) this.startNode(node)
    const deadlineMs = this.queue.nowMs + this.plan.livenessMs
    const probe = new SimClient(this.plan.clientCount, this, SimRandom.stream(this.seed, 'probe'), {
      keys: this.keys,
      ...this.plan.workload,
    })
    this.probe = probe
    let written = false
    const read = new Set<string>()
    for (;;) {
      if (this.checker.violation !== null) return
      if (this.queue.nowMs > deadlineMs) {
        const why = `not done within ${this.plan.livenessMs} ms: ${this.livenessCause}; ${this.describeNodes()}`
        this.checker.fail(`liveness: ${why}`)
        return
      }
      await this.sleep(LIVENESS_POLL_MS)
      const leader = this.currentLeader()
      if (leader === null) {
        this.livenessCause = 'no leader'
        continue
      }
      if (!written) {
        this.livenessCause = `a client write did not commit (last error: ${probe.lastError || 'none'})`
        written = await probe.put(this.keys[0]!, true, { untilMs: deadlineMs })
        continue
      }
      const conf = leader.raft.status().confState
      if (isJoint(conf)) {
        this.livenessCause = `the joint configuration ${describeConf(conf)} was not left`
        continue
      }
      // Members must run; nodes removed from the group are decommissioned, as an operator would.
      const members = allMembers(conf)
      for (const node of this.nodes.values()) {
        if (!node.started) continue
        const member = members.includes(node.id)
        if (member && !node.up) this.startNode(node)
        if (!member && node.up) {
          node.decommissioned = true
          this.crashNode(node, 'is decommissioned (not a member)')
        }
      }
      if (read.size < this.keys.length) {
        this.livenessCause = `a linearizable read did not complete (last error: ${probe.lastError || 'none'})`
        for (const key of this.keys) if (!read.has(key) && (await probe.indexRead(key, false))) read.add(key)
        continue
      }
      const cause = this.convergence(leader.node, members)
      if (cause === null) break
      this.livenessCause = cause
    }
    this.log('liveness: leader, committed write, converged members')
    this.finished = true
  }

  /** null when every member applied as far as the leader and holds the same state; else why not. */
  private convergence(leader: SimNode, members: string[]): string | null {
    const leaderLive = leader.live
    if (leaderLive === null) return `leader ${leader.id} went down`
    const leaderStatus = leaderLive.raft.status()
    if (leaderStatus.applied < leaderStatus.commit)
      return `leader ${leader.id} applied ${leaderStatus.applied} of ${leaderStatus.commit}`
    const leaderState = leaderLive.kv.snapshot()
    for (const id of members) {
      const live = this.nodes.get(id)?.live
      if (live == null) return `member ${id} is not running`
      const status = live.raft.status()
      if (status.applied !== leaderStatus.applied) {
        return `member ${id} applied ${status.applied}, leader ${leader.id} applied ${leaderStatus.applied}`
      }
      // status().applied counts entries handed out for applying, which the
      // driver applies only after its disk write: compare the states too.
      const state = live.kv.snapshot()
      if (!bytesEqual(state, leaderState)) {
        return `member ${id} and leader ${leader.id} are both at ${status.applied} but hold different states (${describeStateDifference(state, leaderState)})`
      }
    }
    return null
  }

  private describeNodes(): string {
    const parts: string[] = []
    for (const node of this.nodes.values()) {
      if (!node.started) continue
      const raft = node.live?.raft
      if (raft === undefined) {
        parts.push(`${node.id}: ${node.decommissioned ? 'decommissioned' : node.up ? 'starting' : 'down'}`)
        continue
      }
      const s = raft.status()
      parts.push(
        `${node.id}: ${s.role} term ${s.term} leader ${s.leader || '-'} commit ${s.commit} applied ${s.applied} last ${s.lastIndex} conf ${describeConf(s.confState)}`,
      )
    }
    return parts.join('; ')
  }
}

function describeConf(conf: ConfState): string {
  const out = conf.votersOutgoing.length > 0 ? ` out=[${conf.votersOutgoing.join(',')}]` : ''
  const learners = conf.learners.length > 0 ? ` learners=[${conf.learners.join(',')}]` : ''
  const next = conf.learnersNext.length > 0 ? ` next=[${conf.learnersNext.join(',')}]` : ''
  return `voters=[${conf.voters.join(',')}]${out}${learners}${next}`
}

/** The first difference between two KV snapshots, as a short phrase. */
function describeStateDifference(a: Uint8Array, b: Uint8Array): string {
  const left = new KvStateMachine()
  const right = new KvStateMachine()
  left.restore(a)
  right.restore(b)
  const l = new Map(left.entries())
  const r = new Map(right.entries())
  for (const key of new Set([...l.keys(), ...r.keys()])) {
    if (l.get(key) !== r.get(key)) return `key ${key}: ${l.get(key) ?? 'absent'} vs ${r.get(key) ?? 'absent'}`
  }
  return 'sessions differ'
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** The current term of a node's core (a test-only peek at a private field). */
function coreTerm(raft: RaftNode<KvResult>): number {
  return (raft as unknown as { core: { term: number } }).core.term
}

function kindName(kind: EventKind): string {
  for (const [name, value] of Object.entries(EventKind)) if (value === kind) return name.toLowerCase()
  return String(kind)
}

/** Runs one seed. */
export function runSimulation(seed: number, options: SimOptions = {}): Promise<SimResult> {
  return new Simulation(seed, options).run()
}
