// The WireGuard mesh between hosts. `planMesh(current, desired)` is pure: it
// compares what `wg show <if> dump` and `ip -j -d addr show` report with the
// desired configuration and returns the `ip`/`wg`/`wireguard-go` commands that
// converge one host's interface. `applyMesh` is the thin executor: read, plan,
// run, and keep the applied configuration on disk so `restoreMesh` can bring
// the data plane back at node start, before any leader exists.

import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { CommandRunner, PlannedCommand } from './command-runner.ts'
import { globalAddresses, type LinkState, parseCidr, parseIpAddrJson } from './ip-link-state.ts'
import { MeshApplyError, MeshConfigError, MeshParseError } from './mesh-errors.ts'

/** WireGuard's own header cost over an IPv6 underlay (60 over IPv4); taking the larger keeps both safe. */
export const WIREGUARD_OVERHEAD_BYTES = 80
/** The smallest MTU IPv6 allows; a mesh below it would break IPv6 inside. */
export const MESH_MTU_MIN = 1280
export const MESH_PEERS_MAX = 1024
export const MESH_ALLOWED_IPS_PER_PEER_MAX = 256
export const MESH_COMMAND_TIMEOUT_MS_DEFAULT = 10_000
/** Linux interface names are at most 15 bytes. */
export const INTERFACE_NAME_LENGTH_MAX = 15

export interface MeshPeer {
  /** Base64 WireGuard public key (44 characters). */
  publicKey: string
  /** `IP:PORT` (or `[IPv6]:PORT`); absent for peers behind NAT that only call in. */
  endpoint?: string
  /** The peer's mesh IP/32, plus later the routes it carries. */
  allowedIps: string[]
  /** Keepalive for hosts behind NAT; 0 or absent turns it off. */
  persistentKeepaliveS?: number
  /** Who the peer is, for the caller's bookkeeping (e.g. a member id); WireGuard never sees it. */
  label?: string
}

export interface MeshDesired {
  interfaceName: string
  privateKeyPath: string
  listenPort: number
  /** This host's mesh address with the mesh prefix, e.g. 10.99.0.1/24. */
  address: string
  mtu: number
  peers: MeshPeer[]
}

export interface WireguardPeerState {
  publicKey: string
  endpoint: string | null
  allowedIps: string[]
  persistentKeepaliveS: number
  latestHandshakeS: number
  rxBytes: number
  txBytes: number
}

export interface WireguardState {
  privateKey: string | null
  publicKey: string | null
  listenPort: number
  peers: WireguardPeerState[]
}

export interface MeshCurrent {
  /** The interface as `ip` sees it, or null when it does not exist. */
  link: LinkState | null
  /** What `wg show` reports, or null when the interface is not a working WireGuard device. */
  wireguard: WireguardState | null
}

/** Kernel WireGuard (`ip link add type wireguard`) or wireguard-go (userspace). */
export type WireguardImplementation = 'kernel' | 'userspace'

export interface PlanMeshOptions {
  implementation: WireguardImplementation
  /** The content of `desired.privateKeyPath`, to notice a replaced key; when absent only a missing key is set. */
  privateKey?: string
}

const KEY_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/

function none(field: string): string | null {
  return field === '(none)' || field === '' ? null : field
}

function toNumber(field: string, what: string): number {
  const value = Number(field)
  if (!Number.isFinite(value))
    throw new MeshParseError(`The ${what} "${field}" in \`wg show dump\` is not a number.`)
  return value
}

