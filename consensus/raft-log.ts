// The in-memory Raft log: every entry after the compaction point, which
// index is durable (stable), which is committed and which was handed out to
// be applied. Storage is the driver's business; this only tracks it.

import { assert } from './errors.ts'
import type { Entry, Snapshot, SnapshotMeta } from './types.ts'

export class RaftLog {
  /** Index and term of the entry just before entries[0] (the compaction point). */
  private offsetIndex: number
  private offsetTerm: number
  private entries: Entry[]
  /** The latest snapshot this node holds (from compaction, a leader, or disk), data aside. */
  snapshotMeta: SnapshotMeta | null
  /**
   * The latest snapshot with its data, while the data is in memory: from the
   * moment it is taken or received until storage holds it (releaseSnapshotData),
   * and again while the leader streams it to followers (attachSnapshotData).
   * null otherwise: the data is as large as the state machine's state, and a
   * copy kept only in case a follower falls behind doubled a node's memory.
   */
  snapshot: Snapshot | null
  /** Storage holds the latest snapshot, so its data may leave memory whenever no one streams it. */
  snapshotDurable = false
  /** A snapshot received from the leader and not yet persisted and restored by the driver. */
  pendingSnapshot: Snapshot | null = null
  committed: number
  /** Highest index handed out in a Ready for applying. */
  applied: number
  /** Highest index known to be durable. Entries above it still need persisting. */
  stableIndex: number

  constructor(snapshot: Snapshot | null, entries: Entry[], committed: number) {
    this.snapshot = snapshot
    this.snapshotMeta = snapshot?.meta ?? null
    this.offsetIndex = snapshot?.meta.index ?? 0
    this.offsetTerm = snapshot?.meta.term ?? 0
    this.entries = entries
    for (let i = 0; i < entries.length; i++) {
      assert(
        entries[i]!.index === this.offsetIndex + 1 + i,
        `stored entries are not contiguous at index ${entries[i]!.index}`,
      )
    }
    this.stableIndex = this.lastIndex()
    this.committed = Math.max(committed, this.offsetIndex)
    assert(this.committed <= this.lastIndex(), `commit ${committed} beyond last index ${this.lastIndex()}`)
    this.applied = this.offsetIndex
  }

  firstIndex(): number {
    return this.offsetIndex + 1
  }

  lastIndex(): number {
    return this.offsetIndex + this.entries.length
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0
  }

  /** The term of the entry at index, or undefined when it is compacted away or beyond the log. */
  term(index: number): number | undefined {
    if (index === this.offsetIndex) return this.offsetTerm
    if (index < this.offsetIndex || index > this.lastIndex()) return undefined
    return this.entries[index - this.offsetIndex - 1]!.term
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term
  }

  entry(index: number): Entry | undefined {
    if (index <= this.offsetIndex || index > this.lastIndex()) return undefined
    return this.entries[index - this.offsetIndex - 1]
  }

  /** Entries [from, toExclusive), or undefined if part of that range is compacted. */
  slice(from: number, toExclusive: number): Entry[] | undefined {
    if (from <= this.offsetIndex) return undefined
    const start = from - this.offsetIndex - 1
    const end = Math.min(toExclusive, this.lastIndex() + 1) - this.offsetIndex - 1
    if (end <= start) return []
    return this.entries.slice(start, end)
  }

  /** Is a log ending at (lastTerm, lastIndex) at least as up-to-date as ours (paper §5.4.1)? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm()
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex())
  }

  /** Appends entries that follow on the log, truncating any conflicting suffix first. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return
    const first = entries[0]!.index
    assert(
      first > this.committed,
      `truncation at ${first} would drop committed entries (commit ${this.committed})`,
    )
    assert(first <= this.lastIndex() + 1, `append at ${first} leaves a gap after ${this.lastIndex()}`)
    if (first <= this.lastIndex()) {
      this.entries.length = first - this.offsetIndex - 1
      if (this.stableIndex >= first) this.stableIndex = first - 1
    }
    for (const entry of entries) this.entries.push(entry)
  }

  /**
   * The index of the first entry in `entries` that conflicts with (or is
   * missing from) our log, or 0 if all of them are already present.
   */
  findConflict(entries: Entry[]): number {
    for (const entry of entries) {
      const term = this.term(entry.index)
      if (term !== entry.term) {
        if (term === undefined && entry.index <= this.offsetIndex) continue // compacted: committed, so it matches
        return entry.index
      }
    }
    return 0
  }

