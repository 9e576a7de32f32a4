// Checks that LevelLogStorage never takes back a write it acknowledged when
// its process dies mid-flight. A child (storage-writer.ts) plays a Raft node's
// writes on one directory and prints an `ack` line after each save resolves;
// the parent SIGKILLs it at a random moment, reopens the store and checks it
// against everything acknowledged so far: the log loads whole, the term never
// went back, no second vote appeared in an acknowledged term, every
// acknowledged committed entry is still there with its term and bytes (or
// covered by a snapshot), and the commit index did not move back. Then a fresh
// child continues on the same directory from what the parent just read.
//
// SIGKILL leaves the OS page cache intact, so this checks atomicity and
// ack-after-durable ordering, not fsync against power loss (that is why every
// batch is written with sync: true, which this test cannot observe).
// Set STORAGE_CRASH_SEED to replay a run's decisions (kill timing still varies).

import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { LevelLogStorage } from '../../consensus/level-storage.ts'
import type { PersistedState } from '../../consensus/types.ts'
import { entryData, snapshotData } from './storage-writer.ts'

const writerPath = fileURLToPath(new URL('./storage-writer.ts', import.meta.url))
const rounds = 18
/** Kill delays, measured from the child's `ready` line (or from spawn, every fourth round). */
const killDelayMinMs = 20
const killDelayMaxMs = 150
/** A child that neither gets ready nor dies within this is stuck: fail instead of hanging. */
const childDeadlineMs = 10_000
const baseSeed = Number(process.env.STORAGE_CRASH_SEED ?? Math.floor(Math.random() * 1e9))

let root = ''
let child: ChildProcess | null = null

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'docklet-storage-crash-'))
})

afterAll(async () => {
  if (child !== null && child.exitCode === null && child.signalCode === null) {
    const running = child
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGKILL')
    await exited
  }
  if (root !== '') await rm(root, { recursive: true, force: true })
})

interface Ack {
  term: number
  vote: string
  first: number
  last: number
  commit: number
  snap: number
  snapTerm: number
}

function parseAck(line: string): Ack {
  const fields = new Map(line.split(' ').map((part) => part.split('=') as [string, string]))
  const number = (name: string) => {
    const value = Number(fields.get(name))
    if (!Number.isSafeInteger(value)) throw new Error(`The writer printed a malformed line: ${line}`)
    return value
  }
  const vote = fields.get('vote')
  return {
    term: number('term'),
    vote: vote === '-' || vote === undefined ? '' : vote,
    first: number('first'),
    last: number('last'),
    commit: number('commit'),
    snap: number('snap'),
    snapTerm: number('snapTerm'),
  }
}

/** What the writers have made durable, as far as the parent knows: acknowledged or read back. */
class DurableModel {
  term = 0
  commit = 0
  snap = 0
  snapTerm = 0
  last = 0
  /** The vote each term got; a term missing here had no vote seen yet. */
  votes = new Map<number, string>()
  /** Entry index -> term, for entries after the snapshot. */
  terms = new Map<number, number>()

  apply(ack: Ack, where: string): void {
    this.#recordVote(ack.term, ack.vote, where)
    this.term = ack.term
    this.commit = ack.commit
    if (ack.snap > this.snap) {
      for (const index of this.terms.keys()) if (index <= ack.snap) this.terms.delete(index)
      this.snap = ack.snap
      this.snapTerm = ack.snapTerm
    }
    if (ack.first > 0) {
      for (const index of this.terms.keys()) if (index >= ack.first) this.terms.delete(index)
      for (let index = ack.first; index <= ack.last; index++) this.terms.set(index, ack.term)
    }
    this.last = ack.last
  }

  /** Checks what a reopened store holds against what was acknowledged. */
  check(state: PersistedState, where: string): void {
    const { hardState, snapshot, entries } = state
    const snap = snapshot?.meta.index ?? 0
    const last = entries.at(-1)?.index ?? snap
    entries.forEach((entry, i) => {
      expect(entry.index, `${where}: entries are contiguous after the snapshot`).toBe(snap + 1 + i)
      expect(entry.data, `${where}: entry ${entry.index} holds its bytes`).toEqual(
        entryData(entry.term, entry.index),
      )
    })
    if (snapshot !== null) {
      expect(snapshot.data, `${where}: the snapshot holds its bytes`).toEqual(
        snapshotData(snapshot.meta.index, snapshot.meta.term),
      )
    }
    expect(hardState.term, `${where}: the term did not go back`).toBeGreaterThanOrEqual(this.term)
    const voted = this.votes.get(hardState.term) ?? ''
    if (voted !== '') expect(hardState.vote, `${where}: one vote in term ${hardState.term}`).toBe(voted)
    expect(hardState.commit, `${where}: the commit index did not go back`).toBeGreaterThanOrEqual(this.commit)
    expect(snap, `${where}: the snapshot did not go back`).toBeGreaterThanOrEqual(this.snap)
    expect(last, `${where}: the log reaches the acknowledged commit index`).toBeGreaterThanOrEqual(
      this.commit,
    )
    const byIndex = new Map(entries.map((entry) => [entry.index, entry.term]))
    for (const [index, term] of this.terms) {
      if (index > this.commit) continue
      if (index < snap) continue
      const stored = index === snap ? snapshot?.meta.term : byIndex.get(index)
      expect(stored, `${where}: committed entry ${index} kept its term`).toBe(term)
    }
    if (this.snap > 0 && this.snap === snap) {
      expect(snapshot?.meta.term, `${where}: the snapshot kept its term`).toBe(this.snapTerm)
    }
  }

