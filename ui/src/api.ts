// The one place the app calls the node: JSON over /api/v1 with the session
// cookie; every write carries the session's CSRF token (from the readable
// docklet_csrf cookie, or the login answer until the cookie is there). A
// refusal becomes an ApiFailure carrying the server's code and sentence, so
// a page shows exactly what the node said where the action was taken.

import type {
  Group,
  Host,
  Image,
  Members,
  PortMapping,
  Resources,
  Role,
  Session,
  Settings,
  User,
  UserStatus,
  Vcluster,
} from './types.ts'

const apiPrefix = '/api/v1'
const csrfCookie = 'docklet_csrf'
/** Most requests answer within the node's own request timeout. */
const requestTimeoutMs = 60_000
/** Saving a vnode or building an image copies a disk. */
const longRequestTimeoutMs = 15 * 60_000

export class ApiFailure extends Error {
  readonly status: number
  readonly code: string

  constructor(status: number, code: string, message: string) {
    super(message)
    this.name = 'ApiFailure'
    this.status = status
    this.code = code
  }
}

let csrfFromLogin: string | null = null
let onUnauthenticated: (() => void) | null = null

/** Called when the node answers 401 to a page's request: the session ended. */
export function setUnauthenticatedHandler(handler: () => void): void {
  onUnauthenticated = handler
}

function csrfToken(): string | null {
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=')
    if (name === csrfCookie && rest.length > 0) return decodeURIComponent(rest.join('='))
  }
  return csrfFromLogin
}

/** A sentence for any failure, for pages that show what went wrong. */
export function messageOf(error: unknown): string {
  if (error instanceof ApiFailure) return error.message
  if (error instanceof Error) return error.message
  return String(error)
}

async function call<T>(
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  path: string,
  options: { body?: unknown; timeoutMs?: number; quiet401?: boolean } = {},
): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' }
  let body: string | undefined
  if (method !== 'GET') {
    // Every write sends a JSON object (the API validates an empty one for start, stop, share...).
    headers['content-type'] = 'application/json'
    body = JSON.stringify(options.body ?? {})
    const token = csrfToken()
    if (token !== null) headers['x-csrf-token'] = token
  }
  let response: Response
  try {
    response = await fetch(`${apiPrefix}${path}`, {
      method,
      headers,
      body,
      credentials: 'same-origin',
      signal: AbortSignal.timeout(options.timeoutMs ?? requestTimeoutMs),
    })
  } catch (error) {
    const timedOut = (error as Error).name === 'TimeoutError'
    throw new ApiFailure(
      0,
      timedOut ? 'ERR_TIMEOUT' : 'ERR_NETWORK',
      timedOut
        ? 'The node did not answer in time; the action may still complete. Reload to see.'
        : 'The node could not be reached; check the connection and try again.',
    )
  }
  const text = await response.text()
  let data: unknown = null
  try {
    data = text === '' ? null : JSON.parse(text)
  } catch {
    data = null
  }
  if (!response.ok) {
    const error = (data as { error?: { code?: unknown; message?: unknown } } | null)?.error
    const failure = new ApiFailure(
      response.status,
      typeof error?.code === 'string' ? error.code : `HTTP_${response.status}`,
      typeof error?.message === 'string'
        ? error.message
        : `The node answered ${response.status} ${response.statusText}.`,
    )
    if (response.status === 401 && options.quiet401 !== true) onUnauthenticated?.()
    throw failure
  }
  return data as T
}

const segment = (value: string | number) => encodeURIComponent(String(value))

