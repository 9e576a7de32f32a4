// Image transfer over real libp2p nodes (TCP + noise + yamux on 127.0.0.1,
// port 0): a host fetches an image from a peer's real ImageStore (a small
// tree committed with commitTree, holding a 24 MiB file so the bytes cross
// several yamux windows) into its own store, which verifies it. Refusals
// arrive as clear errors before any byte (unknown hash, unauthorised peer,
// announced size over the limit, a peer that never gets the image ready); a
// transfer that breaks off or carries other bytes leaves no image and no
// staging dir behind. Backpressure is checked with a source that counts
// what it produced while the receiver does not read. Needs root (image
// trees keep their owners); nodes, services and the temp dir are removed in
// afterEach/afterAll.

import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import type { Libp2p } from '@libp2p/interface'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  createLibp2pHost,
  generateIdentity,
  type ImageOpen,
  ImageTransferError,
  ImageTransferService,
  type ImageTransferServiceOptions,
} from '../../net/index.ts'
import { type ImageManifest, ImageStore } from '../../runtime/index.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'

const runner = new ExecaCommandRunner()
const FETCH_TIMEOUT_MS = 20_000
const BIG_FILE_BYTES = 24 * 1024 * 1024

interface Host {
  node: Libp2p
  images: ImageTransferService
  id: string
  addr: string
}

const nodes = new Set<Libp2p>()
const services = new Set<ImageTransferService>()
let root = ''
let serverStore: ImageStore
let image: ImageManifest
let other: ImageManifest

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'docklet-image-transfer-'))
  serverStore = new ImageStore({ dir: join(root, 'server'), runner })
  await serverStore.open()
  image = await serverStore.commitTree(
    await makeTree(serverStore, { 'etc/motd': 'hello\n', 'data/big': randomBytes(BIG_FILE_BYTES) }),
    { name: 'small' },
  )
  other = await serverStore.commitTree(await makeTree(serverStore, { 'etc/motd': 'other\n' }), {
    name: 'other',
  })
})

afterAll(async () => {
  if (root !== '') await rm(root, { recursive: true, force: true })
})

afterEach(async () => {
  for (const service of services) await service.stop()
  services.clear()
  for (const node of nodes) await node.stop()
  nodes.clear()
})

async function startHost(options: ImageTransferServiceOptions = {}): Promise<Host> {
  const node = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
  nodes.add(node)
  const images = new ImageTransferService(node, options)
  services.add(images)
  if (options.open !== undefined) await images.start()
  const addr = node
    .getMultiaddrs()[0]!
    .toString()
    .replace(/\/p2p\/.*$/, '')
  return { node, images, id: node.peerId.toString(), addr }
}

/** Serves the server store's images to every peer in `allowed` (all when omitted). */
function storeOpen(store: ImageStore): ImageOpen {
  return async (hash) => ((await store.get(hash)) === null ? null : store.openTar(hash))
}

async function freshStore(name: string): Promise<ImageStore> {
  const store = new ImageStore({ dir: join(root, name), runner })
  await store.open()
  return store
}

async function expectNothingLeft(store: ImageStore): Promise<void> {
  expect(await store.list()).toEqual([])
  expect(await readdir(join(store.dir, 'tmp'))).toEqual([])
}

async function rejectionOf(promise: Promise<unknown>): Promise<ImageTransferError> {
  try {
    await promise
  } catch (err) {
    expect(err).toBeInstanceOf(ImageTransferError)
    return err as ImageTransferError
  }
  throw new Error('expected a rejection')
}

