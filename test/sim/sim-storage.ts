// A node's disk in the simulator: the LogStorage semantics of
// consensus/memory-storage.ts (each save is one atomic, synced batch of hard
// state + snapshot + entries with suffix truncation; compact records a
// snapshot and drops what it covers), planned through the same planWrite /
// planCompact, but every write completes only after a simulated latency, in
// call order. A crash loses every write whose promise has not resolved yet
// (whole batches: all or nothing) and keeps every one that has.
//
// The disk outlives the node: each incarnation opens a handle; a crash closes
// the handle, so a dead incarnation can never write again.

import {
  emptyBounds,
  type LogBounds,
  planCompact,
  planWrite,
  type WritePlan,
} from '../../consensus/log-bounds.ts'
import { copyEntry, copySnapshot } from '../../consensus/memory-storage.ts'
import type {
  Entry,
  HardState,
  LogStorage,
  PersistedState,
  Snapshot,
  StorageUpdate,
} from '../../consensus/types.ts'
import { EventKind, type EventQueue, type SimEvent } from './event-queue.ts'
import type { SimRandom } from './sim-random.ts'

export interface StorageLatency {
  /** Every write takes at least this long. */
  writeMinMs: number
  /** Mean of the exponential extra time on top of the minimum. */
  writeMeanMs: number
}

/** What the checkers may read of the durable state (never mutate). */
export interface DurableView {
  readonly hardState: HardState
  readonly snapshot: Snapshot | null
  readonly bounds: LogBounds
  entry(index: number): Entry | undefined
}

/** How far back a sabotaged disk (forgetSyncedWrites) forgets. */
const FORGET_WINDOW_MS = 1_000

/** Writes one node may have in flight; the driver keeps at most a couple. */
export const STORAGE_WRITES_PENDING_MAX = 64

interface PendingWrite {
  plan: WritePlan
  snapshot: Snapshot | null
  entries: Entry[]
  event: SimEvent
}

export class SimStorage implements DurableView {
  readonly nodeId: string
  private readonly queue: EventQueue
  private readonly random: SimRandom
  private readonly latency: StorageLatency
  private readonly onDurable: (storage: SimStorage) => void

  bounds: LogBounds = emptyBounds()
  snapshot: Snapshot | null = null
  /** Entries bounds.snapshotIndex + 1 .. bounds.lastIndex, in order. */
  private entries: Entry[] = []

  private projected: LogBounds = emptyBounds()
  private pending: PendingWrite[] = []
  private lastCompletionMs = 0
  private epoch = 0
  /** Virtual time until which the node's process is paused (0: running). */
  pausedUntilMs = 0
  private readonly forgetSyncedWrites: boolean
  /** For forgetSyncedWrites: the durable state as it was at the start of the current window. */
  private checkpoint: {
    atMs: number
    bounds: LogBounds
    snapshot: Snapshot | null
    entries: Entry[]
  } | null = null
  /** Counters for the run summary. */
  writes = 0
  lostWrites = 0

  constructor(
    nodeId: string,
    queue: EventQueue,
    random: SimRandom,
    options: {
      latency: StorageLatency
      onDurable: (storage: SimStorage) => void
      /**
       * A broken disk, to test the checkers: a crash also loses the writes it
       * reported synced in the last FORGET_WINDOW_MS (a cache that lies about fsync).
       */
      forgetSyncedWrites?: boolean
    },
  ) {
    this.nodeId = nodeId
    this.queue = queue
    this.random = random
    this.latency = options.latency
    this.onDurable = options.onDurable
    this.forgetSyncedWrites = options.forgetSyncedWrites ?? false
  }

  get hardState(): HardState {
    return this.bounds.hardState
  }

  entry(index: number): Entry | undefined {
    if (index <= this.bounds.snapshotIndex || index > this.bounds.lastIndex) return undefined
    return this.entries[index - this.bounds.snapshotIndex - 1]
  }

