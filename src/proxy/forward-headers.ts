// The headers a proxied request and its response carry on. Pure functions
// over Node's raw header lists (name, value, name, value…), so repeated
// headers (Set-Cookie) and their order survive.
//
// Towards the workspace: hop-by-hop headers (RFC 9110 §7.6.1) are dropped,
// so are the portal's session and CSRF cookies and headers (code in the
// vnode must never see a session that works on the portal), the client's
// Authorization (the proxy presents the workspace token itself), and any
// X-Forwarded-*/Forwarded the client made up. The first node sets
// X-Forwarded-For/-Proto/-Host from its connection; a node that receives a
// verified hop keeps the ones the first node set. The Host header goes on
// unchanged: Jupyter compares a WebSocket's Origin with it.

import { hopHeader } from './hop-token.ts'
import { actAsHeader, csrfCookie, csrfHeader, sessionCookie } from './portal-names.ts'

/** Headers of one connection, never forwarded either way (RFC 9110 §7.6.1). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

const FORWARDED: ReadonlySet<string> = new Set([
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-real-ip',
])

/** Request headers only the portal reads (the hop header is set anew by whoever forwards). */
const PORTAL_ONLY: ReadonlySet<string> = new Set(['authorization', csrfHeader, actAsHeader, hopHeader])

const PORTAL_COOKIES: ReadonlySet<string> = new Set([sessionCookie, csrfCookie])

export interface ForwardedFor {
  /** The client's address. */
  for: string
  proto: 'http' | 'https'
  /** The Host the client asked for ('' when it sent none). */
  host: string
}

export interface RequestHeaderOptions {
  /** Set X-Forwarded-* from the client connection; 'keep' passes on those of a verified hop. */
  forwarded: ForwardedFor | 'keep'
  /** The Authorization to present ('token <secret>' towards Jupyter), or null for none. */
  authorization: string | null
  /** The hop header value towards another node, or null. */
  hop: string | null
  /** A WebSocket (or other) upgrade: Connection and Upgrade go on. */
  upgrade: boolean
  /** The body is sent chunked (the client sent it so; Node has decoded it). */
  chunked: boolean
}

/** Header names the Connection header lists beyond the hop-by-hop ones (null: none, the usual case). */
function connectionTokens(rawHeaders: readonly string[]): Set<string> | null {
  let tokens: Set<string> | null = null
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    if (name.length !== 10 || name.toLowerCase() !== 'connection') continue
    for (const token of rawHeaders[i + 1]!.split(',')) {
      const word = token.trim().toLowerCase()
      if (word !== '' && !HOP_BY_HOP.has(word)) (tokens ??= new Set()).add(word)
    }
  }
  return tokens
}

/** The Cookie header without the portal's cookies; null when nothing is left. */
export function withoutPortalCookies(header: string): string | null {
  let kept = ''
  let from = 0
  while (from < header.length) {
    let end = header.indexOf(';', from)
    if (end < 0) end = header.length
    const part = header.slice(from, end).trim()
    from = end + 1
    if (part === '') continue
    const eq = part.indexOf('=')
    const name = (eq < 0 ? part : part.slice(0, eq)).trim()
    if (name === '' || PORTAL_COOKIES.has(name)) continue
    kept = kept === '' ? part : `${kept}; ${part}`
  }
  return kept === '' ? null : kept
}

/** The client address as people write it (no IPv4-mapped IPv6 prefix). */
export function plainAddress(address: string | undefined): string {
  if (address === undefined) return ''
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}

/**
 * The request head (request line, headers, blank line) to send on to the
 * workspace or the next node, as one latin1 string: Node hands header
 * values over as latin1, so every byte the client sent goes on unchanged.
 */
export function upstreamRequestHead(
  request: { method?: string | undefined; url?: string | undefined; rawHeaders: readonly string[] },
  options: RequestHeaderOptions,
): string {
  const rawHeaders = request.rawHeaders
  const listed = connectionTokens(rawHeaders)
  let head = `${request.method ?? 'GET'} ${request.url ?? '/'} HTTP/1.1\r\n`
  let upgradeProtocol = ''
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    const value = rawHeaders[i + 1]!
    const lower = name.toLowerCase()
    if (lower === 'upgrade') upgradeProtocol = value
    if (HOP_BY_HOP.has(lower) || PORTAL_ONLY.has(lower)) continue
    if (listed?.has(lower) && lower !== 'cookie' && lower !== 'host') continue
    if (FORWARDED.has(lower) && options.forwarded !== 'keep') continue
    if (lower === 'cookie') {
      const kept = withoutPortalCookies(value)
      if (kept !== null) head += `${name}: ${kept}\r\n`
      continue
    }
    head += `${name}: ${value}\r\n`
  }
  if (options.forwarded !== 'keep') {
    head += `X-Forwarded-For: ${options.forwarded.for}\r\nX-Forwarded-Proto: ${options.forwarded.proto}\r\n`
    if (options.forwarded.host !== '') head += `X-Forwarded-Host: ${options.forwarded.host}\r\n`
  }
  if (options.authorization !== null) head += `Authorization: ${options.authorization}\r\n`
  if (options.hop !== null) head += `X-Docklet-Hop: ${options.hop}\r\n`
  if (options.upgrade) head += `Connection: Upgrade\r\nUpgrade: ${upgradeProtocol || 'websocket'}\r\n`
  else if (options.chunked) head += 'Transfer-Encoding: chunked\r\n'
  return `${head}\r\n`
}

/** The raw response headers to send back to the client (Node frames the body itself). */
export function downstreamResponseHeaders(rawHeaders: readonly string[]): string[] {
  const listed = connectionTokens(rawHeaders)
  const out: string[] = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const lower = rawHeaders[i]!.toLowerCase()
    if (HOP_BY_HOP.has(lower) || listed?.has(lower)) continue
    out.push(rawHeaders[i]!, rawHeaders[i + 1]!)
  }
  return out
}
