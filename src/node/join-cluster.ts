// The joining side of `docklet join`: contact a member named by the user,
// check that its identity is one the token trusts, present the token, and
// record the answer (cluster id, members to dial) in the new data dir.

import { hostname } from 'node:os'
import {
  type CommandRunner,
  createLibp2pHost,
  generateIdentity,
  RpcRemoteError,
  RpcService,
} from '../../net/index.ts'
import { localMeshInfo } from '../agent/mesh-agent.ts'
import type { NodeConfig } from '../config.ts'
import { ExecaCommandRunner } from '../exec/command-runner.ts'
import {
  DataDirError,
  ensureDataDir,
  type NodeRecord,
  readIdentity,
  readNodeRecord,
  writeIdentity,
  writeNodeRecord,
} from './data-dir.ts'
import { advertisedAddress } from './docklet-node.ts'
import { decodeJoinToken, JoinTokenError } from './join-token.ts'

export interface JoinOptions {
  config: NodeConfig
  token: string
  /** The member to contact, HOST:PORT or a multiaddr. */
  peer: string
  timeoutMs?: number
  /** Runs `wg` to create the mesh key (default: execa on this host). */
  runner?: CommandRunner
}

export class JoinError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'JoinError'
    this.code = code
  }
}

export async function joinCluster(options: JoinOptions): Promise<NodeRecord> {
  const payload = decodeJoinToken(options.token)
  if (payload.expiresAt <= Date.now()) {
    throw new JoinTokenError(
      `The join token ${payload.id} expired at ${new Date(payload.expiresAt).toISOString()}. Create a new one with \`docklet token create\` on a member.`,
    )
  }
  const paths = ensureDataDir(options.config.dataDir)
  const existing = readNodeRecord(paths)
  if (existing !== null) {
    throw new DataDirError(
      `${options.config.dataDir} already holds a docklet node (cluster ${existing.clusterId}); pick another --data-dir to join.`,
    )
  }
  let identity = readIdentity(paths)
  if (identity === null) {
    identity = await generateIdentity()
    writeIdentity(paths, identity)
  }
  const libp2p = await createLibp2pHost({ identity, listen: options.config.listen })
  const rpc = new RpcService(libp2p, {})
  try {
    await rpc.start()
    const address = advertisedAddress(libp2p, options.config)
    // The mesh key and endpoint travel with the join, so the members add this host as a peer at once.
    const mesh =
      options.config.mesh === 'wireguard'
        ? await localMeshInfo(options.runner ?? new ExecaCommandRunner(), {
            dataDir: options.config.dataDir,
            advertisedAddress: address,
            listenPort: options.config.meshListenPort,
          })
        : {}
    let answer: { clusterId: string; members: Array<{ id: string; address: string }> }
    try {
      const { result } = await rpc.call<typeof answer>(
        options.peer,
        'cluster.join',
        {
          tokenId: payload.id,
          secret: payload.secret,
          member: { name: hostname(), address, portal: options.config.portal, ...mesh },
        },
        { timeoutMs: options.timeoutMs ?? 15_000, expectPeerId: payload.members.map((m) => m.id) },
      )
      answer = result
    } catch (error) {
      if (error instanceof RpcRemoteError) throw new JoinError(error.code, error.message, { cause: error })
      throw new JoinError(
        (error as { code?: string }).code ?? 'ERR_JOIN',
        `Joining through ${options.peer} failed: ${(error as Error).message}`,
        { cause: error },
      )
    }
    if (answer.clusterId !== payload.clusterId) {
      throw new JoinError(
        'ERR_TOKEN_FOREIGN',
        `The member at ${options.peer} belongs to cluster ${answer.clusterId}, but the token is for cluster ${payload.clusterId}.`,
      )
    }
    const record: NodeRecord = {
      version: 1,
      clusterId: answer.clusterId,
      origin: 'join',
      createdAt: Date.now(),
      pendingInit: null,
      seedPeers: answer.members,
      left: false,
      listen: options.config.listen,
      advertise: options.config.advertise,
      portal: options.config.portal,
    }
    writeNodeRecord(paths, record)
    return record
  } finally {
    await rpc.stop().catch(() => {})
    await Promise.resolve(libp2p.stop()).catch(() => {})
  }
}
