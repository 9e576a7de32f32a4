// The compact binary encoding of Raft messages and of the records the storage
// adapter persists (entries, hard state, conf state, snapshot meta, conf
// changes). JSON would spend most of a heartbeat on field names and cannot
// carry bytes; this format spends one byte per small number.
//
// Building blocks:
// - uint: unsigned LEB128 over JS numbers, 1..8 bytes, minimal, at most
//   2^53-1 (terms and indexes are safe integers, so no BigInt is needed);
// - bytes: a uint length, then the bytes;
// - id: a node id as bytes holding UTF-8.
//
// Every top-level record starts with the format version byte. A message is:
//   version, type, flags, from, to, term, logTerm, index, commit, rejectHint,
//   [entries: uint count, then per entry: term, index, type, data bytes]
//   [context bytes]
//   [snapshot: meta, totalBytes, offset, data bytes]
// where the flags byte says whether reject is set and which optional parts
// follow, so an empty optional part costs nothing beyond its flag bit.
// A meta is: index, term, conf state; a conf state is: autoLeave byte, then
// voters, votersOutgoing, learners, learnersNext, each a uint count of ids.
// A conf change is: transition byte, uint count of (op byte, id), context
// bytes. A hard state is: term, vote id, commit. A stored entry is laid out
// as inside a message.
//
// Encoding computes the exact size first, then writes into one buffer of that
// size: no growing, no copying, no allocation per field. A mismatch between
// the two passes is a bug and fails an assertion.
//
// Decoding trusts nothing: every failure is a DecodeError whose sentence says
// what was wrong and where. Lengths and counts are checked against the bytes
// that remain before anything is allocated, so a small malicious frame cannot
// make us allocate a large array.
//
// Zero copy: the Uint8Array fields of a decoded value (entry data, context,
// snapshot data) are subarrays of the input. They stay valid as long as the
// input buffer is not reused; the core never mutates them. Copy them
// (`slice()`) before recycling the input buffer.

import { AssertionFailedError, DecodeError } from './errors.ts'
import {
  type ConfChange,
  type ConfChangeItem,
  ConfChangeOp,
  ConfChangeTransition,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type SnapshotChunk,
  type SnapshotMeta,
} from './types.ts'

/** The format version written as the first byte of every encoded record. */
export const CODEC_VERSION = 1

/**
 * What entryBytes adds to an entry's data length: term (3 bytes below 2^21),
 * index (5 bytes below 2^35), type (1) and data length (3 bytes below 2 MiB).
 */
export const ENTRY_OVERHEAD_BYTES = 12

const FLAG_REJECT = 1
const FLAG_ENTRIES = 2
const FLAG_CONTEXT = 4
const FLAG_SNAPSHOT = 8
const FLAGS_KNOWN = FLAG_REJECT | FLAG_ENTRIES | FLAG_CONTEXT | FLAG_SNAPSHOT

/** ceil(53 / 7): the longest varint a safe integer needs. */
const VARINT_BYTES_MAX = 8
/** Smallest encoded entry: term, index, type, data length, one byte each. */
const ENTRY_BYTES_MIN = 4
/** Smallest encoded id: its length byte. */
const ID_BYTES_MIN = 1
/** Smallest encoded conf change item: op and id length. */
const CONF_CHANGE_ITEM_BYTES_MIN = 2

const MESSAGE_TYPE_MAX = MessageType.ReadIndexResponse
const ENTRY_TYPE_MAX = EntryType.ConfChange
const CONF_CHANGE_OP_MAX = ConfChangeOp.Remove
const CONF_CHANGE_TRANSITION_MAX = ConfChangeTransition.JointExplicit

/** Shared by every decoded empty byte field, so empty parts allocate nothing. */
const EMPTY: Uint8Array = new Uint8Array(0)

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * The approximate encoded size of an entry, for byte limits in the core. Exact
 * or slightly over for terms below 2^21, indexes below 2^35 and data below 2 MiB.
 */
export function entryBytes(entry: Entry): number {
  return entry.data.length + ENTRY_OVERHEAD_BYTES
}

// ---------------------------------------------------------------------------
// Size pass. Each function validates what it measures, so the write pass can
// trust its input. Invalid input is a programmer error, not a peer's fault.

