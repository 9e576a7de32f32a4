// A Jupyter workspace in a real browser against real nodes on simulated
// hosts (root): three hosts (network + mount namespaces on one LAN, see
// test/support/netns-hosts.ts) run real docklet nodes with real LXC and the
// WireGuard mesh, each serving its portal on its LAN address. The Debian
// image (Python and Jupyter) comes from the test cache
// (test/support/debian-image-cache.ts; built first under CI or with
// DOCKLET_TEST_DEBIAN_IMAGE=1, else the file is skipped saying why), is
// written as a tar and added on host A with `docklet image import`. Host A
// is drained, so alice's vnodes land on B and C, which fetch the image (about
// 400 MB) from A over libp2p; the browser talks only to A, which runs none of
// them: every workspace request crosses the mesh.
//
// The browser is Debian's chromium (playwright-core, headless) started
// inside the harness's "outside" namespace, on the LAN like a user's
// machine: playwright launches a two-line wrapper that execs chromium under
// `nsenter --net`, keeping the DevTools pipe, so nothing is added to the
// root namespace's network. Host names resolve to nothing; only 127.0.0.1
// and the hosts' LAN addresses are reachable, and every request to anything
// but host A's portal is aborted and fails the last test.
//
// One story, step by step: alice logs in on A; creates a vcluster of two
// Debian vnodes (placed on B and C); opens the workspace through A in a new
// tab; creates a notebook and runs a cell that prints `hostname` and the
// exit code of `ping -c 1 host-1` (host-0 and 0: vnode 0 reaches vnode 1 on
// the other host over the vcluster's network); scales out; saves vnode 0 as
// an image; stops and deletes the vcluster. Each page is saved as a
// screenshot under test-artifacts/browser/workspace-*.png. afterAll stops
// what is left, tears the hosts down and checks nothing remains.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Browser, chromium, type Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import {
  browserVerdict,
  chromiumPath,
  ensureUiBuilt,
  type GuardedContext,
  guardedContext,
  screenshot,
} from '../support/browser.ts'
import {
  DEBIAN_BUILD_TIMEOUT_MS,
  type DebianImage,
  debianImageVerdict,
  ensureDebianImage,
  writeDebianImageTar,
} from '../support/debian-image-cache.ts'
import { DOCKLET_BIN, NetnsCluster } from '../support/netns-cluster.ts'
import { missingPrerequisite } from '../support/netns-hosts.ts'
import { waitFor } from '../support/process-cluster.ts'

const HOSTS = 3
const USER = 'alice'
const PASSWORD = 'alice-password-1'
const VCLUSTER = 'ws'
const SETUP_TIMEOUT_MS = 10 * 60_000
/** Placing two Debian vnodes includes copying the image (about 400 MB) from A to B and C. */
const VNODES_TIMEOUT_MS = 6 * 60_000
const STEP_TIMEOUT_MS = 3 * 60_000
const IMPORT_TIMEOUT_MS = 10 * 60_000
/** The cell of the story: vnode 0's name, and whether it reaches vnode 1 on the other host. */
const CELL =
  "import subprocess; print(subprocess.run(['hostname'],capture_output=True,text=True).stdout); " +
  "print(subprocess.run(['ping','-c','1','host-1'],capture_output=True,text=True).returncode)"

const missing = missingPrerequisite([
  'ip',
  'nft',
  'nsenter',
  'unshare',
  'bridge',
  'wg',
  'wireguard-go',
  'lxc-start',
  'lxc-info',
  'tar',
])
const chromiumVerdict = browserVerdict()
if (missing !== null && process.env.CI === 'true') {
  describe('workspace browser test prerequisites', () => {
    it('are present in CI', () => {
      throw new Error(`The workspace browser test cannot run: ${missing}.`)
    })
  })
}
const image = missing === null && !chromiumVerdict.skip ? debianImageVerdict() : null
const skip = missing !== null || chromiumVerdict.skip || image?.action === 'skip'

