// The shape of a stored Raft log, known without reading it back: the hard
// state, where the snapshot ends and where the log ends. Both LogStorage
// implementations plan every write through planWrite, so they agree on what a
// save or compact means, refuse the same malformed updates before anything is
// written, and know which stored entries to delete without scanning for them.

import { assert } from './errors.ts'
import type { Entry, HardState, Snapshot, StorageUpdate } from './types.ts'

/** Stored entries are exactly snapshotIndex + 1 .. lastIndex (none when the two are equal). */
export interface LogBounds {
  hardState: HardState
  /** 0 when there is no snapshot. */
  snapshotIndex: number
  /** Index of the last stored entry, or snapshotIndex when no entry follows the snapshot. */
  lastIndex: number
}

/** Inclusive range of entry indexes; empty when from > to. */
export interface IndexRange {
  from: number
  to: number
}

export interface WritePlan {
  /** Stored entries the new snapshot covers. */
  covered: IndexRange
  /** Stored entries past the last new entry, dropped because the new entries conflict with them. */
  truncated: IndexRange
  next: LogBounds
}

export const emptyHardState: HardState = { term: 0, vote: '', commit: 0 }

export function emptyBounds(): LogBounds {
  return { hardState: { ...emptyHardState }, snapshotIndex: 0, lastIndex: 0 }
}

/** Plans a save: snapshot first (dropping what it covers), then entries (truncating a conflicting suffix). */
export function planWrite(bounds: LogBounds, update: StorageUpdate): WritePlan {
  let { snapshotIndex, lastIndex } = bounds
  let covered: IndexRange = { from: 1, to: 0 }
  let truncated: IndexRange = { from: 1, to: 0 }

  if (update.snapshot !== null) {
    const index = update.snapshot.meta.index
    checkSnapshot(update.snapshot)
    assert(
      index >= snapshotIndex,
      `a snapshot at index ${index} would replace the newer stored snapshot at index ${snapshotIndex}`,
    )
    covered = { from: snapshotIndex + 1, to: Math.min(index, lastIndex) }
    snapshotIndex = index
    lastIndex = Math.max(lastIndex, index)
  }

  const first = update.entries[0]
  const last = update.entries.at(-1)
  if (first !== undefined && last !== undefined) {
    checkEntries(update.entries)
    assert(
      first.index > snapshotIndex,
      `entry ${first.index} is covered by the snapshot at index ${snapshotIndex}; entries must start after it`,
    )
    assert(
      first.index <= lastIndex + 1,
      `entries starting at ${first.index} would leave a gap after the last stored index ${lastIndex}`,
    )
    truncated = { from: last.index + 1, to: lastIndex }
    lastIndex = last.index
  }

  let hardState = bounds.hardState
  if (update.hardState !== null) {
    checkHardState(bounds.hardState, update.hardState)
    hardState = { ...update.hardState }
  }
  assert(
    hardState.commit <= lastIndex,
    `commit index ${hardState.commit} would point past the last stored index ${lastIndex}`,
  )
  return { covered, truncated, next: { hardState, snapshotIndex, lastIndex } }
}

/** Plans a compaction: like saving the snapshot alone, but the node must hold every entry it covers. */
export function planCompact(bounds: LogBounds, snapshot: Snapshot): WritePlan {
  assert(
    snapshot.meta.index <= bounds.lastIndex,
    `a snapshot at index ${snapshot.meta.index} cannot compact a log that ends at ${bounds.lastIndex}`,
  )
  return planWrite(bounds, { hardState: null, entries: [], snapshot })
}

function isIndex(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0
}

function checkSnapshot(snapshot: Snapshot): void {
  const { index, term } = snapshot.meta
  assert(
    isIndex(index) && isIndex(term),
    `snapshot index ${index} and term ${term} must be whole numbers >= 0`,
  )
  assert(snapshot.data instanceof Uint8Array, `snapshot data at index ${index} must be a Uint8Array`)
}

function checkEntries(entries: Entry[]): void {
  let previous: Entry | undefined
  for (const entry of entries) {
    assert(
      isIndex(entry.index) && entry.index > 0 && isIndex(entry.term),
      `entry index ${entry.index} must be a whole number >= 1 and its term ${entry.term} >= 0`,
    )
    assert(entry.type === 0 || entry.type === 1, `entry ${entry.index} has unknown type ${entry.type}`)
    assert(entry.data instanceof Uint8Array, `entry ${entry.index} data must be a Uint8Array`)
    if (previous !== undefined) {
      assert(
        entry.index === previous.index + 1,
        `entries must be contiguous, but ${entry.index} follows ${previous.index}`,
      )
      assert(
        entry.term >= previous.term,
        `entry ${entry.index} has term ${entry.term}, lower than the term ${previous.term} before it`,
      )
    }
    previous = entry
  }
}

// Term and commit only move forward, and a node votes at most once per term:
// refusing anything else here keeps a driver bug from ever reaching the disk.
function checkHardState(stored: HardState, next: HardState): void {
  assert(
    isIndex(next.term) && isIndex(next.commit) && typeof next.vote === 'string',
    `hard state term ${next.term} and commit ${next.commit} must be whole numbers >= 0`,
  )
  assert(
    next.term >= stored.term,
    `hard state term ${next.term} is lower than the stored term ${stored.term}`,
  )
  assert(
    next.commit >= stored.commit,
    `hard state commit ${next.commit} is lower than the stored commit ${stored.commit}`,
  )
  assert(
    next.term > stored.term || stored.vote === '' || next.vote === stored.vote,
    `a second vote in term ${next.term} (for '${next.vote}' after '${stored.vote}')`,
  )
}
