// Images: a user sees their own and the public ones, an admin sees all.
// Only the owner (or an admin) changes, deletes or exports an image; someone
// else's private image answers 404 like a missing one. Export and import move
// an image as a tar (manifest.json, then rootfs/), streamed both ways: the
// import route is the one route whose body is not a small JSON document.

import { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { IMPORT_BYTES_MAX } from '../../runtime/index.ts'
import type { Image } from '../state/vcluster-state.ts'
import type { Access, ApiContext, Caller } from './api-context.ts'
import { ApiError } from './api-error.ts'
import { closedObject, imageSchema, nameSchema } from './api-schemas.ts'
import { imageView } from './api-views.ts'
import { routeSchema } from './route-schema.ts'

const user: { access: Access } = { access: 'user' }
export const imageTarType = 'application/x-tar'
const imageTarSchema = {
  description:
    'The image as a tar: manifest.json, then rootfs/ (what GET /api/v1/images/{id}/export answers).',
  contentMediaType: imageTarType,
} as const
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
  const ownImage = (caller: Caller, ref: string, verb: 'change' | 'export' = 'change'): Image => {
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
        `The image ${image.name} belongs to ${image.owner}; only they can ${verb} it.`,
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

  // The tar reaches the handler unread; the backend streams it to disk.
  app.addContentTypeParser(imageTarType, (_request, payload, done) => done(null, payload))

  app.post<{ Querystring: { name?: string; description?: string; public?: boolean }; Body: unknown }>(
    '/images/import',
    {
      config: { access: 'admin' },
      bodyLimit: IMPORT_BYTES_MAX,
      schema: routeSchema({
        summary:
          'Import an image tar on this node (admin); it becomes an image of the admin, private unless public=true.',
        description:
          `The body is the tar, with Content-Type: ${imageTarType}, at most ${IMPORT_BYTES_MAX} bytes. ` +
          'It is accepted only when its tree hashes to the hash in its manifest. ' +
          'An image the cluster knows already answers 200 (this node holds it now too), a new one 201.',
        querystring: closedObject(
          {
            name: { ...nameSchema, description: "The image's name (default: the name in its manifest)." },
            description: { type: 'string', maxLength: 1000 },
            public: { type: 'boolean', description: 'Share the image with every user.' },
          },
          { required: [] },
        ),
        body: imageTarSchema,
        response: { 200: imageSchema, 201: imageSchema },
      }),
    },
    async (request, reply) => {
      const tar = request.body
      if (!(tar instanceof Readable))
        throw new ApiError(
          'ERR_BAD_REQUEST',
          `Send the image tar as the request body with Content-Type: ${imageTarType} (\`docklet image export\` writes one).`,
        )
      const declaredBytes = Number(request.headers['content-length'] ?? 0)
      if (declaredBytes > IMPORT_BYTES_MAX)
        throw new ApiError(
          'ERR_BAD_REQUEST',
          `The image tar has ${declaredBytes} bytes; a node imports at most ${IMPORT_BYTES_MAX}.`,
        )
      if (context.backend.importImage === undefined)
        throw new ApiError('ERR_NOT_SUPPORTED', 'This node does not import images.')
      const caller = context.caller(request)
      const { name, description, public: isPublic } = request.query
      const { id, registered } = await context.backend.importImage(tar, {
        ...(name === undefined ? {} : { name }),
        owner: caller.name,
        description: description ?? '',
        visibility: isPublic === true ? 'public' : 'private',
      })
      void reply.status(registered ? 201 : 200)
      return settledView(id, (image) => image.hosts.includes(context.backend.nodeId))
    },
  )

  app.get<{ Params: { id: string } }>(
    '/images/:id/export',
    {
      config: user,
      schema: routeSchema({
        summary: 'Download my image as a tar (an admin, any image), from any node.',
        description:
          'The tar holds manifest.json and rootfs/ and is what POST /api/v1/images/import takes. ' +
          'A node that does not hold the image fetches it from one that does first.',
        params: idParams,
        response: { 200: { type: 'string', ...imageTarSchema } },
      }),
    },
    async (request, reply) => {
      const caller = context.caller(request)
      const image = ownImage(caller, request.params.id, 'export')
      if (context.backend.exportImage === undefined)
        throw new ApiError('ERR_NOT_SUPPORTED', 'This node does not export images.')
      const { stream, sizeBytes } = await context.backend.exportImage(image.id)
      void reply
        .header('content-type', imageTarType)
        .header('content-length', String(sizeBytes))
        .header('content-disposition', `attachment; filename="${image.name}.tar"`)
      return reply.send(stream)
    },
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
