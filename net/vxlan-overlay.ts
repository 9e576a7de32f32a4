// One private L2 network per vcluster across hosts: on each host that holds a
// vnode of the vcluster, a bridge and a VXLAN device over the WireGuard mesh
// with static forwarding entries (no multicast learning), the vcluster's
// gateway address on the bridge with the same MAC on every host (a distributed
// gateway whose ARP and frames never cross the VXLAN), NAT egress, and
// nftables isolation. `planOverlay(current, desired)` is pure and returns the
// commands for ONE vcluster on ONE host; `planOverlayRemoval` removes it all.

import { createHash } from 'node:crypto'
import type { CommandRunner, PlannedCommand } from './command-runner.ts'
import {
  type FdbEntry,
  globalAddresses,
  type LinkState,
  parseCidr,
  parseFdbJson,
  parseIpAddrJson,
} from './ip-link-state.ts'
import { MeshApplyError, MeshConfigError } from './mesh-errors.ts'
import { MESH_COMMAND_TIMEOUT_MS_DEFAULT, type MeshRunOptions } from './wireguard-mesh.ts'

/** VXLAN's cost inside the mesh: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD_BYTES = 50
export const VXLAN_PORT = 4789
export const VNI_MAX = 16_777_215
export const OVERLAY_PEERS_MAX = 1024
export const OVERLAY_REMOTE_VNODES_MAX = 65_536
export const OVERLAY_CONTROL_PORTS_MAX = 64
export const OVERLAY_HOST_ADDRESSES_MAX = 4096
const ZERO_MAC = '00:00:00:00:00:00'

export interface RemoteVnode {
  mac: string
  /** Mesh IP of the host that runs this vnode. */
  hostMeshIp: string
}

export interface OverlayDesired {
  /** The vcluster's VXLAN network identifier (1 to VNI_MAX). */
  vni: number
  /** The vcluster's subnet, e.g. 10.250.1.0/24. */
  subnet: string
  /** The gateway address with the subnet's prefix, e.g. 10.250.1.1/24; served on every host. */
  gatewayAddress: string
  /** The WireGuard interface the VXLAN runs over. */
  meshInterface: string
  /** This host's mesh IP (the VXLAN source address). */
  localMeshIp: string
  /** MTU of the mesh interface; the overlay gets this minus VXLAN_OVERHEAD_BYTES. */
  meshMtu: number
  /** Mesh IPs of the other hosts that hold vnodes of this vcluster (and only those). */
  peerMeshIps: string[]
  /** Known vnodes on other hosts, so unicast goes to one host instead of being flooded to all. */
  remoteVnodes?: RemoteVnode[]
  /** The interface egress traffic leaves by (the LAN / default route); masqueraded there. */
  egressInterface: string
  /** TCP/UDP ports of the control plane (libp2p, API) that vnodes must never reach. */
  controlPorts: number[]
  /** Addresses (or CIDRs) of every host (LAN and mesh) whose control ports are closed to vnodes. */
  hostAddresses: string[]
}

export interface NftTable {
  family: string
  name: string
  comment: string | null
}

export interface OverlayCurrent {
  links: LinkState[]
  /** `bridge fdb show` entries of this vcluster's VXLAN device. */
  fdb: FdbEntry[]
  nftTables: NftTable[]
  ipForward: boolean
}

export interface OverlayNames {
  bridge: string
  vxlan: string
  /** Name of the nftables tables (one `inet`, one `bridge`) holding this vcluster's rules. */
  table: string
}

export function overlayNames(vni: number): OverlayNames {
  return { bridge: `dkb${vni}`, vxlan: `dkx${vni}`, table: `dkv${vni}` }
}

/** The gateway MAC, identical on every host: locally administered 02:64:6b ("dk") + the 24-bit VNI. */
export function gatewayMac(vni: number): string {
  const bytes = [0x02, 0x64, 0x6b, (vni >> 16) & 0xff, (vni >> 8) & 0xff, vni & 0xff]
  return bytes.map((byte) => byte.toString(16).padStart(2, '0')).join(':')
}

