// The Debian workspace image for tests, built once into a cache shared by
// every test file and every run: DOCKLET_TEST_DEBIAN_CACHE (default
// /var/cache/docklet-test) holds debian-image/ (an ImageStore) and
// debian-packages/ (the .deb cache that makes a rebuild quicker). Building
// takes minutes and needs the Debian archive, so the cache is reused as long
// as its image has every package the builder installs now (a package added
// to DEBIAN_PACKAGES makes it stale); DOCKLET_TEST_DEBIAN_REBUILD=1 builds it
// again once per run. A lock directory makes concurrent test files wait for
// one build instead of racing; a lock whose process died is taken over.

import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { DEBIAN_PACKAGES, ImageBuilder, type ImageManifest, ImageStore } from '../../runtime/index.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'

export const debianCacheDir = process.env.DOCKLET_TEST_DEBIAN_CACHE ?? '/var/cache/docklet-test'
export const debianStoreDir = join(debianCacheDir, 'debian-image')
const packageCacheDir = join(debianCacheDir, 'debian-packages')
const lockDir = join(debianCacheDir, 'debian-image.lock')
/** A build (debootstrap and apt from the archive) must finish within this; waiting for another's too. */
export const DEBIAN_BUILD_TIMEOUT_MS = 60 * 60_000
const LOCK_POLL_MS = 2_000
const IMAGE_NAME = 'debian'
/** When this worker started: a cache built after it came from this run (another file's rebuild). */
const processStartMs = Date.now() - process.uptime() * 1000

export interface CachedDebianImage {
  /** The newest cached Debian image, or null when there is none. */
  manifest: ImageManifest | null
  /** Why that image cannot be used as it is ('' when it can). */
  stale: string
}

function installedPackages(rootfs: string): Set<string> {
  const installed = new Set<string>()
  let status = ''
  try {
    status = readFileSync(join(rootfs, 'var/lib/dpkg/status'), 'utf8')
  } catch {
    return installed
  }
  for (const paragraph of status.split(/\n\n+/)) {
    const name = /^Package: (\S+)$/m.exec(paragraph)?.[1]
    if (name !== undefined && /^Status: install ok installed$/m.test(paragraph)) installed.add(name)
  }
  return installed
}

/** The cached image and whether it is current; reads files only (usable while tests are collected). */
export function cachedDebianImage(): CachedDebianImage {
  const imagesDir = join(debianStoreDir, 'images')
  let names: string[] = []
  try {
    names = readdirSync(imagesDir)
  } catch {
    return { manifest: null, stale: `there is no cached Debian image in ${debianStoreDir}` }
  }
  const manifests: ImageManifest[] = []
  for (const name of names) {
    try {
      const manifest = JSON.parse(
        readFileSync(join(imagesDir, name, 'manifest.json'), 'utf8'),
      ) as ImageManifest
      if (manifest.name === IMAGE_NAME && manifest.hash === name) manifests.push(manifest)
    } catch {}
  }
  const manifest = manifests.sort((a, b) => a.createdAt.localeCompare(b.createdAt)).at(-1) ?? null
  if (manifest === null)
    return { manifest: null, stale: `there is no cached Debian image in ${debianStoreDir}` }
  const installed = installedPackages(join(imagesDir, manifest.hash, 'rootfs'))
  const lacking = DEBIAN_PACKAGES.filter((name) => !installed.has(name))
  return {
    manifest,
    stale:
      lacking.length === 0
        ? ''
        : `the cached Debian image ${manifest.hash.slice(0, 12)} lacks ${lacking.join(', ')} (the builder installs more now)`,
  }
}

function rebuildWanted(manifest: ImageManifest | null): boolean {
  if (process.env.DOCKLET_TEST_DEBIAN_REBUILD !== '1' || manifest === null) return false
  // Rebuilt by another test file of this run already: that one is fresh.
  return Date.parse(manifest.createdAt) < processStartMs
}

export interface DebianImageVerdict {
  /** 'cache': use it as it is; 'build': build it first (minutes); 'skip': neither. */
  action: 'cache' | 'build' | 'skip'
  /** Why the image is built or the test skipped. */
  reason: string
}

