// An etcd cluster on 127.0.0.1 that can grow by `member add`: started from a
// static three-member configuration, then each new member is added through
// the HTTP/JSON gateway (/v3/cluster/member/add) and started with
// --initial-cluster-state=existing, as etcd's runtime reconfiguration guide
// describes. Also kills and restarts members for the failover measurement.

import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { freePorts, pollUntil } from '../raft/bench-cluster.ts'
import { type EtcdTiming, etcdMemberArgs, gatewayPrefix } from '../raft/etcd-cluster.ts'
import { httpJson } from '../raft/http-json.ts'
import type { ManagedProcess, ProcessRegistry } from '../raft/process-registry.ts'

interface Member {
  name: string
  clientPort: number
  peerPort: number
  dataDir: string
  /** etcd's member id (decimal string, as the gateway prints uint64). */
  id: string
  process: ManagedProcess | null
}

interface GatewayMember {
  ID?: string
  name?: string
  peerURLs?: string[]
  clientURLs?: string[]
  isLearner?: boolean
}

const requestTimeoutMs = 2_000
const etcdctlTimeoutMs = 10_000

export class EtcdGroup {
  private readonly registry: ProcessRegistry
  private readonly timing: EtcdTiming
  private readonly prefix: string
  private readonly members: Member[] = []
  private rootDir = ''

  constructor(registry: ProcessRegistry, options: { version: string; timing: EtcdTiming }) {
    this.registry = registry
    this.timing = options.timing
    this.prefix = gatewayPrefix(options.version)
  }

  /** Starts `count` members from a static configuration and waits for a leader. */
  async start(count: number): Promise<void> {
    this.rootDir = this.registry.tempDir('bench-etcd-group-')
    for (let i = 0; i < count; i++) this.members.push(await this.newMember())
    const initialCluster = this.initialCluster(this.members)
    for (const member of this.members) this.spawn(member, initialCluster, 'new')
    // leader() also learns every member's id: after a kill the dead one can no longer say it.
    await this.leader(30_000)
  }

  /**
   * `member add` of a new voting member, then starts it; resolves with the ms
   * from the add request until the member list shows it started (it has a
   * name) and voting (not a learner).
   */
  async addMember(timeoutMs: number): Promise<number> {
    const member = await this.newMember()
    const via = this.running()[0]
    if (via === undefined) throw new Error('No etcd member is running to add a member through.')
    // etcd refuses a reconfiguration until a quorum has been connected for 5 s
    // ("unhealthy cluster", strict reconfig check): the clock starts at the add it accepts.
    const { started, added } = await pollUntil(
      'etcd to accept member add',
      async () => {
        const at = performance.now()
        const res = await httpJson(`${this.url(via)}${this.prefix}/cluster/member/add`, {
          body: { peerURLs: [this.peerUrl(member)] },
          timeoutMs: requestTimeoutMs,
        })
        if (res.status === 200) return { started: at, added: res }
        if (!JSON.stringify(res.body).includes('unhealthy cluster')) {
          throw new Error(`etcd member add answered ${res.status}: ${JSON.stringify(res.body)}`)
        }
        return undefined
      },
      { timeoutMs, intervalMs: 200 },
    )
    member.id = (added.body as { member?: GatewayMember }).member?.ID ?? ''
    this.members.push(member)
    this.spawn(member, this.initialCluster(this.members), 'existing')
    await pollUntil(
      `etcd member ${member.name} to be listed as a started voting member`,
      async () => {
        const list = await httpJson(`${this.url(via)}${this.prefix}/cluster/member/list`, {
          body: {},
          timeoutMs: requestTimeoutMs,
        })
        const found = ((list.body as { members?: GatewayMember[] }).members ?? []).find(
          (m) => m.ID === member.id,
        )
        return found !== undefined && (found.name ?? '') !== '' && found.isLearner !== true ? true : undefined
      },
      { timeoutMs, intervalMs: 10 },
    )
    return performance.now() - started
  }

  size(): number {
    return this.members.length
  }

  running(): Member[] {
    return this.members.filter((m) => m.process?.isRunning() === true)
  }

