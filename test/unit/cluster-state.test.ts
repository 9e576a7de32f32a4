// The cluster state machine: commands applied in order give the same state
// on every replica (snapshot bytes compared), join tokens are single-use,
// expire, can be revoked and need the right secret, and refused commands
// change nothing; a write retried with the same request id takes effect once
// and gets its first answer again, also after a snapshot. Commands are built
// by hand and applied directly.

import { describe, expect, it } from 'vitest'
import {
  ClusterState,
  type Command,
  type CommandResult,
  encodeCommand,
  REQUEST_IDS_MAX,
} from '../../src/state/cluster-state.ts'

const HOUR = 3_600_000

function apply(state: ClusterState, command: Command): CommandResult {
  return state.apply(encodeCommand(command))
}

function initialized(): ClusterState {
  const state = new ClusterState()
  apply(state, {
    type: 'cluster.init',
    at: 1_000,
    clusterId: 'c1',
    member: { id: 'a', name: 'host-a', address: '/ip4/127.0.0.1/tcp/1', portal: '' },
    admin: { name: 'admin', passwordHash: 'h' },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
  })
  apply(state, {
    type: 'token.create',
    at: 2_000,
    id: 't1',
    secretHash: 'good',
    expiresAt: 2_000 + HOUR,
    createdBy: 'root',
  })
  return state
}

const joiner = { id: 'b', name: 'host-b', address: '/ip4/127.0.0.1/tcp/2', portal: '' }

describe('ClusterState', () => {
  it('refuses every command but init before the cluster is initialized', () => {
    const state = new ClusterState()
    const result = apply(state, { type: 'token.revoke', at: 1, id: 'x' })
    expect(result).toEqual({
      ok: false,
      error: { code: 'ERR_NOT_INITIALIZED', message: 'The cluster is not initialized yet.' },
    })
  })

  it('admits a host with a valid token once, and only once', () => {
    const state = initialized()
    expect(
      apply(state, { type: 'member.join', at: 3_000, tokenId: 't1', secretHash: 'good', member: joiner }).ok,
    ).toBe(true)
    expect(state.member('b')?.address).toBe(joiner.address)
    const again = apply(state, {
      type: 'member.join',
      at: 3_500,
      tokenId: 't1',
      secretHash: 'good',
      member: { ...joiner, id: 'c' },
    })
    expect(again).toMatchObject({ ok: false, error: { code: 'ERR_TOKEN_USED' } })
    expect(state.member('c')).toBeUndefined()
  })

  it('answers a repeated join by the same host with the same success', () => {
    const state = initialized()
    apply(state, { type: 'member.join', at: 3_000, tokenId: 't1', secretHash: 'good', member: joiner })
    expect(
      apply(state, { type: 'member.join', at: 3_100, tokenId: 't1', secretHash: 'good', member: joiner }),
    ).toMatchObject({
      ok: true,
      retried: true,
    })
  })

  it('refuses a wrong secret, an unknown token, an expired token and a revoked token', () => {
    const state = initialized()
    const join = (at: number, tokenId: string, secretHash: string) =>
      apply(state, { type: 'member.join', at, tokenId, secretHash, member: joiner })
    expect(join(3_000, 't1', 'bad')).toMatchObject({ error: { code: 'ERR_TOKEN_INVALID' } })
    expect(join(3_000, 'nope', 'good')).toMatchObject({ error: { code: 'ERR_TOKEN_INVALID' } })
    expect(join(2_000 + HOUR, 't1', 'good')).toMatchObject({ error: { code: 'ERR_TOKEN_EXPIRED' } })
    apply(state, { type: 'token.revoke', at: 3_000, id: 't1' })
    expect(join(3_001, 't1', 'good')).toMatchObject({ error: { code: 'ERR_TOKEN_REVOKED' } })
    expect(state.member('b')).toBeUndefined()
  })

  it('never removes the last member', () => {
    const state = initialized()
    expect(apply(state, { type: 'member.remove', at: 5_000, id: 'a' })).toMatchObject({
      error: { code: 'ERR_LAST_MEMBER' },
    })
  })

  it('records liveness changes only when they change something', () => {
    const state = initialized()
    apply(state, { type: 'member.liveness', at: 9_000, changes: [{ id: 'a', online: false }] })
    expect(state.member('a')).toMatchObject({ online: false, onlineChangedAt: 9_000 })
    apply(state, { type: 'member.liveness', at: 9_500, changes: [{ id: 'a', online: false }] })
    expect(state.member('a')?.onlineChangedAt).toBe(9_000)
  })

  it('gives equal snapshots on replicas that applied the same commands, and restores them exactly', () => {
    const one = initialized()
    const two = initialized()
    for (const state of [one, two]) {
      apply(state, { type: 'member.join', at: 3_000, tokenId: 't1', secretHash: 'good', member: joiner })
      apply(state, { type: 'member.caught-up', at: 3_100, id: 'b' })
    }
    expect(Buffer.from(one.snapshot()).equals(Buffer.from(two.snapshot()))).toBe(true)
    const restored = new ClusterState()
    restored.restore(one.snapshot())
    expect(Buffer.from(restored.snapshot()).equals(Buffer.from(one.snapshot()))).toBe(true)
    expect(restored.member('b')?.caughtUp).toBe(true)
  })

  it('answers bytes that are not a command with a clear failure', () => {
    const state = initialized()
    expect(state.apply(new TextEncoder().encode('{nope'))).toMatchObject({
      ok: false,
      error: { code: 'ERR_BAD_COMMAND' },
    })
  })

  it('applies a write retried with the same request id once, answering the retry as the first time', () => {
    const state = initialized()
    const create = {
      type: 'token.create',
      at: 3_000,
      id: 't2',
      secretHash: 's',
      expiresAt: 9 * HOUR,
      createdBy: 'root',
    }
    const first = state.apply(encodeCommand({ ...create, rid: 'r-1' } as Command))
    expect(first.ok).toBe(true)
    const before = state.snapshot()
    // The same write again without its id is refused (the token exists); with it, it is the first answer.
    expect(state.apply(encodeCommand({ ...create, at: 3_500 } as Command)).ok).toBe(false)
    expect(state.apply(encodeCommand({ ...create, at: 3_500, rid: 'r-1' } as Command))).toEqual(first)
    expect(state.snapshot()).toEqual(before)
    // A replica restored from a snapshot remembers it too.
    const restored = new ClusterState()
    restored.restore(state.snapshot())
    expect(restored.apply(encodeCommand({ ...create, at: 4_000, rid: 'r-1' } as Command))).toEqual(first)
    expect(restored.snapshot()).toEqual(state.snapshot())
  })

  it('forgets the oldest request ids past REQUEST_IDS_MAX, the same way on every replica', () => {
    const a = initialized()
    const b = initialized()
    for (const state of [a, b]) {
      for (let i = 0; i <= REQUEST_IDS_MAX; i++)
        state.apply(
          encodeCommand({ type: 'token.revoke', at: 3_000 + i, id: 'nope', rid: `r-${i}` } as Command),
        )
      expect(state.view.requests.ids.length).toBe(REQUEST_IDS_MAX)
      expect(state.view.requests.results['r-0']).toBeUndefined()
      expect(state.view.requests.results[`r-${REQUEST_IDS_MAX}`]).toBeDefined()
    }
    expect(a.snapshot()).toEqual(b.snapshot())
  })
})
