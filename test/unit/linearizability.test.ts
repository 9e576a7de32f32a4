// Checks the linearizability checker (test/support/linearizability.ts) with the
// register/CAS model: small hand-written histories whose answer is known
// (linearizable, not linearizable, with timed-out operations), per-key
// partitioning, randomized histories recorded from a real sequential
// execution (linearizable by construction, then broken by one mutated read),
// and the search budget on a history built to make the search exponential.

import { describe, expect, it } from 'vitest'
import {
  checkLinearizability,
  type History,
  LinearizabilityInputError,
  type Operation,
} from '../support/linearizability.ts'
import { type RegisterInput, type RegisterOutput, registerModel } from '../support/linearizability-model.ts'

type Op = Operation<RegisterInput, RegisterOutput>

function read(clientId: number, callMs: number, returnMs: number, value: string | null, key = 'k'): Op {
  return { clientId, key, input: { op: 'read' }, output: { value }, callMs, returnMs }
}

function write(clientId: number, callMs: number, returnMs: number, value: string, key = 'k'): Op {
  return { clientId, key, input: { op: 'write', value }, output: { ok: true }, callMs, returnMs }
}

function cas(
  clientId: number,
  callMs: number,
  returnMs: number,
  expected: string | null,
  value: string,
  ok: boolean,
  key = 'k',
): Op {
  return { clientId, key, input: { op: 'cas', expected, value }, output: { ok }, callMs, returnMs }
}

/** The same operation, but the client never learned its outcome. */
function timedOut(op: Op): Op {
  return { ...op, output: undefined, returnMs: Number.POSITIVE_INFINITY }
}

function check(history: History<RegisterInput, RegisterOutput>, options = {}) {
  return checkLinearizability(history, registerModel, options)
}

describe('histories that are linearizable', () => {
  it('accepts an empty history', () => {
    expect(check([])).toMatchObject({ ok: true, timedOut: false })
  })

  it('accepts a sequential history of reads, writes and compare-and-swaps', () => {
    const history = [
      read(1, 0, 1, null),
      write(1, 2, 3, 'a'),
      read(2, 4, 5, 'a'),
      cas(2, 6, 7, 'a', 'b', true),
      cas(1, 8, 9, 'a', 'c', false),
      read(1, 10, 11, 'b'),
    ]
    expect(check(history)).toMatchObject({ ok: true, timedOut: false })
  })

  it('accepts either value for a read after two overlapping writes', () => {
    for (const seen of ['a', 'b']) {
      const history = [write(1, 0, 10, 'a'), write(2, 5, 15, 'b'), read(3, 20, 21, seen)]
      expect(check(history).ok, `read of ${seen}`).toBe(true)
    }
  })

  it('accepts the old or the new value for a read that overlaps a write', () => {
    for (const seen of [null, 'a']) {
      const history = [write(1, 0, 10, 'a'), read(2, 5, 6, seen)]
      expect(check(history).ok, `read of ${seen}`).toBe(true)
    }
  })

  it('accepts a compare-and-swap race where exactly one of two clients wins', () => {
    const history = [
      write(1, 0, 1, 'a'),
      cas(1, 2, 10, 'a', 'x', false),
      cas(2, 3, 9, 'a', 'y', true),
      read(3, 11, 12, 'y'),
    ]
    expect(check(history).ok).toBe(true)
  })

  it('takes a return and a call in the same millisecond as concurrent', () => {
    // Millisecond stamps cannot tell which came first, so the read may precede the write.
    const history = [write(1, 0, 5, 'a'), read(2, 5, 6, null)]
    expect(check(history).ok).toBe(true)
  })
})

