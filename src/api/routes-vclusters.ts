import { randomBytes } from 'node:crypto'
import { waitForState } from './wait-for-state.ts'
// Vclusters, their vnodes (exec, save as image) and their port mappings.
// Every lookup is by name among the caller's own vclusters (the acting
// user's, under X-Docklet-User): another user's vcluster answers 404 exactly
// like a missing one, so its existence is not revealed.

import type { FastifyInstance } from 'fastify'
import { portMappingsOf } from '../state/port-state.ts'
import type { Resources } from '../state/scheduler.ts'
import type { Vcluster, Vnode } from '../state/vcluster-state.ts'
import { type Access, type ApiContext, defaultExecTimeoutMs } from './api-context.ts'
import { ApiError } from './api-error.ts'
import { closedObject, nameSchema, portMappingSchema, vclusterSchema } from './api-schemas.ts'
import { portMappingView, vclusterView } from './api-views.ts'
import { routeSchema } from './route-schema.ts'

/** What a vnode gets when the request leaves a limit out (fits the default quota 4 times). */
export const defaultVnodeLimits: Resources = { cpuCores: 1, memoryMb: 500, diskMb: 500 }
export const execArgvMax = 256
/** The longest a GET may wait for a vcluster to reach a state. */
export const waitMsMax = 30_000
export const execArgCharsMax = 8192

const user: { access: Access } = { access: 'user' }
const nameParams = closedObject({ name: nameSchema })
const vnodeParams = closedObject({ name: nameSchema, index: { type: 'integer', minimum: 0 } })
const positive = { type: 'integer', minimum: 1 } as const
const ok = closedObject({ ok: { type: 'boolean' }, id: { type: 'string' } })

function liveVnode(vcluster: Vcluster, index: number): Vnode {
  const vnode = vcluster.vnodes.find((v) => v.index === index && v.desired !== 'deleted')
  if (vnode === undefined)
    throw new ApiError('ERR_VNODE_NOT_FOUND', `The vcluster ${vcluster.name} has no vnode ${index}.`)
  return vnode
}

