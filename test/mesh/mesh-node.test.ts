// The WireGuard mesh as the docklet node runs it (root): three simulated
// hosts (netns harness) each run a real node (`docklet init` on host 0,
// `docklet join` on the others) with mesh "wireguard" (wireguard-go here, the
// kernel has no WireGuard module). Checked from inside the hosts with `wg`,
// `ip` and ping: every host gets the two others as peers and reaches them
// over their mesh addresses; a SIGKILLed node's interface keeps carrying
// traffic and its restart changes nothing (same wireguard-go process, no
// duplicate peer, address or member); a host that leaves disappears from the
// others' peers and takes its interface with it; teardown leaves nothing.

import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { globalAddresses, parseIpAddrJson } from '../../net/ip-link-state.ts'
import { parseWgDump, type WireguardState } from '../../net/wireguard-mesh.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { NetnsCluster } from '../support/netns-cluster.ts'
import { missingPrerequisite } from '../support/netns-hosts.ts'
import { waitFor } from '../support/process-cluster.ts'

const HOSTS = 3
const INTERFACE = 'dkmesh0'
const CONVERGE_TIMEOUT_MS = 15_000
const PING_ATTEMPTS_MAX = 5
/** Three node starts; generous because the machine is shared (about 10 s when it is idle). */
const SETUP_TIMEOUT_MS = 120_000

const missing = missingPrerequisite([
  'ip',
  'nft',
  'nsenter',
  'unshare',
  'bridge',
  'wg',
  'wireguard-go',
  'busybox',
])

if (missing !== null && process.env.CI === 'true') {
  describe('mesh node prerequisites', () => {
    it('are present in CI', () => {
      throw new Error(`The multi-host mesh node tests cannot run: ${missing}.`)
    })
  })
}