/** Parses `wg show <if> dump`: the interface line, then one tab-separated line per peer. */
export function parseWgDump(text: string): WireguardState {
  const lines = text.split('\n').filter((line) => line.trim() !== '')
  const head = lines[0]?.split('\t')
  if (head === undefined || head.length !== 4) {
    throw new MeshParseError('`wg show <if> dump` did not start with the interface line (4 fields).')
  }
  const peers = lines.slice(1).map((line): WireguardPeerState => {
    const fields = line.split('\t')
    if (fields.length !== 8)
      throw new MeshParseError(`A peer line of \`wg show dump\` has ${fields.length} fields, not 8.`)
    const [publicKey, , endpoint, allowedIps, handshake, rx, tx, keepalive] = fields as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ]
    return {
      publicKey,
      endpoint: none(endpoint),
      allowedIps: none(allowedIps) === null ? [] : allowedIps.split(','),
      persistentKeepaliveS: keepalive === 'off' ? 0 : toNumber(keepalive, 'persistent keepalive'),
      latestHandshakeS: toNumber(handshake, 'latest handshake'),
      rxBytes: toNumber(rx, 'transfer-rx'),
      txBytes: toNumber(tx, 'transfer-tx'),
    }
  })
  return {
    privateKey: none(head[0]!),
    publicKey: none(head[1]!),
    listenPort: toNumber(head[2]!, 'listen port'),
    peers,
  }
}

/** The tunnel MTU that fits in an underlay of `underlayMtu` bytes. */
export function meshMtuFromUnderlay(underlayMtu: number): number {
  const mtu = underlayMtu - WIREGUARD_OVERHEAD_BYTES
  if (mtu < MESH_MTU_MIN) {
    throw new MeshConfigError(
      `An underlay MTU of ${underlayMtu} leaves ${mtu} bytes for the mesh, below ${MESH_MTU_MIN}; raise the underlay MTU.`,
    )
  }
  return mtu
}

/** Throws MeshConfigError naming the first invalid field. */
export function validateMeshDesired(desired: MeshDesired): void {
  const name = desired.interfaceName
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.length > INTERFACE_NAME_LENGTH_MAX) {
    throw new MeshConfigError(
      `The mesh interface name "${name}" must be 1-${INTERFACE_NAME_LENGTH_MAX} letters, digits, "_", "." or "-".`,
    )
  }
  if (!desired.privateKeyPath.startsWith('/')) {
    throw new MeshConfigError(`The private key path "${desired.privateKeyPath}" must be absolute.`)
  }
  if (!Number.isInteger(desired.listenPort) || desired.listenPort < 1 || desired.listenPort > 65535) {
    throw new MeshConfigError(
      `The mesh listen port ${desired.listenPort} must be an integer from 1 to 65535.`,
    )
  }
  try {
    parseCidr(desired.address)
  } catch (error) {
    throw new MeshConfigError(`The mesh address is invalid: ${(error as Error).message}`, { cause: error })
  }
  if (!Number.isInteger(desired.mtu) || desired.mtu < MESH_MTU_MIN || desired.mtu > 65535) {
    throw new MeshConfigError(`The mesh MTU ${desired.mtu} must be an integer from ${MESH_MTU_MIN} to 65535.`)
  }
  if (desired.peers.length > MESH_PEERS_MAX) {
    throw new MeshConfigError(
      `The mesh has ${desired.peers.length} peers, more than MESH_PEERS_MAX (${MESH_PEERS_MAX}).`,
    )
  }
  const seen = new Set<string>()
  for (const peer of desired.peers) {
    if (!KEY_PATTERN.test(peer.publicKey)) {
      throw new MeshConfigError(`The peer public key "${peer.publicKey}" is not a base64 WireGuard key.`)
    }
    if (seen.has(peer.publicKey)) throw new MeshConfigError(`The peer ${peer.publicKey} is listed twice.`)
    seen.add(peer.publicKey)
    if (
      peer.endpoint !== undefined &&
      !/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$/.test(peer.endpoint)
    ) {
      throw new MeshConfigError(`The endpoint "${peer.endpoint}" of peer ${peer.publicKey} is not IP:PORT.`)
    }
    if (peer.allowedIps.length > MESH_ALLOWED_IPS_PER_PEER_MAX) {
      throw new MeshConfigError(
        `Peer ${peer.publicKey} has ${peer.allowedIps.length} allowed IPs, more than ${MESH_ALLOWED_IPS_PER_PEER_MAX}.`,
      )
    }
    for (const cidr of peer.allowedIps) {
      try {
        parseCidr(cidr)
      } catch (error) {
        throw new MeshConfigError(
          `An allowed IP of peer ${peer.publicKey} is invalid: ${(error as Error).message}`,
        )
      }
    }
    const keepalive = peer.persistentKeepaliveS ?? 0
    if (!Number.isInteger(keepalive) || keepalive < 0 || keepalive > 65535) {
      throw new MeshConfigError(`The keepalive ${keepalive} s of peer ${peer.publicKey} must be 0-65535.`)
    }
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  const left = [...a].sort()
  const right = [...b].sort()
  return left.every((value, index) => value === right[index])
}

