// What every route needs: the backend, the time, who is calling, and the
// write-then-read helpers. One per buildApi() call.
//
// Who is calling:
// - portal mode: the user of a valid session cookie (session-token.ts);
//   state-changing requests must also carry the session's CSRF token.
// - local-admin mode (the root-only control socket): the cluster's admin,
//   i.e. the user created at cluster.init, or the earliest-created active
//   admin when that one is no longer an active admin. No cookies, no CSRF.
// In both modes an admin may send `X-Docklet-User: NAME` to act as that user
// (the CLI's --user): the request is then handled exactly as if NAME made
// it, with NAME's role. A non-admin may only name themselves.

import { randomBytes } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { namePattern, type UserRole } from '../state/account-state.ts'
import type { ClusterData, Command, CommandResult, User } from '../state/cluster-state.ts'
import { sessionGenerationOf, sessionLifetimeMaxMs } from '../state/session-state.ts'
import { findVcluster, type Vcluster } from '../state/vcluster-state.ts'
import type { ApiBackend } from './api-backend.ts'
import { ApiError } from './api-error.ts'
import { defaultLoginLimiterOptions, LoginLimiter, type LoginLimiterOptions } from './login-limiter.ts'
import {
  csrfTokenFor,
  csrfTokenMatches,
  readSession,
  type SessionClaims,
  signSession,
} from './session-token.ts'
import { waitForState } from './wait-for-state.ts'

export type ApiMode = 'portal' | 'local-admin'

/** Who may call a route. */
export type Access = 'public' | 'user' | 'admin'

export interface ApiOptions {
  backend: ApiBackend
  mode: ApiMode
  /** Wall clock in ms (tests pass a fake one). */
  now?: () => number
  /** How long a session lasts. */
  sessionTtlMs?: number
  /** How long a route waits for this node's replica to show a write it just made. */
  replicaWaitMs?: number
  /** Upper bound of a vnode exec's timeout. */
  execTimeoutMsMax?: number
  loginLimiter?: LoginLimiterOptions
}

export interface Caller {
  /** Whose resources the request addresses (and whose role applies). */
  name: string
  role: UserRole
  /** The user who authenticated (differs from name under X-Docklet-User). */
  principal: string
  /** The portal session, null on the control socket. */
  session: SessionClaims | null
}

export const sessionCookie = 'docklet_session'
export const csrfCookie = 'docklet_csrf'
export const csrfHeader = 'x-csrf-token'
export const actAsHeader = 'x-docklet-user'

export const defaultSessionTtlMs = 12 * 3600 * 1000
export const defaultReplicaWaitMs = 5_000
export const defaultExecTimeoutMs = 30_000
export const defaultExecTimeoutMsMax = 10 * 60 * 1000

const safeMethods: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>()
  if (header === undefined) return cookies
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    const name = part.slice(0, eq).trim()
    if (!cookies.has(name)) cookies.set(name, part.slice(eq + 1).trim())
  }
  return cookies
}

export class ApiContext {
  readonly backend: ApiBackend
  readonly mode: ApiMode
  readonly now: () => number
  readonly sessionTtlMs: number
  readonly replicaWaitMs: number
  readonly execTimeoutMsMax: number
  readonly loginLimiter: LoginLimiter
  private readonly callers = new WeakMap<FastifyRequest, Caller>()
  private keyPending: Promise<string> | null = null

  constructor(options: ApiOptions) {
    this.backend = options.backend
    this.mode = options.mode
    this.now = options.now ?? Date.now
    // A revocation is remembered for at most sessionLifetimeMaxMs: no session may outlive that.
    this.sessionTtlMs = Math.min(options.sessionTtlMs ?? defaultSessionTtlMs, sessionLifetimeMaxMs)
    this.replicaWaitMs = options.replicaWaitMs ?? defaultReplicaWaitMs
    this.execTimeoutMsMax = options.execTimeoutMsMax ?? defaultExecTimeoutMsMax
    this.loginLimiter = new LoginLimiter(options.loginLimiter ?? defaultLoginLimiterOptions)
  }

  get data(): Readonly<ClusterData> {
    return this.backend.state.view
  }

