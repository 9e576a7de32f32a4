// Three docklet Raft KV members (bench/raft/kv-server.ts), each its own Node
// process with its own libp2p host and classic-level log, on 127.0.0.1. The
// Ed25519 identities are made here so every member knows the others' PeerIds
// before any of them starts.

import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { BenchCluster, WriteOutcome, WriteProtocol } from './bench-cluster.ts'
import { freePorts, pollUntil } from './bench-cluster.ts'
import { httpJson } from './http-json.ts'
import type { KvServerConfig, KvStatus, NotLeaderBody } from './kv-server.ts'
import type { ManagedProcess, ProcessRegistry } from './process-registry.ts'

/** LAN-like timing: 10 ms ticks, heartbeat every tick, 100 ms election timeout (randomised in [T, 2T)). */
export const dockletTiming = {
  tickMs: 10,
  heartbeatIntervalTicks: 1,
  electionTimeoutTicks: 10,
  electionTimeoutMs: 100,
} as const

/** Node flags every member runs with (also reported with the results). */
export const MEMBER_NODE_FLAGS = ['--max-semi-space-size=2']

// Members run the same language as this file: compiled JS under dist/ (npm run build), else TS.
const kvServerPath = fileURLToPath(
  new URL(import.meta.url.endsWith('.js') ? './kv-server.js' : './kv-server.ts', import.meta.url),
)
const statusTimeoutMs = 1_000
const startTimeoutMs = 30_000

interface DockletMember {
  config: KvServerConfig
  process: ManagedProcess | null
}

export class DockletCluster implements BenchCluster {
  readonly name = 'docklet' as const
  readonly members: readonly string[] = ['docklet-1', 'docklet-2', 'docklet-3']
  readonly writes: WriteProtocol = dockletWriteProtocol
  readonly settings: Record<string, string | number | boolean> = {
    tick_ms: dockletTiming.tickMs,
    heartbeat_interval_ms: dockletTiming.tickMs * dockletTiming.heartbeatIntervalTicks,
    election_timeout_ms: dockletTiming.electionTimeoutMs,
    pre_vote: true,
    check_quorum: true,
    transport: 'libp2p tcp+noise+yamux',
    api: 'PUT /kv/:key (node:http, keep-alive)',
    fsync: 'classic-level batch with sync:true per Ready',
    runtime: `node ${process.version} ${MEMBER_NODE_FLAGS.join(' ')}, ${import.meta.url.endsWith('.js') ? 'compiled JS (npm run build)' : 'TypeScript via type stripping'}`,
  }
  private readonly registry: ProcessRegistry
  private readonly byName = new Map<string, DockletMember>()
  private readonly nameByPeerId = new Map<string, string>()
  private rootDir = ''

  constructor(registry: ProcessRegistry) {
    this.registry = registry
  }

  async start(): Promise<void> {
    this.rootDir = this.registry.tempDir('bench-docklet-')
    const ports = await freePorts(this.members.length * 2)
    const identities = await Promise.all(
      this.members.map(async () => {
        const key = await generateKeyPair('Ed25519')
        return {
          privateKeyHex: Buffer.from(privateKeyToProtobuf(key)).toString('hex'),
          peerId: peerIdFromPrivateKey(key).toString(),
        }
      }),
    )
    const peers = this.members.map((name, i) => ({
      name,
      peerId: identities[i]!.peerId,
      p2pPort: ports[2 * i]!,
      httpPort: ports[2 * i + 1]!,
    }))
    peers.forEach((peer, i) => {
      this.nameByPeerId.set(peer.peerId, peer.name)
      this.byName.set(peer.name, {
        config: {
          ...peer,
          privateKeyHex: identities[i]!.privateKeyHex,
          dataDir: join(this.rootDir, peer.name),
          peers,
          tickMs: dockletTiming.tickMs,
          heartbeatIntervalTicks: dockletTiming.heartbeatIntervalTicks,
          electionTimeoutTicks: dockletTiming.electionTimeoutTicks,
        },
        process: null,
      })
    })
    for (const member of this.byName.values()) this.spawn(member)
    await this.findLeader(startTimeoutMs)
  }

  url(member: string): string {
    return `http://127.0.0.1:${this.member(member).config.httpPort}`
  }

