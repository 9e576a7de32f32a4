// A linearizability checker for client histories, after Wing & Gong (1993)
// and Lowe, "Testing for linearizability" (2017): a depth-first search for a
// sequential order that respects real time and the model, over the list of
// call/return events, memoizing every (set of linearized operations, model
// state) pair it has already explored so no configuration is searched twice.
// Histories are split by key first (P-compositionality: a history is
// linearizable iff each key's sub-history is), which keeps each search small.
//
// The search is exponential in the worst case, so it runs under a budget
// (time, steps, cache entries). When the budget runs out the answer is
// "unknown" (`timedOut: true`), never a guess.

/**
 * One client operation as recorded by a test. `callMs` is when the client
 * sent it, `returnMs` when it saw the answer. An operation whose outcome is
 * unknown (the client timed out or lost the connection: it may or may not
 * take effect, possibly long after) has `returnMs: Infinity` and
 * `output: undefined`; the checker lets it take effect at any point after its
 * call, or not at all, and accepts any output for it.
 */
export interface Operation<Input, Output> {
  clientId: number
  key: string
  input: Input
  output: Output | undefined
  callMs: number
  returnMs: number
}

export type History<Input, Output> = readonly Operation<Input, Output>[]

export interface StepResult<State> {
  /** False when this input cannot produce this output in this state. */
  ok: boolean
  /** The state after the operation (meaningful only when ok). */
  state: State
}

/**
 * The sequential specification of one key's object. Must be deterministic
 * and must not mutate the state it is given (the search keeps old states to
 * backtrack to).
 */
export interface Model<State, Input, Output> {
  init(): State
  /**
   * Applies input to state and says whether output is a possible answer.
   * `output` is undefined for an operation whose outcome is unknown: accept
   * it and return the state the input leads to.
   */
  step(state: State, input: Input, output: Output | undefined): StepResult<State>
  equal(a: State, b: State): boolean
  /**
   * A string that equal states share (used to bucket the memo cache).
   * Defaults to JSON.stringify(state); provide one when the state is not
   * plain JSON data.
   */
  hash?(state: State): string
  /** How failure reports show an operation; defaults to JSON. */
  describeOperation?(input: Input, output: Output | undefined): string
  /** How failure reports show a state; defaults to JSON. */
  describeState?(state: State): string
}

export interface CheckOptions {
  /** Wall-clock budget for the whole check. Default DEFAULT_CHECK_TIMEOUT_MS. */
  timeoutMs?: number
  /** Search steps (events visited) for the whole check. Default DEFAULT_CHECK_STEPS_MAX. */
  stepsMax?: number
  /** Memo cache entries for one key; bounds memory. Default DEFAULT_CACHE_ENTRIES_MAX. */
  cacheEntriesMax?: number
}

/** Why a check ended without an answer. */
export type UnknownReason = 'timeout' | 'steps' | 'cache'

/** What the search got furthest with on a key that is not linearizable. */
export interface LinearizationFailure<Input, Output> {
  /** The longest sequence of operations the search could linearize, in linearization order. */
  longestPrefix: Operation<Input, Output>[]
  /** The model state after longestPrefix, as describeState shows it. */
  stateAfterPrefix: string
  /**
   * The operation whose return ended the longest prefix: neither it nor any
   * other pending operation could take effect next without breaking the model.
   */
  blockedBy: Operation<Input, Output>
  /** The operations called but not linearized at that point (the candidates tried), blockedBy among them. */
  pending: Operation<Input, Output>[]
  /** The same, as sentences for a test failure message. */
  message: string
}

export interface LinearizabilityResult<Input, Output> {
  /** True only when every key's sub-history is linearizable. */
  ok: boolean
  /** True when the budget ran out before an answer: ok is false but the history is not known to be wrong. */
  timedOut: boolean
  unknownReason?: UnknownReason
  /** Keys left undecided when the budget ran out. */
  unknownKeys?: string[]
  /** The key whose sub-history is not linearizable. */
  failingKey?: string
  partial?: LinearizationFailure<Input, Output>
  /** Search steps spent, over all keys. */
  steps: number
}

export const DEFAULT_CHECK_TIMEOUT_MS = 10_000
export const DEFAULT_CHECK_STEPS_MAX = 50_000_000
export const DEFAULT_CACHE_ENTRIES_MAX = 1_000_000
/** How many linearized operations a failure message lists (the last ones). */
const MESSAGE_PREFIX_LINES_MAX = 20
/** How often (in steps) the search looks at the clock. */
const CLOCK_CHECK_EVERY_STEPS = 1024

