// The app: who is logged in (GET /api/v1/session), the layout, the routes.
// Logged-out visitors see only the login and registration pages; a 401 on
// any request (session expired, password changed elsewhere) returns there.

import type { ComponentChildren } from 'preact'
import { useCallback, useEffect, useState } from 'preact/hooks'
import { ApiFailure, api, messageOf, setUnauthenticatedHandler } from './api.ts'
import { AppContext, type AppState, setFlash } from './app-context.ts'
import { Button, Loading, Notice } from './components.tsx'
import { AccountPage } from './pages/account-page.tsx'
import { AdminGroupsPage } from './pages/admin-groups-page.tsx'
import { AdminHostsPage } from './pages/admin-hosts-page.tsx'
import { AdminSettingsPage } from './pages/admin-settings-page.tsx'
import { AdminUsersPage } from './pages/admin-users-page.tsx'
import { CreateVclusterPage } from './pages/create-vcluster-page.tsx'
import { DashboardPage } from './pages/dashboard-page.tsx'
import { ImagesPage } from './pages/images-page.tsx'
import { LoginPage } from './pages/login-page.tsx'
import { RegisterPage } from './pages/register-page.tsx'
import { VclusterPage } from './pages/vcluster-page.tsx'
import { Link, match, navigate, usePath } from './router.tsx'
import type { Session } from './types.ts'

const publicPaths = new Set(['/login', '/register'])

function titleFor(path: string): string {
  if (path === '/') return 'Dashboard'
  const name = match('/vclusters/:name', path)?.name
  if (name !== undefined) return `Vcluster ${name}`
  const titles: Record<string, string> = {
    '/login': 'Log in',
    '/register': 'Register',
    '/new-vcluster': 'New vcluster',
    '/images': 'Images',
    '/account': 'Account',
    '/admin/hosts': 'Hosts',
    '/admin/users': 'Users',
    '/admin/groups': 'Groups',
    '/admin/settings': 'Settings',
  }
  return titles[path] ?? 'Not found'
}

export function App() {
  const path = usePath()
  const [session, setSession] = useState<Session | null | undefined>(undefined)
  const [startError, setStartError] = useState<string | null>(null)

  const refreshSession = useCallback(async () => {
    try {
      setSession(await api.session())
      setStartError(null)
    } catch (error) {
      if (error instanceof ApiFailure && error.status === 401) setSession(null)
      else setStartError(messageOf(error))
    }
  }, [])

  useEffect(() => {
    void refreshSession()
    setUnauthenticatedHandler(() => setSession(null))
  }, [refreshSession])

  useEffect(() => {
    document.title = `${titleFor(path)} · docklet`
  }, [path])

  // Logged out on an app page: go to the login page, and come back afterwards.
  useEffect(() => {
    if (session === null && !publicPaths.has(path)) {
      const back = path === '/' ? '' : `?next=${encodeURIComponent(path)}`
      navigate(`/login${back}`, { replace: true })
    }
    if (session != null && publicPaths.has(path)) navigate('/', { replace: true })
  }, [session, path])

  if (session === undefined) {
    if (startError !== null)
      return (
        <main class="narrow" id="main">
          <Notice kind="error">{startError}</Notice>
          <Button variant="primary" onClick={() => void refreshSession()}>
            Try again
          </Button>
        </main>
      )
    return (
      <main class="narrow" id="main">
        <Loading what="the portal" />
      </main>
    )
  }

  if (session === null) {
    // The effect above is about to move an app page to /login: show the form only there,
    // so the address and the form never disagree.
    if (!publicPaths.has(path))
      return (
        <main class="narrow" id="main">
          <Loading what="the login page" />
        </main>
      )
    return (
      <main class="narrow" id="main">
        {path === '/register' ? (
          <RegisterPage />
        ) : (
          <LoginPage
            onLoggedIn={(s) => {
              setSession(s)
              const next = new URLSearchParams(location.search).get('next')
              navigate(next?.startsWith('/') === true && !next.startsWith('//') ? next : '/', {
                replace: true,
              })
            }}
          />
        )}
      </main>
    )
  }

  const state: AppState = {
    session,
    refreshSession,
    flash: setFlash,
  }
  return (
    <AppContext.Provider value={state}>
      <Layout
        session={session}
        path={path}
        onLoggedOut={() => {
          // To the login page itself: coming back to this page is for sessions that expired.
          navigate('/login', { replace: true })
          setSession(null)
        }}
      >
        <Routes path={path} session={session} />
      </Layout>
    </AppContext.Provider>
  )
}

