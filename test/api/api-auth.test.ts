// Authentication of the HTTP API: login cookies, session verification on any
// node, logout and password change revoking sessions, expiry, tampering,
// CSRF refusal, the replicated login lockout and the per-address limit,
// self-registration, and the control socket's local-admin mode with
// X-Docklet-User. The API runs in fastify inject() over a fake backend whose
// ClusterState applies commands at once; "another node" is a second API
// instance over the same state, as replicas would be.

import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { apiFastifyOptions, buildApi } from '../../src/api/api-server.ts'
import { readSession } from '../../src/api/session-token.ts'
import { lockoutBaseMs } from '../../src/state/session-state.ts'
import {
  cookiesOf,
  errorOf,
  type FakeBackend,
  login,
  loginAs,
  PASSWORDS,
  portal,
  seededBackend,
  send,
} from './api-fixture.ts'

const apps: Array<{ close(): Promise<unknown> }> = []
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})

async function setup(options: Parameters<typeof portal>[1] = {}) {
  const backend = await seededBackend()
  const app = portal(backend, options)
  apps.push(app)
  return { backend, app }
}

function nodeB(backend: FakeBackend) {
  const app = portal(backend)
  apps.push(app)
  return app
}

describe('login and sessions', () => {
  it('sets an HttpOnly, SameSite=Strict session cookie and a readable CSRF cookie on login', async () => {
    const { app } = await setup()
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/session',
      payload: { name: 'alice', password: PASSWORDS.alice },
    })
    expect(response.statusCode).toBe(200)
    const cookies = response.headers['set-cookie'] as string[]
    const session = cookies.find((c) => c.startsWith('docklet_session='))!
    const csrf = cookies.find((c) => c.startsWith('docklet_csrf='))!
    expect(session).toMatch(/; HttpOnly/)
    expect(session).toMatch(/; SameSite=Strict/)
    expect(session).not.toMatch(/Secure/)
    expect(csrf).not.toMatch(/HttpOnly/)
    const body = response.json()
    expect(body).toMatchObject({ name: 'alice', role: 'user', group: 'user', status: 'normal' })
    expect(csrf).toContain(`docklet_csrf=${body.csrfToken}`)
  })

  it('marks the cookies Secure when the request came over TLS', async () => {
    const backend = await seededBackend()
    const app = Fastify({ ...apiFastifyOptions, trustProxy: true })
    await app.register(buildApi({ backend, mode: 'portal', now: () => backend.nowMs }))
    apps.push(app)
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/session',
      headers: { 'x-forwarded-proto': 'https' },
      payload: { name: 'alice', password: PASSWORDS.alice },
    })
    expect(response.statusCode).toBe(200)
    for (const cookie of response.headers['set-cookie'] as string[]) expect(cookie).toMatch(/; Secure/)
  })

  it('answers a wrong password and an unknown user alike, with 401 ERR_LOGIN_FAILED', async () => {
    const { app } = await setup()
    for (const name of ['alice', 'nobody']) {
      const response = await app.inject({
        method: 'POST',
        url: '/api/v1/session',
        payload: { name, password: 'wrong-one' },
      })
      expect(errorOf(response)).toEqual({
        status: 401,
        code: 'ERR_LOGIN_FAILED',
        message: 'The user name or the password is wrong.',
      })
    }
  })

  it('accepts a session issued by one node on another node that shares the state', async () => {
    const { app, backend } = await setup()
    const session = await loginAs(app, 'alice')
    const response = await send(nodeB(backend), session, { method: 'GET', url: '/api/v1/session' })
    expect(response.statusCode).toBe(200)
    expect(response.json()).toMatchObject({ name: 'alice', csrfToken: session.csrf })
  })

  it('refuses a request without a session with 401 ERR_UNAUTHENTICATED', async () => {
    const { app } = await setup()
    expect(errorOf(await app.inject({ method: 'GET', url: '/api/v1/session' }))).toMatchObject({
      status: 401,
      code: 'ERR_UNAUTHENTICATED',
    })
  })

  it('refuses a tampered session token with 401 ERR_SESSION_INVALID', async () => {
    const { app, backend } = await setup()
    const session = await loginAs(app, 'alice')
    const token = session.cookie.match(/docklet_session=([^;]+)/)![1]!
    const claims = readSession(backend.state.view.sessionKey, token)!
    // Claim to be admin with alice's signature.
    const forged = Buffer.from(
      JSON.stringify({
        u: 'admin',
        g: claims.generation,
        s: claims.sessionId,
        i: claims.issuedAt,
        e: claims.expiresAt,
      }),
    ).toString('base64url')
    const response = await send(
      app,
      { ...session, cookie: `docklet_session=${forged}.${token.split('.')[1]}` },
      {
        method: 'GET',
        url: '/api/v1/session',
      },
    )
    expect(errorOf(response)).toMatchObject({ status: 401, code: 'ERR_SESSION_INVALID' })
  })

  it('refuses an expired session with 401 ERR_SESSION_EXPIRED', async () => {
    const { app, backend } = await setup({ sessionTtlMs: 60_000 })
    const session = await loginAs(app, 'alice')
    backend.nowMs += 60_000
    expect(errorOf(await send(app, session, { method: 'GET', url: '/api/v1/session' }))).toMatchObject({
      status: 401,
      code: 'ERR_SESSION_EXPIRED',
    })
  })

  it('ends only this session on logout, on every node, and clears the cookies', async () => {
    const { app, backend } = await setup()
    const first = await loginAs(app, 'alice')
    const second = await loginAs(app, 'alice')
    const response = await send(app, first, { method: 'DELETE', url: '/api/v1/session' })
    expect(response.statusCode).toBe(200)
    expect(cookiesOf(response)).toBe('docklet_session=; docklet_csrf=')
    for (const node of [app, nodeB(backend)]) {
      expect(errorOf(await send(node, first, { method: 'GET', url: '/api/v1/session' }))).toMatchObject({
        status: 401,
        code: 'ERR_SESSION_REVOKED',
      })
      expect((await send(node, second, { method: 'GET', url: '/api/v1/session' })).statusCode).toBe(200)
    }
  })

  it('ends every session of the user on logout with all=true', async () => {
    const { app } = await setup()
    const first = await loginAs(app, 'alice')
    const second = await loginAs(app, 'alice')
    const bob = await loginAs(app, 'bob')
    expect((await send(app, first, { method: 'DELETE', url: '/api/v1/session?all=true' })).statusCode).toBe(
      200,
    )
    expect(errorOf(await send(app, second, { method: 'GET', url: '/api/v1/session' })).code).toBe(
      'ERR_SESSION_REVOKED',
    )
    expect((await send(app, bob, { method: 'GET', url: '/api/v1/session' })).statusCode).toBe(200)
  })

  it('revokes the other sessions on a password change but keeps the one that changed it', async () => {
    const { app } = await setup()
    const here = await loginAs(app, 'alice')
    const elsewhere = await loginAs(app, 'alice')
    const change = await send(app, here, {
      method: 'POST',
      url: '/api/v1/session/password',
      payload: { oldPassword: PASSWORDS.alice, newPassword: 'a-new-password' },
    })
    expect(change.statusCode).toBe(200)
    const renewed = { cookie: cookiesOf(change), csrf: here.csrf }
    expect((await send(app, renewed, { method: 'GET', url: '/api/v1/session' })).statusCode).toBe(200)
    expect(errorOf(await send(app, here, { method: 'GET', url: '/api/v1/session' })).code).toBe(
      'ERR_SESSION_REVOKED',
    )
    expect(errorOf(await send(app, elsewhere, { method: 'GET', url: '/api/v1/session' })).code).toBe(
      'ERR_SESSION_REVOKED',
    )
    await expect(login(app, 'alice', PASSWORDS.alice)).rejects.toThrow(/ERR_LOGIN_FAILED/)
    await login(app, 'alice', 'a-new-password')
  })

  it('refuses a password change with a wrong current password, with 403 ERR_WRONG_PASSWORD', async () => {
    const { app } = await setup()
    const session = await loginAs(app, 'alice')
    const response = await send(app, session, {
      method: 'POST',
      url: '/api/v1/session/password',
      payload: { oldPassword: 'not-the-password', newPassword: 'a-new-password' },
    })
    expect(errorOf(response)).toMatchObject({ status: 403, code: 'ERR_WRONG_PASSWORD' })
    await loginAs(app, 'alice')
  })

  it('ends the sessions of a user an admin disables', async () => {
    const { app } = await setup()
    const alice = await loginAs(app, 'alice')
    const admin = await loginAs(app, 'admin')
    expect((await send(app, admin, { method: 'POST', url: '/api/v1/users/alice/disable' })).statusCode).toBe(
      200,
    )
    expect(errorOf(await send(app, alice, { method: 'GET', url: '/api/v1/session' }))).toMatchObject({
      status: 401,
      code: 'ERR_SESSION_INVALID',
    })
  })
})

