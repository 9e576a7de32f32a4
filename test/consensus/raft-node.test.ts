// The driver (RaftNode) with real timers, the in-memory network and durable
// LevelDB storage: proposals resolve with the state machine's result once
// applied, followers refuse writes with the leader's id, ReadIndex works on
// followers, membership changes and leader transfer complete, a stopped
// leader is replaced, and a node restarted from its LevelDB directory comes
// back with its state. Waits are bounded polls, never timing assertions.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  ConfChangeOp,
  ConfChangeTransition,
  ConfigError,
  LevelLogStorage,
  NotLeaderError,
  RaftNode,
  realClock,
  seededRng,
} from '../../consensus/index.ts'
import { type MemoryFrameTransport, MemoryNetwork } from '../../net/index.ts'
import { type KvResult, KvStateMachine } from '../support/kv-state-machine.ts'

const encoder = new TextEncoder()

interface Member {
  id: string
  node: RaftNode<KvResult>
  kv: KvStateMachine
  storage: LevelLogStorage
  transport: MemoryFrameTransport
}

interface Cluster {
  network: MemoryNetwork
  dir: string
  members: Map<string, Member>
  ids: string[]
}

const clusters: Cluster[] = []

function put(key: string, value: string): Uint8Array {
  return encoder.encode(JSON.stringify({ op: 'put', key, value }))
}

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = fn()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

async function startMember(cluster: Cluster, id: string, bootstrap: string[] | undefined): Promise<Member> {
  const storage = await LevelLogStorage.open(join(cluster.dir, id))
  const transport = cluster.network.createTransport(id)
  transport.setPeers(cluster.ids.filter((peer) => peer !== id).map((peer) => ({ id: peer, addrs: [] })))
  const kv = new KvStateMachine()
  const node = await RaftNode.create<KvResult>({
    id,
    storage,
    transport,
    clock: realClock(),
    rng: seededRng(id.charCodeAt(0)),
    stateMachine: kv,
    // Generous timing: the suite shares two cores with other test files.
    raft: { electionTimeoutTicks: 15, heartbeatIntervalTicks: 1 },
    driver: { tickMs: 20, requestTimeoutMs: 10_000, snapshotEntries: 50, compactionKeepEntries: 5 },
    ...(bootstrap === undefined ? {} : { bootstrap: { voters: bootstrap } }),
  })
  node.start()
  const member = { id, node, kv, storage, transport }
  cluster.members.set(id, member)
  return member
}

async function stopMember(cluster: Cluster, id: string): Promise<void> {
  const member = cluster.members.get(id)
  if (member === undefined) return
  cluster.members.delete(id)
  await member.node.stop()
  await member.transport.stop()
  await member.storage.close()
}

async function startCluster(voters: string[], extra: string[] = []): Promise<Cluster> {
  const cluster: Cluster = {
    network: new MemoryNetwork(),
    dir: await mkdtemp(join(tmpdir(), 'docklet-raft-node-')),
    members: new Map(),
    ids: [...voters, ...extra],
  }
  clusters.push(cluster)
  for (const id of voters) await startMember(cluster, id, voters)
  return cluster
}

async function leaderOf(cluster: Cluster): Promise<Member> {
  return waitFor('a leader', () => [...cluster.members.values()].find((m) => m.node.isLeader()))
}