/** A history that cannot be checked as given (bad times, output and returnMs disagreeing…). */
export class LinearizabilityInputError extends Error {
  readonly code = 'ERR_LINEARIZABILITY_INPUT'
  constructor(message: string) {
    super(message)
    this.name = 'LinearizabilityInputError'
  }
}

/**
 * Checks that `history` is linearizable with respect to `model`, key by key.
 * Smaller keys are checked first so a cheap definite failure is found before
 * the budget goes to a hard key; a definite failure wins over "unknown".
 */
export function checkLinearizability<State, Input, Output>(
  history: History<Input, Output>,
  model: Model<State, Input, Output>,
  options: CheckOptions = {},
): LinearizabilityResult<Input, Output> {
  validateHistory(history)
  const budget: Budget = {
    deadlineMs: performance.now() + (options.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS),
    stepsMax: options.stepsMax ?? DEFAULT_CHECK_STEPS_MAX,
    cacheEntriesMax: options.cacheEntriesMax ?? DEFAULT_CACHE_ENTRIES_MAX,
    steps: 0,
  }
  const partitions = [...partitionByKey(history)].sort((a, b) => a[1].length - b[1].length)
  const unknownKeys: string[] = []
  let unknownReason: UnknownReason | undefined
  for (const [key, ops] of partitions) {
    // Once time or steps are spent, every later key would stop at once.
    if (unknownReason === 'timeout' || unknownReason === 'steps') {
      unknownKeys.push(key)
      continue
    }
    const outcome = checkPartition(ops, model, budget)
    if (outcome.kind === 'fail') {
      return {
        ok: false,
        timedOut: false,
        failingKey: key,
        partial: describeFailure(key, ops, outcome, model),
        steps: budget.steps,
      }
    }
    if (outcome.kind === 'unknown') {
      unknownKeys.push(key)
      unknownReason = outcome.reason
    }
  }
  if (unknownReason !== undefined) {
    return { ok: false, timedOut: true, unknownReason, unknownKeys, steps: budget.steps }
  }
  return { ok: true, timedOut: false, steps: budget.steps }
}

/** Splits a history into per-key sub-histories, each in the original order. */
export function partitionByKey<Input, Output>(
  history: History<Input, Output>,
): Map<string, Operation<Input, Output>[]> {
  const partitions = new Map<string, Operation<Input, Output>[]>()
  for (const op of history) {
    let ops = partitions.get(op.key)
    if (ops === undefined) {
      ops = []
      partitions.set(op.key, ops)
    }
    ops.push(op)
  }
  return partitions
}

function validateHistory<Input, Output>(history: History<Input, Output>): void {
  history.forEach((op, index) => {
    const where = `Operation ${index} (client ${op.clientId}, key ${JSON.stringify(op.key)})`
    if (!Number.isFinite(op.callMs)) {
      throw new LinearizabilityInputError(`${where} has callMs ${op.callMs}; record a finite call time.`)
    }
    if (Number.isNaN(op.returnMs) || op.returnMs < op.callMs) {
      throw new LinearizabilityInputError(
        `${where} returns at ${op.returnMs} ms, before its call at ${op.callMs} ms; record returnMs >= callMs.`,
      )
    }
    const indeterminate = op.returnMs === Number.POSITIVE_INFINITY
    if (indeterminate !== (op.output === undefined)) {
      throw new LinearizabilityInputError(
        `${where} has returnMs ${op.returnMs} and ${op.output === undefined ? 'no' : 'an'} output; ` +
          'an operation whose outcome is unknown needs returnMs Infinity and output undefined, any other needs both a finite returnMs and an output.',
      )
    }
  })
}

interface Budget {
  deadlineMs: number
  stepsMax: number
  cacheEntriesMax: number
  /** Spent so far, over all keys. */
  steps: number
}

interface FailOutcome<State> {
  kind: 'fail'
  /** Operation indexes (into the partition) of the longest linearized prefix, in order. */
  prefix: number[]
  stateAfterPrefix: State
  blockedBy: number
  pending: number[]
}

type PartitionOutcome<State> =
  | { kind: 'ok' }
  | { kind: 'unknown'; reason: UnknownReason }
  | FailOutcome<State>

interface CacheEntry<State> {
  linearized: Uint32Array
  stateHash: string
  state: State
}

/**
 * The search on one key. Events live in a doubly linked list over typed
 * arrays (node 0 is the head sentinel, -1 is "none"): linearizing an
 * operation unlinks its call and return events ("lift"), backtracking links
 * them back in reverse order ("unlift"), so the list always holds exactly the
 * events of operations not yet linearized.
 */
