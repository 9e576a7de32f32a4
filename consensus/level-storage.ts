// The durable Raft log on classic-level (LevelDB).
//
// Layout: one key per record, prefixed by one byte so a kind never mixes with
// another, and entry keys carry their index big-endian so LevelDB's byte order
// is index order:
//   'h'                 hard state       (codec encodeHardState)
//   's'                 snapshot meta    (codec encodeSnapshotMeta)
//   'd'                 snapshot data    (the name of its file in <path>/snapshots)
//   'e' + uint64 BE     entry at index   (codec encodeEntry)
//
// Every write Raft depends on is one LevelDB batch with sync: true (fsync),
// because a vote or an acknowledged entry that a power cut can take back breaks
// Raft's safety; classic-level does not sync by default. Writes run one at a
// time from a bounded queue, and the storage keeps the log's bounds in memory
// (log-bounds.ts) so a truncation or compaction deletes known keys in the same
// batch instead of scanning. load() reads the log back and checks it is whole.
//
// Snapshot data lives in its own file (written, fsynced and renamed before
// the batch that points to it): as a LevelDB value a snapshot of tens of MB
// was copied into the batch, the write-ahead log and the memtable at once,
// which more than doubled a node's peak memory. LevelDB ignores the
// subdirectory, and it moves with the store (admin recover renames it).
//
// A compaction writes and fsyncs its snapshot file before it joins the write
// queue, so the saves Raft issues meanwhile are not held up behind tens of MB
// of disk writes; its small batch then runs in turn. It may therefore land
// after saves issued later, which is safe because a node compacts only
// committed entries (never truncated), and a compaction that a newer snapshot
// overtook meanwhile does nothing. Snapshot data is written from the
// caller's buffer, not a copy: it must not change once handed over.
//
// The entries a snapshot covers are not deleted in its batch (ten thousand
// deletes took some 30 ms of the event loop to hand to LevelDB) but by a
// range clear that LevelDB runs on its own thread after the batch. Entries
// at or below the snapshot's index are never read again, and open() drops
// any that a crash left behind.

import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import {
  decodeEntry,
  decodeHardState,
  decodeSnapshotMeta,
  encodeEntry,
  encodeHardState,
  encodeSnapshotMeta,
} from './codec.ts'
import { assert, RaftError } from './errors.ts'
import { emptyHardState, type LogBounds, planCompact, planWrite, type WritePlan } from './log-bounds.ts'
import type {
  Entry,
  HardState,
  LogStorage,
  PersistedState,
  Snapshot,
  SnapshotMeta,
  StorageUpdate,
} from './types.ts'

const DISK_HINT =
  'Check that the disk is healthy and has space and that no other process uses this directory.'
const DAMAGE_HINT =
  'The log on disk is damaged: remove this node and let it rejoin to copy the log from its peers.'

/** A LevelDB operation failed, or the log read back from disk is not whole. */
export class StorageError extends RaftError {
  readonly path: string
  readonly operation: string
  constructor(path: string, operation: string, options: { cause?: unknown; reason?: string; hint?: string }) {
    const reason =
      options.reason ?? (options.cause instanceof Error ? options.cause.message : String(options.cause))
    super(
      'ERR_RAFT_STORAGE',
      `Raft storage at ${path} could not ${operation}: ${reason} ${options.hint ?? DISK_HINT}`,
      {
        cause: options.cause,
      },
    )
    this.name = 'StorageError'
    this.path = path
    this.operation = operation
  }
}

export interface LevelLogStorageOptions {
  /** Saves and compactions waiting behind the one in flight; beyond this they fail at once. Default 1024. */
  writesQueuedMax?: number
}

type Db = ClassicLevel<Uint8Array, Uint8Array>
type BatchOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array }

const HARD_STATE_KEY = Uint8Array.of(0x68) // 'h'
const SNAPSHOT_META_KEY = Uint8Array.of(0x73) // 's'
const SNAPSHOT_DATA_KEY = Uint8Array.of(0x64) // 'd'
const ENTRY_PREFIX = 0x65 // 'e'
const ENTRY_KEY_BYTES = 9
const ENTRY_KEYS = { gte: Uint8Array.of(ENTRY_PREFIX), lt: Uint8Array.of(ENTRY_PREFIX + 1) }
const TWO_POW_32 = 2 ** 32
/**
 * Bytes of log writes LevelDB gathers in memory (its memtable) before it
 * writes them out as a table; up to two are in memory while one is written.
 * LevelDB's default, 4 MiB, named: 1 MiB was tried and cost a quarter of the
 * write throughput at 64 clients in bench:raft (a table write, and with it a
 * compaction, every second under load) for no measurable gain in peak RSS.
 */
