// The routes of the HTTP API, one area at a time: what each answers, the
// commands it submits, ownership (another user's vcluster, image or port
// mapping answers 404 and is left alone), validation errors (400 naming the
// field) and the stable error codes of refusals from the state machine. The
// API runs in fastify inject() over a fake backend whose ClusterState
// applies commands at once.

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { defaultPortRange } from '../../src/state/port-state.ts'
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

let backend: FakeBackend
let app: ReturnType<typeof portal>
let alice: Session
let bob: Session
let admin: Session

beforeEach(async () => {
  backend = await seededBackend()
  app = portal(backend)
  alice = sessionFor(backend, 'alice')
  bob = sessionFor(backend, 'bob')
  admin = sessionFor(backend, 'admin')
})

afterEach(async () => {
  await app.close()
})

async function createWeb(session: Session = alice, nodes = 2) {
  const response = await send(app, session, {
    method: 'POST',
    url: '/api/v1/vclusters',
    payload: { name: 'web', nodes, image: 'busybox', memoryMb: 256 },
  })
  expect(response.statusCode).toBe(201)
  return response.json()
}

describe('vclusters', () => {
  it('creates a vcluster with its vnodes placed and answers 201 with it', async () => {
    const vcluster = await createWeb()
    expect(vcluster).toMatchObject({ name: 'web', owner: 'alice', image: BUSYBOX, status: 'pending' })
    expect(vcluster.limits).toEqual({ cpuCores: 1, memoryMb: 256, diskMb: 500 })
    expect(vcluster.vnodes.map((v: { index: number; host: string }) => [v.index, v.host])).toEqual([
      [0, 'node-a'],
      [1, 'node-a'],
    ])
    expect(backend.submitted.at(-1)).toMatchObject({ type: 'vcluster.create', owner: 'alice', nodes: 2 })
  })

  it("answers 404 for another user's vcluster on every vcluster route, and leaves it alone", async () => {
    await createWeb()
    const before = Buffer.from(backend.state.snapshot()).toString()
    const requests = [
      { method: 'GET', url: '/api/v1/vclusters/web' },
      { method: 'POST', url: '/api/v1/vclusters/web/start' },
      { method: 'POST', url: '/api/v1/vclusters/web/stop' },
      { method: 'POST', url: '/api/v1/vclusters/web/scale-out', payload: { n: 1 } },
      { method: 'POST', url: '/api/v1/vclusters/web/scale-in', payload: { index: 0 } },
      { method: 'DELETE', url: '/api/v1/vclusters/web' },
      { method: 'POST', url: '/api/v1/vclusters/web/vnodes/0/exec', payload: { argv: ['id'] } },
      { method: 'POST', url: '/api/v1/vclusters/web/vnodes/0/save', payload: { image: 'mine' } },
      { method: 'GET', url: '/api/v1/vclusters/web/ports' },
      { method: 'POST', url: '/api/v1/vclusters/web/ports', payload: { index: 0, port: 80 } },
      { method: 'DELETE', url: `/api/v1/vclusters/web/ports/${defaultPortRange.min}` },
    ]
    for (const request of requests) {
      const response = await send(app, bob, request)
      expect({ request, ...errorOf(response) }).toEqual({
        request,
        status: 404,
        code: 'ERR_VCLUSTER_NOT_FOUND',
        message: 'bob has no vcluster named web.',
      })
    }
    expect(Buffer.from(backend.state.snapshot()).toString()).toBe(before)
    expect(backend.execs).toEqual([])
  })

  it("lists my vclusters; only an admin lists another user's or everyone's", async () => {
    await createWeb()
    const list = async (session: Session, query = '') =>
      send(app, session, { method: 'GET', url: `/api/v1/vclusters${query}` })
    expect((await list(alice)).json().vclusters.map((vc: { name: string }) => vc.name)).toEqual(['web'])
    expect((await list(bob)).json().vclusters).toEqual([])
    expect(errorOf(await list(bob, '?all=true'))).toMatchObject({ status: 403, code: 'ERR_FORBIDDEN' })
    expect(errorOf(await list(bob, '?user=alice'))).toMatchObject({ status: 403, code: 'ERR_FORBIDDEN' })
    expect((await list(admin, '?user=alice')).json().vclusters).toHaveLength(1)
    expect((await list(admin, '?all=true')).json().vclusters).toHaveLength(1)
    expect((await list(admin)).json().vclusters).toHaveLength(0)
  })

  it('stops, starts, scales out and in, and deletes my vcluster', async () => {
    await createWeb()
    const act = (method: string, path: string, payload?: object) =>
      send(app, alice, { method, url: `/api/v1/vclusters/web${path}`, ...(payload ? { payload } : {}) })
    expect((await act('POST', '/stop')).json()).toMatchObject({ desired: 'stopped', status: 'stopped' })
    expect((await act('POST', '/start')).json()).toMatchObject({ desired: 'running' })
    const out = (await act('POST', '/scale-out', { n: 2 })).json()
    expect(out.vnodes.map((v: { index: number }) => v.index)).toEqual([0, 1, 2, 3])
    const inn = (await act('POST', '/scale-in', { index: 1 })).json()
    expect(inn.vnodes.find((v: { index: number }) => v.index === 1)?.desired ?? 'deleted').toBe('deleted')
    expect((await act('DELETE', '')).json()).toEqual({ ok: true, id: '1' })
    expect(errorOf(await act('GET', ''))).toMatchObject({ status: 404, code: 'ERR_VCLUSTER_NOT_FOUND' })
  })

  it('names the field in a validation error', async () => {
    const cases: Array<[object, string]> = [
      [{ name: 'web', image: 'busybox' }, 'body.nodes is required'],
      [{ name: 'web', nodes: 0, image: 'busybox' }, 'body.nodes must be >= 1'],
      [{ name: '9lives', nodes: 1, image: 'busybox' }, 'body.name must match pattern'],
      [{ name: 'web', nodes: 1, image: 'busybox', colour: 'red' }, 'body.colour is not a known field'],
      [{ name: 'web', nodes: 1, image: 'busybox', memoryMb: 'lots' }, 'body.memoryMb must be integer'],
    ]
    for (const [payload, fragment] of cases) {
      const response = await send(app, alice, { method: 'POST', url: '/api/v1/vclusters', payload })
      const error = errorOf(response)
      expect(error).toMatchObject({ status: 400, code: 'ERR_BAD_REQUEST' })
      expect(error.message).toContain(fragment)
    }
    const params = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/vnodes/minus/exec',
      payload: { argv: ['x'] },
    })
    expect(errorOf(params).message).toContain('params.index must be integer')
    const form = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'name=web&nodes=1',
    })
    expect(errorOf(form)).toEqual({
      status: 415,
      code: 'ERR_BAD_REQUEST',
      message: 'The request body must be JSON, sent with Content-Type: application/json.',
    })
    const query = await send(app, alice, { method: 'GET', url: '/api/v1/vclusters?sort=name' })
    expect(errorOf(query).message).toContain('querystring.sort is not a known field')
  })

  it('answers refusals of the state machine with their stable codes', async () => {
    await createWeb()
    const again = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters',
      payload: { name: 'web', nodes: 1, image: 'busybox' },
    })
    expect(errorOf(again)).toMatchObject({ status: 409, code: 'ERR_VCLUSTER_EXISTS' })
    const tooBig = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters',
      payload: { name: 'big', nodes: 2, image: 'busybox', memoryMb: 1000 },
    })
    expect(errorOf(tooBig)).toMatchObject({ status: 403, code: 'ERR_QUOTA_EXCEEDED' })
    expect(errorOf(tooBig).message).toMatch(/^Memory quota exceeded/)
    const noImage = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters',
      payload: { name: 'x', nodes: 1, image: 'nope' },
    })
    expect(errorOf(noImage)).toMatchObject({ status: 404, code: 'ERR_IMAGE_NOT_FOUND' })
    const last = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/scale-in',
      payload: { index: 7 },
    })
    expect(errorOf(last)).toMatchObject({ status: 404, code: 'ERR_VNODE_NOT_FOUND' })
  })

  it('answers 404 ERR_NOT_FOUND with the error shape for an unknown route', async () => {
    expect(errorOf(await send(app, alice, { method: 'GET', url: '/api/v1/nothing-here' }))).toMatchObject({
      status: 404,
      code: 'ERR_NOT_FOUND',
    })
  })
})

