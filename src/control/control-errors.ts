// One table from error codes to HTTP statuses, and one error shape
// ({error: {code, message}}) for the control socket (and later the API).

const STATUS_BY_CODE: Record<string, number> = {
  ERR_BAD_REQUEST: 400,
  FST_ERR_VALIDATION: 400,
  ERR_NODE_CONFIG: 400,
  ERR_TOKEN_FORMAT: 400,
  ERR_TOKEN_INVALID: 403,
  ERR_TOKEN_REVOKED: 403,
  ERR_TOKEN_USED: 403,
  ERR_TOKEN_EXPIRED: 403,
  ERR_RPC_FORBIDDEN: 403,
  ERR_MEMBER_NOT_FOUND: 404,
  ERR_TOKEN_NOT_FOUND: 404,
  ERR_MEMBER_EXISTS: 409,
  ERR_TOKEN_EXISTS: 409,
  ERR_MEMBER_ONLINE: 409,
  ERR_LAST_MEMBER: 409,
  ERR_REMOVE_SELF: 409,
  ERR_ALREADY_INITIALIZED: 409,
  ERR_NOT_INITIALIZED: 409,
  ERR_QUORUM_LOST: 503,
  ERR_STOPPED: 503,
  ERR_TIMEOUT: 504,
}

export function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : 'ERR_INTERNAL'
}

export function statusForError(error: unknown): number {
  const code = codeOf(error)
  if (code === 'FST_ERR_VALIDATION' || (error as { validation?: unknown }).validation !== undefined)
    return 400
  return STATUS_BY_CODE[code] ?? 500
}

export function errorBody(error: unknown): { error: { code: string; message: string } } {
  const code =
    (error as { validation?: unknown }).validation !== undefined ? 'ERR_BAD_REQUEST' : codeOf(error)
  const message = error instanceof Error ? error.message : String(error)
  return { error: { code, message } }
}