describe('ImageTransferService', () => {
  it('fetches an image into another store, which verifies it, reporting progress up to the announced size', async () => {
    const server = await startHost({ open: storeOpen(serverStore), authorize: () => true })
    const client = await startHost()
    const store = await freshStore('fetch-ok')
    const progress: Array<{ bytes: number; totalBytes?: number }> = []
    const fetched = await client.images.fetch(server.addr, image.hash, {
      timeoutMs: FETCH_TIMEOUT_MS,
      onProgress: (p) => progress.push(p),
    })
    expect(fetched.peerId).toBe(server.id)
    expect(fetched.sizeBytes).toBeGreaterThan(BIG_FILE_BYTES)
    const imported = await store.importTar(fetched.stream, image.hash)
    expect(imported).toEqual(image)
    await store.verify(image.hash)
    expect(progress.length).toBeGreaterThan(1)
    expect(progress.at(-1)).toEqual({ bytes: fetched.sizeBytes, totalBytes: fetched.sizeBytes })
    expect(progress.every((p, i) => i === 0 || p.bytes > progress[i - 1]!.bytes)).toBe(true)
    expect(await readdir(join(store.dir, 'tmp'))).toEqual([])
  })

  it('says the peer lacks an image it does not hold', async () => {
    const server = await startHost({ open: storeOpen(serverStore), authorize: () => true })
    const client = await startHost()
    const error = await rejectionOf(
      client.images.fetch(server.addr, 'a'.repeat(64), { timeoutMs: FETCH_TIMEOUT_MS }),
    )
    expect(error.code).toBe('ERR_IMAGE_NOT_FOUND')
    expect(error.message).toContain('does not have image')
  })

  it('refuses a peer that authorize turns down, without opening the image', async () => {
    let opened = 0
    const client = await startHost()
    const server = await startHost({
      open: async (hash) => {
        opened += 1
        return serverStore.openTar(hash)
      },
      authorize: (peerId) => peerId !== client.id,
    })
    const error = await rejectionOf(
      client.images.fetch(server.addr, image.hash, { timeoutMs: FETCH_TIMEOUT_MS }),
    )
    expect(error.code).toBe('ERR_IMAGE_FORBIDDEN')
    expect(error.message).toContain(client.id)
    expect(opened).toBe(0)
  })

  it('refuses an image whose announced size is over bytesMax before any byte of it arrives', async () => {
    const server = await startHost({ open: storeOpen(serverStore), authorize: () => true })
    const client = await startHost()
    const progress: number[] = []
    const error = await rejectionOf(
      client.images.fetch(server.addr, image.hash, {
        timeoutMs: FETCH_TIMEOUT_MS,
        bytesMax: 1024 * 1024,
        onProgress: (p) => progress.push(p.bytes),
      }),
    )
    expect(error.code).toBe('ERR_IMAGE_TOO_LARGE')
    expect(progress).toEqual([])
  })

  it('fails with ERR_IMAGE_TIMEOUT when the peer does not get the image ready within the idle timeout', async () => {
    let released = false
    const server = await startHost({
      open: (_hash, context) =>
        new Promise((resolve) => {
          context.signal.addEventListener('abort', () => {
            released = true
            resolve(null)
          })
        }),
      authorize: () => true,
    })
    const client = await startHost()
    const error = await rejectionOf(
      client.images.fetch(server.addr, image.hash, { timeoutMs: FETCH_TIMEOUT_MS, idleTimeoutMs: 300 }),
    )
    expect(error.code).toBe('ERR_IMAGE_TIMEOUT')
    await waitFor(() => released)
  })

  it('leaves no image and no staging dir when the transfer breaks off part-way', async () => {
    const tar = await readAll((await serverStore.openTar(image.hash)).stream)
    const server = await startHost({
      // Half of the tar, then the source fails: the server resets the stream.
      open: async () => ({
        stream: Readable.from(
          (async function* () {
            yield tar.subarray(0, tar.byteLength / 2)
            throw new Error('disk read error')
          })(),
        ),
        sizeBytes: tar.byteLength,
      }),
      authorize: () => true,
    })
    const client = await startHost()
    const store = await freshStore('fetch-truncated')
    const fetched = await client.images.fetch(server.addr, image.hash, { timeoutMs: FETCH_TIMEOUT_MS })
    await expect(store.importTar(fetched.stream, image.hash)).rejects.toMatchObject({
      code: 'ERR_IMAGE_TRUNCATED',
    })
    await expectNothingLeft(store)
  })

  it('leaves no image and no staging dir when the bytes are another image (hash mismatch from importTar)', async () => {
    const server = await startHost({
      open: async () => serverStore.openTar(other.hash),
      authorize: () => true,
    })
    const client = await startHost()
    const store = await freshStore('fetch-mismatch')
    const fetched = await client.images.fetch(server.addr, image.hash, { timeoutMs: FETCH_TIMEOUT_MS })
    await expect(store.importTar(fetched.stream, image.hash)).rejects.toMatchObject({
      code: 'ERR_IMAGE_HASH_MISMATCH',
    })
    await expectNothingLeft(store)
  })

  it('stops the sender while the receiver does not read (backpressure), then delivers every byte', async () => {
    const totalBytes = 64 * 1024 * 1024
    const chunk = Buffer.alloc(64 * 1024, 7)
    let produced = 0
    const server = await startHost({
      open: async () => ({
        stream: Readable.from(
          (function* () {
            while (produced < totalBytes) {
              produced += chunk.byteLength
              yield chunk
            }
          })(),
        ),
        sizeBytes: totalBytes,
      }),
      authorize: () => true,
    })
    const client = await startHost()
    const fetched = await client.images.fetch(server.addr, image.hash, { timeoutMs: FETCH_TIMEOUT_MS })
    await new Promise((resolve) => setTimeout(resolve, 1000))
    // The yamux window (at most 16 MiB) plus the buffers on the way; far from all of it.
    expect(produced).toBeLessThan(24 * 1024 * 1024)
    let received = 0
    for await (const piece of fetched.stream) received += (piece as Buffer).byteLength
    expect(received).toBe(totalBytes)
  })

  it('cancels the transfer on the server when the receiver destroys the stream', async () => {
    const events: string[] = []
    const server = await startHost({
      open: storeOpen(serverStore),
      authorize: () => true,
      onEvent: (event) => events.push(event.type),
    })
    const client = await startHost()
    const fetched = await client.images.fetch(server.addr, image.hash, { timeoutMs: FETCH_TIMEOUT_MS })
    fetched.stream.destroy()
    await waitFor(() => events.includes('send-failed'))
    expect(events).not.toContain('served')
  })
})

/** A small tree in the store's staging, from path → content. */
async function makeTree(store: ImageStore, files: Record<string, string | Buffer>): Promise<string> {
  const tree = join(await store.createStaging('tree'), 'rootfs')
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(tree, path, '..'), { recursive: true })
    await writeFile(join(tree, path), content)
  }
  return tree
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