function peerCommand(name: string, peer: MeshPeer): PlannedCommand {
  const args = ['set', name, 'peer', peer.publicKey]
  if (peer.endpoint !== undefined) args.push('endpoint', peer.endpoint)
  args.push('allowed-ips', peer.allowedIps.join(','))
  const keepalive = peer.persistentKeepaliveS ?? 0
  args.push('persistent-keepalive', keepalive === 0 ? 'off' : String(keepalive))
  return { file: 'wg', args }
}

/**
 * The commands that take one host's WireGuard interface from `current` to
 * `desired`, in order: (re)create, key and port, peers removed then set,
 * addresses, MTU, link up. Returns [] when `current` already matches.
 */
export function planMesh(
  current: MeshCurrent,
  desired: MeshDesired,
  options: PlanMeshOptions,
): PlannedCommand[] {
  validateMeshDesired(desired)
  const name = desired.interfaceName
  const commands: PlannedCommand[] = []
  let link = current.link
  let wireguard = current.wireguard
  if (link !== null && wireguard === null) {
    // The link exists but is not a working WireGuard device (e.g. wireguard-go died
    // and left its tun behind): start over rather than guess.
    commands.push({ file: 'ip', args: ['link', 'del', 'dev', name] })
    link = null
  }
  if (link === null) {
    commands.push(
      options.implementation === 'kernel'
        ? { file: 'ip', args: ['link', 'add', 'dev', name, 'type', 'wireguard'] }
        : { file: 'wireguard-go', args: [name] },
    )
    link = { name, kind: null, mtu: 0, up: false, mac: null, master: null, addresses: [], vxlan: null }
    wireguard = { privateKey: null, publicKey: null, listenPort: 0, peers: [] }
  }
  const wg = wireguard!
  const keyDiffers =
    options.privateKey === undefined ? wg.privateKey === null : wg.privateKey !== options.privateKey
  if (keyDiffers || wg.listenPort !== desired.listenPort) {
    commands.push({
      file: 'wg',
      args: ['set', name, 'private-key', desired.privateKeyPath, 'listen-port', String(desired.listenPort)],
    })
  }
  const wanted = new Map(desired.peers.map((peer) => [peer.publicKey, peer]))
  for (const peer of wg.peers) {
    if (!wanted.has(peer.publicKey))
      commands.push({ file: 'wg', args: ['set', name, 'peer', peer.publicKey, 'remove'] })
  }
  const have = new Map(wg.peers.map((peer) => [peer.publicKey, peer]))
  for (const peer of desired.peers) {
    const existing = have.get(peer.publicKey)
    const matches =
      existing !== undefined &&
      (peer.endpoint === undefined || existing.endpoint === peer.endpoint) &&
      sameSet(existing.allowedIps, peer.allowedIps) &&
      existing.persistentKeepaliveS === (peer.persistentKeepaliveS ?? 0)
    if (!matches) commands.push(peerCommand(name, peer))
  }
  const addresses = globalAddresses(link)
  for (const address of addresses) {
    if (address !== desired.address)
      commands.push({ file: 'ip', args: ['addr', 'del', address, 'dev', name] })
  }
  if (!addresses.includes(desired.address)) {
    commands.push({ file: 'ip', args: ['addr', 'add', desired.address, 'dev', name] })
  }
  if (link.mtu !== desired.mtu)
    commands.push({ file: 'ip', args: ['link', 'set', 'dev', name, 'mtu', String(desired.mtu)] })
  if (!link.up) commands.push({ file: 'ip', args: ['link', 'set', 'dev', name, 'up'] })
  return commands
}

