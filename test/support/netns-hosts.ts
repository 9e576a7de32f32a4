// A multi-host test harness on one machine. Each simulated host is a network
// namespace plus its own mount namespace (private tmpfs /run, so wireguard-go
// control sockets and later node sockets never collide, and a private data
// dir), joined by a veth to a shared "LAN" bridge that lives in its own
// namespace so nothing touches the real host network. One "outside" namespace
// on the LAN stands for the internet. Every name carries a per-run prefix;
// `teardown()` kills every process, deletes every namespace, interface, mount
// and temp dir, then asserts `leftovers()` is empty. A process-exit hook does
// the same synchronously, so a failed or interrupted test leaves nothing.
//
// Commands run through a CommandRunner: `runnerFor(target)` wraps the root
// runner with `nsenter` so the same code that runs on a real host runs inside
// a simulated one.

import { type ChildProcess, spawn as spawnChild, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { CommandRunner, RunOptions, RunResult } from '../../net/command-runner.ts'

export const COMMAND_TIMEOUT_MS_DEFAULT = 10_000
export const HOSTS_MAX = 32
export const VNODES_MAX = 64
/** Captured output of a spawned process is cut to this tail. */
export const SPAWN_OUTPUT_BYTES_MAX = 64 * 1024
const LAN_PREFIX = '10.213.0'
const LAN_PREFIX_LENGTH = 24
const OUTSIDE_LAN_ADDRESS = `${LAN_PREFIX}.254`
/** The outside's "internet" address; reachable from hosts through their default route via the outside. */
export const OUTSIDE_INTERNET_ADDRESS = '10.214.0.1'

/** Something commands can run in: a simulated host, the outside, or a vnode. */
export interface NetnsTarget {
  readonly name: string
  readonly netns: string
  readonly runner: CommandRunner
  /** The argv prefix that enters this target (`nsenter …` `--`). */
  readonly enter: readonly string[]
}

export interface SimHost extends NetnsTarget {
  readonly index: number
  /** Address on the shared LAN (10.213.0.<index+1>). */
  readonly lanAddress: string
  /** The host's LAN interface name inside its namespace. */
  readonly lanInterface: string
  /** A private directory for this host (keys, state); also bind-mounted on /var/lib/docklet when that exists. */
  readonly dataDir: string
  /**
   * The same directory as the host's own processes name it: /var/lib/docklet
   * where that exists to be bind-mounted over, else `dataDir` itself.
   */
  readonly nodeDataDir: string
  /** PID of the process holding the host's mount namespace. */
  readonly holderPid: number
}

export interface Outside extends NetnsTarget {
  readonly lanAddress: string
  readonly internetAddress: string
}

export interface Vnode extends NetnsTarget {
  readonly host: SimHost
  readonly address: string
  readonly mac: string
  /** The veth end on the host (attached to the bridge). */
  readonly hostInterface: string
}

export interface SpawnedProcess {
  readonly pid: number
  readonly exited: Promise<number | null>
  /** The tail of stdout and stderr so far. */
  output(): string
  kill(): Promise<void>
}

export class NetnsHostsPrerequisiteError extends Error {
  readonly code = 'ERR_NETNS_PREREQUISITE'
  constructor(message: string) {
    super(message)
    this.name = 'NetnsHostsPrerequisiteError'
  }
}

/** Why multi-host tests cannot run here (not root, a tool missing), or null when they can. */
export function missingPrerequisite(
  tools: readonly string[] = ['ip', 'nft', 'nsenter', 'unshare', 'bridge'],
): string | null {
  if (process.getuid?.() !== 0) return 'multi-host tests need root (run as root or in CI as root)'
  const path = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin'])
  for (const tool of tools) {
    if (!path.some((dir) => dir !== '' && existsSync(join(dir, tool))))
      return `the command "${tool}" is not installed`
  }
  return null
}

/** Runs each command inside a target by prefixing it with the target's `nsenter` argv. */
export class NamespacedRunner implements CommandRunner {
  readonly #inner: CommandRunner
  readonly #enter: readonly string[]
  constructor(inner: CommandRunner, enter: readonly string[]) {
    this.#inner = inner
    this.#enter = enter
  }
  run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
    const [enterFile, ...enterArgs] = this.#enter
    return this.#inner.run(enterFile!, [...enterArgs, file, ...args], options)
  }
}

