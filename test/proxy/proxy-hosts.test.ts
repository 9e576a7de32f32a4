// The any-node proxy end to end (root): two simulated hosts (network +
// mount namespaces on one LAN, plus the "outside" namespace where the
// browser sits) run real docklet nodes with real LXC and the real WireGuard
// mesh, each serving its portal on its LAN address. alice's busybox vcluster
// is placed on host 1 and its vnode 0 serves a page with busybox httpd on
// Jupyter's port (8888, under the workspace base URL). From the outside,
// through host 0's portal — a node that does not run the vnode, and that
// cannot reach the vnode's IP itself — alice logs in (POST /api/v1/session)
// and gets the page at /go/alice/<vc>/; bob gets 404 and no session 401.
// Then a port mapping of vnode 0's port 8888 is reached through host 0's
// public port, which forwards over the mesh to host 1.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { DOCKLET_BIN, NetnsCluster } from '../support/netns-cluster.ts'
import { missingPrerequisite, tcpSend } from '../support/netns-hosts.ts'
import { waitFor } from '../support/process-cluster.ts'

const HOSTS = 2
const SETUP_TIMEOUT_MS = 180_000
const STEP_TIMEOUT_MS = 120_000
const PASSWORDS = { alice: 'alice-password-1', bob: 'bob-password-12' } as const
const PAGE = 'hello from vnode 0'

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
  describe('proxy multi-host prerequisites', () => {
    it('are present in CI', () => {
      throw new Error(`The multi-host proxy tests cannot run: ${missing}.`)
    })
  })
}

/**
 * Runs in the outside namespace: logs in as NAME (when given) on BASE, then
 * fetches BASE+PATH with the session cookie; prints {status, body}.
 */
const BROWSER_SCRIPT = `
const [base, path, name, password] = process.argv.slice(1)
let cookie = ''
if (name) {
  const login = await fetch(base + '/api/v1/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name, password }),
  })
  if (login.status !== 200) {
    console.log(JSON.stringify({ status: -login.status, body: await login.text() }))
    process.exit(0)
  }
  cookie = login.headers.getSetCookie().map((line) => line.split(';')[0]).join('; ')
}
const answer = await fetch(base + path, { headers: cookie ? { cookie } : {}, redirect: 'manual' })
console.log(JSON.stringify({ status: answer.status, body: await answer.text() }))
`

interface VclusterView {
  id: string
  name: string
  vnodes: Array<{ index: number; host: string | null; ip: string; observed: string }>
}