/**
 * What a test that needs the image does: use the cache; build it when it is
 * missing or stale under CI=true or DOCKLET_TEST_DEBIAN_IMAGE=1 (or with
 * DOCKLET_TEST_DEBIAN_REBUILD=1); else skip, saying why (printed).
 */
export function debianImageVerdict(): DebianImageVerdict {
  const cached = cachedDebianImage()
  if (rebuildWanted(cached.manifest))
    return { action: 'build', reason: 'DOCKLET_TEST_DEBIAN_REBUILD=1 asks for a fresh build' }
  if (cached.manifest !== null && cached.stale === '') return { action: 'cache', reason: '' }
  if (process.env.CI === 'true' || process.env.DOCKLET_TEST_DEBIAN_IMAGE === '1')
    return { action: 'build', reason: cached.stale }
  const reason = `${cached.stale}; build it (4-12 minutes, from the Debian archive) by running with DOCKLET_TEST_DEBIAN_IMAGE=1`
  console.warn(`Skipping: ${reason}.`)
  return { action: 'skip', reason }
}

function ownerAlive(): boolean {
  try {
    const pid = Number.parseInt(readFileSync(join(lockDir, 'pid'), 'utf8'), 10)
    if (!(pid > 0)) return false
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Runs `work` holding the cache's lock (waiting for another process's build to finish first). */
async function withCacheLock<T>(work: () => Promise<T>): Promise<T> {
  mkdirSync(debianCacheDir, { recursive: true })
  const deadline = Date.now() + DEBIAN_BUILD_TIMEOUT_MS
  for (;;) {
    try {
      mkdirSync(lockDir)
      writeFileSync(join(lockDir, 'pid'), `${process.pid}\n`)
      break
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    // A lock without a live owner (a killed run, or one that had not written its pid yet and died) is taken over.
    if (!ownerAlive() && existsSync(lockDir)) {
      await new Promise((done) => setTimeout(done, 200))
      if (!ownerAlive()) rmSync(lockDir, { recursive: true, force: true })
      continue
    }
    if (Date.now() > deadline)
      throw new Error(`Another process held ${lockDir} for more than ${DEBIAN_BUILD_TIMEOUT_MS} ms.`)
    await new Promise((done) => setTimeout(done, LOCK_POLL_MS))
  }
  try {
    return await work()
  } finally {
    rmSync(lockDir, { recursive: true, force: true })
  }
}

export interface DebianImage {
  store: ImageStore
  manifest: ImageManifest
  /** Built by this call (false: taken from the cache). */
  built: boolean
  buildSeconds: number
}

/**
 * The cached Debian image, built first when it is missing, stale, or a
 * rebuild was asked for (older builds are removed: the cache keeps one).
 */
export async function ensureDebianImage(
  options: { onProgress?: (line: string) => void } = {},
): Promise<DebianImage> {
  const runner = new ExecaCommandRunner()
  const store = new ImageStore({ dir: debianStoreDir, runner })
  return withCacheLock(async () => {
    // Checked again under the lock: another test file may have built it while this one waited.
    const cached = cachedDebianImage()
    if (cached.manifest !== null && cached.stale === '' && !rebuildWanted(cached.manifest))
      return { store, manifest: cached.manifest, built: false, buildSeconds: 0 }
    await store.open()
    const startedMs = Date.now()
    const manifest = await new ImageBuilder({ store, runner }).buildDebian({
      name: IMAGE_NAME,
      packageCacheDir,
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    })
    for (const old of await store.list()) {
      if (old.name === IMAGE_NAME && old.hash !== manifest.hash) await store.remove(old.hash)
    }
    return { store, manifest, built: true, buildSeconds: Math.round((Date.now() - startedMs) / 1000) }
  })
}

/** Writes the image's tar (what `docklet image export` makes) to `file`. */
export async function writeDebianImageTar(image: DebianImage, file: string): Promise<void> {
  await withCacheLock(async () => {
    await pipeline(await image.store.exportTar(image.manifest.hash), createWriteStream(file, { mode: 0o600 }))
  })
}