/** The MTU of the overlay (bridge, VXLAN device, vnode interfaces) over a mesh of `meshMtu`. */
export function overlayMtu(meshMtu: number): number {
  return meshMtu - VXLAN_OVERHEAD_BYTES
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/

function checkIp(value: string, what: string): void {
  if (!IPV4.test(value) || value.split('.').some((part) => Number(part) > 255)) {
    throw new MeshConfigError(`The ${what} "${value}" is not an IPv4 address.`)
  }
}

function checkCidr(value: string, what: string): void {
  try {
    parseCidr(value.includes('/') ? value : `${value}/32`)
  } catch (error) {
    throw new MeshConfigError(`The ${what} is invalid: ${(error as Error).message}`, { cause: error })
  }
}

/** Throws MeshConfigError naming the first invalid field. */
export function validateOverlayDesired(desired: OverlayDesired): void {
  if (!Number.isInteger(desired.vni) || desired.vni < 1 || desired.vni > VNI_MAX) {
    throw new MeshConfigError(`The VNI ${desired.vni} must be an integer from 1 to ${VNI_MAX}.`)
  }
  checkCidr(desired.subnet, 'vcluster subnet')
  checkCidr(desired.gatewayAddress, 'gateway address')
  if (!desired.gatewayAddress.includes('/')) {
    throw new MeshConfigError(
      `The gateway address "${desired.gatewayAddress}" needs the subnet prefix (e.g. /24).`,
    )
  }
  checkIp(desired.localMeshIp, 'local mesh IP')
  for (const name of [desired.meshInterface, desired.egressInterface]) {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name))
      throw new MeshConfigError(`The interface name "${name}" is invalid.`)
  }
  if (!Number.isInteger(desired.meshMtu) || overlayMtu(desired.meshMtu) < 576) {
    throw new MeshConfigError(`The mesh MTU ${desired.meshMtu} leaves too little room for VXLAN.`)
  }
  if (desired.peerMeshIps.length > OVERLAY_PEERS_MAX) {
    throw new MeshConfigError(
      `The overlay lists ${desired.peerMeshIps.length} peers, more than ${OVERLAY_PEERS_MAX}.`,
    )
  }
  for (const ip of desired.peerMeshIps) {
    checkIp(ip, 'peer mesh IP')
    if (ip === desired.localMeshIp)
      throw new MeshConfigError(`The peer list contains this host's own mesh IP ${ip}.`)
  }
  const remote = desired.remoteVnodes ?? []
  if (remote.length > OVERLAY_REMOTE_VNODES_MAX) {
    throw new MeshConfigError(
      `The overlay lists ${remote.length} remote vnodes, more than ${OVERLAY_REMOTE_VNODES_MAX}.`,
    )
  }
  for (const vnode of remote) {
    if (!MAC.test(vnode.mac))
      throw new MeshConfigError(`The vnode MAC "${vnode.mac}" is not lowercase aa:bb:cc:dd:ee:ff.`)
    if (!desired.peerMeshIps.includes(vnode.hostMeshIp)) {
      throw new MeshConfigError(
        `The vnode ${vnode.mac} is on host ${vnode.hostMeshIp}, which is not in peerMeshIps.`,
      )
    }
  }
  if (desired.controlPorts.length > OVERLAY_CONTROL_PORTS_MAX) {
    throw new MeshConfigError(`More than ${OVERLAY_CONTROL_PORTS_MAX} control ports were given.`)
  }
  for (const port of desired.controlPorts) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new MeshConfigError(`The control port ${port} must be an integer from 1 to 65535.`)
    }
  }
  if (desired.hostAddresses.length > OVERLAY_HOST_ADDRESSES_MAX) {
    throw new MeshConfigError(`More than ${OVERLAY_HOST_ADDRESSES_MAX} host addresses were given.`)
  }
  for (const address of desired.hostAddresses) checkCidr(address, 'host address')
}

/**
 * The nftables script that (re)creates this vcluster's two tables atomically.
 * The comment carries a fingerprint of the rules so a matching host plans nothing.
 */
