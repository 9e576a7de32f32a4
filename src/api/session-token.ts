// Session tokens: `<payload>.<mac>`, both base64url, where the payload is
// JSON {u: user, g: session generation, s: session id, i: issued at ms,
// e: expires at ms} and the mac is HMAC-SHA256 over it with the cluster's
// session key (replicated state), so any node verifies any session without
// asking another. Pure: the caller supplies the key and the time.
//
// The CSRF token of a session is derived from its id with the same key
// (a signed double-submit token): nothing to store, any node can check it,
// and it cannot be forged or carried over to another session.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

export interface SessionClaims {
  user: string
  generation: number
  sessionId: string
  issuedAt: number
  expiresAt: number
}

/** Cookies are limited to about 4 KiB; anything longer is not ours. */
export const sessionTokenCharsMax = 2048

const MAC_CONTEXT = 'docklet-session.v1.'
const CSRF_CONTEXT = 'docklet-csrf.v1.'

function mac(keyHex: string, context: string, text: string): Buffer {
  return createHmac('sha256', Buffer.from(keyHex, 'hex'))
    .update(context + text)
    .digest()
}

export function newSessionId(): string {
  return randomBytes(18).toString('base64url')
}

export function signSession(keyHex: string, claims: SessionClaims): string {
  const payload = Buffer.from(
    JSON.stringify({
      u: claims.user,
      g: claims.generation,
      s: claims.sessionId,
      i: claims.issuedAt,
      e: claims.expiresAt,
    }),
  ).toString('base64url')
  return `${payload}.${mac(keyHex, MAC_CONTEXT, payload).toString('base64url')}`
}

/**
 * The claims of a token signed with `keyHex`, or null when it is malformed or
 * its signature is wrong. Expiry and revocation are the caller's checks.
 */
export function readSession(keyHex: string, token: string): SessionClaims | null {
  if (token.length > sessionTokenCharsMax) return null
  const [payload, signature, extra] = token.split('.')
  if (payload === undefined || signature === undefined || extra !== undefined) return null
  const expected = mac(keyHex, MAC_CONTEXT, payload)
  const given = Buffer.from(signature, 'base64url')
  // Only the one canonical spelling of the signature counts (base64's spare low bits could
  // otherwise be flipped and still decode to the same bytes).
  if (given.toString('base64url') !== signature) return null
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null
  let raw: unknown
  try {
    raw = JSON.parse(Buffer.from(payload, 'base64url').toString())
  } catch {
    return null
  }
  const claims = raw as { u?: unknown; g?: unknown; s?: unknown; i?: unknown; e?: unknown }
  if (
    typeof claims.u !== 'string' ||
    typeof claims.s !== 'string' ||
    !Number.isSafeInteger(claims.g) ||
    !Number.isSafeInteger(claims.i) ||
    !Number.isSafeInteger(claims.e)
  )
    return null
  return {
    user: claims.u,
    generation: claims.g as number,
    sessionId: claims.s,
    issuedAt: claims.i as number,
    expiresAt: claims.e as number,
  }
}

export function csrfTokenFor(keyHex: string, sessionId: string): string {
  return mac(keyHex, CSRF_CONTEXT, sessionId).toString('base64url')
}

export function csrfTokenMatches(keyHex: string, sessionId: string, given: string): boolean {
  const expected = Buffer.from(csrfTokenFor(keyHex, sessionId))
  const actual = Buffer.from(given)
  return actual.length === expected.length && timingSafeEqual(actual, expected)
}
