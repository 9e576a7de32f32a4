// The two halves of moving an image tar between the CLI and a node, without
// a cluster:
// - the node's reading of an upload's head (src/node/vnode-service.ts):
//   a real image tar, made by ImageStore.openTar with GNU tar (pax headers
//   and all), fed in 100-byte chunks, gives its manifest's hash and then
//   exactly the same bytes; a gzip file, a non-tar, a tar that does not
//   start with manifest.json and a truncated upload are refused with
//   sentences;
// - the CLI's streaming control calls (src/control/control-client.ts
//   callControlStream) against the real API (local-admin mode, as on the
//   control socket) on a unix socket in a temp dir, over a fake backend:
//   an upload of a file, a download into a file, refusals as ControlError
//   with the node's code and sentence, and no file (or partial file) left
//   behind by a failed download.
// Temp dirs and the listener are removed after each test.

import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ImageStore } from '../../runtime/index.ts'
import { apiFastifyOptions, buildApi } from '../../src/api/api-server.ts'
import { ControlError, callControlStream } from '../../src/control/control-client.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { imageTarManifest, readImageTarHead } from '../../src/node/vnode-service.ts'
import { type FakeBackend, seededBackend } from './api-fixture.ts'

let dir = ''

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'docklet-tar-'))
})

afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

function inChunks(bytes: Buffer, sizeBytes: number): Readable {
  const chunks: Buffer[] = []
  for (let at = 0; at < bytes.length; at += sizeBytes) chunks.push(bytes.subarray(at, at + sizeBytes))
  return Readable.from(chunks)
}

/** A small image, stored and exported the way a node does it. */
async function imageTar(): Promise<{ hash: string; bytes: Buffer }> {
  const store = new ImageStore({ dir: join(dir, 'store'), runner: new ExecaCommandRunner() })
  await store.open()
  const tree = join(await store.createStaging('test'), 'rootfs')
  await mkdir(join(tree, 'etc'), { recursive: true })
  await writeFile(join(tree, 'etc/hostname'), 'tiny\n')
  await writeFile(join(tree, 'data.bin'), Buffer.alloc(3000, 7))
  const manifest = await store.commitTree(tree, { name: 'tiny' })
  return { hash: manifest.hash, bytes: await collect(await store.exportTar(manifest.hash)) }
}

describe('reading the head of an uploaded image tar', () => {
  it("finds the manifest's hash in a real image tar fed in 100-byte chunks, then yields the same bytes", async () => {
    const { hash, bytes } = await imageTar()
    expect(imageTarManifest(bytes)).toEqual({ name: 'tiny', hash })
    const { manifest, stream } = await readImageTarHead(inChunks(bytes, 100))
    expect(manifest).toEqual({ name: 'tiny', hash })
    const replayed = await collect(stream)
    expect(replayed.length).toBe(bytes.length)
    expect(replayed.equals(bytes)).toBe(true)
  })

  it('asks for more bytes while the head is too short to tell', async () => {
    const { bytes } = await imageTar()
    expect(imageTarManifest(bytes.subarray(0, 100))).toBeNull()
    expect(imageTarManifest(bytes.subarray(0, 700))).toBeNull()
  })

  it('refuses a gzip file, something that is not a tar, and a tar that does not start with manifest.json', async () => {
    const gzip = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(2000)])
    await expect(readImageTarHead(Readable.from([gzip]))).rejects.toThrow(/gzip-compressed/)
    await expect(readImageTarHead(Readable.from([Buffer.alloc(2048, 0x41)]))).rejects.toThrow(
      'The upload is not a tar.',
    )
    const tree = join(dir, 'other')
    await mkdir(join(tree, 'rootfs'), { recursive: true })
    await writeFile(join(tree, 'rootfs/a'), 'a')
    await new ExecaCommandRunner().run('tar', ['-C', tree, '-cf', join(dir, 'other.tar'), 'rootfs'], {
      timeoutMs: 10_000,
    })
    const refused = readImageTarHead(Readable.from([readFileSync(join(dir, 'other.tar'))]))
    await expect(refused).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
      message: expect.stringContaining('The tar starts with "rootfs/" instead of manifest.json.'),
    })
  })

  it('refuses an upload that ends before its manifest does', async () => {
    const { bytes } = await imageTar()
    await expect(readImageTarHead(inChunks(bytes.subarray(0, 600), 50))).rejects.toThrow(
      'The upload ended before the manifest.json of the tar did.',
    )
  })
})

