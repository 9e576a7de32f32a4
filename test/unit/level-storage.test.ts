// Checks that the two LogStorage implementations (classic-level and memory)
// mean the same thing by save, compact and load: one behavioural suite runs
// against both, each test on a fresh store. LevelDB-only tests then reopen a
// store, damage one by hand through a raw ClassicLevel on the same path, and
// provoke LevelDB errors, checking what load/open report. They also check
// that a compaction writes its (large) snapshot file without holding up the
// saves issued after it, and what happens when a newer snapshot overtakes it
// or the store is closed while it is written.

import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { entryKey, LevelLogStorage, StorageError } from '../../consensus/level-storage.ts'
import { MemoryLogStorage } from '../../consensus/memory-storage.ts'
import type { Entry, HardState, LogStorage, PersistedState, Snapshot } from '../../consensus/types.ts'

const text = new TextEncoder()

function entry(index: number, term: number, type: 0 | 1 = 0): Entry {
  return { index, term, type, data: text.encode(`entry ${index} of term ${term}`) }
}

function entries(from: number, to: number, term: number): Entry[] {
  const result: Entry[] = []
  for (let index = from; index <= to; index++) result.push(entry(index, term))
  return result
}

function snapshot(index: number, term: number): Snapshot {
  return {
    meta: {
      index,
      term,
      confState: {
        voters: ['a', 'b', 'c'],
        votersOutgoing: ['a'],
        learners: ['d'],
        learnersNext: [],
        autoLeave: true,
      },
    },
    data: text.encode(`state at ${index}`),
  }
}

function hard(term: number, vote: string, commit: number): HardState {
  return { term, vote, commit }
}

/** [index, term] of each loaded entry: compact to compare, with the bytes checked separately. */
function shape(state: PersistedState): [number, number][] {
  for (const loaded of state.entries) {
    expect(loaded.data).toEqual(entry(loaded.index, loaded.term).data)
  }
  return state.entries.map((loaded) => [loaded.index, loaded.term])
}

interface Harness {
  /** A fresh, empty store. */
  create(): Promise<LogStorage>
}

