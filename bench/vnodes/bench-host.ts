// A private corner of this machine for the plain-LXC baseline and the LXD
// peer: a network namespace holding one bridge (br0: no address, no uplink,
// so a container's veth reaches nothing outside it) plus a mount namespace
// in which /sys/class/net and /sys/devices/virtual/net show that network
// namespace's interfaces. The second part is what lets LXD run here: LXD
// looks a NIC's parent bridge up in sysfs, and sysfs shows the interfaces of
// the namespace it was mounted from (entering only the network namespace
// leaves the host's view; `ip netns exec` remounts all of /sys and so loses
// the cgroup hierarchies below it). Inside, any attempt to reach the outside
// (LXD fetches instance types from images.linuxcontainers.org at start) fails
// with "network is unreachable" before a packet is sent.
//
// Everything here is undone through the Teardown: the holder process (whose
// exit frees the mount namespace and its mounts), the namespace, and the
// spawned processes.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { readFileSync, readlinkSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { CommandRunner, RunOptions, RunResult } from '../../runtime/command-runner.ts'
import type { Teardown } from './teardown.ts'

export const BRIDGE = 'br0'
export const COMMAND_TIMEOUT_MS = 30_000
const HOLDER_READY_MS_MAX = 2_000
/** A spawned process gets this long to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 20_000
/** The tail of a spawned process's output kept for error messages. */
export const OUTPUT_TAIL_BYTES_MAX = 16 * 1024

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface HostProcess {
  readonly pid: number
  /** Resolves with the exit code (null when killed by a signal); never rejects. */
  readonly exited: Promise<number | null>
  isRunning(): boolean
  outputTail(): string
  /** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
  stop(): Promise<void>
}

/** Runs each command inside the bench host by prefixing the `nsenter` argv. */
class EnteringRunner implements CommandRunner {
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

export interface BenchHostInit {
  /** Runs commands in the root namespaces. */
  root: CommandRunner
  teardown: Teardown
  /** Names the network namespace; unique per run. */
  name: string
  /** A temp dir of this run (the netns sysfs is mounted below it, inside the mount namespace only). */
  dir: string
}

export class BenchHost {
  readonly netns: string
  /** argv prefix that runs a command inside (network and mount namespace). */
  readonly enter: readonly string[]
  readonly runner: CommandRunner
  readonly #teardown: Teardown

  private constructor(netns: string, holderPid: number, root: CommandRunner, teardown: Teardown) {
    this.netns = netns
    this.enter = ['nsenter', '-t', String(holderPid), '-m', '-n', '--']
    this.runner = new EnteringRunner(root, this.enter)
    this.#teardown = teardown
  }

  static async create(init: BenchHostInit): Promise<BenchHost> {
    const { root, teardown, name } = init
    const run = (args: string[]) => root.run('ip', args, { timeoutMs: COMMAND_TIMEOUT_MS })
    await run(['netns', 'add', name])
    teardown.add({
      label: `delete network namespace ${name}`,
      run: async () => {
        await root.run('ip', ['netns', 'del', name], { timeoutMs: COMMAND_TIMEOUT_MS, okExitCodes: [0, 1] })
      },
      runSync: () => {
        spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: COMMAND_TIMEOUT_MS })
      },
    })
    await run(['-n', name, 'link', 'set', 'lo', 'up'])
    await run(['-n', name, 'link', 'add', BRIDGE, 'type', 'bridge'])
    // No link-local address either: the bridge carries nothing but what the containers send each other.
    await run(['-n', name, 'link', 'set', 'dev', BRIDGE, 'addrgenmode', 'none'])
    await run(['-n', name, 'link', 'set', BRIDGE, 'up'])

    // nsenter and unshare exec (no fork), so the spawned pid is the sleep that holds the mount namespace.
    const holder = spawn(
      'nsenter',
      [
        `--net=/run/netns/${name}`,
        '--',
        'unshare',
        '--mount',
        '--propagation',
        'slave',
        '--',
        'sleep',
        'infinity',
      ],
      { stdio: 'ignore' },
    )
    if (holder.pid === undefined)
      throw new Error('Could not start the mount-namespace holder (nsenter, unshare).')
    const holderPid = holder.pid
    const holderExited = new Promise<void>((resolve) => holder.once('exit', () => resolve()))
    teardown.add({
      label: `stop the mount-namespace holder (pid ${holderPid})`,
      run: async () => {
        if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL')
        await holderExited
      },
      runSync: () => {
        if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL')
      },
    })
    const ownMountNs = readlinkSync('/proc/self/ns/mnt')
    const readyBy = Date.now() + HOLDER_READY_MS_MAX
    for (;;) {
      let ready = false
      try {
        ready =
          readlinkSync(`/proc/${holderPid}/ns/mnt`) !== ownMountNs &&
          readFileSync(`/proc/${holderPid}/cmdline`, 'utf8').startsWith('sleep')
      } catch {}
      if (ready) break
      if (Date.now() > readyBy) {
        throw new Error(`The mount namespace of ${name} did not appear within ${HOLDER_READY_MS_MAX} ms.`)
      }
      await sleep(10)
    }
    const host = new BenchHost(name, holderPid, root, teardown)
    const sysfs = join(init.dir, 'netns-sysfs')
    await mkdir(sysfs)
    // These mounts exist only in the holder's mount namespace; they go when it does.
    const inside = (args: string[]) => host.runner.run('mount', args, { timeoutMs: COMMAND_TIMEOUT_MS })
    await inside(['-t', 'sysfs', `${name}-sysfs`, sysfs])
    await inside(['--bind', join(sysfs, 'class/net'), '/sys/class/net'])
    await inside(['--bind', join(sysfs, 'devices/virtual/net'), '/sys/devices/virtual/net'])
    const seen = await host.runner.run('ls', ['/sys/class/net'], { timeoutMs: COMMAND_TIMEOUT_MS })
    if (!seen.stdout.split('\n').includes(BRIDGE)) {
      throw new Error(`/sys/class/net inside ${name} does not list ${BRIDGE}: ${seen.stdout.trim()}`)
    }
    return host
  }

  /**
   * Starts a long-lived process inside; it is stopped at teardown if still
   * running. `env` is added to this process's environment.
   */
  spawn(label: string, file: string, args: readonly string[], env: Record<string, string> = {}): HostProcess {
    const [enterFile, ...enterArgs] = this.enter
    const child: ChildProcess = spawn(enterFile!, [...enterArgs, file, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    if (child.pid === undefined) throw new Error(`Could not start ${label} (${file}); is it installed?`)
    const pid = child.pid
    let output = ''
    const collect = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES_MAX)
    }
    child.stdout?.on('data', collect)
    child.stderr?.on('data', collect)
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code))
      child.once('error', () => resolve(null))
    })
    const isRunning = () => child.exitCode === null && child.signalCode === null
    const stop = async (): Promise<void> => {
      if (!isRunning()) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
      await exited
      clearTimeout(timer)
    }
    this.#teardown.add({
      label: `stop ${label} (pid ${pid})`,
      run: stop,
      runSync: () => {
        if (isRunning()) child.kill('SIGKILL')
      },
    })
    return { pid, exited, isRunning, outputTail: () => output.trim(), stop }
  }
}
