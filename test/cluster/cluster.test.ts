// The cluster tier: real docklet node processes on 127.0.0.1, real libp2p,
// driven through the real CLI (`node src/cli.ts ... --json`) by the harness in
// test/support/process-cluster.ts. One five-node cluster is shared by the
// tests below, which vitest runs in order, each starting from where the
// previous one left the cluster: forming it (init + four joins, the last one
// while writes are in flight) and checking that `status --json` agrees on
// every node; SIGKILL of the leader and re-election; the killed node coming
// back after more than two snapshots' worth of writes, installing the
// leader's snapshot (seen in its log) and converging to the same state digest
// at the same applied index; a node cut off from the others (the others
// SIGSTOPped) failing writes with the quorum error in bounded time; voter
// promotion when a voter stays down; removal of a dead member; a leave of the
// leader; a stop and restart of every node; every kind of token misuse; and
// `admin recover --force-new-cluster` after the majority is lost. Replicas are
// compared with GET /v1/debug/state (applied index, snapshot index, sha256 of
// the state machine's canonical snapshot). Raft timing is short (50 ms ticks,
// 500 ms election timeout, 3 s offline threshold, a snapshot every 50
// entries) through each node's config.json. The tier stays in this one file:
// vitest runs files in parallel, and these processes need the CPUs.
// DOCKLET_TEST_KEEP=1 keeps the data dirs (and logs) of a failed run.

import { afterAll, describe, expect, it } from 'vitest'
import type { ClusterStatus } from '../../src/node/docklet-node.ts'
import {
  type CliResult,
  ProcessCluster,
  runCli,
  sleep,
  testNodeConfig,
  waitFor,
} from '../support/process-cluster.ts'

const nodeMajor = Number(process.versions.node.split('.')[0])
const typeStripping = (process.features as { typescript?: unknown }).typescript !== undefined
const missing =
  nodeMajor >= 22 && typeStripping ? null : `Node >= 22 with type stripping (this is ${process.version})`
if (missing !== null && process.env.CI === 'true') {
  // CI must never pass by skipping the cluster tier.
  throw new Error(`The cluster tests need ${missing}; run them with /opt/node24/bin/node (Node 24).`)
}

const offlineThresholdMs = testNodeConfig.offlineThresholdMs ?? 3_000
const requestTimeoutMs = testNodeConfig.requestTimeoutMs ?? 4_000
const snapshotEntries = testNodeConfig.snapshotEntries ?? 50
/** docklet-node keeps this many entries behind a snapshot (min(1000, snapshotEntries / 2)). */
const compactionKeepEntries = Math.min(1_000, Math.floor(snapshotEntries / 2))

function roleCount(status: ClusterStatus, role: string): number {
  return status.members.filter((m) => m.role === role).length
}

function voterIds(status: ClusterStatus): string[] {
  return status.members.filter((m) => m.role === 'voter').map((m) => m.id)
}

/** What every node must agree on: members with their address and role. */
function membership(status: ClusterStatus): string[] {
  return status.members.map((m) => `${m.id} ${m.address} ${m.role}`).sort()
}

/** The message of a failed `--json` CLI call ({"error": {code, message}} on stdout), else stderr. */
function errorOf(result: CliResult): { code: string; message: string } {
  const error = (result.json as { error?: { code?: string; message?: string } } | null)?.error
  return { code: error?.code ?? '', message: error?.message ?? result.stderr }
}

/** A refused CLI call: exit code 1 and a sentence (not a stack trace) that matches `pattern`. */
function expectRefused(result: CliResult, pattern: RegExp): void {
  const { code, message } = errorOf(result)
  expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(1)
  expect(code).toMatch(/^ERR_/)
  expect(message).toMatch(pattern)
  expect(message).not.toMatch(/\n\s+at /)
}