export interface NetnsHostsOptions {
  hosts: number
  /** Runs commands in the root namespace (tests pass `new ExecaCommandRunner()`). */
  runner: CommandRunner
  commandTimeoutMs?: number
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !/^\d+ \(.*\) [ZX]/.test(stat)
  } catch {
    return false
  }
}

function tail(text: string): string {
  return text.length > SPAWN_OUTPUT_BYTES_MAX ? text.slice(-SPAWN_OUTPUT_BYTES_MAX) : text
}

const liveHarnesses = new Set<NetnsHosts>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const harness of liveHarnesses) harness.teardownSync()
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const harness of liveHarnesses) harness.teardownSync()
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15))
    })
  }
}

export class NetnsHosts {
  readonly prefix: string
  readonly hosts: SimHost[] = []
  readonly vnodes: Vnode[] = []
  outside!: Outside
  readonly #runner: CommandRunner
  readonly #timeoutMs: number
  readonly #namespaces: string[] = []
  readonly #processes = new Set<ChildProcess>()
  readonly #pids = new Set<number>()
  readonly #dirs: string[] = []
  readonly #cuts = new Map<number, Set<number>>()
  #tornDown = false

  private constructor(options: NetnsHostsOptions) {
    this.#runner = options.runner
    this.#timeoutMs = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS_DEFAULT
    this.prefix = `dk${process.pid % 1000}${Math.floor(Math.random() * 36 * 36)
      .toString(36)
      .padStart(2, '0')}`
  }

  /** Builds the LAN, `hosts` simulated hosts and the outside; on failure removes what it made and rethrows. */
  static async create(options: NetnsHostsOptions): Promise<NetnsHosts> {
    if (!Number.isInteger(options.hosts) || options.hosts < 1 || options.hosts > HOSTS_MAX) {
      throw new Error(`hosts must be 1-${HOSTS_MAX}, not ${options.hosts}.`)
    }
    const missing = missingPrerequisite()
    if (missing !== null) throw new NetnsHostsPrerequisiteError(`Cannot build simulated hosts: ${missing}.`)
    const harness = new NetnsHosts(options)
    installExitHook()
    liveHarnesses.add(harness)
    try {
      await harness.#build(options.hosts)
    } catch (error) {
      await harness.teardown().catch(() => {})
      throw error
    }
    return harness
  }

  get lanNetns(): string {
    return `${this.prefix}-lan`
  }

