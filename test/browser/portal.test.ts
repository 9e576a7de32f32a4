// The portal in a real browser against a real node: headless Debian
// chromium (playwright-core) drives the built app (ui/dist) served by a
// docklet node started with `docklet init` (fake runtime, no mesh: vnodes
// "run" at once) and the busybox image built through the CLI. The steps
// follow one story and share the node: the admin logs in and looks at the
// admin pages, adds a user; the user creates a vcluster, scales it out,
// stops and starts it, maps a port, saves a vnode as an image and shares
// it, checks the layout at 375 px, deletes the vcluster; then
// self-registration with approval. Every page is saved as a screenshot
// under test-artifacts/browser/. The browser can reach only the node:
// anything else it asks for is aborted and fails the last test.

import type { Browser, Locator, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import {
  browserVerdict,
  ensureUiBuilt,
  type GuardedContext,
  guardedContext,
  launchChromium,
  type PortalNode,
  screenshot,
  startPortalNode,
} from '../support/browser.ts'
import { ProcessCluster, waitFor } from '../support/process-cluster.ts'

const verdict = browserVerdict()
const stepTimeoutMs = 30_000
const userName = 'alice'
const userPassword = 'alice-password-1'
const vclusterName = 'lab'

describe.skipIf(verdict.skip)('the portal in a browser', () => {
  let cluster: ProcessCluster
  let node: PortalNode
  let browser: Browser
  let admin: GuardedContext
  let user: GuardedContext
  const contexts: GuardedContext[] = []
  let adminPage: Page
  let userPage: Page

  const open = async (viewport?: { width: number; height: number }) => {
    const guarded = await guardedContext(browser, node.origin, viewport === undefined ? {} : { viewport })
    guarded.context.setDefaultTimeout(stepTimeoutMs)
    contexts.push(guarded)
    return guarded
  }

  const heading = (page: Page, name: string | RegExp) => page.getByRole('heading', { level: 1, name })
  /** A link of the main navigation. */
  const nav = (page: Page, name: string) =>
    page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true })

  /** Waits until `locator` matches exactly `count` elements. */
  const waitForCount = (locator: Locator, count: number, what: string) =>
    waitFor(async () => (await locator.count()) === count, what, stepTimeoutMs, { intervalMs: 200 })

  const logIn = async (page: Page, name: string, password: string) => {
    await page.goto(`${node.origin}/`)
    await heading(page, 'Log in to docklet').waitFor()
    await page.getByLabel('User name').fill(name)
    await page.getByLabel('Password').fill(password)
    await page.getByRole('button', { name: 'Log in' }).click()
    await heading(page, 'Vclusters').waitFor()
  }

  beforeAll(async () => {
    if (verdict.failure !== null) throw new Error(verdict.failure)
    await ensureUiBuilt()
    cluster = new ProcessCluster({ name: 'docklet-ui-' })
    node = await startPortalNode(cluster)
    browser = await launchChromium()
    admin = await open()
    adminPage = await admin.context.newPage()
  }, 180_000)

  afterAll(async () => {
    for (const guarded of contexts) await guarded.context.close().catch(() => {})
    await browser?.close().catch(() => {})
    await cluster?.cleanup()
  }, 60_000)

  test('a logged-out visitor gets the login page, served by the node', async () => {
    const response = await adminPage.goto(`${node.origin}/vclusters/anything`)
    expect(response?.status()).toBe(200)
    expect(response?.headers()['cache-control']).toBe('no-cache')
    await heading(adminPage, 'Log in to docklet').waitFor()
    // The app shows the login form first and then rewrites the address: wait for both.
    await adminPage.waitForURL((url) => url.pathname === '/login')
    // The note depends on the registration setting, which the page fetches after it renders.
    await adminPage.getByText('Accounts are made by an admin of this cluster.').waitFor()
    await screenshot(adminPage, '01-login')
  })

  test('a wrong password is refused on the login form with the node’s sentence', async () => {
    await adminPage.getByLabel('User name').fill('admin')
    await adminPage.getByLabel('Password').fill('not-the-password')
    await adminPage.getByRole('button', { name: 'Log in' }).click()
    await adminPage
      .getByRole('alert')
      .filter({ hasText: 'The user name or the password is wrong.' })
      .waitFor()
    expect(new URL(adminPage.url()).pathname).toBe('/login')
  })

  test('the admin logs in with the password from the data dir and sees the dashboard', async () => {
    await logIn(adminPage, 'admin', node.adminPassword)
    expect(await nav(adminPage, 'Hosts').isVisible()).toBe(true)
    await adminPage.getByText('You have no vclusters yet.').waitFor()
    await screenshot(adminPage, '02-admin-dashboard')
  })

  test('the hosts page shows the one Raft member as an online voter and leader, and its host', async () => {
    await nav(adminPage, 'Hosts').click()
    await heading(adminPage, 'Hosts').waitFor()
    const members = adminPage.getByRole('table', { name: 'Raft members' })
    const member = members.getByRole('row').filter({ hasText: 'voter' })
    await member.waitFor()
    expect(await member.count()).toBe(1)
    expect(await member.getByText('leader', { exact: true }).isVisible()).toBe(true)
    expect(await member.getByText('online', { exact: true }).isVisible()).toBe(true)
    const host = adminPage
      .getByRole('table', { name: 'Hosts' })
      .getByRole('row')
      .filter({ hasText: 'online' })
    await host.waitFor()
    expect(await host.count()).toBe(1)
    await screenshot(adminPage, '03-admin-hosts')
  })

  test('the admin drains the host and undrains it', async () => {
    const hosts = adminPage.getByRole('table', { name: 'Hosts' })
    await hosts.getByRole('button', { name: /^Drain/ }).click()
    await hosts.getByText(/takes no new vnodes; its vnodes stay/).waitFor()
    await hosts.getByText('drained', { exact: true }).waitFor()
    await hosts.getByRole('button', { name: /^Undrain/ }).click()
    await hosts.getByText(/takes new vnodes again/).waitFor()
    await waitForCount(hosts.getByText('drained', { exact: true }), 0, 'the drained badge to go')
  })

  test('the users, groups and settings pages render', async () => {
    await nav(adminPage, 'Users').click()
    await heading(adminPage, 'Users').waitFor()
    await adminPage.getByRole('table', { name: 'Users' }).getByRole('row', { name: 'user admin' }).waitFor()
    await screenshot(adminPage, '04-admin-users')
    await nav(adminPage, 'Groups').click()
    await heading(adminPage, 'Groups').waitFor()
    await adminPage.getByRole('form', { name: 'Quota of user' }).waitFor()
    expect(
      await adminPage.getByRole('form', { name: 'Quota of user' }).getByLabel('Vnodes').inputValue(),
    ).toBe('8')
    await screenshot(adminPage, '05-admin-groups')
    await nav(adminPage, 'Settings').click()
    await heading(adminPage, 'Settings').waitFor()
    expect(await adminPage.getByRole('switch', { name: 'Open self-registration' }).isChecked()).toBe(false)
    expect(await adminPage.getByLabel('First port').inputValue()).toBe('40000')
    await screenshot(adminPage, '06-admin-settings')
  })

  test('the admin adds a user, who appears in the list', async () => {
    await nav(adminPage, 'Users').click()
    await heading(adminPage, 'Users').waitFor()
    await adminPage.getByLabel('User name').fill(userName)
    await adminPage.getByLabel('Password', { exact: true }).fill(userPassword)
    await adminPage.getByRole('button', { name: 'Add user' }).click()
    await adminPage.getByText(`Added ${userName} (user, group user).`, { exact: false }).waitFor()
    await adminPage.getByRole('row', { name: `user ${userName}` }).waitFor()
  })

  test('the new user logs in with the keyboard alone and sees an empty dashboard with the quota', async () => {
    user = await open()
    userPage = await user.context.newPage()
    await userPage.goto(`${node.origin}/`)
    await heading(userPage, 'Log in to docklet').waitFor()
    // The page focuses its heading; Tab reaches the name field, then the password, Enter submits.
    await userPage.keyboard.press('Tab')
    await userPage.keyboard.type(userName)
    await userPage.keyboard.press('Tab')
    await userPage.keyboard.type(userPassword)
    await userPage.keyboard.press('Enter')
    await heading(userPage, 'Vclusters').waitFor()
    expect(await nav(userPage, 'Hosts').count()).toBe(0)
    await userPage.getByText('You have no vclusters yet.').waitFor()
    await userPage.getByText('0 of 8').first().waitFor()
    await screenshot(userPage, '07-user-dashboard-empty')
  })

  test('the create form refuses more vnodes than the quota before sending anything', async () => {
    await userPage.getByRole('link', { name: 'New vcluster' }).click()
    await heading(userPage, 'New vcluster').waitFor()
    await userPage.getByLabel('Name').fill(vclusterName)
    await userPage.getByLabel('Vnodes', { exact: true }).fill('20')
    await userPage.getByRole('button', { name: 'Create vcluster' }).click()
    await userPage.getByText('You have 8 of 8 vnodes left.').waitFor()
    await userPage.getByRole('alert').filter({ hasText: 'nothing was sent' }).waitFor()
    expect(await userPage.getByLabel('Vnodes', { exact: true }).getAttribute('aria-invalid')).toBe('true')
    expect(new URL(userPage.url()).pathname).toBe('/new-vcluster')
    await screenshot(userPage, '08-create-invalid')
  })

  test('the user creates a vcluster of two vnodes and sees them running', async () => {
    await userPage.getByLabel('Vnodes', { exact: true }).fill('2')
    expect(await userPage.getByLabel('Image').inputValue()).toMatch(/^[0-9a-f]{64}$/)
    await userPage.getByRole('button', { name: 'Create vcluster' }).click()
    await heading(userPage, new RegExp(`^${vclusterName}`)).waitFor()
    expect(new URL(userPage.url()).pathname).toBe(`/vclusters/${vclusterName}`)
    await heading(userPage, new RegExp(`^${vclusterName} running`)).waitFor()
    const vnodes = userPage.getByRole('table', { name: `The vnodes of ${vclusterName}` })
    await waitForCount(vnodes.getByText('running', { exact: true }), 2, 'two running vnodes')
    const first = vnodes.getByRole('row', { name: 'vnode host-0' })
    expect(await first.getByText(/^\d+\.\d+\.\d+\.\d+$/).textContent()).toMatch(/\.2$/)
    await screenshot(userPage, '09-vcluster-running')
  })

  test('scaling out adds a third running vnode', async () => {
    await userPage.getByLabel('Vnodes to add').fill('1')
    await userPage.getByRole('button', { name: 'Scale out' }).click()
    await userPage.getByText('Added 1 vnode').waitFor()
    const vnodes = userPage.getByRole('table', { name: `The vnodes of ${vclusterName}` })
    await waitForCount(vnodes.getByText('running', { exact: true }), 3, 'three running vnodes')
  })

  test('stopping and starting the vcluster show in its status', async () => {
    await userPage.getByRole('button', { name: 'Stop', exact: true }).click()
    await userPage.getByText(`${vclusterName} is stopping`).waitFor()
    await heading(userPage, new RegExp(`^${vclusterName} stopped`)).waitFor()
    await screenshot(userPage, '10-vcluster-stopped')
    await userPage.getByRole('button', { name: 'Start', exact: true }).click()
    await userPage.getByText(`${vclusterName} is starting`).waitFor()
    await heading(userPage, new RegExp(`^${vclusterName} running`)).waitFor()
  })

  test('the workspace button opens /go/<owner>/<vcluster>/ in a new tab', async () => {
    const link = userPage.getByRole('link', { name: /Open workspace/ })
    expect(await link.getAttribute('href')).toBe(`/go/${userName}/${vclusterName}/`)
    expect(await link.getAttribute('target')).toBe('_blank')
  })

  test('a port mapping is added and removed on the vcluster page', async () => {
    await userPage.getByLabel('Port on the vnode').fill('80')
    await userPage.getByRole('button', { name: 'Add mapping' }).click()
    await userPage.getByText(/Port 80 of vnode 0 is now public port 4\d{4} on every node\./).waitFor()
    const remove = userPage.getByRole('button', { name: /^Remove public port/ })
    await remove.waitFor()
    await screenshot(userPage, '11-vcluster-port-mapping')
    await remove.click()
    await userPage.getByText(/Public port 4\d{4} is closed\./).waitFor()
    await userPage.getByText('No port mappings.').waitFor()
  })

  test('a vnode saved as an image appears on the images page, where sharing makes it public', async () => {
    await userPage.getByRole('button', { name: 'Save host-0 as an image' }).click()
    const form = userPage.getByRole('form', { name: 'Save host-0 as an image' })
    await form.getByLabel('Image name').fill('lab-snap')
    await form.getByLabel('Description (optional)').fill('busybox with my changes')
    await form.getByRole('button', { name: 'Save image' }).click()
    // Wait for the answer either way, so a refusal fails with the node's sentence.
    const saved = userPage.getByText('Saved host-0 as your private image lab-snap.')
    const refused = userPage.getByRole('alert').filter({ hasText: /\S/ })
    await saved.or(refused).first().waitFor()
    expect(await refused.allTextContents()).toEqual([])
    await nav(userPage, 'Images').click()
    await heading(userPage, 'Images').waitFor()
    const row = userPage
      .getByRole('table', { name: 'My images' })
      .getByRole('row', { name: 'image lab-snap' })
    await row.getByText('private', { exact: true }).waitFor()
    expect(await row.getByText('busybox with my changes').isVisible()).toBe(true)
    await row.getByRole('button', { name: 'Share lab-snap' }).click()
    await userPage.getByText('lab-snap is public').waitFor()
    await row.getByText('public', { exact: true }).waitFor()
    await screenshot(userPage, '12-images')
    await row.getByRole('button', { name: 'Delete lab-snap' }).click()
    await row.getByRole('button', { name: 'Delete for good' }).click()
    await waitForCount(userPage.getByRole('row', { name: 'image lab-snap' }), 0, 'the lab-snap row to go')
  })

  test('the dashboard and the vcluster page fit a 375 px wide screen', async () => {
    const phone = await open({ width: 375, height: 812 })
    const page = await phone.context.newPage()
    await logIn(page, userName, userPassword)
    await page.getByRole('link', { name: vclusterName, exact: true }).waitFor()
    const overflow = 'document.documentElement.scrollWidth - document.documentElement.clientWidth'
    expect(await page.evaluate(overflow)).toBe(0)
    await screenshot(page, '13-phone-dashboard')
    await page.getByRole('link', { name: vclusterName, exact: true }).click()
    await heading(page, new RegExp(`^${vclusterName} running`)).waitFor()
    expect(await page.evaluate(overflow)).toBe(0)
    await screenshot(page, '14-phone-vcluster')
    await nav(page, 'Images').click()
    await heading(page, 'Images').waitFor()
    expect(await page.evaluate(overflow)).toBe(0)
  })

  test('deleting the vcluster returns to the dashboard, where it disappears', async () => {
    await nav(userPage, 'Vclusters').click()
    await userPage.getByRole('link', { name: vclusterName, exact: true }).click()
    await heading(userPage, new RegExp(`^${vclusterName}`)).waitFor()
    await userPage.getByRole('button', { name: `Delete ${vclusterName}` }).click()
    // The confirmation takes the focus, so Enter confirms.
    await userPage.getByRole('button', { name: 'Delete for good' }).waitFor()
    await userPage.keyboard.press('Enter')
    await heading(userPage, 'Vclusters').waitFor()
    await userPage.getByText(`The vcluster ${vclusterName} is being deleted`).waitFor()
    await screenshot(userPage, '15-dashboard-after-delete')
    await userPage.getByText('You have no vclusters yet.').waitFor()
  })

  test('with self-registration open, a visitor registers, logs in once the admin approves, and logs out', async () => {
    await nav(adminPage, 'Settings').click()
    await adminPage.getByRole('switch', { name: 'Open self-registration' }).check()
    await adminPage.getByText('Self-registration is open').waitFor()

    const visitor = await open()
    const page = await visitor.context.newPage()
    await page.goto(`${node.origin}/`)
    await page.getByRole('link', { name: 'Register' }).click()
    await heading(page, 'Register').waitFor()
    await page.getByLabel('User name').fill('bob')
    await page.getByLabel('Password', { exact: true }).fill('bob-password-1')
    await page.getByLabel('Password again').fill('bob-password-1')
    await page.getByRole('button', { name: 'Register' }).click()
    await page.getByText("The account bob is registered and waits for an admin's approval.").waitFor()
    await screenshot(page, '16-registered')

    await nav(adminPage, 'Users').click()
    await adminPage.getByText('1 registration waits for approval: bob.').waitFor()
    await adminPage
      .getByRole('row', { name: 'user bob' })
      .getByRole('button', { name: 'Approve bob' })
      .click()
    await adminPage.getByText('bob can log in now.').waitFor()

    await logIn(page, 'bob', 'bob-password-1')
    await page.getByText('Signed in as bob').waitFor()
    await page.getByRole('button', { name: 'Log out' }).click()
    await heading(page, 'Log in to docklet').waitFor()
    await page.waitForURL((url) => url.pathname === '/login')
    // The session ended on the node, not only in the page.
    await page.goto(`${node.origin}/images`)
    await heading(page, 'Log in to docklet').waitFor()
    // The app swaps in the login address right after it shows the form.
    await page.waitForURL((url) => url.pathname === '/login' && url.search === '?next=%2Fimages')
  })

  test('the admin describes the busybox image, unshares it and shares it again', async () => {
    await nav(adminPage, 'Images').click()
    await heading(adminPage, 'Images').waitFor()
    const row = adminPage
      .getByRole('table', { name: 'My images' })
      .getByRole('row', { name: 'image busybox' })
    await row.getByRole('button', { name: 'Edit description of busybox' }).click()
    const form = adminPage.getByRole('form', { name: 'Description of busybox' })
    await form.getByLabel('Description').fill('BusyBox for the browser test')
    await form.getByRole('button', { name: 'Save description' }).click()
    await adminPage.getByText('Description saved.').waitFor()
    await row.getByText('BusyBox for the browser test').waitFor()
    await row.getByRole('button', { name: 'Unshare busybox' }).click()
    await adminPage.getByText('busybox is private again.').waitFor()
    await row.getByText('private', { exact: true }).waitFor()
    await row.getByRole('button', { name: 'Share busybox' }).click()
    await row.getByText('public', { exact: true }).waitFor()
    await screenshot(adminPage, '17-admin-images')
  })

  test('the app asked for nothing outside the node and threw no errors', () => {
    expect(contexts.length).toBeGreaterThan(0)
    expect(contexts.flatMap((guarded) => guarded.foreignRequests)).toEqual([])
    expect(contexts.flatMap((guarded) => guarded.pageErrors)).toEqual([])
  })
})
