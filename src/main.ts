// The only place where real clocks, processes, sockets and databases are
// created: runs a docklet node in this process until SIGTERM/SIGINT (or a
// completed leave), with its control socket.

import { randomBytes } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { type Logger, pino } from 'pino'
import { realClock } from '../consensus/index.ts'
import { generateIdentity, peerIdOfIdentity } from '../net/index.ts'
import { buildApiServer } from './api/api-server.ts'
import { type NodeConfig, readConfigFile, resolveNodeConfig } from './config.ts'
import { buildControlServer, listenControlSocket } from './control/control-server.ts'
import { ExecaCommandRunner } from './exec/command-runner.ts'
import {
  DataDirError,
  type DataDirPaths,
  dataDirPaths,
  ensureDataDir,
  type NodeRecord,
  readIdentity,
  readNodeRecord,
  writeFileAtomic,
  writeIdentity,
  writeNodeRecord,
} from './node/data-dir.ts'
import { DockletNode } from './node/docklet-node.ts'
import { ProxyFront, registerWorkspaceProxy } from './proxy/index.ts'
import { hashPassword } from './security/password.ts'

export interface RunOptions {
  dataDir: string
  /** Settings given on the command line (they win over the config file). */
  flags: Partial<NodeConfig>
  /** Called once the node answers on its control socket. */
  onReady?: (node: DockletNode) => void
}

/** Loads the layered config for a data dir: defaults, <dataDir>/config.json, the node record, flags. */
export function loadConfig(
  dataDir: string,
  flags: Partial<NodeConfig>,
  record: NodeRecord | null,
): NodeConfig {
  const paths = dataDirPaths(dataDir)
  const file = existsSync(paths.config) ? readConfigFile(paths.config) : {}
  const fromRecord: Partial<NodeConfig> = {}
  if (record !== null) {
    if (record.listen !== '') fromRecord.listen = record.listen
    if (record.advertise !== '') fromRecord.advertise = record.advertise
    // '' is a real value for the portal (serve none): init and join record the resolved one.
    fromRecord.portal = record.portal
  }
  return resolveNodeConfig(file, fromRecord, flags, { dataDir })
}

/** Prepares a data dir for a new cluster: identity, record with the admin's password hash. Returns the password. */
export async function initDataDir(
  dataDir: string,
  flags: Partial<NodeConfig>,
): Promise<{ password: string; paths: DataDirPaths }> {
  const paths = ensureDataDir(dataDir)
  const existing = readNodeRecord(paths)
  if (existing !== null) {
    throw new DataDirError(
      `${dataDir} already holds a docklet node (cluster ${existing.clusterId}). Run \`docklet start\` to run it, or pick another --data-dir.`,
    )
  }
  const config = loadConfig(dataDir, flags, null) // validate before anything is written
  if (readIdentity(paths) === null) writeIdentity(paths, await generateIdentity())
  const password = randomBytes(18).toString('base64url')
  const clusterId = randomBytes(8).toString('hex')
  const record: NodeRecord = {
    version: 1,
    clusterId,
    origin: 'init',
    createdAt: Date.now(),
    pendingInit: { adminName: 'admin', passwordHash: await hashPassword(password), clusterId },
    seedPeers: [],
    left: false,
    listen: flags.listen ?? '',
    advertise: flags.advertise ?? '',
    portal: config.portal,
  }
  writeNodeRecord(paths, record)
  writeFileAtomic(paths.adminPassword, `${password}\n`)
  return { password, paths }
}

/** The portal/API listener on config.portal ('' = none). A port in use stops the node with a sentence. */
async function startPortal(node: DockletNode, config: NodeConfig, logger: Logger) {
  if (config.portal === '') return null
  const match = /^(.*):(\d+)$/.exec(config.portal)
  if (match === null) return null
  const app = buildApiServer({ backend: node })
  // Proxy worker threads own the portal's address: they serve /go/* (workspaces, HTTP and
  // WebSocket, hops over the mesh) off the main thread and pass the rest to the app.
  // One of them also forwards the mapped ports.
  const portal = registerWorkspaceProxy(app, {
    state: node.state,
    selfId: node.id,
    logger,
    portForwarding: true,
  })
  try {
    await portal.listen({ host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) })
  } catch (error) {
    await app.close().catch(() => {})
    const code = (error as NodeJS.ErrnoException).code
    throw new DataDirError(
      code === 'EADDRINUSE'
        ? `The portal address ${config.portal} is in use by another program; pick another with --portal HOST:PORT (or '' for none).`
        : `Cannot serve the portal on ${config.portal}: ${(error as Error).message}`,
    )
  }
  logger.info({ portal: config.portal }, 'portal listening')
  return app
}

/** Runs the node of an initialized (or joined) data dir until it stops. */
export async function runNode(options: RunOptions): Promise<void> {
  const paths = dataDirPaths(options.dataDir)
  const record = readNodeRecord(paths)
  if (record === null) {
    throw new DataDirError(
      `${options.dataDir} holds no docklet node. Run \`docklet init\` or \`docklet join\` first.`,
    )
  }
  if (record.left) {
    throw new DataDirError(
      `This host left its cluster; ${options.dataDir} cannot be started again. Remove it and join anew.`,
    )
  }
  const identity = readIdentity(paths)
  if (identity === null) throw new DataDirError(`The node identity ${paths.identity} is missing.`)
  const config = loadConfig(options.dataDir, options.flags, record)
  const logger = pino({ level: config.logLevel, base: { node: peerIdOfIdentity(identity).slice(-8) } })
  const id = peerIdOfIdentity(identity)
  const node = await DockletNode.start(
    {
      config,
      paths,
      identity,
      record,
      clock: realClock(),
      logger,
      bootstrap: record.origin === 'init',
      runner: new ExecaCommandRunner(),
    },
    id,
  )
  const control = buildControlServer({ socketPath: paths.socket, node, actor: 'root' })
  await listenControlSocket(control, paths.socket)
  writeFileSync(paths.pid, `${process.pid}\n`)
  logger.info({ socket: paths.socket }, 'control socket ready')
  void node.announce().catch(() => {})
  let portal: Awaited<ReturnType<typeof startPortal>>
  try {
    portal = await startPortal(node, config, logger)
  } catch (error) {
    await control.close().catch(() => {})
    await node.stop()
    throw error
  }
  // Port mappings: every node listens on every mapped public port, in a proxy worker (the portal's when it has one).
  const ports =
    portal === null
      ? new ProxyFront({ state: node.state, selfId: node.id, logger, portForwarding: true })
      : null
  try {
    await ports?.start()
  } catch (error) {
    await control.close().catch(() => {})
    await node.stop()
    throw error
  }
  if (record.origin === 'init') node.buildInitialImages()
  options.onReady?.(node)

  let stopping = false
  const stop = async (reason: string) => {
    if (stopping) return
    stopping = true
    logger.info({ reason }, 'stopping')
    await control.close().catch(() => {})
    await portal?.close().catch(() => {})
    await ports?.close().catch(() => {})
    await node.stop()
  }
  const onSignal = (signal: NodeJS.Signals) => void stop(signal)
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  await node.stopped
  await stop('node stopped')
  process.off('SIGTERM', onSignal)
  process.off('SIGINT', onSignal)
}