function invalid(field: string, value: unknown, expected: string): never {
  throw new AssertionFailedError(`cannot encode ${field} = ${String(value)}: it must be ${expected}.`)
}

function uintSize(value: number, field: string): number {
  if (value >= 0 && value < 0x80 && (value | 0) === value) return 1
  if (!Number.isSafeInteger(value) || value < 0) invalid(field, value, 'a whole number from 0 to 2^53-1')
  if (value < 0x4000) return 2
  if (value < 0x200000) return 3
  if (value < 0x10000000) return 4
  if (value < 0x800000000) return 5
  if (value < 0x40000000000) return 6
  if (value < 0x2000000000000) return 7
  return 8
}

function smallEnumSize(value: number, min: number, max: number, field: string): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    invalid(field, value, `a whole number from ${min} to ${max}`)
  }
  return 1
}

/** UTF-8 length of an id. A lone surrogate has no UTF-8 form, and replacing it would change the id. */
function utf8Length(text: string): number {
  const length = text.length
  let bytes = length
  for (let i = 0; i < length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x80) continue
    if (code < 0x800) {
      bytes += 1
    } else if (code < 0xd800 || code > 0xdfff) {
      bytes += 2
    } else if (code <= 0xdbff && i + 1 < length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      // A surrogate pair: two UTF-16 units, four UTF-8 bytes.
      bytes += 2
      i++
    } else {
      invalid('node id', JSON.stringify(text), 'well-formed Unicode (it holds a lone surrogate)')
    }
  }
  return bytes
}

function idSize(id: NodeId, field: string): number {
  if (typeof id !== 'string') invalid(field, id, 'a string')
  const length = utf8Length(id)
  return uintSize(length, field) + length
}

function bytesSize(data: Uint8Array, field: string): number {
  if (!(data instanceof Uint8Array)) invalid(field, data, 'a Uint8Array')
  return uintSize(data.length, field) + data.length
}

function idListSize(ids: NodeId[], field: string): number {
  let size = uintSize(ids.length, field)
  for (let i = 0; i < ids.length; i++) size += idSize(ids[i]!, field)
  return size
}

function confStateSize(cs: ConfState): number {
  return (
    1 +
    idListSize(cs.voters, 'voters') +
    idListSize(cs.votersOutgoing, 'votersOutgoing') +
    idListSize(cs.learners, 'learners') +
    idListSize(cs.learnersNext, 'learnersNext')
  )
}

function metaSize(meta: SnapshotMeta): number {
  return (
    uintSize(meta.index, 'snapshot index') +
    uintSize(meta.term, 'snapshot term') +
    confStateSize(meta.confState)
  )
}

function entrySize(entry: Entry): number {
  return (
    uintSize(entry.term, 'entry term') +
    uintSize(entry.index, 'entry index') +
    smallEnumSize(entry.type, 0, ENTRY_TYPE_MAX, 'entry type') +
    bytesSize(entry.data, 'entry data')
  )
}

function chunkSize(chunk: SnapshotChunk): number {
  return (
    metaSize(chunk.meta) +
    uintSize(chunk.totalBytes, 'snapshot totalBytes') +
    uintSize(chunk.offset, 'snapshot offset') +
    bytesSize(chunk.data, 'snapshot data')
  )
}

function messageSize(message: Message): number {
  let size =
    2 + // version, type
    1 + // flags
    idSize(message.from, 'from') +
    idSize(message.to, 'to') +
    uintSize(message.term, 'term') +
    uintSize(message.logTerm, 'logTerm') +
    uintSize(message.index, 'index') +
    uintSize(message.commit, 'commit') +
    uintSize(message.rejectHint, 'rejectHint')
  smallEnumSize(message.type, 1, MESSAGE_TYPE_MAX, 'message type')
  const entries = message.entries
  if (entries.length > 0) {
    size += uintSize(entries.length, 'entry count')
    for (let i = 0; i < entries.length; i++) size += entrySize(entries[i]!)
  }
  if (message.context.length > 0) size += bytesSize(message.context, 'context')
  if (message.snapshot !== null) size += chunkSize(message.snapshot)
  return size
}

// ---------------------------------------------------------------------------
// Write pass.

class Writer {
  readonly bytes: Uint8Array
  pos = 0