  /**
   * The largest index <= `index` whose term is <= `term` (etcd's
   * findConflictByTerm): where a leader should probe next after a rejection,
   * skipping a whole term of conflicting entries at once.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let i = Math.min(index, this.lastIndex())
    for (; i >= this.offsetIndex; i--) {
      const t = this.term(i)
      if (t === undefined) break
      if (t <= term) return { index: i, term: t }
    }
    return { index: i, term: 0 }
  }

  commitTo(index: number): void {
    if (index <= this.committed) return
    assert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`)
    this.committed = index
  }

  /** Committed entries not yet handed out to be applied. */
  nextCommittedEntries(): Entry[] {
    if (this.pendingSnapshot !== null) return []
    const from = this.applied + 1
    const to = this.committed + 1
    if (from >= to) return []
    return this.slice(from, to) ?? []
  }

  hasNextCommittedEntries(): boolean {
    return this.pendingSnapshot === null && this.committed > this.applied
  }

  /** Entries that are not durable yet. */
  unstableEntries(): Entry[] {
    return this.slice(this.stableIndex + 1, this.lastIndex() + 1) ?? []
  }

  /** After a persist: entries up to (index, term) are durable if they are still the ones we hold. */
  stableTo(index: number, term: number): void {
    if (this.term(index) === term && index > this.stableIndex) this.stableIndex = index
  }

  appliedTo(index: number): void {
    if (index > this.applied) this.applied = index
  }

  /** Replaces the whole log with a snapshot from the leader (restore). */
  restore(snapshot: Snapshot): void {
    this.offsetIndex = snapshot.meta.index
    this.offsetTerm = snapshot.meta.term
    this.entries = []
    this.snapshot = snapshot
    this.snapshotMeta = snapshot.meta
    this.snapshotDurable = false
    this.pendingSnapshot = snapshot
    this.committed = snapshot.meta.index
    this.stableIndex = snapshot.meta.index
  }

  /** The snapshot was persisted and restored by the driver. */
  snapshotApplied(index: number): void {
    if (this.pendingSnapshot !== null && this.pendingSnapshot.meta.index === index) {
      this.pendingSnapshot = null
      if (index > this.applied) this.applied = index
    }
  }

  /**
   * Installs a snapshot the node took of its own state at `snapshot.meta.index`
   * and drops entries up to `discardTo` (<= that index), keeping a tail so that
   * slightly slow followers can still be fed from the log.
   */
  compact(snapshot: Snapshot, discardTo: number): void {
    assert(
      snapshot.meta.index <= this.applied,
      `snapshot at ${snapshot.meta.index} is beyond applied ${this.applied}`,
    )
    assert(discardTo <= snapshot.meta.index, 'compaction beyond the snapshot')
    if (this.snapshotMeta === null || snapshot.meta.index > this.snapshotMeta.index) {
      this.snapshot = snapshot
      this.snapshotMeta = snapshot.meta
      this.snapshotDurable = false
    }
    if (discardTo <= this.offsetIndex) return
    const term = this.term(discardTo)
    assert(term !== undefined, `no term for compaction index ${discardTo}`)
    this.entries = this.entries.slice(discardTo - this.offsetIndex)
    this.offsetIndex = discardTo
    this.offsetTerm = term
  }

  /**
   * Storage holds the snapshot at `index`: if it is still the latest, its data
   * may leave memory. Returns whether it was the latest.
   */
  markSnapshotDurable(index: number): boolean {
    if (this.snapshotMeta?.index !== index) return false
    this.snapshotDurable = true
    return true
  }

  /** Drops the latest snapshot's data from memory; only once storage holds it (and it is not being installed). */
  releaseSnapshotData(): void {
    if (this.snapshotDurable && this.pendingSnapshot === null) this.snapshot = null
  }

  /** The latest snapshot's data, read back from storage. Returns false if it is not the latest any more. */
  attachSnapshotData(snapshot: Snapshot): boolean {
    const meta = this.snapshotMeta
    if (meta === null || meta.index !== snapshot.meta.index || meta.term !== snapshot.meta.term) return false
    if (this.snapshot === null) this.snapshot = { meta, data: snapshot.data }
    return true
  }
}