function storageSuite(name: string, harness: Harness): void {
  describe(name, () => {
    test('an empty store loads the zero hard state, no snapshot and no entries', async () => {
      const storage = await harness.create()
      expect(await storage.load()).toEqual({ hardState: hard(0, '', 0), snapshot: null, entries: [] })
    })

    test('a saved hard state and entries load back field for field', async () => {
      const storage = await harness.create()
      const saved = [entry(1, 1, 1), entry(2, 1), entry(3, 2)]
      await storage.save({ hardState: hard(2, 'b', 2), entries: saved, snapshot: null })
      expect(await storage.load()).toEqual({ hardState: hard(2, 'b', 2), snapshot: null, entries: saved })
    })

    test('entries that conflict with the stored log replace it from their first index and drop the rest', async () => {
      const storage = await harness.create()
      await storage.save({ hardState: hard(1, 'a', 2), entries: entries(1, 10, 1), snapshot: null })
      await storage.save({ hardState: hard(2, 'b', 2), entries: entries(5, 6, 2), snapshot: null })
      const state = await storage.load()
      expect(shape(state)).toEqual([...entries(1, 4, 1), ...entries(5, 6, 2)].map((e) => [e.index, e.term]))
      // Appending again after a truncation continues from the new end.
      await storage.save({ hardState: null, entries: entries(7, 7, 2), snapshot: null })
      expect((await storage.load()).entries.at(-1)).toEqual(entry(7, 2))
    })

    test('a saved snapshot drops the entries it covers and keeps the ones after it', async () => {
      const storage = await harness.create()
      await storage.save({ hardState: hard(1, 'a', 8), entries: entries(1, 10, 1), snapshot: null })
      await storage.save({ hardState: null, entries: [], snapshot: snapshot(6, 1) })
      const state = await storage.load()
      expect(state.snapshot).toEqual(snapshot(6, 1))
      expect(shape(state)).toEqual([
        [7, 1],
        [8, 1],
        [9, 1],
        [10, 1],
      ])
    })

    test('a snapshot beyond the log replaces the whole log and entries may follow it in the same save', async () => {
      const storage = await harness.create()
      await storage.save({ hardState: hard(1, 'a', 3), entries: entries(1, 5, 1), snapshot: null })
      await storage.save({
        hardState: hard(3, '', 20),
        entries: entries(21, 22, 3),
        snapshot: snapshot(20, 2),
      })
      const state = await storage.load()
      expect(state.hardState).toEqual(hard(3, '', 20))
      expect(state.snapshot?.meta.index).toBe(20)
      expect(shape(state)).toEqual([
        [21, 3],
        [22, 3],
      ])
    })

    test('compact stores the snapshot and drops the entries up to and including its index', async () => {
      const storage = await harness.create()
      await storage.save({
        hardState: hard(2, 'a', 7),
        entries: [...entries(1, 4, 1), ...entries(5, 9, 2)],
        snapshot: null,
      })
      await storage.compact(snapshot(5, 2))
      let state = await storage.load()
      expect(state.snapshot).toEqual(snapshot(5, 2))
      expect(shape(state)).toEqual([
        [6, 2],
        [7, 2],
        [8, 2],
        [9, 2],
      ])
      // A second compaction drops only what the first one left.
      await storage.compact(snapshot(7, 2))
      state = await storage.load()
      expect(state.snapshot?.meta.index).toBe(7)
      expect(shape(state)).toEqual([
        [8, 2],
        [9, 2],
      ])
      // Compacting the whole log leaves only the snapshot; the log continues after it.
      await storage.compact(snapshot(9, 2))
      await storage.save({ hardState: null, entries: entries(10, 10, 2), snapshot: null })
      state = await storage.load()
      expect(shape(state)).toEqual([[10, 2]])
    })

    test('saves issued without waiting are applied one after another in call order', async () => {
      const storage = await harness.create()
      const order: number[] = []
      // Each save is only valid on top of the previous one (the second would
      // leave a gap on an empty log), so a race would reject, not just reorder.
      await Promise.all([
        storage
          .save({ hardState: hard(1, 'a', 0), entries: entries(1, 5, 1), snapshot: null })
          .then(() => order.push(1)),
        storage
          .save({ hardState: null, entries: entries(6, 8, 1), snapshot: null })
          .then(() => order.push(2)),
        storage
          .save({ hardState: hard(2, 'b', 0), entries: entries(4, 4, 2), snapshot: null })
          .then(() => order.push(3)),
        storage.save({ hardState: hard(2, 'b', 4), entries: [], snapshot: null }).then(() => order.push(4)),
      ])
      expect(order).toEqual([1, 2, 3, 4])
      // A compaction may land after saves issued later (it writes its data
      // first); issued alone, it drops what it covers of the repaired log.
      await storage.compact(snapshot(2, 1))
      const state = await storage.load()
      expect(state.hardState).toEqual(hard(2, 'b', 4))
      expect(shape(state)).toEqual([
        [3, 1],
        [4, 2],
      ])
    })

    test('changing an object after saving it or after loading it does not change the stored data', async () => {
      const storage = await harness.create()
      const saved = entries(1, 3, 1)
      const taken = snapshot(1, 1)
      const hardState = hard(1, 'a', 2)
      const pending = storage.save({ hardState, entries: saved, snapshot: null })
      // Mutated before the write even ran: the store must have copied at call time.
      saved[0]!.data[0] = 0
      saved[1]!.term = 9
      hardState.vote = 'z'
      await pending
      const compacting = storage.compact(taken)
      // Snapshot data is handed over, not copied (LogStorage.compact): only the meta may change.
      taken.meta.index = 3
      taken.meta.confState.voters.push('x')
      await compacting
      const first = await storage.load()
      first.entries[0]!.data[0] = 0
      first.snapshot!.data[0] = 0
      first.hardState.commit = 99
      const second = await storage.load()
      expect(second.hardState).toEqual(hard(1, 'a', 2))
      expect(second.snapshot).toEqual(snapshot(1, 1))
      expect(second.entries).toEqual(entries(2, 3, 1))
    })

    test('a compaction at or below the stored snapshot does nothing: the newer snapshot stays', async () => {
      const storage = await harness.create()
      await storage.save({ hardState: hard(1, 'a', 10), entries: entries(1, 10, 1), snapshot: null })
      // A snapshot from the leader arrived while the node built its own, older one.
      await storage.save({ hardState: null, entries: [], snapshot: snapshot(8, 1) })
      await storage.compact(snapshot(5, 1))
      await storage.compact(snapshot(8, 1))
      const state = await storage.load()
      expect(state.snapshot).toEqual(snapshot(8, 1))
      expect(shape(state)).toEqual([
        [9, 1],
        [10, 1],
      ])
    })

    test('a malformed update is refused as a broken invariant and leaves the store as it was', async () => {
      const storage = await harness.create()
      await storage.save({ hardState: hard(2, 'a', 3), entries: entries(1, 5, 2), snapshot: null })
      await storage.compact(snapshot(2, 2))
      const before = await storage.load()
      const refused = [
        // A gap after the last index.
        storage.save({ hardState: null, entries: entries(7, 8, 2), snapshot: null }),
        // Entries the snapshot already covers.
        storage.save({ hardState: null, entries: entries(2, 3, 2), snapshot: null }),
        // Entries that are not contiguous.
        storage.save({ hardState: null, entries: [entry(6, 2), entry(8, 2)], snapshot: null }),
        // A commit index past the end of the log.
        storage.save({ hardState: hard(2, 'a', 6), entries: [], snapshot: null }),
        // A second vote in the same term.
        storage.save({ hardState: hard(2, 'b', 3), entries: [], snapshot: null }),
        // A term or commit that goes back.
        storage.save({ hardState: hard(1, '', 3), entries: [], snapshot: null }),
        storage.save({ hardState: hard(2, 'a', 1), entries: [], snapshot: null }),
        // A snapshot older than the stored one, and a compaction past the log's end.
        storage.save({ hardState: null, entries: [], snapshot: snapshot(1, 1) }),
        storage.compact(snapshot(6, 2)),
      ]
      for (const attempt of refused) await expect(attempt).rejects.toMatchObject({ code: 'ERR_ASSERTION' })
      expect(await storage.load()).toEqual(before)
      // The store still accepts a valid save afterwards.
      await storage.save({ hardState: hard(3, 'c', 5), entries: entries(6, 6, 3), snapshot: null })
      expect((await storage.load()).entries.at(-1)).toEqual(entry(6, 3))
    })
  })
}

