// The image export and import routes in fastify inject(), over the fake
// backend of api-fixture.ts extended with importImage/exportImage: the
// fake's import reads the whole body and registers it under the sha256 of
// its bytes, its export answers a known byte pattern. Checks who may call
// each route (import: admin only, refused before the body is read; export:
// owner or admin, 404/403 like the other image routes), that the import
// body is streamed past the API's 64 KiB JSON body limit, what the query
// string sets, 201 for a new image and 200 for one the cluster had, and the
// sentences for a JSON body and an oversized declared length.

import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { IMPORT_BYTES_MAX } from '../../runtime/index.ts'
import type { ApiBackend } from '../../src/api/api-backend.ts'
import { apiBodyBytesMax } from '../../src/api/api-server.ts'
import type { ImageVisibility } from '../../src/state/vcluster-state.ts'
import {
  BUSYBOX,
  errorOf,
  type FakeBackend,
  portal,
  type Session,
  seededBackend,
  send,
  sessionFor,
} from './api-fixture.ts'

/** A tar-sized body: bigger than the API's JSON body limit, with a pattern a truncation would break. */
function payload(sizeBytes: number, seed: number): Buffer {
  const bytes = Buffer.alloc(sizeBytes)
  for (let i = 0; i < sizeBytes; i++) bytes[i] = (i * 31 + seed) & 0xff
  return bytes
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex')
}

interface ImportCall {
  bytes: Buffer
  image: { name?: string; owner: string; description: string; visibility: ImageVisibility }
}

type TransferBackend = FakeBackend &
  Required<Pick<ApiBackend, 'importImage' | 'exportImage'>> & { imports: ImportCall[]; exports: string[] }

/** The seeded fake, plus the two transfer methods, which record their calls. */
function withTransfer(fake: FakeBackend): TransferBackend {
  const imports: ImportCall[] = []
  const exports: string[] = []
  return Object.assign(fake, {
    imports,
    exports,
    async importImage(tar: Readable, image: ImportCall['image']) {
      const chunks: Buffer[] = []
      for await (const chunk of tar) chunks.push(chunk as Buffer)
      const bytes = Buffer.concat(chunks)
      imports.push({ bytes, image })
      const id = sha256(bytes)
      if (fake.state.view.images[id] !== undefined) {
        fake.applyNow({ type: 'image.held', at: 0, hash: id, host: fake.nodeId })
        return { id, registered: false }
      }
      fake.applyNow({
        type: 'image.register',
        at: 0,
        id,
        name: image.name ?? 'from-manifest',
        owner: image.owner,
        visibility: image.visibility,
        description: image.description,
        sizeBytes: bytes.length,
        host: fake.nodeId,
      })
      return { id, registered: true }
    },
    async exportImage(id: string) {
      exports.push(id)
      const bytes = exportBytes(id)
      // Several chunks, as a file stream would give them.
      const chunks = [bytes.subarray(0, 70_000), bytes.subarray(70_000)]
      return { stream: Readable.from(chunks), sizeBytes: bytes.length }
    },
  })
}

function exportBytes(id: string): Buffer {
  return payload(200_000, id.charCodeAt(0))
}

let backend: TransferBackend
let app: ReturnType<typeof portal>
let alice: Session
let bob: Session
let admin: Session

beforeEach(async () => {
  backend = withTransfer(await seededBackend())
  app = portal(backend)
  alice = sessionFor(backend, 'alice')
  bob = sessionFor(backend, 'bob')
  admin = sessionFor(backend, 'admin')
})

afterEach(async () => {
  await app.close()
})

const tarHeaders = { 'content-type': 'application/x-tar' }

function importAs(session: Session, body: Buffer, query = '') {
  return send(app, session, {
    method: 'POST',
    url: `/api/v1/images/import${query}`,
    headers: tarHeaders,
    payload: body,
  })
}

