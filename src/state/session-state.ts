// What the portal's sessions and logins need from the replicated state, so
// that any node verifies any session and a login lockout holds on every node
// at once (spreading guesses over nodes does not help an attacker).
//
// - sessionKey: the HMAC key sessions are signed with. The API generates it
//   and submits `session.key` once when the state has none; the first one
//   committed wins and later ones are no-ops, so racing nodes converge.
// - sessionGenerations: per user; a session token carries the generation it
//   was issued under and is void once the user's generation moved past it
//   (password change, "log out everywhere").
// - revokedSessions: single logged-out sessions (by session id) until they
//   would have expired anyway. Bounded by revokedSessionsMax: when full, the
//   user's generation is bumped instead, which revokes more but never less.
// - loginFailures: per existing user (so bounded by the user table), with a
//   progressive lockout: the 5th failure locks for 5 minutes, each further
//   one doubles it, up to an hour; a success or a day without failures
//   forgets them.
// - registrationOpen: whether self-registration (pending users) is allowed.

import { applyAccountCommand, type SshKeyPair } from './account-state.ts'
import type { ClusterData, CommandResult } from './cluster-state.ts'
import { failure } from './state-error.ts'

export interface LoginFailures {
  failures: number
  lastFailureAt: number
  /** Logins are refused before this time (0: not locked). */
  lockedUntil: number
}

export interface SessionData {
  /** Hex HMAC-SHA256 key for session tokens; '' until the first `session.key`. */
  sessionKey: string
  sessionGenerations: Record<string, number>
  /** Session id -> when that session would have expired anyway (ms). */
  revokedSessions: Record<string, number>
  loginFailures: Record<string, LoginFailures>
  registrationOpen: boolean
}

export type SessionCommand =
  | { type: 'session.key'; at: number; key: string }
  | { type: 'session.revoke'; at: number; user: string; session: string; expiresAt: number }
  | { type: 'session.revoke-all'; at: number; user: string }
  | { type: 'user.password'; at: number; name: string; passwordHash: string }
  | { type: 'user.register'; at: number; name: string; passwordHash: string; sshKey: SshKeyPair }
  | { type: 'login.failure'; at: number; name: string }
  | { type: 'login.success'; at: number; name: string }
  | { type: 'settings.registration'; at: number; open: boolean }

export const sessionCommandTypes: ReadonlySet<string> = new Set([
  'session.key',
  'session.revoke',
  'session.revoke-all',
  'user.password',
  'user.register',
  'login.failure',
  'login.success',
  'settings.registration',
])

export const revokedSessionsMax = 10_000
/** No session lives longer; a revocation entry is kept at most this long. */
export const sessionLifetimeMaxMs = 7 * 24 * 3600 * 1000
export const loginFailuresBeforeLockout = 5
export const lockoutBaseMs = 5 * 60 * 1000
export const lockoutMaxMs = 60 * 60 * 1000
/** Failures older than this (with none since) are forgotten. */
export const loginFailureMemoryMs = 24 * 3600 * 1000
/** Counting stops here: the lockout is at its maximum long before. */
const loginFailuresCountMax = 64

const sessionKeyPattern = /^[0-9a-f]{64}$/
const sessionIdPattern = /^[A-Za-z0-9_-]{8,64}$/

export function emptySessionData(): SessionData {
  return {
    sessionKey: '',
    sessionGenerations: {},
    revokedSessions: {},
    loginFailures: {},
    registrationOpen: false,
  }
}

export function sessionGenerationOf(data: SessionData, user: string): number {
  return data.sessionGenerations[user] ?? 0
}

/** When logins of `name` are allowed again (0 or a past time: now). */
export function lockedUntilOf(data: SessionData, name: string): number {
  return data.loginFailures[name]?.lockedUntil ?? 0
}

/** How long the lockout after the n-th consecutive failure lasts (0: none). */
export function lockoutMsAfter(failures: number): number {
  if (failures < loginFailuresBeforeLockout) return 0
  return Math.min(lockoutMaxMs, lockoutBaseMs * 2 ** (failures - loginFailuresBeforeLockout))
}

function bumpGeneration(data: ClusterData, user: string): number {
  const next = sessionGenerationOf(data, user) + 1
  data.sessionGenerations[user] = next
  return next
}