interface VclusterView {
  id: string
  vnodes: Array<{ index: number; host: string | null; observed: string; lastError: string }>
}

describe.skipIf(skip)(
  `a Jupyter workspace in a browser, through a portal on ${HOSTS} simulated hosts`,
  () => {
    const runner = new ExecaCommandRunner()
    let cluster: NetnsCluster | undefined
    const c = (): NetnsCluster => cluster!
    let workDir = ''
    let debian: DebianImage
    let chromiumBrowser: Browser | undefined
    let guarded: GuardedContext
    let portalPage: Page
    let workspace: Page
    let notebook: Page
    let origin = ''
    let hostB = ''
    let hostC = ''

    const heading = (page: Page, name: string | RegExp) => page.getByRole('heading', { level: 1, name })
    const nav = (page: Page, name: string) =>
      page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true })
    const vnodeRows = () =>
      portalPage.getByRole('table', { name: `The vnodes of ${VCLUSTER}` }).getByRole('row')

    /** Runs the docklet CLI inside a host (the harness's cli() has a 30 s limit; an import takes longer). */
    async function cli<T>(host: number, args: string[], timeoutMs = STEP_TIMEOUT_MS): Promise<T> {
      const result = await c().harness.run(
        host,
        process.execPath,
        [DOCKLET_BIN, ...args, '--data-dir', c().dataDir(host), '--json'],
        { timeoutMs, okExitCodes: Array.from({ length: 256 }, (_, code) => code) },
      )
      if (result.exitCode !== 0)
        throw new Error(
          `\`docklet ${args.join(' ')}\` on host ${host} exited ${result.exitCode}: ${result.stdout}`,
        )
      return JSON.parse(result.stdout.trim().split('\n').at(-1) ?? 'null') as T
    }

    const show = () => cli<VclusterView>(0, ['vcluster', 'show', VCLUSTER, '--user', USER])
    const outputs = () =>
      c()
        .nodes.map((node) => c().output(node.host))
        .join('\n')

    async function containersOn(host: number): Promise<string[]> {
      const result = await c().harness.run(host, 'lxc-ls', ['-P', `${c().dataDir(host)}/lxc`, '-1'], {
        okExitCodes: [0, 1],
      })
      return result.stdout.split('\n').filter((line) => line.trim() !== '')
    }

    /** Chromium in the outside namespace: a wrapper playwright launches, which execs it under nsenter. */
    async function launchOutside(): Promise<Browser> {
      const wrapper = join(workDir, 'chromium-outside')
      await writeFile(
        wrapper,
        `#!/bin/sh\nexec ${c().harness.outside.enter.join(' ')} ${chromiumPath} "$@"\n`,
        { mode: 0o755 },
      )
      const reachable = ['127.0.0.1', ...c().harness.hosts.map((host) => host.lanAddress)]
      return chromium.launch({
        executablePath: wrapper,
        headless: true,
        args: [
          `--host-resolver-rules=MAP * ~NOTFOUND, ${reachable.map((address) => `EXCLUDE ${address}`).join(', ')}`,
          '--disable-component-update',
          '--disable-domain-reliability',
          '--no-first-run',
          '--no-default-browser-check',
        ],
      })
    }

    beforeAll(async () => {
      if (chromiumVerdict.failure !== null) throw new Error(chromiumVerdict.failure)
      if (image?.action === 'build')
        console.log(`[workspace] building the Debian image first: ${image.reason}`)
      debian = await ensureDebianImage({ onProgress: (line) => console.log(`[debian image] ${line}`) })
      await ensureUiBuilt()
      workDir = await mkdtemp(join(tmpdir(), 'docklet-workspace-'))
      const tar = join(workDir, 'debian.tar')
      await writeDebianImageTar(debian, tar)
      cluster = await NetnsCluster.create({
        hosts: HOSTS,
        runner,
        config: { runtime: 'lxc', initImages: [] },
        portal: true,
      })
      await c().startAll()
      await waitFor(
        async () =>
          (await cli<Array<{ capacity: unknown }>>(0, ['admin', 'host', 'list'])).every(
            (h) => h.capacity !== null,
          ),
        'every host to report its capacity',
        60_000,
      )
      const imported = await cli<{ id: string; name: string; registered: boolean; hosts: string[] }>(
        0,
        ['image', 'import', tar, '--public', '--description', 'Debian 12 with Python and Jupyter'],
        IMPORT_TIMEOUT_MS,
      )
      expect(imported).toMatchObject({
        id: debian.manifest.hash,
        name: 'debian',
        registered: true,
        hosts: [c().node(0).id],
      })
      await rm(tar, { force: true })
      await cli(0, ['admin', 'user', 'add', USER, '--password', PASSWORD])
      // Host A takes no vnodes: the browser then reaches the workspace only across the mesh.
      await cli(0, ['admin', 'host', 'drain', c().node(0).id])
      hostB = c().node(1).id
      hostC = c().node(2).id
      origin = `http://${c().portalAddress(0)}`
      chromiumBrowser = await launchOutside()
      guarded = await guardedContext(chromiumBrowser, origin)
      guarded.context.setDefaultTimeout(60_000)
      portalPage = await guarded.context.newPage()
    }, DEBIAN_BUILD_TIMEOUT_MS + SETUP_TIMEOUT_MS)

    afterAll(async () => {
      await guarded?.context.close().catch(() => {})
      await chromiumBrowser?.close().catch(() => {})
      if (cluster !== undefined) {
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
      }
      if (workDir !== '') await rm(workDir, { recursive: true, force: true })
    }, SETUP_TIMEOUT_MS)

    afterEach(async (context) => {
      // What the portal showed when a step failed.
      if (context.task.result?.state === 'fail' && portalPage !== undefined)
        await screenshot(
          portalPage,
          `workspace-failed-${context.task.name.slice(0, 40).replace(/\W+/g, '-')}`,
        )
    })

    it(
      "alice logs in on host A's portal",
      async () => {
        await portalPage.goto(`${origin}/`)
        await heading(portalPage, 'Log in to docklet').waitFor()
        await portalPage.getByLabel('User name').fill(USER)
        await portalPage.getByLabel('Password').fill(PASSWORD)
        await screenshot(portalPage, 'workspace-01-login')
        await portalPage.getByRole('button', { name: 'Log in' }).click()
        await heading(portalPage, 'Vclusters').waitFor()
        await portalPage.getByText('You have no vclusters yet.').waitFor()
        await screenshot(portalPage, 'workspace-02-dashboard')
      },
      STEP_TIMEOUT_MS,
    )

    it(
      'creates a vcluster of two Debian vnodes, which run on hosts B and C',
      async () => {
        await portalPage.getByRole('link', { name: 'New vcluster' }).click()
        await heading(portalPage, 'New vcluster').waitFor()
        await portalPage.getByLabel('Name').fill(VCLUSTER)
        await portalPage.getByLabel('Image').selectOption({ label: 'debian (admin, public)' })
        await portalPage.getByLabel('Vnodes', { exact: true }).fill('2')
        await screenshot(portalPage, 'workspace-03-create')
        await portalPage.getByRole('button', { name: 'Create vcluster' }).click()
        await heading(portalPage, new RegExp(`^${VCLUSTER}`)).waitFor()
        let last: VclusterView | undefined
        await waitFor(
          async () => {
            last = await show()
            return last.vnodes.every((vnode) => vnode.observed === 'running')
          },
          'both vnodes to run',
          VNODES_TIMEOUT_MS,
          { intervalMs: 2_000, detail: () => `${JSON.stringify(last)}\n${outputs()}` },
        )
        await heading(portalPage, new RegExp(`^${VCLUSTER} running`)).waitFor()
        const hosts = await vnodeRows()
          .locator('td[data-label="Host"] span[title]')
          .evaluateAll((spans) => spans.map((span) => span.getAttribute('title')))
        expect(hosts.sort()).toEqual([hostB, hostC].sort())
        const state = await show()
        expect(state.vnodes.map((vnode) => vnode.host).sort()).toEqual([hostB, hostC].sort())
        await screenshot(portalPage, 'workspace-04-vcluster-running')
      },
      VNODES_TIMEOUT_MS + STEP_TIMEOUT_MS,
    )

    it(
      'opens the workspace through host A in a new tab and creates a notebook',
      async () => {
        const link = portalPage.getByRole('link', { name: /Open workspace/ })
        expect(await link.getAttribute('href')).toBe(`/go/${USER}/${VCLUSTER}/`)
        const [opened] = await Promise.all([guarded.context.waitForEvent('page'), link.click()])
        workspace = opened
        // Jupyter starts after its vnode does: until it listens, the proxy answers with an error page.
        await waitFor(
          async () => {
            if ((await workspace.locator('#notebook_list').count()) > 0) return true
            await workspace.goto(`${origin}/go/${USER}/${VCLUSTER}/`)
            return (await workspace.locator('#notebook_list').count()) > 0
          },
          "Jupyter's file list in the workspace tab",
          STEP_TIMEOUT_MS / 2,
          { intervalMs: 2_000 },
        )
        expect(new URL(workspace.url()).pathname).toBe(`/go/${USER}/${VCLUSTER}/tree`)
        await screenshot(workspace, 'workspace-05-jupyter-tree')
        await workspace.locator('#new-dropdown-button').click()
        const [created] = await Promise.all([
          guarded.context.waitForEvent('page'),
          workspace.locator('#kernel-python3 a').click(),
        ])
        notebook = created
        await notebook.waitForURL(new RegExp(`/go/${USER}/${VCLUSTER}/notebooks/Untitled\\d*\\.ipynb`))
        // The kernel talks over a WebSocket through the proxy: idle means it is connected and ready.
        await notebook
          .locator('#kernel_indicator_icon.kernel_idle_icon')
          .waitFor({ timeout: STEP_TIMEOUT_MS / 2 })
        await screenshot(notebook, 'workspace-06-notebook')
      },
      STEP_TIMEOUT_MS,
    )

    it(
      'runs a cell on vnode 0 that prints its hostname and reaches vnode 1 on the other host with ping',
      async () => {
        await notebook.locator('.cell .CodeMirror').first().click()
        // Inserted as text: typed brackets and quotes would get CodeMirror's automatic closing ones.
        await notebook.keyboard.insertText(CELL)
        await notebook.keyboard.press('Shift+Enter')
        const output = notebook.locator('.cell .output_area .output_text').first()
        await output.waitFor({ timeout: 60_000 })
        const lines = async () =>
          ((await output.textContent()) ?? '')
            .split('\n')
            .map((line) => line.trim())
            .filter((line) => line !== '')
        await waitFor(async () => (await lines()).length >= 2, 'the cell to print both lines', 60_000, {
          intervalMs: 500,
        })
        expect(await lines()).toEqual(['host-0', '0'])
        await screenshot(notebook, 'workspace-07-cell-output')
        await notebook.close()
        await workspace.close()
      },
      STEP_TIMEOUT_MS,
    )

    it(
      'scales out by one vnode, which also lands on B or C',
      async () => {
        await portalPage.bringToFront()
        await portalPage.getByLabel('Vnodes to add').fill('1')
        await portalPage.getByRole('button', { name: 'Scale out' }).click()
        await portalPage.getByText('Added 1 vnode').waitFor()
        await waitFor(
          async () => (await vnodeRows().getByText('running', { exact: true }).count()) === 3,
          'three running vnodes',
          STEP_TIMEOUT_MS,
          { intervalMs: 500 },
        )
        const state = await show()
        expect(state.vnodes).toHaveLength(3)
        for (const vnode of state.vnodes) expect([hostB, hostC]).toContain(vnode.host)
        await screenshot(portalPage, 'workspace-08-scaled-out')
      },
      STEP_TIMEOUT_MS,
    )

    it(
      'saves vnode 0 as a private image, listed on the images page',
      async () => {
        await portalPage.getByRole('button', { name: 'Save host-0 as an image' }).click()
        const form = portalPage.getByRole('form', { name: 'Save host-0 as an image' })
        await form.getByLabel('Image name').fill('ws-snap')
        await form.getByLabel('Description (optional)').fill('my workspace')
        await form.getByRole('button', { name: 'Save image' }).click()
        // Wait for the answer either way, so a refusal fails with the node's sentence.
        const saved = portalPage.getByText('Saved host-0 as your private image ws-snap.')
        const refused = portalPage.getByRole('alert').filter({ hasText: /\S/ })
        await saved.or(refused).first().waitFor({ timeout: STEP_TIMEOUT_MS })
        expect(await refused.allTextContents()).toEqual([])
        await nav(portalPage, 'Images').click()
        await heading(portalPage, 'Images').waitFor()
        const row = portalPage
          .getByRole('table', { name: 'My images' })
          .getByRole('row', { name: 'image ws-snap' })
        await row.getByText('private', { exact: true }).waitFor()
        expect(await row.getByText('my workspace').isVisible()).toBe(true)
        await screenshot(portalPage, 'workspace-09-images')
      },
      STEP_TIMEOUT_MS + 60_000,
    )

    it(
      'stops the vcluster',
      async () => {
        await nav(portalPage, 'Vclusters').click()
        await portalPage.getByRole('link', { name: VCLUSTER, exact: true }).click()
        await heading(portalPage, new RegExp(`^${VCLUSTER} running`)).waitFor()
        await portalPage.getByRole('button', { name: 'Stop', exact: true }).click()
        await portalPage.getByText(`${VCLUSTER} is stopping`).waitFor()
        await heading(portalPage, new RegExp(`^${VCLUSTER} stopped`)).waitFor()
        // The heading follows what was asked; each vnode's badge follows its container.
        await waitFor(
          async () => (await vnodeRows().getByText('stopped', { exact: true }).count()) === 3,
          'three stopped vnodes',
          STEP_TIMEOUT_MS - 30_000,
          { intervalMs: 500 },
        )
        expect((await show()).vnodes.map((vnode) => vnode.observed)).toEqual([
          'stopped',
          'stopped',
          'stopped',
        ])
        await screenshot(portalPage, 'workspace-10-stopped')
      },
      STEP_TIMEOUT_MS,
    )

    it(
      'deletes the vcluster, and its containers are gone from every host',
      async () => {
        await portalPage.getByRole('button', { name: `Delete ${VCLUSTER}` }).click()
        await portalPage.getByRole('button', { name: 'Delete for good' }).click()
        await heading(portalPage, 'Vclusters').waitFor()
        await portalPage.getByText(`The vcluster ${VCLUSTER} is being deleted`).waitFor()
        await portalPage.getByText('You have no vclusters yet.').waitFor({ timeout: STEP_TIMEOUT_MS })
        await screenshot(portalPage, 'workspace-11-deleted')
        await waitFor(
          async () => {
            for (let host = 0; host < HOSTS; host++) if ((await containersOn(host)).length > 0) return false
            return true
          },
          'no container on any host',
          60_000,
          { intervalMs: 1_000 },
        )
      },
      STEP_TIMEOUT_MS,
    )

    it('asked for nothing but host A and threw no errors in the portal', () => {
      expect(guarded.foreignRequests).toEqual([])
      expect(guarded.pageErrors).toEqual([])
    })
  },
)
