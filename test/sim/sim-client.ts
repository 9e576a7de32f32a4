// A simulated client of the replicated KV store. It sends put / cas / get to
// the node it believes leads (a NotLeaderError retargets it to the hinted
// leader, anything else to a random node), gives up on an operation after a
// timeout, and records every operation in the history the linearizability
// checker reads: call and return in virtual time, and an operation whose
// outcome it cannot know (timed out, node crashed) as indeterminate
// (returnMs = Infinity). Writes carry unique values (`c3-17`). A write with a
// client session is retried with the same sequence number after an unknown
// outcome, which the KV state machine turns into exactly-once.

import type { RaftNode } from '../../consensus/raft-node.ts'
import type { KvCommand, KvResult, KvStateMachine } from '../support/kv-state-machine.ts'
import { encodeKvCommand } from '../support/kv-state-machine.ts'
import type { Operation } from '../support/linearizability.ts'
import type { RegisterInput, RegisterOutput } from '../support/linearizability-model.ts'
import type { SimRandom } from './sim-random.ts'

export type SimOperation = Operation<RegisterInput, RegisterOutput>

export type Outcome<T> = { kind: 'ok'; value: T } | { kind: 'error'; error: Error } | { kind: 'timeout' }

export interface LiveNode {
  raft: RaftNode<KvResult>
  kv: KvStateMachine
}

/** What a client needs from the simulator. */
export interface ClientHost {
  nowMs(): number
  /** Ids of the nodes that were ever started (a client may address any of them). */
  nodeIds(): string[]
  /** The running incarnation of a node, or null while it is down or starting. */
  liveNode(id: string): LiveNode | null
  sleep(ms: number): Promise<void>
  settle<T>(promise: Promise<T>, timeoutMs: number): Promise<Outcome<T>>
  record(op: SimOperation): void
  /** Values whose write was acknowledged: they must be in the committed log. */
  acked(value: string): void
  /** Verbose trace (no-op unless the run logs). */
  trace(line: string): void
}

export interface ClientWorkload {
  keys: string[]
  thinkMeanMs: number
  opTimeoutMs: number
  readFraction: number
  logReadFraction: number
  followerReadFraction: number
  casFraction: number
  sessionFraction: number
  /** A deliberate bug, to test the checkers: reads skip ReadIndex and take any node's local state. */
  staleReads?: boolean
}

/** Attempts of one operation (retargets after NotLeader, session retries after an unknown outcome). */
const ATTEMPTS_MAX = 4

/** Errors that prove the command never entered the log (or never can commit). */
function isDefiniteFailure(error: Error): boolean {
  const code = (error as { code?: string }).code
  return code === 'ERR_NOT_LEADER' || code === 'ERR_PROPOSAL_DROPPED'
}

export class SimClient {
  readonly id: number
  readonly name: string
  private readonly host: ClientHost
  private readonly random: SimRandom
  private readonly workload: ClientWorkload
  private target: string | null = null
  private seq = 0
  private writes = 0
  /** The last value this client saw per key, for plausible cas expectations. */
  private readonly seen = new Map<string, string | null>()
  stopped = false
  /** The write in flight, if any: recorded as indeterminate when the run ends before it returns. */
  private writeInFlight: SimOperation | null = null
  lastError = ''

  constructor(id: number, host: ClientHost, random: SimRandom, workload: ClientWorkload) {
    this.id = id
    this.name = `c${id}`
    this.host = host
    this.random = random
    this.workload = workload
  }

  /** The workload loop: think, then one operation, until stopped. */
  async run(): Promise<void> {
    while (!this.stopped) {
      await this.host.sleep(this.random.exponential(this.workload.thinkMeanMs))
      if (this.stopped) return
      await this.randomOperation()
    }
  }

  private async randomOperation(): Promise<void> {
    const w = this.workload
    const key = this.random.pick(w.keys)
    const roll = this.random.float()
    if (roll < w.readFraction) {
      if (this.random.chance(w.logReadFraction)) await this.logRead(key)
      else await this.indexRead(key, this.random.chance(w.followerReadFraction))
    } else if (roll < w.readFraction + w.casFraction) {
      await this.cas(key)
    } else {
      await this.put(key, this.random.chance(w.sessionFraction))
    }
  }

  newValue(): string {
    return `${this.name}-${++this.writes}`
  }

  /** A put; returns true when acknowledged. */
  async put(key: string, withSession: boolean, options: { untilMs?: number } = {}): Promise<boolean> {
    const value = this.newValue()
    const command: KvCommand = { op: 'put', key, value }
    if (withSession) command.session = { clientId: this.name, seq: ++this.seq }
    const result = await this.write(command, { op: 'write', value }, withSession, options.untilMs)
    if (result !== null) this.seen.set(key, value)
    return result !== null
  }

  private async cas(key: string): Promise<void> {
    const value = this.newValue()
    const roll = this.random.float()
    const expected =
      roll < 0.75
        ? (this.seen.get(key) ?? null)
        : roll < 0.85
          ? null
          : `c${this.random.int(6)}-${this.random.between(1, 20)}`
    const withSession = this.random.chance(this.workload.sessionFraction)
    const command: KvCommand = { op: 'cas', key, expected, value }
    if (withSession) command.session = { clientId: this.name, seq: ++this.seq }
    const result = await this.write(command, { op: 'cas', expected, value }, withSession)
    if (result !== null) this.seen.set(key, result.ok ? value : result.value)
  }

