// The content-addressed image store of one host:
//
//   <dir>/images/<sha256>/rootfs         the read-only tree (an overlay lower dir)
//   <dir>/images/<sha256>/manifest.json  { name, hash, size, createdAt, parent? }
//   <dir>/tmp/                           staging; same filesystem, so commits are renames
//
// The name of an image is the hash of its tree (tree-hash.ts). The hash is
// checked whenever bytes arrive from elsewhere (importTar) and on demand
// (verify). Nothing is ever modified in place: an image is written in
// staging, hashed, then renamed into images/ in one step, so a crash leaves
// either the whole image or only staging debris (cleared on open).

import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { CommandRunner } from './command-runner.ts'
import {
  ImageHashMismatchError,
  ImageInUseError,
  ImageNotFoundError,
  InvalidSpecError,
  RuntimeError,
} from './errors.ts'
import { MOUNT_TIMEOUT_MS, unmountAll } from './mounts.ts'
import { Revert } from './revert.ts'
import { HASH_PATTERN, hashTree } from './tree-hash.ts'

export const COPY_TIMEOUT_MS = 30 * 60_000
export const TAR_TIMEOUT_MS = 30 * 60_000
/** An incoming image tar larger than this is refused (default; see ImageStoreInit). */
export const IMPORT_BYTES_MAX = 64 * 1024 ** 3
export const IMAGE_NAME_MAX = 128

export interface ImageManifest {
  name: string
  hash: string
  /** Bytes of regular file content in the tree. */
  size: number
  createdAt: string
  /** The image this one was saved from. */
  parent?: string
}

export interface ImageStoreInit {
  dir: string
  runner: CommandRunner
  /** Clock for createdAt (tests pin it). */
  now?: () => Date
  importBytesMax?: number
}

function assertHash(hash: string): void {
  if (!HASH_PATTERN.test(hash)) throw new InvalidSpecError(`"${hash}" is not an image hash (64 hex digits).`)
}

function assertImageName(name: string): void {
  if (name === '' || name.length > IMAGE_NAME_MAX || /[\0\n]/.test(name)) {
    throw new InvalidSpecError(
      `Image name "${name}" is invalid; use 1-${IMAGE_NAME_MAX} characters on one line.`,
    )
  }
}

/** Removes /etc/ssh/ssh_host_* from a tree, so that the vnodes of an image do not share host keys. */
export async function removeSshHostKeys(root: string): Promise<void> {
  const dir = join(root, 'etc/ssh')
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith('ssh_host_')) await rm(join(dir, name), { force: true })
  }
}

export class ImageStore {
  readonly dir: string
  readonly #runner: CommandRunner
  readonly #now: () => Date
  readonly #importBytesMax: number

  constructor(init: ImageStoreInit) {
    if (!init.dir.startsWith('/') || /[,:\n]/.test(init.dir)) {
      throw new InvalidSpecError(`Image store dir "${init.dir}" must be an absolute path without ',' or ':'.`)
    }
    this.dir = init.dir.replace(/\/+$/, '')
    this.#runner = init.runner
    this.#now = init.now ?? (() => new Date())
    this.#importBytesMax = init.importBytesMax ?? IMPORT_BYTES_MAX
  }

