// Node configuration: embedded defaults that work on one host, overridden by
// a JSON config file and then by command-line flags. Validated once at start;
// every error names the setting and says what is allowed.

import { readFileSync } from 'node:fs'

export interface NodeConfig {
  /** Where the node keeps everything (identity, Raft store, settings). */
  dataDir: string
  /** libp2p listen address, HOST:PORT. */
  listen: string
  /** Address other hosts use to reach this one (defaults to listen; required when listening on 0.0.0.0). */
  advertise: string
  /** Portal/API address, HOST:PORT ('' to serve none). */
  portal: string
  tickMs: number
  electionTimeoutTicks: number
  heartbeatIntervalTicks: number
  /** How long a write may wait for a leader or a commit before failing with a clear error. */
  requestTimeoutMs: number
  snapshotEntries: number
  /** Voters are kept odd, up to this number (3, 5 or 7), when the cluster is created. */
  maxVoters: number
  /** A member silent this long is marked offline (and a voter replaced). */
  offlineThresholdMs: number
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent'
  /** 'wireguard': this host joins the WireGuard mesh; 'off': none (several nodes in one network namespace). */
  mesh: 'wireguard' | 'off'
  /** Name of the WireGuard interface. */
  meshInterface: string
  /** UDP port WireGuard listens on (other hosts send to it). */
  meshListenPort: number
  /** Keepalive towards every peer, for hosts behind NAT; 0 turns it off. */
  meshPersistentKeepaliveS: number
  /** Range hosts' mesh addresses come from; used by `docklet init` only (a cluster setting). */
  meshNetwork: string
  /** Container driver: 'lxc' (real system containers) or 'fake' (in memory, for tests). */
  runtime: 'lxc' | 'fake'
  /** What this host offers vnodes; 0 = measure (cpu count, RAM, free disk in the data dir). */
  capacityCpuCores: number
  /** Vnode cpu limits are caps, not reservations: a host offers this many times its cores (memory and disk are not overcommitted). */
  cpuOvercommit: number
  capacityMemoryMb: number
  capacityDiskMb: number
  /** The interface vnode egress leaves by (NATed there); '' = the default route's. */
  egressInterface: string
  /** Range vclusters' subnets are carved from; used by `docklet init` only (a cluster setting). */
  clusterNet: string
  /** Where new vnodes go: 'spread' a vcluster over hosts, or 'pack' hosts full; used by `docklet init` only. */
  placementPolicy: 'spread' | 'pack'
  /** Images the founding host builds in the background after `docklet init` (once). */
  initImages: Array<'busybox' | 'debian'>
}

export const DEFAULT_DATA_DIR = '/var/lib/docklet'
export const DEFAULT_LISTEN = '0.0.0.0:7946'
export const DEFAULT_PORTAL = '0.0.0.0:8080'

export function defaultNodeConfig(dataDir = DEFAULT_DATA_DIR): NodeConfig {
  return {
    dataDir,
    listen: DEFAULT_LISTEN,
    advertise: '',
    portal: DEFAULT_PORTAL,
    tickMs: 50,
    electionTimeoutTicks: 10,
    heartbeatIntervalTicks: 1,
    requestTimeoutMs: 5_000,
    snapshotEntries: 10_000,
    maxVoters: 3,
    offlineThresholdMs: 15_000,
    logLevel: 'info',
    mesh: 'wireguard',
    meshInterface: 'dkmesh0',
    meshListenPort: 51820,
    meshPersistentKeepaliveS: 0,
    meshNetwork: '10.210.0.0/16',
    runtime: 'lxc',
    capacityCpuCores: 0,
    cpuOvercommit: 4,
    capacityMemoryMb: 0,
    capacityDiskMb: 0,
    egressInterface: '',
    initImages: ['busybox', 'debian'],
    clusterNet: '172.16.0.0/16',
    placementPolicy: 'spread',
  }
}

export class NodeConfigError extends Error {
  readonly code = 'ERR_NODE_CONFIG'
  constructor(message: string) {
    super(message)
    this.name = 'NodeConfigError'
  }
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+):(\d{1,5})$/

function checkAddress(name: string, value: string, allowEmpty: boolean): void {
  if (allowEmpty && value === '') return
  if (value.startsWith('/')) return // a multiaddr; net/ validates it when it is used
  const match = HOST_PORT.exec(value)
  const port = Number(match?.[2])
  if (match === null || port > 65535) {
    throw new NodeConfigError(
      `${name} must be HOST:PORT (for example 10.0.0.5:7946) or a multiaddr, got "${value}".`,
    )
  }
}

function checkInteger(name: string, value: unknown, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new NodeConfigError(
      `${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}.`,
    )
  }
}