describe.skipIf(missing !== null)(`the any-node proxy on ${HOSTS} simulated hosts with real nodes`, () => {
  let cluster: NetnsCluster | undefined
  const c = (): NetnsCluster => cluster!
  const runner = new ExecaCommandRunner()
  let clusterId = ''
  let vcluster: VclusterView

  /** A browser on the LAN: fetches `path` from `base`, logged in as `user` when given. */
  async function browse(
    base: string,
    path: string,
    user?: keyof typeof PASSWORDS,
  ): Promise<{ status: number; body: string }> {
    const args = ['--input-type=module', '-e', BROWSER_SCRIPT, base, path]
    if (user !== undefined) args.push(user, PASSWORDS[user])
    const result = await c().harness.run(c().harness.outside, process.execPath, args, { timeoutMs: 30_000 })
    return JSON.parse(result.stdout.trim().split('\n').at(-1) ?? '{}') as { status: number; body: string }
  }

  async function containersOn(host: number): Promise<string[]> {
    const result = await c().harness.run(host, 'lxc-ls', ['-P', `${c().dataDir(host)}/lxc`, '-1'], {
      okExitCodes: [0, 1],
    })
    return result.stdout.split('\n').filter((line) => line.trim() !== '')
  }

  beforeAll(async () => {
    cluster = await NetnsCluster.create({
      hosts: HOSTS,
      runner,
      config: { runtime: 'lxc', initImages: ['busybox'] },
      portal: true,
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
      for (const [name, password] of Object.entries(PASSWORDS))
        await c().cli(0, ['admin', 'user', 'add', name, '--password', password])
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
    "serves the owner a workspace on another host through this host's portal, and nobody else",
    async () => {
      // Only host 1 takes the vcluster: the browser then goes through host 0, which does not run it.
      const host0 = c().node(0).id
      await c().cli(0, ['admin', 'host', 'drain', host0])
      vcluster = await c().cli<VclusterView>(0, [
        'vcluster',
        'create',
        'ws',
        '--image',
        'busybox',
        '--user',
        'alice',
      ])
      await c().cli(0, ['admin', 'host', 'undrain', host0])
      expect(vcluster.vnodes[0]!.host).toBe(c().node(1).id)
      await waitFor(
        async () =>
          (await c().cli<VclusterView>(0, ['vcluster', 'show', 'ws', '--user', 'alice'])).vnodes[0]
            ?.observed === 'running',
        'vnode 0 of alice/ws to run',
        STEP_TIMEOUT_MS / 2,
      )
      // busybox httpd stands in for Jupyter: same port, serving under the workspace base URL.
      const serve = await c().harness.run(
        1,
        process.execPath,
        [
          DOCKLET_BIN,
          'vnode',
          'exec',
          'ws',
          '0',
          '--user',
          'alice',
          '--json',
          '--data-dir',
          c().dataDir(1),
          '--',
          'sh',
          '-c',
          `mkdir -p /www/go/alice/ws && echo '${PAGE}' > /www/go/alice/ws/index.html && ` +
            'busybox httpd -p 8888 -h /www </dev/null >/dev/null 2>&1',
        ],
        { timeoutMs: 60_000 },
      )
      expect(JSON.parse(serve.stdout.trim().split('\n').at(-1)!)).toMatchObject({ exitCode: 0 })
      // Host 0 cannot reach the vnode's IP itself: only the hop over the mesh gets there.
      const direct = await tcpSend(c().harness, 0, {
        address: vcluster.vnodes[0]!.ip,
        port: 8888,
        bytes: 10,
        connectTimeoutMs: 1_000,
      })
      expect(direct.connected).toBe(false)

      const portal0 = `http://${c().portalAddress(0)}`
      const page = await waitFor(
        async () => {
          const answer = await browse(portal0, '/go/alice/ws/', 'alice')
          return answer.status === 200 ? answer : undefined
        },
        "alice's workspace through host 0's portal",
        30_000,
      )
      expect(page.body.trim()).toBe(PAGE)
      const bob = await browse(portal0, '/go/alice/ws/', 'bob')
      expect(bob.status).toBe(404)
      expect(bob.body).toContain('ERR_WORKSPACE_NOT_FOUND')
      const anonymous = await browse(portal0, '/go/alice/ws/')
      expect(anonymous.status).toBe(401)
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'reaches a port mapping through a node that does not run the vnode',
    async () => {
      const mapping = await c().control<{ publicPort: number }>(0, {
        method: 'POST',
        path: '/api/v1/vclusters/ws/ports',
        headers: { 'x-docklet-user': 'alice' },
        body: { index: 0, port: 8888 },
      })
      const base = `http://${c().harness.host(0).lanAddress}:${mapping.publicPort}`
      const answer = await waitFor(
        async () => {
          const got = await browse(base, '/go/alice/ws/').catch(() => undefined)
          return got?.status === 200 ? got : undefined
        },
        `public port ${mapping.publicPort} on host 0`,
        30_000,
      )
      expect(answer.body.trim()).toBe(PAGE)
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'deletes the vcluster and leaves no container behind',
    async () => {
      await c().cli(0, ['vcluster', 'delete', 'ws', '--user', 'alice'])
      for (let host = 0; host < HOSTS; host++) expect(await containersOn(host)).toEqual([])
      expect(clusterId).not.toBe('')
    },
    STEP_TIMEOUT_MS,
  )
})