export function registerVclusterRoutes(app: FastifyInstance, context: ApiContext): void {
  /** The vcluster by id as this replica has it now, once `ready` holds (bounded wait). */
  const settled = async (id: string, ready: (vcluster: Vcluster) => boolean) => {
    await context.settle(() => {
      const vcluster = context.backend.state.vcluster(id)
      return vcluster !== undefined && ready(vcluster)
    })
    const vcluster = context.backend.state.vcluster(id)
    if (vcluster === undefined) throw new ApiError('ERR_VCLUSTER_NOT_FOUND', `The vcluster ${id} is gone.`)
    return vclusterView(vcluster)
  }

  app.get<{ Querystring: { user?: string; all?: boolean } }>(
    '/vclusters',
    {
      config: user,
      schema: routeSchema({
        summary: "My vclusters; an admin may list another user's (?user=U) or everyone's (?all=true).",
        querystring: closedObject({ user: nameSchema, all: { type: 'boolean' } }, { required: [] }),
        response: { 200: closedObject({ vclusters: { type: 'array', items: vclusterSchema } }) },
      }),
    },
    async (request) => {
      const caller = context.caller(request)
      const { all } = request.query
      const owner = request.query.user ?? caller.name
      if ((all === true || owner !== caller.name) && caller.role !== 'admin')
        throw new ApiError('ERR_FORBIDDEN', "Only an admin may list other users' vclusters.")
      return {
        vclusters: Object.values(context.data.vclusters)
          .filter((vcluster) => all === true || vcluster.owner === owner)
          .sort((a, b) => Number(a.id) - Number(b.id))
          .map(vclusterView),
      }
    },
  )

  app.post<{
    Body: {
      name: string
      nodes: number
      image: string
      cpuCores?: number
      memoryMb?: number
      diskMb?: number
    }
  }>(
    '/vclusters',
    {
      config: user,
      schema: routeSchema({
        summary: 'Create a vcluster of `nodes` vnodes from an image (id, or name of mine or a public one).',
        body: closedObject(
          {
            name: nameSchema,
            nodes: positive,
            image: { type: 'string', minLength: 1, maxLength: 128 },
            cpuCores: positive,
            memoryMb: positive,
            diskMb: positive,
          },
          { required: ['name', 'nodes', 'image'] },
        ),
        response: { 201: vclusterSchema },
      }),
    },
    async (request, reply) => {
      const caller = context.caller(request)
      const body = request.body
      const result = await context.submit({
        type: 'vcluster.create',
        at: 0,
        owner: caller.name,
        name: body.name,
        nodes: body.nodes,
        image: body.image,
        limits: {
          cpuCores: body.cpuCores ?? defaultVnodeLimits.cpuCores,
          memoryMb: body.memoryMb ?? defaultVnodeLimits.memoryMb,
          diskMb: body.diskMb ?? defaultVnodeLimits.diskMb,
        },
        secret: randomBytes(24).toString('hex'),
      })
      const id = String(result.id)
      await context.mustSettle(
        () => context.backend.state.vcluster(id) !== undefined,
        `The vcluster ${body.name}`,
      )
      void reply.status(201)
      return vclusterView(context.backend.state.vcluster(id)!)
    },
  )

  app.get<{ Params: { name: string }; Querystring: { wait?: 'running' | 'stopped'; waitMs?: number } }>(
    '/vclusters/:name',
    {
      config: user,
      schema: routeSchema({
        summary:
          'One of my vclusters, with its vnodes. With ?wait=running|stopped the answer waits (up to ' +
          'waitMs, at most 30 s) until every vnode is there or one failed, so clients need not poll.',
        params: nameParams,
        querystring: closedObject(
          {
            wait: { type: 'string', enum: ['running', 'stopped'] },
            waitMs: { type: 'integer', minimum: 0, maximum: waitMsMax },
          },
          { required: [] },
        ),
        response: { 200: vclusterSchema },
      }),
    },
    async (request) => {
      const caller = context.caller(request)
      const vcluster = context.vcluster(caller, request.params.name)
      const { wait, waitMs } = request.query
      if (wait !== undefined) {
        const id = vcluster.id
        const done = () => {
          const now = context.backend.state.vcluster(id)
          if (now === undefined) return true
          const live = now.vnodes.filter((vnode) => vnode.desired !== 'deleted')
          // Done when all are there, or when one failed or waits for room (waiting longer changes nothing).
          return (
            live.some((vnode) => vnode.observed === 'error' || vnode.host === null) ||
            live.every((vnode) => vnode.observed === wait)
          )
        }
        await waitForState(context.backend.state, done, waitMs ?? 10_000)
      }
      return vclusterView(context.vcluster(caller, request.params.name))
    },
  )

  for (const action of ['start', 'stop'] as const) {
    app.post<{ Params: { name: string } }>(
      `/vclusters/:name/${action}`,
      {
        config: user,
        schema: routeSchema({
          summary:
            action === 'start' ? 'Start my vcluster.' : 'Stop my vcluster (its vnodes keep their disks).',
          params: nameParams,
          body: closedObject({}),
          response: { 200: vclusterSchema },
        }),
      },
      async (request) => {
        const vcluster = context.vcluster(context.caller(request), request.params.name)
        await context.submit({ type: `vcluster.${action}`, at: 0, vcluster: vcluster.id })
        const desired = action === 'start' ? 'running' : 'stopped'
        return settled(vcluster.id, (vc) => vc.desired === desired)
      },
    )
  }

  app.post<{ Params: { name: string }; Body: { n: number } }>(
    '/vclusters/:name/scale-out',
    {
      config: user,
      schema: routeSchema({
        summary: 'Add n vnodes to my vcluster.',
        params: nameParams,
        body: closedObject({ n: positive }),
        response: { 200: vclusterSchema },
      }),
    },
    async (request) => {
      const vcluster = context.vcluster(context.caller(request), request.params.name)
      const result = await context.submit({
        type: 'vcluster.scale-out',
        at: 0,
        vcluster: vcluster.id,
        n: request.body.n,
      })
      const added = (result.vnodes as Array<{ index: number }> | undefined)?.map((vnode) => vnode.index) ?? []
      return settled(vcluster.id, (vc) => added.every((index) => vc.vnodes.some((v) => v.index === index)))
    },
  )

  app.post<{ Params: { name: string }; Body: { index: number } }>(
    '/vclusters/:name/scale-in',
    {
      config: user,
      schema: routeSchema({
        summary: 'Remove vnode `index` from my vcluster.',
        params: nameParams,
        body: closedObject({ index: { type: 'integer', minimum: 0 } }),
        response: { 200: vclusterSchema },
      }),
    },
    async (request) => {
      const vcluster = context.vcluster(context.caller(request), request.params.name)
      const { index } = request.body
      await context.submit({ type: 'vcluster.scale-in', at: 0, vcluster: vcluster.id, index })
      return settled(
        vcluster.id,
        (vc) => !vc.vnodes.some((v) => v.index === index && v.desired !== 'deleted'),
      )
    },
  )

  app.delete<{ Params: { name: string } }>(
    '/vclusters/:name',
    {
      config: user,
      schema: routeSchema({
        summary: 'Delete my vcluster and its vnodes.',
        params: nameParams,
        body: closedObject({}),
        response: { 200: ok },
      }),
    },
    async (request) => {
      const vcluster = context.vcluster(context.caller(request), request.params.name)
      await context.submit({ type: 'vcluster.delete', at: 0, vcluster: vcluster.id })
      await context.settle(() => {
        const vc = context.backend.state.vcluster(vcluster.id)
        return vc === undefined || vc.status === 'deleting'
      })
      return { ok: true, id: vcluster.id }
    },
  )

  app.post<{ Params: { name: string; index: number }; Body: { argv: string[]; timeoutMs?: number } }>(
    '/vclusters/:name/vnodes/:index/exec',
    {
      config: user,
      schema: routeSchema({
        summary: 'Run a command (argument array, no shell) as root in one of my vnodes.',
        params: vnodeParams,
        body: closedObject(
          {
            argv: {
              type: 'array',
              minItems: 1,
              maxItems: execArgvMax,
              items: { type: 'string', maxLength: execArgCharsMax },
            },
            timeoutMs: { type: 'integer', minimum: 1, maximum: context.execTimeoutMsMax },
          },
          { required: ['argv'] },
        ),
        response: {
          200: closedObject({
            exitCode: { type: 'integer' },
            stdout: { type: 'string' },
            stderr: { type: 'string' },
          }),
        },
      }),
    },
    async (request) => {
      const vcluster = context.vcluster(context.caller(request), request.params.name)
      const vnode = liveVnode(vcluster, request.params.index)
      const timeoutMs = request.body.timeoutMs ?? Math.min(defaultExecTimeoutMs, context.execTimeoutMsMax)
      const result = await context.backend.execVnode(vcluster.id, vnode.index, request.body.argv, {
        timeoutMs,
      })
      return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr }
    },
  )

  app.post<{ Params: { name: string; index: number }; Body: { image: string; description?: string } }>(
    '/vclusters/:name/vnodes/:index/save',
    {
      config: user,
      schema: routeSchema({
        summary: "Save one of my vnodes' disk as a new private image of mine.",
        params: vnodeParams,
        body: closedObject(
          { image: nameSchema, description: { type: 'string', maxLength: 1000 } },
          { required: ['image'] },
        ),
        response: { 201: closedObject({ id: { type: 'string' } }) },
      }),
    },
    async (request, reply) => {
      const caller = context.caller(request)
      const vcluster = context.vcluster(caller, request.params.name)
      const vnode = liveVnode(vcluster, request.params.index)
      const { image, description } = request.body
      if (Object.values(context.data.images).some((i) => i.owner === caller.name && i.name === image))
        throw new ApiError(
          'ERR_IMAGE_EXISTS',
          `${caller.name} already has an image named ${image}; pick another name.`,
        )
      const { id } = await context.backend.saveVnode(vcluster.id, vnode.index, {
        name: image,
        owner: caller.name,
        description: description ?? '',
      })
      void reply.status(201)
      return { id }
    },
  )

  app.get<{ Params: { name: string } }>(
    '/vclusters/:name/ports',
    {
      config: user,
      schema: routeSchema({
        summary: 'The port mappings of my vcluster.',
        params: nameParams,
        response: { 200: closedObject({ ports: { type: 'array', items: portMappingSchema } }) },
      }),
    },
    async (request) => {
      const caller = context.caller(request)
      const vcluster = context.vcluster(caller, request.params.name)
      return {
        ports: portMappingsOf(context.data, caller.name)
          .filter((mapping) => mapping.vcluster === vcluster.id)
          .map((mapping) => portMappingView(context.data, mapping)),
      }
    },
  )

  app.post<{ Params: { name: string }; Body: { index: number; port: number; protocol?: 'tcp' } }>(
    '/vclusters/:name/ports',
    {
      config: user,
      schema: routeSchema({
        summary: 'Publish TCP port `port` of vnode `index` on a public port of every node.',
        params: nameParams,
        body: closedObject(
          {
            index: { type: 'integer', minimum: 0 },
            port: { type: 'integer', minimum: 1, maximum: 65_535 },
            protocol: { type: 'string', enum: ['tcp'] },
          },
          { required: ['index', 'port'] },
        ),
        response: { 201: portMappingSchema },
      }),
    },
    async (request, reply) => {
      const caller = context.caller(request)
      const vcluster = context.vcluster(caller, request.params.name)
      const { index, port } = request.body
      liveVnode(vcluster, index)
      const result = await context.submit({
        type: 'port.add',
        at: 0,
        owner: caller.name,
        vcluster: vcluster.id,
        index,
        port,
        protocol: 'tcp',
      })
      const key = String(result.publicPort)
      await context.mustSettle(() => context.data.portMappings[key] !== undefined, `The port mapping ${key}`)
      void reply.status(201)
      return portMappingView(context.data, context.data.portMappings[key]!)
    },
  )

  app.delete<{ Params: { name: string; publicPort: number } }>(
    '/vclusters/:name/ports/:publicPort',
    {
      config: user,
      schema: routeSchema({
        summary: 'Remove a port mapping of my vcluster.',
        params: closedObject({
          name: nameSchema,
          publicPort: { type: 'integer', minimum: 1, maximum: 65_535 },
        }),
        body: closedObject({}),
        response: { 200: closedObject({ ok: { type: 'boolean' }, publicPort: { type: 'integer' } }) },
      }),
    },
    async (request) => {
      const caller = context.caller(request)
      const vcluster = context.vcluster(caller, request.params.name)
      const { publicPort } = request.params
      const mapping = context.data.portMappings[String(publicPort)]
      if (mapping === undefined || mapping.owner !== caller.name || mapping.vcluster !== vcluster.id)
        throw new ApiError(
          'ERR_PORT_MAPPING_NOT_FOUND',
          `The vcluster ${vcluster.name} has no port mapping on public port ${publicPort}.`,
        )
      await context.submit({ type: 'port.remove', at: 0, owner: caller.name, publicPort })
      await context.settle(() => context.data.portMappings[String(publicPort)] === undefined)
      return { ok: true, publicPort }
    },
  )
}