describe('histories that are not linearizable', () => {
  it('rejects a stale read after a completed write', () => {
    const history = [write(1, 0, 1, 'a'), write(1, 2, 3, 'b'), read(2, 4, 5, 'a')]
    const result = check(history)
    expect(result).toMatchObject({ ok: false, timedOut: false, failingKey: 'k' })
    expect(result.partial?.blockedBy).toBe(history[2])
  })

  it('rejects a read of a value that was never written', () => {
    const history = [write(1, 0, 1, 'a'), read(2, 2, 3, 'zzz')]
    const result = check(history)
    expect(result.ok).toBe(false)
    expect(result.partial?.longestPrefix).toEqual([history[0]])
    expect(result.partial?.stateAfterPrefix).toBe('"a"')
    expect(result.partial?.pending).toEqual([history[1]])
    expect(result.partial?.message).toContain('client 2: read -> "zzz"')
  })

  it('rejects two successful compare-and-swaps from the same expected value', () => {
    const history = [write(1, 0, 1, 'a'), cas(1, 2, 10, 'a', 'x', true), cas(2, 3, 9, 'a', 'y', true)]
    expect(check(history)).toMatchObject({ ok: false, failingKey: 'k' })
  })

  it('rejects an acknowledged write that later reads never see', () => {
    const history = [write(1, 0, 1, 'a'), read(2, 2, 3, null)]
    expect(check(history).ok).toBe(false)
  })

  it('rejects an overwritten value that comes back (a lost write)', () => {
    const history = [write(1, 0, 10, 'a'), write(2, 5, 15, 'b'), read(3, 20, 21, 'b'), read(3, 22, 23, 'a')]
    const result = check(history)
    expect(result.ok).toBe(false)
    expect(result.partial?.blockedBy).toBe(history[3])
  })

  it('rejects a compare-and-swap that reports failure although the value matched', () => {
    const history = [write(1, 0, 1, 'a'), cas(2, 2, 3, 'a', 'b', false)]
    expect(check(history).ok).toBe(false)
  })
})

describe('operations whose outcome is unknown', () => {
  it('accepts a timed-out write whose value later appears', () => {
    const history = [timedOut(write(1, 0, 0, 'a')), read(2, 50, 60, 'a')]
    expect(check(history).ok).toBe(true)
  })

  it('accepts a timed-out write that never appears', () => {
    const history = [timedOut(write(1, 0, 0, 'a')), read(2, 50, 60, null), read(2, 70, 80, null)]
    expect(check(history).ok).toBe(true)
  })

  it('accepts a timed-out write that takes effect long after other writes completed', () => {
    const history = [
      timedOut(write(1, 0, 0, 'a')),
      write(2, 10, 11, 'b'),
      read(2, 12, 13, 'b'),
      read(3, 90, 91, 'a'),
    ]
    expect(check(history).ok).toBe(true)
  })

  it('rejects a timed-out write that appears twice around a completed write', () => {
    // It can take effect at most once, and 'b' completed between the two reads of 'a'.
    const history = [
      timedOut(write(1, 0, 0, 'a')),
      read(2, 10, 11, 'a'),
      write(2, 12, 13, 'b'),
      read(2, 14, 15, 'a'),
    ]
    expect(check(history).ok).toBe(false)
  })

  it('rejects a value seen before the timed-out write that produced it was called', () => {
    const history = [read(2, 0, 1, 'a'), timedOut(write(1, 5, 5, 'a'))]
    expect(check(history).ok).toBe(false)
  })

  it('refuses an operation whose output and returnMs disagree', () => {
    const missingOutput = { ...write(1, 0, 1, 'a'), output: undefined }
    expect(() => check([missingOutput])).toThrow(LinearizabilityInputError)
    expect(() => check([write(1, 5, 1, 'a')])).toThrow(/before its call/)
  })
})

describe('per-key partitioning', () => {
  it('checks keys independently and reports the key that fails', () => {
    const history = [
      write(1, 0, 1, 'a', 'x'),
      write(2, 0, 1, 'b', 'y'),
      read(3, 2, 3, 'a', 'x'),
      // 'a' was written on x, never on y.
      read(4, 2, 3, 'a', 'y'),
    ]
    const result = check(history)
    expect(result).toMatchObject({ ok: false, failingKey: 'y' })
    expect(result.partial?.message).toContain('Key "y" is not linearizable')
  })

  it('accepts a history that is linearizable per key even though a single register would reject it', () => {
    const history = [write(1, 0, 1, 'a', 'x'), write(1, 2, 3, 'b', 'y'), read(2, 4, 5, 'a', 'x')]
    expect(check(history).ok).toBe(true)
  })
})

