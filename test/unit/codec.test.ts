// Checks the binary codec of Raft messages and stored records
// (consensus/codec.ts): every message type, entry type, conf change op and
// transition round-trips with fields full and empty; a seeded random
// round trip covers odd ids and numbers up to 2^53-1; each kind of malformed
// input (bad version, type, flags, enum, varint, UTF-8, counts, truncation,
// trailing bytes, size limit) fails with a DecodeError that says what is
// wrong; random truncations and byte flips of valid messages fail only with
// DecodeError, and whatever still decodes re-encodes to the same bytes.
// Malformed frames are built by hand from small helpers below.

import { describe, expect, it } from 'vitest'
import {
  CODEC_VERSION,
  decodeConfChange,
  decodeConfState,
  decodeEntry,
  decodeHardState,
  decodeMessage,
  decodeSnapshotMeta,
  ENTRY_OVERHEAD_BYTES,
  encodeConfChange,
  encodeConfState,
  encodeEntry,
  encodeHardState,
  encodeMessage,
  encodeSnapshotMeta,
  entryBytes,
} from '../../consensus/codec.ts'
import { AssertionFailedError, DecodeError } from '../../consensus/errors.ts'
import {
  type ConfChange,
  ConfChangeOp,
  ConfChangeTransition,
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type SnapshotChunk,
} from '../../consensus/types.ts'

const limits = { bytesMax: 1024 * 1024 }
const empty = new Uint8Array(0)

// --- builders --------------------------------------------------------------

function bytesOf(...values: number[]): Uint8Array {
  return Uint8Array.from(values)
}

/** Unsigned LEB128 via BigInt, independent of the codec's number arithmetic. */
function varint(value: number | bigint): number[] {
  let rest = BigInt(value)
  const out: number[] = []
  while (rest >= 0x80n) {
    out.push(Number(rest & 0x7fn) | 0x80)
    rest >>= 7n
  }
  out.push(Number(rest))
  return out
}

function id(text: string): number[] {
  const utf8 = new TextEncoder().encode(text)
  return [...varint(utf8.length), ...utf8]
}

function confState(overrides: Partial<ConfState> = {}): ConfState {
  return { voters: [], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false, ...overrides }
}

function emptyMessage(type: MessageType): Message {
  return {
    type,
    from: '',
    to: '',
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    context: empty,
    snapshot: null,
  }
}

function fullChunk(): SnapshotChunk {
  return {
    meta: {
      index: 9_000_000_000,
      term: 77,
      confState: confState({
        voters: ['a', 'b', 'c'],
        votersOutgoing: ['a', 'b', 'd'],
        learners: ['e'],
        learnersNext: ['d'],
        autoLeave: true,
      }),
    },
    totalBytes: 1_000_000,
    offset: 262_144,
    data: Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 255),
  }
}

function fullMessage(type: MessageType): Message {
  return {
    type,
    from: '12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh',
    to: 'nœud-2 🚀',
    term: 12_345,
    logTerm: 12_344,
    index: Number.MAX_SAFE_INTEGER - 10,
    entries: [
      { term: 12_344, index: 1, type: EntryType.Normal, data: empty },
      { term: 12_345, index: 2, type: EntryType.Normal, data: bytesOf(1, 2, 3) },
      {
        term: 12_345,
        index: 3,
        type: EntryType.ConfChange,
        data: encodeConfChange({
          transition: ConfChangeTransition.Auto,
          changes: [{ op: ConfChangeOp.AddVoter, node: 'd' }],
          context: bytesOf(9),
        }),
      },
    ],
    commit: 2 ** 40,
    reject: true,
    rejectHint: 128,
    context: bytesOf(0xde, 0xad, 0xbe, 0xef),
    snapshot: fullChunk(),
  }
}