function pruneRevoked(data: ClusterData, now: number): void {
  for (const [id, expiresAt] of Object.entries(data.revokedSessions))
    if (expiresAt <= now) delete data.revokedSessions[id]
}

function pruneFailures(data: ClusterData, now: number): void {
  for (const [name, entry] of Object.entries(data.loginFailures))
    if (now - entry.lastFailureAt > loginFailureMemoryMs && entry.lockedUntil <= now)
      delete data.loginFailures[name]
}

export function applySessionCommand(data: ClusterData, command: SessionCommand): CommandResult {
  switch (command.type) {
    case 'session.key': {
      if (typeof command.key !== 'string' || !sessionKeyPattern.test(command.key))
        return failure('ERR_BAD_SESSION_KEY', 'The session key must be 32 bytes in lowercase hex.')
      // The first key committed wins: every node that found none proposes one.
      if (data.sessionKey !== '') return { ok: true, existing: true }
      data.sessionKey = command.key
      return { ok: true, existing: false }
    }
    case 'session.revoke': {
      if (data.users[command.user] === undefined)
        return failure('ERR_USER_NOT_FOUND', `There is no user named ${command.user}.`)
      if (typeof command.session !== 'string' || !sessionIdPattern.test(command.session))
        return failure('ERR_BAD_SESSION', 'The session id is not valid.')
      pruneRevoked(data, command.at)
      if (command.expiresAt <= command.at) return { ok: true, expired: true }
      if (data.revokedSessions[command.session] === undefined) {
        if (Object.keys(data.revokedSessions).length >= revokedSessionsMax) {
          // The list is full: revoke all the user's sessions rather than keep this one alive.
          return { ok: true, generation: bumpGeneration(data, command.user), all: true }
        }
        data.revokedSessions[command.session] = Math.min(command.expiresAt, command.at + sessionLifetimeMaxMs)
      }
      return { ok: true, all: false }
    }
    case 'session.revoke-all': {
      if (data.users[command.user] === undefined)
        return failure('ERR_USER_NOT_FOUND', `There is no user named ${command.user}.`)
      return { ok: true, generation: bumpGeneration(data, command.user) }
    }
    case 'user.password': {
      const user = data.users[command.name]
      if (user === undefined) return failure('ERR_USER_NOT_FOUND', `There is no user named ${command.name}.`)
      if (typeof command.passwordHash !== 'string' || command.passwordHash === '')
        return failure('ERR_BAD_PASSWORD_HASH', 'The password hash is missing.')
      user.passwordHash = command.passwordHash
      // A new password ends every session issued under the old one, and a lockout.
      delete data.loginFailures[command.name]
      return { ok: true, name: command.name, generation: bumpGeneration(data, command.name) }
    }
    case 'user.register': {
      if (!data.registrationOpen)
        return failure('ERR_REGISTRATION_CLOSED', 'Self-registration is closed; ask an admin for an account.')
      return applyAccountCommand(data, {
        type: 'user.add',
        at: command.at,
        name: command.name,
        role: 'user',
        group: 'user',
        status: 'pending',
        passwordHash: command.passwordHash,
        sshKey: command.sshKey,
      })
    }
    case 'login.failure': {
      if (data.users[command.name] === undefined)
        return failure('ERR_USER_NOT_FOUND', `There is no user named ${command.name}.`)
      pruneFailures(data, command.at)
      const entry = (data.loginFailures[command.name] ??= {
        failures: 0,
        lastFailureAt: command.at,
        lockedUntil: 0,
      })
      entry.failures = Math.min(loginFailuresCountMax, entry.failures + 1)
      entry.lastFailureAt = command.at
      const lockMs = lockoutMsAfter(entry.failures)
      if (lockMs > 0) entry.lockedUntil = command.at + lockMs
      return { ok: true, failures: entry.failures, lockedUntil: entry.lockedUntil }
    }
    case 'login.success': {
      delete data.loginFailures[command.name]
      return { ok: true }
    }
    case 'settings.registration': {
      if (typeof command.open !== 'boolean')
        return failure('ERR_BAD_SETTINGS', 'The registration setting must be true or false.')
      data.registrationOpen = command.open
      return { ok: true, open: command.open }
    }
  }
}
