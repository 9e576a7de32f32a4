// One member of the docklet Raft KV for the benchmark: a libp2p host, the
// frame transport, classic-level log storage (synced batches), a RaftNode
// over the KV state machine, and a small HTTP/JSON API on 127.0.0.1:
//   PUT /kv/:key            body = value; 200 {ok:true} once applied here
//   GET /kv/:key[?linearizable=1]   {value}; with a ReadIndex barrier first
//   GET /status             the node's status
// A member that is not the leader answers 307 (leader known, its HTTP address
// in JSON and Location) or 503 (no leader), so clients can retarget.
//
// Configuration comes as JSON in KV_SERVER_CONFIG (see KvServerConfig); the
// parent (docklet-cluster.ts) runs this with an IPC channel and the member
// exits when that channel closes, so no member outlives the benchmark.

import { randomInt } from 'node:crypto'
import { appendFileSync, mkdirSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import { LevelLogStorage, type LogStorage, RaftNode, realClock, seededRng } from '../../consensus/index.ts'
import { createLibp2pHost, Libp2pFrameTransport } from '../../net/index.ts'
import { encodeKvCommand, type KvResult, KvStateMachine } from '../../test/support/kv-state-machine.ts'

export interface KvServerPeer {
  name: string
  peerId: string
  p2pPort: number
  httpPort: number
}

export interface KvServerConfig extends KvServerPeer {
  /** Protobuf-encoded Ed25519 private key, hex. */
  privateKeyHex: string
  dataDir: string
  /** Every member, this one included. */
  peers: KvServerPeer[]
  tickMs: number
  heartbeatIntervalTicks: number
  electionTimeoutTicks: number
}

export interface KvStatus {
  id: string
  term: number
  leader: string
  role: string
  commit: number
  applied: number
  lastIndex: number
}

export interface NotLeaderBody {
  code: 'ERR_NOT_LEADER'
  /** The leader's PeerId, '' when unknown. */
  leader: string
  /** The leader's HTTP base URL, null when unknown. */
  leaderUrl: string | null
}

/** Largest request body accepted (a value). */
const bodyBytesMax = 1024 * 1024
/** Simultaneous HTTP connections; the load generator opens at most a few hundred. */
const connectionsMax = 1_024

/** Event-loop stalls at least this long are logged (once per second, the longest). */
const loopStallLogMs = 30
/**
 * When set, each member also appends its log lines to <dir>/<member>.log (the
 * bench keeps only a short stderr tail). A synchronous append is fine for a
 * few lines a second, and only while diagnosing.
 */
const logDir = process.env.DOCKLET_BENCH_LOG_DIR
let logFile: string | null = null

function log(line: string): void {
  const text = `${new Date().toISOString().slice(11, 23)} ${line}\n`
  process.stderr.write(text)
  if (logFile !== null) appendFileSync(logFile, text)
}

class HttpError extends Error {
  readonly status: number
  readonly body: unknown
  constructor(status: number, body: unknown) {
    super(`HTTP ${status}`)
    this.status = status
    this.body = body
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let bytes = 0
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length
      if (bytes > bodyBytesMax) {
        reject(
          new HttpError(413, {
            code: 'ERR_TOO_LARGE',
            message: `Values are limited to ${bodyBytesMax} bytes.`,
          }),
        )
        req.destroy()
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  })
  res.end(text)
}

/** Saves at least this slow are logged when diagnosing (DOCKLET_BENCH_LOG_DIR). */
const slowSaveLogMs = 30
/** Garbage-collection pauses at least this long are logged when diagnosing. */
const gcPauseLogMs = 10

/** The storage, logging every save or compaction that takes slowSaveLogMs or more (a disk stall, not a loop stall). */
function timedStorage(storage: LogStorage): LogStorage {
  const timed =
    <A extends unknown[]>(what: string, run: (...args: A) => Promise<void>) =>
    async (...args: A): Promise<void> => {
      const startedMs = performance.now()
      await run(...args)
      const tookMs = performance.now() - startedMs
      if (tookMs >= slowSaveLogMs) log(`storage ${what} took ${tookMs.toFixed(1)} ms`)
    }
  return {
    load: () => storage.load(),
    save: timed('save', (update) => storage.save(update)),
    compact: timed('compact', (snapshot) => storage.compact(snapshot)),
    close: () => storage.close(),
  }
}

async function main(): Promise<void> {
  const text = process.env.KV_SERVER_CONFIG
  if (text === undefined)
    throw new Error('KV_SERVER_CONFIG is not set; this process is started by bench/raft/bench-raft.ts.')
  const config = JSON.parse(text) as KvServerConfig
  if (logDir !== undefined && logDir !== '') logFile = join(logDir, `${config.name}.log`)
  const httpUrlByPeerId = new Map(config.peers.map((p) => [p.peerId, `http://127.0.0.1:${p.httpPort}`]))
  mkdirSync(config.dataDir, { recursive: true })

  const host = await createLibp2pHost({
    identity: Buffer.from(config.privateKeyHex, 'hex'),
    listen: `127.0.0.1:${config.p2pPort}`,
  })
  if (host.peerId.toString() !== config.peerId) {
    throw new Error(`The identity gives PeerId ${host.peerId.toString()}, not the expected ${config.peerId}.`)
  }
  const transport = new Libp2pFrameTransport(host, {
    onEvent: (e) => log(`transport ${e.type} ${e.peer.slice(-6)}: ${e.message}`),
  })
  await transport.start()
  transport.setPeers(
    config.peers
      .filter((p) => p.peerId !== config.peerId)
      .map((p) => ({ id: p.peerId, addrs: [`127.0.0.1:${p.p2pPort}`] })),
  )
  let sendsDropped = 0
  const dropReport = setInterval(() => {
    if (sendsDropped > 0) log(`raft ${sendsDropped} sends dropped in the last second`)
    sendsDropped = 0
  }, 1_000)
  dropReport.unref()
  // Raft's timers must not wait behind bulk work: report when the loop did.
  const loopDelay = monitorEventLoopDelay({ resolution: 5 })
  loopDelay.enable()
  const loopReport = setInterval(() => {
    const maxMs = loopDelay.max / 1e6
    if (maxMs >= loopStallLogMs) {
      log(
        `event loop stalled up to ${maxMs.toFixed(1)} ms in the last second (p99 ${(loopDelay.percentile(99) / 1e6).toFixed(1)} ms)`,
      )
    }
    loopDelay.reset()
  }, 1_000)
  loopReport.unref()
  if (logFile !== null) {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        if (entry.duration >= gcPauseLogMs) log(`gc pause ${entry.duration.toFixed(1)} ms (${entry.name})`)
      }
    }).observe({ entryTypes: ['gc'] })
  }
  const storage = await LevelLogStorage.open(join(config.dataDir, 'raft'))
  const kv = new KvStateMachine()
  const node = await RaftNode.create<KvResult>({
    id: config.peerId,
    storage: logFile === null ? storage : timedStorage(storage),
    transport,
    clock: realClock(),
    // Election jitter must differ between members; a seed per process is enough here.
    rng: seededRng(randomInt(2 ** 31)),
    stateMachine: kv,
    raft: {
      electionTimeoutTicks: config.electionTimeoutTicks,
      heartbeatIntervalTicks: config.heartbeatIntervalTicks,
    },
    driver: { tickMs: config.tickMs },
    bootstrap: { voters: config.peers.map((p) => p.peerId) },
    onEvent: (e) => {
      // Dropped sends are routine while a peer is down; count them rather than log each.
      if (e.type === 'send-dropped') sendsDropped++
      else log(`raft ${JSON.stringify(e)}`)
    },
  })
  node.start()

  const notLeader = (leader: string): HttpError => {
    const leaderUrl = httpUrlByPeerId.get(leader) ?? null
    const body: NotLeaderBody = { code: 'ERR_NOT_LEADER', leader, leaderUrl }
    return leaderUrl === null ? new HttpError(503, body) : new HttpError(307, body)
  }
  const raftError = (error: unknown): HttpError => {
    const e = error as { code?: string; leader?: string; message?: string }
    if (e.code === 'ERR_NOT_LEADER') return notLeader(e.leader ?? '')
    const status = e.code === 'ERR_TIMEOUT' ? 504 : e.code === 'ERR_STOPPED' ? 503 : 500
    return new HttpError(status, { code: e.code ?? 'ERR_INTERNAL', message: e.message ?? String(error) })
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (url.pathname === '/status' && req.method === 'GET') {
      const s = node.status()
      const status: KvStatus = {
        id: s.id,
        term: s.term,
        leader: s.leader,
        role: s.role,
        commit: s.commit,
        applied: s.applied,
        lastIndex: s.lastIndex,
      }
      sendJson(res, 200, status)
      return
    }
    if (!url.pathname.startsWith('/kv/')) throw new HttpError(404, { code: 'ERR_NOT_FOUND' })
    const key = decodeURIComponent(url.pathname.slice('/kv/'.length))
    if (key === '') throw new HttpError(400, { code: 'ERR_BAD_KEY', message: 'The key must not be empty.' })
    if (req.method === 'PUT') {
      const value = (await readBody(req)).toString('utf8')
      const result = await node
        .propose(encodeKvCommand({ op: 'put', key, value }))
        .catch((error: unknown) => {
          throw raftError(error)
        })
      sendJson(res, result.ok ? 200 : 500, { ok: result.ok })
      return
    }
    if (req.method === 'GET') {
      if (url.searchParams.get('linearizable') === '1') {
        await node.readIndex().catch((error: unknown) => {
          throw raftError(error)
        })
      }
      sendJson(res, 200, { value: kv.get(key) })
      return
    }
    throw new HttpError(405, { code: 'ERR_METHOD', message: `${req.method} is not supported on /kv/.` })
  }

  const server = createServer({ keepAlive: true, keepAliveTimeout: 60_000 }, (req, res) => {
    handle(req, res).catch((error: unknown) => {
      const e = error instanceof HttpError ? error : raftError(error)
      const body = e.body as Partial<NotLeaderBody>
      const headers: Record<string, string> =
        e.status === 307 && body.leaderUrl ? { location: `${body.leaderUrl}${req.url ?? ''}` } : {}
      if (!res.headersSent) sendJson(res, e.status, e.body, headers)
    })
  })
  server.maxConnections = connectionsMax
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(config.httpPort, '127.0.0.1', resolve)
  })
  log(
    `${config.name} ${config.peerId} listening: http 127.0.0.1:${config.httpPort}, libp2p 127.0.0.1:${config.p2pPort}`,
  )

  let stopping = false
  const shutdown = async (why: string): Promise<void> => {
    if (stopping) return
    stopping = true
    log(`${config.name} stopping (${why})`)
    const force = setTimeout(() => process.exit(0), 3_000)
    force.unref()
    server.close()
    server.closeAllConnections()
    await node.stop().catch((error: unknown) => log(`node.stop failed: ${String(error)}`))
    await transport.stop().catch(() => {})
    await Promise.resolve(host.stop()).catch(() => {})
    await storage.close().catch(() => {})
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
  // The benchmark process is gone (however it died): do not linger.
  process.on('disconnect', () => void shutdown('parent disconnected'))
}

main().catch((error: unknown) => {
  log(`kv-server failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
  process.exit(1)
})