  /** The member every running member names as leader. */
  async leader(timeoutMs: number): Promise<Member> {
    return pollUntil(
      'an etcd leader that every running member agrees on',
      async () => {
        const live = this.running()
        const statuses = await Promise.all(live.map((m) => this.status(m)))
        live.forEach((m, i) => {
          m.id = statuses[i]?.memberId ?? m.id
        })
        const leaderId = statuses[0]?.leaderId
        if (leaderId === undefined || leaderId === '0' || !statuses.every((s) => s.leaderId === leaderId))
          return undefined
        return live.find((m) => m.id === leaderId)
      },
      { timeoutMs, intervalMs: 20 },
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${this.stderrTails()}`)
    })
  }

  async kill(member: Member): Promise<void> {
    if (member.process !== null) await this.registry.kill(member.process)
    member.process = null
  }

  /** Starts a killed member again on its data dir (its membership is on disk). */
  restart(member: Member): void {
    this.spawn(member, this.initialCluster(this.members), 'existing')
  }

  /** Waits until every running member has applied the leader's index. */
  async waitCaughtUp(timeoutMs: number): Promise<void> {
    const leader = await this.leader(timeoutMs)
    const target = (await this.status(leader)).raftIndex
    await pollUntil(
      `every etcd member to apply up to ${target}`,
      async () => {
        const statuses = await Promise.all(this.running().map((m) => this.status(m)))
        return statuses.every((s) => s.appliedIndex >= target) ? true : undefined
      },
      { timeoutMs, intervalMs: 20 },
    )
  }

  /** `etcdctl put` against one member; resolves true on success. */
  put(member: Member, key: string, value: string): Promise<boolean> {
    return new Promise((resolve) => {
      execFile(
        'etcdctl',
        [`--endpoints=${this.url(member)}`, '--command-timeout=5s', '--dial-timeout=2s', 'put', key, value],
        { timeout: etcdctlTimeoutMs, env: { PATH: process.env.PATH ?? '', ETCDCTL_API: '3' } },
        (error) => resolve(error === null),
      )
    })
  }

  url(member: Member): string {
    return `http://127.0.0.1:${member.clientPort}`
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.members.map(async (m) => {
        if (m.process !== null) await this.registry.terminate(m.process)
        m.process = null
      }),
    )
    if (this.rootDir !== '') this.registry.removeTempDir(this.rootDir)
  }

  stderrTails(): string {
    return this.members
      .map((m) => `--- ${m.name} stderr ---\n${m.process?.stderrTail() ?? '(not running)'}`)
      .join('\n')
  }

  private async newMember(): Promise<Member> {
    const [clientPort, peerPort] = await freePorts(2)
    const name = `etcd-${this.members.length + 1}`
    return {
      name,
      clientPort: clientPort!,
      peerPort: peerPort!,
      dataDir: join(this.rootDir, name),
      id: '',
      process: null,
    }
  }

  private peerUrl(member: Member): string {
    return `http://127.0.0.1:${member.peerPort}`
  }

  private initialCluster(members: Member[]): string {
    return members.map((m) => `${m.name}=${this.peerUrl(m)}`).join(',')
  }

  private spawn(member: Member, initialCluster: string, state: 'new' | 'existing'): void {
    const args = etcdMemberArgs(member, {
      initialCluster,
      token: 'bench-cluster',
      state,
      timing: this.timing,
    })
    // A clean environment: ETCD_* variables from the caller's shell would override the flags above.
    member.process = this.registry.spawn(member.name, 'etcd', args, { env: { PATH: process.env.PATH ?? '' } })
  }

  private async status(
    member: Member,
  ): Promise<{ memberId: string; leaderId: string; raftIndex: number; appliedIndex: number }> {
    const res = await httpJson(`${this.url(member)}${this.prefix}/maintenance/status`, {
      body: {},
      timeoutMs: requestTimeoutMs,
    })
    if (res.status !== 200)
      throw new Error(`${member.name} answered status ${res.status}: ${JSON.stringify(res.body)}`)
    const body = res.body as {
      header?: { member_id?: string }
      leader?: string
      raftIndex?: string
      raftAppliedIndex?: string
    }
    const raftIndex = Number(body.raftIndex ?? 0)
    return {
      memberId: body.header?.member_id ?? '',
      leaderId: body.leader ?? '0',
      raftIndex,
      appliedIndex: body.raftAppliedIndex === undefined ? raftIndex : Number(body.raftAppliedIndex),
    }
  }
}