  constructor(size: number) {
    this.bytes = new Uint8Array(size)
  }

  byte(value: number): void {
    this.bytes[this.pos++] = value
  }

  uint(value: number): void {
    const bytes = this.bytes
    let pos = this.pos
    // Above 2^31 bit operators would truncate, so peel 7 bits off by division.
    while (value > 0x7fffffff) {
      bytes[pos++] = (value % 0x80) | 0x80
      value = Math.floor(value / 0x80)
    }
    while (value >= 0x80) {
      bytes[pos++] = (value & 0x7f) | 0x80
      value >>>= 7
    }
    bytes[pos++] = value
    this.pos = pos
  }

  bytesField(data: Uint8Array): void {
    const length = data.length
    this.uint(length)
    const bytes = this.bytes
    const pos = this.pos
    // set() has a fixed cost that a short copy loop does not.
    if (length < 16) {
      for (let i = 0; i < length; i++) bytes[pos + i] = data[i]!
    } else {
      bytes.set(data, pos)
    }
    this.pos = pos + length
  }

  id(text: string): void {
    const length = text.length
    const byteLength = utf8Length(text)
    this.uint(byteLength)
    const bytes = this.bytes
    let pos = this.pos
    if (byteLength === length) {
      for (let i = 0; i < length; i++) bytes[pos++] = text.charCodeAt(i)
    } else {
      for (let i = 0; i < length; i++) {
        let code = text.charCodeAt(i)
        if (code < 0x80) {
          bytes[pos++] = code
        } else if (code < 0x800) {
          bytes[pos++] = 0xc0 | (code >> 6)
          bytes[pos++] = 0x80 | (code & 0x3f)
        } else if (code < 0xd800 || code > 0xdfff) {
          bytes[pos++] = 0xe0 | (code >> 12)
          bytes[pos++] = 0x80 | ((code >> 6) & 0x3f)
          bytes[pos++] = 0x80 | (code & 0x3f)
        } else {
          // utf8Length already proved this is a well-formed surrogate pair.
          code = 0x10000 + ((code - 0xd800) << 10) + (text.charCodeAt(++i) - 0xdc00)
          bytes[pos++] = 0xf0 | (code >> 18)
          bytes[pos++] = 0x80 | ((code >> 12) & 0x3f)
          bytes[pos++] = 0x80 | ((code >> 6) & 0x3f)
          bytes[pos++] = 0x80 | (code & 0x3f)
        }
      }
    }
    this.pos = pos
  }

  idList(ids: NodeId[]): void {
    this.uint(ids.length)
    for (let i = 0; i < ids.length; i++) this.id(ids[i]!)
  }

  confState(cs: ConfState): void {
    this.byte(cs.autoLeave ? 1 : 0)
    this.idList(cs.voters)
    this.idList(cs.votersOutgoing)
    this.idList(cs.learners)
    this.idList(cs.learnersNext)
  }

  meta(meta: SnapshotMeta): void {
    this.uint(meta.index)
    this.uint(meta.term)
    this.confState(meta.confState)
  }

  entry(entry: Entry): void {
    this.uint(entry.term)
    this.uint(entry.index)
    this.byte(entry.type)
    this.bytesField(entry.data)
  }

  /** Hands out the buffer once the write pass filled exactly what the size pass measured. */
  finish(what: string): Uint8Array {
    if (this.pos !== this.bytes.length) {
      throw new AssertionFailedError(
        `${what} encoding wrote ${this.pos} bytes but its size pass measured ${this.bytes.length}.`,
      )
    }
    return this.bytes
  }
}

export function encodeMessage(message: Message): Uint8Array {
  const writer = new Writer(messageSize(message))
  writer.byte(CODEC_VERSION)
  writer.byte(message.type)
  const entries = message.entries
  const flags =
    (message.reject ? FLAG_REJECT : 0) |
    (entries.length > 0 ? FLAG_ENTRIES : 0) |
    (message.context.length > 0 ? FLAG_CONTEXT : 0) |
    (message.snapshot !== null ? FLAG_SNAPSHOT : 0)
  writer.byte(flags)
  writer.id(message.from)
  writer.id(message.to)
  writer.uint(message.term)
  writer.uint(message.logTerm)
  writer.uint(message.index)
  writer.uint(message.commit)
  writer.uint(message.rejectHint)
  if (entries.length > 0) {
    writer.uint(entries.length)
    for (let i = 0; i < entries.length; i++) writer.entry(entries[i]!)
  }
  if (message.context.length > 0) writer.bytesField(message.context)
  const chunk = message.snapshot
  if (chunk !== null) {
    writer.meta(chunk.meta)
    writer.uint(chunk.totalBytes)
    writer.uint(chunk.offset)
    writer.bytesField(chunk.data)
  }
  return writer.finish('Raft message')
}

