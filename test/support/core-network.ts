// A hand-driven network of Raft cores for scenario tests (etcd's raft_test
// "network"): no driver, no clock, no promises. Each node's Ready is persisted
// into an in-memory durable copy, its committed entries applied to a log of
// applied data, and its messages queued; tests decide what is delivered,
// dropped or cut, and when time passes.

import { seededRng } from '../../consensus/clock.ts'
import { decodeConfChange, encodeConfChange } from '../../consensus/codec.ts'
import { type RaftConfig, resolveRaftConfig } from '../../consensus/config.ts'
import { emptyConfState } from '../../consensus/membership.ts'
import { RaftCore } from '../../consensus/raft-core.ts'
import {
  type ConfChange,
  ConfChangeTransition,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  type MessageType,
  type ReadState,
  type Snapshot,
} from '../../consensus/types.ts'

export interface Durable {
  hardState: HardState
  snapshot: Snapshot | null
  entries: Entry[]
}

export interface NodeRecord {
  core: RaftCore
  durable: Durable
  /** Data of applied Normal entries (no-ops excluded), in order. */
  applied: Array<{ index: number; data: string }>
  readStates: ReadState[]
  /** The state machine: applied data joined, so snapshots can carry it. */
  state: string[]
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export function text(value: string): Uint8Array {
  return encoder.encode(value)
}

export interface CoreNetworkOptions {
  config?: Partial<RaftConfig>
  seed?: number
  /** Members that start as learners (they must not be in `ids` voters). */
  learners?: string[]
}

export class CoreNetwork {
  readonly nodes = new Map<string, NodeRecord>()
  /** Messages sent and not yet delivered, in send order. */
  queue: Message[] = []
  /** Directed links that drop everything: "a->b". */
  private readonly cut = new Set<string>()
  /** Message types dropped everywhere. */
  private readonly ignored = new Set<MessageType>()
  readonly config: RaftConfig
  private seed: number

  constructor(voters: string[], options: CoreNetworkOptions = {}) {
    this.config = resolveRaftConfig({ preVote: false, checkQuorum: false, ...options.config })
    this.seed = options.seed ?? 1
    const confState: ConfState = {
      ...emptyConfState(),
      voters: [...voters].sort(),
      learners: [...(options.learners ?? [])].sort(),
    }
    for (const id of [...voters, ...(options.learners ?? [])]) {
      const snapshot: Snapshot = { meta: { index: 0, term: 0, confState }, data: text('') }
      this.addNode(id, { hardState: { term: 0, vote: '', commit: 0 }, snapshot, entries: [] })
    }
  }

  /** Adds a node that starts from `durable` (a fresh, empty node if omitted). */
  addNode(id: string, durable?: Durable): NodeRecord {
    const start: Durable = durable ?? {
      hardState: { term: 0, vote: '', commit: 0 },
      snapshot: null,
      entries: [],
    }
    const core = new RaftCore({
      id,
      config: this.config,
      rng: seededRng(this.seed++),
      persisted: { hardState: { ...start.hardState }, snapshot: start.snapshot, entries: [...start.entries] },
    })
    core.leaveJointData = encodeConfChange({
      transition: ConfChangeTransition.Auto,
      changes: [],
      context: new Uint8Array(0),
    })
    const state =
      start.snapshot !== null && start.snapshot.data.length > 0
        ? decoder.decode(start.snapshot.data).split('\n')
        : []
    const record: NodeRecord = { core, durable: start, applied: [], readStates: [], state }
    this.nodes.set(id, record)
    return record
  }

  node(id: string): RaftCore {
    const record = this.nodes.get(id)
    if (record === undefined) throw new Error(`no node ${id}`)
    return record.core
  }

  record(id: string): NodeRecord {
    const record = this.nodes.get(id)
    if (record === undefined) throw new Error(`no node ${id}`)
    return record
  }

  /** Crashes a node (losing nothing durable: every Ready was persisted) and starts it again. */
  restart(id: string): RaftCore {
    const record = this.record(id)
    this.queue = this.queue.filter((m) => m.to !== id && m.from !== id)
    const fresh = this.addNode(id, {
      hardState: { ...record.durable.hardState },
      snapshot: record.durable.snapshot,
      entries: [...record.durable.entries],
    })
    // Membership is re-learnt by re-applying the committed log, as the driver does.
    this.processReady(id)
    return fresh.core
  }

  cutLink(from: string, to: string): void {
    this.cut.add(`${from}->${to}`)
  }

