// The load generator both systems get: closed-loop writers over keep-alive
// HTTP, and the failover probe. Everything is bounded: run time, request
// count, recorded samples, per-request time.

import { writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import type { BenchCluster, WriteOutcome, WriteProtocol } from './bench-cluster.ts'
import { sleep } from './bench-cluster.ts'

/** Bytes of a write response we read; anything longer is truncated in error messages. */
const responseBytesMax = 64 * 1024
/** Distinct error messages kept for the report. */
const errorMessagesMax = 5
/** Latencies kept per phase (8 bytes each); writes beyond it still count toward throughput. */
const latencySamplesMax = 2_000_000

export interface LoadOptions {
  clients: number
  durationMs: number
  warmupMs: number
  valueBytes: number
  /** Keys are drawn uniformly from this many. */
  keySpace: number
  requestTimeoutMs: number
  /** Hard cap on requests per phase, whatever the duration. */
  requestsMax: number
  /** Pause after an error before the same client tries again. */
  errorBackoffMs: number
  /** When set, every measured write's completion time and latency (ms) go to this CSV file, for finding where the tail comes from. */
  latencyTracePath?: string
}

export const defaultLoadOptions: LoadOptions = {
  clients: 1,
  durationMs: 5_000,
  warmupMs: 1_000,
  valueBytes: 256,
  keySpace: 100_000,
  requestTimeoutMs: 5_000,
  requestsMax: 5_000_000,
  errorBackoffMs: 10,
}

export interface LoadResult {
  writes_per_s: number
  p50_ms: number
  p99_ms: number
  /** Writes acknowledged inside the measured window. */
  writes: number
  errors: number
  /** Answers "not the leader" that moved the clients to another member. */
  redirects: number
  errorSamples: string[]
}

export interface FailoverOptions {
  trials: number
  /** A new probe write starts this often, whether or not earlier ones have answered. */
  probeIntervalMs: number
  /** Probe writes in flight at once; no new one starts beyond this. */
  probesInflightMax: number
  /** Each probe write gives up after this long. */
  requestTimeoutMs: number
  /** A trial fails if no write succeeds within this long after the kill. */
  giveUpMs: number
  catchUpTimeoutMs: number
  /** Called right before each SIGKILL (e.g. to sample the victim's memory one last time). */
  beforeKill?: () => void
  log?: (line: string) => void
}

export const defaultFailoverOptions: FailoverOptions = {
  trials: 5,
  probeIntervalMs: 5,
  probesInflightMax: 64,
  requestTimeoutMs: 2_000,
  giveUpMs: 30_000,
  catchUpTimeoutMs: 60_000,
}

/** One write over a keep-alive agent; resolves (never rejects) with how it went. */
export function sendWrite(
  agent: Agent,
  baseUrl: string,
  protocol: WriteProtocol,
  write: { key: string; value: string; timeoutMs: number },
): Promise<WriteOutcome> {
  const url = new URL(baseUrl)
  const spec = protocol.request(write.key, write.value)
  return new Promise((resolve) => {
    let settled = false
    const finish = (outcome: WriteOutcome) => {
      if (settled) return
      settled = true
      resolve(outcome)
    }
    const req = request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        method: spec.method,
        path: spec.path,
        headers: spec.headers,
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          if (body.length < responseBytesMax) body += chunk
        })
        res.on('end', () => finish(protocol.classify(res.statusCode ?? 0, body, baseUrl)))
        res.on('error', (error) => finish({ kind: 'error', message: error.message }))
      },
    )
    req.setTimeout(write.timeoutMs, () => req.destroy(new Error(`no answer within ${write.timeoutMs} ms`)))
    req.on('error', (error) => finish({ kind: 'error', message: `${baseUrl}: ${error.message}` }))
    req.end(spec.body)
  })
}

export function fixedValue(bytes: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'
  let value = ''
  for (let i = 0; i < bytes; i++) value += alphabet[Math.floor(Math.random() * alphabet.length)]
  return value
}

/** Nearest-rank percentile of an ascending array, in the samples' unit. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(p * sorted.length)))
  return sorted[rank - 1]!
}

/**
 * `clients` closed loops write random keys against `leaderUrl` (following
 * not-leader answers) for warm-up plus duration; writes acknowledged within
 * the measured window count toward throughput and latency.
 */