/** Deterministic randomness (mulberry32) so a failure replays from its seed. */
function seededRandom(seed: number): (maxExclusive: number) => number {
  let a = seed >>> 0
  return (maxExclusive) => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * maxExclusive)
  }
}

interface GenerateOptions {
  opCount: number
  clientCount: number
  keyCount: number
  /** Out of 1000: how often an operation times out (it then takes effect or not, at random). */
  unknownPerMille: number
}

/**
 * Runs random operations one at a time against a real map (each at its own
 * instant, the linearization point), and records each with an interval that
 * contains that instant and starts after its client's previous return. Any
 * history recorded this way is linearizable.
 */
function generateHistory(seed: number, options: GenerateOptions): Op[] {
  const random = seededRandom(seed)
  const values = new Map<string, string | null>()
  const clientIds = Array.from({ length: options.clientCount }, (_, i) => i)
  const freeAfterMs = Array.from({ length: options.clientCount }, () => -1)
  let nextClientId = options.clientCount
  const history: Op[] = []
  for (let pointMs = 10; history.length < options.opCount; pointMs += 10) {
    const idle = clientIds.map((_, slot) => slot).filter((slot) => freeAfterMs[slot]! < pointMs)
    if (idle.length === 0) continue
    const slot = idle[random(idle.length)]!
    const callMs = pointMs - random(pointMs - freeAfterMs[slot]!)
    const returnMs = pointMs + random(40)
    const key = `k${random(options.keyCount)}`
    const current = values.get(key) ?? null
    const choice = random(10)
    let input: RegisterInput
    if (choice < 3) input = { op: 'write', value: `v${history.length}` }
    else if (choice < 5) {
      const expected = random(2) === 0 ? current : random(2) === 0 ? null : `v${random(history.length + 1)}`
      input = { op: 'cas', expected, value: `v${history.length}` }
    } else input = { op: 'read' }

    const unknown = random(1000) < options.unknownPerMille
    const takesEffect = !unknown || random(2) === 0
    let output: RegisterOutput
    if (input.op === 'read') output = { value: current }
    else if (input.op === 'write') output = { ok: true }
    else output = { ok: current === input.expected }
    if (takesEffect && (input.op === 'write' || (input.op === 'cas' && current === input.expected))) {
      values.set(key, input.value)
    }

    if (unknown) {
      history.push({ clientId: clientIds[slot]!, key, input, output: undefined, callMs, returnMs: Infinity })
      // A client that timed out is replaced by a new one.
      clientIds[slot] = nextClientId++
    } else {
      history.push({ clientId: clientIds[slot]!, key, input, output, callMs, returnMs })
    }
    freeAfterMs[slot] = returnMs
  }
  return history
}

describe('randomized histories from a real sequential execution', () => {
  const seeds = [1, 2, 3, 4, 5]

  it.each(seeds)(
    'accepts the recorded history and rejects it once a read sees an unwritten value (seed %i)',
    (seed) => {
      const history = generateHistory(seed, {
        opCount: 3000,
        clientCount: 5,
        keyCount: 10,
        unknownPerMille: 10,
      })
      const startedMs = performance.now()
      const result = check(history)
      const elapsedMs = performance.now() - startedMs
      expect(result, `seed ${seed}: ${result.partial?.message}`).toMatchObject({ ok: true, timedOut: false })
      // Typically tens of milliseconds; the bound leaves room for a loaded machine.
      expect(elapsedMs).toBeLessThan(3000)

      const random = seededRandom(seed * 7919)
      const reads = history
        .map((op, index) => ({ op, index }))
        .filter(({ op }) => op.input.op === 'read' && op.output !== undefined)
      const target = reads[random(reads.length)]!
      const mutated = history.slice()
      mutated[target.index] = { ...target.op, output: { value: 'never-written' } }
      const broken = check(mutated)
      expect(broken).toMatchObject({ ok: false, timedOut: false, failingKey: target.op.key })
      expect(broken.partial?.pending).toContain(mutated[target.index])
    },
  )
})

/**
 * The definition, searched naively: try every order of the operations that
 * respects real time (an operation may go next only if no other remaining
 * operation returned strictly before it was called); operations with an
 * unknown outcome may also be left out.
 */