describe('vnodes', () => {
  it('runs a command in my vnode through the backend and answers its output', async () => {
    const vcluster = await createWeb()
    const response = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/vnodes/1/exec',
      payload: { argv: ['echo', 'hi'], timeoutMs: 5_000 },
    })
    expect(response.json()).toEqual({ exitCode: 0, stdout: 'echo hi\n', stderr: '' })
    expect(backend.execs).toEqual([
      { vclusterId: vcluster.id, index: 1, argv: ['echo', 'hi'], timeoutMs: 5_000 },
    ])
    const missing = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/vnodes/9/exec',
      payload: { argv: ['id'] },
    })
    expect(errorOf(missing)).toMatchObject({ status: 404, code: 'ERR_VNODE_NOT_FOUND' })
    const empty = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/vnodes/0/exec',
      payload: { argv: [] },
    })
    expect(errorOf(empty).message).toContain('body.argv must NOT have fewer than 1 items')
  })

  it('saves my vnode as a private image of mine', async () => {
    await createWeb()
    const response = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/vnodes/0/save',
      payload: { image: 'snap', description: 'after setup' },
    })
    expect(response.statusCode).toBe(201)
    const { id } = response.json()
    expect(backend.state.view.images[id]).toMatchObject({
      name: 'snap',
      owner: 'alice',
      visibility: 'private',
    })
    const again = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/vnodes/0/save',
      payload: { image: 'snap' },
    })
    expect(errorOf(again)).toMatchObject({ status: 409, code: 'ERR_IMAGE_EXISTS' })
  })
})