  /** Commits a command; `at` is filled by the node. */
  submit(command: Command): Promise<CommandResult & { ok: true }> {
    return this.backend.submit(command)
  }

  /** Waits (bounded) until this node's replica shows a write; false when it did not in time. */
  settle(ready: () => boolean): Promise<boolean> {
    return waitForState(this.backend.state, ready, this.replicaWaitMs)
  }

  /** Like settle, but a replica that did not catch up is an error. */
  async mustSettle(ready: () => boolean, what: string): Promise<void> {
    if (await this.settle(ready)) return
    throw new ApiError(
      'ERR_TIMEOUT',
      `${what} was committed, but this node's replica has not caught up within ${this.replicaWaitMs} ms; read it again in a moment.`,
    )
  }

  // -------------------------------------------------------------------------
  // Who is calling

  caller(request: FastifyRequest): Caller {
    const caller = this.callers.get(request)
    if (caller === undefined) throw new ApiError('ERR_UNAUTHENTICATED', 'Log in first.')
    return caller
  }

  /**
   * Resolves and checks the caller of a route with the given access, before
   * the body is read: 401 without a valid session, 403 for a missing CSRF
   * token or a non-admin on an admin route.
   */
  authorize(request: FastifyRequest, access: Access): void {
    const stateChanging = !safeMethods.has(request.method)
    if (this.mode === 'portal' && stateChanging) this.checkOrigin(request)
    if (access === 'public') return
    const principal = this.mode === 'local-admin' ? this.localAdmin() : this.sessionCaller(request)
    if (this.mode === 'portal' && stateChanging) {
      const given = request.headers[csrfHeader]
      const session = principal.session
      if (
        session === null ||
        typeof given !== 'string' ||
        !csrfTokenMatches(this.data.sessionKey, session.sessionId, given)
      ) {
        throw new ApiError(
          'ERR_CSRF',
          'The request lacks the X-CSRF-Token header of this session; reload the page and try again.',
        )
      }
    }
    const caller = this.actAs(request, principal)
    if (access === 'admin' && caller.role !== 'admin')
      throw new ApiError('ERR_FORBIDDEN', 'Only an admin may do this.')
    this.callers.set(request, caller)
  }

  /** A cross-site request says where it comes from; a browser cannot fake the Origin header. */
  private checkOrigin(request: FastifyRequest): void {
    const origin = request.headers.origin
    if (origin === undefined) return
    let same = false
    try {
      // Parsed alike on both sides, so a default port written or left out compares equal.
      const from = new URL(origin)
      same = from.host === new URL(`${from.protocol}//${String(request.headers.host)}`).host
    } catch {
      // 'null' (sandboxed frames, file:) and junk count as foreign.
    }
    if (!same) {
      throw new ApiError(
        'ERR_CSRF',
        `Requests from ${origin} are refused; use the portal on ${String(request.headers.host)} itself.`,
      )
    }
  }