  /** A handle for a new incarnation of the node. */
  open(): LogStorage {
    const epoch = ++this.epoch
    const never = new Promise<never>(() => {})
    const live = () => epoch === this.epoch
    return {
      load: async () => (live() ? this.load() : never),
      save: async (update: StorageUpdate) =>
        live() ? this.write(planWrite(this.projected, update), update) : never,
      compact: async (snapshot: Snapshot) => {
        if (!live()) return never
        // Overtaken by a snapshot from the leader (see LogStorage.compact): nothing to write.
        if (snapshot.meta.index <= this.projected.snapshotIndex) return
        return this.write(planCompact(this.projected, snapshot), { hardState: null, entries: [], snapshot })
      },
      // What the simulated disk holds now, so the driver's snapshot read-back runs under the faults too.
      loadSnapshot: async () =>
        live() ? (this.snapshot === null ? null : copySnapshot(this.snapshot)) : never,
      close: async () => {},
    }
  }

  /** The node crashed: writes in flight are lost, the open handle is dead. */
  crash(): void {
    this.epoch++
    for (const write of this.pending) write.event.cancelled = true
    this.lostWrites += this.pending.length
    this.pending = []
    if (this.forgetSyncedWrites && this.checkpoint !== null) {
      this.bounds = this.checkpoint.bounds
      this.snapshot = this.checkpoint.snapshot
      this.entries = this.checkpoint.entries
      this.checkpoint = null
    }
    this.projected = this.bounds
  }

  private load(): PersistedState {
    return {
      hardState: { ...this.bounds.hardState },
      snapshot: this.snapshot === null ? null : copySnapshot(this.snapshot),
      entries: this.entries.map(copyEntry),
    }
  }

  // The handle's methods are async, so a malformed update that planWrite
  // refuses becomes a rejected promise, exactly as the memory storage's.
  private write(plan: WritePlan, update: StorageUpdate): Promise<void> {
    if (this.pending.length >= STORAGE_WRITES_PENDING_MAX) {
      return Promise.reject(
        new Error(
          `${this.nodeId} has ${STORAGE_WRITES_PENDING_MAX} writes in flight (STORAGE_WRITES_PENDING_MAX).`,
        ),
      )
    }
    this.projected = plan.next
    const snapshot = update.snapshot === null ? null : copySnapshot(update.snapshot)
    const entries = update.entries.map(copyEntry)
    // Writes complete in call order, like one synced journal.
    const doneMs = Math.max(
      this.lastCompletionMs,
      this.queue.nowMs + this.latency.writeMinMs + this.random.exponential(this.latency.writeMeanMs),
    )
    this.lastCompletionMs = doneMs
    this.writes++
    return new Promise<void>((resolve) => {
      const write: PendingWrite = {
        plan,
        snapshot,
        entries,
        event: this.queue.at(doneMs, EventKind.StorageDone, () => {
          this.pending.shift()
          this.apply(write)
          this.onDurable(this)
          // The disk finished; a paused process only learns it when it resumes.
          if (this.queue.nowMs < this.pausedUntilMs) {
            const epoch = this.epoch
            this.queue.at(this.pausedUntilMs, EventKind.StorageDone, () => {
              if (epoch === this.epoch) resolve()
            })
          } else {
            resolve()
          }
        }),
      }
      this.pending.push(write)
    })
  }

  private apply(write: PendingWrite): void {
    const { plan, snapshot, entries } = write
    if (
      this.forgetSyncedWrites &&
      (this.checkpoint === null || this.queue.nowMs - this.checkpoint.atMs > FORGET_WINDOW_MS)
    ) {
      this.checkpoint = {
        atMs: this.queue.nowMs,
        bounds: this.bounds,
        snapshot: this.snapshot,
        entries: [...this.entries],
      }
    }
    // Same result as the memory storage's filters, without copying the whole log per write.
    const dropped = plan.next.snapshotIndex - this.bounds.snapshotIndex
    if (dropped > 0) this.entries = dropped >= this.entries.length ? [] : this.entries.slice(dropped)
    const first = entries[0]
    if (first !== undefined) {
      this.entries.length = Math.min(this.entries.length, first.index - plan.next.snapshotIndex - 1)
      for (const entry of entries) this.entries.push(entry)
    }
    if (snapshot !== null) this.snapshot = snapshot
    this.bounds = plan.next
    const expected = plan.next.lastIndex - plan.next.snapshotIndex
    if (
      this.entries.length !== expected ||
      (this.entries[0]?.index ?? plan.next.snapshotIndex + 1) !== plan.next.snapshotIndex + 1
    ) {
      throw new Error(
        `${this.nodeId}: simulated disk holds ${this.entries.length} entries, expected ${plan.next.snapshotIndex + 1}..${plan.next.lastIndex}`,
      )
    }
  }
}
