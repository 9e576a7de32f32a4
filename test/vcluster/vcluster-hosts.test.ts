// Vclusters end to end, as a user drives them (root): three simulated hosts
// (network + mount namespaces on one LAN, an "outside" namespace for the
// internet) each run a real docklet node with real LXC containers and the
// real WireGuard mesh; everything goes through the `docklet` CLI inside a
// host. Checked from inside the vnodes (`docklet vnode exec`, or the
// vnode's network namespace for TCP): a vcluster spread over the three hosts
// whose vnodes reach each other by IP and by name, TCP across hosts with
// several MB (no MTU black hole), a second user's vcluster that can reach
// neither the first one nor the hosts' control port, NATed egress, a SIGKILLed
// node whose vnodes keep talking and which converges on restart without
// duplicates, saving a vnode as an image and starting a vcluster from it,
// draining a host with evacuation (vnodes move, same IPs), and deletion
// leaving no container, mount or cgroup behind.

import { existsSync, readdirSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { DOCKLET_BIN, NetnsCluster } from '../support/netns-cluster.ts'
import {
  missingPrerequisite,
  NamespacedRunner,
  type NetnsTarget,
  OUTSIDE_INTERNET_ADDRESS,
  startTcpSink,
  tcpSend,
} from '../support/netns-hosts.ts'
import { waitFor } from '../support/process-cluster.ts'

const HOSTS = 3
const SETUP_TIMEOUT_MS = 180_000
const STEP_TIMEOUT_MS = 120_000
const CONTROL_PORT = 7946

const missing = missingPrerequisite([
  'ip',
  'nft',
  'nsenter',
  'unshare',
  'bridge',
  'wg',
  'wireguard-go',
  'busybox',
  'lxc-start',
  'lxc-info',
])

if (missing !== null && process.env.CI === 'true') {
  describe('vcluster multi-host prerequisites', () => {
    it('are present in CI', () => {
      throw new Error(`The multi-host vcluster tests cannot run: ${missing}.`)
    })
  })
}

interface VnodeView {
  index: number
  hostname: string
  host: string | null
  ip: string
  observed: string
  movingTo?: string | null
}

interface VclusterView {
  id: string
  name: string
  owner: string
  subnet: string
  gateway: string
  status: string
  vnodes: VnodeView[]
}

describe.skipIf(missing !== null)(`vclusters on ${HOSTS} simulated hosts with real nodes and LXC`, () => {
  let cluster: NetnsCluster | undefined
  const c = (): NetnsCluster => cluster!
  const runner = new ExecaCommandRunner()
  let clusterId = ''
  let web: VclusterView

  async function show(name: string, user: string): Promise<VclusterView> {
    return c().cli<VclusterView>(0, ['vcluster', 'show', name, '--user', user])
  }

  /** Runs a command in a vnode through the CLI on `via`; returns exit code and output (never throws on exit codes). */
  async function vexec(
    via: number,
    vcluster: string,
    index: number,
    user: string,
    argv: string[],
  ): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const result = await c().harness.run(
      via,
      process.execPath,
      [
        DOCKLET_BIN,
        'vnode',
        'exec',
        vcluster,
        String(index),
        '--user',
        user,
        '--json',
        '--data-dir',
        c().dataDir(via),
        '--',
        ...argv,
      ],
      { okExitCodes: Array.from({ length: 256 }, (_, code) => code), timeoutMs: 60_000 },
    )
    const last = result.stdout.trim().split('\n').at(-1) ?? ''
    const parsed = JSON.parse(last === '' ? '{}' : last) as {
      exitCode?: number
      stdout?: string
      stderr?: string
      error?: { message: string }
    }
    if (parsed.error !== undefined)
      throw new Error(`vnode exec on host ${via} failed: ${parsed.error.message}`)
    return { exitCode: parsed.exitCode ?? -1, stdout: parsed.stdout ?? '', stderr: parsed.stderr ?? '' }
  }

  function hostIndexOf(memberId: string): number {
    const index = c().nodes.findIndex((node) => node.id === memberId)
    if (index < 0) throw new Error(`No simulated host runs member ${memberId}.`)
    return index
  }

  function containerName(vcluster: VclusterView, index: number): string {
    return `dk-${clusterId.slice(0, 8)}-${vcluster.id}-${index}`
  }

  /** The vnode's network namespace as a harness target (TCP tests run node there, outside the container's files). */
  async function vnodeTarget(vcluster: VclusterView, index: number): Promise<NetnsTarget> {
    const vnode = vcluster.vnodes.find((v) => v.index === index)!
    const host = c().harness.host(hostIndexOf(vnode.host!))
    const info = await c().harness.run(host, 'lxc-info', [
      '-P',
      `${c().dataDir(host.index)}/lxc`,
      '-n',
      containerName(vcluster, index),
      '-p',
      '-H',
    ])
    const pid = info.stdout.trim()
    const enter = [...host.enter, 'nsenter', `--net=/proc/${pid}/ns/net`, '--']
    return {
      name: `${host.name}-vnode-${index}`,
      netns: host.netns,
      runner: new NamespacedRunner(runner, enter),
      enter,
    }
  }

  async function containersOn(host: number): Promise<string[]> {
    const result = await c().harness.run(host, 'lxc-ls', ['-P', `${c().dataDir(host)}/lxc`, '-1'], {
      okExitCodes: [0, 1],
    })
    return result.stdout.split('\n').filter((line) => line.trim() !== '')
  }

  async function waitRunning(name: string, user: string, count: number): Promise<VclusterView> {
    let last: VclusterView | null = null
    await waitFor(
      async () => {
        last = await show(name, user)
        return (
          last.vnodes.length === count && last.vnodes.every((v) => v.observed === 'running' && !v.movingTo)
        )
      },
      `${name} to run ${count} vnodes`,
      STEP_TIMEOUT_MS,
    )
    return last!
  }

  beforeAll(async () => {
    cluster = await NetnsCluster.create({
      hosts: HOSTS,
      runner,
      config: { runtime: 'lxc', initImages: ['busybox'] },
    })
    try {
      await c().startAll()
      clusterId = (await c().status(0)).cluster_id
      await waitFor(
        async () => {
          const images = await c().cli<Array<{ name: string }>>(0, ['image', 'list'])
          const hosts = await c().cli<Array<{ capacity: unknown }>>(0, ['admin', 'host', 'list'])
          return images.some((i) => i.name === 'busybox') && hosts.every((h) => h.capacity !== null)
        },
        'the busybox image and every host capacity',
        SETUP_TIMEOUT_MS / 2,
      )
      await c().cli(0, ['admin', 'user', 'add', 'alice', '--password', 'alice-password-1'])
      await c().cli(0, ['admin', 'user', 'add', 'bob', '--password', 'bob-password-12'])
    } catch (error) {
      await c()
        .teardown()
        .catch(() => {})
      cluster = undefined
      throw error
    }
  }, SETUP_TIMEOUT_MS)

  afterAll(async () => {
    if (cluster === undefined) return
    // Whatever a failed test left: stop its containers before the namespaces go.
    for (let host = 0; host < HOSTS; host++) {
      for (const name of await containersOn(host).catch(() => [])) {
        await c()
          .harness.run(host, 'lxc-stop', ['-P', `${c().dataDir(host)}/lxc`, '-n', name, '-k'], {
            okExitCodes: [0, 1, 2],
          })
          .catch(() => {})
      }
    }
    await c().teardown()
    expect(c().harness.leftovers()).toEqual([])
  }, SETUP_TIMEOUT_MS)

  it(
    'spreads a vcluster over the hosts; its vnodes reach each other by IP and by name',
    async () => {
      web = await c().cli<VclusterView>(1, [
        'vcluster',
        'create',
        'web',
        '--nodes',
        '3',
        '--image',
        'busybox',
        '--user',
        'alice',
      ])
      expect(web.owner).toBe('alice')
      expect(new Set(web.vnodes.map((v) => v.host)).size).toBe(HOSTS)
      for (const vnode of web.vnodes) {
        const hostname = await vexec(2, 'web', vnode.index, 'alice', ['hostname'])
        expect(hostname.stdout.trim()).toBe(`host-${vnode.index}`)
        for (const other of web.vnodes) {
          if (other.index === vnode.index) continue
          const byIp = await vexec(0, 'web', vnode.index, 'alice', ['ping', '-c', '1', '-W', '3', other.ip])
          expect(byIp.exitCode, `vnode ${vnode.index} → ${other.ip}: ${byIp.stdout}`).toBe(0)
          const byName = await vexec(0, 'web', vnode.index, 'alice', [
            'ping',
            '-c',
            '1',
            '-W',
            '3',
            other.hostname,
          ])
          expect(byName.exitCode, `vnode ${vnode.index} → ${other.hostname}: ${byName.stdout}`).toBe(0)
        }
      }
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'carries several MB of TCP between vnodes on different hosts',
    async () => {
      const receiver = await vnodeTarget(web, 0)
      const sender = await vnodeTarget(web, 1)
      const sink = await startTcpSink(c().harness, receiver, { address: web.vnodes[0]!.ip, port: 5000 })
      const sent = await tcpSend(c().harness, sender, {
        address: web.vnodes[0]!.ip,
        port: 5000,
        bytes: 8 * 1024 * 1024,
      })
      await sink.kill()
      expect(sent).toMatchObject({
        connected: true,
        bytes: 8 * 1024 * 1024,
        remoteAddress: web.vnodes[1]!.ip,
      })
    },
    STEP_TIMEOUT_MS,
  )

  it(
    "keeps another user's vcluster apart, off the hosts' control port, and NATs egress",
    async () => {
      const other = await c().cli<VclusterView>(0, [
        'vcluster',
        'create',
        'other',
        '--image',
        'busybox',
        '--user',
        'bob',
      ])
      expect(other.subnet).not.toBe(web.subnet)
      // bob cannot see alice's vcluster at all.
      await expect(show('web', 'bob')).rejects.toThrow(/ERR_VCLUSTER_NOT_FOUND/)
      const stranger = await vnodeTarget(other, 0)
      const own = await vexec(0, 'other', 0, 'bob', ['ping', '-c', '1', '-W', '3', other.gateway])
      expect(own.exitCode).toBe(0)
      for (const vnode of web.vnodes) expect(await c().harness.ping(stranger, vnode.ip, 1)).toBe(false)
      const host = hostIndexOf(other.vnodes[0]!.host!)
      const control = await tcpSend(c().harness, stranger, {
        address: c().harness.host(host).lanAddress,
        port: CONTROL_PORT,
        bytes: 10,
        connectTimeoutMs: 1_000,
      })
      expect(control.connected).toBe(false)
      const sink = await startTcpSink(c().harness, c().harness.outside, {
        address: OUTSIDE_INTERNET_ADDRESS,
        port: 8000,
      })
      const egress = await tcpSend(c().harness, stranger, {
        address: OUTSIDE_INTERNET_ADDRESS,
        port: 8000,
        bytes: 1000,
      })
      await sink.kill()
      expect(egress).toMatchObject({
        connected: true,
        bytes: 1000,
        remoteAddress: c().harness.host(host).lanAddress,
      })
      await c().cli(0, ['vcluster', 'delete', 'other', '--user', 'bob'])
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'keeps vnodes running and talking while a node is SIGKILLed, and converges on restart without duplicates',
    async () => {
      const victim = hostIndexOf(web.vnodes[1]!.host!)
      const before = await containersOn(victim)
      await c().kill(victim)
      const during = await vexec(0 === victim ? 1 : 0, 'web', 0, 'alice', [
        'ping',
        '-c',
        '1',
        '-W',
        '3',
        web.vnodes[1]!.ip,
      ])
      expect(during.exitCode).toBe(0)
      await c().restart(victim)
      await waitRunning('web', 'alice', 3)
      expect(await containersOn(victim)).toEqual(before)
      const after = await vexec(victim, 'web', 1, 'alice', ['ping', '-c', '1', '-W', '3', 'host-2'])
      expect(after.exitCode).toBe(0)
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'saves a vnode as an image; a vcluster from it has the saved file, also after stop and start',
    async () => {
      const write = await vexec(0, 'web', 2, 'alice', ['sh', '-c', 'echo kept > /root/note'])
      expect(write.exitCode).toBe(0)
      await c().cli(0, ['image', 'save', 'web', '2', 'snap', '--user', 'alice'])
      await c().cli(0, ['vcluster', 'create', 'copy', '--image', 'snap', '--user', 'alice'])
      const read = await vexec(1, 'copy', 0, 'alice', ['cat', '/root/note'])
      expect(read.stdout.trim()).toBe('kept')
      // Stopped, the vnode keeps its files; started again, it runs with them.
      const stopped = await c().cli<VclusterView>(2, ['vcluster', 'stop', 'copy', '--user', 'alice'])
      expect(stopped.vnodes.map((v) => v.observed)).toEqual(['stopped'])
      const started = await c().cli<VclusterView>(2, ['vcluster', 'start', 'copy', '--user', 'alice'])
      expect(started.vnodes.map((v) => v.observed)).toEqual(['running'])
      expect((await vexec(0, 'copy', 0, 'alice', ['cat', '/root/note'])).stdout.trim()).toBe('kept')
      await c().cli(0, ['vcluster', 'delete', 'copy', '--user', 'alice'])
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'drains a host with evacuation: its vnodes move elsewhere with their IPs and keep their files',
    async () => {
      const drained = hostIndexOf(web.vnodes[0]!.host!)
      await vexec(0, 'web', 0, 'alice', ['sh', '-c', 'echo moved-with-me > /root/mark'])
      await c().cli(0, ['admin', 'host', 'drain', c().node(drained).id, '--evacuate'])
      const moved = await waitRunning('web', 'alice', 3)
      const vnode0 = moved.vnodes.find((v) => v.index === 0)!
      expect(vnode0.host).not.toBe(c().node(drained).id)
      expect(vnode0.ip).toBe(web.vnodes[0]!.ip)
      expect((await vexec(0, 'web', 0, 'alice', ['cat', '/root/mark'])).stdout.trim()).toBe('moved-with-me')
      const ping = await vexec(0, 'web', 0, 'alice', ['ping', '-c', '1', '-W', '3', 'host-1'])
      expect(ping.exitCode).toBe(0)
      await waitFor(
        async () => (await containersOn(drained)).length === 0,
        'the drained host to let go',
        STEP_TIMEOUT_MS / 2,
      )
      await c().cli(0, ['admin', 'host', 'undrain', c().node(drained).id])
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'deletes the vcluster and leaves no container, mount or cgroup behind',
    async () => {
      await c().cli(0, ['vcluster', 'delete', 'web', '--user', 'alice'])
      for (let host = 0; host < HOSTS; host++) {
        expect(await containersOn(host)).toEqual([])
        const mounts = await c().harness.run(host, 'cat', ['/proc/self/mountinfo'])
        expect(mounts.stdout).not.toContain(`dk-${clusterId.slice(0, 8)}`)
        const bridges = await c().harness.run(host, 'ip', ['-o', 'link', 'show', 'type', 'bridge'])
        await waitFor(
          async () =>
            !(await c().harness.run(host, 'ip', ['-o', 'link', 'show', 'type', 'bridge'])).stdout.includes(
              'dkb',
            ),
          `host ${host} to remove the vcluster bridges (had: ${bridges.stdout})`,
          30_000,
        )
      }
      const cgroups = existsSync('/sys/fs/cgroup/memory')
        ? readdirSync('/sys/fs/cgroup/memory').filter((entry) =>
            entry.includes(`dk-${clusterId.slice(0, 8)}`),
          )
        : []
      expect(cgroups).toEqual([])
    },
    STEP_TIMEOUT_MS,
  )
})