describe('CSRF', () => {
  it('refuses a state-changing request without the CSRF header, with a wrong one, or with another session’s', async () => {
    const { app } = await setup()
    const alice = await loginAs(app, 'alice')
    const bob = await loginAs(app, 'bob')
    const create = {
      method: 'POST',
      url: '/api/v1/vclusters',
      payload: { name: 'web', nodes: 1, image: 'busybox' },
    }
    for (const csrf of ['', 'forged-token', bob.csrf]) {
      const headers: Record<string, string> = { cookie: alice.cookie }
      if (csrf !== '') headers['x-csrf-token'] = csrf
      const response = await app.inject({ ...create, headers } as never)
      expect(errorOf(response)).toMatchObject({ status: 403, code: 'ERR_CSRF' })
    }
    expect(
      Object.keys((await send(app, alice, { method: 'GET', url: '/api/v1/vclusters' })).json().vclusters),
    ).toHaveLength(0)
    expect((await send(app, alice, create)).statusCode).toBe(201)
  })

  it('refuses a write whose Origin is another site, even with the right token', async () => {
    const { app } = await setup()
    const alice = await loginAs(app, 'alice')
    const response = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters',
      headers: { origin: 'https://evil.example', host: 'portal.local' },
      payload: { name: 'web', nodes: 1, image: 'busybox' },
    })
    expect(errorOf(response)).toMatchObject({ status: 403, code: 'ERR_CSRF' })
    const sameSite = await send(app, alice, {
      method: 'POST',
      url: '/api/v1/vclusters',
      headers: { origin: 'http://portal.local', host: 'portal.local:80' },
      payload: { name: 'web', nodes: 1, image: 'busybox' },
    })
    expect(sameSite.statusCode).toBe(201)
  })

  it('does not need the CSRF token for reads', async () => {
    const { app } = await setup()
    const alice = await loginAs(app, 'alice')
    expect(
      (await app.inject({ method: 'GET', url: '/api/v1/vclusters', headers: { cookie: alice.cookie } }))
        .statusCode,
    ).toBe(200)
  })
})