export const LEVEL_WRITE_BUFFER_BYTES = 4 * 1024 * 1024

export function entryKey(index: number): Uint8Array {
  const key = new Uint8Array(ENTRY_KEY_BYTES)
  const view = new DataView(key.buffer)
  key[0] = ENTRY_PREFIX
  view.setUint32(1, Math.floor(index / TWO_POW_32))
  view.setUint32(5, index >>> 0)
  return key
}

function entryKeyIndex(key: Uint8Array): number | null {
  if (key.length !== ENTRY_KEY_BYTES || key[0] !== ENTRY_PREFIX) return null
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength)
  return view.getUint32(1) * TWO_POW_32 + view.getUint32(5)
}

/** An update copied and encoded when save() is called, so later changes by the caller cannot reach the disk. */
interface FrozenWrite {
  update: StorageUpdate
  puts: BatchOp[]
}

export class LevelLogStorage implements LogStorage {
  readonly path: string
  #db: Db
  #bounds: LogBounds
  #writesQueuedMax: number
  #queued = 0
  /** Resolves when the last queued operation has finished (never rejects). */
  #tail: Promise<void> = Promise.resolve()
  /** Set by a failed batch: its effect on disk is unknown, so the in-memory bounds may be wrong and nothing more runs. */
  #failure: StorageError | null = null
  #closed = false
  /** The snapshot file the stored meta points to (null without a snapshot). */
  #snapshotFile: string | null
  /** Files of compactions still being written (by name, with a count): clean-up leaves them alone. */
  readonly #filesInProgress = new Map<string, number>()
  /** Compactions writing their file before they join the queue; close() waits for them. */
  readonly #preparing = new Set<Promise<void>>()
  /** Range clears of entries that stored snapshots cover; close() waits for them. */
  readonly #clearing = new Set<Promise<void>>()

  private constructor(path: string, db: Db, head: StoredHead, writesQueuedMax: number) {
    this.path = path
    this.#db = db
    this.#bounds = head.bounds
    this.#snapshotFile = head.snapshotFile
    this.#writesQueuedMax = writesQueuedMax
  }

  /** Opens (creating if missing) the store at `path` and reads the log's bounds. */
  static async open(path: string, options: LevelLogStorageOptions = {}): Promise<LevelLogStorage> {
    const writesQueuedMax = options.writesQueuedMax ?? 1024
    assert(Number.isSafeInteger(writesQueuedMax) && writesQueuedMax >= 1, 'writesQueuedMax must be >= 1')
    const db: Db = new ClassicLevel<Uint8Array, Uint8Array>(path, {
      keyEncoding: 'view',
      valueEncoding: 'view',
      // The log is read back only at start; a block cache buys nothing
      // (LevelDB's default is 8 MiB per store).
      cacheSize: 1024 * 1024,
      writeBufferSize: LEVEL_WRITE_BUFFER_BYTES,
    })
    try {
      await db.open()
      await mkdir(join(path, SNAPSHOT_DIR), { recursive: true })
    } catch (cause) {
      throw new StorageError(path, 'open the database', { cause })
    }
    try {
      return new LevelLogStorage(path, db, await readStoredHead(db, path), writesQueuedMax)
    } catch (error) {
      await db.close().catch(() => {})
      throw error
    }
  }

  load(): Promise<PersistedState> {
    return this.#enqueue('load the log', () => this.#load())
  }

  async save(update: StorageUpdate): Promise<void> {
    const frozen = freeze(update)
    return this.#enqueue('save', () => this.#write(planWrite(this.#bounds, frozen.update), frozen, 'save'))
  }

