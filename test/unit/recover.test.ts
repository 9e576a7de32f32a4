// Checks `docklet admin recover --force-new-cluster` (src/node/recover.ts) on
// a real LevelDB store in a temp data dir: a store holding a snapshot of a
// three-member cluster, committed entries after it (a conf change, a token, a
// leader no-op) and one uncommitted entry is rewritten; the test reopens the
// new store and checks one voter, only this host in the state, the committed
// token kept and the uncommitted one dropped, the old store kept aside, and
// that a Raft core started from the new store elects itself alone.

import { existsSync, readdirSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import {
  type Entry,
  EntryType,
  LevelLogStorage,
  RaftCore,
  Role,
  resolveRaftConfig,
  seededRng,
} from '../../consensus/index.ts'
import { generateIdentity, peerIdOfIdentity } from '../../net/index.ts'
import {
  dataDirPaths,
  type NodeRecord,
  readNodeRecord,
  writeIdentity,
  writeNodeRecord,
} from '../../src/node/data-dir.ts'
import { RecoverError, recoverForceNewCluster } from '../../src/node/recover.ts'
import { ClusterState, type Command, encodeCommand } from '../../src/state/cluster-state.ts'

const NOW = new Date('2025-03-04T05:06:07.890Z')

let dataDir = ''
let selfId = ''

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'docklet-recover-'))
  const identity = await generateIdentity()
  selfId = peerIdOfIdentity(identity)
  const paths = dataDirPaths(dataDir)
  writeIdentity(paths, identity)
  const record: NodeRecord = {
    version: 1,
    clusterId: 'c0ffee',
    origin: 'join',
    createdAt: 1,
    pendingInit: null,
    seedPeers: [{ id: 'peer-b', address: '/ip4/127.0.0.1/tcp/1' }],
    left: false,
    listen: '127.0.0.1:17001',
    advertise: '',
    portal: '',
  }
  writeNodeRecord(paths, record)
})

afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true })
})

function member(id: string) {
  return { id, name: id, address: `/ip4/127.0.0.1/tcp/${id.length}`, portal: '' }
}

function tokenCreate(id: string, at: number): Command {
  return {
    type: 'token.create',
    at,
    id,
    secretHash: `hash-${id}`,
    expiresAt: at + 3_600_000,
    createdBy: 'root',
  }
}

/** The state of a cluster founded by peer-a with peer-b and this host joined through tokens. */
function foundedState(members: string[]): ClusterState {
  const state = new ClusterState()
  const [founder, ...others] = members
  const commands: Command[] = [
    {
      type: 'cluster.init',
      at: 1,
      clusterId: 'c0ffee',
      member: member(founder!),
      admin: { name: 'admin', passwordHash: 'x' },
      settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
    },
  ]
  others.forEach((id, n) => {
    commands.push(tokenCreate(`t${n}`, 2 + n))
    commands.push({
      type: 'member.join',
      at: 10 + n,
      tokenId: `t${n}`,
      secretHash: `hash-t${n}`,
      member: member(id),
    })
  })
  for (const command of commands) expect(state.apply(encodeCommand(command))).toMatchObject({ ok: true })
  return state
}

function normal(index: number, term: number, command: Command | null): Entry {
  return {
    index,
    term,
    type: EntryType.Normal,
    data: command === null ? new Uint8Array(0) : encodeCommand(command),
  }
}

/** Snapshot at 5 (term 2), entries 6..9; commit 8, so entry 9 is uncommitted. */
async function writeOldStore(members: string[]): Promise<void> {
  const storage = await LevelLogStorage.open(dataDirPaths(dataDir).raft)
  try {
    await storage.save({
      hardState: { term: 4, vote: 'peer-a', commit: 8 },
      snapshot: {
        meta: {
          index: 5,
          term: 2,
          confState: {
            voters: [...members].sort(),
            votersOutgoing: [],
            learners: [],
            learnersNext: [],
            autoLeave: false,
          },
        },
        data: foundedState(members).snapshot(),
      },
      entries: [
        // A configuration entry: not state, and recover must not try to read it.
        { index: 6, term: 3, type: EntryType.ConfChange, data: Uint8Array.of(1, 2, 3) },
        normal(7, 3, tokenCreate('kept-token', 100)),
        normal(8, 4, null),
        normal(9, 4, tokenCreate('uncommitted-token', 200)),
      ],
    })
  } finally {
    await storage.close()
  }
}

