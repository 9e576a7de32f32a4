// The API's own refusals (authentication, authorization, CSRF, lockout,
// validation). Each has a stable code; src/control/control-errors.ts maps
// codes to HTTP statuses, so the same table serves the state machine's
// refusals (StateError) and these.

import type { FastifySchemaValidationError } from 'fastify'

export class ApiError extends Error {
  readonly code: string
  /** For 429s: when the client may try again (sent as Retry-After). */
  readonly retryAfterMs: number | undefined
  constructor(code: string, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options)
    this.name = 'ApiError'
    this.code = code
    this.retryAfterMs = options?.retryAfterMs
  }
}

/** A JSON-schema validation failure as one sentence naming the field, e.g. "body.nodes must be >= 1". */
export function validationMessage(errors: FastifySchemaValidationError[], dataVar: string): string {
  const parts = errors.slice(0, 3).map((error) => {
    const path = `${dataVar}${error.instancePath.replaceAll('/', '.')}`
    const params = error.params as Record<string, unknown>
    if (error.keyword === 'required') return `${path}.${String(params.missingProperty)} is required`
    if (error.keyword === 'additionalProperties')
      return `${path}.${String(params.additionalProperty)} is not a known field`
    if (error.keyword === 'enum' && Array.isArray(params.allowedValues))
      return `${path} must be one of ${params.allowedValues.map(String).join(', ')}`
    return `${path} ${error.message ?? 'is not valid'}`
  })
  return `The request is not valid: ${parts.join('; ')}.`
}
