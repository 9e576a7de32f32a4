// The internal hop header: when vnode 0 of a workspace runs on another host,
// the node the browser reached checks the session itself and forwards the
// request over the mesh to that host's node with `X-Docklet-Hop: <payload>.<mac>`.
// The payload is JSON {t: target member id, u: user, p: request target (path
// and query), e: expires at ms}, the mac HMAC-SHA256 over it with the
// cluster's session key under its own context, so it cannot be mistaken for
// a session token. The far node proxies only a hop that verifies: addressed
// to it, for exactly this path, not expired and not issued for longer than
// the hop lifetime. A request from outside carrying the header is refused
// like a forged one. Pure: the caller supplies the key and the time.

import { createHmac, timingSafeEqual } from 'node:crypto'

export const hopHeader = 'x-docklet-hop'
/** Long enough for a request to cross the mesh; short so a copied header is soon useless. */
export const hopTtlMsDefault = 30_000
/** How far ahead of this node's clock another host's clock may run. */
export const hopClockSkewMsMax = 5_000
/** The header holds a path (Node limits the request line), a member id and a user: nothing longer is ours. */
export const hopTokenCharsMax = 24 * 1024

const MAC_CONTEXT = 'docklet-hop.v1.'

export interface HopClaims {
  /** The member id of the node that is to proxy the request. */
  target: string
  /** Who the first node authenticated (for the far node's log). */
  user: string
  /** The request target (path and query) the hop is good for. */
  url: string
  expiresAt: number
}

function mac(keyHex: string, payload: string): Buffer {
  return createHmac('sha256', Buffer.from(keyHex, 'hex'))
    .update(MAC_CONTEXT + payload)
    .digest()
}

export function signHop(keyHex: string, claims: HopClaims): string {
  const payload = Buffer.from(
    JSON.stringify({ t: claims.target, u: claims.user, p: claims.url, e: claims.expiresAt }),
  ).toString('base64url')
  return `${payload}.${mac(keyHex, payload).toString('base64url')}`
}

export interface HopExpectation {
  /** This node's member id. */
  self: string
  /** The request target as this node received it. */
  url: string
  nowMs: number
  ttlMs?: number
}

/** The claims of a hop header good for this node, this path and now; null otherwise (never says which check failed). */
export function verifyHop(keyHex: string, token: string, expect: HopExpectation): HopClaims | null {
  if (keyHex === '' || token.length > hopTokenCharsMax) return null
  const [payload, signature, extra] = token.split('.')
  if (payload === undefined || signature === undefined || extra !== undefined) return null
  const expected = mac(keyHex, payload)
  const given = Buffer.from(signature, 'base64url')
  if (given.toString('base64url') !== signature) return null // only the canonical spelling counts
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null
  let raw: { t?: unknown; u?: unknown; p?: unknown; e?: unknown }
  try {
    raw = JSON.parse(Buffer.from(payload, 'base64url').toString()) as typeof raw
  } catch {
    return null
  }
  if (
    typeof raw.t !== 'string' ||
    typeof raw.u !== 'string' ||
    typeof raw.p !== 'string' ||
    !Number.isSafeInteger(raw.e)
  )
    return null
  const expiresAt = raw.e as number
  const ttlMs = expect.ttlMs ?? hopTtlMsDefault
  if (raw.t !== expect.self || raw.p !== expect.url) return null
  if (expiresAt <= expect.nowMs || expiresAt > expect.nowMs + ttlMs + hopClockSkewMsMax) return null
  return { target: raw.t, user: raw.u, url: raw.p, expiresAt }
}
