// A LogStorage in memory, for tests. It plans every write exactly like the
// classic-level storage (planWrite) so a test against it sees the same
// refusals, and it copies everything in and out so neither the caller nor the
// core can change stored data by mutating an object after handing it over.

import { assert } from './errors.ts'
import { emptyBounds, type LogBounds, planCompact, planWrite, type WritePlan } from './log-bounds.ts'
import { cloneConfState } from './membership.ts'
import type { Entry, LogStorage, PersistedState, Snapshot, StorageUpdate } from './types.ts'

// Copies use new Uint8Array(bytes): a Buffer's slice() shares memory.
export class MemoryLogStorage implements LogStorage {
  #bounds: LogBounds = emptyBounds()
  #snapshot: Snapshot | null = null
  /** Entries snapshotIndex + 1 .. lastIndex, in order. */
  #entries: Entry[] = []
  #closed = false

  async load(): Promise<PersistedState> {
    this.#assertOpen('load')
    return {
      hardState: { ...this.#bounds.hardState },
      snapshot: this.#snapshot === null ? null : copySnapshot(this.#snapshot),
      entries: this.#entries.map(copyEntry),
    }
  }

  // The body runs synchronously up to its end, so calls apply in call order
  // without a queue: the memory storage has no write in flight to wait for.
  async save(update: StorageUpdate): Promise<void> {
    this.#assertOpen('save')
    this.#apply(planWrite(this.#bounds, update), update.snapshot, update.entries)
  }

  async compact(snapshot: Snapshot): Promise<void> {
    this.#assertOpen('compact')
    // Overtaken by a snapshot from the leader (see LogStorage.compact): keep that one.
    if (snapshot.meta.index <= this.#bounds.snapshotIndex) return
    this.#apply(planCompact(this.#bounds, snapshot), snapshot, [])
  }

  async loadSnapshot(): Promise<Snapshot | null> {
    this.#assertOpen('loadSnapshot')
    return this.#snapshot === null ? null : copySnapshot(this.#snapshot)
  }

  async close(): Promise<void> {
    this.#closed = true
  }

  #apply(plan: WritePlan, snapshot: Snapshot | null, entries: Entry[]): void {
    const kept = this.#entries.filter((entry) => entry.index > plan.next.snapshotIndex)
    const first = entries[0]
    const head = first === undefined ? kept : kept.filter((entry) => entry.index < first.index)
    this.#entries = [...head, ...entries.map(copyEntry)]
    if (snapshot !== null) this.#snapshot = copySnapshot(snapshot)
    this.#bounds = plan.next
    assert(
      this.#entries.length === plan.next.lastIndex - plan.next.snapshotIndex &&
        (this.#entries[0]?.index ?? plan.next.snapshotIndex + 1) === plan.next.snapshotIndex + 1,
      `memory log holds ${this.#entries.length} entries, expected ${plan.next.snapshotIndex + 1}..${plan.next.lastIndex}`,
    )
  }

  #assertOpen(operation: string): void {
    assert(!this.#closed, `${operation} called on a closed memory storage`)
  }
}

/** A deep copy: stored data must not change when a caller changes its objects. */
export function copyEntry(entry: Entry): Entry {
  return { term: entry.term, index: entry.index, type: entry.type, data: new Uint8Array(entry.data) }
}

/** A deep copy of a snapshot (meta, configuration and data). */
export function copySnapshot(snapshot: Snapshot): Snapshot {
  const { index, term, confState } = snapshot.meta
  return { meta: { index, term, confState: cloneConfState(confState) }, data: new Uint8Array(snapshot.data) }
}