/** A linearizable read barrier on `member`, retried while no leader is known (an election in progress). */
async function readThrough(member: Member): Promise<void> {
  const deadline = Date.now() + 20_000
  for (;;) {
    try {
      return await member.node.readIndex()
    } catch (error) {
      const code = (error as { code?: string }).code
      if ((code !== 'ERR_NOT_LEADER' && code !== 'ERR_TIMEOUT') || Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}

/** Writes through whoever leads, retrying when leadership moves (a loaded machine may re-elect). */
async function write(cluster: Cluster, data: Uint8Array): Promise<KvResult> {
  const deadline = Date.now() + 20_000
  for (;;) {
    const leader = await leaderOf(cluster)
    try {
      return await leader.node.propose(data)
    } catch (error) {
      const code = (error as { code?: string }).code
      const retryable = code === 'ERR_NOT_LEADER' || code === 'ERR_PROPOSAL_DROPPED'
      if (!retryable || Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}

afterEach(async () => {
  for (const cluster of clusters.splice(0)) {
    for (const id of [...cluster.members.keys()]) await stopMember(cluster, id)
    await cluster.network.close()
    await rm(cluster.dir, { recursive: true, force: true })
  }
})

describe('RaftNode', () => {
  it('elects a leader whose proposals resolve with the state machine result on every replica', async () => {
    const cluster = await startCluster(['a', 'b', 'c'])
    const leader = await leaderOf(cluster)
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => leader.node.propose(put(`k${i}`, `v${i}`))),
    )
    expect(results.every((r) => r.ok)).toBe(true)
    for (const member of cluster.members.values()) {
      await waitFor(`${member.id} to apply`, () => member.kv.get('k19') === 'v19')
    }
  })

  it('refuses a proposal on a follower and names the leader', async () => {
    const cluster = await startCluster(['a', 'b', 'c'])
    const leader = await leaderOf(cluster)
    await leader.node.propose(put('x', '1'))
    const follower = [...cluster.members.values()].find((m) => m !== leader)!
    await waitFor('follower to know the leader', () => follower.node.leader() === leader.id)
    const error = await follower.node.propose(put('x', '2')).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(NotLeaderError)
    expect((error as NotLeaderError).leader).toBe(leader.id)
  })

  it('serves a linearizable read on a follower after the write it follows', async () => {
    const cluster = await startCluster(['a', 'b', 'c'])
    const leader = await leaderOf(cluster)
    const follower = [...cluster.members.values()].find((m) => m !== leader)!
    await waitFor('follower to know the leader', () => follower.node.leader() === leader.id)
    for (let i = 0; i < 10; i++) {
      await write(cluster, put('r', String(i)))
      await readThrough(follower)
      expect(follower.kv.get('r')).toBe(String(i))
    }
  })

  it('elects a new leader after the leader stops and keeps every acknowledged write', async () => {
    const cluster = await startCluster(['a', 'b', 'c'])
    const first = await leaderOf(cluster)
    for (let i = 0; i < 30; i++) await write(cluster, put(`w${i}`, String(i)))
    await stopMember(cluster, first.id)
    const second = await leaderOf(cluster)
    expect(second.id).not.toBe(first.id)
    await write(cluster, put('after', 'yes'))
    await readThrough(second)
    for (let i = 0; i < 30; i++) expect(second.kv.get(`w${i}`)).toBe(String(i))
  })

  it('restarts a node from its LevelDB directory with its state and lets it catch up', async () => {
    const cluster = await startCluster(['a', 'b', 'c'])
    const leader = await leaderOf(cluster)
    for (let i = 0; i < 120; i++) await write(cluster, put(`p${i % 7}`, String(i)))
    const follower = [...cluster.members.values()].find((m) => m !== leader)!
    await waitFor('follower to apply', () => follower.kv.get('p1') === '113')
    await stopMember(cluster, follower.id)
    for (let i = 120; i < 200; i++) await write(cluster, put(`p${i % 7}`, String(i)))
    const restarted = await startMember(cluster, follower.id, undefined)
    // Before catching up it already holds what it had persisted (snapshot + log, re-applied).
    await waitFor('restarted node to catch up', () => restarted.kv.get('p3') === '199')
    expect(restarted.node.status().snapshotIndex).toBeGreaterThan(0)
  })

  it('adds a learner, promotes it to voter, and transfers leadership to it', async () => {
    const cluster = await startCluster(['a', 'b', 'c'], ['d'])
    await leaderOf(cluster)
    for (const m of cluster.members.values())
      m.transport.setPeers(cluster.ids.filter((p) => p !== m.id).map((p) => ({ id: p, addrs: [] })))
    for (let i = 0; i < 80; i++) await write(cluster, put('n', String(i)))
    const d = await startMember(cluster, 'd', undefined)
    const context = new Uint8Array(0)
    let conf = await (await leaderOf(cluster)).node.proposeConfChange({
      transition: ConfChangeTransition.Auto,
      changes: [{ op: ConfChangeOp.AddLearner, node: 'd' }],
      context,
    })
    expect(conf.learners).toEqual(['d'])
    await waitFor('learner to catch up', () => d.kv.get('n') === '79')
    expect(d.node.isLeader()).toBe(false)
    conf = await (await leaderOf(cluster)).node.proposeConfChange({
      transition: ConfChangeTransition.Auto,
      changes: [{ op: ConfChangeOp.AddVoter, node: 'd' }],
      context,
    })
    expect(conf.voters).toEqual(['a', 'b', 'c', 'd'])
    const current = await leaderOf(cluster)
    if (current !== d) await current.node.transferLeadership('d')
    await waitFor('d to lead', () => d.node.isLeader())
    const result = await d.node.propose(put('n', 'from-d'))
    expect(result.ok).toBe(true)
  })

  it('rejects an invalid configuration with a sentence that names the setting', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'docklet-raft-config-'))
    const storage = await LevelLogStorage.open(dir)
    const network = new MemoryNetwork()
    try {
      const error = await RaftNode.create({
        id: 'a',
        storage,
        transport: network.createTransport('a'),
        clock: realClock(),
        rng: seededRng(1),
        stateMachine: new KvStateMachine(),
        raft: { electionTimeoutTicks: 5, heartbeatIntervalTicks: 5 },
      }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as Error).message).toMatch(
        /heartbeatIntervalTicks \(5\) must be smaller than electionTimeoutTicks \(5\)/,
      )
    } finally {
      await network.close()
      await storage.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