export function encodeEntry(entry: Entry): Uint8Array {
  const writer = new Writer(1 + entrySize(entry))
  writer.byte(CODEC_VERSION)
  writer.entry(entry)
  return writer.finish('Log entry')
}

export function encodeHardState(hardState: HardState): Uint8Array {
  const writer = new Writer(
    1 +
      uintSize(hardState.term, 'hard state term') +
      idSize(hardState.vote, 'hard state vote') +
      uintSize(hardState.commit, 'hard state commit'),
  )
  writer.byte(CODEC_VERSION)
  writer.uint(hardState.term)
  writer.id(hardState.vote)
  writer.uint(hardState.commit)
  return writer.finish('Hard state')
}

export function encodeConfState(confState: ConfState): Uint8Array {
  const writer = new Writer(1 + confStateSize(confState))
  writer.byte(CODEC_VERSION)
  writer.confState(confState)
  return writer.finish('Conf state')
}

export function encodeSnapshotMeta(meta: SnapshotMeta): Uint8Array {
  const writer = new Writer(1 + metaSize(meta))
  writer.byte(CODEC_VERSION)
  writer.meta(meta)
  return writer.finish('Snapshot meta')
}

export function encodeConfChange(confChange: ConfChange): Uint8Array {
  const changes = confChange.changes
  let size =
    1 +
    smallEnumSize(confChange.transition, 0, CONF_CHANGE_TRANSITION_MAX, 'conf change transition') +
    uintSize(changes.length, 'conf change count') +
    bytesSize(confChange.context, 'conf change context')
  for (let i = 0; i < changes.length; i++) {
    const item = changes[i]!
    size +=
      smallEnumSize(item.op, 0, CONF_CHANGE_OP_MAX, 'conf change op') + idSize(item.node, 'conf change node')
  }
  const writer = new Writer(size)
  writer.byte(CODEC_VERSION)
  writer.byte(confChange.transition)
  writer.uint(changes.length)
  for (let i = 0; i < changes.length; i++) {
    const item = changes[i]!
    writer.byte(item.op)
    writer.id(item.node)
  }
  writer.bytesField(confChange.context)
  return writer.finish('Conf change')
}

// ---------------------------------------------------------------------------
// Decoding. The reader's failure paths live in separate methods so the common
// path stays small enough to inline.

class Reader {
  readonly bytes: Uint8Array
  readonly end: number
  /** Names the record in error sentences ("Raft message", "Conf change"…). */
  readonly what: string
  pos = 0

  constructor(bytes: Uint8Array, what: string) {
    if (!(bytes instanceof Uint8Array)) {
      throw new DecodeError(`${what} must be given as a Uint8Array, got ${typeof bytes}.`)
    }
    this.bytes = bytes
    this.end = bytes.length
    this.what = what
  }

  fail(sentence: string): never {
    throw new DecodeError(`${this.what} ${sentence}`)
  }

  truncated(needed: number, field: string, pos: number): never {
    this.fail(`truncated: expected ${needed} bytes of ${field} at offset ${pos}, ${this.end - pos} left.`)
  }

  version(): void {
    if (this.end === 0) this.truncated(1, 'format version', 0)
    const version = this.bytes[this.pos++]!
    if (version !== CODEC_VERSION) {
      this.fail(
        `has unknown format version ${version} (this node reads version ${CODEC_VERSION}); the sender or the stored data may come from an incompatible docklet version.`,
      )
    }
  }

  byte(field: string): number {
    const pos = this.pos
    if (pos >= this.end) this.truncated(1, field, pos)
    this.pos = pos + 1
    return this.bytes[pos]!
  }