describe('images', () => {
  async function aliceImage(): Promise<string> {
    await createWeb()
    const response = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/vnodes/0/save',
      payload: { image: 'snap' },
    })
    return response.json().id
  }

  const names = async (session: Session) =>
    (await send(app, session, { method: 'GET', url: '/api/v1/images' }))
      .json()
      .images.map((i: { name: string }) => i.name)

  it('lists my images and the public ones; an admin sees all', async () => {
    await aliceImage()
    expect(await names(alice)).toEqual(['busybox', 'snap'])
    expect(await names(bob)).toEqual(['busybox'])
    expect(await names(admin)).toEqual(['busybox', 'snap'])
  })

  it('shares, describes and deletes my image by hash or by name; others get 404 or 403', async () => {
    const id = await aliceImage()
    expect(
      errorOf(await send(app, bob, { method: 'POST', url: `/api/v1/images/${id}/share` })),
    ).toMatchObject({
      status: 404,
      code: 'ERR_IMAGE_NOT_FOUND',
    })
    expect(
      (await send(app, alice, { method: 'POST', url: '/api/v1/images/snap/share' })).json(),
    ).toMatchObject({
      id,
      visibility: 'public',
    })
    expect(await names(bob)).toEqual(['busybox', 'snap'])
    expect(errorOf(await send(app, bob, { method: 'DELETE', url: `/api/v1/images/${id}` }))).toMatchObject({
      status: 403,
      code: 'ERR_FORBIDDEN',
    })
    const described = await send(app, alice, {
      method: 'PATCH',
      url: `/api/v1/images/${id}`,
      payload: { description: 'web base' },
    })
    expect(described.json()).toMatchObject({ description: 'web base' })
    expect(
      (await send(app, alice, { method: 'POST', url: `/api/v1/images/${id}/unshare` })).json().visibility,
    ).toBe('private')
    expect(
      errorOf(await send(app, alice, { method: 'DELETE', url: `/api/v1/images/${BUSYBOX}` })),
    ).toMatchObject({
      status: 403,
      code: 'ERR_FORBIDDEN',
    })
    expect((await send(app, alice, { method: 'DELETE', url: '/api/v1/images/snap' })).json()).toEqual({
      ok: true,
      id,
    })
    expect(backend.state.view.images[id]).toBeUndefined()
  })

  it('refuses to delete an image a vcluster uses, with 409 ERR_IMAGE_IN_USE', async () => {
    await createWeb()
    const response = await send(app, admin, { method: 'DELETE', url: `/api/v1/images/${BUSYBOX}` })
    expect(errorOf(response)).toMatchObject({ status: 409, code: 'ERR_IMAGE_IN_USE' })
  })

  it('builds an image through the backend (admin)', async () => {
    const response = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/images/build',
      payload: { kind: 'busybox' },
    })
    expect(response.statusCode).toBe(201)
    expect(backend.state.view.images[response.json().id]).toMatchObject({
      owner: 'admin',
      visibility: 'public',
    })
    const bad = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/images/build',
      payload: { kind: 'arch' },
    })
    expect(errorOf(bad).message).toContain('body.kind must be one of busybox, debian')
  })
})

