// Checks LogStorage.loadSnapshot on both storages (classic-level and memory):
// it reads back exactly the snapshot a save or a compaction stored, the newer
// one when a later snapshot replaced it, and null without one; on LevelDB it
// refuses a closed store, and a snapshot file that stays missing fails the
// read after SNAPSHOT_READ_ATTEMPTS_MAX tries. Then the LevelDB write buffer
// limit (LEVEL_WRITE_BUFFER_BYTES): a log several times that size, written in
// synced batches and partly compacted, so LevelDB writes its memtable out
// many times, still loads back whole and in order after a reopen.

import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { LEVEL_WRITE_BUFFER_BYTES, LevelLogStorage, StorageError } from '../../consensus/level-storage.ts'
import { MemoryLogStorage } from '../../consensus/memory-storage.ts'
import type { Entry, LogStorage, Snapshot } from '../../consensus/types.ts'

const text = new TextEncoder()

function entries(from: number, to: number, term: number, bytes = 32): Entry[] {
  const result: Entry[] = []
  for (let index = from; index <= to; index++) {
    const data = new Uint8Array(bytes).fill(index % 251)
    result.push({ index, term, type: 0, data })
  }
  return result
}

function snapshot(index: number, term: number): Snapshot {
  return {
    meta: {
      index,
      term,
      confState: {
        voters: ['a', 'b', 'c'],
        votersOutgoing: [],
        learners: [],
        learnersNext: [],
        autoLeave: false,
      },
    },
    data: text.encode(`state at ${index}`.repeat(100)),
  }
}

const dirs: string[] = []
const stores: LogStorage[] = []
afterEach(async () => {
  for (const store of stores.splice(0)) await store.close().catch(() => {})
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

async function levelStore(dir?: string): Promise<LevelLogStorage> {
  const path = dir ?? (await mkdtemp(join(tmpdir(), 'docklet-read-back-')))
  if (dir === undefined) dirs.push(path)
  const store = await LevelLogStorage.open(path)
  stores.push(store)
  return store
}

const harnesses: [string, () => Promise<LogStorage>][] = [
  ['classic-level', () => levelStore()],
  [
    'memory',
    async () => {
      const store = new MemoryLogStorage()
      stores.push(store)
      return store
    },
  ],
]

for (const [name, create] of harnesses) {
  describe(`loadSnapshot (${name})`, () => {
    test('a store without a snapshot reads back null', async () => {
      const store = await create()
      await store.save({
        hardState: { term: 1, vote: 'a', commit: 0 },
        entries: entries(1, 3, 1),
        snapshot: null,
      })
      expect(await store.loadSnapshot!()).toBeNull()
    })

    test('reads back the snapshot a compaction stored, then the newer one a save stored', async () => {
      const store = await create()
      await store.save({
        hardState: { term: 1, vote: 'a', commit: 10 },
        entries: entries(1, 10, 1),
        snapshot: null,
      })
      await store.compact(snapshot(6, 1))
      expect(await store.loadSnapshot!()).toEqual(snapshot(6, 1))
      await store.save({
        hardState: { term: 2, vote: '', commit: 20 },
        entries: [],
        snapshot: snapshot(20, 2),
      })
      expect(await store.loadSnapshot!()).toEqual(snapshot(20, 2))
      // Reading it back changes nothing stored.
      expect((await store.load()).snapshot).toEqual(snapshot(20, 2))
    })
  })
}

describe('loadSnapshot (classic-level only)', () => {
  test('a closed store refuses to read its snapshot back', async () => {
    const store = await levelStore()
    await store.save({ hardState: null, entries: [], snapshot: snapshot(4, 1) })
    await store.close()
    const error = await store.loadSnapshot().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StorageError)
    expect((error as StorageError).message).toMatch(/closed/)
  })

  test('a snapshot file that stays missing fails the read with a StorageError instead of retrying for good', async () => {
    const store = await levelStore()
    await store.save({ hardState: null, entries: [], snapshot: snapshot(4, 1) })
    const dir = join(store.path, 'snapshots')
    for (const name of await readdir(dir)) await rm(join(dir, name))
    const error = await store.loadSnapshot().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StorageError)
    expect((error as StorageError).message).toMatch(/cannot be read/)
  })
})

describe('LevelDB write buffer (LEVEL_WRITE_BUFFER_BYTES)', () => {
  test('a log several write buffers large, saved in synced batches and partly compacted, loads back whole after a reopen', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'docklet-write-buffer-'))
    dirs.push(dir)
    const entryBytes = 4096
    const perSave = 64
    const total = Math.ceil((4 * LEVEL_WRITE_BUFFER_BYTES) / entryBytes / perSave) * perSave
    const store = await levelStore(dir)
    for (let from = 1; from <= total; from += perSave) {
      const to = from + perSave - 1
      await store.save({
        hardState: { term: 1, vote: 'a', commit: to },
        entries: entries(from, to, 1, entryBytes),
        snapshot: null,
      })
    }
    await store.compact(snapshot(total / 2, 1))
    await store.close()
    const reopened = await levelStore(dir)
    const state = await reopened.load()
    expect(state.snapshot?.meta.index).toBe(total / 2)
    expect(state.entries.map((e) => e.index)).toEqual(
      Array.from({ length: total / 2 }, (_, i) => total / 2 + 1 + i),
    )
    for (const loaded of state.entries)
      expect(loaded.data).toEqual(entries(loaded.index, loaded.index, 1, entryBytes)[0]!.data)
  })
})
