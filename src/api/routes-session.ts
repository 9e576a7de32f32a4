// Login, logout, who am I, password change, self-registration.
//
// A failed login is recorded in the replicated state (login.failure), so the
// lockout (5 failures -> 5 minutes, doubling up to an hour) holds on every
// node at once; while locked, the password is not even checked. A local
// per-address limit (login-limiter.ts) brakes one client trying many names.
// An unknown name costs the same argon2 work as a wrong password.

import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { hashPassword, verifyPassword } from '../security/password.ts'
import { generateSshKeyPair } from '../security/ssh-key.ts'
import { quotaOf } from '../state/account-state.ts'
import type { ClusterData } from '../state/cluster-state.ts'
import { portMappingsOf } from '../state/port-state.ts'
import { lockedUntilOf, sessionGenerationOf } from '../state/session-state.ts'
import type { Access, ApiContext, Caller } from './api-context.ts'
import { ApiError } from './api-error.ts'
import { closedObject, nameSchema, passwordCharsMax, passwordSchema, sessionSchema } from './api-schemas.ts'
import { routeSchema } from './route-schema.ts'
import { csrfTokenFor, newSessionId } from './session-token.ts'

let dummyHash: Promise<string> | null = null

/** A hash to check unknown names against, so they take as long as known ones. */
function dummyPasswordHash(): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex'))
  return dummyHash
}

export function inMinutes(ms: number): string {
  const minutes = Math.max(1, Math.ceil(ms / 60_000))
  return `${minutes} ${minutes === 1 ? 'minute' : 'minutes'}`
}

const loginPassword = { type: 'string', minLength: 1, maxLength: passwordCharsMax } as const

function sessionBody(context: ApiContext, caller: Caller, csrfToken: string | null) {
  const data = context.data
  const user = context.user(caller.name)
  return {
    name: user.name,
    role: user.role,
    group: user.group,
    status: user.status,
    quota: { ...quotaOf(data as ClusterData, user) },
    usage: {
      ...context.backend.state.usage(user.name),
      portMappings: portMappingsOf(data, user.name).length,
    },
    ...(csrfToken === null ? {} : { csrfToken }),
    ...(caller.session === null ? {} : { expiresAt: caller.session.expiresAt }),
  }
}

function portalOnly(context: ApiContext, what: string): void {
  if (context.mode !== 'portal')
    throw new ApiError(
      'ERR_NOT_SUPPORTED',
      `${what} is for the portal; the control socket already acts as the admin (use X-Docklet-User to act for a user).`,
    )
}

/** Refuses a login attempt early when the address or the account is locked out. */
function checkNotLocked(context: ApiContext, address: string, name: string): void {
  const now = context.now()
  const addressWaitMs = context.loginLimiter.retryAfterMs(address, now)
  if (addressWaitMs > 0)
    throw new ApiError(
      'ERR_RATE_LIMITED',
      `Too many failed logins from ${address}; try again in ${inMinutes(addressWaitMs)}.`,
      { retryAfterMs: addressWaitMs },
    )
  const lockedUntil = lockedUntilOf(context.data, name)
  if (lockedUntil > now)
    throw new ApiError(
      'ERR_LOGIN_LOCKED',
      `Too many failed logins for ${name}; try again in ${inMinutes(lockedUntil - now)}, or ask an admin to reset the password.`,
      { retryAfterMs: lockedUntil - now },
    )
}

/** True when `password` is the password of `name`; a wrong one is recorded. */
async function checkPassword(
  context: ApiContext,
  address: string,
  name: string,
  password: string,
): Promise<boolean> {
  const user = context.data.users[name]
  const good = await verifyPassword(password, user?.passwordHash ?? (await dummyPasswordHash()))
  if (good && user !== undefined) {
    if (context.data.loginFailures[name] !== undefined)
      await context.submit({ type: 'login.success', at: 0, name })
    return true
  }
  context.loginLimiter.recordFailure(address, context.now())
  if (user !== undefined) await context.submit({ type: 'login.failure', at: 0, name })
  return false
}