export interface MeshRunOptions {
  /** Timeout of each command (default MESH_COMMAND_TIMEOUT_MS_DEFAULT). */
  commandTimeoutMs?: number
}

function missingDevice(stderr: string): boolean {
  return /does not exist|No such device|Cannot find device/i.test(stderr)
}

/** Reads the interface as `ip` and `wg` see it. */
export async function readMeshState(
  runner: CommandRunner,
  interfaceName: string,
  options: MeshRunOptions = {},
): Promise<MeshCurrent> {
  const timeoutMs = options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS_DEFAULT
  const ip = await runner.run('ip', ['-j', '-d', 'addr', 'show', 'dev', interfaceName], {
    timeoutMs,
    okExitCodes: [0, 1],
  })
  if (ip.exitCode !== 0) {
    if (missingDevice(ip.stderr)) return { link: null, wireguard: null }
    throw new MeshApplyError(`Reading interface ${interfaceName} failed: ${ip.stderr.trim()}`)
  }
  const link = parseIpAddrJson(ip.stdout)[0] ?? null
  if (link === null) return { link: null, wireguard: null }
  const wg = await runner.run('wg', ['show', interfaceName, 'dump'], { timeoutMs, okExitCodes: [0, 1] })
  return { link, wireguard: wg.exitCode === 0 ? parseWgDump(wg.stdout) : null }
}

const implementationCache = new WeakMap<CommandRunner, Promise<WireguardImplementation>>()
const PROBE_INTERFACE = 'dkwgprobe'

/**
 * Kernel WireGuard when `ip link add type wireguard` works on this host,
 * wireguard-go otherwise. Probed once per runner (a runner stands for a host).
 */
export function detectWireguardImplementation(
  runner: CommandRunner,
  options: MeshRunOptions = {},
): Promise<WireguardImplementation> {
  let cached = implementationCache.get(runner)
  if (cached === undefined) {
    cached = (async (): Promise<WireguardImplementation> => {
      const timeoutMs = options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS_DEFAULT
      const added = await runner.run('ip', ['link', 'add', 'dev', PROBE_INTERFACE, 'type', 'wireguard'], {
        timeoutMs,
        okExitCodes: [0, 1, 2],
      })
      if (added.exitCode !== 0) return 'userspace'
      await runner.run('ip', ['link', 'del', 'dev', PROBE_INTERFACE], { timeoutMs })
      return 'kernel'
    })()
    implementationCache.set(runner, cached)
  }
  return cached
}

/**
 * Returns the public key of the WireGuard key at `privateKeyPath`, generating
 * the key first (`wg genkey`, file mode 0600, directory 0700) when it is missing.
 */
export async function ensureMeshKey(
  runner: CommandRunner,
  privateKeyPath: string,
  options: MeshRunOptions = {},
): Promise<{ publicKey: string }> {
  const timeoutMs = options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS_DEFAULT
  let privateKey: string
  try {
    privateKey = (await readFile(privateKeyPath, 'utf8')).trim()
    await chmod(privateKeyPath, 0o600)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    privateKey = (await runner.run('wg', ['genkey'], { timeoutMs })).stdout.trim()
    await mkdir(dirname(privateKeyPath), { recursive: true, mode: 0o700 })
    await writeFile(privateKeyPath, `${privateKey}\n`, { mode: 0o600, flag: 'wx' })
  }
  if (!KEY_PATTERN.test(privateKey)) {
    throw new MeshConfigError(
      `The file ${privateKeyPath} does not hold a WireGuard private key; remove it to generate one.`,
    )
  }
  const publicKey = (
    await runner.run('wg', ['pubkey'], { timeoutMs, input: `${privateKey}\n` })
  ).stdout.trim()
  return { publicKey }
}

