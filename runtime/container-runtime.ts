// The one interface every container driver implements (Incus habit: drivers
// behind one interface, registered in one map — see drivers.ts). The host
// agent only ever talks to a ContainerRuntime, so its tests use the fake.

import { InvalidSpecError } from './errors.ts'

export type ContainerState = 'running' | 'stopped' | 'absent'

export interface ContainerLimits {
  /** CPU time as a number of cores (fractions allowed: 0.5 = half a core). */
  cpuCores: number
  memoryMb: number
  /** Size of the container's writable layer. */
  diskMb: number
}

export interface ContainerNetwork {
  /** Host bridge the container's veth is attached to. */
  bridge?: string
  /** IPv4 address with prefix length, e.g. 172.16.0.2/24. */
  ip?: string
  gateway?: string
  mtu?: number
  hwaddr?: string
}

export interface ContainerFile {
  /** Absolute path inside the container. */
  path: string
  content: string | Uint8Array
  /** Permission bits, e.g. 0o644. */
  mode: number
}

export interface ContainerSpec {
  /** Unique on the host (and, because cgroups are named after it, across simulated hosts on one machine). */
  name: string
  hostname: string
  /** Read-only root tree the container's overlay sits on. */
  imagePath: string
  limits: ContainerLimits
  /** null: no network interface but loopback. */
  network: ContainerNetwork | null
  /** Written to /etc/hosts after the localhost lines. */
  hosts: Array<{ ip: string; name: string }>
  /** Installed for root: the key pair in ~/.ssh and the public key in authorized_keys. */
  sshKeys?: { privateKey: string; publicKey: string }
  files?: ContainerFile[]
}

export interface ContainerInfo {
  name: string
  hostname: string
  imagePath: string
  state: ContainerState
}

export interface ContainerMetrics {
  /** CPU time used since the container started. */
  cpuUsageMs: number
  memoryUsageBytes: number
  /** null when no limit is set or the container is not running. */
  memoryLimitBytes: number | null
  diskUsedBytes: number
  diskLimitBytes: number
}

export interface ExecOptions {
  timeoutMs: number
  input?: string | Uint8Array
}

export interface ExecResult {
  exitCode: number
  stdout: string
  stderr: string
}

export interface ContainerRuntime {
  /** Prepares the container (rootfs, limits, files); it is left stopped. Fails with nothing left behind. */
  create(spec: ContainerSpec): Promise<void>
  /** Starts a stopped container (no-op when running). Containers outlive the process that started them. */
  start(name: string): Promise<void>
  /** Asks init to halt, kills after timeoutMs (no-op when stopped). */
  stop(name: string, options: { timeoutMs: number }): Promise<void>
  /** Removes the container and everything it had on the host. Idempotent. */
  destroy(name: string): Promise<void>
  /** Runs argv as root in the running container with a clean environment. Any exit code is returned, not thrown. */
  exec(name: string, argv: readonly string[], options: ExecOptions): Promise<ExecResult>
  state(name: string): Promise<ContainerState>
  list(): Promise<ContainerInfo[]>
  metrics(name: string): Promise<ContainerMetrics>
  /** The host directory holding the container's writable layer (what an image save stores). */
  upperDir(name: string): Promise<string>
}

/** Limits on what a spec may ask for, so a typo cannot ask for a petabyte. */
export const CPU_CORES_MAX = 1024
export const MEMORY_MB_MAX = 4 * 1024 * 1024
/** ext4 needs a few MB of its own; below this the layer is unusable. */
export const DISK_MB_MIN = 16
export const DISK_MB_MAX = 16 * 1024 * 1024
export const MEMORY_MB_MIN = 16
export const HOSTS_ENTRIES_MAX = 4096
export const FILES_MAX = 256
export const FILE_BYTES_MAX = 1024 * 1024

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/
const HOSTNAME_PATTERN =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
const BRIDGE_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/
const HWADDR_PATTERN = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/
const SSH_PUBLIC_KEY_PATTERN =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( [^\n]*)?\n?$/

export function isIpv4(text: string): boolean {
  const parts = text.split('.')
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)
}

export function isIpv4Cidr(text: string): boolean {
  const [ip, prefix, ...rest] = text.split('/')
  return (
    rest.length === 0 &&
    ip !== undefined &&
    isIpv4(ip) &&
    prefix !== undefined &&
    /^[0-9]{1,2}$/.test(prefix) &&
    Number(prefix) <= 32
  )
}

export function assertContainerName(name: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new InvalidSpecError(
      `Container name "${name}" is invalid; use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.`,
    )
  }
}

/** A path inside the container: absolute, no '..', no NUL. */
export function assertContainerPath(path: string): void {
  if (
    !path.startsWith('/') ||
    path.includes('\0') ||
    path.split('/').some((part) => part === '..') ||
    path === '/'
  ) {
    throw new InvalidSpecError(
      `File path "${path}" is invalid; give an absolute path inside the container without '..'.`,
    )
  }
}

function assertNumber(value: number, field: string, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new InvalidSpecError(`${field} is ${value}; it must be a number from ${min} to ${max}.`)
  }
}

