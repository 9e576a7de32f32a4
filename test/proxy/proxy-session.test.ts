// The proxy's session check (src/proxy/proxy-session.ts) with its memory of
// verified tokens: a token whose signature was checked once is not
// verified again, yet everything that depends on the replicated state or
// the time is checked on every request. So the tests first make the
// checker remember a token (and check that it did), then change the auth
// view or the clock the way logout, a password change, disabling a user or
// a new session key would, and expect the remembered token to be refused at
// once. They also check that forged tokens are never remembered and that
// the memory stays within verifiedSessionsMax.

import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { type SessionClaims, signSession } from '../../src/api/session-token.ts'
import { sessionCookie } from '../../src/proxy/portal-names.ts'
import { ProxyError } from '../../src/proxy/proxy-error.ts'
import { SessionChecker, verifiedSessionsMax } from '../../src/proxy/proxy-session.ts'
import type { AuthView, ProxyUser } from '../../src/proxy/proxy-view.ts'

const NOW_MS = 1_800_000_000_000
const TTL_MS = 3_600_000

function newKey(): string {
  return randomBytes(32).toString('hex')
}

function authView(
  sessionKey: string,
  options: { alice?: Partial<ProxyUser> | null; revoked?: string[] } = {},
): AuthView {
  const users = new Map<string, ProxyUser>()
  if (options.alice !== null)
    users.set('alice', { role: 'user', active: true, generation: 0, ...options.alice })
  return { sessionKey, users, revoked: new Set(options.revoked ?? []) }
}

function cookieFor(key: string, claims: Partial<SessionClaims> = {}): string {
  const token = signSession(key, {
    user: 'alice',
    generation: 0,
    sessionId: 'session-1',
    issuedAt: NOW_MS,
    expiresAt: NOW_MS + TTL_MS,
    ...claims,
  })
  return `other=1; ${sessionCookie}=${token}`
}

/** The code of the ProxyError that checking `cookie` throws ('' when it passes). */
function refusal(checker: SessionChecker, auth: AuthView, cookie: string, nowMs = NOW_MS): string {
  try {
    checker.userOf(auth, cookie, nowMs)
    return ''
  } catch (error) {
    if (!(error instanceof ProxyError)) throw error
    expect(error.status).toBe(401)
    return error.code
  }
}

/** A checker that has verified and remembered alice's token. */
function remembering(key: string, cookie: string): SessionChecker {
  const checker = new SessionChecker()
  expect(checker.userOf(authView(key), cookie, NOW_MS)).toEqual({ name: 'alice', role: 'user' })
  expect(checker.remembered).toBe(1)
  // The second time comes from memory, and gives the same answer.
  expect(checker.userOf(authView(key), cookie, NOW_MS)).toEqual({ name: 'alice', role: 'user' })
  expect(checker.remembered).toBe(1)
  return checker
}

describe('a remembered session token', () => {
  it('is refused as soon as its session is revoked (logout)', () => {
    const key = newKey()
    const cookie = cookieFor(key)
    const checker = remembering(key, cookie)
    expect(refusal(checker, authView(key, { revoked: ['session-1'] }), cookie)).toBe('ERR_SESSION_REVOKED')
    // Another session of the same user is not affected.
    expect(refusal(checker, authView(key, { revoked: ['session-2'] }), cookie)).toBe('')
  })

  it("is refused once the user's session generation moves past it (password change)", () => {
    const key = newKey()
    const cookie = cookieFor(key)
    const checker = remembering(key, cookie)
    expect(refusal(checker, authView(key, { alice: { generation: 1 } }), cookie)).toBe('ERR_SESSION_REVOKED')
  })

  it('is refused once it expires', () => {
    const key = newKey()
    const cookie = cookieFor(key)
    const checker = remembering(key, cookie)
    expect(refusal(checker, authView(key), cookie, NOW_MS + TTL_MS - 1)).toBe('')
    expect(refusal(checker, authView(key), cookie, NOW_MS + TTL_MS)).toBe('ERR_SESSION_EXPIRED')
  })

  it('is refused once its user is disabled or removed, and carries a changed role at once', () => {
    const key = newKey()
    const cookie = cookieFor(key)
    const checker = remembering(key, cookie)
    expect(refusal(checker, authView(key, { alice: { active: false } }), cookie)).toBe('ERR_SESSION_INVALID')
    expect(refusal(checker, authView(key, { alice: null }), cookie)).toBe('ERR_SESSION_INVALID')
    expect(checker.userOf(authView(key, { alice: { role: 'admin' } }), cookie, NOW_MS).role).toBe('admin')
  })

  it('is forgotten when the session key changes, and then refused', () => {
    const oldKey = newKey()
    const cookie = cookieFor(oldKey)
    const checker = remembering(oldKey, cookie)
    const newAuth = authView(newKey())
    expect(refusal(checker, newAuth, cookie)).toBe('ERR_SESSION_INVALID')
    expect(checker.remembered).toBe(0)
    // A cluster without a session key yet accepts no session at all.
    expect(refusal(checker, authView(''), cookie)).toBe('ERR_SESSION_INVALID')
    expect(checker.remembered).toBe(0)
  })
})

describe('the memory of verified tokens', () => {
  it('never holds a forged or malformed token', () => {
    const key = newKey()
    const checker = new SessionChecker()
    const forged = cookieFor(newKey())
    const good = cookieFor(key)
    const tampered = `${good.slice(0, -2)}${good.endsWith('AA') ? 'AB' : 'AA'}`
    for (const cookie of [forged, tampered, `${sessionCookie}=not-a-token`, `${sessionCookie}=a.b.c`])
      expect(refusal(checker, authView(key), cookie)).toBe('ERR_SESSION_INVALID')
    expect(refusal(checker, authView(key), 'other=1')).toBe('ERR_UNAUTHENTICATED')
    expect(checker.remembered).toBe(0)
  })

  it(`holds at most ${verifiedSessionsMax} tokens, and still accepts tokens past that`, () => {
    const key = newKey()
    const auth = authView(key)
    const checker = new SessionChecker()
    let most = 0
    for (let i = 0; i <= verifiedSessionsMax + 10; i++) {
      const cookie = cookieFor(key, { sessionId: `session-${i}` })
      expect(checker.userOf(auth, cookie, NOW_MS).name).toBe('alice')
      most = Math.max(most, checker.remembered)
    }
    expect(most).toBe(verifiedSessionsMax)
    expect(checker.remembered).toBeLessThanOrEqual(verifiedSessionsMax)
  })
})