export interface ApplyMeshOptions extends MeshRunOptions {
  /** Where the applied configuration is kept for `restoreMesh`; not written when absent. */
  stateFile?: string
}

export interface ApplyMeshResult {
  implementation: WireguardImplementation
  /** The commands that ran (empty when the host already matched). */
  commands: PlannedCommand[]
}

async function runPlan(runner: CommandRunner, commands: PlannedCommand[], timeoutMs: number): Promise<void> {
  for (const command of commands) {
    try {
      await runner.run(command.file, command.args, {
        timeoutMs,
        ...(command.input === undefined ? {} : { input: command.input }),
      })
    } catch (error) {
      throw new MeshApplyError(
        `The step \`${[command.file, ...command.args].join(' ')}\` failed; the host is part-way converged and the next apply retries: ${(error as Error).message}`,
        { cause: error },
      )
    }
  }
}

/** Converges this host's WireGuard interface to `desired` and records it in `stateFile`. */
export async function applyMesh(
  runner: CommandRunner,
  desired: MeshDesired,
  options: ApplyMeshOptions = {},
): Promise<ApplyMeshResult> {
  validateMeshDesired(desired)
  const timeoutMs = options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS_DEFAULT
  let privateKey: string
  try {
    privateKey = (await readFile(desired.privateKeyPath, 'utf8')).trim()
  } catch (error) {
    throw new MeshConfigError(
      `The mesh private key ${desired.privateKeyPath} cannot be read; create it with ensureMeshKey first.`,
      { cause: error },
    )
  }
  const implementation = await detectWireguardImplementation(runner, options)
  const current = await readMeshState(runner, desired.interfaceName, options)
  const commands = planMesh(current, desired, { implementation, privateKey })
  await runPlan(runner, commands, timeoutMs)
  if (options.stateFile !== undefined) await saveMeshConfig(options.stateFile, desired)
  return { implementation, commands }
}

/** Writes `desired` atomically (temporary file, then rename), readable by root only. */
export async function saveMeshConfig(file: string, desired: MeshDesired): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  const temporary = `${file}.tmp-${process.pid}`
  await writeFile(temporary, `${JSON.stringify({ version: 1, desired }, null, 2)}\n`, { mode: 0o600 })
  await rename(temporary, file)
}

/** Reads a configuration written by `saveMeshConfig`; null when the file does not exist. */
export async function loadMeshConfig(file: string): Promise<MeshDesired | null> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new MeshParseError(
      `The mesh state file ${file} is not JSON; remove it and let the node re-apply.`,
      {
        cause: error,
      },
    )
  }
  const record = parsed as { version?: unknown; desired?: MeshDesired }
  if (record.version !== 1 || typeof record.desired !== 'object' || record.desired === null) {
    throw new MeshParseError(
      `The mesh state file ${file} has an unknown layout; remove it and let the node re-apply.`,
    )
  }
  validateMeshDesired(record.desired)
  return record.desired
}

/**
 * Brings back the last applied mesh from `file` (at node start, before any
 * leader exists). Returns null when nothing was ever applied. Peers keep their
 * session with the previous instance until this host sends to them (then they
 * re-handshake at once) or WireGuard's rekey timeout (about 15 s) passes.
 */
export async function restoreMesh(
  runner: CommandRunner,
  file: string,
  options: MeshRunOptions = {},
): Promise<ApplyMeshResult | null> {
  const desired = await loadMeshConfig(file)
  if (desired === null) return null
  return applyMesh(runner, desired, options)
}
