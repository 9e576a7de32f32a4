// Real docklet nodes in simulated hosts: on top of NetnsHosts, every host
// runs `bin/docklet.js` in its own network and mount namespaces, with its data
// dir at the host's private /var/lib/docklet (or the host's temp dir where the
// real host has no /var/lib/docklet to mount over) and its libp2p port on its
// LAN address. Host 0 runs `docklet init`, the others `docklet join` with a
// token host 0 made, exactly as an operator would. Nodes run in the
// foreground as children of the harness (so their output tail explains a
// failure); a test can SIGKILL one, restart it with `docklet start`, or make
// it leave. teardown() is the harness's: every process in the namespaces
// (nodes, wireguard-go) is killed, everything is deleted and checked gone.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { CommandRunner } from '../../net/command-runner.ts'
import type { NodeConfig } from '../../src/config.ts'
import { type ControlRequest, callControl } from '../../src/control/control-client.ts'
import type { ClusterStatus } from '../../src/node/docklet-node.ts'
import { NetnsHosts, type SpawnedProcess } from './netns-hosts.ts'
import { repoRoot, testNodeConfig } from './process-cluster.ts'

export const DOCKLET_BIN = join(repoRoot, 'bin/docklet.js')
/** The libp2p port every simulated host's node listens on (each host has its own address). */
export const NODE_PORT = 7946
/** The portal port of every simulated host's node, on its LAN address (when the cluster has portals). */
export const PORTAL_PORT = 8080
export const NODE_START_TIMEOUT_MS = 20_000
export const CLI_TIMEOUT_MS = 30_000
/** The CLI's own exit code and output say what failed; the runner must not replace them. */
const ANY_EXIT_CODE = Array.from({ length: 256 }, (_, code) => code)
/** Lines of a node's output shown when something about it fails. */
const OUTPUT_TAIL_LINES = 20

/**
 * The multi-process tests' settings (test timing, in-memory containers, no
 * image builds) with the real WireGuard mesh each simulated host can have.
 * Tests of real vnodes pass `config: { runtime: 'lxc' }`.
 */
export const netnsNodeConfig: Partial<NodeConfig> = { ...testNodeConfig, mesh: 'wireguard' }

export interface NetnsClusterOptions {
  hosts: number
  /** Runs commands in the root namespace (tests pass `new ExecaCommandRunner()`). */
  runner: CommandRunner
  /** Settings written to every host's config.json, over netnsNodeConfig. */
  config?: Partial<NodeConfig>
  /** Each node serves the portal (API and proxy) on its LAN address, port PORTAL_PORT; none by default. */
  portal?: boolean
}

export interface HostNode {
  readonly host: number
  /** PeerId, '' until the node first answered. */
  id: string
  /** The running node, or null when it is not running. */
  process: SpawnedProcess | null
}

export class NetnsCluster {
  readonly harness: NetnsHosts
  readonly nodes: HostNode[]
  readonly #portal: boolean

  private constructor(harness: NetnsHosts, portal: boolean) {
    this.harness = harness
    this.#portal = portal
    this.nodes = harness.hosts.map((host) => ({ host: host.index, id: '', process: null }))
  }

  /** Builds the simulated hosts and writes each one's config.json; starts no node yet. */
  static async create(options: NetnsClusterOptions): Promise<NetnsCluster> {
    const harness = await NetnsHosts.create({ hosts: options.hosts, runner: options.runner })
    const config = { ...netnsNodeConfig, ...options.config }
    for (const host of harness.hosts) {
      writeFileSync(join(host.dataDir, 'config.json'), `${JSON.stringify(config)}\n`, { mode: 0o600 })
    }
    return new NetnsCluster(harness, options.portal === true)
  }

  /** The node's data dir as the host's own processes see it. */
  dataDir(host: number): string {
    return this.harness.host(host).nodeDataDir
  }

  /** HOST:PORT of the host's node on the LAN. */
  address(host: number): string {
    return `${this.harness.host(host).lanAddress}:${NODE_PORT}`
  }

  /** HOST:PORT of the host's portal on the LAN ('' when the cluster was created without portals). */
  portalAddress(host: number): string {
    return this.#portal ? `${this.harness.host(host).lanAddress}:${PORTAL_PORT}` : ''
  }

  node(host: number): HostNode {
    const node = this.nodes[host]
    if (node === undefined) throw new Error(`There is no host ${host}; the cluster has ${this.nodes.length}.`)
    return node
  }

  /** Calls the host's control socket from the test (the socket file is visible outside the host). */
  control<T>(host: number, request: ControlRequest): Promise<T> {
    const socket = join(this.harness.host(host).dataDir, 'docklet.sock')
    return callControl<T>(socket, { timeoutMs: 5_000, ...request })
  }