function checkPartition<State, Input, Output>(
  ops: Operation<Input, Output>[],
  model: Model<State, Input, Output>,
  budget: Budget,
): PartitionOutcome<State> {
  const opCount = ops.length
  // Events: one call per operation, one return per operation with a known
  // outcome. An unknown outcome has no return event: nothing forces it to be
  // linearized, and it may be linearized anywhere after its call.
  const events: { timeMs: number; isCall: boolean; op: number }[] = []
  let determinateLeft = 0
  for (let op = 0; op < opCount; op++) {
    const o = ops[op]!
    events.push({ timeMs: o.callMs, isCall: true, op })
    if (o.returnMs !== Number.POSITIVE_INFINITY) {
      events.push({ timeMs: o.returnMs, isCall: false, op })
      determinateLeft++
    }
  }
  // At equal times calls sort before returns: millisecond stamps cannot order
  // a return and a call in the same millisecond, so such operations are taken
  // as concurrent (the permissive reading; it never reports a false failure).
  events.sort((a, b) => a.timeMs - b.timeMs || Number(b.isCall) - Number(a.isCall) || a.op - b.op)

  const nodeCount = events.length + 1
  const next = new Int32Array(nodeCount)
  const prev = new Int32Array(nodeCount)
  const nodeOp = new Int32Array(nodeCount)
  const nodeIsCall = new Uint8Array(nodeCount)
  /** For a call node, its return node (-1 when the outcome is unknown). */
  const matchNode = new Int32Array(nodeCount).fill(-1)
  const callNodeOf = new Int32Array(opCount)
  for (let i = 0; i < events.length; i++) {
    const node = i + 1
    const event = events[i]!
    nodeOp[node] = event.op
    nodeIsCall[node] = event.isCall ? 1 : 0
    if (event.isCall) callNodeOf[event.op] = node
    else matchNode[callNodeOf[event.op]!] = node
    prev[node] = node - 1
    next[node - 1] = node
  }
  next[nodeCount - 1] = -1

  const lift = (node: number): void => {
    unlink(node)
    const match = matchNode[node]!
    if (match !== -1) unlink(match)
  }
  const unlink = (node: number): void => {
    const before = prev[node]!
    const after = next[node]!
    next[before] = after
    if (after !== -1) prev[after] = before
  }
  const unlift = (node: number): void => {
    const match = matchNode[node]!
    if (match !== -1) relink(match)
    relink(node)
  }
  const relink = (node: number): void => {
    next[prev[node]!] = node
    const after = next[node]!
    if (after !== -1) prev[after] = node
  }

  // The set of linearized operations as a bitset, plus a Zobrist hash of it
  // kept up to date in O(1) per change so the cache key costs nothing to
  // recompute.
  const linearized = new Uint32Array(Math.ceil(opCount / 32))
  const zobrist = zobristTable(opCount)
  let linearizedHash = 0
  const stateHashOf = model.hash?.bind(model) ?? ((state: State) => JSON.stringify(state))
  const cache = new Map<number, CacheEntry<State>[]>()
  let cacheEntries = 0
  /** Adds (linearized, state) to the cache; false when it was already there. */
  const cacheAdd = (setHash: number, state: State): boolean => {
    const stateHash = stateHashOf(state)
    const key = (setHash ^ fnv1a32(stateHash)) >>> 0
    let bucket = cache.get(key)
    if (bucket === undefined) {
      bucket = []
      cache.set(key, bucket)
    }
    for (const entry of bucket) {
      if (
        entry.stateHash === stateHash &&
        bitsEqual(entry.linearized, linearized) &&
        model.equal(entry.state, state)
      ) {
        return false
      }
    }
    bucket.push({ linearized: linearized.slice(), stateHash, state })
    cacheEntries++
    return true
  }

  const stackNode = new Int32Array(opCount)
  const stackState: State[] = []
  let depth = 0
  let state = model.init()
  let best: FailOutcome<State> | undefined
  let node = next[0]!

  while (determinateLeft > 0) {
    budget.steps++
    if (budget.steps > budget.stepsMax) return { kind: 'unknown', reason: 'steps' }
    if (budget.steps % CLOCK_CHECK_EVERY_STEPS === 0 && performance.now() > budget.deadlineMs) {
      return { kind: 'unknown', reason: 'timeout' }
    }
    if (cacheEntries > budget.cacheEntriesMax) return { kind: 'unknown', reason: 'cache' }
    // While a known-outcome operation is left, its return event is in the
    // list after its call, so the walk meets a return before the end.
    if (node === -1)
      throw new Error('Linearizability search walked off the event list; this is a checker bug.')

    if (nodeIsCall[node] === 1) {
      const op = nodeOp[node]!
      const operation = ops[op]!
      const result = model.step(state, operation.input, operation.output)
      if (result.ok) {
        linearized[op >>> 5]! |= 1 << (op & 31)
        const setHash = linearizedHash ^ zobrist[op]!
        if (cacheAdd(setHash, result.state)) {
          stackNode[depth] = node
          stackState[depth] = state
          depth++
          state = result.state
          linearizedHash = setHash
          if (matchNode[node] !== -1) determinateLeft--
          lift(node)
          node = next[0]!
          continue
        }
        linearized[op >>> 5]! &= ~(1 << (op & 31))
      }
      node = next[node]!
      continue
    }

    // A return event: its operation must have been linearized by now and was
    // not, so this branch is dead. Remember the deepest dead end for the
    // report, then undo the most recent linearization and try the next
    // candidate after it.
    if (best === undefined || depth > best.prefix.length) {
      best = {
        kind: 'fail',
        prefix: Array.from(stackNode.subarray(0, depth), (n) => nodeOp[n]!),
        stateAfterPrefix: state,
        blockedBy: nodeOp[node]!,
        pending: pendingBefore(node),
      }
    }
    if (depth === 0) return best
    depth--
    const undone = stackNode[depth]!
    state = stackState[depth]!
    stackState.length = depth
    const op = nodeOp[undone]!
    linearized[op >>> 5]! &= ~(1 << (op & 31))
    linearizedHash ^= zobrist[op]!
    if (matchNode[undone] !== -1) determinateLeft++
    unlift(undone)
    node = next[undone]!
  }
  return { kind: 'ok' }

  /** Operations whose call is in the list before this return node: the ones pending there. */
  function pendingBefore(returnNode: number): number[] {
    const pending: number[] = []
    for (let n = next[0]!; n !== -1 && n !== returnNode; n = next[n]!) {
      if (nodeIsCall[n] === 1) pending.push(nodeOp[n]!)
    }
    return pending
  }
}

