// Three etcd members as separate processes on 127.0.0.1 (static
// initial-cluster, temp data dirs), driven through etcd's HTTP/JSON gRPC
// gateway so that the load generator speaks plain HTTP to both systems.

import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import type { BenchCluster, WriteOutcome, WriteProtocol } from './bench-cluster.ts'
import { freePorts, pollUntil } from './bench-cluster.ts'
import { httpJson } from './http-json.ts'
import type { ManagedProcess, ProcessRegistry } from './process-registry.ts'

/** The command line of one etcd member on 127.0.0.1 (used by bench:raft and bench:cluster). */
export function etcdMemberArgs(
  member: { name: string; dataDir: string; clientPort: number; peerPort: number },
  options: { initialCluster: string; token: string; state: 'new' | 'existing'; timing: EtcdTiming },
): string[] {
  const client = `http://127.0.0.1:${member.clientPort}`
  const peer = `http://127.0.0.1:${member.peerPort}`
  return [
    `--name=${member.name}`,
    `--data-dir=${member.dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${options.initialCluster}`,
    `--initial-cluster-token=${options.token}`,
    `--initial-cluster-state=${options.state}`,
    `--heartbeat-interval=${options.timing.heartbeatIntervalMs}`,
    `--election-timeout=${options.timing.electionTimeoutMs}`,
    '--pre-vote=true',
    '--logger=zap',
    '--log-outputs=stderr',
    '--log-level=warn',
  ]
}

export interface EtcdTiming {
  heartbeatIntervalMs: number
  electionTimeoutMs: number
}

interface EtcdMember {
  name: string
  clientPort: number
  peerPort: number
  dataDir: string
  process: ManagedProcess | null
}

interface EtcdStatus {
  memberId: string
  leaderId: string
  raftIndex: number
  appliedIndex: number
}

const statusTimeoutMs = 1_000

/** `etcd --version` first line, e.g. "3.4.23"; throws a sentence saying how to install etcd. */
export function etcdVersion(binary = 'etcd'): string {
  let text: string
  try {
    text = execFileSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000, maxBuffer: 64 * 1024 })
  } catch (error) {
    throw new Error(
      `Could not run "${binary} --version". Install etcd (apt-get install -y --no-install-recommends etcd-server etcd-client) or run with --only docklet.`,
      { cause: error },
    )
  }
  const match = /etcd Version:\s*(\S+)/.exec(text)
  if (match?.[1] === undefined) throw new Error(`Could not read the etcd version from: ${text.trim()}`)
  return match[1]
}

/** The gRPC gateway prefix changed with etcd releases: v3alpha (3.2), v3beta (3.3), v3 (3.4+). */
export function gatewayPrefix(version: string): string {
  const [major, minor] = version.split('.').map(Number)
  if (major === undefined || minor === undefined || Number.isNaN(major) || Number.isNaN(minor)) {
    throw new Error(`Unrecognised etcd version "${version}".`)
  }
  if (major > 3 || minor >= 4) return '/v3'
  return minor === 3 ? '/v3beta' : '/v3alpha'
}

export class EtcdCluster implements BenchCluster {
  readonly name = 'etcd' as const
  readonly members: readonly string[] = ['etcd-1', 'etcd-2', 'etcd-3']
  readonly writes: WriteProtocol
  readonly settings: Record<string, string | number | boolean>
  private readonly registry: ProcessRegistry
  private readonly timing: EtcdTiming
  private readonly prefix: string
  private readonly byName = new Map<string, EtcdMember>()
  private readonly nameById = new Map<string, string>()
  private rootDir = ''

  constructor(registry: ProcessRegistry, options: { version: string; timing: EtcdTiming }) {
    this.registry = registry
    this.timing = options.timing
    this.prefix = gatewayPrefix(options.version)
    this.writes = etcdWriteProtocol(this.prefix)
    this.settings = {
      version: options.version,
      heartbeat_interval_ms: options.timing.heartbeatIntervalMs,
      election_timeout_ms: options.timing.electionTimeoutMs,
      pre_vote: true,
      gateway: `POST ${this.prefix}/kv/put`,
      fsync: 'WAL fdatasync per batch (etcd default)',
    }
  }