  get #imagesDir(): string {
    return join(this.dir, 'images')
  }

  get #tmpDir(): string {
    return join(this.dir, 'tmp')
  }

  /** Creates the store's directories and clears staging left by a crash. Call once before use. */
  async open(): Promise<void> {
    await mkdir(this.#imagesDir, { recursive: true })
    await rm(this.#tmpDir, { recursive: true, force: true })
    await mkdir(this.#tmpDir, { recursive: true })
  }

  /** A fresh directory in staging, on the store's filesystem; the caller removes it (commitTree moves its rootfs). */
  async createStaging(purpose: string): Promise<string> {
    const path = join(this.#tmpDir, `${purpose}-${randomBytes(6).toString('hex')}`)
    await mkdir(path, { recursive: true, mode: 0o700 })
    return path
  }

  rootfsPath(hash: string): string {
    assertHash(hash)
    return join(this.#imagesDir, hash, 'rootfs')
  }

  async get(hash: string): Promise<ImageManifest | null> {
    assertHash(hash)
    try {
      return JSON.parse(await readFile(join(this.#imagesDir, hash, 'manifest.json'), 'utf8')) as ImageManifest
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw error
    }
  }

  async #require(hash: string): Promise<ImageManifest> {
    const manifest = await this.get(hash)
    if (manifest === null) throw new ImageNotFoundError(hash)
    return manifest
  }

  async list(): Promise<ImageManifest[]> {
    const names = await readdir(this.#imagesDir).catch(() => [] as string[])
    const manifests: ImageManifest[] = []
    for (const name of names.sort()) {
      if (!HASH_PATTERN.test(name)) continue
      const manifest = await this.get(name)
      if (manifest !== null) manifests.push(manifest)
    }
    return manifests
  }

  /**
   * Moves a finished tree (which must be inside staging) into the store under
   * its hash. When the same content is already there, the tree is dropped.
   */
  async commitTree(treeDir: string, meta: { name: string; parent?: string }): Promise<ImageManifest> {
    assertImageName(meta.name)
    if (!treeDir.startsWith(`${this.#tmpDir}/`)) {
      throw new InvalidSpecError(`${treeDir} is not in the store's staging; build it in createStaging().`)
    }
    const digest = await hashTree(treeDir)
    const existing = await this.get(digest.hash)
    if (existing !== null) {
      await rm(treeDir, { recursive: true, force: true })
      return existing
    }
    const manifest: ImageManifest = {
      name: meta.name,
      hash: digest.hash,
      size: digest.sizeBytes,
      createdAt: this.#now().toISOString(),
      ...(meta.parent === undefined ? {} : { parent: meta.parent }),
    }
    await this.#commit(treeDir, manifest)
    return manifest
  }

  /** Puts a hashed tree and its manifest in place with one rename of their directory. */
  async #commit(treeDir: string, manifest: ImageManifest): Promise<void> {
    const partial = await this.createStaging(`commit-${manifest.hash.slice(0, 12)}`)
    try {
      await rename(treeDir, join(partial, 'rootfs'))
      await writeFile(join(partial, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`, {
        mode: 0o644,
      })
      await rename(partial, join(this.#imagesDir, manifest.hash))
    } catch (error) {
      await rm(partial, { recursive: true, force: true })
      if (existsSync(join(this.#imagesDir, manifest.hash, 'manifest.json'))) return // a racing commit of the same content
      throw error
    }
  }

  /** Re-hashes an image and throws ImageHashMismatchError when its tree no longer matches its name. */
  async verify(hash: string): Promise<ImageManifest> {
    const manifest = await this.#require(hash)
    const digest = await hashTree(this.rootfsPath(hash))
    if (digest.hash !== hash) throw new ImageHashMismatchError(hash, digest.hash)
    return manifest
  }

  /**
   * A new image: the parent's tree with a container's upper layer applied
   * (deleted files, opaque dirs and all), flattened into a full tree. The
   * kernel does the merging: the upper and the parent are mounted as the two
   * lower layers of a read-only overlay, and the merged view is copied. Save
   * from a stopped container: the upper must not change during the copy.
   * The vnode's SSH host keys stay with the vnode: every vnode made from the
   * image makes its own at boot (the image's rcS), as after a build.
   */
  async saveUpper(upperDir: string, parentHash: string, name: string): Promise<ImageManifest> {
    assertImageName(name)
    await this.#require(parentHash)
    if (!upperDir.startsWith('/') || /[,:\n]/.test(upperDir)) {
      throw new InvalidSpecError(`Upper dir "${upperDir}" must be an absolute path without ',' or ':'.`)
    }
    const staging = await this.createStaging('save')
    const merged = join(staging, 'merged')
    const tree = join(staging, 'rootfs')
    const revert = new Revert()
    revert.add('remove the staging dir', () => rm(staging, { recursive: true, force: true }))
    try {
      await mkdir(merged)
      await mkdir(tree)
      const options = `ro,lowerdir=${upperDir}:${this.rootfsPath(parentHash)},redirect_dir=off,index=off,metacopy=off,xino=off`
      revert.add('unmount the merged view', () => unmountAll(this.#runner, merged))
      await this.#runner.run('mount', ['-t', 'overlay', '-o', options, 'docklet-save', merged], {
        timeoutMs: MOUNT_TIMEOUT_MS,
      })
      await this.#runner.run('cp', ['-a', '--reflink=auto', `${merged}/.`, `${tree}/`], {
        timeoutMs: COPY_TIMEOUT_MS,
      })
      await unmountAll(this.#runner, merged)
      await removeSshHostKeys(tree)
      const manifest = await this.commitTree(tree, { name, parent: parentHash })
      await rm(staging, { recursive: true, force: true })
      revert.success()
      return manifest
    } catch (error) {
      return revert.fail(`Saving image ${name}`, error)
    }
  }

  /**
   * A tar of the image (manifest.json + rootfs/, numeric owners) for another
   * host. The runner buffers output, so the tar is written to staging first;
   * the file is removed once the stream closes.
   */
  async exportTar(hash: string): Promise<Readable> {
    return (await this.openTar(hash)).stream
  }

  /** exportTar with the tar's size, for a transfer that announces it (net/image-transfer.ts). */
  async openTar(hash: string): Promise<{ stream: Readable; sizeBytes: number }> {
    await this.#require(hash)
    const staging = await this.createStaging('export')
    const file = join(staging, 'image.tar')
    try {
      await this.#runner.run(
        'tar',
        [
          '-C',
          join(this.#imagesDir, hash),
          '--numeric-owner',
          '--xattrs',
          '-cf',
          file,
          'manifest.json',
          'rootfs',
        ],
        { timeoutMs: TAR_TIMEOUT_MS },
      )
    } catch (error) {
      await rm(staging, { recursive: true, force: true })
      throw error
    }
    let sizeBytes: number
    try {
      sizeBytes = (await stat(file)).size
    } catch (error) {
      await rm(staging, { recursive: true, force: true })
      throw error
    }
    const stream = createReadStream(file)
    stream.once('close', () => {
      void rm(staging, { recursive: true, force: true })
    })
    return { stream, sizeBytes }
  }

  /**
   * Stores an image received from another host, accepting it only when its
   * tree hashes to `expectedHash` (the hash the allocation state records).
   */
  async importTar(stream: Readable, expectedHash: string): Promise<ImageManifest> {
    assertHash(expectedHash)
    const existing = await this.get(expectedHash)
    if (existing !== null) {
      stream.destroy() // no need for the bytes; a network transfer stops at once
      return existing
    }
    const staging = await this.createStaging('import')
    const revert = new Revert()
    revert.add('remove the staging dir', () => rm(staging, { recursive: true, force: true }))
    try {
      const file = join(staging, 'image.tar')
      let bytes = 0
      const limit = this.#importBytesMax
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          bytes += chunk.length
          if (bytes > limit) {
            callback(
              new RuntimeError('ERR_IMAGE_TOO_LARGE', `The incoming image is larger than ${limit} bytes.`),
            )
          } else callback(null, chunk)
        },
      })
      await pipeline(stream, counter, createWriteStream(file, { mode: 0o600 }))
      const extracted = join(staging, 'image')
      await mkdir(extracted)
      await this.#runner.run(
        'tar',
        ['-C', extracted, '--numeric-owner', '--xattrs', '--same-permissions', '-xf', file],
        { timeoutMs: TAR_TIMEOUT_MS },
      )
      await rm(file)
      const manifest = JSON.parse(await readFile(join(extracted, 'manifest.json'), 'utf8')) as ImageManifest
      const digest = await hashTree(join(extracted, 'rootfs'))
      if (digest.hash !== expectedHash) throw new ImageHashMismatchError(expectedHash, digest.hash)
      const stored: ImageManifest = {
        name: String(manifest.name),
        hash: expectedHash,
        size: digest.sizeBytes,
        createdAt: String(manifest.createdAt),
        ...(typeof manifest.parent === 'string' ? { parent: manifest.parent } : {}),
      }
      await this.#commit(join(extracted, 'rootfs'), stored)
      await rm(staging, { recursive: true, force: true })
      revert.success()
      return stored
    } catch (error) {
      return revert.fail(`Importing image ${expectedHash}`, error)
    }
  }

  /** Removes an image; refused while an overlay on this host uses it as a lower layer. Idempotent. */
  async remove(hash: string): Promise<void> {
    const rootfs = this.rootfsPath(hash)
    const mounts = await readFile('/proc/self/mounts', 'utf8')
    if (mounts.split('\n').some((line) => line.includes(` overlay `) && line.includes(rootfs))) {
      throw new ImageInUseError(hash, 'a container on this host is using it; destroy the container first')
    }
    const gone = join(this.#tmpDir, `removed-${hash.slice(0, 12)}-${randomBytes(4).toString('hex')}`)
    try {
      await rename(join(this.#imagesDir, hash), gone) // the image disappears at once, even if rm is slow
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
      throw error
    }
    await rm(gone, { recursive: true, force: true })
  }
}
