// Checks the KV state machine used by tests and the Raft benchmark: put/get,
// compare-and-set semantics, exactly-once retries through client sessions
// (including bounded, deterministic session eviction), rejection of malformed
// commands, and that snapshot/restore reproduces the state byte for byte.
// Commands are fed to apply() directly, as the Raft driver would, with
// increasing log indexes. snapshotAsync is driven through an injected yield
// that applies more commands (or restores another state) between its
// slices, as the driver does while a snapshot is built, and its bytes are
// compared with snapshot() taken at the moment it was called.

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

  it('encodes replicas that applied the same commands to equal bytes, also one that caught up through a snapshot', () => {
    const commands: KvCommand[] = []
    for (let i = 0; i < 60; i++) {
      commands.push({
        op: i % 5 === 0 ? 'cas' : 'put',
        key: `k${(i * 11) % 17}`,
        expected: null,
        value: `v${i}`,
        session: { clientId: `c${i % 3}`, seq: i },
      } as KvCommand)
    }
    const applyRange = (kv: KvStateMachine, from: number, to: number) => {
      for (let i = from; i < to; i++) kv.apply(encodeKvCommand(commands[i]!), i + 1)
    }
    const direct = new KvStateMachine()
    applyRange(direct, 0, commands.length)
    const source = new KvStateMachine()
    applyRange(source, 0, 25)
    const caughtUp = new KvStateMachine()
    caughtUp.restore(source.snapshot())
    applyRange(caughtUp, 25, commands.length)
    expect(caughtUp.snapshot()).toEqual(direct.snapshot())
    expect(caughtUp.entries()).toEqual(direct.entries())
  })

  it('snapshots values outside ASCII and restores them', () => {
    const kv = new KvStateMachine()
    const apply = applier(kv)
    // Multi-byte UTF-8 makes the encoder outgrow the buffer it sized from string lengths.
    for (let i = 0; i < 40; i++) apply({ op: 'put', key: `clé-${i}`, value: `ünïcødé 🚀 ${'€'.repeat(i)}` })
    const copy = new KvStateMachine()
    copy.restore(kv.snapshot())
    expect(copy.entries()).toEqual(kv.entries())
    expect(copy.get('clé-39')).toBe(`ünïcødé 🚀 ${'€'.repeat(39)}`)
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

describe('KvStateMachine.snapshotAsync', () => {
  /** A KV whose snapshotAsync runs `between` at each yield (counting them), in slices of `sliceBytes`. */
  function slicedKv(sliceBytes: number, between: (yields: number) => void = () => {}) {
    let yields = 0
    const kv = new KvStateMachine({
      snapshotSliceBytes: sliceBytes,
      yieldToLoop: async () => {
        yields++
        between(yields)
      },
    })
    return { kv, yields: () => yields }
  }

  it('encodes the state as it was when called, in slices, while puts change and add keys', async () => {
    let index = 0
    const { kv, yields } = slicedKv(64, (n) => {
      // Between slices: overwrite keys already encoded and keys not yet encoded, and add new ones.
      kv.apply(encodeKvCommand({ op: 'put', key: `key-${n % 30}`, value: `changed-${n}` }), ++index)
      kv.apply(encodeKvCommand({ op: 'put', key: `key-${(n * 7) % 30}`, value: `again-${n}` }), ++index)
      kv.apply(
        encodeKvCommand({ op: 'put', key: `new-${n}`, value: 'x', session: { clientId: `s${n}`, seq: 1 } }),
        ++index,
      )
    })
    for (let i = 0; i < 30; i++) {
      kv.apply(
        encodeKvCommand({
          op: 'put',
          key: `key-${i}`,
          value: `value-${i}`,
          session: { clientId: 'c', seq: i },
        }),
        ++index,
      )
    }
    const expected = kv.snapshot()
    const bytes = await kv.snapshotAsync()
    expect(yields()).toBeGreaterThan(5)
    expect(bytes).toEqual(expected)
    // The live state did move on meanwhile, and a later snapshot shows it.
    expect(kv.get('new-1')).toBe('x')
    expect(kv.snapshot()).not.toEqual(expected)
  })

  it('gives the bytes snapshot() gives when nothing changes meanwhile, in one slice or many', async () => {
    for (const sliceBytes of [1, 100, 1024 * 1024]) {
      const { kv } = slicedKv(sliceBytes)
      const apply = applier(kv)
      for (let i = 0; i < 50; i++) apply({ op: 'put', key: `k${i}`, value: `v${i}`.repeat(i) })
      expect(await kv.snapshotAsync()).toEqual(kv.snapshot())
    }
    const empty = slicedKv(8).kv
    expect(await empty.snapshotAsync()).toEqual(empty.snapshot())
  })

  it('is not disturbed by a restore while it encodes', async () => {
    const other = new KvStateMachine()
    applier(other)({ op: 'put', key: 'other', value: 'state' })
    const { kv } = slicedKv(16, (n) => {
      if (n === 2) kv.restore(other.snapshot())
      // After the restore, puts change the new map, not the one being encoded.
      kv.apply(encodeKvCommand({ op: 'put', key: 'k1', value: `after-${n}` }), 100 + n)
    })
    const apply = applier(kv)
    for (let i = 0; i < 20; i++) apply({ op: 'put', key: `k${i}`, value: `v${i}` })
    const expected = kv.snapshot()
    expect(await kv.snapshotAsync()).toEqual(expected)
    expect(kv.get('other')).toBe('state')
    expect(kv.get('k2')).toBeNull()
  })

  it('stops at the next slice with the abort reason once its signal aborts', async () => {
    const controller = new AbortController()
    const { kv, yields } = slicedKv(8, (n) => {
      if (n === 3) controller.abort(new Error('the node stops'))
    })
    const apply = applier(kv)
    for (let i = 0; i < 50; i++) apply({ op: 'put', key: `k${i}`, value: `v${i}` })
    await expect(kv.snapshotAsync({ signal: controller.signal })).rejects.toThrow('the node stops')
    expect(yields()).toBe(3)
    // A snapshot after an aborted one is whole again.
    const copy = new KvStateMachine()
    copy.restore(await kv.snapshotAsync())
    expect(copy.entries()).toEqual(kv.entries())
  })

  it('yields to the event loop by default: timers run while a large state is encoded', async () => {
    const kv = new KvStateMachine({ snapshotSliceBytes: 4096 })
    const apply = applier(kv)
    const value = 'v'.repeat(200)
    for (let i = 0; i < 2_000; i++) apply({ op: 'put', key: `key-${i}`, value })
    let timerRan = false
    setTimeout(() => {
      timerRan = true
    }, 0)
    // Encoded in one go, the promise would settle before the timer could fire.
    const bytes = await kv.snapshotAsync()
    expect(timerRan).toBe(true)
    expect(bytes).toEqual(kv.snapshot())
  })
})