const opened: LogStorage[] = []
let root = ''
let dirCount = 0

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'docklet-level-storage-'))
})

afterEach(async () => {
  await Promise.allSettled(opened.splice(0).map((storage) => storage.close()))
})

afterAll(async () => {
  if (root !== '') await rm(root, { recursive: true, force: true })
})

function freshPath(): string {
  dirCount++
  return join(root, `db-${dirCount}`)
}

async function openLevel(path: string): Promise<LevelLogStorage> {
  const storage = await LevelLogStorage.open(path)
  opened.push(storage)
  return storage
}

storageSuite('MemoryLogStorage', {
  create: async () => {
    const storage = new MemoryLogStorage()
    opened.push(storage)
    return storage
  },
})

storageSuite('LevelLogStorage', { create: () => openLevel(freshPath()) })

describe('LevelLogStorage on disk', () => {
  test('a reopened store loads the same state it held when it was closed', async () => {
    const path = freshPath()
    const storage = await openLevel(path)
    await storage.save({ hardState: hard(3, 'c', 6), entries: entries(1, 9, 2), snapshot: null })
    await storage.save({ hardState: null, entries: entries(8, 8, 3), snapshot: null })
    await storage.compact(snapshot(4, 2))
    const before = await storage.load()
    await storage.close()

    const reopened = await openLevel(path)
    expect(await reopened.load()).toEqual(before)
    // The reopened store knows where its log ends: a truncating append works
    // without a load first, and the stale entry 8 of term 2 is gone for good.
    await reopened.save({ hardState: null, entries: entries(7, 7, 3), snapshot: null })
    expect(shape(await reopened.load())).toEqual([
      [5, 2],
      [6, 2],
      [7, 3],
    ])
  })

  test('load names the path and the missing entries when the log on disk has a gap', async () => {
    const path = freshPath()
    const storage = await openLevel(path)
    await storage.save({ hardState: hard(1, 'a', 3), entries: entries(1, 9, 1), snapshot: null })
    await storage.close()
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(path, { keyEncoding: 'view', valueEncoding: 'view' })
    try {
      await raw.del(entryKey(5))
    } finally {
      await raw.close()
    }

    const damaged = await openLevel(path)
    const error: unknown = await damaged.load().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(StorageError)
    expect(error).toMatchObject({ code: 'ERR_RAFT_STORAGE', path })
    expect((error as Error).message).toContain(path)
    expect((error as Error).message).toContain('entries 5..5 are missing')
  })

  test('open refuses a log whose first entry does not follow the snapshot', async () => {
    const path = freshPath()
    const storage = await openLevel(path)
    await storage.save({ hardState: hard(1, 'a', 3), entries: entries(1, 9, 1), snapshot: null })
    await storage.compact(snapshot(3, 1))
    await storage.close()
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(path, { keyEncoding: 'view', valueEncoding: 'view' })
    try {
      await raw.del(entryKey(4))
    } finally {
      await raw.close()
    }
    await expect(openLevel(path)).rejects.toThrow(/entries 4\.\.4 are missing \(the log starts at 5\)/)
  })

  test('covered entries are cleared after a compaction, and any a crash left behind are dropped at open', async () => {
    const path = freshPath()
    const storage = await openLevel(path)
    await storage.save({ hardState: hard(1, 'a', 9), entries: entries(1, 9, 1), snapshot: null })
    await storage.compact(snapshot(5, 1))
    await storage.close()
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(path, { keyEncoding: 'view', valueEncoding: 'view' })
    const entryKeys = { gte: entryKey(0), lt: entryKey(2 ** 40) }
    try {
      // close() waited for the range clear: only the entries after the snapshot are left.
      expect((await raw.keys(entryKeys).all()).length).toBe(4)
      // A crash before the clear ran would have left the covered entries.
      for (const leftover of entries(2, 5, 1)) await raw.put(entryKey(leftover.index), leftover.data)
    } finally {
      await raw.close()
    }

    const reopened = await openLevel(path)
    const state = await reopened.load()
    expect(state.snapshot?.meta.index).toBe(5)
    expect(shape(state)).toEqual([
      [6, 1],
      [7, 1],
      [8, 1],
      [9, 1],
    ])
    await reopened.close()
    const check = new ClassicLevel<Uint8Array, Uint8Array>(path, {
      keyEncoding: 'view',
      valueEncoding: 'view',
    })
    try {
      expect((await check.keys(entryKeys).all()).length).toBe(4)
    } finally {
      await check.close()
    }
  })

  test('a LevelDB failure is a StorageError naming the path and the operation, with the cause', async () => {
    const path = freshPath()
    await openLevel(path)
    // LevelDB locks its directory: a second open of the same path fails.
    const error: unknown = await openLevel(path).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(StorageError)
    expect(error).toMatchObject({ code: 'ERR_RAFT_STORAGE', operation: 'open the database' })
    expect((error as Error).message).toContain(path)
    expect((error as Error).cause).toBeInstanceOf(Error)
  })

  test('writes beyond writesQueuedMax fail at once while the queued ones complete', async () => {
    const storage = await LevelLogStorage.open(freshPath(), { writesQueuedMax: 2 })
    opened.push(storage)
    const first = storage.save({ hardState: null, entries: entries(1, 1, 1), snapshot: null })
    const second = storage.save({ hardState: null, entries: entries(2, 2, 1), snapshot: null })
    const third = storage.save({ hardState: null, entries: entries(3, 3, 1), snapshot: null })
    await expect(third).rejects.toMatchObject({ code: 'ERR_RAFT_STORAGE' })
    await Promise.all([first, second])
    expect((await storage.load()).entries.map((loaded) => loaded.index)).toEqual([1, 2])
  })

  test('a compaction writes its snapshot file without holding up the saves issued after it', async () => {
    const path = freshPath()
    const storage = await openLevel(path)
    await storage.save({ hardState: hard(1, 'a', 4), entries: entries(1, 4, 1), snapshot: null })
    // Big enough that writing and syncing it takes far longer than a few small synced batches.
    const big: Snapshot = { ...snapshot(4, 1), data: new Uint8Array(48 * 1024 * 1024).fill(7) }
    const order: string[] = []
    const compacting = storage.compact(big).then(() => order.push('compact'))
    for (let index = 5; index <= 7; index++) {
      await storage.save({ hardState: null, entries: entries(index, index, 1), snapshot: null })
      order.push(`save ${index}`)
    }
    await compacting
    expect(order).toEqual(['save 5', 'save 6', 'save 7', 'compact'])
    await storage.close()
    const reopened = await openLevel(path)
    const state = await reopened.load()
    expect(state.snapshot?.meta.index).toBe(4)
    expect(state.snapshot?.data.length).toBe(big.data.length)
    expect(state.snapshot?.data.every((byte) => byte === 7)).toBe(true)
    expect(shape(state)).toEqual([
      [5, 1],
      [6, 1],
      [7, 1],
    ])
  })

  test('a compaction overtaken by a newer snapshot leaves that one and no stray file', async () => {
    const path = freshPath()
    const storage = await openLevel(path)
    await storage.save({ hardState: hard(1, 'a', 9), entries: entries(1, 9, 1), snapshot: null })
    // The save joins the queue at once; the compaction only once its file is written.
    const compacting = storage.compact(snapshot(5, 1))
    await storage.save({ hardState: null, entries: [], snapshot: snapshot(8, 1) })
    await compacting
    const state = await storage.load()
    expect(state.snapshot).toEqual(snapshot(8, 1))
    expect(shape(state)).toEqual([[9, 1]])
    expect(await readdir(join(path, 'snapshots'))).toEqual(['snapshot-8-1.bin'])
  })

  test('close waits for a compaction that is still writing its file', async () => {
    const path = freshPath()
    const storage = await openLevel(path)
    await storage.save({ hardState: hard(1, 'a', 6), entries: entries(1, 6, 1), snapshot: null })
    const big: Snapshot = { ...snapshot(6, 1), data: new Uint8Array(8 * 1024 * 1024).fill(3) }
    const compacting = storage.compact(big)
    await storage.close()
    await compacting
    const reopened = await openLevel(path)
    const state = await reopened.load()
    expect(state.snapshot?.meta.index).toBe(6)
    expect(state.entries).toEqual([])
    expect(await readdir(join(path, 'snapshots'))).toEqual(['snapshot-6-1.bin'])
  })

  test('a closed store refuses to save', async () => {
    const storage = await openLevel(freshPath())
    await storage.close()
    await expect(
      storage.save({ hardState: hard(1, '', 0), entries: [], snapshot: null }),
    ).rejects.toMatchObject({
      code: 'ERR_RAFT_STORAGE',
    })
  })
})