function Routes({ path, session }: { path: string; session: Session }) {
  if (path === '/') return <DashboardPage />
  if (path === '/new-vcluster') return <CreateVclusterPage />
  const vcluster = match('/vclusters/:name', path)
  if (vcluster !== null) return <VclusterPage key={vcluster.name} name={vcluster.name ?? ''} />
  if (path === '/images') return <ImagesPage />
  if (path === '/account') return <AccountPage />
  if (path.startsWith('/admin')) {
    if (session.role !== 'admin')
      return <Notice kind="error">The admin pages are for admins; your account is a user account.</Notice>
    if (path === '/admin' || path === '/admin/hosts') return <AdminHostsPage />
    if (path === '/admin/users') return <AdminUsersPage />
    if (path === '/admin/groups') return <AdminGroupsPage />
    if (path === '/admin/settings') return <AdminSettingsPage />
  }
  return (
    <section>
      <h1>Not found</h1>
      <p>
        The portal has no page at <code>{path}</code>. <Link href="/">Go to the dashboard</Link>.
      </p>
    </section>
  )
}

function NavLink({ href, path, children }: { href: string; path: string; children: ComponentChildren }) {
  const current =
    href === '/'
      ? path === '/' || path === '/new-vcluster' || path.startsWith('/vclusters/')
      : path.startsWith(href)
  return (
    <Link href={href} class="nav-link" aria-current={current ? 'page' : undefined}>
      {children}
    </Link>
  )
}

function Layout({
  session,
  path,
  onLoggedOut,
  children,
}: {
  session: Session
  path: string
  onLoggedOut: () => void
  children: ComponentChildren
}) {
  const [logoutError, setLogoutError] = useState<string | null>(null)
  const logout = async () => {
    try {
      await api.logout()
      onLoggedOut()
    } catch (error) {
      setLogoutError(messageOf(error))
    }
  }
  const admin = session.role === 'admin'
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to the content
      </a>
      <header class="topbar">
        <div class="topbar-inner">
          <Link href="/" class="brand" aria-label="docklet, dashboard">
            <span class="brand-mark" aria-hidden="true" />
            docklet
          </Link>
          <nav aria-label="Main" class="nav">
            <NavLink href="/" path={path}>
              Vclusters
            </NavLink>
            <NavLink href="/images" path={path}>
              Images
            </NavLink>
            {admin ? (
              <>
                <NavLink href="/admin/hosts" path={path}>
                  Hosts
                </NavLink>
                <NavLink href="/admin/users" path={path}>
                  Users
                </NavLink>
                <NavLink href="/admin/groups" path={path}>
                  Groups
                </NavLink>
                <NavLink href="/admin/settings" path={path}>
                  Settings
                </NavLink>
              </>
            ) : null}
          </nav>
          <div class="account">
            <Link href="/account" class="account-name" aria-label={`Account of ${session.name}`}>
              {session.name}
              {admin ? <span class="badge badge-idle">admin</span> : null}
            </Link>
            <Button variant="quiet" onClick={() => void logout()}>
              Log out
            </Button>
          </div>
        </div>
      </header>
      {logoutError === null ? null : (
        <div class="container">
          <Notice kind="error">{logoutError}</Notice>
        </div>
      )}
      <main id="main" class="container">
        {children}
      </main>
    </>
  )
}
