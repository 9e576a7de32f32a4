// The layout of a node's data directory, and the small local records kept
// there. Everything secret is written root-only (0600 files in a 0700 dir).
//
//   <dataDir>/identity.key      libp2p Ed25519 private key (protobuf)
//   <dataDir>/node.json         this host's membership record (NodeRecord)
//   <dataDir>/raft/             the Raft log store (LevelDB)
//   <dataDir>/admin-password    the generated admin password (init only)
//   <dataDir>/docklet.sock      the root-only control socket for the CLI
//   <dataDir>/docklet.log       log of a detached node
//   <dataDir>/config.json       optional settings (see src/config.ts)

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface DataDirPaths {
  root: string
  identity: string
  node: string
  raft: string
  adminPassword: string
  socket: string
  log: string
  config: string
  pid: string
}

export function dataDirPaths(root: string): DataDirPaths {
  return {
    root,
    identity: join(root, 'identity.key'),
    node: join(root, 'node.json'),
    raft: join(root, 'raft'),
    adminPassword: join(root, 'admin-password'),
    socket: join(root, 'docklet.sock'),
    log: join(root, 'docklet.log'),
    config: join(root, 'config.json'),
    pid: join(root, 'docklet.pid'),
  }
}

/** What this host knows about its own membership, outside Raft. */
export interface NodeRecord {
  version: 1
  clusterId: string
  /**
   * 'init': founded the cluster; 'join': entered with a token; 'recover': made
   * the only voter of its cluster by `docklet admin recover --force-new-cluster`.
   */
  origin: 'init' | 'join' | 'recover'
  createdAt: number
  /** Set by init until the cluster.init command is committed: the admin's password hash. */
  pendingInit: { adminName: string; passwordHash: string; clusterId: string } | null
  /** Members to dial at start before the state is known (from the join answer). */
  seedPeers: Array<{ id: string; address: string }>
  /** The host left the cluster; it must not start again with this data dir. */
  left: boolean
  /** Overrides given to init/join that start must reuse (listen, portal, advertise). */
  listen: string
  advertise: string
  portal: string
}

export class DataDirError extends Error {
  readonly code = 'ERR_DATA_DIR'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'DataDirError'
  }
}

export function ensureDataDir(root: string): DataDirPaths {
  try {
    mkdirSync(root, { recursive: true, mode: 0o700 })
    chmodSync(root, 0o700)
  } catch (error) {
    throw new DataDirError(`Cannot create the data directory ${root}: ${(error as Error).message}`, {
      cause: error,
    })
  }
  return dataDirPaths(root)
}

/** Writes a file atomically (temp file + rename) with the given mode. */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const temp = `${path}.tmp-${process.pid}`
  writeFileSync(temp, data, { mode })
  chmodSync(temp, mode)
  renameSync(temp, path)
}

export function readNodeRecord(paths: DataDirPaths): NodeRecord | null {
  if (!existsSync(paths.node)) return null
  try {
    return JSON.parse(readFileSync(paths.node, 'utf8')) as NodeRecord
  } catch (error) {
    throw new DataDirError(`The node record ${paths.node} is unreadable: ${(error as Error).message}`, {
      cause: error,
    })
  }
}

export function writeNodeRecord(paths: DataDirPaths, record: NodeRecord): void {
  writeFileAtomic(paths.node, `${JSON.stringify(record, null, 2)}\n`)
}

export function readIdentity(paths: DataDirPaths): Uint8Array | null {
  if (!existsSync(paths.identity)) return null
  return new Uint8Array(readFileSync(paths.identity))
}

export function writeIdentity(paths: DataDirPaths, identity: Uint8Array): void {
  writeFileAtomic(paths.identity, identity)
}