  /** The next child continues from what the store holds, so that becomes the baseline. */
  reset(state: PersistedState, where: string): void {
    const { hardState, snapshot, entries } = state
    this.#recordVote(hardState.term, hardState.vote, where)
    this.term = hardState.term
    this.commit = hardState.commit
    this.snap = snapshot?.meta.index ?? 0
    this.snapTerm = snapshot?.meta.term ?? 0
    this.terms = new Map(entries.map((entry) => [entry.index, entry.term]))
    this.last = entries.at(-1)?.index ?? this.snap
  }

  #recordVote(term: number, vote: string, where: string): void {
    if (vote === '') return
    const earlier = this.votes.get(term) ?? ''
    if (earlier !== '') expect(vote, `${where}: one vote in term ${term}`).toBe(earlier)
    this.votes.set(term, vote)
  }
}

interface RoundResult {
  acks: Ack[]
  signal: NodeJS.Signals | null
  code: number | null
  stderr: string
}

/** Runs one child until the random kill, collecting the acks it printed in full. */
function runChild(dir: string, seed: number, killFromSpawn: boolean, delayMs: number): Promise<RoundResult> {
  return new Promise((resolve, reject) => {
    const started = spawn(process.execPath, [writerPath, dir, String(seed)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child = started
    const acks: Ack[] = []
    let pending = ''
    let stderr = ''
    const kill = () => started.kill('SIGKILL')
    const killTimer = killFromSpawn ? setTimeout(kill, delayMs) : null
    const deadline = setTimeout(kill, childDeadlineMs)
    started.stdout.setEncoding('utf8')
    started.stdout.on('data', (chunk: string) => {
      pending += chunk
      let newline = pending.indexOf('\n')
      while (newline >= 0) {
        const line = pending.slice(0, newline)
        pending = pending.slice(newline + 1)
        if (line.startsWith('ack ')) acks.push(parseAck(line))
        else if (line.startsWith('ready ') && !killFromSpawn) setTimeout(kill, delayMs)
        newline = pending.indexOf('\n')
      }
    })
    started.stderr.setEncoding('utf8')
    started.stderr.on('data', (chunk: string) => {
      if (stderr.length < 16_384) stderr += chunk
    })
    started.once('error', reject)
    // 'close' waits for stdout to drain, so every line the child wrote is counted.
    started.once('close', (code, signal) => {
      if (killTimer !== null) clearTimeout(killTimer)
      clearTimeout(deadline)
      resolve({ acks, code, signal, stderr })
    })
  })
}

test('a store killed at random moments keeps every acknowledged vote, term and committed entry', async () => {
  expect(process.features.typescript, 'this Node runs .ts files (Node >= 23.6)').toBeTruthy()
  const dir = join(root, 'db')
  const model = new DurableModel()
  let ackCount = 0
  let truncations = 0
  let compactions = 0
  for (let round = 0; round < rounds; round++) {
    const seed = baseSeed + round
    const where = `seed ${baseSeed}, round ${round}`
    const delayMs = killDelayMinMs + Math.floor(Math.random() * (killDelayMaxMs - killDelayMinMs + 1))
    const result = await runChild(dir, seed, round % 4 === 3, delayMs)
    expect(
      result.signal,
      `${where}: the writer died only of SIGKILL (exit ${result.code}): ${result.stderr}`,
    ).toBe('SIGKILL')
    for (const ack of result.acks) {
      if (ack.first > 0 && ack.first <= model.last) truncations++
      if (ack.snap > model.snap) compactions++
      model.apply(ack, where)
    }
    ackCount += result.acks.length

    const storage = await LevelLogStorage.open(dir)
    try {
      const state = await storage.load()
      model.check(state, where)
      model.reset(state, where)
    } finally {
      await storage.close()
    }
  }
  // The rounds must have exercised what they claim to check.
  expect(ackCount, `seed ${baseSeed}: acknowledged writes`).toBeGreaterThan(rounds * 5)
  expect(truncations, `seed ${baseSeed}: acknowledged truncating appends`).toBeGreaterThan(0)
  expect(compactions, `seed ${baseSeed}: acknowledged snapshots`).toBeGreaterThan(0)
}, 60_000)