  status(host: number): Promise<ClusterStatus> {
    return this.control<ClusterStatus>(host, { method: 'GET', path: '/v1/status' })
  }

  /** Runs `docklet <args> --data-dir D --json` inside the host; returns the JSON it printed, throws on failure. */
  async cli<T = Record<string, unknown>>(host: number, args: string[]): Promise<T> {
    const argv = [DOCKLET_BIN, ...args, '--data-dir', this.dataDir(host), '--json']
    const result = await this.harness.run(host, process.execPath, argv, {
      okExitCodes: ANY_EXIT_CODE,
      timeoutMs: CLI_TIMEOUT_MS,
    })
    if (result.exitCode !== 0) {
      throw new Error(
        `\`docklet ${args.join(' ')}\` on host ${host} exited ${result.exitCode}: ${result.stdout.trim()} ${result.stderr.trim()}`,
      )
    }
    return JSON.parse(result.stdout.trim().split('\n').at(-1) ?? 'null') as T
  }

  /** Starts `docklet init` on `host` (host 0 by default) and waits until the node answers. */
  async init(host = 0): Promise<HostNode> {
    return this.#run(host, [
      'init',
      '--data-dir',
      this.dataDir(host),
      '--listen',
      this.address(host),
      '--portal',
      this.portalAddress(host),
      '--json',
    ])
  }

  /** Starts `docklet join` on `host` with a fresh token from `via` and waits until the node answers. */
  async join(host: number, options: { via?: number } = {}): Promise<HostNode> {
    const via = options.via ?? 0
    // What `docklet token create` asks the node, without paying for a CLI process.
    const { token } = await this.control<{ token: string }>(via, {
      method: 'POST',
      path: '/v1/tokens',
      body: {},
    })
    return this.#run(host, [
      'join',
      this.address(via),
      '--token',
      token,
      '--data-dir',
      this.dataDir(host),
      '--listen',
      this.address(host),
      '--portal',
      this.portalAddress(host),
      '--json',
    ])
  }

  /** init on host 0, then every other host joins through host 0, all at once (as fast as hosts come up). */
  async startAll(): Promise<void> {
    await this.init(0)
    await Promise.all(this.nodes.slice(1).map((node) => this.join(node.host)))
  }

  /** SIGKILLs the host's node (a crash); what it started (wireguard-go) keeps running. */
  async kill(host: number): Promise<void> {
    const node = this.node(host)
    await node.process?.kill()
    node.process = null
  }

  /** `docklet start` on a host whose node is not running; waits until it answers. */
  async restart(host: number): Promise<HostNode> {
    if (this.node(host).process !== null) throw new Error(`The node of host ${host} is still running.`)
    return this.#run(host, ['start', '--data-dir', this.dataDir(host)])
  }

  /** `docklet leave` on the host; resolves once its node has exited. */
  async leave(host: number): Promise<void> {
    const node = this.node(host)
    await this.cli(host, ['leave'])
    const running = node.process
    if (running !== null) {
      const exited = await Promise.race([running.exited.then(() => true), sleep(NODE_START_TIMEOUT_MS)])
      if (exited !== true) {
        throw new Error(
          `The node of host ${host} still ran ${NODE_START_TIMEOUT_MS} ms after leaving.\n${this.output(host)}`,
        )
      }
    }
    node.process = null
  }

  /** The last lines the host's node wrote, for failure messages. */
  output(host: number): string {
    const text = this.node(host).process?.output() ?? ''
    return `--- host ${host} node output ---\n${text.trimEnd().split('\n').slice(-OUTPUT_TAIL_LINES).join('\n')}`
  }

  /** Kills every node, deletes every namespace and temp dir; throws when anything is left. */
  teardown(): Promise<void> {
    for (const node of this.nodes) node.process = null
    return this.harness.teardown()
  }

  async #run(host: number, args: string[]): Promise<HostNode> {
    const node = this.node(host)
    if (node.process !== null) throw new Error(`The node of host ${host} is already running.`)
    const child = this.harness.spawn(host, process.execPath, [DOCKLET_BIN, ...args])
    node.process = child
    let exit: string | null = null
    void child.exited.then((code) => {
      exit = `exited with ${code}`
    })
    const deadline = Date.now() + NODE_START_TIMEOUT_MS
    for (;;) {
      try {
        const health = await this.control<{ id: string }>(host, {
          method: 'GET',
          path: '/v1/health',
          timeoutMs: 1_000,
        })
        node.id = health.id
        return node
      } catch {
        // Not listening yet.
      }
      if (exit !== null || Date.now() >= deadline) {
        await child.kill()
        const output = this.output(host)
        node.process = null
        throw new Error(
          `The node of host ${host} (docklet ${args[0]}) ${exit ?? `did not answer within ${NODE_START_TIMEOUT_MS} ms`}.\n${output}`,
        )
      }
      await sleep(100)
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
