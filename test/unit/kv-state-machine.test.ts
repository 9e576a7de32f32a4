// Checks the KV state machine used by tests and the Raft benchmark: put/get,
// compare-and-set semantics, exactly-once retries through client sessions
// (including bounded, deterministic session eviction), rejection of malformed
// commands, and that snapshot/restore reproduces the state byte for byte.
// Commands are fed to apply() directly, as the Raft driver would, with
// increasing log indexes.

import { describe, expect, it } from 'vitest'
import { encodeKvCommand, type KvCommand, KvStateMachine } from '../support/kv-state-machine.ts'

function applier(machine: KvStateMachine) {
  let index = 0
  return (command: KvCommand) => machine.apply(encodeKvCommand(command), ++index)
}

describe('KvStateMachine', () => {
  it('stores a put and returns the previous value', () => {
    const kv = new KvStateMachine()
    const apply = applier(kv)
    expect(apply({ op: 'put', key: 'a', value: '1' })).toEqual({ ok: true, value: '1', prev: null })
    expect(apply({ op: 'put', key: 'a', value: '2' })).toEqual({ ok: true, value: '2', prev: '1' })
    expect(kv.get('a')).toBe('2')
    expect(kv.get('missing')).toBeNull()
    expect(apply({ op: 'get', key: 'a' })).toEqual({ ok: true, value: '2' })
  })

  it('applies a compare-and-set only when the current value is the expected one', () => {
    const kv = new KvStateMachine()
    const apply = applier(kv)
    expect(apply({ op: 'cas', key: 'k', expected: 'x', value: '1' })).toEqual({
      ok: false,
      value: null,
      prev: null,
    })
    expect(kv.get('k')).toBeNull()
    expect(apply({ op: 'cas', key: 'k', expected: null, value: '1' })).toEqual({
      ok: true,
      value: '1',
      prev: null,
    })
    expect(apply({ op: 'cas', key: 'k', expected: null, value: '2' })).toEqual({
      ok: false,
      value: '1',
      prev: '1',
    })
    expect(apply({ op: 'cas', key: 'k', expected: '1', value: '3' })).toEqual({
      ok: true,
      value: '3',
      prev: '1',
    })
    expect(kv.get('k')).toBe('3')
  })

  it('answers a retried command from its session instead of applying it twice', () => {
    const kv = new KvStateMachine()
    const apply = applier(kv)
    const session = { clientId: 'c1', seq: 1 }
    const first = apply({ op: 'cas', key: 'k', expected: null, value: 'v1', session })
    expect(first).toEqual({ ok: true, value: 'v1', prev: null })
    // Applied twice without a session this CAS would fail the second time; the retry must see the first outcome.
    expect(apply({ op: 'cas', key: 'k', expected: null, value: 'v1', session })).toEqual(first)
    expect(apply({ op: 'put', key: 'k', value: 'v2', session: { clientId: 'c1', seq: 2 } })).toEqual({
      ok: true,
      value: 'v2',
      prev: 'v1',
    })
    expect(apply({ op: 'put', key: 'k', value: 'old', session })).toEqual({
      ok: false,
      value: null,
      error: 'ERR_STALE_SEQ',
    })
    expect(kv.get('k')).toBe('v2')
    // Another client's seq numbers are independent.
    expect(apply({ op: 'put', key: 'k', value: 'v3', session: { clientId: 'c2', seq: 1 } }).ok).toBe(true)
    expect(kv.get('k')).toBe('v3')
  })

  it('forgets the least recently used session beyond the limit', () => {
    const kv = new KvStateMachine({ sessionsMax: 2 })
    const apply = applier(kv)
    apply({ op: 'put', key: 'k', value: 'a', session: { clientId: 'a', seq: 1 } })
    apply({ op: 'put', key: 'k', value: 'b', session: { clientId: 'b', seq: 1 } })
    // Touching "a" again makes "b" the oldest.
    apply({ op: 'put', key: 'k', value: 'a', session: { clientId: 'a', seq: 1 } })
    apply({ op: 'put', key: 'k', value: 'c', session: { clientId: 'c', seq: 1 } })
    expect(kv.sessionCount).toBe(2)
    // "b" was evicted, so its retry applies again and reports the value it overwrote.
    expect(apply({ op: 'put', key: 'k', value: 'b', session: { clientId: 'b', seq: 1 } }).prev).toBe('c')
    // "c" is still known, so its retry returns the cached result.
    expect(apply({ op: 'put', key: 'k', value: 'c', session: { clientId: 'c', seq: 1 } }).prev).toBe('b')
    expect(kv.get('k')).toBe('b')
  })

  it('refuses malformed commands without changing the state', () => {
    const kv = new KvStateMachine()
    const bad = [
      'not json',
      '42',
      '{"op":"put","key":"k"}',
      '{"op":"drop","key":"k"}',
      '{"op":"cas","key":"k","expected":1,"value":"v"}',
      '{"op":"put","key":"k","value":"v","session":{"clientId":"c"}}',
    ]
    bad.forEach((text, i) => {
      expect(kv.apply(new TextEncoder().encode(text), i + 1)).toEqual({
        ok: false,
        value: null,
        error: 'ERR_BAD_COMMAND',
      })
    })
    expect(kv.size).toBe(0)
    expect(kv.sessionCount).toBe(0)
  })

  it('restores a snapshot into an equal state that keeps behaving like the original', () => {
    const original = new KvStateMachine({ sessionsMax: 3 })
    const apply = applier(original)
    for (let i = 0; i < 50; i++) {
      apply({
        op: 'put',
        key: `key-${(i * 7) % 13}`,
        value: `v${i}`,
        session: { clientId: `c${i % 4}`, seq: i },
      })
    }
    const bytes = original.snapshot()

    const copy = new KvStateMachine({ sessionsMax: 3 })
    copy.restore(bytes)
    expect(copy.snapshot()).toEqual(bytes)
    expect(copy.size).toBe(original.size)
    for (let k = 0; k < 13; k++) expect(copy.get(`key-${k}`)).toBe(original.get(`key-${k}`))

    // The same further commands give the same results and the same state, including which session is evicted.
    const applyCopy = (command: KvCommand, index: number) => copy.apply(encodeKvCommand(command), index)
    const more: KvCommand[] = [
      { op: 'put', key: 'n', value: '1', session: { clientId: 'new', seq: 1 } },
      { op: 'put', key: 'key-0', value: 'again', session: { clientId: 'c1', seq: 49 } },
      { op: 'put', key: 'key-0', value: 'again', session: { clientId: 'c3', seq: 47 } },
      { op: 'get', key: 'key-0' },
    ]
    more.forEach((command, i) => {
      expect(applyCopy(command, 51 + i)).toEqual(original.apply(encodeKvCommand(command), 51 + i))
    })
    expect(copy.snapshot()).toEqual(original.snapshot())
  })

  it('encodes equal states to equal bytes whatever order the keys were written in', () => {
    const a = new KvStateMachine()
    const b = new KvStateMachine()
    applier(a)({ op: 'put', key: 'x', value: '1' })
    applier(a)({ op: 'put', key: 'y', value: '2' })
    const applyB = applier(b)
    applyB({ op: 'put', key: 'y', value: '2' })
    applyB({ op: 'put', key: 'x', value: '1' })
    expect(a.snapshot()).toEqual(b.snapshot())
  })

  it('rejects a snapshot in another layout with a clear message and keeps its state', () => {
    const kv = new KvStateMachine()
    kv.apply(encodeKvCommand({ op: 'put', key: 'k', value: 'v' }), 1)
    expect(() => kv.restore(new TextEncoder().encode('{"v":1,"entries":[],"sessions":[]}'))).toThrow(
      /not in the KV2 layout/,
    )
    expect(kv.get('k')).toBe('v')
  })
})