  /**
   * Sends a write until it succeeds, fails for certain, or its outcome is
   * unknown (then retried only with a session). Records it and returns the
   * result, or null when it did not take effect or its outcome is unknown.
   */
  private async write(
    command: KvCommand,
    input: RegisterInput,
    withSession: boolean,
    untilMs?: number,
  ): Promise<KvResult | null> {
    const bytes = encodeKvCommand(command)
    const callMs = this.host.nowMs()
    this.writeInFlight = {
      clientId: this.id,
      key: command.key,
      input,
      output: undefined,
      callMs,
      returnMs: Number.POSITIVE_INFINITY,
    }
    try {
      return await this.attemptWrite(command, bytes, input, withSession, callMs, untilMs)
    } finally {
      this.writeInFlight = null
    }
  }

  /** The run ended: a write still waiting for its answer may or may not have taken effect. */
  abandon(): void {
    if (this.writeInFlight !== null) this.host.record(this.writeInFlight)
    this.writeInFlight = null
  }

  private async attemptWrite(
    command: KvCommand,
    bytes: Uint8Array,
    input: RegisterInput,
    withSession: boolean,
    callMs: number,
    untilMs: number | undefined,
  ): Promise<KvResult | null> {
    let uncertain = false
    for (
      let attempt = 0;
      attempt < ATTEMPTS_MAX || (untilMs !== undefined && this.host.nowMs() < untilMs);
      attempt++
    ) {
      if (attempt > 0) await this.host.sleep(this.random.range(5, 50))
      const node = this.liveTarget(false)
      if (node === null) continue
      const outcome = await this.host.settle(node.raft.propose(bytes), this.workload.opTimeoutMs)
      this.host.trace(
        `${this.name} ${command.op} ${command.key}=${(command as { value: string }).value} via ${node.raft.id}: ${outcome.kind === 'ok' ? JSON.stringify(outcome.value) : outcome.kind === 'error' ? outcome.error.message : 'timeout'}`,
      )
      if (outcome.kind === 'ok') {
        const result = outcome.value
        if (result.error !== undefined) {
          // Refused without touching the state (a stale session seq): it did not take effect.
          this.lastError = `refused: ${result.error}`
          break
        }
        const output: RegisterOutput = input.op === 'cas' ? { ok: result.ok } : { ok: true }
        this.host.record({
          clientId: this.id,
          key: command.key,
          input,
          output,
          callMs,
          returnMs: this.host.nowMs(),
        })
        if (result.ok) this.host.acked((command as { value: string }).value)
        return result
      }
      if (outcome.kind === 'error' && isDefiniteFailure(outcome.error)) {
        this.lastError = outcome.error.message
        this.retarget(outcome.error)
        continue
      }
      this.lastError = outcome.kind === 'timeout' ? 'timed out' : outcome.error.message
      uncertain = true
      this.target = null
      if (!withSession) break
    }
    if (uncertain) {
      this.host.record({
        clientId: this.id,
        key: command.key,
        input,
        output: undefined,
        callMs,
        returnMs: Number.POSITIVE_INFINITY,
      })
    }
    return null
  }

  /** A linearizable read: ReadIndex on a node, then its local state. Returns whether it completed. */
  async indexRead(key: string, anyNode: boolean): Promise<boolean> {
    const stale = this.workload.staleReads === true
    const node = this.liveTarget(anyNode || stale)
    if (node === null) return false
    const callMs = this.host.nowMs()
    const { raft, kv } = node
    const barrier = stale ? Promise.resolve() : raft.readIndex()
    const outcome = await this.host.settle(barrier, this.workload.opTimeoutMs)
    if (outcome.kind !== 'ok') {
      this.lastError = outcome.kind === 'timeout' ? 'read timed out' : outcome.error.message
      if (outcome.kind === 'error') this.retarget(outcome.error)
      else this.target = null
      return false
    }
    const value = kv.get(key)
    this.seen.set(key, value)
    this.host.record({
      clientId: this.id,
      key,
      input: { op: 'read' },
      output: { value },
      callMs,
      returnMs: this.host.nowMs(),
    })
    return true
  }

  /** A read through the log (a get command). A failed read is left out: it changed nothing. */
  private async logRead(key: string): Promise<void> {
    const node = this.liveTarget(false)
    if (node === null) return
    const callMs = this.host.nowMs()
    const outcome = await this.host.settle(
      node.raft.propose(encodeKvCommand({ op: 'get', key })),
      this.workload.opTimeoutMs,
    )
    if (outcome.kind !== 'ok') {
      if (outcome.kind === 'error') this.retarget(outcome.error)
      else this.target = null
      return
    }
    this.seen.set(key, outcome.value.value)
    this.host.record({
      clientId: this.id,
      key,
      input: { op: 'read' },
      output: { value: outcome.value.value },
      callMs,
      returnMs: this.host.nowMs(),
    })
  }

  private liveTarget(anyNode: boolean): LiveNode | null {
    const ids = this.host.nodeIds()
    if (anyNode || this.target === null || !ids.includes(this.target)) this.target = this.random.pick(ids)
    const node = this.host.liveNode(this.target)
    if (node === null) {
      // Connection refused: the command was never sent; try elsewhere next time.
      this.lastError = `${this.target} is down`
      this.target = null
    }
    return node
  }

  private retarget(error: Error): void {
    const leader = (error as { leader?: string }).leader
    this.target =
      leader !== undefined && leader !== '' && this.host.nodeIds().includes(leader) ? leader : null
  }
}
