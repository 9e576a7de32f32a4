// Images: a user sees their own and the public ones, an admin sees all.
// Only the owner (or an admin) changes or deletes an image; someone else's
// private image answers 404 like a missing one.

import type { FastifyInstance } from 'fastify'
import type { Image } from '../state/vcluster-state.ts'
import type { Access, ApiContext, Caller } from './api-context.ts'
import { ApiError } from './api-error.ts'
import { closedObject, imageSchema } from './api-schemas.ts'
import { imageView } from './api-views.ts'
import { routeSchema } from './route-schema.ts'

const user: { access: Access } = { access: 'user' }
const idParams = closedObject({
  id: {
    type: 'string',
    minLength: 1,
    maxLength: 128,
    pattern: '^[A-Za-z0-9_-]+$',
    description: "The image's content hash, or the name of one of my images.",
  },
})

export function registerImageRoutes(app: FastifyInstance, context: ApiContext): void {
  const visible = (caller: Caller, image: Image) =>
    caller.role === 'admin' || image.owner === caller.name || image.visibility === 'public'

  /** The image `ref` names for the caller, when they may change it. */
  const ownImage = (caller: Caller, ref: string): Image => {
    const byId = context.data.images[ref]
    const image =
      byId !== undefined && visible(caller, byId)
        ? byId
        : Object.values(context.data.images).find((i) => i.owner === caller.name && i.name === ref)
    if (image === undefined)
      throw new ApiError(
        'ERR_IMAGE_NOT_FOUND',
        `${caller.name} has no image ${ref}; \`GET /api/v1/images\` lists them.`,
      )
    if (image.owner !== caller.name && caller.role !== 'admin')
      throw new ApiError(
        'ERR_FORBIDDEN',
        `The image ${image.name} belongs to ${image.owner}; only they can change it.`,
      )
    return image
  }

  const settledView = async (id: string, ready: (image: Image) => boolean) => {
    await context.settle(() => {
      const image = context.data.images[id]
      return image !== undefined && ready(image)
    })
    const image = context.data.images[id]
    if (image === undefined) throw new ApiError('ERR_IMAGE_NOT_FOUND', `The image ${id} is gone.`)
    return imageView(image)
  }

  app.get(
    '/images',
    {
      config: user,
      schema: routeSchema({
        summary: 'My images and the public ones (an admin sees all).',
        response: { 200: closedObject({ images: { type: 'array', items: imageSchema } }) },
      }),
    },
    async (request) => {
      const caller = context.caller(request)
      return {
        images: Object.values(context.data.images)
          .filter((image) => visible(caller, image))
          .sort((a, b) => a.owner.localeCompare(b.owner) || a.name.localeCompare(b.name))
          .map(imageView),
      }
    },
  )

  app.post<{ Body: { kind: 'busybox' | 'debian' } }>(
    '/images/build',
    {
      config: { access: 'admin' },
      schema: routeSchema({
        summary:
          "Build one of docklet's own images on this node (admin); it becomes a public image of the admin.",
        body: closedObject({ kind: { type: 'string', enum: ['busybox', 'debian'] } }),
        response: { 201: closedObject({ id: { type: 'string' } }) },
      }),
    },
    async (request, reply) => {
      const { id } = await context.backend.buildImage(request.body.kind)
      void reply.status(201)
      return { id }
    },
  )

  app.get(
    '/images/builds',
    {
      config: { access: 'admin' },
      schema: routeSchema({
        summary: 'Image builds running on this node, with the step each is at (admin).',
        response: {
          200: closedObject({
            builds: {
              type: 'array',
              items: closedObject({
                kind: { type: 'string' },
                step: { type: 'string' },
                startedAt: { type: 'integer' },
              }),
            },
          }),
        },
      }),
    },
    async () => ({ builds: context.backend.imageBuilds?.() ?? [] }),
  )

  for (const action of ['share', 'unshare'] as const) {
    app.post<{ Params: { id: string } }>(
      `/images/:id/${action}`,
      {
        config: user,
        schema: routeSchema({
          summary: action === 'share' ? 'Make my image public.' : 'Make my image private again.',
          params: idParams,
          body: closedObject({}),
          response: { 200: imageSchema },
        }),
      },
      async (request) => {
        const image = ownImage(context.caller(request), request.params.id)
        await context.submit({ type: `image.${action}`, at: 0, id: image.id })
        const visibility = action === 'share' ? 'public' : 'private'
        return settledView(image.id, (i) => i.visibility === visibility)
      },
    )
  }

  app.patch<{ Params: { id: string }; Body: { description: string } }>(
    '/images/:id',
    {
      config: user,
      schema: routeSchema({
        summary: "Change my image's description.",
        params: idParams,
        body: closedObject({ description: { type: 'string', maxLength: 1000 } }),
        response: { 200: imageSchema },
      }),
    },
    async (request) => {
      const image = ownImage(context.caller(request), request.params.id)
      const { description } = request.body
      await context.submit({ type: 'image.describe', at: 0, id: image.id, description })
      return settledView(image.id, (i) => i.description === description)
    },
  )

  app.delete<{ Params: { id: string } }>(
    '/images/:id',
    {
      config: user,
      schema: routeSchema({
        summary: 'Delete my image (refused while a vcluster uses it).',
        params: idParams,
        body: closedObject({}),
        response: { 200: closedObject({ ok: { type: 'boolean' }, id: { type: 'string' } }) },
      }),
    },
    async (request) => {
      const image = ownImage(context.caller(request), request.params.id)
      await context.submit({ type: 'image.delete', at: 0, id: image.id })
      await context.settle(() => context.data.images[image.id] === undefined)
      return { ok: true, id: image.id }
    },
  )
}
