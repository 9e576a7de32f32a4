// The proxy's refusals and failures, each with a stable code and the HTTP
// status it answers with. A browser (Accept: text/html) gets a small page
// with the sentence, anything else the API's shape {error: {code, message}}.
// The same bytes serve a normal response and a refused WebSocket upgrade,
// which is answered by writing raw HTTP on the socket.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'

export type ProxyErrorCode =
  | 'ERR_UNAUTHENTICATED'
  | 'ERR_SESSION_INVALID'
  | 'ERR_SESSION_EXPIRED'
  | 'ERR_SESSION_REVOKED'
  | 'ERR_CSRF'
  | 'ERR_HOP_INVALID'
  | 'ERR_WORKSPACE_NOT_FOUND'
  | 'ERR_WORKSPACE_STOPPED'
  | 'ERR_WORKSPACE_NOT_RUNNING'
  | 'ERR_WORKSPACE_NO_JUPYTER'
  | 'ERR_WORKSPACE_UNREACHABLE'
  | 'ERR_HOST_UNREACHABLE'
  | 'ERR_WORKSPACE_MOVED'
  | 'ERR_PROXY_BUSY'
  | 'ERR_UPSTREAM_FAILED'
  | 'ERR_PORTAL_FAILED'

export class ProxyError extends Error {
  readonly code: ProxyErrorCode
  readonly status: number
  constructor(code: ProxyErrorCode, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ProxyError'
    this.code = code
    this.status = status
  }
}

const REASONS: Record<number, string> = {
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function wantsHtml(request: IncomingMessage): boolean {
  const accept = request.headers.accept
  return typeof accept === 'string' && accept.includes('text/html')
}

/** The body and content type of an error, as the client asked (HTML for browsers, JSON otherwise). */
export function errorPayload(request: IncomingMessage, error: ProxyError): { type: string; body: string } {
  if (!wantsHtml(request))
    return {
      type: 'application/json; charset=utf-8',
      body: JSON.stringify({ error: { code: error.code, message: error.message } }),
    }
  const title = REASONS[error.status] ?? 'Error'
  const body = [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${error.status} ${title} · docklet</title>`,
    '<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}',
    'code{color:#666;font-size:.85em}</style></head><body>',
    `<h1>${escapeHtml(title)}</h1>`,
    `<p>${escapeHtml(error.message)}</p>`,
    `<p><code>${escapeHtml(error.code)}</code> · <a href="/">docklet portal</a></p>`,
    '</body></html>',
    '',
  ].join('\n')
  return { type: 'text/html; charset=utf-8', body }
}

/** Answers `response` with the error (when nothing was sent yet; otherwise the response is cut). */
export function sendError(request: IncomingMessage, response: ServerResponse, error: ProxyError): void {
  if (response.headersSent) {
    response.destroy()
    return
  }
  const { type, body } = errorPayload(request, error)
  response.writeHead(error.status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  })
  response.end(request.method === 'HEAD' ? undefined : body)
}

/** Answers a refused upgrade on its raw socket, then closes it. */
export function sendSocketError(request: IncomingMessage, socket: Duplex, error: ProxyError): void {
  if (socket.destroyed) return
  const { type, body } = errorPayload(request, error)
  socket.end(
    `HTTP/1.1 ${error.status} ${REASONS[error.status] ?? 'Error'}\r\n` +
      `Content-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Cache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
  )
}
