// Real multi-host test of the mesh (root): three simulated hosts from the
// netns harness converge a real WireGuard mesh (wireguard-go here, kernel
// WireGuard where the host has it) with applyMesh, reach each other's mesh
// IPs, move several MB without an MTU black hole, drop a removed peer, and
// come back from a killed wireguard-go through restoreMesh. Then one
// vcluster's VXLAN overlay spans the three hosts with netns "vnodes": they
// reach each other across hosts, a second vcluster cannot reach them, egress
// is NATed to the host's LAN address, control ports are closed to vnodes,
// and removal plus teardown leave nothing behind.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { CommandRunner } from '../../net/command-runner.ts'
import { parseIpAddrJson } from '../../net/ip-link-state.ts'
import {
  applyOverlay,
  gatewayMac,
  type OverlayDesired,
  overlayMtu,
  overlayNames,
  removeOverlay,
} from '../../net/vxlan-overlay.ts'
import {
  applyMesh,
  ensureMeshKey,
  type MeshDesired,
  meshMtuFromUnderlay,
  restoreMesh,
} from '../../net/wireguard-mesh.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import {
  missingPrerequisite,
  NetnsHosts,
  OUTSIDE_INTERNET_ADDRESS,
  startTcpSink,
  tcpSend,
  type Vnode,
} from '../support/netns-hosts.ts'

const HOSTS = 3
const WG_INTERFACE = 'dkwg0'
const WG_PORT = 51820
const CONTROL_PORT = 7946
const TRANSFER_BYTES = 8 * 1024 * 1024
const REACH_ATTEMPTS_MAX = 10

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
const meshIp = (index: number): string => `10.99.0.${index + 1}`

if (missing !== null && process.env.CI === 'true') {
  describe('mesh prerequisites', () => {
    it('are present in CI', () => {
      throw new Error(`The multi-host mesh tests cannot run: ${missing}.`)
    })
  })
}