  async findLeader(timeoutMs: number): Promise<string> {
    return pollUntil(
      'a docklet leader that every live member agrees on',
      async () => {
        const live = [...this.byName.values()].filter((m) => m.process?.isRunning())
        const statuses = await Promise.all(live.map((m) => this.status(m.config.name)))
        const leaderId = statuses[0]?.leader
        if (leaderId === undefined || leaderId === '' || !statuses.every((s) => s.leader === leaderId))
          return undefined
        const leader = this.nameByPeerId.get(leaderId)
        if (leader === undefined || !this.member(leader).process?.isRunning()) return undefined
        return statuses.some((s) => s.id === leaderId && s.role === 'leader') ? leader : undefined
      },
      { timeoutMs, intervalMs: 20 },
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${this.stderrTails()}`)
    })
  }

  pids(): number[] {
    return [...this.byName.values()].flatMap((m) => (m.process?.isRunning() ? [m.process.pid] : []))
  }

  async kill(member: string): Promise<void> {
    const m = this.member(member)
    if (m.process !== null) await this.registry.kill(m.process)
    m.process = null
  }

  async restart(member: string): Promise<void> {
    const m = this.member(member)
    if (m.process?.isRunning()) throw new Error(`${member} is still running; kill it before restarting it.`)
    this.spawn(m)
    await pollUntil(`${member} to answer after its restart`, () => this.status(member), {
      timeoutMs: startTimeoutMs,
    }).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${this.stderrTails()}`)
    })
  }

  async waitCaughtUp(member: string, timeoutMs: number): Promise<void> {
    const leader = await this.findLeader(timeoutMs)
    const target = (await this.status(leader)).commit
    await pollUntil(
      `${member} to apply up to index ${target}`,
      async () => ((await this.status(member)).applied >= target ? true : undefined),
      { timeoutMs, intervalMs: 20 },
    )
  }

  async stop(): Promise<void> {
    await Promise.all(
      [...this.byName.values()].map(async (m) => {
        if (m.process !== null) await this.registry.terminate(m.process)
        m.process = null
      }),
    )
    if (this.rootDir !== '') this.registry.removeTempDir(this.rootDir)
  }

  private member(name: string): DockletMember {
    const m = this.byName.get(name)
    if (m === undefined) throw new Error(`Unknown docklet member ${name}.`)
    return m
  }

  private spawn(member: DockletMember): void {
    // A small young generation (V8 defaults to 16 MiB semi-spaces) keeps a
    // member's resident memory low at the cost of more, shorter scavenges.
    // A docklet node (`docklet start`) runs with V8's defaults; the flag is
    // reported with the results. DOCKLET_BENCH_NODE_ARGS adds flags (e.g.
    // --cpu-prof when profiling).
    const nodeArgs = [
      ...MEMBER_NODE_FLAGS,
      ...(process.env.DOCKLET_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
    ]
    member.process = this.registry.spawn(member.config.name, process.execPath, [...nodeArgs, kvServerPath], {
      // The IPC channel lets the member notice when the bench process dies, however it dies.
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, KV_SERVER_CONFIG: JSON.stringify(member.config) },
    })
  }

  private async status(name: string): Promise<KvStatus> {
    const res = await httpJson(`${this.url(name)}/status`, { timeoutMs: statusTimeoutMs })
    if (res.status !== 200)
      throw new Error(`${name} answered status ${res.status}: ${JSON.stringify(res.body)}`)
    return res.body as KvStatus
  }

  stderrTails(): string {
    return [...this.byName.values()]
      .map(
        (m) => `--- ${m.config.name} stderr (last lines) ---\n${m.process?.stderrTail() ?? '(not running)'}`,
      )
      .join('\n')
  }
}

const dockletWriteProtocol: WriteProtocol = {
  request(key, value) {
    const body = Buffer.from(value)
    return {
      method: 'PUT',
      path: `/kv/${encodeURIComponent(key)}`,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
      body,
    }
  },
  classify(status, body): WriteOutcome {
    if (status === 200) return { kind: 'ok' }
    if (status === 307 || status === 503) {
      try {
        const parsed = JSON.parse(body) as NotLeaderBody
        if (parsed.code === 'ERR_NOT_LEADER') return { kind: 'not-leader', url: parsed.leaderUrl }
      } catch {
        // Fall through: report the raw answer.
      }
    }
    return { kind: 'error', message: `docklet answered ${status}: ${body.slice(0, 200)}` }
  },
}