  isolate(id: string): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue
      this.cut.add(`${id}->${other}`)
      this.cut.add(`${other}->${id}`)
    }
  }

  /** Splits the nodes into groups that cannot talk across. */
  partition(...groups: string[][]): void {
    for (const a of groups)
      for (const b of groups) {
        if (a === b) continue
        for (const x of a) for (const y of b) this.cut.add(`${x}->${y}`)
      }
  }

  ignore(type: MessageType): void {
    this.ignored.add(type)
  }

  heal(): void {
    this.cut.clear()
    this.ignored.clear()
  }

  tick(id: string, times = 1): void {
    for (let i = 0; i < times; i++) {
      this.node(id).tick()
      this.processReady(id)
    }
  }

  /** Ticks a node past its (maximum randomized) election timeout. */
  tickElection(id: string): void {
    this.tick(id, this.config.electionTimeoutTicks * 2)
  }

  campaign(id: string): void {
    this.node(id).campaign(this.config.preVote ? 'pre' : 'normal')
    this.processReady(id)
  }

  propose(id: string, data: string): void {
    this.node(id).propose([{ type: EntryType.Normal, data: text(data) }])
    this.processReady(id)
  }

  proposeConfChange(id: string, change: ConfChange): void {
    const core = this.node(id)
    core.validateConfChange(change)
    core.propose([{ type: EntryType.ConfChange, data: encodeConfChange(change) }])
    this.processReady(id)
  }

  /** Handles every pending Ready of one node: persist, queue messages, apply, advance. */
  processReady(id: string): void {
    const record = this.record(id)
    const { core } = record
    while (core.hasReady()) {
      const ready = core.ready()
      const durable = record.durable
      if (ready.hardState !== null) durable.hardState = { ...ready.hardState }
      if (ready.snapshot !== null) {
        durable.snapshot = ready.snapshot
        durable.entries = durable.entries.filter((e) => e.index > ready.snapshot!.meta.index)
      }
      if (ready.entries.length > 0) {
        const first = ready.entries[0]!.index
        durable.entries = durable.entries.filter((e) => e.index < first).concat(ready.entries)
      }
      this.queue.push(...ready.messages)
      if (ready.snapshot !== null) {
        const data = decoder.decode(ready.snapshot.data)
        record.state = data === '' ? [] : data.split('\n')
      }
      for (const entry of ready.committedEntries) {
        if (entry.type === EntryType.ConfChange) core.applyConfChange(decodeConfChange(entry.data))
        else if (entry.data.length > 0) {
          const data = decoder.decode(entry.data)
          record.applied.push({ index: entry.index, data })
          record.state.push(data)
        }
      }
      record.readStates.push(...ready.readStates)
      core.advance(ready)
    }
  }

  /** Takes a snapshot of a node's applied state and compacts its log up to `discardTo`. */
  compact(id: string, discardTo?: number): Snapshot {
    const record = this.record(id)
    const { core } = record
    const index = core.log.applied
    const snapshot: Snapshot = {
      meta: { index, term: core.log.term(index) ?? 0, confState: core.getConfState() },
      data: text(record.state.join('\n')),
    }
    core.compact(snapshot, discardTo ?? index)
    record.durable.snapshot = snapshot
    record.durable.entries = record.durable.entries.filter((e) => e.index > index)
    return snapshot
  }

  /** Delivers queued messages (and the ones they cause) until none are left or `limit` is reached. */
  stabilize(limit = 100_000): void {
    for (let delivered = 0; this.queue.length > 0; delivered++) {
      if (delivered >= limit) throw new Error(`the network did not stabilize within ${limit} messages`)
      this.deliverOne()
    }
  }

  /** Delivers the oldest queued message. Returns it (or null if it was dropped or none was queued). */
  deliverOne(): Message | null {
    const message = this.queue.shift()
    if (message === undefined) return null
    if (this.cut.has(`${message.from}->${message.to}`) || this.ignored.has(message.type)) return null
    const target = this.nodes.get(message.to)
    if (target === undefined) return null
    target.core.step(message)
    this.processReady(message.to)
    return message
  }

  /** Removes and returns queued messages matching a predicate, without delivering them. */
  take(predicate: (m: Message) => boolean): Message[] {
    const taken = this.queue.filter(predicate)
    this.queue = this.queue.filter((m) => !predicate(m))
    return taken
  }

  /** Delivers one message by hand (for reordering tests). */
  deliver(message: Message): void {
    const target = this.nodes.get(message.to)
    if (target === undefined) return
    target.core.step(message)
    this.processReady(message.to)
  }

  leader(): string | undefined {
    for (const [id, { core }] of this.nodes) if (core.isLeader()) return id
    return undefined
  }

  /** Elects `id` (campaign plus delivery). */
  elect(id: string): void {
    this.campaign(id)
    this.stabilize()
  }

  appliedData(id: string): string[] {
    return this.record(id).applied.map((a) => a.data)
  }
}