  /**
   * Writes the snapshot's file first, outside the queue, then drops the
   * entries it covers in one synced batch queued behind the saves issued
   * meanwhile. Does nothing if a snapshot at the same or a later index was
   * stored in the meantime.
   */
  compact(snapshot: Snapshot): Promise<void> {
    const operation = 'compact the log'
    try {
      this.#admit(operation)
    } catch (error) {
      return Promise.reject(error)
    }
    const frozen = freeze({ hardState: null, entries: [], snapshot })
    const frozenSnapshot = frozen.update.snapshot!
    const file = snapshotFileName(frozenSnapshot.meta)
    // Kept out of clean-ups from now until its batch has run (or failed).
    this.#filesInProgress.set(file, (this.#filesInProgress.get(file) ?? 0) + 1)
    let released = false
    const release = () => {
      if (released) return
      released = true
      const count = this.#filesInProgress.get(file) ?? 1
      if (count <= 1) this.#filesInProgress.delete(file)
      else this.#filesInProgress.set(file, count - 1)
    }
    const written = (async () => {
      try {
        if (this.#failure !== null) throw this.#failure
        await writeSnapshotFile(this.path, frozenSnapshot)
      } catch (cause) {
        this.#queued--
        if (cause instanceof StorageError) throw cause
        // Nothing in LevelDB changed: the log is intact and the store stays usable.
        throw new StorageError(this.path, operation, { cause })
      }
    })()
    const done = written
      .then(() =>
        this.#chain(async () => {
          if (frozenSnapshot.meta.index <= this.#bounds.snapshotIndex) {
            // Overtaken by a snapshot from the leader: keep that one.
            release()
            if (file !== this.#snapshotFile) await this.#removeSnapshotFiles()
            return
          }
          await this.#write(planCompact(this.#bounds, frozenSnapshot), frozen, operation, {
            fileWritten: true,
          })
        }),
      )
      .finally(release)
    const settled = done.then(
      () => {},
      () => {},
    )
    this.#preparing.add(settled)
    void settled.then(() => this.#preparing.delete(settled))
    return done
  }

  /**
   * Reads the stored snapshot back, outside the write queue (saves are not
   * held up behind reading a large file). A compaction that lands meanwhile
   * may remove the file the meta pointed to; the read then starts over with
   * the newer meta, at most SNAPSHOT_READ_ATTEMPTS_MAX times.
   */
  async loadSnapshot(): Promise<Snapshot | null> {
    for (let attempt = 1; ; attempt++) {
      if (this.#closed) {
        throw new StorageError(this.path, 'read the snapshot', {
          reason: 'it is closed.',
          hint: 'Open it again to use it.',
        })
      }
      if (this.#failure !== null) throw this.#failure
      try {
        return (await readHead(this.#db, this.path)).snapshot
      } catch (error) {
        const missing = (error as StorageError).cause
        if (attempt >= SNAPSHOT_READ_ATTEMPTS_MAX || (missing as { code?: string })?.code !== 'ENOENT')
          throw error
      }
    }
  }

  /** Waits for queued writes, then closes the database. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await Promise.all(this.#preparing)
    await this.#tail
    await Promise.all(this.#clearing)
    try {
      await this.#db.close()
    } catch (cause) {
      throw new StorageError(this.path, 'close the database', { cause })
    }
  }

  #enqueue<T>(operation: string, run: () => Promise<T>): Promise<T> {
    try {
      this.#admit(operation)
    } catch (error) {
      return Promise.reject(error)
    }
    return this.#chain(run)
  }

  /** Counts one more operation against writesQueuedMax, or throws if it may not run. */
  #admit(operation: string): void {
    if (this.#closed) {
      throw new StorageError(this.path, operation, {
        reason: 'it is closed.',
        hint: 'Open it again to use it.',
      })
    }
    if (this.#queued >= this.#writesQueuedMax) {
      throw new StorageError(this.path, operation, {
        reason: `${this.#queued} operations are already queued (writesQueuedMax).`,
        hint: 'Wait for earlier saves to finish before issuing more.',
      })
    }
    this.#queued++
  }

  /** Runs an admitted operation after the ones before it. */
  #chain<T>(run: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(async () => {
      try {
        if (this.#failure !== null) throw this.#failure
        return await run()
      } finally {
        this.#queued--
      }
    })
    this.#tail = result.then(
      () => {},
      () => {},
    )
    return result
  }

  async #write(
    plan: WritePlan,
    frozen: FrozenWrite,
    operation: string,
    options: { fileWritten?: boolean } = {},
  ): Promise<void> {
    const ops: BatchOp[] = []
    // A conflicting suffix goes in the same batch: its stale entries must never outlive the new ones.
    const { truncated, covered } = plan
    for (let index = truncated.from; index <= truncated.to; index++) {
      ops.push({ type: 'del', key: entryKey(index) })
    }
    for (const put of frozen.puts) ops.push(put)
    const snapshot = frozen.update.snapshot
    try {
      if (snapshot !== null && options.fileWritten !== true) await writeSnapshotFile(this.path, snapshot)
      await this.#db.batch(ops, { sync: true })
    } catch (cause) {
      this.#failure = new StorageError(this.path, operation, {
        cause,
        hint: `${DISK_HINT} Whether the write reached the disk is unknown, so this storage refuses further use; restart the node to reload the log.`,
      })
      throw this.#failure
    }
    this.#bounds = plan.next
    if (covered.from <= covered.to) this.#clearCovered(covered.from, covered.to)
    if (snapshot !== null) {
      this.#snapshotFile = snapshotFileName(snapshot.meta)
      await this.#removeSnapshotFiles()
    }
  }

  /** Deletes entries from..to, which the stored snapshot covers, on LevelDB's thread. */
  #clearCovered(from: number, to: number): void {
    const clearing = this.#db.clear({ gte: entryKey(from), lte: entryKey(to) }).catch(() => {
      // Left for the next open() to drop: nothing reads entries a snapshot covers.
    })
    this.#clearing.add(clearing)
    void clearing.then(() => this.#clearing.delete(clearing))
  }

  /** Drops snapshot files the store no longer points to (best effort: leftovers are harmless). */
  async #removeSnapshotFiles(): Promise<void> {
    const dir = join(this.path, SNAPSHOT_DIR)
    try {
      for (const name of await readdir(dir)) {
        if (name === this.#snapshotFile) continue
        // A compaction still writing this file (or its temporary one) will point to it soon.
        const final = name.endsWith('.tmp') ? name.slice(0, name.lastIndexOf('.', name.length - 5)) : name
        if (this.#filesInProgress.has(final)) continue
        await rm(join(dir, name), { force: true })
      }
    } catch {
      // A failed clean-up leaves an unused file; the next snapshot retries.
    }
  }

  async #load(): Promise<PersistedState> {
    const { hardState, snapshot } = await readHead(this.#db, this.path)
    const snapshotIndex = snapshot?.meta.index ?? 0
    const entries: Entry[] = []
    const damaged = (reason: string) =>
      new StorageError(this.path, 'load the log', { reason, hint: DAMAGE_HINT })
    try {
      // From the first entry after the snapshot: covered ones may still be waiting for their range clear.
      const range = { gte: entryKey(snapshotIndex + 1), lt: ENTRY_KEYS.lt }
      for await (const [key, value] of this.#db.iterator(range)) {
        const index = entryKeyIndex(key)
        if (index === null)
          throw damaged(`an entry key has ${key.length} bytes instead of ${ENTRY_KEY_BYTES}.`)
        const previous = entries.at(-1)
        const expected = (previous?.index ?? snapshotIndex) + 1
        if (index < expected) {
          throw damaged(`entry ${index} is still stored although the snapshot covers up to ${snapshotIndex}.`)
        }
        if (index > expected) {
          throw damaged(
            `entries ${expected}..${index - 1} are missing (a gap after ${expected - 1}, before ${index}).`,
          )
        }
        const entry = decodeStored(this.path, `entry ${index}`, () => decodeEntry(plain(value)))
        if (entry.index !== index)
          throw damaged(`the entry stored under index ${index} says it is ${entry.index}.`)
        const termBefore = previous?.term ?? snapshot?.meta.term ?? 0
        if (entry.term < termBefore) {
          throw damaged(`entry ${index} has term ${entry.term}, lower than the term ${termBefore} before it.`)
        }
        entries.push(entry)
      }
    } catch (error) {
      if (error instanceof RaftError) throw error
      throw new StorageError(this.path, 'load the log', { cause: error })
    }
    const lastIndex = entries.at(-1)?.index ?? snapshotIndex
    if (hardState.commit > lastIndex) {
      throw damaged(`the commit index ${hardState.commit} is past the last stored index ${lastIndex}.`)
    }
    // Paired with the bounds kept while writing: a mismatch means something
    // other than this object changed the store while it was open.
    if (lastIndex !== this.#bounds.lastIndex || snapshotIndex !== this.#bounds.snapshotIndex) {
      throw damaged(
        `the log on disk spans ${snapshotIndex + 1}..${lastIndex} but this storage wrote ` +
          `${this.#bounds.snapshotIndex + 1}..${this.#bounds.lastIndex}.`,
      )
    }
    return { hardState, snapshot, entries }
  }
}

