// The continuous safety checks of a simulation run:
// - election safety: at most one leader per term, over every node and incarnation;
// - log matching of committed entries: each node's durable log up to its
//   durable commit index is compared, entry by entry (index, term, data hash),
//   with what every other node committed at that index, and snapshots with the
//   term recorded at their index;
// - state machine safety: each entry a node applies is the one committed at its
//   index, and applied indexes only move forward;
// - the values of committed writes, so that "no acknowledged write is lost"
//   can be checked at the end.
// The first violation is kept as a short sentence; later ones are ignored.

import { EntryType } from '../../consensus/types.ts'
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

export class SafetyChecker {
  violation: string | null = null
  private readonly leaders = new Map<number, string>()
  private readonly committed = new Map<number, CommittedRecord>()
  /** Per node: highest index whose durable commit was checked. */
  private readonly checkedCommit = new Map<string, number>()
  private readonly checkedSnapshot = new Map<string, number>()
  /** Values of put and cas commands that committed (a failed cas is included: harmless). */
  readonly committedValues = new Set<string>()

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
      if (data !== undefined) this.noteValue(type ?? 0, data)
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
      if (data !== undefined) this.noteValue(type ?? 0, data)
    } else if (known.hash !== hash) {
      this.fail(
        `safety: committed logs diverge at index ${index} (term ${term}): ${known.nodeId} and ${nodeId} hold different data`,
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
