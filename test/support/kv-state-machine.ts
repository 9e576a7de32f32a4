// A small replicated key/value store: the StateMachine that tests, the
// simulator and the Raft benchmark run on top of the consensus layer.
//
// Commands are JSON in UTF-8. A command may carry a client session
// ({clientId, seq}) so that a client retrying after a timeout gets the first
// outcome instead of applying the command twice (Raft dissertation §6.3).
// Everything here is deterministic: two replicas that apply the same entries,
// or one that restored a snapshot taken at the same index, hold the same
// state and evict the same sessions.
//
// Snapshots come two ways from one encoder: snapshot() at once, and
// snapshotAsync() in slices that yield to the event loop between them while
// apply() goes on. The asynchronous one encodes the state as it was when it
// was called without copying it: keys are never deleted, so the keys at that
// moment are the first `count` in the map's insertion order (new keys go to
// the end), and a put records a key's earlier value the first time it changes
// a key that a snapshot in progress still has to encode (copy on write).

import type { StateMachine } from '../../consensus/state-machine.ts'

/** Sessions kept for exactly-once retries; beyond this the least recently used is forgotten. */
export const kvSessionsMax = 10_000
/** Bytes snapshotAsync encodes before it yields, by default: about a millisecond of work. */
export const kvSnapshotSliceBytes = 128 * 1024

export interface KvStateMachineOptions {
  sessionsMax?: number
  /** Bytes snapshotAsync encodes between two yields. */
  snapshotSliceBytes?: number
  /**
   * How snapshotAsync yields between slices. By default setImmediate, which
   * lets pending I/O and timers run first; the simulator passes its virtual clock.
   */
  yieldToLoop?: () => Promise<void>
}

export interface KvSession {
  clientId: string
  /** Increases by one per command the client issues; a retry reuses its seq. */
  seq: number
}

export type KvCommand =
  | { op: 'put'; key: string; value: string; session?: KvSession }
  | { op: 'cas'; key: string; expected: string | null; value: string; session?: KvSession }
  | { op: 'get'; key: string; session?: KvSession }

export interface KvResult {
  /** False when a CAS found another value, or when the command was refused (see `error`). */
  ok: boolean
  /** put and successful cas: the new value; failed cas and get: the current value. */
  value: string | null
  /** put and cas: the value before the command. */
  prev?: string | null
  /** Set when the command was refused without touching the state. */
  error?: 'ERR_BAD_COMMAND' | 'ERR_STALE_SEQ'
}

interface SessionRecord {
  seq: number
  result: KvResult
  /** Log index of the command that last used the session: orders eviction, also after a restore. */
  lastIndex: number
}

/** The state as it was when a snapshot started, while apply() goes on changing the live map. */
interface SnapshotView {
  /** The live map when the snapshot started (a restore swaps in a new one and leaves this one alone). */
  data: Map<string, string>
  /** Keys at that moment: the first `count` in insertion order. */
  count: number
  /** Values at that moment of the keys changed since (copy on write). */
  before: Map<string, string>
  /** Key and value lengths (UTF-16 units) at that moment: the UTF-8 size is at least this. */
  chars: number
  /** The sessions, already encoded: at most sessionsMax of them, so this costs little at the start. */
  sessionsJson: string
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encodeKvCommand(command: KvCommand): Uint8Array {
  return encoder.encode(JSON.stringify(command))
}

export class KvStateMachine implements StateMachine<KvResult> {
  /** Never loses a key (there is no delete; restore replaces the whole map), which snapshotAsync relies on. */
  private data = new Map<string, string>()
  /** Kept in least-recently-used-first order (Map iteration order is insertion order). */
  private sessions = new Map<string, SessionRecord>()
  /** Sum of the lengths of every key and value in `data`. */
  private chars = 0
  /** Snapshots in progress, which must see the values they started with. */
  private readonly views = new Set<SnapshotView>()
  private readonly sessionsMax: number
  private readonly snapshotSliceBytes: number
  private readonly yieldToLoop: () => Promise<void>

  constructor(options: KvStateMachineOptions = {}) {
    this.sessionsMax = options.sessionsMax ?? kvSessionsMax
    this.snapshotSliceBytes = options.snapshotSliceBytes ?? kvSnapshotSliceBytes
    this.yieldToLoop = options.yieldToLoop ?? (() => new Promise<void>((resolve) => setImmediate(resolve)))
  }

