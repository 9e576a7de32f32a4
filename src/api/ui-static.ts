// Serves the browser app (ui/dist, built by `npm run build:ui`) from the
// portal: hashed files under /assets/ with a year-long immutable cache,
// index.html (never cached without revalidation) for every other GET that
// is not an API or proxy path, so the app's own routes (/vclusters/x,
// /admin/users) survive a reload. When ui/dist is missing the page says how
// to build it instead of answering a bare 404.
//
// Files are read per request, not at start: a node keeps running across
// `npm run build:ui`, and the build swaps ui/dist in one rename.

import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

/** ui/dist of this checkout. */
export const defaultUiDistDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../ui/dist')

/** Hashed assets never change under one name: browsers may keep them for a year. */
const assetCacheControl = 'public, max-age=31536000, immutable'
/** index.html names the current assets, so it is revalidated on every load. */
const indexCacheControl = 'no-cache'
/** Asset names are written by the build: letters, digits, '-', '_' and dots, no directories. */
const assetNamePattern = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/
/** Paths that belong to the API and the workspace proxy: never answered with the app. */
const reservedPrefixes = ['/api/', '/go/']

const contentTypes: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
}

/**
 * Everything the app loads comes from this node (the browser may have no
 * internet); inline scripts are not needed and so not allowed.
 */
const contentSecurityPolicy = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'self'",
  "form-action 'self'",
].join('; ')

export interface UiStaticOptions {
  /** Where the built app is (default: ui/dist of this checkout). */
  distDir?: string
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function missingPage(distDir: string): string {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>docklet: the portal is not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; line-height: 1.5">
<h1>The docklet portal is not built yet</h1>
<p>This node serves the API, but the browser app is missing from <code>${escapeHtml(distDir)}</code>.</p>
<p>Build it in the docklet checkout with <code>npm run build:ui</code>, then reload this page.
The node does not need a restart.</p>
<p>The API answers meanwhile: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</p>
</body>
</html>
`
}

function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.')
  return dot < 0 ? '' : name.slice(dot)
}

function acceptsGzip(request: FastifyRequest): boolean {
  const header = request.headers['accept-encoding']
  return typeof header === 'string' && /\bgzip\b/.test(header)
}

async function readOrNull(path: string): Promise<Buffer | null> {
  try {
    return await readFile(path)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return null
    throw error
  }
}

function notFound(reply: FastifyReply, request: FastifyRequest): FastifyReply {
  return reply.status(404).send({
    error: {
      code: 'ERR_NOT_FOUND',
      message: `There is no ${request.method} ${request.url.split('?')[0]}; /api/v1/openapi.json lists the API's routes.`,
    },
  })
}

/**
 * Registers the app's routes on the portal's root: GET /assets/:name and a
 * not-found handler that answers index.html for the app's own paths.
 */
export function registerUiStatic(app: FastifyInstance, options: UiStaticOptions = {}): void {
  const distDir = options.distDir ?? defaultUiDistDir

  const sendIndex = async (request: FastifyRequest, reply: FastifyReply) => {
    const html = await readOrNull(join(distDir, 'index.html'))
    void reply.header('x-content-type-options', 'nosniff').header('cache-control', indexCacheControl)
    if (html === null) {
      return reply.status(503).type('text/html; charset=utf-8').send(missingPage(distDir))
    }
    const etag = `"${createHash('sha256').update(html).digest('base64url').slice(0, 22)}"`
    void reply
      .header('etag', etag)
      .header('content-security-policy', contentSecurityPolicy)
      .header('referrer-policy', 'same-origin')
    if (request.headers['if-none-match'] === etag) return reply.status(304).send()
    return reply.status(200).type('text/html; charset=utf-8').send(html)
  }

  app.get<{ Params: { name: string } }>('/assets/:name', async (request, reply) => {
    const { name } = request.params
    if (!assetNamePattern.test(name) || name.includes('..') || name.endsWith('.gz'))
      return notFound(reply, request)
    const path = join(distDir, 'assets', name)
    const type = contentTypes[extensionOf(name)] ?? 'application/octet-stream'
    void reply
      .header('cache-control', assetCacheControl)
      .header('x-content-type-options', 'nosniff')
      .header('vary', 'accept-encoding')
    // The build stores a gzipped copy beside each text asset that shrinks.
    if (acceptsGzip(request)) {
      const gzipped = await readOrNull(`${path}.gz`)
      if (gzipped !== null) return reply.header('content-encoding', 'gzip').type(type).send(gzipped)
    }
    const body = await readOrNull(path)
    if (body === null) return notFound(reply, request)
    return reply.type(type).send(body)
  })

  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?')[0] ?? '/'
    const isPage = request.method === 'GET' || request.method === 'HEAD'
    if (!isPage || reservedPrefixes.some((prefix) => path.startsWith(prefix)) || path === '/api')
      return notFound(reply, request)
    return sendIndex(request, reply)
  })
}
