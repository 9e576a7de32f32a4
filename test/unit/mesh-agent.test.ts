// The mesh agent against a fake host: a CommandRunner that keeps one
// host's links and WireGuard devices in memory and answers `ip`, `wg` and
// `wireguard-go` the way the real tools do (the same output formats the net/
// parsers read). A real ClusterState drives it. Checked: the key is created
// root-only, the interface follows the state (peers added and removed), every
// successful apply is saved and restored at the next start before any state
// exists, a failing step is retried with back-off until it passes, and a host
// that leaves deletes its interface and saved configuration.

import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import type { CommandRunner, RunOptions, RunResult } from '../../net/command-runner.ts'
import { MeshAgent, meshPaths } from '../../src/agent/mesh-agent.ts'
import { ClusterState, type Command, encodeCommand, type MemberInfo } from '../../src/state/cluster-state.ts'
import { waitFor } from '../support/process-cluster.ts'

const PRIVATE_KEY = 'cHJpdmF0ZXByaXZhdGVwcml2YXRlcHJpdmF0ZXByaXY='
const SELF_KEY = 'c2VsZnNlbGZzZWxmc2VsZnNlbGZzZWxmc2VsZnNlbGY='
const KEY_A = 'YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE='
const KEY_C = 'Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2M='
const WAIT_MS = 5_000

interface FakePeer {
  endpoint: string | null
  allowedIps: string[]
  keepalive: number
}

interface FakeLink {
  mtu: number
  up: boolean
  addresses: string[]
  wireguard: { privateKey: string | null; listenPort: number; peers: Map<string, FakePeer> } | null
}

/** One host's links as `ip` and `wg` show them; `failNext` makes the next runs of a program fail. */
class FakeHost implements CommandRunner {
  readonly links = new Map<string, FakeLink>([
    ['lan0', { mtu: 1500, up: true, addresses: ['10.0.0.2/24'], wireguard: null }],
  ])
  readonly commands: string[] = []
  failNext: { file: string; count: number } | null = null