  async start(): Promise<void> {
    this.rootDir = this.registry.tempDir('bench-etcd-')
    const ports = await freePorts(this.members.length * 2)
    this.members.forEach((name, i) => {
      this.byName.set(name, {
        name,
        clientPort: ports[2 * i]!,
        peerPort: ports[2 * i + 1]!,
        dataDir: join(this.rootDir, name),
        process: null,
      })
    })
    for (const member of this.byName.values()) this.spawn(member)
    await this.findLeader(20_000)
    // Learn every member id now: after a kill the dead member can no longer say who it is.
    for (const name of this.members) await this.status(name)
  }

  url(member: string): string {
    return `http://127.0.0.1:${this.member(member).clientPort}`
  }

  async findLeader(timeoutMs: number): Promise<string> {
    return pollUntil(
      'an etcd leader that every live member agrees on',
      async () => {
        const live = [...this.byName.values()].filter((m) => m.process?.isRunning())
        const statuses = await Promise.all(live.map((m) => this.status(m.name)))
        const leaderId = statuses[0]?.leaderId
        if (leaderId === undefined || leaderId === '0' || !statuses.every((s) => s.leaderId === leaderId))
          return undefined
        const leader = this.nameById.get(leaderId)
        return leader !== undefined && this.member(leader).process?.isRunning() ? leader : undefined
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
    await pollUntil(`${member} to answer after its restart`, () => this.status(member), { timeoutMs: 20_000 })
  }

  async waitCaughtUp(member: string, timeoutMs: number): Promise<void> {
    const leader = await this.findLeader(timeoutMs)
    const target = (await this.status(leader)).raftIndex
    await pollUntil(
      `${member} to apply up to index ${target}`,
      async () => ((await this.status(member)).appliedIndex >= target ? true : undefined),
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

  private member(name: string): EtcdMember {
    const m = this.byName.get(name)
    if (m === undefined) throw new Error(`Unknown etcd member ${name}.`)
    return m
  }

  private spawn(member: EtcdMember): void {
    const initialCluster = [...this.byName.values()]
      .map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`)
      .join(',')
    const args = etcdMemberArgs(member, {
      initialCluster,
      token: 'bench-raft',
      state: 'new',
      timing: this.timing,
    })
    // A clean environment: ETCD_* variables from the caller's shell would override the flags above.
    member.process = this.registry.spawn(member.name, 'etcd', args, { env: { PATH: process.env.PATH ?? '' } })
  }

  private async status(name: string): Promise<EtcdStatus> {
    const res = await httpJson(`${this.url(name)}${this.prefix}/maintenance/status`, {
      body: {},
      timeoutMs: statusTimeoutMs,
    })
    if (res.status !== 200)
      throw new Error(`${name} answered status ${res.status}: ${JSON.stringify(res.body)}`)
    const body = res.body as {
      header?: { member_id?: string }
      leader?: string
      raftIndex?: string
      raftAppliedIndex?: string
    }
    const memberId = body.header?.member_id ?? ''
    if (memberId !== '') this.nameById.set(memberId, name)
    const raftIndex = Number(body.raftIndex ?? 0)
    return {
      memberId,
      leaderId: body.leader ?? '0',
      raftIndex,
      // raftAppliedIndex exists from etcd 3.4; older members only report the committed index.
      appliedIndex: body.raftAppliedIndex === undefined ? raftIndex : Number(body.raftAppliedIndex),
    }
  }

  stderrTails(): string {
    return [...this.byName.values()]
      .map((m) => `--- ${m.name} stderr (last lines) ---\n${m.process?.stderrTail() ?? '(not running)'}`)
      .join('\n')
  }
}

function etcdWriteProtocol(prefix: string): WriteProtocol {
  // The value is the same for every write of a run; encode it once.
  let lastValue = ''
  let lastValueBase64 = ''
  return {
    request(key, value) {
      if (value !== lastValue) {
        lastValue = value
        lastValueBase64 = Buffer.from(value).toString('base64')
      }
      const body = Buffer.from(
        `{"key":"${Buffer.from(key).toString('base64')}","value":"${lastValueBase64}"}`,
      )
      return {
        method: 'POST',
        path: `${prefix}/kv/put`,
        headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
        body,
      }
    },
    classify(status, body): WriteOutcome {
      if (status === 200) return { kind: 'ok' }
      return { kind: 'error', message: `etcd answered ${status}: ${body.slice(0, 200)}` }
    },
  }
}