describe('streaming control calls', () => {
  let app: FastifyInstance
  let backend: FakeBackend
  let socket = ''
  const uploads: Buffer[] = []
  const download = Buffer.alloc(300_000, 9)

  beforeEach(async () => {
    uploads.length = 0
    backend = Object.assign(await seededBackend(), {
      async importImage(tar: Readable, image: { owner: string }) {
        const bytes = await collect(tar)
        uploads.push(bytes)
        const id = createHash('sha256').update(bytes).digest('hex')
        backend.applyNow({
          type: 'image.register',
          at: 0,
          id,
          name: 'uploaded',
          owner: image.owner,
          sizeBytes: bytes.length,
          host: backend.nodeId,
        })
        return { id, registered: true }
      },
      async exportImage() {
        return { stream: inChunks(download, 65_536), sizeBytes: download.length }
      },
    })
    app = Fastify(apiFastifyOptions)
    await app.register(buildApi({ backend, mode: 'local-admin' }))
    socket = join(dir, 'docklet.sock')
    await app.listen({ path: socket })
  })

  afterEach(async () => {
    await app.close()
  })

  it('sends a file as the body and answers the status and JSON of the node', async () => {
    const file = join(dir, 'image.tar')
    const body = Buffer.alloc(1_000_000, 3)
    writeFileSync(file, body)
    const answer = await callControlStream<{ id: string; owner: string }>(socket, {
      method: 'POST',
      path: '/api/v1/images/import',
      bodyFile: { path: file, contentType: 'application/x-tar' },
    })
    expect(answer.status).toBe(201)
    expect(answer.json).toMatchObject({ owner: 'admin', name: 'uploaded' })
    expect(uploads).toHaveLength(1)
    expect(uploads[0]!.equals(body)).toBe(true)
  })

  it("writes a download to the file, and a refusal is a ControlError with the node's code and sentence", async () => {
    const file = join(dir, 'busybox.tar')
    const answer = await callControlStream(socket, {
      method: 'GET',
      path: '/api/v1/images/busybox/export',
      responseFile: file,
    })
    expect(answer).toEqual({ status: 200, json: null, bytes: download.length })
    expect(readFileSync(file).equals(download)).toBe(true)

    const missing = join(dir, 'missing.tar')
    const refused = callControlStream(socket, {
      method: 'GET',
      path: '/api/v1/images/nothing/export',
      responseFile: missing,
    })
    await expect(refused).rejects.toBeInstanceOf(ControlError)
    await expect(refused).rejects.toMatchObject({
      code: 'ERR_IMAGE_NOT_FOUND',
      status: 404,
      message: 'admin has no image nothing; `GET /api/v1/images` lists them.',
    })
    expect(existsSync(missing)).toBe(false)
    expect(readdirSync(dir).filter((name) => name.includes('partial'))).toEqual([])
  })

  it('refuses an upload for a user acting through X-Docklet-User with the 403 the node answered', async () => {
    const file = join(dir, 'image.tar')
    writeFileSync(file, Buffer.alloc(500_000, 4))
    await expect(
      callControlStream(socket, {
        method: 'POST',
        path: '/api/v1/images/import',
        bodyFile: { path: file, contentType: 'application/x-tar' },
        headers: { 'x-docklet-user': 'alice' },
      }),
    ).rejects.toMatchObject({ code: 'ERR_FORBIDDEN', status: 403 })
    expect(uploads).toEqual([])
  })

  it('says no node runs when nothing listens on the socket', async () => {
    await expect(
      callControlStream(join(dir, 'nobody.sock'), { method: 'GET', path: '/v1/health' }),
    ).rejects.toMatchObject({ code: 'ERR_NODE_NOT_RUNNING' })
  })
})
