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
  // The HTTP API (src/api/) and the allocation state it submits to.
  ERR_BAD_COMMAND: 400,
  ERR_UNKNOWN_COMMAND: 400,
  ERR_BAD_NAME: 400,
  ERR_BAD_ROLE: 400,
  ERR_BAD_STATUS: 400,
  ERR_BAD_QUOTA: 400,
  ERR_BAD_SIZE: 400,
  ERR_BAD_STATE: 400,
  ERR_BAD_SETTINGS: 400,
  ERR_BAD_IMAGE_ID: 400,
  ERR_BAD_VISIBILITY: 400,
  ERR_BAD_PORT: 400,
  ERR_BAD_PORT_RANGE: 400,
  ERR_BAD_PROTOCOL: 400,
  ERR_BAD_SESSION: 400,
  ERR_BAD_SESSION_KEY: 400,
  ERR_BAD_PASSWORD_HASH: 400,
  ERR_NOT_SUPPORTED: 400,
  ERR_UNAUTHENTICATED: 401,
  ERR_SESSION_INVALID: 401,
  ERR_SESSION_EXPIRED: 401,
  ERR_SESSION_REVOKED: 401,
  ERR_LOGIN_FAILED: 401,
  ERR_FORBIDDEN: 403,
  ERR_CSRF: 403,
  ERR_WRONG_PASSWORD: 403,
  ERR_USER_NOT_ACTIVE: 403,
  ERR_REGISTRATION_CLOSED: 403,
  ERR_QUOTA_EXCEEDED: 403,
  ERR_NOT_FOUND: 404,
  ERR_USER_NOT_FOUND: 404,
  ERR_GROUP_NOT_FOUND: 404,
  ERR_VCLUSTER_NOT_FOUND: 404,
  ERR_VNODE_NOT_FOUND: 404,
  ERR_IMAGE_NOT_FOUND: 404,
  ERR_PORT_MAPPING_NOT_FOUND: 404,
  ERR_USER_EXISTS: 409,
  ERR_GROUP_EXISTS: 409,
  ERR_VCLUSTER_EXISTS: 409,
  ERR_IMAGE_EXISTS: 409,
  ERR_PORT_MAPPING_EXISTS: 409,
  ERR_IMAGE_AMBIGUOUS: 409,
  ERR_IMAGE_IN_USE: 409,
  ERR_VCLUSTER_DELETING: 409,
  ERR_LAST_ADMIN: 409,
  ERR_LAST_VNODE: 409,
  ERR_STALE_REPORT: 409,
  ERR_NO_SUBNET: 409,
  ERR_NO_VNI: 409,
  ERR_NO_ADDRESS: 409,
  ERR_NO_PORT: 409,
  ERR_NO_ADMIN: 409,
  ERR_LOGIN_LOCKED: 429,
  ERR_RATE_LIMITED: 429,
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