/** Validates a complete config; returns it unchanged or throws NodeConfigError naming the setting. */
export function validateNodeConfig(config: NodeConfig): NodeConfig {
  if (typeof config.dataDir !== 'string' || config.dataDir === '')
    throw new NodeConfigError('dataDir must be a directory path.')
  checkAddress('listen', config.listen, false)
  checkAddress('advertise', config.advertise, true)
  checkAddress('portal', config.portal, true)
  checkInteger('tickMs', config.tickMs, 1, 10_000)
  checkInteger('electionTimeoutTicks', config.electionTimeoutTicks, 2, 10_000)
  checkInteger('heartbeatIntervalTicks', config.heartbeatIntervalTicks, 1, 10_000)
  if (config.heartbeatIntervalTicks >= config.electionTimeoutTicks) {
    throw new NodeConfigError(
      `heartbeatIntervalTicks (${config.heartbeatIntervalTicks}) must be smaller than electionTimeoutTicks (${config.electionTimeoutTicks}).`,
    )
  }
  checkInteger('requestTimeoutMs', config.requestTimeoutMs, 100, 600_000)
  checkInteger('snapshotEntries', config.snapshotEntries, 10, 10_000_000)
  if (![3, 5, 7].includes(config.maxVoters)) {
    throw new NodeConfigError(
      `maxVoters must be 3, 5 or 7 (an odd number keeps a clear majority), got ${config.maxVoters}.`,
    )
  }
  checkInteger('offlineThresholdMs', config.offlineThresholdMs, 1_000, 3_600_000)
  if (!['trace', 'debug', 'info', 'warn', 'error', 'silent'].includes(config.logLevel)) {
    throw new NodeConfigError(
      `logLevel must be one of trace, debug, info, warn, error, silent; got "${config.logLevel}".`,
    )
  }
  if (!['lxc', 'fake'].includes(config.runtime)) {
    throw new NodeConfigError(`runtime must be lxc or fake, got "${String(config.runtime)}".`)
  }
  checkInteger('capacityCpuCores', config.capacityCpuCores, 0, 4096)
  checkInteger('cpuOvercommit', config.cpuOvercommit, 1, 64)
  checkInteger('capacityMemoryMb', config.capacityMemoryMb, 0, 1 << 30)
  checkInteger('capacityDiskMb', config.capacityDiskMb, 0, 1 << 30)
  if (typeof config.egressInterface !== 'string' || !/^[A-Za-z0-9_.@-]{0,15}$/.test(config.egressInterface)) {
    throw new NodeConfigError(
      `egressInterface must be a network interface name (up to 15 characters) or empty, got "${String(config.egressInterface)}".`,
    )
  }
  if (config.placementPolicy !== 'spread' && config.placementPolicy !== 'pack') {
    throw new NodeConfigError(
      `placementPolicy must be spread or pack, got "${String(config.placementPolicy)}".`,
    )
  }
  if (!/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/.test(String(config.clusterNet))) {
    throw new NodeConfigError(
      `clusterNet must be an IPv4 range like 172.16.0.0/16, got "${String(config.clusterNet)}".`,
    )
  }
  if (
    !Array.isArray(config.initImages) ||
    config.initImages.some((kind) => kind !== 'busybox' && kind !== 'debian')
  ) {
    throw new NodeConfigError(
      `initImages must be a list of busybox and/or debian (or empty), got ${JSON.stringify(config.initImages)}.`,
    )
  }
  if (config.mesh !== 'wireguard' && config.mesh !== 'off') {
    throw new NodeConfigError(`mesh must be wireguard or off, got "${String(config.mesh)}".`)
  }
  if (typeof config.meshInterface !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(config.meshInterface)) {
    throw new NodeConfigError(
      `meshInterface must be an interface name of 1-15 letters, digits, "_", "." or "-", got "${String(config.meshInterface)}".`,
    )
  }
  checkInteger('meshListenPort', config.meshListenPort, 1, 65535)
  checkInteger('meshPersistentKeepaliveS', config.meshPersistentKeepaliveS, 0, 65535)
  const meshNetwork = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(
    String(config.meshNetwork),
  )
  if (
    meshNetwork === null ||
    meshNetwork.slice(1, 5).some((part) => Number(part) > 255) ||
    Number(meshNetwork[5]) < 8 ||
    Number(meshNetwork[5]) > 30
  ) {
    throw new NodeConfigError(
      `meshNetwork must be an IPv4 range from /8 to /30 like 10.210.0.0/16, got "${String(config.meshNetwork)}".`,
    )
  }
  if (config.advertise === '' && /^(0\.0\.0\.0|\[::\]):/.test(config.listen)) {
    // Other hosts cannot dial 0.0.0.0: the node picks an address at start (see main.ts).
  }
  return config
}

/** Reads a JSON config file; unknown keys are refused so that typos do not pass silently. */
export function readConfigFile(path: string): Partial<NodeConfig> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new NodeConfigError(`Cannot read the config file ${path}: ${(error as Error).message}`)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new NodeConfigError(`The config file ${path} is not valid JSON: ${(error as Error).message}`)
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new NodeConfigError(`The config file ${path} must hold a JSON object.`)
  }
  const known = new Set(Object.keys(defaultNodeConfig()))
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) {
      throw new NodeConfigError(
        `The config file ${path} has an unknown setting "${key}"; known settings: ${[...known].join(', ')}.`,
      )
    }
  }
  return parsed as Partial<NodeConfig>
}

/** Defaults, then the file, then flags (later wins). */
export function resolveNodeConfig(...layers: Array<Partial<NodeConfig>>): NodeConfig {
  const config = defaultNodeConfig()
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer)) {
      if (value !== undefined) (config as unknown as Record<string, unknown>)[key] = value
    }
  }
  return validateNodeConfig(config)
}
