// `docklet admin recover --force-new-cluster`: the way out when a majority of
// the voters is gone for good. Offline (the node must be stopped), on one
// survivor: rebuild the state from what this host knows to be committed, drop
// every other member, and restart the Raft store as a one-voter group whose
// snapshot is that state — as etcd's --force-new-cluster does. Entries this
// host had not seen committed are dropped (a majority never acknowledged them
// to it). Nothing is deleted: the old store is moved aside.

import { existsSync, renameSync } from 'node:fs'
import { type Entry, EntryType, LevelLogStorage } from '../../consensus/index.ts'
import { peerIdOfIdentity } from '../../net/index.ts'
import { ClusterState } from '../state/cluster-state.ts'
import { DataDirError, dataDirPaths, readIdentity, readNodeRecord, writeNodeRecord } from './data-dir.ts'

/** What a LogStorage loads at start (the type itself is not part of consensus/'s surface). */
type PersistedState = Awaited<ReturnType<LevelLogStorage['load']>>

export interface RecoverReport {
  selfId: string
  clusterId: string
  /** The last index this host knew committed; the new store's snapshot is at this index. */
  commitIndex: number
  /** Term of the entry at commitIndex (the snapshot's term). */
  commitTerm: number
  /** The hard state's term, kept so this node never votes twice in a term it already saw. */
  term: number
  /** Index of the snapshot the old store started from. */
  snapshotIndex: number
  /** Committed entries after the old snapshot, all folded into the new snapshot. */
  keptEntries: number
  /** Entries after commitIndex, not in the new store (they are still in the backup). */
  droppedEntries: number
  removedMembers: string[]
  /** Where the old Raft store now is. */
  backupDir: string
  /**
   * False when this host was a standby/learner (its log may miss entries the
   * lost voters had committed); null when the log after the snapshot changed
   * the configuration and so it is not known without decoding.
   */
  wasVoter: boolean | null
}

export interface RecoverOptions {
  /** Names the backup directory; tests pass a fixed time. */
  now?: Date
}

export class RecoverError extends Error {
  readonly code = 'ERR_RECOVER'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RecoverError'
  }
}

function stamp(now: Date): string {
  // 2025-01-02T03:04:05.678Z -> 20250102T030405678Z: sortable, no characters a shell cares about.
  return now.toISOString().replace(/[-:.]/g, '')
}

/** A directory name next to `base` that does not exist yet. */
function freshPath(base: string): string {
  if (!existsSync(base)) return base
  for (let n = 2; ; n++) {
    const candidate = `${base}-${n}`
    if (!existsSync(candidate)) return candidate
  }
}

async function loadStore(path: string): Promise<PersistedState> {
  const storage = await LevelLogStorage.open(path)
  try {
    return await storage.load()
  } finally {
    await storage.close()
  }
}

/** Applies the committed Normal entries after the snapshot; configuration entries carry no state. */
function rebuildState(
  persisted: PersistedState,
  commitIndex: number,
): { state: ClusterState; kept: Entry[] } {
  const state = new ClusterState()
  if (persisted.snapshot !== null) state.restore(persisted.snapshot.data)
  const kept = persisted.entries.filter((entry) => entry.index <= commitIndex)
  for (const entry of kept) {
    if (entry.type !== EntryType.Normal || entry.data.length === 0) continue
    state.apply(entry.data)
  }
  return { state, kept }
}

/**
 * Rewrites the Raft store of a stopped node in `dataDir` into a one-voter
 * group holding this host's committed state. The old store is kept as
 * `raft.before-recover-<time>`.
 */
export async function recoverForceNewCluster(
  dataDir: string,
  options: RecoverOptions = {},
): Promise<RecoverReport> {
  const paths = dataDirPaths(dataDir)
  const record = readNodeRecord(paths)
  if (record === null)
    throw new DataDirError(`${dataDir} holds no docklet node; there is nothing to recover.`)
  if (record.left) {
    throw new RecoverError(
      `This host left its cluster; ${dataDir} cannot be recovered. Pick the data dir of a surviving member.`,
    )
  }
  const identity = readIdentity(paths)
  if (identity === null)
    throw new DataDirError(
      `The node identity ${paths.identity} is missing; this data dir cannot be recovered.`,
    )
  const selfId = peerIdOfIdentity(identity)
  if (!existsSync(paths.raft))
    throw new RecoverError(`${paths.raft} does not exist: this node has no Raft store to recover.`)

  const persisted = await loadStore(paths.raft)
  const snapshotIndex = persisted.snapshot?.meta.index ?? 0
  const commitIndex = Math.max(persisted.hardState.commit, snapshotIndex)
  const commitEntry = persisted.entries.find((entry) => entry.index === commitIndex)
  const commitTerm = commitEntry?.term ?? persisted.snapshot?.meta.term ?? 0
  const { state, kept } = rebuildState(persisted, commitIndex)
  if (state.view.clusterId === '') {
    throw new RecoverError(
      `The committed state in ${paths.raft} holds no initialized cluster (commit index ${commitIndex}); there is nothing to keep. ` +
        'Remove the data dir and run `docklet init` or `docklet join` instead.',
    )
  }
  if (state.member(selfId) === undefined) {
    throw new RecoverError(
      `This host (${selfId}) is not a member in its committed state, so it cannot carry the cluster on. ` +
        'Run the recovery on a host that `docklet status` listed as a member.',
    )
  }
  // Known from the snapshot's configuration only while no later conf change (left undecoded) may have changed it.
  const conf = persisted.snapshot?.meta.confState
  const wasVoter =
    conf === undefined || kept.some((entry) => entry.type === EntryType.ConfChange)
      ? null
      : conf.voters.includes(selfId) || conf.votersOutgoing.includes(selfId)
  const removedMembers = state.forgetMembersExcept(selfId)

  const time = stamp(options.now ?? new Date())
  const staging = freshPath(`${paths.raft}.recover-staging-${time}`)
  const backupDir = freshPath(`${paths.raft}.before-recover-${time}`)
  const fresh = await LevelLogStorage.open(staging)
  try {
    await fresh.save({
      hardState: { term: persisted.hardState.term, vote: '', commit: commitIndex },
      entries: [],
      snapshot: {
        meta: {
          index: commitIndex,
          term: commitTerm,
          confState: {
            voters: [selfId],
            votersOutgoing: [],
            learners: [],
            learnersNext: [],
            autoLeave: false,
          },
        },
        data: state.snapshot(),
      },
    })
  } finally {
    await fresh.close()
  }
  // Two renames, so at every moment either the old store or the new one is at <dataDir>/raft, and the old one is never lost.
  renameSync(paths.raft, backupDir)
  renameSync(staging, paths.raft)
  writeNodeRecord(paths, { ...record, origin: 'recover', seedPeers: [], pendingInit: null })

  return {
    selfId,
    clusterId: state.view.clusterId,
    commitIndex,
    commitTerm,
    term: persisted.hardState.term,
    snapshotIndex,
    keptEntries: kept.length,
    droppedEntries: persisted.entries.length - kept.length,
    removedMembers,
    backupDir,
    wasVoter,
  }
}
