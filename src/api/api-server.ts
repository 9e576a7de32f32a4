// The HTTP API under /api/v1, as a fastify plugin (buildApi) that either the
// portal listener (buildApiServer, sessions in cookies, CSRF) or the node's
// root-only control socket (mode 'local-admin') registers.
//
// Order of checks on a request: route found (404), then who is calling
// (401), CSRF (403) and admin-only (403) from the headers alone, then the
// body against the route's JSON Schema (400 naming the field), then the
// handler, whose ownership lookups answer 404 for what the caller may not
// see. Every refusal has the shape {error: {code, message}}; statuses come
// from the one table in src/control/control-errors.ts.

import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyPluginAsync,
  type FastifyRequest,
} from 'fastify'
import { codeOf, errorBody, statusForError } from '../control/control-errors.ts'
import { type Access, ApiContext, type ApiOptions } from './api-context.ts'
import { ApiError, validationMessage } from './api-error.ts'
import { type OpenApiInfo, openApiDocument, type RouteRecord } from './openapi.ts'
import { routeSchema } from './route-schema.ts'
import { registerHostRoutes } from './routes-hosts.ts'
import { registerImageRoutes } from './routes-images.ts'
import { registerSessionRoutes } from './routes-session.ts'
import { registerUserRoutes } from './routes-users.ts'
import { registerVclusterRoutes } from './routes-vclusters.ts'
import { registerUiStatic, type UiStaticOptions } from './ui-static.ts'

export const apiPrefix = '/api/v1'
/** Request bodies are small JSON documents; nothing the API takes needs more. */
export const apiBodyBytesMax = 64 * 1024

/**
 * Fastify options for an app that serves the API: unknown fields are refused
 * (not silently dropped), so a typo in a client is an error.
 */
export const apiFastifyOptions = {
  logger: false,
  bodyLimit: apiBodyBytesMax,
  ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array' as const, useDefaults: true } },
}

const safeMethods: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

function accessOf(request: FastifyRequest): Access {
  const access = (request.routeOptions.config as { access?: Access } | undefined)?.access
  // A route that forgot to say is treated as admin-only rather than open.
  return access ?? 'admin'
}

function errorReply(error: unknown): { status: number; body: { error: { code: string; message: string } } } {
  const fastifyError = error as Partial<FastifyError>
  if (fastifyError.validation !== undefined)
    return {
      status: 400,
      body: { error: { code: 'ERR_BAD_REQUEST', message: String(fastifyError.message) } },
    }
  const code = codeOf(error)
  const statusCode = fastifyError.statusCode ?? 0
  // Fastify's own refusals (bad JSON, wrong content type, body too large) keep their status.
  if (code.startsWith('FST_') && statusCode >= 400 && statusCode < 500) {
    const message =
      statusCode === 415
        ? 'The request body must be JSON, sent with Content-Type: application/json.'
        : statusCode === 413
          ? `The request body is larger than the ${apiBodyBytesMax} bytes the API accepts.`
          : `The request is not valid: ${String(fastifyError.message)}.`
    return { status: statusCode, body: { error: { code: 'ERR_BAD_REQUEST', message } } }
  }
  const status = statusForError(error)
  if (status >= 500 && code === 'ERR_INTERNAL')
    return {
      status,
      body: { error: { code, message: 'The node failed to handle the request; its log has the details.' } },
    }
  return { status, body: errorBody(error) }
}

export function buildApi(options: ApiOptions & { info?: OpenApiInfo }): FastifyPluginAsync {
  return async (parent) => {
    const context = new ApiContext(options)
    const routes: RouteRecord[] = []
    await parent.register(
      async (app) => {
        app.addHook('onRoute', (route) => {
          route.bodyLimit ??= apiBodyBytesMax
          if (route.method === 'HEAD') return
          const methods = Array.isArray(route.method) ? route.method : [route.method]
          for (const method of methods)
            routes.push({
              method: String(method),
              url: route.url,
              access: (route.config as { access?: Access } | undefined)?.access ?? 'admin',
              schema: route.schema as Record<string, unknown> | undefined,
            })
        })
        app.setSchemaErrorFormatter(
          (errors, dataVar) => new ApiError('ERR_BAD_REQUEST', validationMessage(errors, dataVar)),
        )
        app.setErrorHandler((error, request, reply) => {
          const { status, body } = errorReply(error)
          if (status >= 500) request.log.error({ err: error }, 'API request failed')
          if (error instanceof ApiError && error.retryAfterMs !== undefined)
            void reply.header('retry-after', String(Math.ceil(error.retryAfterMs / 1000)))
          void reply.status(status).send(body)
        })
        app.setNotFoundHandler((request, reply) => {
          void reply.status(404).send({
            error: {
              code: 'ERR_NOT_FOUND',
              message: `There is no ${request.method} ${request.url.split('?')[0]}; ${apiPrefix}/openapi.json lists the routes.`,
            },
          })
        })
        app.addHook('onRequest', async (request) => {
          if (request.is404) return
          context.authorize(request, accessOf(request))
        })
        // A write without a body (start, stop, share...) validates as an empty object.
        app.addHook('preValidation', async (request) => {
          if (request.body === undefined && !safeMethods.has(request.method)) request.body = {}
        })

        registerSessionRoutes(app, context)
        registerUserRoutes(app, context)
        registerVclusterRoutes(app, context)
        registerImageRoutes(app, context)
        registerHostRoutes(app, context)

        let document: Record<string, unknown> | null = null
        app.get(
          '/openapi.json',
          {
            config: { access: 'public' },
            schema: routeSchema({
              summary: 'This document.',
              response: { 200: { type: 'object', additionalProperties: true } },
            }),
          },
          async () => {
            document ??= openApiDocument(routes, options.info ?? { title: 'docklet', version: '1' })
            return document
          },
        )
      },
      { prefix: apiPrefix },
    )
  }
}

/** The portal's app: the API with sessions in cookies and CSRF checks, and the browser app; not yet listening. */
export function buildApiServer(
  options: Omit<ApiOptions, 'mode'> & { info?: OpenApiInfo; ui?: UiStaticOptions },
): FastifyInstance {
  const app = Fastify(apiFastifyOptions)
  void app.register(buildApi({ ...options, mode: 'portal' }))
  registerUiStatic(app, options.ui)
  return app
}