/** Checks everything in a spec that can be checked without touching the host. */
export function validateContainerSpec(spec: ContainerSpec): void {
  assertContainerName(spec.name)
  if (!HOSTNAME_PATTERN.test(spec.hostname)) {
    throw new InvalidSpecError(
      `Hostname "${spec.hostname}" is invalid; use letters, digits and '-' (RFC 1123).`,
    )
  }
  if (
    typeof spec.imagePath !== 'string' ||
    !spec.imagePath.startsWith('/') ||
    /[\n\0:]/.test(spec.imagePath)
  ) {
    throw new InvalidSpecError(
      `Image path "${spec.imagePath}" is invalid; give an absolute path without ':'.`,
    )
  }
  if (spec.limits.cpuCores <= 0) throw new InvalidSpecError(`limits.cpuCores must be above 0.`)
  assertNumber(spec.limits.cpuCores, 'limits.cpuCores', 0.01, CPU_CORES_MAX)
  assertNumber(spec.limits.memoryMb, 'limits.memoryMb', MEMORY_MB_MIN, MEMORY_MB_MAX)
  assertNumber(spec.limits.diskMb, 'limits.diskMb', DISK_MB_MIN, DISK_MB_MAX)
  if (!Number.isInteger(spec.limits.memoryMb) || !Number.isInteger(spec.limits.diskMb)) {
    throw new InvalidSpecError('limits.memoryMb and limits.diskMb must be whole numbers.')
  }
  const net = spec.network
  if (net !== null) {
    if (net.bridge !== undefined && !BRIDGE_PATTERN.test(net.bridge)) {
      throw new InvalidSpecError(
        `Bridge name "${net.bridge}" is invalid; use 1-15 letters, digits, '.', '_' or '-'.`,
      )
    }
    if (net.ip !== undefined && !isIpv4Cidr(net.ip)) {
      throw new InvalidSpecError(
        `network.ip "${net.ip}" is invalid; give an IPv4 address with prefix, e.g. 172.16.0.2/24.`,
      )
    }
    if (net.gateway !== undefined && !isIpv4(net.gateway)) {
      throw new InvalidSpecError(`network.gateway "${net.gateway}" is not an IPv4 address.`)
    }
    if (net.mtu !== undefined) assertNumber(net.mtu, 'network.mtu', 576, 65535)
    if (net.hwaddr !== undefined && !HWADDR_PATTERN.test(net.hwaddr)) {
      throw new InvalidSpecError(
        `network.hwaddr "${net.hwaddr}" is not a MAC address like 02:00:00:00:00:01.`,
      )
    }
  }
  if (spec.hosts.length > HOSTS_ENTRIES_MAX) {
    throw new InvalidSpecError(
      `${spec.hosts.length} hosts entries is more than the ${HOSTS_ENTRIES_MAX} allowed.`,
    )
  }
  for (const entry of spec.hosts) {
    if (!isIpv4(entry.ip) || !HOSTNAME_PATTERN.test(entry.name)) {
      throw new InvalidSpecError(
        `Hosts entry "${entry.ip} ${entry.name}" is invalid; give an IPv4 address and a hostname.`,
      )
    }
  }
  if (spec.sshKeys !== undefined) {
    if (!SSH_PUBLIC_KEY_PATTERN.test(spec.sshKeys.publicKey)) {
      throw new InvalidSpecError(
        'sshKeys.publicKey is not an OpenSSH public key (ssh-ed25519, ssh-rsa or ecdsa).',
      )
    }
    if (!spec.sshKeys.privateKey.includes('PRIVATE KEY')) {
      throw new InvalidSpecError('sshKeys.privateKey is not a PEM/OpenSSH private key.')
    }
  }
  const files = spec.files ?? []
  if (files.length > FILES_MAX)
    throw new InvalidSpecError(`${files.length} files is more than the ${FILES_MAX} allowed.`)
  for (const file of files) {
    assertContainerPath(file.path)
    if (!Number.isInteger(file.mode) || file.mode < 0 || file.mode > 0o7777) {
      throw new InvalidSpecError(`Mode of ${file.path} must be permission bits like 0o644.`)
    }
    const size = typeof file.content === 'string' ? Buffer.byteLength(file.content) : file.content.byteLength
    if (size > FILE_BYTES_MAX) {
      throw new InvalidSpecError(
        `${file.path} is ${size} bytes; files are limited to ${FILE_BYTES_MAX} bytes.`,
      )
    }
  }
}

/** The /etc/hosts a container gets: localhost, then the given entries in order. */
export function renderHostsFile(hosts: ContainerSpec['hosts']): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback']
  for (const entry of hosts) lines.push(`${entry.ip}\t${entry.name}`)
  return `${lines.join('\n')}\n`
}

/** File name of an SSH key pair in ~/.ssh, after its type (id_ed25519, id_rsa, id_ecdsa). */
export function sshKeyFileName(publicKey: string): string {
  if (publicKey.startsWith('ssh-ed25519')) return 'id_ed25519'
  if (publicKey.startsWith('ecdsa-')) return 'id_ecdsa'
  return 'id_rsa'
}