describe.skipIf(missing !== null)('a docklet cluster of real processes', () => {
  const cluster = new ProcessCluster({ name: 'docklet-cluster-' })
  const other = new ProcessCluster({ name: 'docklet-other-' })
  afterAll(async () => {
    await Promise.all([cluster.cleanup(), other.cleanup()])
  })

  it('forms from one init and four joins, the last one while writes are in flight, and status agrees on every node', async () => {
    await cluster.init()
    await cluster.join(3)
    // Writes through a follower's CLI while the fifth node joins.
    const writes: CliResult[] = []
    let joining = true
    const writer = (async () => {
      while (joining) writes.push(await cluster.cli(1, ['token', 'create']))
    })()
    try {
      await cluster.join(1, { via: 0 })
    } finally {
      joining = false
      await writer
    }
    expect(writes.length).toBeGreaterThan(0)
    expect(writes.filter((w) => w.code === 0).length).toBeGreaterThan(0)
    for (const write of writes) {
      if (write.code === 0) expect((write.json as { token: string }).token).toMatch(/^DKLT1-/)
      else expectRefused(write, /\.\s|\.$/)
    }

    // Default maxVoters 3: three voters and two standbys, once both new members caught up.
    await waitFor(
      async () => {
        const s = await cluster.quickStatus(0)
        return s.members.length === 5 && roleCount(s, 'voter') === 3 && roleCount(s, 'standby') === 2
      },
      'three voters and two standbys',
      30_000,
      { detail: () => cluster.logTails() },
    )
    const statuses = await Promise.all(cluster.nodes.map((n) => cluster.status(n.index)))
    const first = statuses[0]!
    expect(first.cluster_id).toMatch(/^[0-9a-f]{16}$/)
    expect(first.leader).not.toBeNull()
    statuses.forEach((status, i) => {
      expect(status.self.id).toBe(cluster.node(i).id)
      expect(status.self.pid).toBe(cluster.node(i).pid)
      expect(status.cluster_id).toBe(first.cluster_id)
      expect(status.leader?.id).toBe(first.leader?.id)
      expect(membership(status)).toEqual(membership(first))
      expect(status.members.map((m) => m.id).sort()).toEqual(cluster.nodes.map((n) => n.id).sort())
    })
  }, 180_000)

  let killedIndex = -1
  let appliedAtKill = 0

  it('elects a new leader after the leader is SIGKILLed, and writes succeed again', async () => {
    const leader = await cluster.waitLeader()
    appliedAtKill = (await cluster.waitConverged()).applied_index
    killedIndex = leader
    const termBefore = (await cluster.quickStatus(leader)).term
    await cluster.kill(leader)
    const survivors = cluster.running()
    const next = await cluster.waitLeader(20_000, survivors)
    expect(next).not.toBe(leader)
    expect((await cluster.quickStatus(next)).term).toBeGreaterThan(termBefore)
    const write = await cluster.cli(survivors.find((i) => i !== next)!, ['token', 'create'])
    expect(write.code, write.stdout + write.stderr).toBe(0)
    expect((write.json as { token: string }).token).toMatch(/^DKLT1-/)
  }, 60_000)

  it('brings the killed leader back after it missed two snapshots of writes: it installs the leader snapshot and converges to the same state', async () => {
    // Enough writes that every survivor compacted its log past what the dead node has.
    const writesMax = 2 * snapshotEntries + compactionKeepEntries + 20
    const survivors = cluster.running()
    let next = 0
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (next < writesMax) {
          const target = survivors[next++ % survivors.length]!
          // On a loaded machine a write may time out while the dead voter is being replaced: try it again.
          for (let attempt = 1; ; attempt++) {
            try {
              await cluster.control(target, {
                method: 'POST',
                path: '/v1/tokens',
                body: { ttl: '3h' },
                timeoutMs: 20_000,
              })
              break
            } catch (error) {
              if (attempt === 3) throw error
            }
          }
        }
      }),
    )
    const compacted = await Promise.all(survivors.map((i) => cluster.debugState(i)))
    for (const state of compacted)
      expect(state.snapshot_index - compactionKeepEntries).toBeGreaterThan(appliedAtKill)

    const logOffset = cluster.logBytes(killedIndex)
    await cluster.restart(killedIndex)
    const target = Math.max(...compacted.map((s) => s.applied_index))
    await waitFor(
      async () => (await cluster.quickStatus(killedIndex)).commit_index >= target,
      `the restarted node to reach commit index ${target}`,
      30_000,
      { detail: () => cluster.logTail(killedIndex) },
    )
    const converged = await cluster.waitConverged(30_000)
    const restarted = await cluster.debugState(killedIndex)
    // Its log ended at appliedAtKill and every member compacted past that: it must have installed a snapshot.
    const installed = cluster
      .logSince(killedIndex, logOffset)
      .filter((line) => line.msg === 'installed a snapshot from the leader')
    expect(installed.length).toBeGreaterThan(0)
    expect(installed[0]!.index as number).toBeGreaterThan(appliedAtKill)
    expect(restarted.snapshot_index).toBeGreaterThanOrEqual(installed[0]!.index as number)
    expect(restarted.state_digest).toBe(converged.state_digest)
    expect(converged.applied_index).toBeGreaterThanOrEqual(target)
  }, 120_000)

  it('fails a write on a node cut off from the others with the quorum-lost error, in bounded time', async () => {
    const leader = await cluster.waitLeader()
    const isolated = killedIndex
    const voters = voterIds(await cluster.quickStatus(leader))
    // It reaches only itself, and only counts itself when it is a voter.
    const reachable = voters.includes(cluster.node(isolated).id) ? 1 : 0
    const others = cluster.running().filter((i) => i !== isolated)
    for (const i of others) cluster.pause(i)
    let result: CliResult
    try {
      // Human output: the sentence goes to stderr.
      result = await cluster.cli(isolated, ['token', 'create'], { json: false, timeoutMs: 30_000 })
    } finally {
      for (const i of others) cluster.resume(i)
    }
    expect(result.code, result.stdout + result.stderr).toBe(1)
    expect(result.stderr).toContain('Quorum is lost')
    expect(result.stderr).toContain(`reaches ${reachable} of ${voters.length} voting members`)
    // requestTimeoutMs inside the node, plus the CLI's own start-up on a busy machine.
    expect(result.durationMs).toBeLessThan(requestTimeoutMs * 2 + 8_000)
    await cluster.waitLeader(30_000)
    const write = await cluster.cli(isolated, ['token', 'create'])
    expect(write.code, write.stdout + write.stderr).toBe(0)
  }, 90_000)

  let deadVoter = -1

  it('promotes a standby when a voter stays down past the offline threshold, keeping three voters', async () => {
    const leader = await cluster.waitLeader()
    const before = await cluster.quickStatus(leader)
    const standbysBefore = before.members.filter((m) => m.role === 'standby').map((m) => m.id)
    expect(voterIds(before)).toHaveLength(3)
    expect(standbysBefore).toHaveLength(2)
    deadVoter = cluster.indexOf(voterIds(before).find((id) => id !== before.leader?.id)!)
    const deadId = cluster.node(deadVoter).id
    await cluster.kill(deadVoter)
    const startedAt = Date.now()
    const after = await waitFor(
      async () => {
        const s = await cluster.quickStatus(await cluster.waitLeader(10_000))
        const voters = voterIds(s)
        return voters.length === 3 && !voters.includes(deadId) ? s : undefined
      },
      'a standby to replace the dead voter',
      offlineThresholdMs + 30_000,
      { detail: () => cluster.logTails() },
    )
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(offlineThresholdMs - 500)
    const promoted = voterIds(after).filter((id) => !voterIds(before).includes(id))
    expect(promoted).toHaveLength(1)
    expect(standbysBefore).toContain(promoted[0])
    const dead = after.members.find((m) => m.id === deadId)
    expect(dead?.online).toBe(false)
    expect(dead?.role).not.toBe('voter')
  }, 90_000)

  it('refuses to remove an online member without --force, and removes a dead one', async () => {
    const leader = await cluster.waitLeader()
    const status = await cluster.quickStatus(leader)
    const online = status.members.find((m) => m.online && m.id !== status.self.id)!
    const refused = await cluster.cli(leader, ['admin', 'member', 'remove', online.id])
    expectRefused(refused, /online.*--force/)

    const deadId = cluster.node(deadVoter).id
    const removed = await cluster.cli(leader, ['admin', 'member', 'remove', deadId])
    expect(removed.code, removed.stdout + removed.stderr).toBe(0)
    await waitFor(
      async () => {
        const statuses = await Promise.all(cluster.running().map((i) => cluster.quickStatus(i)))
        return statuses.every((s) => s.members.length === 4 && !s.members.some((m) => m.id === deadId))
      },
      'every node to drop the removed member',
      20_000,
    )
  }, 60_000)

  it('moves leadership away when the leader leaves; the leaver disappears from status and its process exits', async () => {
    const leader = await cluster.waitLeader()
    const leaverId = cluster.node(leader).id
    const pid = cluster.node(leader).pid
    const result = await cluster.cli(leader, ['leave'])
    expect(result.code, result.stdout + result.stderr).toBe(0)
    await cluster.waitExit(leader, 10_000)
    expect(pid).toBeGreaterThan(0)
    const next = await cluster.waitLeader(20_000)
    expect(next).not.toBe(leader)
    const after = await waitFor(
      async () => {
        const s = await cluster.quickStatus(next)
        return s.members.length === 3 && roleCount(s, 'voter') === 3 ? s : undefined
      },
      'three members, all voters, after the leave',
      30_000,
      { detail: () => cluster.logTails(cluster.running()) },
    )
    expect(after.members.some((m) => m.id === leaverId)).toBe(false)
    // A node that left cannot be started again on its data dir.
    const again = await runCli(['start', '--data-dir', cluster.node(leader).dataDir, '--json'])
    expectRefused(again, /left/)
  }, 90_000)

  it('comes back with the same cluster id, members, tokens and commit index after every node is stopped and restarted', async () => {
    const running = cluster.running()
    const leader = await cluster.waitLeader()
    const before = await cluster.status(leader)
    const tokensBefore = await cluster.cliOk<{ tokens: Array<{ id: string; state: string }> }>(leader, [
      'token',
      'list',
    ])
    await cluster.waitConverged()
    for (const i of running) await cluster.stop(i)
    for (const i of running) await cluster.restart(i)
    const next = await cluster.waitLeader(30_000)
    await cluster.waitConverged(30_000)
    const after = await cluster.status(next)
    expect(after.cluster_id).toBe(before.cluster_id)
    expect(after.members.map((m) => m.id).sort()).toEqual(before.members.map((m) => m.id).sort())
    expect(after.commit_index).toBeGreaterThanOrEqual(before.commit_index)
    const tokensAfter = await cluster.cliOk<{ tokens: Array<{ id: string; state: string }> }>(next, [
      'token',
      'list',
    ])
    expect(tokensAfter.tokens.map((t) => `${t.id} ${t.state}`)).toEqual(
      tokensBefore.tokens.map((t) => `${t.id} ${t.state}`),
    )
    expect(tokensAfter.tokens.length).toBeGreaterThan(snapshotEntries)
  }, 120_000)

  describe('join tokens', () => {
    const member = () => cluster.running()[0]!
    const createToken = (args: string[] = []) =>
      cluster.cliOk<{ id: string; token: string }>(member(), ['token', 'create', ...args])

    it('refuses an expired token', async () => {
      const token = await createToken(['--ttl', '1s'])
      await sleep(1_500)
      expectRefused(await cluster.tryJoin(cluster.node(member()).address, token.token), /expired/)
    }, 60_000)

    it('refuses a revoked token', async () => {
      const token = await createToken()
      const revoked = await cluster.cli(member(), ['token', 'revoke', token.id])
      expect(revoked.code, revoked.stdout + revoked.stderr).toBe(0)
      expectRefused(await cluster.tryJoin(cluster.node(member()).address, token.token), /revoked/)
    }, 60_000)

    it('refuses a token used a second time, and a member the token does not pin', async () => {
      const older = await createToken()
      const token = await createToken()
      const joined = await cluster.joinWithToken(token.token)
      const list = await cluster.cliOk<{ tokens: Array<{ id: string; state: string; used_by: string }> }>(
        member(),
        ['token', 'list'],
      )
      expect(list.tokens.find((t) => t.id === token.id)).toMatchObject({ state: 'used', used_by: joined.id })
      expectRefused(await cluster.tryJoin(cluster.node(member()).address, token.token), /already used/)
      // `older` was created before that join: it pins the members of then, not the new one.
      expectRefused(await cluster.tryJoin(joined.address, older.token), /does not trust/)
    }, 120_000)

    it('refuses a token of another cluster used against this cluster', async () => {
      await other.init()
      const foreign = await other.cliOk<{ token: string }>(0, ['token', 'create'])
      expectRefused(await cluster.tryJoin(cluster.node(member()).address, foreign.token), /does not trust/)
    }, 60_000)

    it('refuses a malformed token', async () => {
      const address = cluster.node(member()).address
      expectRefused(await cluster.tryJoin(address, 'DKLT1-bm90IGEgdG9rZW4'), /malformed/)
      expectRefused(await cluster.tryJoin(address, 'hello'), /malformed/)
    }, 60_000)
  })

  it('recovers a survivor as a one-member cluster with all its state after the majority is lost', async () => {
    const leader = await cluster.waitLeader()
    await cluster.waitConverged()
    const before = await cluster.quickStatus(leader)
    const tokensBefore = await cluster.cliOk<{ tokens: Array<{ id: string; state: string }> }>(leader, [
      'token',
      'list',
    ])
    const voters = voterIds(before).map((id) => cluster.indexOf(id))
    expect(voters).toHaveLength(3)
    const survivor = voters.find((i) => i !== leader)!
    // The majority (two of three voters) is lost for good, and the standby with it.
    for (const i of cluster.running().filter((i) => i !== survivor)) await cluster.kill(i)
    const stuck = await cluster.cli(survivor, ['token', 'create'])
    expectRefused(stuck, /Quorum is lost: this node reaches 1 of 3 voting members/)

    const running = await cluster.cli(survivor, ['admin', 'recover', '--force-new-cluster'])
    expectRefused(running, /running/)
    await cluster.stop(survivor)
    const recovered = await cluster.cliOk<{ cluster_id: string; removed_members: string[] }>(survivor, [
      'admin',
      'recover',
      '--force-new-cluster',
    ])
    expect(recovered.cluster_id).toBe(before.cluster_id)
    expect(recovered.removed_members.sort()).toEqual(
      before.members
        .map((m) => m.id)
        .filter((id) => id !== cluster.node(survivor).id)
        .sort(),
    )

    await cluster.restart(survivor)
    const after = await waitFor(
      async () => {
        const s = await cluster.quickStatus(survivor)
        return s.leader?.id === s.self.id ? s : undefined
      },
      'the recovered node to lead its one-member cluster',
      20_000,
      { detail: () => cluster.logTail(survivor) },
    )
    expect(after.cluster_id).toBe(before.cluster_id)
    expect(after.members.map((m) => `${m.id} ${m.role}`)).toEqual([`${cluster.node(survivor).id} voter`])
    const tokensAfter = await cluster.cliOk<{ tokens: Array<{ id: string; state: string }> }>(survivor, [
      'token',
      'list',
    ])
    expect(tokensAfter.tokens.map((t) => t.id)).toEqual(tokensBefore.tokens.map((t) => t.id))
    const write = await cluster.cli(survivor, ['token', 'create'])
    expect(write.code, write.stdout + write.stderr).toBe(0)
  }, 90_000)
})
