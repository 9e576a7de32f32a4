// The child process of the storage crash test (storage-crash.test.ts).
//
//   node test/crash/storage-writer.ts <db dir> <seed>
//
// It plays the writes of a Raft node against a LevelLogStorage until it is
// killed: it starts new terms (voting or not), appends batches of entries in
// the current term (sometimes overwriting an uncommitted suffix of older
// terms, as a follower does when a new leader disagrees), advances the commit
// index, compacts the log into a snapshot, and sometimes installs a snapshot
// that lies beyond its log, as a lagging follower does. After each write has
// resolved (and only then) it prints one line describing the state it just
// made durable:
//
//   ack term=T vote=V first=F last=L commit=C snap=S snapTerm=ST
//
// where V is '-' for no vote, and F is the first index written by this save
// (0 when it wrote no entries; entries F..L all have term T). A fresh child
// continues from whatever the store holds, so the parent can kill it at any
// moment and start another on the same directory.
//
// Entry and snapshot bytes are a pure function of (term, index), so the parent
// can check every byte it reads back.

import { LevelLogStorage } from '../../consensus/level-storage.ts'
import type { ConfState, Entry, Snapshot } from '../../consensus/types.ts'

export const crashConfState: ConfState = {
  voters: ['a', 'b', 'c'],
  votersOutgoing: [],
  learners: [],
  learnersNext: [],
  autoLeave: false,
}

/** 16..215 bytes, a pattern of (term, index). */
export function entryData(term: number, index: number): Uint8Array {
  const data = new Uint8Array(16 + ((term * 31 + index * 7) % 200))
  for (let i = 0; i < data.length; i++) data[i] = (term * 131 + index * 17 + i) & 0xff
  return data
}

/** 4..8 KiB, a pattern of (index, term). */
export function snapshotData(index: number, term: number): Uint8Array {
  const data = new Uint8Array(4096 + (index % 4096))
  for (let i = 0; i < data.length; i++) data[i] = (index * 13 + term * 7 + (i >> 3)) & 0xff
  return data
}

/** mulberry32: a small seeded generator, so a seed replays the same sequence of decisions. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Entries appended by one save: 1..entriesPerSaveMax. */
const entriesPerSaveMax = 16
const voteChoices = ['', 'a', 'b', 'c']

async function main(dir: string, seed: number): Promise<never> {
  const random = seededRandom(seed)
  const below = (n: number) => Math.floor(random() * n)
  const storage = await LevelLogStorage.open(dir)
  const loaded = await storage.load()
  let { term, vote, commit } = loaded.hardState
  let snapIndex = loaded.snapshot?.meta.index ?? 0
  let snapTerm = loaded.snapshot?.meta.term ?? 0
  /** terms[i] is the term of entry snapIndex + 1 + i. */
  let terms = loaded.entries.map((entry) => entry.term)
  const lastIndex = () => snapIndex + terms.length
  const termAt = (index: number) => (index === snapIndex ? snapTerm : terms[index - snapIndex - 1]!)
  process.stdout.write(`ready term=${term} last=${lastIndex()} commit=${commit}\n`)

  for (;;) {
    const roll = random()
    let first = 0
    if (roll < 0.15) {
      // A new term: an election this node votes in, or a leader it hears of (no vote).
      const nextTerm = term + 1 + below(2)
      const nextVote = voteChoices[below(voteChoices.length)]!
      await storage.save({
        hardState: { term: nextTerm, vote: nextVote, commit },
        entries: [],
        snapshot: null,
      })
      term = nextTerm
      vote = nextVote
    } else if (roll < 0.25 && commit > snapIndex) {
      // The node snapshots what it has applied (everything committed) and compacts.
      const index = snapIndex + 1 + below(commit - snapIndex)
      const indexTerm = termAt(index)
      await storage.compact({
        meta: { index, term: indexTerm, confState: crashConfState },
        data: snapshotData(index, indexTerm),
      })
      terms = terms.slice(index - snapIndex)
      snapIndex = index
      snapTerm = indexTerm
    } else if (roll < 0.28) {
      // A lagging follower installs the leader's snapshot, which lies past its whole log.
      const index = lastIndex() + 1 + below(8)
      const snapshot: Snapshot = {
        meta: { index, term, confState: crashConfState },
        data: snapshotData(index, term),
      }
      await storage.save({ hardState: { term, vote, commit: index }, entries: [], snapshot })
      terms = []
      snapIndex = index
      snapTerm = term
      commit = index
    } else {
      // Append in the current term. Entries of older terms past the commit
      // index may be overwritten, as when a new leader's log disagrees.
      let overwritable = 0
      while (commit + overwritable < lastIndex() && termAt(commit + overwritable + 1) < term) overwritable++
      first = overwritable > 0 && random() < 0.4 ? commit + 1 + below(overwritable) : lastIndex() + 1
      const count = 1 + below(entriesPerSaveMax)
      const entries: Entry[] = []
      for (let index = first; index < first + count; index++) {
        entries.push({ index, term, type: 0, data: entryData(term, index) })
      }
      const last = first + count - 1
      const nextCommit = commit + below(last - commit + 1)
      await storage.save({ hardState: { term, vote, commit: nextCommit }, entries, snapshot: null })
      terms = [...terms.slice(0, first - snapIndex - 1), ...entries.map(() => term)]
      commit = nextCommit
    }
    process.stdout.write(
      `ack term=${term} vote=${vote === '' ? '-' : vote} first=${first} last=${lastIndex()} ` +
        `commit=${commit} snap=${snapIndex} snapTerm=${snapTerm}\n`,
    )
  }
}

if (import.meta.main) {
  const [dir, seedText] = process.argv.slice(2)
  if (dir === undefined || seedText === undefined) {
    process.stderr.write('usage: node test/crash/storage-writer.ts <db dir> <seed>\n')
    process.exit(2)
  }
  await main(dir, Number(seedText))
}