export function renderOverlayRules(desired: OverlayDesired): { script: string; comment: string } {
  const { bridge, vxlan, table } = overlayNames(desired.vni)
  const gateway = parseCidr(desired.gatewayAddress).address
  const mac = gatewayMac(desired.vni)
  const egress = desired.egressInterface
  const ports = [...new Set(desired.controlPorts)].sort((a, b) => a - b).join(', ')
  const hosts = [...new Set(desired.hostAddresses)].sort().join(', ')
  const inet = [
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    // Vnodes talk to their host only through their own gateway, and never to control ports.
    ...(ports === '' ? [] : [`\t\tiifname "${bridge}" meta l4proto { tcp, udp } th dport { ${ports} } drop`]),
    `\t\tiifname "${bridge}" meta nfproto ipv4 ip daddr != ${gateway} drop`,
    `\t\tiifname "${bridge}" meta nfproto ipv6 drop`,
    '\t}',
    '\tchain forward {',
    '\t\ttype filter hook forward priority filter; policy accept;',
    // Where br_netfilter is on (the kernel default once loaded), bridged frames
    // inside the vcluster pass this hook with the bridge as both interfaces.
    `\t\tiifname "${bridge}" oifname "${bridge}" accept`,
    ...(ports === '' || hosts === ''
      ? []
      : [
          `\t\tiifname "${bridge}" meta l4proto { tcp, udp } ip daddr { ${hosts} } th dport { ${ports} } drop`,
        ]),
    // Routed traffic of a vcluster goes out the egress only: never to another
    // vcluster's bridge, never into the mesh; only replies come back in.
    `\t\tiifname "${bridge}" oifname != "${egress}" drop`,
    `\t\toifname "${bridge}" iifname != "${egress}" drop`,
    `\t\toifname "${bridge}" ct state != { established, related } drop`,
    '\t}',
    '\tchain postrouting {',
    '\t\ttype nat hook postrouting priority srcnat; policy accept;',
    `\t\tip saddr ${desired.subnet} oifname "${egress}" masquerade`,
    '\t}',
  ]
  const bridgeRules = [
    // The gateway is local on every host: its ARP and its frames stay off the VXLAN.
    '\tchain forward {',
    '\t\ttype filter hook forward priority filter; policy accept;',
    `\t\toifname "${vxlan}" ether type arp arp daddr ip ${gateway} drop`,
    `\t\tiifname "${vxlan}" ether type arp arp daddr ip ${gateway} drop`,
    `\t\tiifname "${vxlan}" ether saddr ${mac} drop`,
    `\t\toifname "${vxlan}" ether daddr ${mac} drop`,
    '\t}',
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    `\t\tiifname "${vxlan}" ether saddr ${mac} drop`,
    `\t\tiifname "${vxlan}" ether type arp arp daddr ip ${gateway} drop`,
    '\t}',
    '\tchain output {',
    '\t\ttype filter hook output priority filter; policy accept;',
    `\t\toifname "${vxlan}" drop`,
    '\t}',
  ]
  const body = `${inet.join('\n')}\n---\n${bridgeRules.join('\n')}`
  const fingerprint = createHash('sha256').update(body).digest('hex').slice(0, 16)
  const comment = `docklet vni ${desired.vni} ${fingerprint}`
  const script = [
    // Declaring before deleting makes the delete safe when the table is absent; nft applies the file atomically.
    `table inet ${table}`,
    `delete table inet ${table}`,
    `table bridge ${table}`,
    `delete table bridge ${table}`,
    `table inet ${table} {`,
    `\tcomment "${comment}"`,
    ...inet,
    '}',
    `table bridge ${table} {`,
    `\tcomment "${comment}"`,
    ...bridgeRules,
    '}',
    '',
  ].join('\n')
  return { script, comment }
}

