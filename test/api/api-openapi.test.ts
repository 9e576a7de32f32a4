// The route table as a whole: the OpenAPI document at /api/v1/openapi.json
// lists every route fastify registered (collected independently with an
// onRoute hook on the parent app), every route declares params, querystring
// and response schemas (and a body schema for writes), and the access rule
// each route declares holds for all of them: no session -> 401, a user on
// an admin route -> 403, both before the body is looked at.

import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { apiFastifyOptions, buildApi } from '../../src/api/api-server.ts'
import { errorOf, type FakeBackend, type Session, seededBackend, send, sessionFor } from './api-fixture.ts'

interface Registered {
  method: string
  url: string
  schema: Record<string, unknown> | undefined
}

type Operation = {
  'x-docklet-access': string
  parameters: Array<{ name: string; in: string }>
  requestBody?: unknown
  responses: Record<string, unknown>
}

let backend: FakeBackend
let app: FastifyInstance
let alice: Session
let doc: { openapi: string; paths: Record<string, Record<string, Operation>> }
const registered: Registered[] = []

beforeAll(async () => {
  backend = await seededBackend()
  app = Fastify(apiFastifyOptions)
  app.addHook('onRoute', (route) => {
    if (route.method !== 'HEAD')
      registered.push({
        method: String(route.method),
        url: route.url,
        schema: route.schema as Record<string, unknown>,
      })
  })
  await app.register(buildApi({ backend, mode: 'portal', now: () => backend.nowMs }))
  alice = sessionFor(backend, 'alice')
  const response = await app.inject({ method: 'GET', url: '/api/v1/openapi.json' })
  expect(response.statusCode).toBe(200)
  doc = response.json()
})

afterAll(async () => {
  await app.close()
})

const toPath = (url: string) => url.replace(/:(\w+)/g, '{$1}')
const sample: Record<string, string> = { name: 'web', index: '0', id: 'x', publicPort: '40000' }
const concrete = (path: string) => path.replace(/\{(\w+)\}/g, (_m, name: string) => sample[name] ?? 'x')

function operations(): Array<{ method: string; path: string; operation: Operation }> {
  return Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({ method: method.toUpperCase(), path, operation })),
  )
}

describe('the OpenAPI document', () => {
  it('lists every registered route, and nothing else', () => {
    const fromFastify = registered.map((route) => `${route.method} ${toPath(route.url)}`).sort()
    const fromDocument = operations()
      .map(({ method, path }) => `${method} ${path}`)
      .sort()
    expect(fromFastify.length).toBeGreaterThan(35)
    expect(fromDocument).toEqual(fromFastify)
    expect(doc.openapi).toBe('3.1.0')
  })

  it('covers the routes the CLI is written against', () => {
    const listed = new Set(operations().map(({ method, path }) => `${method} ${path}`))
    for (const route of [
      'POST /api/v1/session',
      'GET /api/v1/session',
      'DELETE /api/v1/session',
      'POST /api/v1/session/password',
      'POST /api/v1/register',
      'PUT /api/v1/settings/registration',
      'GET /api/v1/users',
      'POST /api/v1/users',
      'PATCH /api/v1/users/{name}',
      'POST /api/v1/users/{name}/disable',
      'GET /api/v1/groups',
      'POST /api/v1/groups',
      'PATCH /api/v1/groups/{name}',
      'GET /api/v1/vclusters',
      'POST /api/v1/vclusters',
      'GET /api/v1/vclusters/{name}',
      'POST /api/v1/vclusters/{name}/start',
      'POST /api/v1/vclusters/{name}/stop',
      'POST /api/v1/vclusters/{name}/scale-out',
      'POST /api/v1/vclusters/{name}/scale-in',
      'DELETE /api/v1/vclusters/{name}',
      'POST /api/v1/vclusters/{name}/vnodes/{index}/exec',
      'POST /api/v1/vclusters/{name}/vnodes/{index}/save',
      'GET /api/v1/images',
      'POST /api/v1/images/build',
      'POST /api/v1/images/{id}/share',
      'POST /api/v1/images/{id}/unshare',
      'PATCH /api/v1/images/{id}',
      'DELETE /api/v1/images/{id}',
      'GET /api/v1/vclusters/{name}/ports',
      'POST /api/v1/vclusters/{name}/ports',
      'DELETE /api/v1/vclusters/{name}/ports/{publicPort}',
      'GET /api/v1/hosts',
      'POST /api/v1/hosts/{id}/drain',
      'POST /api/v1/hosts/{id}/undrain',
      'GET /api/v1/members',
    ])
      expect(listed.has(route), route).toBe(true)
  })

  it('describes path parameters, a success and an error response for every operation, and a body for every write', () => {
    for (const { method, path, operation } of operations()) {
      const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1])
      const inPath = operation.parameters.filter((p) => p.in === 'path').map((p) => p.name)
      expect(inPath, `${method} ${path}`).toEqual(names)
      const codes = Object.keys(operation.responses)
      expect(
        codes.some((code) => /^2\d\d$/.test(code)),
        `${method} ${path}`,
      ).toBe(true)
      expect(codes, `${method} ${path}`).toEqual(expect.arrayContaining(['4XX', '5XX']))
      if (method !== 'GET') expect(operation.requestBody, `${method} ${path}`).toBeDefined()
    }
  })

  it('comes from route schemas that declare params, querystring and response', () => {
    for (const route of registered) {
      expect(route.schema?.params, route.url).toBeDefined()
      expect(route.schema?.querystring, route.url).toBeDefined()
      expect(route.schema?.response, route.url).toBeDefined()
    }
  })
})

describe('access rules of every route', () => {
  it('answers 401 ERR_UNAUTHENTICATED to every non-public route without a session', async () => {
    const guarded = operations().filter(({ operation }) => operation['x-docklet-access'] !== 'public')
    expect(guarded.length).toBeGreaterThan(30)
    for (const { method, path } of guarded) {
      const response = await app.inject({
        method: method as 'GET',
        url: concrete(path),
        payload: method === 'GET' ? undefined : {},
      })
      expect({ route: `${method} ${path}`, ...errorOf(response) }).toMatchObject({
        route: `${method} ${path}`,
        status: 401,
        code: 'ERR_UNAUTHENTICATED',
      })
    }
  })

  it('answers 403 ERR_FORBIDDEN to a user on every admin route, and changes nothing', async () => {
    const adminOnly = operations().filter(({ operation }) => operation['x-docklet-access'] === 'admin')
    expect(adminOnly.map(({ method, path }) => `${method} ${path}`)).toEqual(
      expect.arrayContaining(['GET /api/v1/users', 'POST /api/v1/images/build', 'GET /api/v1/members']),
    )
    const before = Buffer.from(backend.state.snapshot()).toString()
    for (const { method, path } of adminOnly) {
      const response = await send(app, alice, {
        method,
        url: concrete(path),
        ...(method === 'GET' ? {} : { payload: {} }),
      })
      expect({ route: `${method} ${path}`, ...errorOf(response) }).toMatchObject({
        route: `${method} ${path}`,
        status: 403,
        code: 'ERR_FORBIDDEN',
      })
    }
    expect(Buffer.from(backend.state.snapshot()).toString()).toBe(before)
  })

  it('keeps the public routes to login, registration, settings and this document', () => {
    const open = operations()
      .filter(({ operation }) => operation['x-docklet-access'] === 'public')
      .map(({ method, path }) => `${method} ${path}`)
      .sort()
    expect(open).toEqual([
      'GET /api/v1/openapi.json',
      'GET /api/v1/settings',
      'POST /api/v1/register',
      'POST /api/v1/session',
    ])
  })
})