export const api = {
  // Session
  session: () => call<Session>('GET', '/session', { quiet401: true }),
  async login(name: string, password: string): Promise<Session> {
    const session = await call<Session>('POST', '/session', { body: { name, password }, quiet401: true })
    csrfFromLogin = session.csrfToken ?? null
    return session
  },
  async logout(all = false): Promise<void> {
    await call('DELETE', all ? '/session?all=true' : '/session', { quiet401: true })
    csrfFromLogin = null
  },
  changePassword: (oldPassword: string, newPassword: string) =>
    call<{ ok: boolean }>('POST', '/session/password', { body: { oldPassword, newPassword } }),
  register: (name: string, password: string) =>
    call<{ name: string; status: 'pending' }>('POST', '/register', { body: { name, password } }),
  settings: () => call<Settings>('GET', '/settings'),

  // Vclusters
  vclusters: () => call<{ vclusters: Vcluster[] }>('GET', '/vclusters'),
  vcluster: (name: string) => call<Vcluster>('GET', `/vclusters/${segment(name)}`),
  createVcluster: (body: { name: string; nodes: number; image: string } & Partial<Resources>) =>
    call<Vcluster>('POST', '/vclusters', { body }),
  startVcluster: (name: string) => call<Vcluster>('POST', `/vclusters/${segment(name)}/start`),
  stopVcluster: (name: string) => call<Vcluster>('POST', `/vclusters/${segment(name)}/stop`),
  deleteVcluster: (name: string) => call<{ ok: boolean }>('DELETE', `/vclusters/${segment(name)}`),
  scaleOut: (name: string, n: number) =>
    call<Vcluster>('POST', `/vclusters/${segment(name)}/scale-out`, { body: { n } }),
  scaleIn: (name: string, index: number) =>
    call<Vcluster>('POST', `/vclusters/${segment(name)}/scale-in`, { body: { index } }),
  saveVnode: (name: string, index: number, image: string, description: string) =>
    call<{ id: string }>('POST', `/vclusters/${segment(name)}/vnodes/${segment(index)}/save`, {
      body: { image, description },
      timeoutMs: longRequestTimeoutMs,
    }),
  ports: (name: string) => call<{ ports: PortMapping[] }>('GET', `/vclusters/${segment(name)}/ports`),
  addPort: (name: string, index: number, port: number) =>
    call<PortMapping>('POST', `/vclusters/${segment(name)}/ports`, { body: { index, port } }),
  removePort: (name: string, publicPort: number) =>
    call<{ ok: boolean }>('DELETE', `/vclusters/${segment(name)}/ports/${segment(publicPort)}`),

  // Images
  images: () => call<{ images: Image[] }>('GET', '/images'),
  shareImage: (id: string) => call<Image>('POST', `/images/${segment(id)}/share`),
  unshareImage: (id: string) => call<Image>('POST', `/images/${segment(id)}/unshare`),
  describeImage: (id: string, description: string) =>
    call<Image>('PATCH', `/images/${segment(id)}`, { body: { description } }),
  deleteImage: (id: string) => call<{ ok: boolean }>('DELETE', `/images/${segment(id)}`),
  buildImage: (kind: 'busybox' | 'debian') =>
    call<{ id: string }>('POST', '/images/build', { body: { kind }, timeoutMs: longRequestTimeoutMs }),

  // Admin
  users: () => call<{ users: User[] }>('GET', '/users'),
  addUser: (body: { name: string; password: string; role: Role; group?: string }) =>
    call<User>('POST', '/users', { body }),
  modifyUser: (name: string, body: { role?: Role; group?: string; status?: UserStatus; password?: string }) =>
    call<User>('PATCH', `/users/${segment(name)}`, { body }),
  disableUser: (name: string) => call<User>('POST', `/users/${segment(name)}/disable`),
  groups: () => call<{ groups: Group[] }>('GET', '/groups'),
  addGroup: (name: string, quota: Partial<Group['quota']>) =>
    call<Group>('POST', '/groups', { body: { name, quota } }),
  setGroupQuota: (name: string, quota: Partial<Group['quota']>) =>
    call<Group>('PATCH', `/groups/${segment(name)}`, { body: { quota } }),
  setRegistration: (open: boolean) => call<Settings>('PUT', '/settings/registration', { body: { open } }),
  setPortRange: (min: number, max: number) =>
    call<Settings>('PUT', '/settings/ports', { body: { min, max } }),
  hosts: () => call<{ hosts: Host[] }>('GET', '/hosts'),
  members: () => call<Members>('GET', '/members'),
  drainHost: (id: string, evacuate: boolean) =>
    call<Host & { evacuation?: { moving: number; stuck: number } }>('POST', `/hosts/${segment(id)}/drain`, {
      body: evacuate ? { evacuate } : {},
    }),
  undrainHost: (id: string) => call<Host>('POST', `/hosts/${segment(id)}/undrain`),
}
