// Hosts (capacity, drain) and Raft members (admin only).

import type { FastifyInstance } from 'fastify'
import type { Access, ApiContext } from './api-context.ts'
import { ApiError } from './api-error.ts'
import { closedObject, hostSchema, membersSchema } from './api-schemas.ts'
import { hostViews } from './api-views.ts'
import { routeSchema } from './route-schema.ts'

const admin: { access: Access } = { access: 'admin' }
const hostParams = closedObject({
  id: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._-]+$' },
})

const nonNegative = { type: 'integer', minimum: 0 } as const
const drainedSchema = {
  ...hostSchema,
  properties: {
    ...(hostSchema.properties as Record<string, unknown>),
    evacuation: closedObject(
      { moving: nonNegative, stuck: nonNegative },
      { description: 'With evacuate: vnodes now moving away, and those no other host has room for.' },
    ),
  },
}

export function registerHostRoutes(app: FastifyInstance, context: ApiContext): void {
  /** A member by its id, the end of its id (as `docklet status` shows it) or its host name, if unique. */
  const resolveHost = (given: string): string => {
    const hosts = hostViews(context.data)
    if (hosts.some((host) => host.id === given)) return given
    const matches = hosts.filter(
      (host) => (given.length >= 6 && host.id.endsWith(given)) || host.name === given,
    )
    if (matches.length === 1) return matches[0]!.id
    if (matches.length > 1)
      throw new ApiError(
        'ERR_BAD_REQUEST',
        `"${given}" names ${matches.length} hosts (${matches.map((host) => host.id.slice(-12)).join(', ')}); give more of the id.`,
      )
    throw new ApiError(
      'ERR_MEMBER_NOT_FOUND',
      `No member has the id or name ${given}; \`docklet status\` lists them.`,
    )
  }
  const hostView = (id: string) => {
    const view = hostViews(context.data).find((host) => host.id === id)
    if (view === undefined) throw new ApiError('ERR_MEMBER_NOT_FOUND', `No member has the id ${id}.`)
    return view
  }

  app.get(
    '/hosts',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Every host: capacity, what is placed on it, whether it takes new vnodes (admin).',
        response: { 200: closedObject({ hosts: { type: 'array', items: hostSchema } }) },
      }),
    },
    async () => ({ hosts: hostViews(context.data) }),
  )

  app.post<{ Params: { id: string }; Body: { evacuate?: boolean } }>(
    '/hosts/:id/drain',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Place no new vnodes on this host, and with evacuate move its vnodes away (admin).',
        params: hostParams,
        body: closedObject(
          { evacuate: { type: 'boolean', description: 'Also move its vnodes to other hosts.' } },
          { required: [] },
        ),
        response: { 200: drainedSchema },
      }),
    },
    async (request) => {
      const id = resolveHost(request.params.id)
      const evacuate = request.body.evacuate === true
      const result = await context.submit({
        type: 'host.drain',
        at: 0,
        host: id,
        ...(evacuate ? { evacuate } : {}),
      })
      await context.settle(() => context.data.hosts[id]?.drained === true)
      return {
        ...hostView(id),
        ...(evacuate
          ? { evacuation: { moving: Number(result.moving ?? 0), stuck: Number(result.stuck ?? 0) } }
          : {}),
      }
    },
  )

  app.post<{ Params: { id: string } }>(
    '/hosts/:id/undrain',
    {
      config: admin,
      schema: routeSchema({
        summary: 'Let the host take new vnodes again (admin).',
        params: hostParams,
        body: closedObject({}),
        response: { 200: hostSchema },
      }),
    },
    async (request) => {
      const id = resolveHost(request.params.id)
      hostView(id)
      await context.submit({ type: 'host.undrain', at: 0, host: id })
      await context.settle(() => context.data.hosts[id]?.drained !== true)
      return hostView(id)
    },
  )

  app.get(
    '/members',
    {
      config: admin,
      schema: routeSchema({
        summary: 'The Raft members: role, online, leader (admin).',
        response: { 200: membersSchema },
      }),
    },
    async () => context.backend.status(),
  )
}