function bruteForceLinearizable(ops: readonly Op[]): boolean {
  const search = (remaining: readonly Op[], state: string | null): boolean => {
    if (remaining.every((op) => op.output === undefined)) return true
    return remaining.some((candidate, index) => {
      if (remaining.some((other) => other.returnMs < candidate.callMs)) return false
      const result = registerModel.step(state, candidate.input, candidate.output)
      return result.ok && search(remaining.toSpliced(index, 1), result.state)
    })
  }
  return search(ops, registerModel.init())
}

/** A few operations with random intervals and random (mostly wrong) outputs on one key. */
function randomSmallHistory(random: (maxExclusive: number) => number): Op[] {
  const values = [null, 'a', 'b']
  const history: Op[] = []
  const opCount = 2 + random(5)
  for (let i = 0; i < opCount; i++) {
    const callMs = random(20)
    const returnMs = callMs + random(10)
    const value = values[1 + random(2)]!
    const choice = random(3)
    let op: Op
    if (choice === 0) op = read(i, callMs, returnMs, values[random(3)]!)
    else if (choice === 1) op = write(i, callMs, returnMs, value)
    else op = cas(i, callMs, returnMs, values[random(3)]!, value, random(2) === 0)
    history.push(random(6) === 0 ? timedOut(op) : op)
  }
  return history
}

describe('agreement with the definition', () => {
  it('gives the same answer as a brute-force search on many small random histories', () => {
    const random = seededRandom(42)
    const answers = { linearizable: 0, notLinearizable: 0 }
    for (let round = 0; round < 3000; round++) {
      const history = randomSmallHistory(random)
      const expected = bruteForceLinearizable(history)
      const result = check(history)
      expect(result.ok, `round ${round}: ${JSON.stringify(history)}`).toBe(expected)
      expect(result.timedOut).toBe(false)
      answers[expected ? 'linearizable' : 'notLinearizable']++
    }
    // Both answers must be common, or the comparison proves little.
    expect(answers.linearizable).toBeGreaterThan(300)
    expect(answers.notLinearizable).toBeGreaterThan(300)
  })
})

/**
 * Many concurrent writes of distinct values followed by a read of a value
 * none wrote: before giving up the search must try every subset of the
 * writes with every last writer, about n * 2^(n-1) configurations.
 */
function adversarialHistory(writeCount: number, key = 'k'): Op[] {
  const history: Op[] = []
  for (let i = 0; i < writeCount; i++) history.push(write(i, 0, 1000 + i, `w${i}`, key))
  history.push(read(writeCount, 2000, 2001, 'never-written', key))
  return history
}

describe('the search budget', () => {
  it('answers unknown when the step budget runs out', () => {
    const result = check(adversarialHistory(24), { stepsMax: 100_000 })
    expect(result).toMatchObject({ ok: false, timedOut: true, unknownReason: 'steps', unknownKeys: ['k'] })
    expect(result.failingKey).toBeUndefined()
  })

  it('answers unknown when the time budget runs out', () => {
    const startedMs = performance.now()
    const result = check(adversarialHistory(30), { timeoutMs: 200 })
    expect(result).toMatchObject({ ok: false, timedOut: true, unknownReason: 'timeout' })
    expect(performance.now() - startedMs).toBeLessThan(5000)
  })

  it('answers unknown when the memo cache is full', () => {
    const result = check(adversarialHistory(24), { cacheEntriesMax: 1000 })
    expect(result).toMatchObject({ ok: false, timedOut: true, unknownReason: 'cache' })
  })

  it('finds a definite failure on a small key before a hard key spends the budget', () => {
    const history = [
      ...adversarialHistory(24, 'hard'),
      write(1, 0, 1, 'a', 'easy'),
      read(2, 2, 3, null, 'easy'),
    ]
    expect(check(history, { stepsMax: 100_000 })).toMatchObject({
      ok: false,
      timedOut: false,
      failingKey: 'easy',
    })
  })

  it('decides a small adversarial history exactly', () => {
    expect(check(adversarialHistory(8))).toMatchObject({ ok: false, timedOut: false, failingKey: 'k' })
  })
})
