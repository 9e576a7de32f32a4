// Who is behind a proxied request: the user of the portal session cookie,
// checked exactly as the API checks it (src/api/api-context.ts): signature
// with the cluster's session key from the replicated state, expiry, an
// active user, and neither the session nor its generation revoked. Pure over
// the auth view (proxy-view.ts) and the time, so every node and every proxy
// worker answers alike without asking another.
//
// A browser sends the same cookie with every request, so a verified
// signature is remembered (token → claims, bounded): the per-request work is
// then a map lookup and the checks that depend on the state and the time,
// which always run. The memory is dropped whenever the session key changes.

import { readSession, type SessionClaims } from '../api/session-token.ts'
import { sessionCookie } from './portal-names.ts'
import { ProxyError } from './proxy-error.ts'
import type { AuthView, ProxyUser } from './proxy-view.ts'

/** Verified tokens remembered; past this the memory starts over (a flood of forged tokens is never stored). */
export const verifiedSessionsMax = 4_096

export interface SessionUser {
  name: string
  role: ProxyUser['role']
}

const COOKIE_PREFIX = `${sessionCookie}=`

/** The value of the session cookie in a Cookie header, as parseCookies finds it (the first one); '' for none. */
export function sessionTokenOf(cookieHeader: string | undefined): string {
  if (cookieHeader === undefined) return ''
  let from = 0
  while (from < cookieHeader.length) {
    const end = cookieHeader.indexOf(';', from)
    const stop = end < 0 ? cookieHeader.length : end
    let start = from
    while (start < stop && (cookieHeader.charCodeAt(start) === 32 || cookieHeader.charCodeAt(start) === 9))
      start++
    if (cookieHeader.startsWith(COOKIE_PREFIX, start))
      return cookieHeader.slice(start + COOKIE_PREFIX.length, stop).trim()
    // A name with blanks before its '=' is the same cookie to parseCookies.
    const eq = cookieHeader.indexOf('=', start)
    if (eq >= 0 && eq < stop && cookieHeader.slice(start, eq).trim() === sessionCookie)
      return cookieHeader.slice(eq + 1, stop).trim()
    from = stop + 1
  }
  return ''
}

export class SessionChecker {
  private readonly verified = new Map<string, SessionClaims>()
  private key = ''

  /** Verified tokens remembered now (for tests). */
  get remembered(): number {
    return this.verified.size
  }

  /** The user of the session in `cookieHeader`; throws a 401 ProxyError saying why there is none. */
  userOf(auth: AuthView, cookieHeader: string | undefined, nowMs: number): SessionUser {
    const token = sessionTokenOf(cookieHeader)
    if (token === '')
      throw new ProxyError(
        'ERR_UNAUTHENTICATED',
        401,
        'Log in to the docklet portal first to open a workspace.',
      )
    const claims = this.claimsOf(auth.sessionKey, token)
    if (claims === null)
      throw new ProxyError(
        'ERR_SESSION_INVALID',
        401,
        'The session is not valid on this cluster; log in again.',
      )
    if (claims.expiresAt <= nowMs)
      throw new ProxyError('ERR_SESSION_EXPIRED', 401, 'The session has expired; log in again.')
    const user = auth.users.get(claims.user)
    if (user === undefined || !user.active)
      throw new ProxyError(
        'ERR_SESSION_INVALID',
        401,
        `The user ${claims.user} may not log in now; ask an admin.`,
      )
    // A newer generation is fine: this replica may lag behind the node that issued it.
    if (claims.generation < user.generation || auth.revoked.has(claims.sessionId))
      throw new ProxyError(
        'ERR_SESSION_REVOKED',
        401,
        'The session was ended (logout or password change); log in again.',
      )
    return { name: claims.user, role: user.role }
  }

  private claimsOf(sessionKey: string, token: string): SessionClaims | null {
    if (sessionKey !== this.key) {
      this.verified.clear()
      this.key = sessionKey
    }
    if (sessionKey === '') return null
    const known = this.verified.get(token)
    if (known !== undefined) return known
    const claims = readSession(sessionKey, token)
    if (claims === null) return null
    if (this.verified.size >= verifiedSessionsMax) this.verified.clear()
    this.verified.set(token, claims)
    return claims
  }
}