function expectDecodeError(decode: () => unknown, pattern: RegExp): void {
  let caught: unknown
  try {
    decode()
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(DecodeError)
  expect((caught as DecodeError).code).toBe('ERR_DECODE')
  expect((caught as DecodeError).message).toMatch(pattern)
}

/** mulberry32: a tiny seeded PRNG, so a failure replays from its seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomGenerators(random: () => number) {
  const int = (max: number) => Math.floor(random() * max)
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!
  // Magnitudes spread over every varint length, with the edges included.
  const uint = () =>
    pick([
      () => 0,
      () => int(128),
      () => int(2 ** 14),
      () => int(2 ** 28),
      () => int(2 ** 35),
      () => Math.floor(random() * 2 ** 53),
      () => Number.MAX_SAFE_INTEGER - int(3),
      () => 2 ** (7 * (1 + int(7))) - int(2),
    ])()
  const nodeId = () =>
    pick([
      () => '',
      () => `n${int(10)}`,
      () => '12D3KooW' + 'x'.repeat(44),
      () => 'é'.repeat(int(5)),
      () => '\uFEFFbom',
      () => '中文🚀' + int(100),
      () => 'y'.repeat(130),
    ])()
  const data = () => {
    const length = pick([0, 1, int(20), int(300)])
    return Uint8Array.from({ length }, () => int(256))
  }
  const ids = () => Array.from({ length: int(4) }, nodeId)
  const entry = (): Entry => ({
    term: uint(),
    index: uint(),
    type: pick([EntryType.Normal, EntryType.ConfChange]),
    data: data(),
  })
  const message = (): Message => ({
    type: (1 + int(13)) as MessageType,
    from: nodeId(),
    to: nodeId(),
    term: uint(),
    logTerm: uint(),
    index: uint(),
    entries: random() < 0.5 ? [] : Array.from({ length: 1 + int(6) }, entry),
    commit: uint(),
    reject: random() < 0.5,
    rejectHint: uint(),
    context: random() < 0.5 ? empty : data(),
    snapshot:
      random() < 0.7
        ? null
        : {
            meta: {
              index: uint(),
              term: uint(),
              confState: {
                voters: ids(),
                votersOutgoing: ids(),
                learners: ids(),
                learnersNext: ids(),
                autoLeave: random() < 0.5,
              },
            },
            totalBytes: uint(),
            offset: uint(),
            data: data(),
          },
  })
  return { int, message }
}

/** Decode must either succeed and re-encode to the same bytes, or throw DecodeError. */
function decodeOrDecodeError(bytes: Uint8Array): 'decoded' | 'rejected' {
  let decoded: Message
  try {
    decoded = decodeMessage(bytes, limits)
  } catch (error) {
    if (!(error instanceof DecodeError)) throw error
    return 'rejected'
  }
  // The format has one encoding per value, so anything accepted is canonical.
  expect(encodeMessage(decoded)).toEqual(bytes)
  return 'decoded'
}

// --- round trips -----------------------------------------------------------

const messageTypes = Object.entries(MessageType)

describe('message round trip', () => {
  it.each(messageTypes)('%s with every field populated decodes to the same message', (_name, type) => {
    const message = fullMessage(type)
    expect(decodeMessage(encodeMessage(message), limits)).toEqual(message)
  })

  it.each(messageTypes)(
    '%s with empty ids, zero numbers and no optional parts decodes to the same message',
    (_name, type) => {
      const message = emptyMessage(type)
      const encoded = encodeMessage(message)
      expect(encoded.length).toBe(3 + 2 + 5)
      expect(decodeMessage(encoded, limits)).toEqual(message)
    },
  )

  it('keeps each optional part independent of the others', () => {
    const full = fullMessage(MessageType.Append)
    for (let mask = 0; mask < 8; mask++) {
      const message: Message = {
        ...full,
        entries: mask & 1 ? full.entries : [],
        context: mask & 2 ? full.context : empty,
        snapshot: mask & 4 ? full.snapshot : null,
      }
      expect(decodeMessage(encodeMessage(message), limits)).toEqual(message)
    }
  })

  it('charges one flags byte, not a byte per part, for empty optional parts', () => {
    const bare = encodeMessage(emptyMessage(MessageType.Append)).length
    const withEntry = encodeMessage({
      ...emptyMessage(MessageType.Append),
      entries: [{ term: 0, index: 0, type: EntryType.Normal, data: empty }],
    }).length
    // One count byte plus the four bytes of an empty entry.
    expect(withEntry - bare).toBe(5)
  })

  it('encodes a heartbeat between short ids in under 40 bytes', () => {
    const heartbeat: Message = {
      ...emptyMessage(MessageType.Heartbeat),
      from: 'n1',
      to: 'n2',
      term: 5,
      commit: 100_000,
    }
    const encoded = encodeMessage(heartbeat)
    expect(encoded.length).toBeLessThan(40)
    expect(encoded.length).toBe(3 + 3 + 3 + 1 + 1 + 1 + 3 + 1)
    expect(encoded[0]).toBe(CODEC_VERSION)
    expect(decodeMessage(encoded, limits)).toEqual(heartbeat)
  })

  it('returns entry data, context and snapshot data as views of the input without copying', () => {
    const encoded = encodeMessage(fullMessage(MessageType.Append))
    const decoded = decodeMessage(encoded, limits)
    expect(decoded.entries[1]!.data.buffer).toBe(encoded.buffer)
    expect(decoded.context.buffer).toBe(encoded.buffer)
    expect(decoded.snapshot!.data.buffer).toBe(encoded.buffer)
  })

  it('round-trips 2000 seeded random messages', () => {
    const seed = 20_240_601
    const { message } = randomGenerators(prng(seed))
    for (let i = 0; i < 2000; i++) {
      const original = message()
      const encoded = encodeMessage(original)
      const decoded = decodeMessage(encoded, limits)
      if (JSON.stringify(decoded, replacer) !== JSON.stringify(original, replacer)) {
        expect.fail(`seed ${seed}, message ${i}: ${JSON.stringify(original, replacer)} decoded differently`)
      }
      expect(encodeMessage(decoded)).toEqual(encoded)
    }
  })

  it('round-trips every varint length up to 2^53-1', () => {
    for (let bits = 0; bits <= 53; bits++) {
      for (const value of [2 ** bits - 1, Math.min(2 ** bits, Number.MAX_SAFE_INTEGER)]) {
        const hardState = { term: value, vote: 'v', commit: value }
        const encoded = encodeHardState(hardState)
        const varintLength = varint(value).length
        expect(encoded.length).toBe(1 + 2 * varintLength + 2)
        expect(encoded.subarray(1, 1 + varintLength)).toEqual(Uint8Array.from(varint(value)))
        expect(decodeHardState(encoded)).toEqual(hardState)
      }
    }
  })
})

function replacer(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? Array.from(value) : value
}

describe('record round trip', () => {
  it.each(Object.entries(EntryType))('a %s entry decodes to the same entry', (_name, type) => {
    for (const data of [empty, bytesOf(1), Uint8Array.from({ length: 1000 }, (_, i) => i & 255)]) {
      const entry: Entry = { term: 3, index: 2 ** 33, type, data }
      expect(decodeEntry(encodeEntry(entry))).toEqual(entry)
    }
  })

  it.each(
    Object.entries(ConfChangeOp).flatMap(([opName, op]) =>
      Object.entries(ConfChangeTransition).map(
        ([transitionName, transition]) => [opName, transitionName, op, transition] as const,
      ),
    ),
  )(
    'a %s conf change with transition %s decodes to the same conf change',
    (_op, _transition, op, transition) => {
      const confChange: ConfChange = {
        transition,
        changes: [
          { op, node: '12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh' },
          { op, node: 'ünïcode' },
        ],
        context: bytesOf(10, 20, 30),
      }
      expect(decodeConfChange(encodeConfChange(confChange))).toEqual(confChange)
    },
  )

  it('an empty conf change (leave joint) decodes to an empty conf change', () => {
    const confChange: ConfChange = { transition: ConfChangeTransition.Auto, changes: [], context: empty }
    const encoded = encodeConfChange(confChange)
    expect(encoded.length).toBe(4)
    expect(decodeConfChange(encoded)).toEqual(confChange)
  })

  it('a hard state decodes to the same hard state, with and without a vote', () => {
    for (const hardState of [
      { term: 0, vote: '', commit: 0 },
      { term: 2 ** 45, vote: '12D3KooWAbCdEf', commit: 123_456_789 },
    ]) {
      expect(decodeHardState(encodeHardState(hardState))).toEqual(hardState)
    }
  })

  it('a conf state and a snapshot meta decode to the same values', () => {
    const chunk = fullChunk()
    expect(decodeConfState(encodeConfState(chunk.meta.confState))).toEqual(chunk.meta.confState)
    expect(decodeConfState(encodeConfState(confState()))).toEqual(confState())
    expect(decodeSnapshotMeta(encodeSnapshotMeta(chunk.meta))).toEqual(chunk.meta)
  })

  it('a snapshot chunk travels whole inside a Snapshot message', () => {
    const message: Message = {
      ...emptyMessage(MessageType.Snapshot),
      from: 'a',
      to: 'b',
      term: 4,
      snapshot: fullChunk(),
    }
    expect(decodeMessage(encodeMessage(message), limits).snapshot).toEqual(fullChunk())
  })
})

describe('entryBytes', () => {
  it('is the data length plus a small constant', () => {
    const entry: Entry = { term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array(100) }
    expect(entryBytes(entry)).toBe(100 + ENTRY_OVERHEAD_BYTES)
    expect(ENTRY_OVERHEAD_BYTES).toBeLessThanOrEqual(16)
  })

  it('is never below the encoded size for terms below 2^21, indexes below 2^35 and data below 2 MiB', () => {
    const entries: Entry[] = [
      { term: 0, index: 0, type: EntryType.Normal, data: empty },
      {
        term: 2 ** 21 - 1,
        index: 2 ** 35 - 1,
        type: EntryType.ConfChange,
        data: new Uint8Array(2 ** 21 - 1),
      },
    ]
    for (const entry of entries) {
      // encodeEntry adds the version byte, which an entry inside a message does not carry.
      expect(entryBytes(entry)).toBeGreaterThanOrEqual(encodeEntry(entry).length - 1)
    }
    expect(entryBytes(entries[1]!)).toBe(encodeEntry(entries[1]!).length - 1)
  })
})

describe('encoding invalid values', () => {
  it.each([
    ['a negative term', { term: -1 }],
    ['a fractional index', { index: 1.5 }],
    ['a commit above 2^53-1', { commit: 2 ** 53 }],
    ['a NaN logTerm', { logTerm: Number.NaN }],
    ['an unknown message type', { type: 14 as MessageType }],
    ['an id with a lone surrogate', { from: 'a\uD800b' }],
    ['an entry of unknown type', { entries: [{ term: 1, index: 1, type: 7 as EntryType, data: empty }] }],
  ])('refuses %s with an assertion error instead of writing bad bytes', (_name, patch) => {
    const message = { ...emptyMessage(MessageType.Append), ...patch } as Message
    expect(() => encodeMessage(message)).toThrow(AssertionFailedError)
  })

  it('refuses a conf change with an unknown op or transition', () => {
    const node = 'n1'
    expect(() =>
      encodeConfChange({ transition: 3 as ConfChangeTransition, changes: [], context: empty }),
    ).toThrow(AssertionFailedError)
    expect(() =>
      encodeConfChange({ transition: 0, changes: [{ op: 3 as ConfChangeOp, node }], context: empty }),
    ).toThrow(AssertionFailedError)
  })
})

// --- malformed input ---------------------------------------------------------

/** version, type, flags, from 'a', to 'b', five zero numbers. */
function header(type: number, flags: number): number[] {
  return [CODEC_VERSION, type, flags, ...id('a'), ...id('b'), 0, 0, 0, 0, 0]
}

const FLAG_ENTRIES = 2
const FLAG_CONTEXT = 4
const FLAG_SNAPSHOT = 8

describe('decoding malformed input', () => {
  it('accepts the hand-built header the malformed cases start from', () => {
    expect(decodeMessage(Uint8Array.from(header(MessageType.Heartbeat, 0)), limits)).toEqual({
      ...emptyMessage(MessageType.Heartbeat),
      from: 'a',
      to: 'b',
    })
  })

  it('rejects an empty frame', () => {
    expectDecodeError(
      () => decodeMessage(empty, limits),
      /^Raft message truncated: expected 1 bytes of format version at offset 0, 0 left\.$/,
    )
  })

  it('rejects an unknown format version', () => {
    for (const version of [0, 2, 255]) {
      const frame = Uint8Array.from(header(MessageType.Heartbeat, 0))
      frame[0] = version
      expectDecodeError(() => decodeMessage(frame, limits), new RegExp(`unknown format version ${version}`))
    }
    expectDecodeError(() => decodeHardState(bytesOf(9, 0, 0, 0)), /^Hard state has unknown format version 9/)
  })

  it('rejects an unknown message type', () => {
    for (const type of [0, 14, 200]) {
      expectDecodeError(
        () => decodeMessage(Uint8Array.from(header(type, 0)), limits),
        new RegExp(`unknown message type ${type} at offset 1\\.`),
      )
    }
  })

  it('rejects unknown flag bits', () => {
    expectDecodeError(
      () => decodeMessage(Uint8Array.from(header(1, 0x10)), limits),
      /unknown flag bits 0x10 at offset 2/,
    )
  })

  it('rejects an unknown entry type', () => {
    const frame = [...header(MessageType.Append, FLAG_ENTRIES), 1, 1, 1, 2, 0]
    expectDecodeError(
      () => decodeMessage(Uint8Array.from(frame), limits),
      /unknown entry type 2 at offset 15\./,
    )
    expectDecodeError(
      () => decodeEntry(bytesOf(CODEC_VERSION, 1, 1, 9, 0)),
      /^Log entry has unknown entry type 9/,
    )
  })

  it('rejects an unknown conf change op or transition', () => {
    expectDecodeError(
      () => decodeConfChange(Uint8Array.from([CODEC_VERSION, 0, 1, 3, ...id('n'), 0])),
      /^Conf change has unknown conf change op 3 at offset 3\./,
    )
    expectDecodeError(
      () => decodeConfChange(bytesOf(CODEC_VERSION, 3, 0, 0)),
      /^Conf change has unknown conf change transition 3 at offset 1\./,
    )
  })

  it('rejects an autoLeave byte other than 0 or 1', () => {
    expectDecodeError(
      () => decodeConfState(bytesOf(CODEC_VERSION, 2, 0, 0, 0, 0)),
      /autoLeave byte 2 at offset 1/,
    )
  })

  it('says how many bytes of entry data were expected and how many are left', () => {
    const frame = [
      ...header(MessageType.Append, FLAG_ENTRIES),
      1,
      1,
      1,
      0,
      ...varint(120),
      ...new Array(12).fill(7),
    ]
    expectDecodeError(
      () => decodeMessage(Uint8Array.from(frame), limits),
      /^Raft message truncated: expected 120 bytes of entry data at offset 17, 12 left\.$/,
    )
  })

  it('rejects every truncation of a full message', () => {
    const encoded = encodeMessage(fullMessage(MessageType.Append))
    for (let length = 0; length < encoded.length; length++) {
      expect(() => decodeMessage(encoded.subarray(0, length), limits)).toThrow(DecodeError)
    }
  })

  it('rejects a varint cut off in the middle', () => {
    const frame = [CODEC_VERSION, 0x80, 0x80]
    expectDecodeError(
      () => decodeHardState(Uint8Array.from(frame)),
      /^Hard state truncated: the varint for term at offset 1 is cut off after 2 bytes\.$/,
    )
  })

  it('rejects a varint longer than 8 bytes', () => {
    const frame = [CODEC_VERSION, ...new Array(8).fill(0xff), 0x01, 0, 0]
    expectDecodeError(
      () => decodeHardState(Uint8Array.from(frame)),
      /varint for term at offset 1 longer than 8 bytes/,
    )
  })

  it('rejects a value above 2^53-1 and accepts 2^53-1 itself', () => {
    const above = [CODEC_VERSION, ...varint(2n ** 53n), 0, 0]
    expectDecodeError(
      () => decodeHardState(Uint8Array.from(above)),
      /term at offset 1 above the largest safe integer/,
    )
    const largest = [CODEC_VERSION, ...varint(2n ** 56n - 1n), 0, 0]
    expectDecodeError(() => decodeHardState(Uint8Array.from(largest)), /above the largest safe integer/)
    const safe = [CODEC_VERSION, ...varint(Number.MAX_SAFE_INTEGER), 0, 0]
    expect(decodeHardState(Uint8Array.from(safe)).term).toBe(Number.MAX_SAFE_INTEGER)
  })

  it('rejects a varint with a redundant zero byte, so every value has one encoding', () => {
    expectDecodeError(
      () => decodeHardState(bytesOf(CODEC_VERSION, 0x85, 0x00, 0, 0)),
      /non-minimal varint for term at offset 1/,
    )
  })

  it('rejects trailing bytes', () => {
    const frame = [...header(MessageType.Heartbeat, 0), 0xaa, 0xbb]
    expectDecodeError(
      () => decodeMessage(Uint8Array.from(frame), limits),
      /has 2 trailing bytes after offset 12\./,
    )
    expectDecodeError(
      () => decodeEntry(bytesOf(CODEC_VERSION, 1, 1, 0, 0, 0)),
      /^Log entry has 1 trailing bytes/,
    )
  })

  it('rejects a frame over bytesMax before looking inside it', () => {
    // Garbage that would otherwise fail on its version byte.
    const frame = new Uint8Array(101).fill(0xff)
    expectDecodeError(
      () => decodeMessage(frame, { bytesMax: 100 }),
      /^Raft message of 101 bytes exceeds the limit of 100 bytes/,
    )
    const valid = Uint8Array.from(header(MessageType.Heartbeat, 0))
    expect(() => decodeMessage(valid, { bytesMax: valid.length })).not.toThrow()
    expect(() => decodeMessage(valid, { bytesMax: valid.length - 1 })).toThrow(DecodeError)
  })

  it('rejects an id that is not valid UTF-8', () => {
    const badIds = [
      [0xff],
      [0xc0, 0x80], // overlong NUL
      [0xed, 0xa0, 0x80], // an encoded surrogate
      [0xe2, 0x82], // cut inside a character
    ]
    for (const bad of badIds) {
      const frame = [CODEC_VERSION, MessageType.Heartbeat, 0, bad.length, ...bad, ...id('b'), 0, 0, 0, 0, 0]
      expectDecodeError(
        () => decodeMessage(Uint8Array.from(frame), limits),
        /has a from at offset 4 that is not valid UTF-8\./,
      )
    }
  })

  it('rejects counts that claim more elements than the bytes left could hold', () => {
    const hugeEntries = [...header(MessageType.Append, FLAG_ENTRIES), ...varint(2 ** 40), 1, 1, 0, 0]
    expectDecodeError(
      () => decodeMessage(Uint8Array.from(hugeEntries), limits),
      /claims 1099511627776 entries at offset 12, but the 4 bytes left can hold at most 1\./,
    )
    const hugeVoters = [CODEC_VERSION, 0, ...varint(2 ** 30), 0, 0, 0]
    expectDecodeError(() => decodeConfState(Uint8Array.from(hugeVoters)), /claims 1073741824 voters/)
    const hugeChanges = [CODEC_VERSION, 0, ...varint(1000), 0, 0]
    expectDecodeError(() => decodeConfChange(Uint8Array.from(hugeChanges)), /claims 1000 conf change items/)
  })

  it('rejects a flag that announces an empty part, which the encoder never writes', () => {
    expectDecodeError(
      () => decodeMessage(Uint8Array.from([...header(MessageType.Append, FLAG_ENTRIES), 0]), limits),
      /entries flag set but holds no entries/,
    )
    expectDecodeError(
      () => decodeMessage(Uint8Array.from([...header(MessageType.ReadIndex, FLAG_CONTEXT), 0]), limits),
      /context flag set but an empty context/,
    )
  })

  it('rejects a snapshot flag without a snapshot', () => {
    expectDecodeError(
      () => decodeMessage(Uint8Array.from(header(MessageType.Snapshot, FLAG_SNAPSHOT)), limits),
      /^Raft message truncated: expected a varint for snapshot index at offset 12, 0 bytes left\.$/,
    )
  })

  it('throws only DecodeError for random truncations and byte flips of valid messages', () => {
    const seed = 7_777
    const random = prng(seed)
    const { int, message } = randomGenerators(random)
    let decodedAfterDamage = 0
    let rejected = 0
    for (let i = 0; i < 2000; i++) {
      const encoded = encodeMessage(message())
      const damaged = encoded.slice(0, random() < 0.3 ? int(encoded.length) : encoded.length)
      const flips = damaged.length === 0 ? 0 : 1 + int(3)
      for (let f = 0; f < flips; f++) damaged[int(damaged.length)]! ^= 1 << int(8)
      try {
        if (decodeOrDecodeError(damaged) === 'decoded') decodedAfterDamage++
        else rejected++
      } catch (error) {
        throw new Error(`seed ${seed}, case ${i}: ${String(error)}`, { cause: error })
      }
    }
    // Both outcomes must occur, or the damage is not exercising the decoder.
    expect(rejected).toBeGreaterThan(100)
    expect(decodedAfterDamage).toBeGreaterThan(10)
  })

  it('throws only DecodeError for random bytes fed to every decoder', () => {
    const random = prng(42)
    const decoders = [
      (b: Uint8Array) => decodeMessage(b, limits),
      decodeEntry,
      decodeHardState,
      decodeConfState,
      decodeSnapshotMeta,
      decodeConfChange,
    ]
    for (let i = 0; i < 3000; i++) {
      const bytes = Uint8Array.from({ length: Math.floor(random() * 40) }, () => Math.floor(random() * 256))
      // Start with the right version byte often enough to reach deeper fields.
      if (bytes.length > 0 && random() < 0.8) bytes[0] = CODEC_VERSION
      for (const decode of decoders) {
        try {
          decode(bytes)
        } catch (error) {
          if (!(error instanceof DecodeError))
            throw new Error(`case ${i}: ${String(error)}`, { cause: error })
        }
      }
    }
  })
})
