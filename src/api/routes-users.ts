// Users, groups and cluster settings (admin). Passwords are hashed here,
// before the command is submitted: the state machine only stores the hash.
// A password set by an admin goes through user.password, which also ends
// the user's sessions and lifts a login lockout.

import type { FastifyInstance } from 'fastify'
import { hashPassword } from '../security/password.ts'
import { generateSshKeyPair } from '../security/ssh-key.ts'
import type { UserRole, UserStatus } from '../state/account-state.ts'
import type { Quota } from '../state/quota.ts'
import type { Access, ApiContext } from './api-context.ts'
import { ApiError } from './api-error.ts'
import {
  closedObject,
  groupSchema,
  nameSchema,
  partialQuotaSchema,
  passwordSchema,
  roleSchema,
  statusSchema,
  userSchema,
} from './api-schemas.ts'
import { groupView, userView } from './api-views.ts'
import { routeSchema } from './route-schema.ts'

const admin: { access: Access } = { access: 'admin' }
const nameParams = closedObject({ name: nameSchema })
const portNumber = { type: 'integer', minimum: 1, maximum: 65_535 } as const

export function registerUserRoutes(app: FastifyInstance, context: ApiContext): void {
  app.get(
    '/users',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Every user (admin).',
        response: { 200: closedObject({ users: { type: 'array', items: userSchema } }) },
      }),
    },
    async () => ({
      users: Object.values(context.data.users)
        .sort((a, b) => a.name.localeCompare(b.name))
        .map(userView),
    }),
  )

  app.post<{ Body: { name: string; password: string; role?: UserRole; group?: string } }>(
    '/users',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Add a user (admin). The group defaults to the one named like the role.',
        body: closedObject(
          { name: nameSchema, password: passwordSchema, role: roleSchema, group: nameSchema },
          { required: ['name', 'password'] },
        ),
        response: { 201: userSchema },
      }),
    },
    async (request, reply) => {
      const { name, password } = request.body
      const role = request.body.role ?? 'user'
      const passwordHash = await hashPassword(password)
      await context.submit({
        type: 'user.add',
        at: 0,
        name,
        role,
        group: request.body.group ?? role,
        status: 'normal',
        passwordHash,
        sshKey: generateSshKeyPair(`docklet:${request.body.name}`),
      })
      await context.mustSettle(() => context.data.users[name] !== undefined, `The user ${name}`)
      void reply.status(201)
      return userView(context.user(name))
    },
  )

  app.patch<{
    Params: { name: string }
    Body: { role?: UserRole; group?: string; status?: UserStatus; password?: string }
  }>(
    '/users/:name',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Change a user (admin): role, group, status (approve a pending user with normal), password.',
        params: nameParams,
        body: {
          ...closedObject(
            { role: roleSchema, group: nameSchema, status: statusSchema, password: passwordSchema },
            { required: [] },
          ),
          minProperties: 1,
        },
        response: { 200: userSchema },
      }),
    },
    async (request) => {
      const { name } = request.params
      const { role, group, status, password } = request.body
      context.user(name)
      if (role !== undefined || group !== undefined || status !== undefined) {
        await context.submit({ type: 'user.modify', at: 0, name, role, group, status })
      }
      if (password !== undefined) {
        const passwordHash = await hashPassword(password)
        await context.submit({ type: 'user.password', at: 0, name, passwordHash })
      }
      await context.settle(() => {
        const user = context.data.users[name]
        return (
          user !== undefined &&
          (role === undefined || user.role === role) &&
          (group === undefined || user.group === group) &&
          (status === undefined || user.status === status)
        )
      })
      return userView(context.user(name))
    },
  )

  app.post<{ Params: { name: string } }>(
    '/users/:name/disable',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Disable a user (admin): their sessions stop working; their vclusters stay.',
        params: nameParams,
        body: closedObject({}),
        response: { 200: userSchema },
      }),
    },
    async (request) => {
      const { name } = request.params
      context.user(name)
      await context.submit({ type: 'user.disable', at: 0, name })
      await context.settle(() => context.data.users[name]?.status === 'disabled')
      return userView(context.user(name))
    },
  )

  app.get(
    '/groups',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Every group and its quota (admin).',
        response: { 200: closedObject({ groups: { type: 'array', items: groupSchema } }) },
      }),
    },
    async () => ({
      groups: Object.values(context.data.groups)
        .sort((a, b) => a.name.localeCompare(b.name))
        .map((group) => groupView(context.data, group)),
    }),
  )

  app.post<{ Body: { name: string; quota?: Partial<Quota> } }>(
    '/groups',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Add a group (admin); quotas left out get the defaults.',
        body: closedObject({ name: nameSchema, quota: partialQuotaSchema }, { required: ['name'] }),
        response: { 201: groupSchema },
      }),
    },
    async (request, reply) => {
      const { name, quota } = request.body
      await context.submit({ type: 'group.add', at: 0, name, quota })
      await context.mustSettle(() => context.data.groups[name] !== undefined, `The group ${name}`)
      void reply.status(201)
      return groupView(context.data, context.data.groups[name]!)
    },
  )

  app.patch<{ Params: { name: string }; Body: { quota: Partial<Quota> } }>(
    '/groups/:name',
    {
      config: admin,
      schema: routeSchema({
        summary: "Change a group's quota (admin); lowering it keeps what members hold.",
        params: nameParams,
        body: closedObject({ quota: partialQuotaSchema }),
        response: { 200: groupSchema },
      }),
    },
    async (request) => {
      const { name } = request.params
      const { quota } = request.body
      if (context.data.groups[name] === undefined)
        throw new ApiError('ERR_GROUP_NOT_FOUND', `There is no group named ${name}.`)
      await context.submit({ type: 'group.quota', at: 0, name, quota })
      await context.settle(() => {
        const group = context.data.groups[name]
        return (
          group !== undefined &&
          Object.entries(quota).every(([key, value]) => group.quota[key as keyof Quota] === value)
        )
      })
      return groupView(context.data, context.data.groups[name]!)
    },
  )

  const settingsSchema = closedObject({
    registration: closedObject({ open: { type: 'boolean' } }),
    ports: closedObject({ min: portNumber, max: portNumber }),
  })
  const settings = () => ({
    registration: { open: context.data.registrationOpen },
    ports: { min: context.data.portRange.min, max: context.data.portRange.max },
  })

  app.get(
    '/settings',
    {
      config: { access: 'public' },
      schema: routeSchema({
        summary:
          'Cluster settings the portal shows: whether self-registration is open, the public port range.',
        response: { 200: settingsSchema },
      }),
    },
    async () => settings(),
  )

  app.put<{ Body: { open: boolean } }>(
    '/settings/registration',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Open or close self-registration (admin).',
        body: closedObject({ open: { type: 'boolean' } }),
        response: { 200: settingsSchema },
      }),
    },
    async (request) => {
      const { open } = request.body
      await context.submit({ type: 'settings.registration', at: 0, open })
      await context.settle(() => context.data.registrationOpen === open)
      return settings()
    },
  )

  app.put<{ Body: { min: number; max: number } }>(
    '/settings/ports',
    {
      config: admin,
      schema: routeSchema({
        summary:
          'Set the public port range port mappings come from (admin); existing mappings keep their port.',
        body: closedObject({ min: portNumber, max: portNumber }),
        response: { 200: settingsSchema },
      }),
    },
    async (request) => {
      const { min, max } = request.body
      await context.submit({ type: 'ports.range', at: 0, min, max })
      await context.settle(() => context.data.portRange.min === min && context.data.portRange.max === max)
      return settings()
    },
  )
}