  /** A local (possibly stale) read; callers wanting linearizability take a read index first. */
  get(key: string): string | null {
    return this.data.get(key) ?? null
  }

  /** Every key and value, sorted by key (for tests that compare replicas). */
  entries(): [string, string][] {
    return [...this.data.entries()].sort(byFirst)
  }

  get size(): number {
    return this.data.size
  }

  get sessionCount(): number {
    return this.sessions.size
  }

  apply(bytes: Uint8Array, index: number): KvResult {
    const command = parseCommand(bytes)
    if (command === null) return { ok: false, value: null, error: 'ERR_BAD_COMMAND' }
    const session = command.session
    if (session === undefined) return this.execute(command)
    const known = this.sessions.get(session.clientId)
    if (known !== undefined && session.seq === known.seq) {
      this.touch(session.clientId, known, index)
      return known.result
    }
    // An older seq was answered already and the client has moved on; its result is gone.
    if (known !== undefined && session.seq < known.seq)
      return { ok: false, value: null, error: 'ERR_STALE_SEQ' }
    const result = this.execute(command)
    this.touch(session.clientId, { seq: session.seq, result, lastIndex: index }, index)
    return result
  }

  /**
   * Binary layout: magic "KV2", the entry count, then (key length, key,
   * value length, value) per entry (lengths as u32, strings UTF-8), then the
   * sessions as JSON. Entries come in the map's insertion order, sessions
   * least recently used first; restore keeps both orders, so replicas that
   * applied the same log (directly or through a snapshot) encode to equal
   * bytes. Not sorting saves a sort of every key, and one buffer without an
   * intermediate string keeps the memory it takes to the snapshot's size.
   */
  snapshot(): Uint8Array {
    const view = this.view()
    const encoder = new SnapshotEncoder(view)
    const entries = view.data.entries()
    for (let i = 0; i < view.count; i++) {
      const [key, value] = entries.next().value as [string, string]
      encoder.entry(key, value)
    }
    return encoder.finish()
  }

  /**
   * The same bytes snapshot() would have returned at the time of the call,
   * encoded snapshotSliceBytes at a time with a yield between slices, while
   * apply() and restore() go on.
   */
  async snapshotAsync(options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const view = this.view()
    this.views.add(view)
    try {
      const encoder = new SnapshotEncoder(view)
      // Keys present at the start keep their place in the iteration order
      // whatever apply() does meanwhile (no key is ever deleted).
      const entries = view.data.entries()
      let left = view.count
      while (left > 0) {
        options.signal?.throwIfAborted()
        const sliceEnd = encoder.bytes + this.snapshotSliceBytes
        while (left > 0 && encoder.bytes < sliceEnd) {
          const [key, live] = entries.next().value as [string, string]
          left--
          encoder.entry(key, view.before.size === 0 ? live : (view.before.get(key) ?? live))
        }
        if (left > 0) await this.yieldToLoop()
      }
      options.signal?.throwIfAborted()
      return encoder.finish()
    } finally {
      this.views.delete(view)
    }
  }

  private view(): SnapshotView {
    return {
      data: this.data,
      count: this.data.size,
      before: new Map(),
      chars: this.chars,
      sessionsJson: JSON.stringify(
        [...this.sessions].map(([clientId, record]) => [
          clientId,
          record.seq,
          record.lastIndex,
          normalizeResult(record.result),
        ]),
      ),
    }
  }

  restore(bytes: Uint8Array): void {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    if (buf.length < 7 || buf.toString('latin1', 0, 3) !== 'KV2') {
      throw new Error('The KV snapshot is not in the KV2 layout this build reads.')
    }
    const count = buf.readUInt32BE(3)
    let offset = 7
    const read = (): string => {
      const length = buf.readUInt32BE(offset)
      const text = buf.toString('utf8', offset + 4, offset + 4 + length)
      offset += 4 + length
      return text
    }
    const data = new Map<string, string>()
    let chars = 0
    for (let i = 0; i < count; i++) {
      const key = read()
      const value = read()
      data.set(key, value)
      chars += key.length + value.length
    }
    const sessions = JSON.parse(read()) as [
      clientId: string,
      seq: number,
      lastIndex: number,
      result: KvResult,
    ][]
    this.data = data
    this.chars = chars
    // Re-insert sessions oldest first so that eviction after a restore matches the replicas that never restored.
    const ordered = [...sessions].sort((a, b) => a[2] - b[2])
    this.sessions = new Map(
      ordered.map(([clientId, seq, lastIndex, result]) => [
        clientId,
        { seq, lastIndex, result: normalizeResult(result) },
      ]),
    )
  }