describe('recoverForceNewCluster', () => {
  test('the new store holds one voter, only this host, the committed entries and none of the uncommitted', async () => {
    await writeOldStore(['peer-a', 'peer-b', selfId])
    const report = await recoverForceNewCluster(dataDir, { now: NOW })

    expect(report).toMatchObject({
      selfId,
      clusterId: 'c0ffee',
      commitIndex: 8,
      commitTerm: 4,
      term: 4,
      snapshotIndex: 5,
      keptEntries: 3,
      droppedEntries: 1,
      wasVoter: null,
    })
    expect([...report.removedMembers].sort()).toEqual(['peer-a', 'peer-b'])

    const storage = await LevelLogStorage.open(dataDirPaths(dataDir).raft)
    const loaded = await storage.load()
    await storage.close()
    expect(loaded.hardState).toEqual({ term: 4, vote: '', commit: 8 })
    expect(loaded.entries).toEqual([])
    expect(loaded.snapshot?.meta).toEqual({
      index: 8,
      term: 4,
      confState: { voters: [selfId], votersOutgoing: [], learners: [], learnersNext: [], autoLeave: false },
    })
    const state = new ClusterState()
    state.restore(loaded.snapshot!.data)
    expect(state.members().map((m) => m.id)).toEqual([selfId])
    expect(state.view.clusterId).toBe('c0ffee')
    expect(Object.keys(state.view.tokens).sort()).toEqual(['kept-token', 't0', 't1'])
    expect(state.view.users.admin?.role).toBe('admin')
  })

  test('the old store is moved aside whole and the node record says recovered', async () => {
    await writeOldStore(['peer-a', 'peer-b', selfId])
    const report = await recoverForceNewCluster(dataDir, { now: NOW })

    expect(report.backupDir).toBe(join(dataDir, 'raft.before-recover-20250304T050607890Z'))
    const old = await LevelLogStorage.open(report.backupDir)
    const before = await old.load()
    await old.close()
    expect(before.entries.map((e) => e.index)).toEqual([6, 7, 8, 9])
    expect(before.hardState).toEqual({ term: 4, vote: 'peer-a', commit: 8 })
    expect(
      readdirSync(dataDir)
        .filter((name) => name.startsWith('raft'))
        .sort(),
    ).toEqual(['raft', 'raft.before-recover-20250304T050607890Z'])

    const record = readNodeRecord(dataDirPaths(dataDir))
    expect(record).toMatchObject({
      origin: 'recover',
      seedPeers: [],
      clusterId: 'c0ffee',
      listen: '127.0.0.1:17001',
    })
  })

  test('a Raft core started from the recovered store elects itself without any peer', async () => {
    await writeOldStore(['peer-a', 'peer-b', selfId])
    await recoverForceNewCluster(dataDir, { now: NOW })
    const storage = await LevelLogStorage.open(dataDirPaths(dataDir).raft)
    const persisted = await storage.load()
    await storage.close()
    const core = new RaftCore({ id: selfId, config: resolveRaftConfig({}), rng: seededRng(7), persisted })
    for (let tick = 0; tick < 100 && !core.isLeader(); tick++) core.tick()
    expect(core.role).toBe(Role.Leader)
    expect(core.term).toBeGreaterThan(4)
  })

  test('running it twice keeps both older stores', async () => {
    await writeOldStore(['peer-a', selfId])
    const first = await recoverForceNewCluster(dataDir, { now: NOW })
    const second = await recoverForceNewCluster(dataDir, { now: NOW })
    expect(second.backupDir).not.toBe(first.backupDir)
    expect(existsSync(first.backupDir) && existsSync(second.backupDir)).toBe(true)
    expect(second).toMatchObject({
      commitIndex: 8,
      keptEntries: 0,
      droppedEntries: 0,
      removedMembers: [],
      wasVoter: true,
    })
  })

  test('a host that is not a member of its committed state is refused and its store left alone', async () => {
    await writeOldStore(['peer-a', 'peer-b'])
    await expect(recoverForceNewCluster(dataDir, { now: NOW })).rejects.toThrow(RecoverError)
    expect(existsSync(join(dataDir, 'raft.before-recover-20250304T050607890Z'))).toBe(false)
    const storage = await LevelLogStorage.open(dataDirPaths(dataDir).raft)
    expect((await storage.load()).entries).toHaveLength(4)
    await storage.close()
  })

  test('a data dir without a Raft store is refused with a sentence naming it', async () => {
    await expect(recoverForceNewCluster(dataDir)).rejects.toThrow(/has no Raft store/)
  })
})