describe('port mappings', () => {
  it('maps a vnode port to the lowest free public port; only the owner sees and removes it', async () => {
    await createWeb()
    const add = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/ports',
      payload: { index: 1, port: 8888 },
    })
    expect(add.statusCode).toBe(201)
    expect(add.json()).toMatchObject({
      publicPort: defaultPortRange.min,
      vcluster: 'web',
      index: 1,
      port: 8888,
      protocol: 'tcp',
    })
    const list = await send(app, alice, { method: 'GET', url: '/api/v1/vclusters/web/ports' })
    expect(list.json().ports.map((p: { publicPort: number }) => p.publicPort)).toEqual([defaultPortRange.min])
    // Bob's own vcluster of the same name does not reach alice's mapping.
    await createWeb(bob, 1)
    const stolen = await send(app, bob, {
      method: 'DELETE',
      url: `/api/v1/vclusters/web/ports/${defaultPortRange.min}`,
    })
    expect(errorOf(stolen)).toMatchObject({ status: 404, code: 'ERR_PORT_MAPPING_NOT_FOUND' })
    expect(
      (await send(app, bob, { method: 'GET', url: '/api/v1/vclusters/web/ports' })).json().ports,
    ).toEqual([])
    const removed = await send(app, alice, {
      method: 'DELETE',
      url: `/api/v1/vclusters/web/ports/${defaultPortRange.min}`,
    })
    expect(removed.json()).toEqual({ ok: true, publicPort: defaultPortRange.min })
    expect(backend.state.view.portMappings).toEqual({})
  })

  it('takes public ports from the range an admin sets, and a mapping goes with its vnode', async () => {
    await createWeb()
    const range = await send(app, admin, {
      method: 'PUT',
      url: '/api/v1/settings/ports',
      payload: { min: 5000, max: 5010 },
    })
    expect(range.json()).toMatchObject({ ports: { min: 5000, max: 5010 } })
    const add = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters/web/ports',
      payload: { index: 1, port: 22 },
    })
    expect(add.json().publicPort).toBe(5000)
    await send(app, alice, { method: 'POST', url: '/api/v1/vclusters/web/scale-in', payload: { index: 1 } })
    expect(backend.state.view.portMappings).toEqual({})
    const users = await send(app, alice, {
      method: 'PUT',
      url: '/api/v1/settings/ports',
      payload: { min: 1, max: 2 },
    })
    expect(errorOf(users)).toMatchObject({ status: 403, code: 'ERR_FORBIDDEN' })
  })
})