describe('lockout', () => {
  async function failLogins(app: ReturnType<typeof portal>, name: string, count: number) {
    for (let i = 0; i < count; i++) {
      const response = await app.inject({
        method: 'POST',
        url: '/api/v1/session',
        payload: { name, password: 'wrong!' },
      })
      expect(errorOf(response).code).toBe('ERR_LOGIN_FAILED')
    }
  }

  it('locks an account for 5 minutes after 5 failures, on every node, even for the right password', async () => {
    const { app, backend } = await setup()
    await failLogins(app, 'alice', 5)
    for (const node of [app, nodeB(backend)]) {
      const response = await node.inject({
        method: 'POST',
        url: '/api/v1/session',
        payload: { name: 'alice', password: PASSWORDS.alice },
      })
      expect(errorOf(response)).toMatchObject({ status: 429, code: 'ERR_LOGIN_LOCKED' })
      expect(errorOf(response).message).toContain('5 minutes')
      expect(response.headers['retry-after']).toBe(String(lockoutBaseMs / 1000))
    }
    backend.nowMs += lockoutBaseMs
    await loginAs(app, 'alice')
    expect(backend.state.view.loginFailures.alice).toBeUndefined()
  })

  it('locks longer on each failure after the first lockout', async () => {
    const { app, backend } = await setup()
    await failLogins(app, 'alice', 5)
    backend.nowMs += lockoutBaseMs
    await failLogins(app, 'alice', 1)
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/session',
      payload: { name: 'alice', password: PASSWORDS.alice },
    })
    expect(errorOf(response).message).toContain('10 minutes')
  })

  it('counts wrong current passwords in a password change as failed logins', async () => {
    const { app } = await setup()
    const session = await loginAs(app, 'alice')
    for (let i = 0; i < 5; i++) {
      await send(app, session, {
        method: 'POST',
        url: '/api/v1/session/password',
        payload: { oldPassword: 'guess-guess', newPassword: 'a-new-password' },
      })
    }
    const locked = await send(app, session, {
      method: 'POST',
      url: '/api/v1/session/password',
      payload: { oldPassword: PASSWORDS.alice, newPassword: 'a-new-password' },
    })
    expect(errorOf(locked)).toMatchObject({ status: 429, code: 'ERR_LOGIN_LOCKED' })
  })

  it('limits failed logins per client address, whatever names it tries', async () => {
    const { app } = await setup({ loginLimiter: { failuresMax: 3, windowMs: 60_000, addressesMax: 10 } })
    for (const name of ['n1', 'n2', 'n3']) await failLogins(app, name, 1)
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/session',
      payload: { name: 'alice', password: PASSWORDS.alice },
    })
    expect(errorOf(response)).toMatchObject({ status: 429, code: 'ERR_RATE_LIMITED' })
  })
})

