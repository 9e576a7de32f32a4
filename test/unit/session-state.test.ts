// The session part of the replicated state: the session key is set once
// (later proposals are no-ops), session generations move on password change
// and revoke-all, single revocations are kept until their session would have
// expired and stay bounded, login failures lock progressively and are
// forgotten on success, and self-registration only works while open and
// makes pending users. Commands are built by hand and applied directly; a
// refused command must leave the snapshot bytes unchanged.

import { describe, expect, it } from 'vitest'
import {
  ClusterState,
  type Command,
  type CommandResult,
  encodeCommand,
} from '../../src/state/cluster-state.ts'
import {
  lockoutBaseMs,
  lockoutMaxMs,
  lockoutMsAfter,
  loginFailureMemoryMs,
  revokedSessionsMax,
  sessionGenerationOf,
} from '../../src/state/session-state.ts'

const KEY_A = 'a'.repeat(64)
const KEY_B = 'b'.repeat(64)
const noKey = { publicKey: '', privateKey: '' }

function apply(state: ClusterState, command: Command): CommandResult {
  return state.apply(encodeCommand(command))
}

function applyOk(state: ClusterState, command: Command): Record<string, unknown> {
  const result = apply(state, command)
  if (!result.ok) throw new Error(`${command.type} was refused: ${result.error.message}`)
  return result
}

function bytes(state: ClusterState): string {
  return Buffer.from(state.snapshot()).toString()
}

function cluster(): ClusterState {
  const state = new ClusterState()
  applyOk(state, {
    type: 'cluster.init',
    at: 1_000,
    clusterId: 'c1',
    member: { id: 'a', name: 'host-a', address: '/ip4/127.0.0.1/tcp/1', portal: '' },
    admin: { name: 'admin', passwordHash: 'h-admin' },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
  })
  applyOk(state, {
    type: 'user.add',
    at: 1_000,
    name: 'alice',
    role: 'user',
    group: 'user',
    passwordHash: 'h-alice',
    sshKey: noKey,
  })
  return state
}