function describeFailure<State, Input, Output>(
  key: string,
  ops: Operation<Input, Output>[],
  outcome: FailOutcome<State>,
  model: Model<State, Input, Output>,
): LinearizationFailure<Input, Output> {
  const showOp = (op: Operation<Input, Output>): string => {
    const what =
      model.describeOperation?.(op.input, op.output) ?? defaultDescribeOperation(op.input, op.output)
    const until = op.returnMs === Number.POSITIVE_INFINITY ? 'outcome unknown' : `${op.returnMs} ms`
    return `  client ${op.clientId}: ${what}  [${op.callMs} ms .. ${until}]`
  }
  const longestPrefix = outcome.prefix.map((i) => ops[i]!)
  const blockedBy = ops[outcome.blockedBy]!
  const pending = outcome.pending.map((i) => ops[i]!)
  const stateAfterPrefix =
    model.describeState?.(outcome.stateAfterPrefix) ?? JSON.stringify(outcome.stateAfterPrefix)
  const shown = longestPrefix.slice(-MESSAGE_PREFIX_LINES_MAX)
  const lines = [
    `Key ${JSON.stringify(key)} is not linearizable (${ops.length} operations). ` +
      `The search linearized at most ${longestPrefix.length} of them; after those the state is ${stateAfterPrefix}, ` +
      `and every pending operation (listed below) contradicts the model if it takes effect next, yet this one returned:`,
    showOp(blockedBy),
    longestPrefix.length > shown.length
      ? `Linearized prefix (last ${shown.length} of ${longestPrefix.length}, in order):`
      : 'Linearized prefix (in order):',
    ...(shown.length > 0 ? shown.map(showOp) : ['  (none)']),
    'Pending at that point:',
    ...pending.map(showOp),
  ]
  return { longestPrefix, stateAfterPrefix, blockedBy, pending, message: lines.join('\n') }
}

function defaultDescribeOperation(input: unknown, output: unknown): string {
  return `${JSON.stringify(input)} -> ${output === undefined ? 'unknown' : JSON.stringify(output)}`
}

/** Deterministic 32-bit random words (splitmix32), one per operation. */
function zobristTable(count: number): Int32Array {
  const table = new Int32Array(count)
  let seed = 0x9e3779b9
  for (let i = 0; i < count; i++) {
    seed = (seed + 0x9e3779b9) | 0
    let z = seed
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    table[i] = z ^ (z >>> 16)
  }
  return table
}

function fnv1a32(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193)
  }
  return hash
}

function bitsEqual(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