describe('self-registration', () => {
  it('is refused while closed, and makes a pending user an admin approves once open', async () => {
    const { app } = await setup()
    const register = {
      method: 'POST',
      url: '/api/v1/register',
      payload: { name: 'carol', password: 'carol-password' },
    }
    expect(errorOf(await app.inject(register as never))).toMatchObject({
      status: 403,
      code: 'ERR_REGISTRATION_CLOSED',
    })
    const admin = await loginAs(app, 'admin')
    const open = await send(app, admin, {
      method: 'PUT',
      url: '/api/v1/settings/registration',
      payload: { open: true },
    })
    expect(open.json()).toMatchObject({ registration: { open: true } })
    expect((await app.inject({ method: 'GET', url: '/api/v1/settings' })).json()).toMatchObject({
      registration: { open: true },
    })
    const registered = await app.inject(register as never)
    expect(registered.statusCode).toBe(201)
    expect(registered.json()).toEqual({ name: 'carol', status: 'pending' })
    const pending = await app.inject({
      method: 'POST',
      url: '/api/v1/session',
      payload: { name: 'carol', password: 'carol-password' },
    })
    expect(errorOf(pending)).toMatchObject({ status: 403, code: 'ERR_USER_NOT_ACTIVE' })
    const approve = await send(app, admin, {
      method: 'PATCH',
      url: '/api/v1/users/carol',
      payload: { status: 'normal' },
    })
    expect(approve.json()).toMatchObject({ name: 'carol', status: 'normal' })
    await login(app, 'carol', 'carol-password')
  })
})

describe('local-admin mode (the control socket)', () => {
  async function control() {
    const backend = await seededBackend()
    const app = Fastify(apiFastifyOptions)
    await app.register(buildApi({ backend, mode: 'local-admin', now: () => backend.nowMs }))
    apps.push(app)
    return { backend, app }
  }

  it('acts as the admin created at cluster.init, without cookies or CSRF', async () => {
    const { app } = await control()
    expect((await app.inject({ method: 'GET', url: '/api/v1/session' })).json()).toMatchObject({
      name: 'admin',
      role: 'admin',
    })
    const created = await app.inject({
      method: 'POST',
      url: '/api/v1/users',
      payload: { name: 'carol', password: 'carol-password' },
    })
    expect(created.statusCode).toBe(201)
  })

  it('acts for the user named in X-Docklet-User, with that user’s rights', async () => {
    const { app, backend } = await control()
    const headers = { 'x-docklet-user': 'alice' }
    expect((await app.inject({ method: 'GET', url: '/api/v1/session', headers })).json()).toMatchObject({
      name: 'alice',
    })
    const created = await app.inject({
      method: 'POST',
      url: '/api/v1/vclusters',
      headers,
      payload: { name: 'web', nodes: 1, image: 'busybox' },
    })
    expect(created.json()).toMatchObject({ owner: 'alice', name: 'web' })
    expect(Object.values(backend.state.view.vclusters).map((vc) => vc.owner)).toEqual(['alice'])
    expect(errorOf(await app.inject({ method: 'GET', url: '/api/v1/users', headers }))).toMatchObject({
      status: 403,
      code: 'ERR_FORBIDDEN',
    })
    expect(
      errorOf(
        await app.inject({ method: 'GET', url: '/api/v1/session', headers: { 'x-docklet-user': 'nobody' } }),
      ),
    ).toMatchObject({ status: 404, code: 'ERR_USER_NOT_FOUND' })
  })

  it('has no login or logout', async () => {
    const { app } = await control()
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/session',
      payload: { name: 'admin', password: PASSWORDS.admin },
    })
    expect(errorOf(response)).toMatchObject({ status: 400, code: 'ERR_NOT_SUPPORTED' })
  })

  it('lets only an admin act for someone else in the portal', async () => {
    const { app } = await setup()
    const alice = await loginAs(app, 'alice')
    const response = await send(app, alice, {
      method: 'GET',
      url: '/api/v1/vclusters',
      headers: { 'x-docklet-user': 'bob' },
    })
    expect(errorOf(response)).toMatchObject({ status: 403, code: 'ERR_FORBIDDEN' })
  })
})