export function registerSessionRoutes(app: FastifyInstance, context: ApiContext): void {
  const pub: { access: Access } = { access: 'public' }
  const user: { access: Access } = { access: 'user' }

  app.post<{ Body: { name: string; password: string } }>(
    '/session',
    {
      config: pub,
      schema: routeSchema({
        summary: 'Log in: sets the session cookie and answers with the session and its CSRF token.',
        body: closedObject({ name: nameSchema, password: loginPassword }),
        response: { 200: sessionSchema },
      }),
    },
    async (request, reply) => {
      portalOnly(context, 'Logging in')
      const { name, password } = request.body
      checkNotLocked(context, request.ip, name)
      if (!(await checkPassword(context, request.ip, name, password)))
        throw new ApiError('ERR_LOGIN_FAILED', 'The user name or the password is wrong.')
      const account = context.user(name)
      if (account.status !== 'normal')
        throw new ApiError(
          'ERR_USER_NOT_ACTIVE',
          account.status === 'pending'
            ? `The account ${name} waits for an admin's approval.`
            : `The account ${name} is disabled; ask an admin.`,
        )
      const key = await context.sessionKey()
      const now = context.now()
      const claims = {
        user: name,
        generation: sessionGenerationOf(context.data, name),
        sessionId: newSessionId(),
        issuedAt: now,
        expiresAt: now + context.sessionTtlMs,
      }
      const csrf = context.setSessionCookies(request, reply, key, claims)
      return sessionBody(context, { name, role: account.role, principal: name, session: claims }, csrf)
    },
  )

  app.get(
    '/session',
    {
      config: user,
      schema: routeSchema({
        summary: 'Who am I: name, role, group, quota and what I use.',
        response: { 200: sessionSchema },
      }),
    },
    async (request) => {
      const caller = context.caller(request)
      const session = caller.session
      return sessionBody(
        context,
        caller,
        session === null ? null : csrfTokenFor(context.data.sessionKey, session.sessionId),
      )
    },
  )

  app.delete<{ Querystring: { all?: boolean } }>(
    '/session',
    {
      config: user,
      schema: routeSchema({
        summary: 'Log out: ends this session, or every session of mine with ?all=true.',
        querystring: closedObject({ all: { type: 'boolean' } }, { required: [] }),
        body: closedObject({}),
        response: { 200: closedObject({ ok: { type: 'boolean' } }) },
      }),
    },
    async (request, reply) => {
      portalOnly(context, 'Logging out')
      const caller = context.caller(request)
      const session = caller.session
      if (session === null) throw new ApiError('ERR_UNAUTHENTICATED', 'This request carries no session.')
      if (request.query.all === true) {
        const result = await context.submit({ type: 'session.revoke-all', at: 0, user: session.user })
        const generation = Number(result.generation)
        await context.settle(() => sessionGenerationOf(context.data, session.user) >= generation)
      } else {
        const result = await context.submit({
          type: 'session.revoke',
          at: 0,
          user: session.user,
          session: session.sessionId,
          expiresAt: session.expiresAt,
        })
        if (result.all === true) {
          const generation = Number(result.generation)
          await context.settle(() => sessionGenerationOf(context.data, session.user) >= generation)
        } else {
          await context.settle(() => context.data.revokedSessions[session.sessionId] !== undefined)
        }
      }
      context.clearSessionCookies(request, reply)
      return { ok: true }
    },
  )

  app.post<{ Body: { oldPassword: string; newPassword: string } }>(
    '/session/password',
    {
      config: user,
      schema: routeSchema({
        summary: 'Change my password; ends every other session of mine.',
        body: closedObject({ oldPassword: loginPassword, newPassword: passwordSchema }),
        response: { 200: closedObject({ ok: { type: 'boolean' } }) },
      }),
    },
    async (request, reply) => {
      const caller = context.caller(request)
      const { oldPassword, newPassword } = request.body
      checkNotLocked(context, request.ip, caller.name)
      if (!(await checkPassword(context, request.ip, caller.name, oldPassword)))
        throw new ApiError(
          'ERR_WRONG_PASSWORD',
          'The current password is wrong; the password was not changed.',
        )
      const passwordHash = await hashPassword(newPassword)
      const result = await context.submit({ type: 'user.password', at: 0, name: caller.name, passwordHash })
      const generation = Number(result.generation)
      await context.settle(() => sessionGenerationOf(context.data, caller.name) >= generation)
      const session = caller.session
      if (session !== null && session.user === caller.name) {
        // This session stays (same id, so the same CSRF token), under the new generation.
        context.setSessionCookies(request, reply, context.data.sessionKey, { ...session, generation })
      }
      return { ok: true }
    },
  )

  app.post<{ Body: { name: string; password: string } }>(
    '/register',
    {
      config: pub,
      schema: routeSchema({
        summary:
          'Register myself while an admin has opened self-registration; the account waits for approval.',
        body: closedObject({ name: nameSchema, password: passwordSchema }),
        response: {
          201: closedObject({ name: { type: 'string' }, status: { type: 'string', enum: ['pending'] } }),
        },
      }),
    },
    async (request, reply) => {
      if (!context.data.registrationOpen)
        throw new ApiError(
          'ERR_REGISTRATION_CLOSED',
          'Self-registration is closed; ask an admin for an account.',
        )
      const { name, password } = request.body
      const waitMs = context.loginLimiter.retryAfterMs(request.ip, context.now())
      if (waitMs > 0)
        throw new ApiError(
          'ERR_RATE_LIMITED',
          `Too many attempts from ${request.ip}; try again in ${inMinutes(waitMs)}.`,
          { retryAfterMs: waitMs },
        )
      // Registrations count against the address like failed logins: one client cannot flood the user table.
      context.loginLimiter.recordFailure(request.ip, context.now())
      const passwordHash = await hashPassword(password)
      await context.submit({
        type: 'user.register',
        at: 0,
        name,
        passwordHash,
        sshKey: generateSshKeyPair(`docklet:${name}`),
      })
      void reply.status(201)
      return { name, status: 'pending' }
    },
  )
}