// classic-level hands back Buffers. Callers get plain Uint8Arrays (a view,
// no copy), so stored data compares equal to what was saved and a Buffer's
// sharing slice() never reaches code that expects Uint8Array's copying one.
function plain(bytes: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(bytes) === Uint8Array.prototype
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

function freeze(update: StorageUpdate): FrozenWrite {
  const puts: BatchOp[] = []
  const { hardState, snapshot, entries } = update
  if (hardState !== null) puts.push({ type: 'put', key: HARD_STATE_KEY, value: encodeHardState(hardState) })
  let frozenSnapshot: Snapshot | null = null
  if (snapshot !== null) {
    const meta = encodeSnapshotMeta(snapshot.meta)
    // The data is not copied: it can be tens of MB (a copy stalls the event
    // loop and doubles the memory), and snapshot data never changes once made.
    frozenSnapshot = { meta: { ...snapshot.meta }, data: snapshot.data }
    puts.push({ type: 'put', key: SNAPSHOT_META_KEY, value: meta })
    puts.push({
      type: 'put',
      key: SNAPSHOT_DATA_KEY,
      value: new TextEncoder().encode(snapshotFileName(snapshot.meta)),
    })
  }
  const frozenEntries: Entry[] = []
  for (const entry of entries) {
    puts.push({ type: 'put', key: entryKey(entry.index), value: encodeEntry(entry) })
    frozenEntries.push({ ...entry })
  }
  return {
    update: {
      hardState: hardState === null ? null : { ...hardState },
      snapshot: frozenSnapshot,
      entries: frozenEntries,
    },
    puts,
  }
}

function decodeStored<T>(path: string, what: string, decode: () => T): T {
  try {
    return decode()
  } catch (cause) {
    throw new StorageError(path, 'load the log', {
      cause,
      reason: `the stored ${what} does not decode.`,
      hint: DAMAGE_HINT,
    })
  }
}

async function readHead(db: Db, path: string): Promise<{ hardState: HardState; snapshot: Snapshot | null }> {
  let values: (Uint8Array | undefined)[]
  try {
    values = await db.getMany([HARD_STATE_KEY, SNAPSHOT_META_KEY, SNAPSHOT_DATA_KEY])
  } catch (cause) {
    throw new StorageError(path, 'read the hard state and snapshot', { cause })
  }
  const [hardStateBytes, metaBytes, data] = values
  if ((metaBytes === undefined) !== (data === undefined)) {
    throw new StorageError(path, 'load the log', {
      reason: `the snapshot ${metaBytes === undefined ? 'data' : 'meta'} is stored without its counterpart.`,
      hint: DAMAGE_HINT,
    })
  }
  const meta = decodeMeta(path, metaBytes)
  if (meta === null || data === undefined)
    return { hardState: decodeHard(path, hardStateBytes), snapshot: null }
  const file = new TextDecoder().decode(data)
  let bytes: Uint8Array
  try {
    const read = await readFile(join(path, SNAPSHOT_DIR, file))
    bytes = new Uint8Array(read.buffer, read.byteOffset, read.byteLength)
  } catch (cause) {
    throw new StorageError(path, 'load the log', {
      cause,
      reason: `the snapshot file ${file} cannot be read.`,
      hint: DAMAGE_HINT,
    })
  }
  return { hardState: decodeHard(path, hardStateBytes), snapshot: { meta, data: bytes } }
}

const SNAPSHOT_DIR = 'snapshots'
/** Reads of the stored snapshot that may find its file replaced by a newer one before loadSnapshot gives up. */
const SNAPSHOT_READ_ATTEMPTS_MAX = 3

function snapshotFileName(meta: SnapshotMeta): string {
  return `snapshot-${meta.index}-${meta.term}.bin`
}

let tempFileCount = 0

/**
 * Bytes of a snapshot file written between two syncs (RocksDB's
 * bytes_per_sync). Tens of MB of dirty pages synced at once hold up every
 * other sync on the file system meanwhile, Raft's own log writes included.
 */
const SNAPSHOT_SYNC_BYTES = 1024 * 1024

/** Writes a snapshot's data durably: temp file, fsync, rename, fsync of the directory. All of it off the event loop. */
async function writeSnapshotFile(path: string, snapshot: Snapshot): Promise<void> {
  const dir = join(path, SNAPSHOT_DIR)
  const final = join(dir, snapshotFileName(snapshot.meta))
  // <final>.<n>.tmp: two writers of the same snapshot never share a temporary file.
  const temp = `${final}.${++tempFileCount}.tmp`
  const file = await open(temp, 'w', 0o600)
  try {
    const { data } = snapshot
    let offset = 0
    while (offset < data.length) {
      const end = Math.min(data.length, offset + SNAPSHOT_SYNC_BYTES)
      const { bytesWritten } = await file.write(data, offset, end - offset, offset)
      offset += bytesWritten
      await file.datasync()
    }
    if (data.length === 0) await file.datasync()
  } catch (error) {
    await file.close().catch(() => {})
    await rm(temp, { force: true })
    throw error
  }
  await file.close()
  await rename(temp, final)
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

function decodeHard(path: string, bytes: Uint8Array | undefined): HardState {
  if (bytes === undefined) return { ...emptyHardState }
  return decodeStored(path, 'hard state', () => decodeHardState(bytes))
}

function decodeMeta(path: string, bytes: Uint8Array | undefined): SnapshotMeta | null {
  if (bytes === undefined) return null
  return decodeStored(path, 'snapshot meta', () => decodeSnapshotMeta(bytes))
}

async function boundaryIndex(db: Db, path: string, reverse: boolean): Promise<number | null> {
  let keys: Uint8Array[]
  try {
    keys = await db.keys({ ...ENTRY_KEYS, reverse, limit: 1 }).all()
  } catch (cause) {
    throw new StorageError(path, 'read the log bounds', { cause })
  }
  const key = keys[0]
  if (key === undefined) return null
  const index = entryKeyIndex(key)
  if (index === null) {
    throw new StorageError(path, 'read the log bounds', {
      reason: `an entry key has ${key.length} bytes instead of ${ENTRY_KEY_BYTES}.`,
      hint: DAMAGE_HINT,
    })
  }
  return index
}

/** What open() reads: the log's bounds and the snapshot file the store points to. */
interface StoredHead {
  bounds: LogBounds
  snapshotFile: string | null
}

/** Reads where the log starts and ends; load() later checks everything in between. */
async function readStoredHead(db: Db, path: string): Promise<StoredHead> {
  // Snapshot data can be large and is not needed for the bounds: read the meta and the file's name.
  let values: (Uint8Array | undefined)[]
  try {
    values = await db.getMany([HARD_STATE_KEY, SNAPSHOT_META_KEY, SNAPSHOT_DATA_KEY])
  } catch (cause) {
    throw new StorageError(path, 'read the hard state and snapshot meta', { cause })
  }
  const hardState = decodeHard(path, values[0])
  const snapshotIndex = decodeMeta(path, values[1])?.index ?? 0
  let first = await boundaryIndex(db, path, false)
  if (first !== null && first <= snapshotIndex) {
    // Covered by the snapshot and left by a range clear that a crash cut short.
    try {
      await db.clear({ gte: entryKey(first), lte: entryKey(snapshotIndex) })
    } catch (cause) {
      throw new StorageError(path, 'drop the entries the snapshot covers', { cause })
    }
    first = await boundaryIndex(db, path, false)
  }
  const last = await boundaryIndex(db, path, true)
  const damaged = (reason: string) => new StorageError(path, 'open the log', { reason, hint: DAMAGE_HINT })
  if (first !== null && first !== snapshotIndex + 1) {
    throw damaged(`entries ${snapshotIndex + 1}..${first - 1} are missing (the log starts at ${first}).`)
  }
  const lastIndex = last ?? snapshotIndex
  if (hardState.commit > lastIndex) {
    throw damaged(`the commit index ${hardState.commit} is past the last stored index ${lastIndex}.`)
  }
  const snapshotFile = values[2] === undefined ? null : new TextDecoder().decode(values[2])
  return { bounds: { hardState, snapshotIndex, lastIndex }, snapshotFile }
}