describe.skipIf(missing !== null)(`the WireGuard mesh and VXLAN overlay across ${HOSTS} hosts`, () => {
  let harness: NetnsHosts | undefined
  const publicKeys: string[] = []
  let mtu = 0

  const h = (): NetnsHosts => harness!
  const runner = (index: number): CommandRunner => h().runnerFor(index)
  const stateFile = (index: number): string => join(h().host(index).dataDir, 'mesh.json')

  function meshDesired(index: number, members: number[]): MeshDesired {
    return {
      interfaceName: WG_INTERFACE,
      privateKeyPath: join(h().host(index).dataDir, 'wg.key'),
      listenPort: WG_PORT,
      address: `${meshIp(index)}/24`,
      mtu,
      peers: members
        .filter((other) => other !== index)
        .map((other) => ({
          publicKey: publicKeys[other]!,
          endpoint: `${h().host(other).lanAddress}:${WG_PORT}`,
          allowedIps: [`${meshIp(other)}/32`],
        })),
    }
  }

  async function eventuallyReaches(
    from: Parameters<NetnsHosts['ping']>[0],
    address: string,
  ): Promise<boolean> {
    for (let attempt = 0; attempt < REACH_ATTEMPTS_MAX; attempt++) {
      if (await h().ping(from, address, 1)) return true
    }
    return false
  }

  beforeAll(async () => {
    harness = await NetnsHosts.create({ hosts: HOSTS, runner: new ExecaCommandRunner() })
    const lan = parseIpAddrJson((await h().run(0, 'ip', ['-j', 'addr', 'show', 'dev', 'lan0'])).stdout)[0]!
    mtu = meshMtuFromUnderlay(lan.mtu)
    for (let index = 0; index < HOSTS; index++) {
      publicKeys.push((await ensureMeshKey(runner(index), join(h().host(index).dataDir, 'wg.key'))).publicKey)
    }
  })

  afterAll(async () => {
    await harness?.teardown()
  })

  const all = [0, 1, 2]

  it('converges every host and a second apply plans nothing', async () => {
    for (const index of all) {
      const result = await applyMesh(runner(index), meshDesired(index, all), { stateFile: stateFile(index) })
      const probe = await h().run(index, 'ip', ['link', 'add', 'dkwgkprobe', 'type', 'wireguard'], {
        okExitCodes: [0, 1, 2],
      })
      if (probe.exitCode === 0) await h().run(index, 'ip', ['link', 'del', 'dkwgkprobe'])
      expect(result.implementation).toBe(probe.exitCode === 0 ? 'kernel' : 'userspace')
      expect(result.commands.length).toBeGreaterThan(0)
    }
    for (const index of all) {
      expect((await applyMesh(runner(index), meshDesired(index, all))).commands).toEqual([])
    }
    const link = parseIpAddrJson(
      (await h().run(0, 'ip', ['-j', 'addr', 'show', 'dev', WG_INTERFACE])).stdout,
    )[0]!
    expect(link.mtu).toBe(1420)
  })

  it('lets every host ping every other host over its mesh IP', async () => {
    for (const from of all) {
      for (const to of all) {
        if (from !== to)
          expect(await eventuallyReaches(from, meshIp(to)), `host ${from} → ${meshIp(to)}`).toBe(true)
      }
    }
  })

  it('carries a multi-megabyte TCP transfer across the mesh without an MTU black hole', async () => {
    const sink = await startTcpSink(h(), 1, { address: meshIp(1), port: 5001 })
    const sent = await tcpSend(h(), 0, { address: meshIp(1), port: 5001, bytes: TRANSFER_BYTES })
    await sink.kill()
    expect(sent).toMatchObject({ connected: true, bytes: TRANSFER_BYTES, remoteAddress: meshIp(0) })
  })

  it("removes a host's peer from the others when it leaves the desired config", async () => {
    for (const index of [0, 1]) await applyMesh(runner(index), meshDesired(index, [0, 1]))
    for (const index of [0, 1]) {
      const peers = (await h().run(index, 'wg', ['show', WG_INTERFACE, 'peers'])).stdout
      expect(peers).not.toContain(publicKeys[2])
      expect(peers).toContain(publicKeys[index === 0 ? 1 : 0])
    }
    for (const index of [0, 1])
      await applyMesh(runner(index), meshDesired(index, all), { stateFile: stateFile(index) })
    expect(await eventuallyReaches(0, meshIp(2))).toBe(true)
  })

  it('brings a host back from a killed wireguard-go with restoreMesh', async () => {
    const inHost = await wireguardGoPids(h(), 1)
    if (inHost.length === 0) {
      // Kernel WireGuard: there is no daemon to kill, so delete the interface instead.
      await h().run(1, 'ip', ['link', 'del', 'dev', WG_INTERFACE])
    } else {
      for (const pid of inHost) process.kill(pid, 'SIGKILL')
    }
    let gone = false
    for (let attempt = 0; attempt < 50 && !gone; attempt++) {
      gone =
        (await h().run(1, 'ip', ['link', 'show', 'dev', WG_INTERFACE], { okExitCodes: [0, 1] })).exitCode !==
        0
      if (!gone) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    expect(gone).toBe(true)
    const restored = await restoreMesh(runner(1), stateFile(1))
    expect(restored?.commands.length).toBeGreaterThan(0)
    // The peers still hold a session with the killed instance; the restored host
    // speaks first (as a restarting node does), which re-handshakes at once.
    expect(await eventuallyReaches(1, meshIp(0))).toBe(true)
    expect(await eventuallyReaches(1, meshIp(2))).toBe(true)
    expect(await eventuallyReaches(0, meshIp(1))).toBe(true)
    expect(await eventuallyReaches(2, meshIp(1))).toBe(true)
  })

  describe('one vcluster overlay spanning the hosts', () => {
    const vnodes: Vnode[] = []
    let stranger: Vnode | undefined
    const vnodeMac = (vni: number, index: number): string =>
      `02:00:00:${vni === 100 ? '01' : '02'}:00:0${index}`

    function overlayDesired(index: number, vni: number, members: number[]): OverlayDesired {
      const third = vni === 100 ? 1 : 2
      return {
        vni,
        subnet: `10.250.${third}.0/24`,
        gatewayAddress: `10.250.${third}.1/24`,
        meshInterface: WG_INTERFACE,
        localMeshIp: meshIp(index),
        meshMtu: mtu,
        peerMeshIps: members.filter((other) => other !== index).map(meshIp),
        remoteVnodes: members
          .filter((other) => other !== index)
          .map((other) => ({ mac: vnodeMac(vni, other), hostMeshIp: meshIp(other) })),
        egressInterface: 'lan0',
        controlPorts: [CONTROL_PORT],
        hostAddresses: ['10.213.0.0/24', '10.99.0.0/24'],
      }
    }

    it('converges the overlay on every host, idempotently, and attaches a vnode on each', async () => {
      for (const index of all) {
        expect((await applyOverlay(runner(index), overlayDesired(index, 100, all))).length).toBeGreaterThan(0)
        expect(await applyOverlay(runner(index), overlayDesired(index, 100, all))).toEqual([])
        vnodes.push(
          await h().addVnode(index, {
            address: `10.250.1.${10 + index}/24`,
            gateway: '10.250.1.1',
            bridge: overlayNames(100).bridge,
            mtu: overlayMtu(mtu),
            mac: vnodeMac(100, index),
          }),
        )
      }
      await applyOverlay(runner(0), overlayDesired(0, 200, [0]))
      stranger = await h().addVnode(0, {
        address: '10.250.2.10/24',
        gateway: '10.250.2.1',
        bridge: overlayNames(200).bridge,
        mtu: overlayMtu(mtu),
        mac: vnodeMac(200, 0),
      })
    })

    it('lets vnodes ping each other across hosts and their local gateway', async () => {
      for (const from of vnodes) {
        expect(await eventuallyReaches(from, '10.250.1.1')).toBe(true)
        for (const to of vnodes) {
          if (from !== to)
            expect(await eventuallyReaches(from, to.address), `${from.name} → ${to.address}`).toBe(true)
        }
      }
      const neighbors = (await h().run(vnodes[1]!, 'ip', ['neigh', 'show', '10.250.1.1'])).stdout
      expect(neighbors).toContain(gatewayMac(100))
    })

    it('carries a multi-megabyte TCP transfer between vnodes on different hosts', async () => {
      const target = vnodes[2]!
      const sink = await startTcpSink(h(), target, { address: target.address, port: 5002 })
      const sent = await tcpSend(h(), vnodes[0]!, {
        address: target.address,
        port: 5002,
        bytes: TRANSFER_BYTES,
      })
      await sink.kill()
      expect(sent).toMatchObject({
        connected: true,
        bytes: TRANSFER_BYTES,
        remoteAddress: vnodes[0]!.address,
      })
    })

    it("keeps a second vcluster's vnode away from the first one's, even on the same host", async () => {
      expect(await eventuallyReaches(stranger!, '10.250.2.1')).toBe(true)
      expect(await h().ping(stranger!, vnodes[0]!.address, 1)).toBe(false)
      expect(await h().ping(stranger!, vnodes[1]!.address, 1)).toBe(false)
      expect(await h().ping(stranger!, '10.250.1.1', 1)).toBe(false)
      expect(await h().ping(vnodes[0]!, stranger!.address, 1)).toBe(false)
    })

    it("NATs a vnode's egress to the host's LAN address", async () => {
      const sink = await startTcpSink(h(), h().outside, { address: OUTSIDE_INTERNET_ADDRESS, port: 8000 })
      const fromHost0 = await tcpSend(h(), vnodes[0]!, {
        address: OUTSIDE_INTERNET_ADDRESS,
        port: 8000,
        bytes: 1000,
      })
      const fromHost2 = await tcpSend(h(), vnodes[2]!, {
        address: OUTSIDE_INTERNET_ADDRESS,
        port: 8000,
        bytes: 1000,
      })
      await sink.kill()
      expect(fromHost0).toMatchObject({ connected: true, bytes: 1000, remoteAddress: h().host(0).lanAddress })
      expect(fromHost2).toMatchObject({ connected: true, bytes: 1000, remoteAddress: h().host(2).lanAddress })
    })

    it("closes the hosts' control port to vnodes while hosts still reach it", async () => {
      const sink = await startTcpSink(h(), 0, { address: '0.0.0.0', port: CONTROL_PORT })
      const probe = { port: CONTROL_PORT, bytes: 10, connectTimeoutMs: 1000 }
      const fromHost = await tcpSend(h(), 1, { ...probe, address: h().host(0).lanAddress })
      const attempts = await Promise.all([
        tcpSend(h(), vnodes[0]!, { ...probe, address: '10.250.1.1' }),
        tcpSend(h(), vnodes[0]!, { ...probe, address: meshIp(0) }),
        tcpSend(h(), vnodes[0]!, { ...probe, address: h().host(0).lanAddress }),
        tcpSend(h(), vnodes[1]!, { ...probe, address: h().host(0).lanAddress }),
        tcpSend(h(), vnodes[1]!, { ...probe, address: meshIp(0) }),
      ])
      await sink.kill()
      expect(fromHost.connected).toBe(true)
      expect(attempts.map((attempt) => attempt.connected)).toEqual([false, false, false, false, false])
    })

    it('removes everything of both vclusters, then teardown leaves nothing', async () => {
      for (const index of all) await removeOverlay(runner(index), 100)
      await removeOverlay(runner(0), 200)
      for (const index of all) {
        const links = (await h().run(index, 'ip', ['-o', 'link', 'show'])).stdout
        expect(links).not.toMatch(/dk[bx](100|200)/)
        expect((await h().run(index, 'nft', ['list', 'tables'])).stdout).not.toContain('dkv')
      }
      const done = harness!
      harness = undefined
      await done.teardown()
      expect(done.leftovers()).toEqual([])
    })
  })
})

/** PIDs of wireguard-go processes inside a host's network namespace. */
async function wireguardGoPids(harness: NetnsHosts, index: number): Promise<number[]> {
  const result = await new ExecaCommandRunner().run('ip', ['netns', 'pids', harness.host(index).netns], {
    timeoutMs: 5000,
  })
  return result.stdout
    .split(/\s+/)
    .filter((word) => /^\d+$/.test(word))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'wireguard-go'
      } catch {
        return false
      }
    })
}