export async function runWriteLoad(
  target: { url: string; writes: WriteProtocol },
  options: LoadOptions,
): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: options.clients, maxFreeSockets: options.clients })
  const value = fixedValue(options.valueBytes)
  const samples = new Float64Array(Math.min(options.requestsMax, latencySamplesMax))
  const doneTimes = options.latencyTracePath === undefined ? null : new Float64Array(samples.length)
  let sampleCount = 0
  let writesInWindow = 0
  let requests = 0
  let errors = 0
  let redirects = 0
  const errorSamples: string[] = []
  let url = target.url
  const start = performance.now()
  const windowStart = start + options.warmupMs
  const windowEnd = windowStart + options.durationMs

  const client = async () => {
    while (performance.now() < windowEnd && requests < options.requestsMax) {
      requests++
      const key = `bench-${Math.floor(Math.random() * options.keySpace)}`
      const sentAt = performance.now()
      const targetUrl = url
      const outcome = await sendWrite(agent, targetUrl, target.writes, {
        key,
        value,
        timeoutMs: options.requestTimeoutMs,
      })
      const doneAt = performance.now()
      if (outcome.kind === 'ok') {
        if (doneAt >= windowStart && doneAt <= windowEnd) {
          writesInWindow++
          if (sampleCount < samples.length) {
            if (doneTimes !== null) doneTimes[sampleCount] = doneAt - windowStart
            samples[sampleCount++] = doneAt - sentAt
          }
        }
      } else if (outcome.kind === 'not-leader') {
        redirects++
        if (outcome.url !== null && outcome.url !== targetUrl) url = outcome.url
        else await sleep(options.errorBackoffMs)
      } else {
        errors++
        if (errorSamples.length < errorMessagesMax && !errorSamples.includes(outcome.message)) {
          errorSamples.push(outcome.message)
        }
        await sleep(options.errorBackoffMs)
      }
    }
  }

  try {
    await Promise.all(Array.from({ length: options.clients }, client))
  } finally {
    agent.destroy()
  }
  if (doneTimes !== null && options.latencyTracePath !== undefined) {
    const lines = ['done_ms,latency_ms']
    for (let i = 0; i < sampleCount; i++) lines.push(`${doneTimes[i]!.toFixed(2)},${samples[i]!.toFixed(3)}`)
    writeFileSync(options.latencyTracePath, `${lines.join('\n')}\n`)
  }
  const sorted = samples.slice(0, sampleCount).sort()
  return {
    writes_per_s: round(writesInWindow / (options.durationMs / 1000), 1),
    p50_ms: round(percentile(sorted, 0.5), 3),
    p99_ms: round(percentile(sorted, 0.99), 3),
    writes: writesInWindow,
    errors,
    redirects,
    errorSamples,
  }
}

/**
 * Per trial: find the leader, SIGKILL it, and time from the kill to the first
 * write a surviving member acknowledges; then restart the victim and wait for
 * it to catch up. Returns the times in ms.
 *
 * Probes overlap: a new write starts every probeIntervalMs (alternating
 * between the survivors) instead of one after another. A write that reaches a
 * follower still forwarding to the dead leader (etcd does this) hangs until
 * its timeout, so a strictly sequential client would measure its own timeout;
 * overlapping probes give the kill-to-first-write time to within one
 * interval, the same way for both systems.
 */
export async function measureFailover(cluster: BenchCluster, options: FailoverOptions): Promise<number[]> {
  const log = options.log ?? (() => {})
  const value = fixedValue(64)
  const times: number[] = []
  for (let trial = 1; trial <= options.trials; trial++) {
    const leader = await cluster.findLeader(30_000)
    const survivorUrls = cluster.members.filter((m) => m !== leader).map((m) => cluster.url(m))
    const agent = new Agent({ keepAlive: true, maxSockets: options.probesInflightMax })
    let firstOkMs: number | null = null
    let probes = 0
    let inflight = 0
    let lastProblem = 'none'
    // One probe: a write to a survivor, following at most one not-leader answer that names another survivor.
    const probe = async (url: string, killedAt: number): Promise<void> => {
      for (let hop = 0; hop < 2 && firstOkMs === null; hop++) {
        const outcome = await sendWrite(agent, url, cluster.writes, {
          key: `failover-${trial}-${probes}-${hop}`,
          value,
          timeoutMs: options.requestTimeoutMs,
        })
        if (outcome.kind === 'ok') {
          firstOkMs ??= performance.now() - killedAt
          return
        }
        if (outcome.kind === 'not-leader' && outcome.url !== null && survivorUrls.includes(outcome.url)) {
          url = outcome.url
          continue
        }
        lastProblem =
          outcome.kind === 'error' ? outcome.message : `not leader (points at ${outcome.url ?? 'nobody'})`
        return
      }
    }
    options.beforeKill?.()
    const killedAt = performance.now()
    const killed = cluster.kill(leader)
    try {
      while (firstOkMs === null && performance.now() - killedAt < options.giveUpMs) {
        if (inflight < options.probesInflightMax) {
          const url = survivorUrls[probes % survivorUrls.length]!
          probes++
          inflight++
          void probe(url, killedAt).finally(() => inflight--)
        }
        await sleep(options.probeIntervalMs)
      }
    } finally {
      agent.destroy()
      await killed
    }
    if (firstOkMs === null) {
      throw new Error(
        `${cluster.name}: no write succeeded within ${options.giveUpMs} ms after killing leader ${leader} (${probes} probes; last problem: ${lastProblem}).`,
      )
    }
    times.push(firstOkMs)
    log(
      `${cluster.name} failover trial ${trial}/${options.trials}: killed ${leader}, first write after ${(firstOkMs as number).toFixed(1)} ms (${probes} probes)`,
    )
    const restartAt = performance.now()
    await cluster.restart(leader)
    const upAt = performance.now()
    await cluster.waitCaughtUp(leader, options.catchUpTimeoutMs)
    log(
      `${cluster.name}: ${leader} restarted in ${(upAt - restartAt).toFixed(0)} ms, caught up ${(performance.now() - upAt).toFixed(0)} ms later`,
    )
  }
  return times
}

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function round(value: number, digits: number): number {
  const factor = 10 ** digits
  return Math.round(value * factor) / factor
}