  /** A byte that must be at most max (entry types, ops, transitions). */
  smallEnum(field: string, max: number, min = 0): number {
    const pos = this.pos
    const value = this.byte(field)
    if (value < min || value > max) this.fail(`has unknown ${field} ${value} at offset ${pos}.`)
    return value
  }

  uint(field: string): number {
    const pos = this.pos
    if (pos < this.end) {
      const first = this.bytes[pos]!
      if (first < 0x80) {
        this.pos = pos + 1
        return first
      }
    }
    return this.uintSlow(field)
  }

  uintSlow(field: string): number {
    const bytes = this.bytes
    const start = this.pos
    let pos = start
    let value = 0
    let scale = 1
    for (let i = 0; ; i++) {
      if (i === VARINT_BYTES_MAX) {
        this.fail(`has a varint for ${field} at offset ${start} longer than ${VARINT_BYTES_MAX} bytes.`)
      }
      if (pos >= this.end) {
        if (i === 0) this.fail(`truncated: expected a varint for ${field} at offset ${start}, 0 bytes left.`)
        this.fail(`truncated: the varint for ${field} at offset ${start} is cut off after ${i} bytes.`)
      }
      const byte = bytes[pos++]!
      value += (byte & 0x7f) * scale
      if (byte < 0x80) {
        // A zero final byte adds nothing: one value, one encoding.
        if (byte === 0 && i > 0) this.fail(`has a non-minimal varint for ${field} at offset ${start}.`)
        break
      }
      scale *= 0x80
    }
    if (value > Number.MAX_SAFE_INTEGER) {
      this.fail(`has ${field} at offset ${start} above the largest safe integer 2^53-1.`)
    }
    this.pos = pos
    return value
  }

  /** A count of elements of at least elementBytesMin bytes each, checked before anything is allocated. */
  count(field: string, elementBytesMin: number): number {
    const pos = this.pos
    const count = this.uint(field)
    const left = this.end - this.pos
    if (count > left / elementBytesMin) {
      this.fail(
        `claims ${count} ${field} at offset ${pos}, but the ${left} bytes left can hold at most ${Math.floor(left / elementBytesMin)}.`,
      )
    }
    return count
  }

  bytesField(field: string): Uint8Array {
    const length = this.uint(field)
    const pos = this.pos
    if (length > this.end - pos) this.truncated(length, field, pos)
    this.pos = pos + length
    return length === 0 ? EMPTY : this.bytes.subarray(pos, pos + length)
  }

  id(field: string): NodeId {
    const length = this.uint(field)
    const pos = this.pos
    if (length > this.end - pos) this.truncated(length, field, pos)
    this.pos = pos + length
    if (length === 0) return ''
    try {
      return utf8Decoder.decode(this.bytes.subarray(pos, pos + length))
    } catch {
      return this.fail(`has a ${field} at offset ${pos} that is not valid UTF-8.`)
    }
  }

  idList(field: string): NodeId[] {
    const count = this.count(field, ID_BYTES_MIN)
    // push() keeps the array packed; count is already bounded by the bytes left.
    const ids: NodeId[] = []
    for (let i = 0; i < count; i++) ids.push(this.id(field))
    return ids
  }

  confState(): ConfState {
    const pos = this.pos
    const autoLeave = this.byte('autoLeave')
    if (autoLeave > 1) this.fail(`has autoLeave byte ${autoLeave} at offset ${pos}; expected 0 or 1.`)
    return {
      voters: this.idList('voters'),
      votersOutgoing: this.idList('votersOutgoing'),
      learners: this.idList('learners'),
      learnersNext: this.idList('learnersNext'),
      autoLeave: autoLeave === 1,
    }
  }

  meta(): SnapshotMeta {
    const index = this.uint('snapshot index')
    const term = this.uint('snapshot term')
    return { index, term, confState: this.confState() }
  }

  entry(): Entry {
    const term = this.uint('entry term')
    const index = this.uint('entry index')
    const type = this.smallEnum('entry type', ENTRY_TYPE_MAX) as EntryType
    return { term, index, type, data: this.bytesField('entry data') }
  }

  done(): void {
    if (this.pos !== this.end)
      this.fail(`has ${this.end - this.pos} trailing bytes after offset ${this.pos}.`)
  }
}

export interface DecodeLimits {
  /** Largest frame accepted; checked before any parsing. */
  bytesMax: number
}