describe('session state', () => {
  it('keeps the first session key committed and ignores later ones', () => {
    const state = cluster()
    expect(applyOk(state, { type: 'session.key', at: 2_000, key: KEY_A })).toMatchObject({ existing: false })
    expect(applyOk(state, { type: 'session.key', at: 2_001, key: KEY_B })).toMatchObject({ existing: true })
    expect(state.view.sessionKey).toBe(KEY_A)
  })

  it('refuses a session key that is not 32 bytes of hex, changing nothing', () => {
    const state = cluster()
    const before = bytes(state)
    expect(apply(state, { type: 'session.key', at: 2_000, key: 'short' })).toMatchObject({
      ok: false,
      error: { code: 'ERR_BAD_SESSION_KEY' },
    })
    expect(bytes(state)).toBe(before)
  })

  it('moves the session generation and stores the hash on a password change', () => {
    const state = cluster()
    expect(sessionGenerationOf(state.view, 'alice')).toBe(0)
    expect(
      applyOk(state, { type: 'user.password', at: 2_000, name: 'alice', passwordHash: 'h2' }),
    ).toMatchObject({ generation: 1 })
    expect(state.view.users.alice?.passwordHash).toBe('h2')
    expect(applyOk(state, { type: 'session.revoke-all', at: 2_001, user: 'alice' })).toMatchObject({
      generation: 2,
    })
    expect(sessionGenerationOf(state.view, 'alice')).toBe(2)
    expect(sessionGenerationOf(state.view, 'admin')).toBe(0)
  })

  it('keeps a revoked session until it would have expired, then drops it', () => {
    const state = cluster()
    applyOk(state, {
      type: 'session.revoke',
      at: 2_000,
      user: 'alice',
      session: 'session-1',
      expiresAt: 10_000,
    })
    expect(state.view.revokedSessions['session-1']).toBe(10_000)
    // Any later revocation prunes entries whose session has expired.
    applyOk(state, {
      type: 'session.revoke',
      at: 10_000,
      user: 'alice',
      session: 'session-2',
      expiresAt: 20_000,
    })
    expect(state.view.revokedSessions['session-1']).toBeUndefined()
    expect(state.view.revokedSessions['session-2']).toBe(20_000)
  })

  it('revokes all of a user’s sessions instead when the revocation list is full', () => {
    const state = cluster()
    const data = state.view as { revokedSessions: Record<string, number> }
    for (let i = 0; i < revokedSessionsMax; i++) data.revokedSessions[`filler-${i}`] = 1_000_000
    const result = applyOk(state, {
      type: 'session.revoke',
      at: 2_000,
      user: 'alice',
      session: 'one-more',
      expiresAt: 50_000,
    })
    expect(result).toMatchObject({ all: true, generation: 1 })
    expect(Object.keys(state.view.revokedSessions)).toHaveLength(revokedSessionsMax)
    expect(sessionGenerationOf(state.view, 'alice')).toBe(1)
  })

  it('locks a user out at the 5th failed login, for 5 minutes, doubling after that up to an hour', () => {
    const state = cluster()
    for (let i = 1; i <= 4; i++) {
      expect(applyOk(state, { type: 'login.failure', at: 2_000 + i, name: 'alice' })).toMatchObject({
        failures: i,
        lockedUntil: 0,
      })
    }
    expect(applyOk(state, { type: 'login.failure', at: 3_000, name: 'alice' })).toMatchObject({
      failures: 5,
      lockedUntil: 3_000 + lockoutBaseMs,
    })
    expect(applyOk(state, { type: 'login.failure', at: 400_000, name: 'alice' })).toMatchObject({
      failures: 6,
      lockedUntil: 400_000 + 2 * lockoutBaseMs,
    })
    expect(lockoutMsAfter(20)).toBe(lockoutMaxMs)
  })

  it('forgets failed logins on success, on a password change, and after a day without failures', () => {
    const state = cluster()
    for (let i = 0; i < 3; i++) applyOk(state, { type: 'login.failure', at: 2_000, name: 'alice' })
    applyOk(state, { type: 'login.success', at: 3_000, name: 'alice' })
    expect(state.view.loginFailures.alice).toBeUndefined()
    for (let i = 0; i < 5; i++) applyOk(state, { type: 'login.failure', at: 4_000, name: 'alice' })
    applyOk(state, { type: 'user.password', at: 5_000, name: 'alice', passwordHash: 'h3' })
    expect(state.view.loginFailures.alice).toBeUndefined()
    for (let i = 0; i < 4; i++) applyOk(state, { type: 'login.failure', at: 6_000, name: 'alice' })
    expect(
      applyOk(state, { type: 'login.failure', at: 6_001 + loginFailureMemoryMs, name: 'alice' }),
    ).toMatchObject({ failures: 1, lockedUntil: 0 })
  })

  it('records failures only for users that exist, so the table stays bounded by the user table', () => {
    const state = cluster()
    const before = bytes(state)
    expect(apply(state, { type: 'login.failure', at: 2_000, name: 'nobody' })).toMatchObject({
      ok: false,
      error: { code: 'ERR_USER_NOT_FOUND' },
    })
    expect(bytes(state)).toBe(before)
  })

  it('admits self-registration only while open, as a pending user of group user', () => {
    const state = cluster()
    const register: Command = {
      type: 'user.register',
      at: 2_000,
      name: 'carol',
      passwordHash: 'h-c',
      sshKey: noKey,
    }
    const before = bytes(state)
    expect(apply(state, register)).toMatchObject({ ok: false, error: { code: 'ERR_REGISTRATION_CLOSED' } })
    expect(bytes(state)).toBe(before)
    applyOk(state, { type: 'settings.registration', at: 2_000, open: true })
    applyOk(state, register)
    expect(state.view.users.carol).toMatchObject({ role: 'user', group: 'user', status: 'pending' })
    expect(apply(state, register)).toMatchObject({ ok: false, error: { code: 'ERR_USER_EXISTS' } })
  })

  it('gives equal snapshots on two replicas that applied the same commands', () => {
    const commands: Command[] = [
      { type: 'session.key', at: 2_000, key: KEY_A },
      { type: 'login.failure', at: 2_001, name: 'alice' },
      { type: 'session.revoke', at: 2_002, user: 'alice', session: 'abcdefgh', expiresAt: 9_000 },
      { type: 'settings.registration', at: 2_003, open: true },
    ]
    const one = cluster()
    const two = cluster()
    for (const command of commands) {
      apply(one, command)
      apply(two, command)
    }
    expect(bytes(one)).toBe(bytes(two))
    const restored = new ClusterState()
    restored.restore(one.snapshot())
    expect(bytes(restored)).toBe(bytes(one))
  })

  it('restores a snapshot taken before sessions existed with empty session state', () => {
    const state = cluster()
    const old = JSON.parse(bytes(state)) as Record<string, unknown>
    for (const key of [
      'sessionKey',
      'sessionGenerations',
      'revokedSessions',
      'loginFailures',
      'registrationOpen',
    ])
      delete old[key]
    const restored = new ClusterState()
    restored.restore(Buffer.from(JSON.stringify(old)))
    expect(restored.view.sessionKey).toBe('')
    expect(restored.view.registrationOpen).toBe(false)
    applyOk(restored, { type: 'login.failure', at: 2_000, name: 'alice' })
    expect(restored.view.loginFailures.alice?.failures).toBe(1)
  })
})
