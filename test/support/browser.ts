// Shared by the browser tests: whether Debian's chromium is here (under CI a
// missing one fails the run, elsewhere the file is skipped with the reason),
// a headless chromium that can reach only 127.0.0.1, a docklet node with a
// portal (fake runtime, no mesh) started through the real CLI, a fresh
// ui/dist, and screenshots under test-artifacts/browser/.

import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { chromium } from 'playwright-core'
import { freePort, type ProcessCluster, repoRoot, runCli } from './process-cluster.ts'

export const chromiumPath = process.env.DOCKLET_CHROMIUM ?? '/usr/bin/chromium'
export const artifactsDir = join(repoRoot, 'test-artifacts', 'browser')
const uiDir = join(repoRoot, 'ui')
const buildTimeoutMs = 120_000
const initAttemptsMax = 3

/** Under CI a missing chromium fails the file; elsewhere it is skipped with the reason. */
export function browserVerdict(): { skip: boolean; failure: string | null; reason: string } {
  if (existsSync(chromiumPath)) return { skip: false, failure: null, reason: '' }
  const reason = `Browser tests need Debian's chromium at ${chromiumPath} (apt-get install -y --no-install-recommends chromium; test/run.sh installs it).`
  if (process.env.CI === 'true') return { skip: false, failure: reason, reason }
  console.warn(`Skipping: ${reason}`)
  return { skip: true, failure: null, reason }
}

/** Headless chromium that resolves no host name: the tests talk to 127.0.0.1 only. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      '--disable-component-update',
      '--disable-domain-reliability',
      '--no-first-run',
      '--no-default-browser-check',
    ],
  })
}

export interface GuardedContext {
  context: BrowserContext
  /** Requests the page tried to make to anywhere but the node (each one aborted). */
  foreignRequests: string[]
  /** Uncaught exceptions in the page. */
  pageErrors: string[]
}

/** A browser context that aborts (and records) every request not to `origin`. */
export async function guardedContext(
  browser: Browser,
  origin: string,
  options: { viewport?: { width: number; height: number } } = {},
): Promise<GuardedContext> {
  const context = await browser.newContext({
    viewport: options.viewport ?? { width: 1280, height: 860 },
    locale: 'en-GB',
    timezoneId: 'UTC',
    serviceWorkers: 'block',
  })
  const foreignRequests: string[] = []
  const pageErrors: string[] = []
  await context.route('**/*', (route) => {
    const url = route.request().url()
    if (url.startsWith(`${origin}/`) || url.startsWith('data:')) return route.continue()
    foreignRequests.push(url)
    return route.abort('blockedbyclient')
  })
  context.on('page', (page) => page.on('pageerror', (error) => pageErrors.push(error.message)))
  return { context, foreignRequests, pageErrors }
}

/** A full-page screenshot under test-artifacts/browser/. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(artifactsDir, { recursive: true })
  await page.screenshot({ path: join(artifactsDir, `${name}.png`), fullPage: true })
}

function newestMtimeMs(dir: string): number {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    newest = Math.max(newest, entry.isDirectory() ? newestMtimeMs(path) : statSync(path).mtimeMs)
  }
  return newest
}

/** Runs `npm run build:ui` (node ui/build.ts) when ui/dist is missing or older than ui/src. */
export async function ensureUiBuilt(): Promise<void> {
  const index = join(uiDir, 'dist', 'index.html')
  const sources = Math.max(
    newestMtimeMs(join(uiDir, 'src')),
    statSync(join(uiDir, 'index.html')).mtimeMs,
    statSync(join(uiDir, 'build.ts')).mtimeMs,
  )
  if (existsSync(index) && statSync(index).mtimeMs >= sources) return
  await new Promise<void>((resolve, reject) => {
    execFile(
      process.execPath,
      [join(uiDir, 'build.ts')],
      { cwd: repoRoot, timeout: buildTimeoutMs, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        if (error === null) resolve()
        else
          reject(new Error(`\`npm run build:ui\` failed: ${stderr.trim() || stdout.trim() || error.message}`))
      },
    )
  })
}

export interface PortalNode {
  dataDir: string
  /** http://127.0.0.1:PORT */
  origin: string
  adminPassword: string
}

/**
 * `docklet init` with a portal on 127.0.0.1 in a data dir of the cluster's
 * temp root (so cluster.cleanup() kills it and removes the dir), then the
 * busybox image built through the CLI.
 */
export async function startPortalNode(cluster: ProcessCluster): Promise<PortalNode> {
  let lastOutput = ''
  for (let attempt = 0; attempt < initAttemptsMax; attempt++) {
    const dataDir = cluster.newDataDir(`portal-${attempt}`)
    const portalPort = await freePort()
    const listenPort = await freePort()
    const init = await runCli([
      'init',
      '--data-dir',
      dataDir,
      '--listen',
      `127.0.0.1:${listenPort}`,
      '--portal',
      `127.0.0.1:${portalPort}`,
      '--detach',
      '--json',
    ])
    lastOutput = `stdout: ${init.stdout.trim()}\nstderr: ${init.stderr.trim()}`
    if (init.code !== 0) {
      // Another program took a port between the probe and the bind: try others.
      if (/EADDRINUSE|in use/i.test(lastOutput)) continue
      throw new Error(`docklet init exited ${init.code}.\n${lastOutput}`)
    }
    const image = await runCli(['image', 'build', 'busybox', '--data-dir', dataDir, '--json'])
    if (image.code !== 0)
      throw new Error(
        `docklet image build busybox exited ${image.code}.\nstdout: ${image.stdout.trim()}\nstderr: ${image.stderr.trim()}`,
      )
    return {
      dataDir,
      origin: `http://127.0.0.1:${portalPort}`,
      adminPassword: readFileSync(join(dataDir, 'admin-password'), 'utf8').trim(),
    }
  }
  throw new Error(`docklet init found no free ports in ${initAttemptsMax} attempts.\n${lastOutput}`)
}
