// What the benchmark needs from a 3-member system under test (etcd or the
// docklet Raft KV), so that one load generator and one failover procedure
// drive both the same way.

import { createServer } from 'node:net'

/** How one write travels over HTTP, and how to read the answer. */
export interface WriteProtocol {
  /** Builds the request for one write; the body is sent as is. */
  request(
    key: string,
    value: string,
  ): { method: string; path: string; headers: Record<string, string>; body: Buffer }
  classify(status: number, body: string, baseUrl: string): WriteOutcome
}

export type WriteOutcome =
  | { kind: 'ok' }
  /** Not the leader; `url` is the leader's base URL when the member knows it. */
  | { kind: 'not-leader'; url: string | null }
  | { kind: 'error'; message: string }

export interface BenchCluster {
  readonly name: 'docklet' | 'etcd'
  readonly members: readonly string[]
  readonly writes: WriteProtocol
  /** Timing and durability settings, printed with the results. */
  readonly settings: Record<string, string | number | boolean>
  start(): Promise<void>
  /** Base URL (http://127.0.0.1:port) of a member's client endpoint. */
  url(member: string): string
  /** The member that is leader, polling until every live member agrees or the time is up. */
  findLeader(timeoutMs: number): Promise<string>
  /** Current pids of the live members, for RSS sampling. */
  pids(): number[]
  /** SIGKILL, as a crash. */
  kill(member: string): Promise<void>
  /** Starts a killed member again on its data dir. */
  restart(member: string): Promise<void>
  /** Waits until the member has applied everything the leader had committed when the wait began. */
  waitCaughtUp(member: string, timeoutMs: number): Promise<void>
  /** The last stderr lines of every member, for error reports. */
  stderrTails(): string
  /** Stops every member and deletes the data dirs. */
  stop(): Promise<void>
}

/** Distinct free ports on 127.0.0.1; held open together so none is handed out twice. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<import('node:net').Server>((resolve, reject) => {
          const server = createServer()
          server.once('error', reject)
          server.listen(0, '127.0.0.1', () => resolve(server))
        }),
    ),
  )
  const ports = servers.map((s) => {
    const address = s.address()
    if (address === null || typeof address === 'string') throw new Error('A TCP server reported no port.')
    return address.port
  })
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Calls `probe` until it returns a value other than undefined, or throws a timeout naming `what`. */
export async function pollUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  options: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const deadline = performance.now() + options.timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (error) {
      lastError = error
    }
    if (performance.now() > deadline) {
      const detail = lastError instanceof Error ? ` Last error: ${lastError.message}` : ''
      throw new Error(`Timed out after ${options.timeoutMs} ms waiting for ${what}.${detail}`)
    }
    await sleep(options.intervalMs ?? 50)
  }
}
