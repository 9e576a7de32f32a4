// The OpenAPI 3.1 document, generated from the routes' own schemas (the ones
// fastify validates and serializes with), so it cannot drift from what the
// API does. OpenAPI 3.1 uses JSON Schema as is; only params and querystring
// are split into parameter objects.

import type { Access } from './api-context.ts'
import type { JsonSchema } from './api-schemas.ts'

export interface RouteRecord {
  method: string
  /** Fastify syntax, with the prefix: /api/v1/vclusters/:name */
  url: string
  access: Access
  schema: Record<string, unknown> | undefined
}

export interface OpenApiInfo {
  title: string
  version: string
}

type Operation = Record<string, unknown>

function properties(schema: unknown): Array<[string, JsonSchema, boolean]> {
  const object = schema as { properties?: Record<string, JsonSchema>; required?: string[] } | undefined
  if (object?.properties === undefined) return []
  const required = new Set(object.required ?? [])
  return Object.entries(object.properties).map(([name, property]) => [name, property, required.has(name)])
}

function parameters(schema: Record<string, unknown>): Operation[] {
  const result: Operation[] = []
  for (const [where, key] of [
    ['path', 'params'],
    ['query', 'querystring'],
  ] as const) {
    for (const [name, property, required] of properties(schema[key])) {
      const { description, ...rest } = property as { description?: string }
      result.push({
        name,
        in: where,
        required: where === 'path' ? true : required,
        ...(description === undefined ? {} : { description }),
        schema: rest,
      })
    }
  }
  return result
}

function responses(schema: Record<string, unknown>): Operation {
  const result: Operation = {}
  for (const [code, body] of Object.entries((schema.response ?? {}) as Record<string, JsonSchema>)) {
    const description =
      typeof body.description === 'string'
        ? body.description
        : code.startsWith('2')
          ? 'Success.'
          : 'The request was refused.'
    result[code.toUpperCase()] = { description, content: { 'application/json': { schema: body } } }
  }
  return result
}

/** `/api/v1/vclusters/:name` -> `/api/v1/vclusters/{name}` */
export function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')
}

function operationId(method: string, path: string): string {
  const words = path
    .replace(/^\/api\/v1\//, '')
    .split(/[/{}-]+/)
    .filter((word) => word !== '')
  return [method.toLowerCase(), ...words.map((word) => word[0]!.toUpperCase() + word.slice(1))].join('')
}

export function openApiDocument(routes: RouteRecord[], info: OpenApiInfo): Record<string, unknown> {
  const paths: Record<string, Record<string, Operation>> = {}
  for (const route of routes) {
    const schema = route.schema ?? {}
    const path = openApiPath(route.url)
    const tag = path.split('/')[3] ?? 'api'
    const operation: Operation = {
      operationId: operationId(route.method, path),
      summary: typeof schema.summary === 'string' ? schema.summary : '',
      tags: [tag],
      'x-docklet-access': route.access,
      security: route.access === 'public' ? [] : [{ session: [] }, { controlSocket: [] }],
      parameters: parameters(schema),
      responses: responses(schema),
    }
    if (schema.body !== undefined)
      operation.requestBody = { required: true, content: { 'application/json': { schema: schema.body } } }
    paths[path] ??= {}
    paths[path][route.method.toLowerCase()] = operation
  }
  return {
    openapi: '3.1.0',
    info: {
      ...info,
      description:
        'The docklet HTTP API. Every refusal answers {error: {code, message}} with a stable code. ' +
        'Portal writes need the X-CSRF-Token header from the login answer (or the docklet_csrf cookie). ' +
        'On the control socket the caller is the cluster admin; X-Docklet-User: NAME acts as NAME.',
    },
    components: {
      securitySchemes: {
        session: { type: 'apiKey', in: 'cookie', name: 'docklet_session' },
        controlSocket: {
          type: 'apiKey',
          in: 'header',
          name: 'X-Docklet-User',
          description:
            'The root-only control socket: the caller is the cluster admin, optionally acting as NAME.',
        },
      },
    },
    paths,
  }
}
