// The continuous safety checks of a simulation run:
// - election safety: at most one leader per term, over every node and incarnation;
// - log matching of committed entries: each node's durable log up to its
//   durable commit index is compared, entry by entry (index, term, data hash),
//   with what every other node committed at that index, and snapshots with the
//   term recorded at their index;
// - state machine safety: each entry a node applies is the one committed at its
//   index, and applied indexes only move forward;
// - snapshot contents: every snapshot that reaches a disk holds exactly the
//   state the committed log gives at its index (a reference KV replays the
//   committed entries in order), so a snapshot labelled with the wrong index
//   (say, taken in the background and compacted past the index it was taken
//   at) is caught even when later writes would hide it in the final states;
// - the values of committed writes, so that "no acknowledged write is lost"
//   can be checked at the end.
// The first violation is kept as a short sentence; later ones are ignored.

import { EntryType } from '../../consensus/types.ts'
import { KvStateMachine } from '../support/kv-state-machine.ts'
import type { DurableView } from './sim-storage.ts'

interface CommittedRecord {
  term: number
  /** FNV-1a of type and data; null when only a snapshot's term is known at this index. */
  hash: number | null
  nodeId: string
}

export function hashBytes(bytes: Uint8Array, seed = 0x811c9dc5): number {
  let hash = seed >>> 0
  for (let i = 0; i < bytes.length; i++) {
    hash ^= bytes[i]!
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash >>> 0
}

const decoder = new TextDecoder()

/** Every cluster starts from a snapshot at index 1 that holds the empty state (RaftNode.create). */
const BOOTSTRAP_INDEX = 1

export class SafetyChecker {
  violation: string | null = null
  private readonly leaders = new Map<number, string>()
  private readonly committed = new Map<number, CommittedRecord>()
  /** Per node: highest index whose durable commit was checked. */
  private readonly checkedCommit = new Map<string, number>()
  private readonly checkedSnapshot = new Map<string, number>()
  /** Values of put and cas commands that committed (a failed cas is included: harmless). */
  readonly committedValues = new Set<string>()
  /** Committed entries the reference has not replayed yet, by index. */
  private readonly committedEntries = new Map<number, { type: number; data: Uint8Array }>()
  /** Replays the committed log in index order: the state every snapshot must match. */
  private readonly reference = new KvStateMachine()
  private referenceIndex = BOOTSTRAP_INDEX
  /** Hash of the reference state after each index it replayed. */
  private readonly stateHashes = new Map<number, number>([
    [BOOTSTRAP_INDEX, hashBytes(new KvStateMachine().snapshot())],
  ])
  /** Snapshots seen on disk at an index the reference has not reached yet. */
  private readonly snapshotsToCheck = new Map<number, { nodeId: string; hash: number }[]>()
  /** Snapshot checks done, for the run's summary. */
  snapshotsChecked = 0

  fail(reason: string): void {
    if (this.violation === null) this.violation = reason
  }

  observeLeader(nodeId: string, term: number, where: string): void {
    const known = this.leaders.get(term)
    if (known === undefined) this.leaders.set(term, nodeId)
    else if (known !== nodeId)
      this.fail(`safety: two leaders in term ${term}: ${known} and ${nodeId} (seen at ${where})`)
  }

  /** A write of `storage` became durable: check every newly committed entry it holds. */
  observeDurable(storage: DurableView & { nodeId: string }): void {
    const nodeId = storage.nodeId
    const snapshot = storage.snapshot
    if (snapshot !== null && snapshot.meta.index > (this.checkedSnapshot.get(nodeId) ?? -1)) {
      this.checkedSnapshot.set(nodeId, snapshot.meta.index)
      if (snapshot.meta.index > 0) this.record(nodeId, snapshot.meta.index, snapshot.meta.term, null)
      this.checkSnapshotState(nodeId, snapshot.meta.index, hashBytes(snapshot.data))
    }
    const bounds = storage.bounds
    const upTo = Math.min(bounds.hardState.commit, bounds.lastIndex)
    let from = Math.max((this.checkedCommit.get(nodeId) ?? 0) + 1, bounds.snapshotIndex + 1)
    for (; from <= upTo; from++) {
      const entry = storage.entry(from)
      if (entry === undefined) {
        this.fail(`safety: ${nodeId} has commit ${bounds.hardState.commit} on disk but no entry ${from}`)
        return
      }
      this.record(nodeId, from, entry.term, hashBytes(entry.data, entry.type + 1), entry.type, entry.data)
    }
    if (upTo > (this.checkedCommit.get(nodeId) ?? 0)) this.checkedCommit.set(nodeId, upTo)
  }

  /**
   * A node's state machine applied `data` at `index`. Applying says the entry
   * is committed, and the driver persists entries before applying them, so the
   * node's own disk must hold this very entry: its term comes from there. (The
   * commit index itself may not be durable yet: the driver syncs a change of
   * commit alone with the next write, as etcd does.)
   */
  observeApply(nodeId: string, index: number, data: Uint8Array, storage: DurableView): void {
    const entry = storage.entry(index)
    const hash = hashBytes(data, EntryType.Normal + 1)
    if (entry === undefined) {
      this.fail(`safety: ${nodeId} applied entry ${index}, which its disk does not hold`)
      return
    }
    if (entry.type !== EntryType.Normal || hashBytes(entry.data, entry.type + 1) !== hash) {
      this.fail(`safety: ${nodeId} applied at index ${index} an entry other than the one on its disk`)
      return
    }
    this.record(nodeId, index, entry.term, hash, entry.type, entry.data)
  }

  private record(
    nodeId: string,
    index: number,
    term: number,
    hash: number | null,
    type?: number,
    data?: Uint8Array,
  ): void {
    const known = this.committed.get(index)
    if (known === undefined) {
      this.committed.set(index, { term, hash, nodeId })
      if (data !== undefined) this.noteEntry(index, type ?? 0, data)
      return
    }
    if (known.term !== term) {
      this.fail(
        `safety: committed logs diverge at index ${index}: ${known.nodeId} has term ${known.term}, ${nodeId} has term ${term}`,
      )
      return
    }
    if (hash === null) return
    if (known.hash === null) {
      known.hash = hash
      known.nodeId = nodeId
      if (data !== undefined) this.noteEntry(index, type ?? 0, data)
    } else if (known.hash !== hash) {
      this.fail(
        `safety: committed logs diverge at index ${index} (term ${term}): ${known.nodeId} and ${nodeId} hold different data`,
      )
    }
  }

  /** A committed entry whose data is known for the first time: remember its value, replay it when its turn comes. */
  private noteEntry(index: number, type: number, data: Uint8Array): void {
    this.noteValue(type, data)
    if (index <= this.referenceIndex) return
    this.committedEntries.set(index, { type, data: new Uint8Array(data) })
    for (;;) {
      const next = this.committedEntries.get(this.referenceIndex + 1)
      if (next === undefined) return
      this.committedEntries.delete(this.referenceIndex + 1)
      this.referenceIndex++
      // Only Normal entries with data reach a state machine (not the leader's empty entry, nor membership changes).
      if (next.type === EntryType.Normal && next.data.length > 0)
        this.reference.apply(next.data, this.referenceIndex)
      const hash = hashBytes(this.reference.snapshot())
      this.stateHashes.set(this.referenceIndex, hash)
      for (const pending of this.snapshotsToCheck.get(this.referenceIndex) ?? []) {
        this.compareSnapshot(pending.nodeId, this.referenceIndex, pending.hash, hash)
      }
      this.snapshotsToCheck.delete(this.referenceIndex)
    }
  }

  private checkSnapshotState(nodeId: string, index: number, hash: number): void {
    const expected = this.stateHashes.get(index)
    if (expected !== undefined) {
      this.compareSnapshot(nodeId, index, hash, expected)
      return
    }
    const waiting = this.snapshotsToCheck.get(index) ?? []
    waiting.push({ nodeId, hash })
    this.snapshotsToCheck.set(index, waiting)
  }

  private compareSnapshot(nodeId: string, index: number, hash: number, expected: number): void {
    this.snapshotsChecked++
    if (hash !== expected) {
      this.fail(
        `safety: ${nodeId} stored a snapshot at index ${index} whose state is not the one the committed log gives at ${index}`,
      )
    }
  }

  private noteValue(type: number, data: Uint8Array): void {
    if (type !== EntryType.Normal || data.length === 0) return
    try {
      const command = JSON.parse(decoder.decode(data)) as { op?: string; value?: unknown }
      if ((command.op === 'put' || command.op === 'cas') && typeof command.value === 'string') {
        this.committedValues.add(command.value)
      }
    } catch {
      // Not a KV command: nothing to remember.
    }
  }
}