describe.skipIf(missing !== null)(`docklet nodes on ${HOSTS} simulated hosts keep a WireGuard mesh`, () => {
  let cluster: NetnsCluster | undefined
  const c = (): NetnsCluster => cluster!

  async function wireguard(host: number): Promise<WireguardState | null> {
    const result = await c().harness.run(host, 'wg', ['show', INTERFACE, 'dump'], { okExitCodes: [0, 1] })
    return result.exitCode === 0 ? parseWgDump(result.stdout) : null
  }

  async function meshAddresses(host: number): Promise<string[]> {
    const result = await c().harness.run(host, 'ip', ['-j', 'addr', 'show', 'dev', INTERFACE], {
      okExitCodes: [0, 1],
    })
    const link = result.exitCode === 0 ? parseIpAddrJson(result.stdout)[0] : undefined
    return link === undefined ? [] : globalAddresses(link)
  }

  /** PIDs of wireguard-go processes serving the mesh interface inside a host. */
  async function wireguardGoPids(host: number): Promise<number[]> {
    const netns = c().harness.host(host).netns
    const result = await new ExecaCommandRunner().run('ip', ['netns', 'pids', netns], { timeoutMs: 5_000 })
    return result.stdout
      .split(/\s+/)
      .filter((word) => /^\d+$/.test(word))
      .map(Number)
      .filter((pid) => {
        try {
          const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
          return argv[0]?.endsWith('wireguard-go') === true && argv.includes(INTERFACE)
        } catch {
          return false
        }
      })
  }

  /** Waits until `host` has exactly the peers `expected` (public keys) and one mesh address. */
  async function waitPeers(host: number, expected: string[]): Promise<WireguardState> {
    return waitFor(
      async () => {
        const state = await wireguard(host)
        const keys = state?.peers.map((peer) => peer.publicKey).sort() ?? []
        const addresses = await meshAddresses(host)
        if (JSON.stringify(keys) !== JSON.stringify([...expected].sort()) || addresses.length !== 1)
          return undefined
        return state ?? undefined
      },
      `host ${host} to have exactly the peers ${expected.join(', ')} and one mesh address`,
      CONVERGE_TIMEOUT_MS,
      { intervalMs: 200, detail: () => c().output(host) },
    )
  }

  async function reaches(from: number, address: string): Promise<boolean> {
    for (let attempt = 0; attempt < PING_ATTEMPTS_MAX; attempt++) {
      if (await c().harness.ping(from, address, 1)) return true
    }
    return false
  }

  const publicKeys: string[] = []
  const meshIps: string[] = []

  beforeAll(async () => {
    cluster = await NetnsCluster.create({ hosts: HOSTS, runner: new ExecaCommandRunner() })
    await c().startAll()
  }, SETUP_TIMEOUT_MS)

  afterAll(async () => {
    await cluster?.teardown()
  })

  it('gives every host the two others as WireGuard peers, and the hosts ping each other over mesh addresses', async () => {
    // Each node creates its key at start; the interface reports it once the node has applied the mesh.
    for (let host = 0; host < HOSTS; host++) {
      const state = await waitFor(
        async () => (await wireguard(host))?.publicKey ?? undefined,
        `host ${host} to bring up ${INTERFACE}`,
        CONVERGE_TIMEOUT_MS,
        { intervalMs: 200, detail: () => c().output(host) },
      )
      publicKeys[host] = state
    }
    expect(new Set(publicKeys).size).toBe(HOSTS)
    for (let host = 0; host < HOSTS; host++) {
      const state = await waitPeers(
        host,
        publicKeys.filter((_, other) => other !== host),
      )
      const address = (await meshAddresses(host))[0]!
      expect(address).toMatch(/^10\.210\.\d+\.\d+\/16$/)
      meshIps[host] = address.split('/')[0]!
      for (const peer of state.peers) {
        const other = publicKeys.indexOf(peer.publicKey)
        expect(peer.endpoint).toBe(`${c().harness.host(other).lanAddress}:51820`)
      }
    }
    expect(new Set(meshIps).size).toBe(HOSTS)
    for (let from = 0; from < HOSTS; from++) {
      for (let to = 0; to < HOSTS; to++) {
        if (from !== to) expect(await reaches(from, meshIps[to]!), `host ${from} → ${meshIps[to]}`).toBe(true)
      }
    }
  })

  it('keeps a SIGKILLed node’s mesh working, and its restart converges with nothing duplicated', async () => {
    const daemonsBefore = await wireguardGoPids(1)
    expect(daemonsBefore).toHaveLength(1)
    await c().kill(1)
    expect(await reaches(0, meshIps[1]!)).toBe(true)
    expect(await reaches(1, meshIps[2]!)).toBe(true)

    await c().restart(1)
    const status = await waitFor(
      async () => {
        const answer = await c().status(1)
        return answer.leader !== null && answer.applied_index >= answer.commit_index ? answer : undefined
      },
      'the restarted node to follow a leader',
      CONVERGE_TIMEOUT_MS,
      { detail: () => c().output(1) },
    )
    expect(status.members).toHaveLength(HOSTS)
    await waitPeers(1, [publicKeys[0]!, publicKeys[2]!])
    // The same daemon still serves the interface: the restart re-applied nothing.
    expect(await wireguardGoPids(1)).toEqual(daemonsBefore)
    expect(await meshAddresses(1)).toEqual([`${meshIps[1]}/16`])
    for (const host of [0, 2])
      await waitPeers(
        host,
        publicKeys.filter((_, other) => other !== host),
      )
    expect(await reaches(1, meshIps[0]!)).toBe(true)
  })

  it('removes a host that leaves from every other host’s peers, and its interface with it', async () => {
    await c().leave(2)
    await waitPeers(0, [publicKeys[1]!])
    await waitPeers(1, [publicKeys[0]!])
    expect(await wireguard(2)).toBeNull()
    expect(await wireguardGoPids(2)).toEqual([])
    expect(await reaches(0, meshIps[1]!)).toBe(true)
  })

  it('tears down every namespace, process, mount and directory it made', async () => {
    await c().teardown()
    expect(c().harness.leftovers()).toEqual([])
  })
})