describe('POST /api/v1/images/import', () => {
  it('streams a tar larger than the API body limit to the backend and registers a private image of the admin', async () => {
    const body = payload(apiBodyBytesMax * 4, 7)
    const response = await importAs(admin, body, '?name=lab&description=Lab%20tools')
    expect(response.statusCode, response.body).toBe(201)
    expect(response.json()).toMatchObject({
      id: sha256(body),
      name: 'lab',
      owner: 'admin',
      visibility: 'private',
      description: 'Lab tools',
      hosts: ['node-a'],
    })
    expect(backend.imports).toHaveLength(1)
    expect(backend.imports[0]!.bytes.equals(body)).toBe(true)
    expect(backend.imports[0]!.image).toEqual({
      name: 'lab',
      owner: 'admin',
      description: 'Lab tools',
      visibility: 'private',
    })
  })

  it('makes the image public with public=true and leaves the name to the manifest when none is given', async () => {
    const response = await importAs(admin, payload(1000, 1), '?public=true')
    expect(response.statusCode, response.body).toBe(201)
    expect(response.json()).toMatchObject({ name: 'from-manifest', visibility: 'public' })
    expect(backend.imports[0]!.image).toEqual({ owner: 'admin', description: '', visibility: 'public' })
    const seen = await send(app, bob, { method: 'GET', url: '/api/v1/images' })
    expect(seen.json().images.map((i: { name: string }) => i.name)).toContain('from-manifest')
  })

  it('answers 200 with the image when the cluster has it already, now held by this node', async () => {
    const body = payload(5000, 2)
    expect((await importAs(admin, body, '?name=once')).statusCode).toBe(201)
    const again = await importAs(admin, body, '?name=twice')
    expect(again.statusCode, again.body).toBe(200)
    expect(again.json()).toMatchObject({ id: sha256(body), name: 'once', hosts: ['node-a'] })
    expect(Object.values(backend.state.view.images).filter((i) => i.id === sha256(body))).toHaveLength(1)
  })

  it('refuses a user with 403 before reading the body', async () => {
    const response = await importAs(alice, payload(1000, 3))
    expect(errorOf(response)).toMatchObject({ status: 403, code: 'ERR_FORBIDDEN' })
    expect(backend.imports).toEqual([])
  })

  it('refuses a JSON body with a sentence asking for the tar', async () => {
    const response = await send(app, admin, { method: 'POST', url: '/api/v1/images/import', payload: {} })
    expect(errorOf(response)).toMatchObject({ status: 400, code: 'ERR_BAD_REQUEST' })
    expect(errorOf(response).message).toContain('Content-Type: application/x-tar')
    expect(backend.imports).toEqual([])
  })

  it('refuses a declared length over IMPORT_BYTES_MAX before reading the body', async () => {
    const response = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/images/import',
      headers: { ...tarHeaders, 'content-length': String(IMPORT_BYTES_MAX + 1) },
      payload: payload(1000, 4),
    })
    expect(errorOf(response)).toMatchObject({ status: 400, code: 'ERR_BAD_REQUEST' })
    expect(errorOf(response).message).toContain(`at most ${IMPORT_BYTES_MAX}`)
    expect(backend.imports).toEqual([])
  })

  it('refuses an invalid name and unknown query fields with 400 naming them', async () => {
    const badName = await importAs(admin, payload(100, 5), '?name=9lives')
    expect(errorOf(badName)).toMatchObject({ status: 400, code: 'ERR_BAD_REQUEST' })
    expect(errorOf(badName).message).toContain('querystring.name')
    const unknown = await importAs(admin, payload(100, 5), '?colour=red')
    expect(errorOf(unknown).message).toContain('querystring.colour is not a known field')
    expect(backend.imports).toEqual([])
  })
})

describe('GET /api/v1/images/:id/export', () => {
  function aliceImage(visibility: ImageVisibility): string {
    const id = sha256(Buffer.from(`alice-${visibility}`))
    backend.applyNow({
      type: 'image.register',
      at: 0,
      id,
      name: `mine-${visibility}`,
      owner: 'alice',
      visibility,
      sizeBytes: 1,
      host: backend.nodeId,
    })
    return id
  }

  it('streams the owner their image as a tar, with its length and a file name, by id or by name', async () => {
    const id = aliceImage('private')
    for (const ref of [id, 'mine-private']) {
      const response = await send(app, alice, { method: 'GET', url: `/api/v1/images/${ref}/export` })
      expect(response.statusCode).toBe(200)
      expect(response.headers['content-type']).toBe('application/x-tar')
      expect(response.headers['content-length']).toBe(String(exportBytes(id).length))
      expect(response.headers['content-disposition']).toBe('attachment; filename="mine-private.tar"')
      expect(response.rawPayload.equals(exportBytes(id))).toBe(true)
    }
    expect(backend.exports).toEqual([id, id])
  })

  it("answers 404 for another user's private image, 403 for their public one, and lets an admin export any", async () => {
    const hidden = aliceImage('private')
    const shared = aliceImage('public')
    expect(
      errorOf(await send(app, bob, { method: 'GET', url: `/api/v1/images/${hidden}/export` })),
    ).toMatchObject({ status: 404, code: 'ERR_IMAGE_NOT_FOUND' })
    const refused = errorOf(await send(app, bob, { method: 'GET', url: `/api/v1/images/${shared}/export` }))
    expect(refused).toMatchObject({ status: 403, code: 'ERR_FORBIDDEN' })
    expect(refused.message).toBe('The image mine-public belongs to alice; only they can export it.')
    expect(
      errorOf(await send(app, bob, { method: 'GET', url: `/api/v1/images/${BUSYBOX}/export` })),
    ).toMatchObject({ status: 403, code: 'ERR_FORBIDDEN' })
    expect(backend.exports).toEqual([])
    const asAdmin = await send(app, admin, { method: 'GET', url: `/api/v1/images/${hidden}/export` })
    expect(asAdmin.statusCode).toBe(200)
    expect(asAdmin.rawPayload.equals(exportBytes(hidden))).toBe(true)
  })

  it('answers 401 without a session', async () => {
    const response = await app.inject({ method: 'GET', url: `/api/v1/images/${BUSYBOX}/export` })
    expect(errorOf(response)).toMatchObject({ status: 401, code: 'ERR_UNAUTHENTICATED' })
  })
})

describe('a node without image transfer', () => {
  it('answers ERR_NOT_SUPPORTED on both routes', async () => {
    const plain = await seededBackend()
    const plainApp = portal(plain)
    try {
      const session = sessionFor(plain, 'admin')
      const imported = await send(plainApp, session, {
        method: 'POST',
        url: '/api/v1/images/import',
        headers: tarHeaders,
        payload: payload(10, 0),
      })
      expect(errorOf(imported)).toMatchObject({ status: 400, code: 'ERR_NOT_SUPPORTED' })
      const exported = await send(plainApp, session, {
        method: 'GET',
        url: `/api/v1/images/${BUSYBOX}/export`,
      })
      expect(errorOf(exported)).toMatchObject({ status: 400, code: 'ERR_NOT_SUPPORTED' })
    } finally {
      await plainApp.close()
    }
  })
})