/**
 * Decodes one Raft message. Throws DecodeError on anything malformed. The
 * Uint8Array fields of the result are subarrays of `bytes` (zero copy).
 */
export function decodeMessage(bytes: Uint8Array, limits: DecodeLimits): Message {
  if (bytes.length > limits.bytesMax) {
    throw new DecodeError(
      `Raft message of ${bytes.length} bytes exceeds the limit of ${limits.bytesMax} bytes; the sender may use a larger messageBytesMax.`,
    )
  }
  const reader = new Reader(bytes, 'Raft message')
  reader.version()
  const type = reader.smallEnum('message type', MESSAGE_TYPE_MAX, 1) as MessageType
  const flagsPos = reader.pos
  const flags = reader.byte('flags')
  if ((flags & ~FLAGS_KNOWN) !== 0) {
    reader.fail(`has unknown flag bits 0x${(flags & ~FLAGS_KNOWN).toString(16)} at offset ${flagsPos}.`)
  }
  const from = reader.id('from')
  const to = reader.id('to')
  const term = reader.uint('term')
  const logTerm = reader.uint('logTerm')
  const index = reader.uint('index')
  const commit = reader.uint('commit')
  const rejectHint = reader.uint('rejectHint')
  let entries: Entry[] = []
  if ((flags & FLAG_ENTRIES) !== 0) {
    const count = reader.count('entries', ENTRY_BYTES_MIN)
    if (count === 0) reader.fail(`has its entries flag set but holds no entries.`)
    entries = []
    for (let i = 0; i < count; i++) entries.push(reader.entry())
  }
  let context = EMPTY
  if ((flags & FLAG_CONTEXT) !== 0) {
    context = reader.bytesField('context')
    if (context.length === 0) reader.fail(`has its context flag set but an empty context.`)
  }
  let snapshot: SnapshotChunk | null = null
  if ((flags & FLAG_SNAPSHOT) !== 0) {
    const meta = reader.meta()
    const totalBytes = reader.uint('snapshot totalBytes')
    const offset = reader.uint('snapshot offset')
    snapshot = { meta, totalBytes, offset, data: reader.bytesField('snapshot data') }
  }
  reader.done()
  return {
    type,
    from,
    to,
    term,
    logTerm,
    index,
    entries,
    commit,
    reject: (flags & FLAG_REJECT) !== 0,
    rejectHint,
    context,
    snapshot,
  }
}

/** Decodes one stored entry; its data is a subarray of `bytes`. */
export function decodeEntry(bytes: Uint8Array): Entry {
  const reader = new Reader(bytes, 'Log entry')
  reader.version()
  const entry = reader.entry()
  reader.done()
  return entry
}

export function decodeHardState(bytes: Uint8Array): HardState {
  const reader = new Reader(bytes, 'Hard state')
  reader.version()
  const term = reader.uint('term')
  const vote = reader.id('vote')
  const commit = reader.uint('commit')
  reader.done()
  return { term, vote, commit }
}

export function decodeConfState(bytes: Uint8Array): ConfState {
  const reader = new Reader(bytes, 'Conf state')
  reader.version()
  const confState = reader.confState()
  reader.done()
  return confState
}

export function decodeSnapshotMeta(bytes: Uint8Array): SnapshotMeta {
  const reader = new Reader(bytes, 'Snapshot meta')
  reader.version()
  const meta = reader.meta()
  reader.done()
  return meta
}

/** Decodes a conf change (the data of a ConfChange entry); its context is a subarray of `bytes`. */
export function decodeConfChange(bytes: Uint8Array): ConfChange {
  const reader = new Reader(bytes, 'Conf change')
  reader.version()
  const transition = reader.smallEnum(
    'conf change transition',
    CONF_CHANGE_TRANSITION_MAX,
  ) as ConfChangeTransition
  const count = reader.count('conf change items', CONF_CHANGE_ITEM_BYTES_MIN)
  const changes: ConfChangeItem[] = []
  for (let i = 0; i < count; i++) {
    const op = reader.smallEnum('conf change op', CONF_CHANGE_OP_MAX) as ConfChangeOp
    changes.push({ op, node: reader.id('conf change node') })
  }
  const context = reader.bytesField('conf change context')
  reader.done()
  return { transition, changes, context }
}