/** Parses the text of `nft list ruleset` (or `nft list tables`) into tables and their comments. */
export function parseNftTables(text: string): NftTable[] {
  const tables: NftTable[] = []
  const lines = text.split('\n')
  for (let index = 0; index < lines.length; index++) {
    const match = /^table (\S+) (\S+)(?: \{)?$/.exec(lines[index]!.trim())
    if (match === null || lines[index]!.startsWith('\t')) continue
    const next = /^comment "(.*)"$/.exec(lines[index + 1]?.trim() ?? '')
    tables.push({ family: match[1]!, name: match[2]!, comment: next === null ? null : next[1]! })
  }
  return tables
}

function findLink(current: OverlayCurrent, name: string): LinkState | null {
  return current.links.find((link) => link.name === name) ?? null
}

/** The commands that make this host carry the vcluster as `desired` says; [] when it already does. */
export function planOverlay(current: OverlayCurrent, desired: OverlayDesired): PlannedCommand[] {
  validateOverlayDesired(desired)
  const names = overlayNames(desired.vni)
  const mtu = overlayMtu(desired.meshMtu)
  const mac = gatewayMac(desired.vni)
  const commands: PlannedCommand[] = []
  const ip = (...args: string[]): void => {
    commands.push({ file: 'ip', args })
  }
  if (!current.ipForward) commands.push({ file: 'sysctl', args: ['-w', 'net.ipv4.ip_forward=1'] })

  let bridge = findLink(current, names.bridge)
  if (bridge !== null && bridge.kind !== 'bridge') {
    ip('link', 'del', 'dev', names.bridge)
    bridge = null
  }
  if (bridge === null) ip('link', 'add', 'dev', names.bridge, 'type', 'bridge')
  if (bridge?.mac !== mac) ip('link', 'set', 'dev', names.bridge, 'address', mac)
  if (bridge?.mtu !== mtu) ip('link', 'set', 'dev', names.bridge, 'mtu', String(mtu))

  let vxlan = findLink(current, names.vxlan)
  const info = vxlan?.vxlan
  const vxlanMatches =
    info !== undefined &&
    info !== null &&
    info.vni === desired.vni &&
    info.local === desired.localMeshIp &&
    info.port === VXLAN_PORT &&
    !info.learning &&
    info.device === desired.meshInterface
  if (vxlan !== null && !vxlanMatches) {
    ip('link', 'del', 'dev', names.vxlan)
    vxlan = null
  }
  if (vxlan === null) {
    ip(
      'link',
      'add',
      'dev',
      names.vxlan,
      'type',
      'vxlan',
      'id',
      String(desired.vni),
      'local',
      desired.localMeshIp,
      'dstport',
      String(VXLAN_PORT),
      'nolearning',
      'dev',
      desired.meshInterface,
    )
  }
  if (vxlan?.mtu !== mtu) ip('link', 'set', 'dev', names.vxlan, 'mtu', String(mtu))
  if (vxlan?.master !== names.bridge) ip('link', 'set', 'dev', names.vxlan, 'master', names.bridge)

  // Forwarding entries: all-zero MAC = flood list (one per peer host); known vnode MACs point at one host.
  const fdb = vxlan === null ? [] : current.fdb.filter((entry) => entry.dst !== null)
  const flood = new Set(fdb.filter((entry) => entry.mac === ZERO_MAC).map((entry) => entry.dst!))
  const wantedFlood = new Set(desired.peerMeshIps)
  for (const dst of [...flood].sort()) {
    if (!wantedFlood.has(dst))
      commands.push({ file: 'bridge', args: ['fdb', 'del', ZERO_MAC, 'dev', names.vxlan, 'dst', dst] })
  }
  for (const dst of desired.peerMeshIps) {
    if (!flood.has(dst))
      commands.push({ file: 'bridge', args: ['fdb', 'append', ZERO_MAC, 'dev', names.vxlan, 'dst', dst] })
  }
  const wantedMacs = new Map((desired.remoteVnodes ?? []).map((vnode) => [vnode.mac, vnode.hostMeshIp]))
  for (const entry of fdb) {
    if (entry.mac === ZERO_MAC || wantedMacs.get(entry.mac) === entry.dst) continue
    commands.push({ file: 'bridge', args: ['fdb', 'del', entry.mac, 'dev', names.vxlan, 'dst', entry.dst!] })
  }
  for (const [vnodeMac, dst] of wantedMacs) {
    if (fdb.some((entry) => entry.mac === vnodeMac && entry.dst === dst)) continue
    commands.push({
      file: 'bridge',
      args: ['fdb', 'replace', vnodeMac, 'dev', names.vxlan, 'dst', dst, 'self', 'permanent'],
    })
  }

  const addresses = bridge === null ? [] : globalAddresses(bridge).filter((address) => !address.includes(':'))
  for (const address of addresses) {
    if (address !== desired.gatewayAddress) ip('addr', 'del', address, 'dev', names.bridge)
  }
  if (!addresses.includes(desired.gatewayAddress))
    ip('addr', 'add', desired.gatewayAddress, 'dev', names.bridge)

  const rules = renderOverlayRules(desired)
  const tablesMatch = ['inet', 'bridge'].every((family) =>
    current.nftTables.some(
      (table) => table.family === family && table.name === names.table && table.comment === rules.comment,
    ),
  )
  if (!tablesMatch) commands.push({ file: 'nft', args: ['-f', '-'], input: rules.script })

  if (!(vxlan?.up ?? false)) ip('link', 'set', 'dev', names.vxlan, 'up')
  if (!(bridge?.up ?? false)) ip('link', 'set', 'dev', names.bridge, 'up')
  return commands
}

/** The commands that remove everything of vcluster `vni` from this host (last vnode left, or vcluster deleted). */
export function planOverlayRemoval(current: OverlayCurrent, vni: number): PlannedCommand[] {
  const names = overlayNames(vni)
  const commands: PlannedCommand[] = []
  for (const family of ['inet', 'bridge']) {
    if (current.nftTables.some((table) => table.family === family && table.name === names.table)) {
      commands.push({ file: 'nft', args: ['delete', 'table', family, names.table] })
    }
  }
  for (const name of [names.vxlan, names.bridge]) {
    if (findLink(current, name) !== null) commands.push({ file: 'ip', args: ['link', 'del', 'dev', name] })
  }
  return commands
}

/** Reads what this host has of vcluster `vni`: links, the VXLAN FDB, nftables tables, IPv4 forwarding. */
export async function readOverlayState(
  runner: CommandRunner,
  vni: number,
  options: MeshRunOptions = {},
): Promise<OverlayCurrent> {
  const timeoutMs = options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS_DEFAULT
  const names = overlayNames(vni)
  const links = parseIpAddrJson(
    (await runner.run('ip', ['-j', '-d', 'addr', 'show'], { timeoutMs })).stdout,
  ).filter((link) => link.name === names.bridge || link.name === names.vxlan)
  const fdb = links.some((link) => link.name === names.vxlan)
    ? parseFdbJson(
        (await runner.run('bridge', ['-j', 'fdb', 'show', 'dev', names.vxlan], { timeoutMs })).stdout,
      )
    : []
  const nftTables = parseNftTables((await runner.run('nft', ['list', 'ruleset'], { timeoutMs })).stdout)
  const forward = await runner.run('sysctl', ['-n', 'net.ipv4.ip_forward'], { timeoutMs })
  return { links, fdb, nftTables, ipForward: forward.stdout.trim() === '1' }
}

/** `ip` and `bridge` read many commands from stdin with `-batch -`, stopping at the first that fails. */
const BATCHABLE = new Set(['ip', 'bridge'])
/** Commands per batch: one process instead of one per forwarding entry (a 50-vnode vcluster has dozens). */
const BATCH_COMMANDS_MAX = 256

function batchable(command: PlannedCommand): boolean {
  return (
    BATCHABLE.has(command.file) &&
    command.input === undefined &&
    command.args.every((arg) => arg !== '' && !/[\s"'#\\]/.test(arg))
  )
}

/** Runs the commands in order; consecutive ip (or bridge) commands go to one `-batch -` process. */
async function runSteps(runner: CommandRunner, commands: PlannedCommand[], timeoutMs: number): Promise<void> {
  let at = 0
  while (at < commands.length) {
    const first = commands[at]!
    let end = at + 1
    if (batchable(first)) {
      while (
        end < commands.length &&
        end - at < BATCH_COMMANDS_MAX &&
        commands[end]!.file === first.file &&
        batchable(commands[end]!)
      )
        end++
    }
    const group = commands.slice(at, end)
    at = end
    try {
      if (group.length === 1) {
        await runner.run(first.file, first.args, {
          timeoutMs,
          ...(first.input === undefined ? {} : { input: first.input }),
        })
      } else {
        await runner.run(first.file, ['-batch', '-'], {
          timeoutMs,
          input: `${group.map((command) => command.args.join(' ')).join('\n')}\n`,
        })
      }
    } catch (error) {
      const shown =
        group.length === 1
          ? `\`${[first.file, ...first.args].join(' ')}\``
          : `batch of ${group.length} \`${first.file}\` commands (from \`${[first.file, ...first.args].join(' ')}\`)`
      throw new MeshApplyError(
        `The overlay step ${shown} failed; the next apply retries: ${(error as Error).message}`,
        { cause: error },
      )
    }
  }
}

/** Converges this host's share of one vcluster's network; returns the commands that ran. */
export async function applyOverlay(
  runner: CommandRunner,
  desired: OverlayDesired,
  options: MeshRunOptions = {},
): Promise<PlannedCommand[]> {
  const commands = planOverlay(await readOverlayState(runner, desired.vni, options), desired)
  await runSteps(runner, commands, options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS_DEFAULT)
  return commands
}

/** Removes this host's share of vcluster `vni`; returns the commands that ran. */
export async function removeOverlay(
  runner: CommandRunner,
  vni: number,
  options: MeshRunOptions = {},
): Promise<PlannedCommand[]> {
  const commands = planOverlayRemoval(await readOverlayState(runner, vni, options), vni)
  await runSteps(runner, commands, options.commandTimeoutMs ?? MESH_COMMAND_TIMEOUT_MS_DEFAULT)
  return commands
}