  async run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
    const line = [file, ...args].join(' ')
    this.commands.push(line)
    const result = this.answer(file, [...args], options)
    if (!(options.okExitCodes ?? [0]).includes(result.exitCode))
      throw new Error(`\`${line}\` exited with ${result.exitCode}: ${result.stderr}`)
    return result
  }

  private answer(file: string, args: string[], options: RunOptions): RunResult {
    const ok = (stdout = ''): RunResult => ({ exitCode: 0, stdout, stderr: '' })
    const fail = (stderr: string, exitCode = 1): RunResult => ({ exitCode, stdout: '', stderr })
    if (this.failNext !== null && this.failNext.file === file && this.failNext.count > 0) {
      this.failNext.count--
      return fail('injected failure')
    }
    const name = args.includes('dev') ? args[args.indexOf('dev') + 1]! : args[1]!
    const link = this.links.get(name)
    if (file === 'wg' && args[0] === 'genkey') return ok(`${PRIVATE_KEY}\n`)
    if (file === 'wg' && args[0] === 'pubkey') return ok(`${SELF_KEY}\n`)
    if (file === 'wireguard-go') {
      this.links.set(args[0]!, {
        mtu: 1420,
        up: false,
        addresses: [],
        wireguard: { privateKey: null, listenPort: 0, peers: new Map() },
      })
      return ok()
    }
    if (file === 'ip' && args.join(' ') === '-j addr show') return ok(this.json([...this.links.keys()]))
    if (file === 'ip' && args[0] === '-j')
      return link === undefined ? fail(`Device "${name}" does not exist.`) : ok(this.json([name]))
    if (file === 'ip' && args[0] === 'link' && args[1] === 'add') return fail('Unknown device type.', 2)
    if (file === 'ip' && args[0] === 'link' && args[1] === 'del') {
      if (link === undefined) return fail(`Cannot find device "${name}"`)
      this.links.delete(name)
      return ok()
    }
    if (link === undefined) return fail(`Device "${name}" does not exist.`)
    if (file === 'ip' && args[0] === 'link' && args[1] === 'set') {
      if (args.includes('mtu')) link.mtu = Number(args[args.indexOf('mtu') + 1])
      if (args.includes('up')) link.up = true
      return ok()
    }
    if (file === 'ip' && args[0] === 'addr') {
      if (args[1] === 'add') link.addresses.push(args[2]!)
      else link.addresses = link.addresses.filter((address) => address !== args[2])
      return ok()
    }
    const wg = link.wireguard
    if (wg === null) return fail('Unable to access interface: Protocol not supported')
    if (file === 'wg' && args[0] === 'show') return ok(this.dump(wg))
    if (file === 'wg' && args[0] === 'set' && args[2] === 'private-key') {
      wg.privateKey = readFileSync(args[3]!, 'utf8').trim()
      wg.listenPort = Number(args[5])
      return ok()
    }
    if (file === 'wg' && args[0] === 'set' && args[2] === 'peer') {
      const key = args[3]!
      if (args[4] === 'remove') wg.peers.delete(key)
      else {
        const value = (word: string) => (args.includes(word) ? args[args.indexOf(word) + 1]! : null)
        const keepalive = value('persistent-keepalive')
        wg.peers.set(key, {
          endpoint: value('endpoint') ?? wg.peers.get(key)?.endpoint ?? null,
          allowedIps: (value('allowed-ips') ?? '').split(',').filter((ip) => ip !== ''),
          keepalive: keepalive === null || keepalive === 'off' ? 0 : Number(keepalive),
        })
      }
      return ok()
    }
    return fail(`The fake host does not know \`${file} ${args.join(' ')}\` (timeout ${options.timeoutMs}).`)
  }

  private json(names: string[]): string {
    return JSON.stringify(
      names.map((name) => {
        const link = this.links.get(name)!
        return {
          ifname: name,
          mtu: link.mtu,
          flags: link.up ? ['UP'] : [],
          addr_info: link.addresses.map((cidr) => ({
            family: 'inet',
            local: cidr.split('/')[0],
            prefixlen: Number(cidr.split('/')[1]),
            scope: 'global',
          })),
          ...(link.wireguard === null ? {} : { linkinfo: { info_kind: 'wireguard' } }),
        }
      }),
    )
  }

  private dump(wg: NonNullable<FakeLink['wireguard']>): string {
    const lines = [
      `${wg.privateKey ?? '(none)'}\t${wg.privateKey === null ? '(none)' : SELF_KEY}\t${wg.listenPort}\toff`,
    ]
    for (const [key, peer] of wg.peers) {
      const allowed = peer.allowedIps.length === 0 ? '(none)' : peer.allowedIps.join(',')
      const keepalive = peer.keepalive === 0 ? 'off' : String(peer.keepalive)
      lines.push(`${key}\t(none)\t${peer.endpoint ?? '(none)'}\t${allowed}\t0\t0\t0\t${keepalive}`)
    }
    return `${lines.join('\n')}\n`
  }

  peers(name = 'dkmesh0'): string[] {
    return [...(this.links.get(name)?.wireguard?.peers.keys() ?? [])].sort()
  }
}

function host(id: string, key: string, last: number): MemberInfo {
  return {
    id,
    name: id,
    address: `/ip4/10.0.0.${last}/tcp/7946`,
    portal: '',
    meshPublicKey: key,
    meshEndpoint: `10.0.0.${last}:51820`,
  }
}

/** A state where a founded the cluster and self (10.0.0.2) and c joined. */
function clusterState(): ClusterState {
  const state = new ClusterState()
  const apply = (command: Command) => expect(state.apply(encodeCommand(command)).ok).toBe(true)
  apply({
    type: 'cluster.init',
    at: 1,
    clusterId: 'c1',
    member: host('a', KEY_A, 1),
    admin: { name: 'admin', passwordHash: 'h' },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
  })
  for (const [index, member] of [host('self', SELF_KEY, 2), host('c', KEY_C, 3)].entries()) {
    const id = `t${index}`
    apply({ type: 'token.create', at: 2, id, secretHash: 's', expiresAt: 1e12, createdBy: 'root' })
    apply({ type: 'member.join', at: 3, tokenId: id, secretHash: 's', member })
  }
  return state
}

const dirs: string[] = []
const agents: MeshAgent[] = []

function start(runner: FakeHost, state: ClusterState, dataDir: string): Promise<MeshAgent> {
  return MeshAgent.start({
    selfId: 'self',
    state,
    runner,
    logger: pino({ level: 'silent' }),
    dataDir,
    advertisedAddress: '/ip4/10.0.0.2/tcp/7946',
    interfaceName: 'dkmesh0',
    listenPort: 51820,
    persistentKeepaliveS: 0,
    debounceMs: 5,
    retryMsMin: 20,
    retryMsMax: 80,
  }).then((agent) => {
    agents.push(agent)
    return agent
  })
}

function newDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'docklet-mesh-agent-'))
  dirs.push(dir)
  return dir
}

afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop()
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

describe('MeshAgent', () => {
  it('creates a root-only key, brings the interface to the state and saves what it applied', async () => {
    const fake = new FakeHost()
    const dataDir = newDataDir()
    const state = clusterState()
    const agent = await start(fake, state, dataDir)
    expect(agent.memberInfo()).toEqual({ meshPublicKey: SELF_KEY, meshEndpoint: '10.0.0.2:51820' })
    expect(statSync(meshPaths(dataDir).privateKey).mode & 0o777).toBe(0o600)
    const view = await waitFor(() => agent.view() ?? undefined, 'the mesh view', WAIT_MS)
    expect(view).toEqual({
      interfaceName: 'dkmesh0',
      localMeshIp: '10.210.0.2',
      mtu: 1420,
      hostMeshIps: { a: '10.210.0.1', self: '10.210.0.2', c: '10.210.0.3' },
    })
    expect(fake.peers()).toEqual([KEY_A, KEY_C].sort())
    expect(fake.links.get('dkmesh0')).toMatchObject({ up: true, addresses: ['10.210.0.2/16'], mtu: 1420 })
    const saved = JSON.parse(readFileSync(meshPaths(dataDir).stateFile, 'utf8')) as {
      desired: { peers: unknown[] }
    }
    expect(saved.desired.peers).toHaveLength(2)
  })

  it('removes a removed member’s peer and tells its listeners', async () => {
    const fake = new FakeHost()
    const state = clusterState()
    const agent = await start(fake, state, newDataDir())
    await waitFor(() => agent.view() ?? undefined, 'the mesh view', WAIT_MS)
    let changes = 0
    agent.onChange(() => changes++)
    state.apply(encodeCommand({ type: 'member.remove', at: 9, id: 'c' }))
    await waitFor(() => fake.peers().length === 1, 'the removed peer to go', WAIT_MS)
    expect(fake.peers()).toEqual([KEY_A])
    expect(fake.commands).toContain(`wg set dkmesh0 peer ${KEY_C} remove`)
    expect(agent.view()?.hostMeshIps).toEqual({ a: '10.210.0.1', self: '10.210.0.2' })
    expect(changes).toBe(1)
  })

  it('restores the saved configuration at start, before the state lists anything', async () => {
    const dataDir = newDataDir()
    const first = await start(new FakeHost(), clusterState(), dataDir)
    await waitFor(() => first.view() ?? undefined, 'the first mesh view', WAIT_MS)
    await first.stop()
    // A fresh host (the interface is gone, as after a reboot) and an empty state (no leader yet).
    const fake = new FakeHost()
    const agent = await start(fake, new ClusterState(), dataDir)
    expect(fake.peers()).toEqual([KEY_A, KEY_C].sort())
    expect(agent.view()?.hostMeshIps).toEqual({ a: '10.210.0.1', self: '10.210.0.2', c: '10.210.0.3' })
  })

  it('retries a failing step with back-off until the interface converges', async () => {
    const fake = new FakeHost()
    fake.failNext = { file: 'wireguard-go', count: 3 }
    const agent = await start(fake, clusterState(), newDataDir())
    await waitFor(() => agent.view() ?? undefined, 'the mesh view after retries', WAIT_MS)
    expect(fake.commands.filter((line) => line === 'wireguard-go dkmesh0')).toHaveLength(4)
    expect(fake.peers()).toEqual([KEY_A, KEY_C].sort())
  })

  it('deletes the interface and the saved configuration of a host that left', async () => {
    const fake = new FakeHost()
    const dataDir = newDataDir()
    const agent = await start(fake, clusterState(), dataDir)
    await waitFor(() => agent.view() ?? undefined, 'the mesh view', WAIT_MS)
    await agent.removeInterface()
    expect(fake.links.has('dkmesh0')).toBe(false)
    expect(existsSync(meshPaths(dataDir).stateFile)).toBe(false)
    expect(agent.view()).toBeNull()
  })
})
