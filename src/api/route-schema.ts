// Every route declares params, querystring, body (for writes) and response
// schemas; this fills in the parts a route has none of (an empty closed
// object, so unknown parameters are refused) and the error responses.

import type { FastifySchema } from 'fastify'
import { emptyObjectSchema, errorSchema, type JsonSchema } from './api-schemas.ts'

export interface RouteSchemaInit {
  summary: string
  description?: string
  params?: JsonSchema
  querystring?: JsonSchema
  /** Writes only: GET routes take no body. */
  body?: JsonSchema
  response: Record<number, JsonSchema>
}

export function routeSchema(init: RouteSchemaInit): FastifySchema {
  return {
    summary: init.summary,
    ...(init.description === undefined ? {} : { description: init.description }),
    params: init.params ?? emptyObjectSchema,
    querystring: init.querystring ?? emptyObjectSchema,
    ...(init.body === undefined ? {} : { body: init.body }),
    response: { ...init.response, '4xx': errorSchema, '5xx': errorSchema },
  } as FastifySchema
}
