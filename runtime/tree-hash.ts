// The content hash of an image: sha256 over a deterministic serialization of
// its tree. Entries are visited in byte order of their names; each adds a
// record "type NUL path NUL mode NUL uid NUL gid NUL detail NUL" (detail: size
// for files, followed by the bytes; target for symlinks; rdev for devices).
// mtimes, inode numbers and hard links are left out, so the same tree copied,
// extracted or rebuilt hashes the same; ownership stays in, since a tree with
// different owners behaves differently in a container. Extended attributes
// are not hashed (nor carried by saves and transfers beyond what tar keeps).
// Memory is bounded: files are streamed, one directory listing at a time.

import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { lstat, readdir, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { RuntimeError } from './errors.ts'

/** A tree with more entries than this is refused (a runaway build, or not an image). */
export const TREE_ENTRIES_MAX = 5_000_000
export const HASH_PATTERN = /^[0-9a-f]{64}$/

export interface TreeDigest {
  hash: string
  /** Sum of regular file sizes. */
  sizeBytes: number
  entries: number
}

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

async function hashFile(hash: Hash, path: string, expectedBytes: number): Promise<void> {
  let read = 0
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    read += (chunk as Buffer).length
    hash.update(chunk as Buffer)
  }
  if (read !== expectedBytes) {
    throw new RuntimeError('ERR_TREE_CHANGED', `${path} changed while it was hashed; hash the image again.`)
  }
}

export async function hashTree(root: string): Promise<TreeDigest> {
  const hash = createHash('sha256')
  let sizeBytes = 0
  let entries = 0
  const visit = async (relative: string): Promise<void> => {
    entries += 1
    if (entries > TREE_ENTRIES_MAX) {
      throw new RuntimeError('ERR_TREE_TOO_LARGE', `${root} holds more than ${TREE_ENTRIES_MAX} entries.`)
    }
    const path = relative === '.' ? root : join(root, relative)
    const stats = await lstat(path)
    const head = (type: string, detail: string) =>
      hash.update(
        `${type}\0${relative}\0${(stats.mode & 0o7777).toString(8)}\0${stats.uid}\0${stats.gid}\0${detail}\0`,
      )
    if (stats.isDirectory()) {
      head('d', '')
      const names = (await readdir(path)).sort(compareNames)
      for (const name of names) await visit(relative === '.' ? name : `${relative}/${name}`)
    } else if (stats.isFile()) {
      head('f', String(stats.size))
      sizeBytes += stats.size
      await hashFile(hash, path, stats.size)
    } else if (stats.isSymbolicLink()) {
      head('l', await readlink(path))
    } else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
      // rdev in Linux's encoding of major and minor (the same on every host we run on).
      head(stats.isCharacterDevice() ? 'c' : 'b', String(stats.rdev))
    } else if (stats.isFIFO()) {
      head('p', '')
    } else {
      head('s', '') // a socket: no content, kept so the listing matches
    }
  }
  await visit('.')
  return { hash: hash.digest('hex'), sizeBytes, entries }
}
