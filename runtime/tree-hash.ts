// The content hash of an image: sha256 over a deterministic serialization of
// its tree. Entries are visited in byte order of their names; each adds a
// record "type NUL path NUL mode NUL uid NUL gid NUL detail NUL" (detail: size
// for files, followed by the bytes; target for symlinks; rdev for devices).
// mtimes, inode numbers and hard links are left out, so the same tree copied,
// extracted or rebuilt hashes the same; ownership stays in, since a tree with
// different owners behaves differently in a container. Extended attributes
// are not hashed (nor carried by saves and transfers beyond what tar keeps).
// Memory is bounded: files are read through one 1 MiB buffer, one directory
// listing at a time.
//
// The walk runs in a worker thread with synchronous fs calls: an image has
// tens of thousands of small files, and one async call (a thread-pool round
// trip) per lstat, open and read made hashing a Debian image take 12x longer
// than doing them in a row, while a synchronous walk on the main thread would
// stall the node. hashTreeSync is the walk itself (what the worker runs).

import { createHash } from 'node:crypto'
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { RuntimeError } from './errors.ts'

/** A tree with more entries than this is refused (a runaway build, or not an image). */
export const TREE_ENTRIES_MAX = 5_000_000
export const HASH_PATTERN = /^[0-9a-f]{64}$/
const READ_BUFFER_BYTES = 1024 * 1024

export interface TreeDigest {
  hash: string
  /** Sum of regular file sizes. */
  sizeBytes: number
  entries: number
}

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

/** The digest of the tree at `root`, computed on the calling thread (blocking it). */
export function hashTreeSync(root: string): TreeDigest {
  const hash = createHash('sha256')
  const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES)
  let sizeBytes = 0
  let entries = 0
  const hashFile = (path: string, expectedBytes: number): void => {
    const fd = openSync(path, 'r')
    let read = 0
    try {
      for (;;) {
        const count = readSync(fd, buffer, 0, buffer.length, null)
        if (count === 0) break
        read += count
        hash.update(buffer.subarray(0, count))
      }
    } finally {
      closeSync(fd)
    }
    if (read !== expectedBytes) {
      throw new RuntimeError('ERR_TREE_CHANGED', `${path} changed while it was hashed; hash the image again.`)
    }
  }
  const visit = (relative: string): void => {
    entries += 1
    if (entries > TREE_ENTRIES_MAX) {
      throw new RuntimeError('ERR_TREE_TOO_LARGE', `${root} holds more than ${TREE_ENTRIES_MAX} entries.`)
    }
    const path = relative === '.' ? root : join(root, relative)
    const stats = lstatSync(path)
    const head = (type: string, detail: string) =>
      hash.update(
        `${type}\0${relative}\0${(stats.mode & 0o7777).toString(8)}\0${stats.uid}\0${stats.gid}\0${detail}\0`,
      )
    if (stats.isDirectory()) {
      head('d', '')
      const names = readdirSync(path).sort(compareNames)
      for (const name of names) visit(relative === '.' ? name : `${relative}/${name}`)
    } else if (stats.isFile()) {
      head('f', String(stats.size))
      sizeBytes += stats.size
      hashFile(path, stats.size)
    } else if (stats.isSymbolicLink()) {
      head('l', readlinkSync(path))
    } else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
      // rdev in Linux's encoding of major and minor (the same on every host we run on).
      head(stats.isCharacterDevice() ? 'c' : 'b', String(stats.rdev))
    } else if (stats.isFIFO()) {
      head('p', '')
    } else {
      head('s', '') // a socket: no content, kept so the listing matches
    }
  }
  visit('.')
  return { hash: hash.digest('hex'), sizeBytes, entries }
}

const workerUrl = new URL(
  import.meta.url.endsWith('.js') ? './tree-hash-worker.js' : './tree-hash-worker.ts',
  import.meta.url,
)

/** What the worker posts back: the digest, or the error that stopped the walk. */
export type TreeHashReply =
  | { ok: true; digest: TreeDigest }
  | { ok: false; code: string | undefined; message: string }

/** The digest of the tree at `root`, computed on a worker thread. */
export function hashTree(root: string): Promise<TreeDigest> {
  return new Promise((resolve, reject) => {
    let settled = false
    const worker = new Worker(workerUrl, { workerData: { root } })
    const settle = (outcome: () => void): void => {
      if (settled) return
      settled = true
      outcome()
      void worker.terminate()
    }
    worker.once('message', (reply: TreeHashReply) =>
      settle(() => {
        if (reply.ok) resolve(reply.digest)
        else if (reply.code === undefined) reject(new Error(reply.message))
        else reject(new RuntimeError(reply.code, reply.message))
      }),
    )
    worker.once('error', (error) => settle(() => reject(error)))
    worker.once('exit', (exitCode) =>
      settle(() =>
        reject(new RuntimeError('ERR_TREE_HASH', `Hashing ${root} stopped early (worker exit ${exitCode}).`)),
      ),
    )
  })
}