describe('users and groups (admin)', () => {
  it('adds, lists, changes and disables users without ever showing a password hash', async () => {
    const created = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/users',
      payload: { name: 'carol', password: 'carol-password' },
    })
    expect(created.statusCode).toBe(201)
    expect(created.json()).toMatchObject({ name: 'carol', role: 'user', group: 'user', status: 'normal' })
    const list = await send(app, admin, { method: 'GET', url: '/api/v1/users' })
    expect(list.json().users.map((u: { name: string }) => u.name)).toEqual(['admin', 'alice', 'bob', 'carol'])
    expect(list.body).not.toContain('argon2')
    expect(list.body).not.toContain('passwordHash')
    const duplicate = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/users',
      payload: { name: 'carol', password: 'carol-password' },
    })
    expect(errorOf(duplicate)).toMatchObject({ status: 409, code: 'ERR_USER_EXISTS' })
    const promoted = await send(app, admin, {
      method: 'PATCH',
      url: '/api/v1/users/carol',
      payload: { role: 'admin', group: 'admin' },
    })
    expect(promoted.json()).toMatchObject({ role: 'admin', group: 'admin' })
    const disabled = await send(app, admin, { method: 'POST', url: '/api/v1/users/carol/disable' })
    expect(disabled.json()).toMatchObject({ status: 'disabled' })
    const empty = await send(app, admin, { method: 'PATCH', url: '/api/v1/users/carol', payload: {} })
    expect(errorOf(empty)).toMatchObject({ status: 400, code: 'ERR_BAD_REQUEST' })
    const last = await send(app, admin, { method: 'POST', url: '/api/v1/users/admin/disable' })
    expect(errorOf(last)).toMatchObject({ status: 409, code: 'ERR_LAST_ADMIN' })
  })

  it('lets an admin set a password, which ends that user’s sessions', async () => {
    const response = await send(app, admin, {
      method: 'PATCH',
      url: '/api/v1/users/alice',
      payload: { password: 'reset-password' },
    })
    expect(response.statusCode).toBe(200)
    expect(errorOf(await send(app, alice, { method: 'GET', url: '/api/v1/session' })).code).toBe(
      'ERR_SESSION_REVOKED',
    )
  })

  it('adds groups and changes their quota, which applies to new requests', async () => {
    const created = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/groups',
      payload: { name: 'students', quota: { vnodes: 1 } },
    })
    expect(created.statusCode).toBe(201)
    expect(created.json()).toMatchObject({ name: 'students', members: 0, quota: { vnodes: 1, cpuCores: 4 } })
    await send(app, admin, { method: 'PATCH', url: '/api/v1/users/alice', payload: { group: 'students' } })
    const patched = await send(app, admin, {
      method: 'PATCH',
      url: '/api/v1/groups/students',
      payload: { quota: { vnodes: 3 } },
    })
    expect(patched.json()).toMatchObject({ members: 1, quota: { vnodes: 3 } })
    const groups = await send(app, admin, { method: 'GET', url: '/api/v1/groups' })
    expect(groups.json().groups.map((g: { name: string }) => g.name)).toEqual(['admin', 'students', 'user'])
    const me = await send(app, alice, { method: 'GET', url: '/api/v1/session' })
    expect(me.json()).toMatchObject({
      group: 'students',
      quota: { vnodes: 3 },
      usage: { vnodes: 0, portMappings: 0 },
    })
    const badQuota = await send(app, admin, {
      method: 'PATCH',
      url: '/api/v1/groups/students',
      payload: { quota: { gpus: 1 } },
    })
    expect(errorOf(badQuota).message).toContain('body.quota.gpus is not a known field')
  })
})

describe('hosts and members (admin)', () => {
  it('lists hosts with capacity and vnode counts, drains and undrains them', async () => {
    await createWeb()
    const hosts = (await send(app, admin, { method: 'GET', url: '/api/v1/hosts' })).json().hosts
    expect(hosts).toEqual([
      expect.objectContaining({
        id: 'node-a',
        capacity: { cpuCores: 16, memoryMb: 32_000, diskMb: 100_000 },
        used: { cpuCores: 2, memoryMb: 512, diskMb: 1000 },
        vnodes: 2,
        drained: false,
        unavailable: null,
      }),
    ])
    const drained = await send(app, admin, { method: 'POST', url: '/api/v1/hosts/node-a/drain', payload: {} })
    expect(drained.json()).toMatchObject({ drained: true, unavailable: 'drained' })
    const undrained = await send(app, admin, { method: 'POST', url: '/api/v1/hosts/node-a/undrain' })
    expect(undrained.json()).toMatchObject({ drained: false })
    // Alone, node-a has nowhere to send its vnodes: both stay, reported stuck.
    const evacuate = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/hosts/node-a/drain',
      payload: { evacuate: true },
    })
    expect(evacuate.json()).toMatchObject({
      id: 'node-a',
      drained: true,
      evacuation: { moving: 0, stuck: 2 },
    })
    const missing = await send(app, admin, { method: 'POST', url: '/api/v1/hosts/nope/drain' })
    expect(errorOf(missing)).toMatchObject({ status: 404, code: 'ERR_MEMBER_NOT_FOUND' })
    // As people type them: the host name, or the end of the id that `docklet status` shows.
    const byName = await send(app, admin, { method: 'POST', url: '/api/v1/hosts/host-a/undrain' })
    expect(byName.json()).toMatchObject({ id: 'node-a', drained: false })
    const bySuffix = await send(app, admin, {
      method: 'POST',
      url: '/api/v1/hosts/node-a/drain',
      payload: {},
    })
    expect(bySuffix.json()).toMatchObject({ id: 'node-a', drained: true })
  })

  it('answers the members from the backend status', async () => {
    const response = await send(app, admin, { method: 'GET', url: '/api/v1/members' })
    expect(response.json()).toMatchObject({
      cluster_id: 'c1',
      leader: { id: 'node-a' },
      members: [{ role: 'voter' }],
    })
  })
})