  private localAdmin(): Caller {
    const data = this.data
    if (data.clusterId === '')
      throw new ApiError('ERR_NOT_INITIALIZED', 'The cluster is not initialized yet; run `docklet init`.')
    const admins = Object.values(data.users)
      .filter((user) => user.role === 'admin' && user.status === 'normal')
      .sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name))
    const admin = admins.find((user) => user.createdAt === data.createdAt) ?? admins[0]
    if (admin === undefined)
      throw new ApiError('ERR_NO_ADMIN', 'The cluster has no active admin user to act as.')
    return { name: admin.name, role: 'admin', principal: admin.name, session: null }
  }

  private sessionCaller(request: FastifyRequest): Caller {
    const token = parseCookies(request.headers.cookie).get(sessionCookie)
    if (token === undefined || token === '')
      throw new ApiError('ERR_UNAUTHENTICATED', 'Log in first: this request carries no session.')
    const data = this.data
    const claims = data.sessionKey === '' ? null : readSession(data.sessionKey, token)
    if (claims === null)
      throw new ApiError('ERR_SESSION_INVALID', 'The session is not valid on this cluster; log in again.')
    if (claims.expiresAt <= this.now())
      throw new ApiError('ERR_SESSION_EXPIRED', 'The session has expired; log in again.')
    const user = data.users[claims.user]
    if (user === undefined || user.status !== 'normal')
      throw new ApiError('ERR_SESSION_INVALID', `The user ${claims.user} may not log in now; ask an admin.`)
    // A newer generation is fine: this replica may lag behind the node that issued it.
    if (
      claims.generation < sessionGenerationOf(data, user.name) ||
      data.revokedSessions[claims.sessionId] !== undefined
    )
      throw new ApiError(
        'ERR_SESSION_REVOKED',
        'The session was ended (logout or password change); log in again.',
      )
    return { name: user.name, role: user.role, principal: user.name, session: claims }
  }

  private actAs(request: FastifyRequest, principal: Caller): Caller {
    const header = request.headers[actAsHeader]
    if (header === undefined) return principal
    const name = Array.isArray(header) ? '' : header
    if (name === principal.name) return principal
    if (principal.role !== 'admin')
      throw new ApiError('ERR_FORBIDDEN', 'Only an admin may act for another user (X-Docklet-User).')
    if (!namePattern.test(name))
      throw new ApiError(
        'ERR_BAD_REQUEST',
        `The X-Docklet-User header ${JSON.stringify(name)} is not a user name.`,
      )
    const user = this.data.users[name]
    if (user === undefined) throw new ApiError('ERR_USER_NOT_FOUND', `There is no user named ${name}.`)
    return { name: user.name, role: user.role, principal: principal.principal, session: principal.session }
  }

  // -------------------------------------------------------------------------
  // Sessions

  /** The cluster's session key, creating it (once, cluster-wide) when there is none yet. */
  async sessionKey(): Promise<string> {
    if (this.data.sessionKey !== '') return this.data.sessionKey
    this.keyPending ??= (async () => {
      try {
        await this.submit({ type: 'session.key', at: 0, key: randomBytes(32).toString('hex') })
        await this.mustSettle(() => this.data.sessionKey !== '', 'The session key')
        return this.data.sessionKey
      } finally {
        this.keyPending = null
      }
    })()
    return this.keyPending
  }

  /** Sets the session and CSRF cookies for `claims`; returns the CSRF token. */
  setSessionCookies(
    request: FastifyRequest,
    reply: FastifyReply,
    key: string,
    claims: SessionClaims,
  ): string {
    const csrf = csrfTokenFor(key, claims.sessionId)
    const maxAgeS = Math.max(0, Math.floor((claims.expiresAt - this.now()) / 1000))
    const secure = request.protocol === 'https' ? '; Secure' : ''
    void reply.header('set-cookie', [
      `${sessionCookie}=${signSession(key, claims)}; Path=/; Max-Age=${maxAgeS}; HttpOnly; SameSite=Strict${secure}`,
      // Readable by the page, which echoes it in X-CSRF-Token; a cross-site page cannot read it.
      `${csrfCookie}=${csrf}; Path=/; Max-Age=${maxAgeS}; SameSite=Strict${secure}`,
    ])
    return csrf
  }

  clearSessionCookies(request: FastifyRequest, reply: FastifyReply): void {
    const secure = request.protocol === 'https' ? '; Secure' : ''
    void reply.header('set-cookie', [
      `${sessionCookie}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict${secure}`,
      `${csrfCookie}=; Path=/; Max-Age=0; SameSite=Strict${secure}`,
    ])
  }

  // -------------------------------------------------------------------------
  // Lookups that hide what the caller may not see

  user(name: string): User {
    const user = this.data.users[name]
    if (user === undefined) throw new ApiError('ERR_USER_NOT_FOUND', `There is no user named ${name}.`)
    return user
  }

  /** The caller's live vcluster by name; another user's answers exactly like a missing one. */
  vcluster(caller: Caller, name: string): Vcluster {
    const vcluster = findVcluster(this.data as ClusterData, caller.name, name)
    if (vcluster === undefined)
      throw new ApiError('ERR_VCLUSTER_NOT_FOUND', `${caller.name} has no vcluster named ${name}.`)
    return vcluster
  }
}