  async #root(file: string, args: readonly string[], okExitCodes?: number[]): Promise<RunResult> {
    return this.#runner.run(file, args, {
      timeoutMs: this.#timeoutMs,
      ...(okExitCodes ? { okExitCodes } : {}),
    })
  }

  async #addNamespace(name: string): Promise<void> {
    await this.#root('ip', ['netns', 'add', name])
    this.#namespaces.push(name)
    await this.#root('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
  }

  async #build(count: number): Promise<void> {
    const lan = this.lanNetns
    await this.#addNamespace(lan)
    await this.#root('ip', ['-n', lan, 'link', 'add', 'br0', 'type', 'bridge'])
    await this.#root('ip', ['-n', lan, 'link', 'set', 'br0', 'up'])

    const outsideNs = `${this.prefix}-out`
    await this.#addNamespace(outsideNs)
    await this.#plugIntoLan(outsideNs, 'out', 'lan0')
    await this.#root('ip', [
      '-n',
      outsideNs,
      'addr',
      'add',
      `${OUTSIDE_LAN_ADDRESS}/${LAN_PREFIX_LENGTH}`,
      'dev',
      'lan0',
    ])
    await this.#root('ip', ['-n', outsideNs, 'addr', 'add', `${OUTSIDE_INTERNET_ADDRESS}/32`, 'dev', 'lo'])
    const outsideEnter = ['nsenter', `--net=/run/netns/${outsideNs}`, '--']
    this.outside = {
      name: 'outside',
      netns: outsideNs,
      enter: outsideEnter,
      runner: new NamespacedRunner(this.#runner, outsideEnter),
      lanAddress: OUTSIDE_LAN_ADDRESS,
      internetAddress: OUTSIDE_INTERNET_ADDRESS,
    }

    for (let index = 0; index < count; index++) this.hosts.push(await this.#buildHost(index))
  }

  async #plugIntoLan(netns: string, lanSide: string, inside: string): Promise<void> {
    const lan = this.lanNetns
    await this.#root('ip', [
      '-n',
      lan,
      'link',
      'add',
      lanSide,
      'type',
      'veth',
      'peer',
      'name',
      inside,
      'netns',
      netns,
    ])
    await this.#root('ip', ['-n', lan, 'link', 'set', lanSide, 'master', 'br0', 'up'])
    await this.#root('ip', ['-n', netns, 'link', 'set', inside, 'up'])
  }

  async #buildHost(index: number): Promise<SimHost> {
    const name = `h${index}`
    const netns = `${this.prefix}-${name}`
    await this.#addNamespace(netns)
    await this.#plugIntoLan(netns, name, 'lan0')
    const lanAddress = `${LAN_PREFIX}.${index + 1}`
    await this.#root('ip', ['-n', netns, 'addr', 'add', `${lanAddress}/${LAN_PREFIX_LENGTH}`, 'dev', 'lan0'])
    await this.#root('ip', ['-n', netns, 'route', 'add', 'default', 'via', OUTSIDE_LAN_ADDRESS])
    const dataDir = await mkdtemp(join(tmpdir(), `${netns}-`))
    this.#dirs.push(dataDir)

    // `ip netns exec` enters the netns and execs unshare, which execs sleep: one PID
    // that holds a private mount namespace for as long as the host lives.
    const holder = spawnChild(
      'ip',
      ['netns', 'exec', netns, 'unshare', '--mount', '--propagation', 'private', 'sleep', 'infinity'],
      {
        stdio: 'ignore',
      },
    )
    if (holder.pid === undefined) throw new Error(`Could not start the mount-namespace holder of ${name}.`)
    this.#processes.add(holder)
    this.#pids.add(holder.pid)
    holder.once('exit', () => this.#processes.delete(holder))
    const ownMountNs = readlinkSync('/proc/self/ns/mnt')
    for (let attempt = 0; ; attempt++) {
      let ready = false
      try {
        ready =
          readlinkSync(`/proc/${holder.pid}/ns/mnt`) !== ownMountNs &&
          readFileSync(`/proc/${holder.pid}/cmdline`, 'utf8').startsWith('sleep')
      } catch {}
      if (ready) break
      if (attempt >= 100) throw new Error(`The mount namespace of ${name} did not appear within 2 s.`)
      await sleep(20)
    }
    const enter = ['nsenter', '-t', String(holder.pid), '-m', '-n', '--']
    const runner = new NamespacedRunner(this.#runner, enter)
    const timeoutMs = this.#timeoutMs
    await runner.run('mount', ['-t', 'tmpfs', '-o', 'mode=0755,size=16m', `${this.prefix}-run`, '/run'], {
      timeoutMs,
    })
    await runner.run('mkdir', ['-p', '/run/wireguard', '/run/netns'], { timeoutMs })
    // `ip netns exec` gave the namespace a fresh sysfs (so /sys/class/net shows its own
    // interfaces), which hides the cgroup hierarchies; LXC needs them to set limits.
    for (const step of cgroupMountSteps(readFileSync('/proc/self/mountinfo', 'utf8')))
      await runner.run(step[0]!, step.slice(1), { timeoutMs })
    // Never created here: a directory made on the real host would outlive the run.
    const bindDataDir = existsSync('/var/lib/docklet')
    if (bindDataDir) await runner.run('mount', ['--bind', dataDir, '/var/lib/docklet'], { timeoutMs })
    return {
      name,
      index,
      netns,
      enter,
      runner,
      lanAddress,
      lanInterface: 'lan0',
      dataDir,
      nodeDataDir: bindDataDir ? '/var/lib/docklet' : dataDir,
      holderPid: holder.pid,
    }
  }

  #target(target: number | NetnsTarget): NetnsTarget {
    if (typeof target !== 'number') return target
    const host = this.hosts[target]
    if (host === undefined)
      throw new Error(`There is no host ${target}; the harness has ${this.hosts.length}.`)
    return host
  }

  host(index: number): SimHost {
    return this.#target(index) as SimHost
  }

  runnerFor(target: number | NetnsTarget): CommandRunner {
    return this.#target(target).runner
  }

  /** Runs a command inside a host (by index), the outside or a vnode. */
  run(
    target: number | NetnsTarget,
    file: string,
    args: readonly string[],
    options: Partial<RunOptions> = {},
  ): Promise<RunResult> {
    return this.#target(target).runner.run(file, args, { timeoutMs: this.#timeoutMs, ...options })
  }

  /** Starts a long-lived process inside a target; it is SIGKILLed at teardown if still running. */
  spawn(target: number | NetnsTarget, file: string, args: readonly string[]): SpawnedProcess {
    const [enterFile, ...enterArgs] = this.#target(target).enter
    const child = spawnChild(enterFile!, [...enterArgs, file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    if (child.pid === undefined) throw new Error(`Could not start ${file}.`)
    const pid = child.pid
    this.#processes.add(child)
    this.#pids.add(pid)
    let output = ''
    const collect = (chunk: Buffer): void => {
      output = tail(output + chunk.toString('utf8'))
    }
    child.stdout?.on('data', collect)
    child.stderr?.on('data', collect)
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code, signal) => {
        this.#processes.delete(child)
        resolve(code ?? (signal === null ? null : -1))
      })
    })
    return {
      pid,
      exited,
      output: () => output,
      kill: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        await exited
      },
    }
  }

  /** Takes a host's LAN link down (as if its cable were pulled). */
  async cutLan(host: number): Promise<void> {
    await this.#root('ip', ['-n', this.lanNetns, 'link', 'set', this.host(host).name, 'down'])
  }

  async restoreLan(host: number): Promise<void> {
    await this.#root('ip', ['-n', this.lanNetns, 'link', 'set', this.host(host).name, 'up'])
  }

  /** Drops all traffic between hosts a and b (both directions, in a's namespace). */
  async cutPath(a: number, b: number): Promise<void> {
    const cuts = this.#cuts.get(a) ?? new Set<number>()
    cuts.add(b)
    this.#cuts.set(a, cuts)
    await this.#renderCuts(a)
  }

  async restorePath(a: number, b: number): Promise<void> {
    this.#cuts.get(a)?.delete(b)
    await this.#renderCuts(a)
  }

  async #renderCuts(a: number): Promise<void> {
    const addresses = [...(this.#cuts.get(a) ?? [])].map((b) => this.host(b).lanAddress)
    const lines = ['table inet harness_cut', 'delete table inet harness_cut']
    if (addresses.length > 0) {
      const set = addresses.join(', ')
      lines.push(
        'table inet harness_cut {',
        '\tchain input {',
        '\t\ttype filter hook input priority -10; policy accept;',
        `\t\tip saddr { ${set} } drop`,
        '\t}',
        '\tchain output {',
        '\t\ttype filter hook output priority -10; policy accept;',
        `\t\tip daddr { ${set} } drop`,
        '\t}',
        '}',
      )
    }
    await this.run(a, 'nft', ['-f', '-'], { input: `${lines.join('\n')}\n` })
  }

  /**
   * A vnode stand-in: its own network namespace with `eth0` (address, MAC, MTU),
   * a default route via the gateway, and the other veth end on `bridge` in the host.
   */
  async addVnode(
    host: number,
    options: { address: string; gateway: string; bridge: string; mtu: number; mac: string },
  ): Promise<Vnode> {
    if (this.vnodes.length >= VNODES_MAX) throw new Error(`At most ${VNODES_MAX} vnodes per harness.`)
    const simHost = this.host(host)
    const number = this.vnodes.length
    const netns = `${this.prefix}-v${number}`
    const hostInterface = `vh${number}`
    await this.#addNamespace(netns)
    await this.#root('ip', [
      '-n',
      netns,
      'link',
      'add',
      'eth0',
      'address',
      options.mac,
      'mtu',
      String(options.mtu),
      'type',
      'veth',
      'peer',
      'name',
      hostInterface,
      'mtu',
      String(options.mtu),
      'netns',
      String(simHost.holderPid),
    ])
    await this.#root('ip', ['-n', netns, 'addr', 'add', options.address, 'dev', 'eth0'])
    await this.#root('ip', ['-n', netns, 'link', 'set', 'eth0', 'up'])
    await this.#root('ip', ['-n', netns, 'route', 'add', 'default', 'via', options.gateway])
    await this.run(host, 'ip', ['link', 'set', 'dev', hostInterface, 'master', options.bridge, 'up'])
    const enter = ['nsenter', `--net=/run/netns/${netns}`, '--']
    const vnode: Vnode = {
      name: `v${number}`,
      netns,
      enter,
      runner: new NamespacedRunner(this.#runner, enter),
      host: simHost,
      address: options.address.split('/')[0]!,
      mac: options.mac,
      hostInterface,
    }
    this.vnodes.push(vnode)
    return vnode
  }

  /** True when one ICMP echo from `from` to `address` is answered within `waitS` seconds. */
  async ping(from: number | NetnsTarget, address: string, waitS = 2): Promise<boolean> {
    const result = await this.run(from, 'busybox', ['ping', '-c', '1', '-W', String(waitS), address], {
      okExitCodes: [0, 1],
      timeoutMs: (waitS + 3) * 1000,
    })
    return result.exitCode === 0
  }

  /** Everything with this run's prefix still present: namespaces, mounts, live processes, temp dirs. */
  leftovers(): string[] {
    const found: string[] = []
    const netnsDir = '/run/netns'
    if (existsSync(netnsDir)) {
      for (const name of readdirSync(netnsDir))
        if (name.startsWith(`${this.prefix}-`)) found.push(`netns ${name}`)
    }
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      if (line.includes(this.prefix)) found.push(`mount ${line.split(' ').slice(3, 5).join(' ')}`)
    }
    const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8', timeout: this.#timeoutMs })
    for (const line of (links.stdout ?? '').split('\n'))
      if (line.includes(this.prefix)) found.push(`link ${line}`)
    for (const pid of this.#pids) if (alive(pid)) found.push(`process ${pid}`)
    for (const dir of this.#dirs) if (existsSync(dir)) found.push(`dir ${dir}`)
    return found
  }

  /** PIDs of every process inside the harness's namespaces (wireguard-go daemons included). */
  #namespacePids(): number[] {
    const pids: number[] = []
    for (const netns of this.#namespaces) {
      const result = spawnSync('ip', ['netns', 'pids', netns], { encoding: 'utf8', timeout: this.#timeoutMs })
      for (const word of (result.stdout ?? '').split(/\s+/)) if (/^\d+$/.test(word)) pids.push(Number(word))
    }
    return pids
  }

  #killAll(): void {
    for (const child of this.#processes) child.kill('SIGKILL')
    for (const pid of this.#namespacePids()) {
      this.#pids.add(pid)
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
  }

  /** Kills every process, deletes everything, and throws if anything of this run is left. */
  async teardown(): Promise<void> {
    if (this.#tornDown) return
    this.#tornDown = true
    this.#killAll()
    for (let attempt = 0; attempt < 100 && [...this.#pids].some(alive); attempt++) await sleep(20)
    // A process may have forked while we were killing; one more sweep.
    this.#killAll()
    for (let attempt = 0; attempt < 100 && [...this.#pids].some(alive); attempt++) await sleep(20)
    for (const netns of [...this.#namespaces].reverse()) {
      await this.#runner.run('ip', ['netns', 'del', netns], {
        timeoutMs: this.#timeoutMs,
        okExitCodes: [0, 1],
      })
    }
    for (const dir of this.#dirs) await rm(dir, { recursive: true, force: true })
    liveHarnesses.delete(this)
    const left = this.leftovers()
    if (left.length > 0) throw new Error(`Teardown left ${left.length} things behind: ${left.join('; ')}`)
  }

  /** The exit-hook variant: synchronous, best effort, no assertion. */
  teardownSync(): void {
    if (this.#tornDown) return
    this.#tornDown = true
    this.#killAll()
    const deadline = Date.now() + 2000
    while ([...this.#pids].some(alive) && Date.now() < deadline) spawnSync('sleep', ['0.02'])
    for (const netns of [...this.#namespaces].reverse())
      spawnSync('ip', ['netns', 'del', netns], { timeout: 5000 })
    for (const dir of this.#dirs) spawnSync('rm', ['-rf', '--', dir], { timeout: 5000 })
    liveHarnesses.delete(this)
  }
}

/**
 * The commands that rebuild this machine's cgroup mounts (read from the
 * root namespace's mountinfo) under a fresh /sys: a tmpfs, then each
 * hierarchy mounted again with its own options (the kernel hands back the
 * same hierarchy), so containers started in a simulated host land in the
 * machine's real cgroups.
 */
export function cgroupMountSteps(mountinfo: string): string[][] {
  const steps: string[][] = []
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ')
    if (left === undefined || right === undefined) continue
    const mountPoint = left.split(' ')[4] ?? ''
    const [fsType, , superOptions = ''] = right.split(' ')
    if (mountPoint === '/sys/fs/cgroup' && fsType === 'tmpfs')
      steps.push(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'cgroup', mountPoint])
    else if (mountPoint.startsWith('/sys/fs/cgroup') && (fsType === 'cgroup' || fsType === 'cgroup2')) {
      const options = superOptions.split(',').filter((option) => option !== 'rw' && option !== 'ro')
      if (mountPoint !== '/sys/fs/cgroup') steps.push(['mkdir', '-p', mountPoint])
      steps.push([
        'mount',
        '-t',
        fsType,
        ...(options.length > 0 ? ['-o', options.join(',')] : []),
        fsType,
        mountPoint,
      ])
    }
  }
  return steps
}

/** A TCP sink in node: per connection counts bytes, then replies `{"remoteAddress","bytes"}` and closes. */
const SINK_SCRIPT = `
const net = require('node:net')
const server = net.createServer((socket) => {
  let bytes = 0
  socket.on('data', (chunk) => { bytes += chunk.length })
  socket.on('end', () => socket.end(JSON.stringify({ remoteAddress: socket.remoteAddress, bytes })))
  socket.on('error', () => {})
})
server.listen(Number(process.argv[2]), process.argv[1], () => console.log('listening'))
`

/** Sends N bytes, half-closes, prints the sink's reply; exit 2 when it cannot connect. */
const SEND_SCRIPT = `
const net = require('node:net')
const [host, port, total, connectMs] = process.argv.slice(1)
const socket = net.connect({ host, port: Number(port) })
const timer = setTimeout(() => { console.log('connect timeout'); process.exit(2) }, Number(connectMs))
let reply = ''
socket.on('connect', () => {
  clearTimeout(timer)
  const chunk = Buffer.alloc(64 * 1024, 120)
  let left = Number(total)
  const pump = () => {
    while (left > 0) {
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
      left -= piece.length
      if (!socket.write(piece)) return socket.once('drain', pump)
    }
    socket.end()
  }
  pump()
})
socket.on('data', (data) => { reply += data })
socket.on('end', () => { console.log(reply); process.exit(0) })
socket.on('error', (error) => { console.log('error ' + error.code); process.exit(2) })
`

/** Starts a TCP sink on `address:port` in a target and waits until it listens. */
export async function startTcpSink(
  harness: NetnsHosts,
  target: number | NetnsTarget,
  options: { address: string; port: number },
): Promise<SpawnedProcess> {
  const sink = harness.spawn(target, process.execPath, [
    '-e',
    SINK_SCRIPT,
    options.address,
    String(options.port),
  ])
  for (let attempt = 0; attempt < 150; attempt++) {
    if (sink.output().includes('listening')) return sink
    await sleep(20)
  }
  await sink.kill()
  throw new Error(`The TCP sink on ${options.address}:${options.port} did not start: ${sink.output()}`)
}

export interface TcpSendResult {
  connected: boolean
  /** The address the sink saw the connection come from. */
  remoteAddress?: string
  bytes?: number
  detail: string
}

/** Sends `bytes` from a target to a TCP sink; `connected: false` when the connection cannot be made. */
export async function tcpSend(
  harness: NetnsHosts,
  target: number | NetnsTarget,
  options: { address: string; port: number; bytes: number; connectTimeoutMs?: number; timeoutMs?: number },
): Promise<TcpSendResult> {
  const connectMs = options.connectTimeoutMs ?? 2000
  const result = await harness.run(
    target,
    process.execPath,
    ['-e', SEND_SCRIPT, options.address, String(options.port), String(options.bytes), String(connectMs)],
    { okExitCodes: [0, 2], timeoutMs: options.timeoutMs ?? 30_000 },
  )
  const detail = result.stdout.trim()
  if (result.exitCode !== 0) return { connected: false, detail }
  const reply = JSON.parse(detail) as { remoteAddress: string; bytes: number }
  return {
    connected: true,
    remoteAddress: reply.remoteAddress.replace(/^::ffff:/, ''),
    bytes: reply.bytes,
    detail,
  }
}
