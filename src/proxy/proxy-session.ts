// Who is behind a proxied request: the user of the portal session cookie,
// checked exactly as the API checks it (src/api/api-context.ts): signature
// with the cluster's session key from the replicated state, expiry, an
// active user, and neither the session nor its generation revoked. Pure over
// the state and the time, so every node answers alike without asking another.

import { parseCookies, sessionCookie } from '../api/api-context.ts'
import { readSession } from '../api/session-token.ts'
import type { ClusterData, User } from '../state/cluster-state.ts'
import { sessionGenerationOf } from '../state/session-state.ts'
import { ProxyError } from './proxy-error.ts'

/** The user of the session in `cookieHeader`; throws a 401 ProxyError saying why there is none. */
export function sessionUserOf(
  data: Readonly<ClusterData>,
  cookieHeader: string | undefined,
  nowMs: number,
): User {
  const token = parseCookies(cookieHeader).get(sessionCookie)
  if (token === undefined || token === '')
    throw new ProxyError(
      'ERR_UNAUTHENTICATED',
      401,
      'Log in to the docklet portal first to open a workspace.',
    )
  const claims = data.sessionKey === '' ? null : readSession(data.sessionKey, token)
  if (claims === null)
    throw new ProxyError(
      'ERR_SESSION_INVALID',
      401,
      'The session is not valid on this cluster; log in again.',
    )
  if (claims.expiresAt <= nowMs)
    throw new ProxyError('ERR_SESSION_EXPIRED', 401, 'The session has expired; log in again.')
  const user = data.users[claims.user]
  if (user === undefined || user.status !== 'normal')
    throw new ProxyError(
      'ERR_SESSION_INVALID',
      401,
      `The user ${claims.user} may not log in now; ask an admin.`,
    )
  // A newer generation is fine: this replica may lag behind the node that issued it.
  if (
    claims.generation < sessionGenerationOf(data, user.name) ||
    data.revokedSessions[claims.sessionId] !== undefined
  )
    throw new ProxyError(
      'ERR_SESSION_REVOKED',
      401,
      'The session was ended (logout or password change); log in again.',
    )
  return user
}
