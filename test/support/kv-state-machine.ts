// A small replicated key/value store: the StateMachine that tests, the
// simulator and the Raft benchmark run on top of the consensus layer.
//
// Commands are JSON in UTF-8. A command may carry a client session
// ({clientId, seq}) so that a client retrying after a timeout gets the first
// outcome instead of applying the command twice (Raft dissertation §6.3).
// Everything here is deterministic: two replicas that apply the same entries,
// or one that restored a snapshot taken at the same index, hold the same
// state and evict the same sessions.

import type { StateMachine } from '../../consensus/state-machine.ts'

/** Sessions kept for exactly-once retries; beyond this the least recently used is forgotten. */
export const kvSessionsMax = 10_000

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

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encodeKvCommand(command: KvCommand): Uint8Array {
  return encoder.encode(JSON.stringify(command))
}

export class KvStateMachine implements StateMachine<KvResult> {
  private data = new Map<string, string>()
  /** Kept in least-recently-used-first order (Map iteration order is insertion order). */
  private sessions = new Map<string, SessionRecord>()
  private readonly sessionsMax: number

  constructor(options: { sessionsMax?: number } = {}) {
    this.sessionsMax = options.sessionsMax ?? kvSessionsMax
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
   * Binary layout, keys sorted so equal states encode to equal bytes:
   * magic "KV2", the entry count, then (key length, key, value length, value)
   * per entry (lengths as u32, strings UTF-8), then the sessions as JSON.
   * One buffer and no intermediate string: a JSON snapshot of 100k keys held
   * the event loop for ~0.4 s and doubled the memory it took.
   */
  snapshot(): Uint8Array {
    const keys = [...this.data.keys()].sort()
    let size = 3 + 4
    for (const key of keys) size += 8 + Buffer.byteLength(key) + Buffer.byteLength(this.data.get(key)!)
    const sessions = JSON.stringify(
      [...this.sessions.entries()]
        .sort(byFirst)
        .map(([clientId, record]) => [
          clientId,
          record.seq,
          record.lastIndex,
          normalizeResult(record.result),
        ]),
    )
    const sessionBytes = Buffer.byteLength(sessions)
    const out = Buffer.allocUnsafe(size + 4 + sessionBytes)
    out.write('KV2', 0, 'latin1')
    let offset = out.writeUInt32BE(keys.length, 3)
    for (const key of keys) {
      const value = this.data.get(key)!
      const keyBytes = out.write(key, offset + 4)
      out.writeUInt32BE(keyBytes, offset)
      offset += 4 + keyBytes
      const valueBytes = out.write(value, offset + 4)
      out.writeUInt32BE(valueBytes, offset)
      offset += 4 + valueBytes
    }
    offset = out.writeUInt32BE(sessionBytes, offset)
    out.write(sessions, offset)
    return new Uint8Array(out.buffer, out.byteOffset, out.length)
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
    for (let i = 0; i < count; i++) {
      const key = read()
      data.set(key, read())
    }
    const sessions = JSON.parse(read()) as [
      clientId: string,
      seq: number,
      lastIndex: number,
      result: KvResult,
    ][]
    this.data = data
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
        this.data.set(command.key, command.value)
        return { ok: true, value: command.value, prev: current }
      case 'cas':
        if (current !== command.expected) return { ok: false, value: current, prev: current }
        this.data.set(command.key, command.value)
        return { ok: true, value: command.value, prev: current }
    }
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
