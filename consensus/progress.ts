// What a leader knows about one follower's log, and the flow control around
// it (etcd's Progress and Inflights): probe one append at a time until the
// follower's position is known, then replicate with a bounded window of
// pipelined appends, or stream a snapshot when the log it needs is gone.

import type { Snapshot } from './types.ts'

export const ProgressState = { Probe: 'probe', Replicate: 'replicate', Snapshot: 'snapshot' } as const
export type ProgressState = (typeof ProgressState)[keyof typeof ProgressState]

/** A bounded window of appends in flight: their last index and their size. */
export class Inflights {
  private readonly lastIndexes: number[] = []
  private readonly sizes: number[] = []
  private head = 0
  bytes = 0
  readonly countMax: number
  readonly bytesMax: number
  constructor(countMax: number, bytesMax: number) {
    this.countMax = countMax
    this.bytesMax = bytesMax
  }

  get count(): number {
    return this.lastIndexes.length - this.head
  }

  full(): boolean {
    return this.count >= this.countMax || this.bytes >= this.bytesMax
  }

  add(lastIndex: number, bytes: number): void {
    this.lastIndexes.push(lastIndex)
    this.sizes.push(bytes)
    this.bytes += bytes
  }

  /** Frees every append whose last index is <= index (acknowledged). */
  freeLE(index: number): void {
    while (this.head < this.lastIndexes.length && this.lastIndexes[this.head]! <= index) {
      this.bytes -= this.sizes[this.head]!
      this.head++
    }
    if (this.head > 1024 && this.head * 2 > this.lastIndexes.length) {
      this.lastIndexes.splice(0, this.head)
      this.sizes.splice(0, this.head)
      this.head = 0
    }
  }

  freeFirst(): void {
    if (this.count === 0) return
    this.freeLE(this.lastIndexes[this.head]!)
  }

  reset(): void {
    this.lastIndexes.length = 0
    this.sizes.length = 0
    this.head = 0
    this.bytes = 0
  }
}

/** Snapshot streaming state: which snapshot, how far it was sent and acknowledged. */
export interface SnapshotTransfer {
  snapshot: Snapshot
  sentOffset: number
  ackedOffset: number
  /** Ticks since the last acknowledgement, to resend lost chunks. */
  idleTicks: number
}

export class Progress {
  match = 0
  next: number
  state: ProgressState = ProgressState.Probe
  /** In probe state: an append was sent and its answer is awaited. */
  probeSent = false
  /** Heard from since the last check-quorum round. */
  recentActive = false
  /** Ticks since the last message from this follower. */
  idleTicks = 0
  isLearner: boolean
  transfer: SnapshotTransfer | null = null
  readonly inflights: Inflights

  constructor(
    next: number,
    isLearner: boolean,
    limits: { inflightAppendsMax: number; inflightBytesMax: number },
  ) {
    this.next = next
    this.isLearner = isLearner
    this.inflights = new Inflights(limits.inflightAppendsMax, limits.inflightBytesMax)
  }

  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot && this.transfer !== null) {
      // Resume from where the snapshot left the follower.
      this.next = Math.max(this.match + 1, this.transfer.snapshot.meta.index + 1)
    } else {
      this.next = this.match + 1
    }
    this.state = ProgressState.Probe
    this.probeSent = false
    this.transfer = null
    this.inflights.reset()
  }

  becomeReplicate(): void {
    this.state = ProgressState.Replicate
    this.next = this.match + 1
    this.probeSent = false
    this.transfer = null
    this.inflights.reset()
  }

  becomeSnapshot(snapshot: Snapshot): void {
    this.state = ProgressState.Snapshot
    this.probeSent = false
    this.inflights.reset()
    this.transfer = { snapshot, sentOffset: 0, ackedOffset: 0, idleTicks: 0 }
  }

  /** An append was acknowledged up to index. Returns whether the match advanced. */
  maybeUpdate(index: number): boolean {
    let updated = false
    if (this.match < index) {
      this.match = index
      updated = true
      this.probeSent = false
    }
    if (this.next < index + 1) this.next = index + 1
    return updated
  }

  /** An append was sent that ends at lastIndex. */
  sentEntries(lastIndex: number, bytes: number): void {
    if (this.state === ProgressState.Replicate) {
      this.next = lastIndex + 1
      this.inflights.add(lastIndex, bytes)
    } else if (this.state === ProgressState.Probe) {
      this.probeSent = true
    }
  }

  /**
   * An append at `rejected` was refused; the follower hinted its log agrees
   * no further than `hint`. Returns false when the rejection is stale.
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false
      this.next = this.match + 1
      return true
    }
    if (this.next - 1 !== rejected) return false
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1)
    this.probeSent = false
    return true
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent
      case ProgressState.Replicate:
        return this.inflights.full()
      default:
        return true
    }
  }
}