  private execute(command: KvCommand): KvResult {
    const current = this.data.get(command.key) ?? null
    switch (command.op) {
      case 'get':
        return { ok: true, value: current }
      case 'put':
        this.set(command.key, command.value, current)
        return { ok: true, value: command.value, prev: current }
      case 'cas':
        if (current !== command.expected) return { ok: false, value: current, prev: current }
        this.set(command.key, command.value, current)
        return { ok: true, value: command.value, prev: current }
    }
  }

  private set(key: string, value: string, current: string | null): void {
    if (current === null) {
      // A new key goes after every key a snapshot in progress encodes: nothing to remember.
      this.chars += key.length + value.length
    } else {
      this.chars += value.length - current.length
      for (const view of this.views) {
        if (view.data === this.data && !view.before.has(key)) view.before.set(key, current)
      }
    }
    this.data.set(key, value)
  }

  private touch(clientId: string, record: SessionRecord, index: number): void {
    this.sessions.delete(clientId)
    this.sessions.set(clientId, { ...record, lastIndex: index })
    while (this.sessions.size > this.sessionsMax) {
      const oldest = this.sessions.keys().next().value as string
      this.sessions.delete(oldest)
    }
  }
}

/** Writes the KV2 layout into one buffer sized from the view (exact for ASCII; grown when UTF-8 needs more). */
class SnapshotEncoder {
  private out: Buffer
  private readonly sessionsJson: string
  bytes: number

  constructor(view: SnapshotView) {
    // Allocated, not filled: its pages are touched (and faulted in) slice by slice as it is written.
    this.out = Buffer.allocUnsafe(3 + 4 + 8 * view.count + view.chars + 4 + view.sessionsJson.length)
    this.out.write('KV2', 0, 'latin1')
    this.bytes = this.out.writeUInt32BE(view.count, 3)
    this.sessionsJson = view.sessionsJson
  }

  entry(key: string, value: string): void {
    this.string(key)
    this.string(value)
  }

  finish(): Uint8Array {
    this.string(this.sessionsJson)
    return new Uint8Array(this.out.buffer, this.out.byteOffset, this.bytes)
  }

  private string(text: string): void {
    const room = this.out.length - this.bytes - 4
    // A UTF-16 unit takes at most 3 bytes in UTF-8; measure only when that might not fit.
    if (room < 3 * text.length) {
      const needed = Buffer.byteLength(text)
      if (needed > room) this.grow(4 + needed)
    }
    const written = this.out.write(text, this.bytes + 4)
    this.out.writeUInt32BE(written, this.bytes)
    this.bytes += 4 + written
  }

  private grow(needed: number): void {
    const next = Buffer.allocUnsafe(Math.max(2 * this.out.length, this.bytes + needed))
    this.out.copy(next, 0, 0, this.bytes)
    this.out = next
  }
}

function byFirst(a: [string, unknown], b: [string, unknown]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0
}

/** Fixed key order and no undefined fields, so a result encodes the same on every replica. */
function normalizeResult(result: KvResult): KvResult {
  const normalized: KvResult = { ok: result.ok, value: result.value }
  if (result.prev !== undefined) normalized.prev = result.prev
  if (result.error !== undefined) normalized.error = result.error
  return normalized
}

/** Returns null for anything that is not a well-formed command: apply must never throw on bad input. */
function parseCommand(bytes: Uint8Array): KvCommand | null {
  let raw: unknown
  try {
    raw = JSON.parse(decoder.decode(bytes))
  } catch {
    return null
  }
  if (typeof raw !== 'object' || raw === null) return null
  const c = raw as Record<string, unknown>
  if (typeof c.key !== 'string') return null
  if (c.session !== undefined) {
    const s = c.session as Record<string, unknown> | null
    if (typeof s !== 'object' || s === null) return null
    if (typeof s.clientId !== 'string' || !Number.isSafeInteger(s.seq)) return null
  }
  switch (c.op) {
    case 'get':
      return c as KvCommand
    case 'put':
      return typeof c.value === 'string' ? (c as KvCommand) : null
    case 'cas':
      return typeof c.value === 'string' && (typeof c.expected === 'string' || c.expected === null)
        ? (c as KvCommand)
        : null
    default:
      return null
  }
}
