// Join tokens: what a new host needs to enter the cluster safely. The token
// carries the cluster id, the members' addresses and the PeerIds the new host
// may trust (so it never trusts the first key it sees, as Swarm pins its CA),
// plus a single-use secret of which only the sha256 is stored in Raft.

import { createHash, randomBytes } from 'node:crypto'

export const TOKEN_PREFIX = 'DKLT1-'

export interface JoinTokenPayload {
  /** Cluster id. */
  clusterId: string
  /** Token id (shown by `token list`, used by `token revoke`). */
  id: string
  /** The secret, base64url. */
  secret: string
  /** Members the joining host may contact, with the PeerIds it may trust. */
  members: Array<{ id: string; address: string }>
  expiresAt: number
}

export class JoinTokenError extends Error {
  readonly code = 'ERR_TOKEN_FORMAT'
  constructor(message: string) {
    super(message)
    this.name = 'JoinTokenError'
  }
}

export function newTokenSecret(): { id: string; secret: string; secretHash: string } {
  const id = randomBytes(6).toString('hex')
  const secret = randomBytes(32).toString('base64url')
  return { id, secret, secretHash: hashTokenSecret(secret) }
}

export function hashTokenSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

export function encodeJoinToken(payload: JoinTokenPayload): string {
  const compact = {
    c: payload.clusterId,
    i: payload.id,
    s: payload.secret,
    m: payload.members.map((m) => [m.id, m.address]),
    e: payload.expiresAt,
  }
  return TOKEN_PREFIX + Buffer.from(JSON.stringify(compact)).toString('base64url')
}

export function decodeJoinToken(token: string): JoinTokenPayload {
  const text = token.trim()
  const bad = (why: string) =>
    new JoinTokenError(
      `The join token is malformed (${why}). Copy it again from \`docklet token create\` on a member.`,
    )
  if (!text.startsWith(TOKEN_PREFIX)) throw bad(`it must start with ${TOKEN_PREFIX}`)
  let raw: unknown
  try {
    raw = JSON.parse(Buffer.from(text.slice(TOKEN_PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw bad('its body does not decode')
  }
  const r = raw as { c?: unknown; i?: unknown; s?: unknown; m?: unknown; e?: unknown }
  if (typeof r.c !== 'string' || r.c === '') throw bad('no cluster id')
  if (typeof r.i !== 'string' || r.i === '') throw bad('no token id')
  if (typeof r.s !== 'string' || r.s.length < 16) throw bad('no secret')
  if (typeof r.e !== 'number') throw bad('no expiry')
  if (!Array.isArray(r.m) || r.m.length === 0) throw bad('no members')
  const members: Array<{ id: string; address: string }> = []
  for (const m of r.m) {
    if (!Array.isArray(m) || typeof m[0] !== 'string' || typeof m[1] !== 'string')
      throw bad('a member entry is invalid')
    members.push({ id: m[0], address: m[1] })
  }
  return { clusterId: r.c, id: r.i, secret: r.s, members, expiresAt: r.e }
}
