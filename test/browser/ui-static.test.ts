// How the portal serves the browser app (src/api/ui-static.ts), with
// fastify's inject() against the real portal app (buildApiServer over the
// API tests' fake backend) and a small ui/dist written to a temp dir:
// index.html for the app's own paths (never cached without revalidation),
// hashed assets cached for a year (gzipped when the browser takes it), JSON
// 404s for API and proxy paths, and a page saying to run `npm run build:ui`
// when there is no build. No browser needed.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { buildApiServer } from '../../src/api/api-server.ts'
import { seededBackend } from '../api/api-fixture.ts'

const indexHtml =
  '<!doctype html><html><head><link rel="stylesheet" href="/assets/app-ABC123.css"></head><body><div id="app"></div><script type="module" src="/assets/app-ABC123.js"></script></body></html>'
const script = `console.log(${JSON.stringify('x'.repeat(2000))})`

describe('the portal serves the built app', () => {
  let root: string
  let app: FastifyInstance
  let missing: FastifyInstance

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'docklet-ui-static-'))
    const dist = join(root, 'dist')
    mkdirSync(join(dist, 'assets'), { recursive: true })
    writeFileSync(join(dist, 'index.html'), indexHtml)
    writeFileSync(join(dist, 'assets', 'app-ABC123.js'), script)
    writeFileSync(join(dist, 'assets', 'app-ABC123.js.gz'), gzipSync(script))
    writeFileSync(join(dist, 'assets', 'app-ABC123.css'), 'body{margin:0}')
    writeFileSync(join(root, 'secret.txt'), 'outside the dist dir')
    const backend = await seededBackend()
    app = buildApiServer({ backend, now: () => backend.nowMs, ui: { distDir: dist } })
    missing = buildApiServer({ backend, now: () => backend.nowMs, ui: { distDir: join(root, 'nothing') } })
    await app.ready()
    await missing.ready()
  })

  afterAll(async () => {
    await app?.close()
    await missing?.close()
    rmSync(root, { recursive: true, force: true })
  })

  test('the root and any app path answer index.html, revalidated on every load, with a strict CSP', async () => {
    for (const url of ['/', '/vclusters/lab', '/admin/users?x=1']) {
      const response = await app.inject({ method: 'GET', url })
      expect(response.statusCode, url).toBe(200)
      expect(response.headers['content-type']).toBe('text/html; charset=utf-8')
      expect(response.headers['cache-control']).toBe('no-cache')
      expect(String(response.headers['content-security-policy'])).toContain("default-src 'self'")
      expect(response.body).toBe(indexHtml)
    }
  })

  test('a browser that has the current index.html gets 304 for its ETag', async () => {
    const first = await app.inject({ method: 'GET', url: '/' })
    const etag = String(first.headers.etag)
    expect(etag).toMatch(/^"[\w-]+"$/)
    const again = await app.inject({ method: 'GET', url: '/images', headers: { 'if-none-match': etag } })
    expect(again.statusCode).toBe(304)
    expect(again.body).toBe('')
  })

  test('hashed assets are cached for a year, gzipped when the browser accepts it', async () => {
    const plain = await app.inject({ method: 'GET', url: '/assets/app-ABC123.js' })
    expect(plain.statusCode).toBe(200)
    expect(plain.headers['cache-control']).toBe('public, max-age=31536000, immutable')
    expect(plain.headers['content-type']).toBe('text/javascript; charset=utf-8')
    expect(plain.headers['content-encoding']).toBeUndefined()
    expect(plain.body).toBe(script)

    const gzipped = await app.inject({
      method: 'GET',
      url: '/assets/app-ABC123.js',
      headers: { 'accept-encoding': 'gzip, deflate, br' },
    })
    expect(gzipped.headers['content-encoding']).toBe('gzip')
    expect(gzipped.headers.vary).toBe('accept-encoding')
    expect(gzipped.rawPayload.length).toBeLessThan(script.length)

    // No gzipped copy: the plain file, whatever the browser accepts.
    const css = await app.inject({
      method: 'GET',
      url: '/assets/app-ABC123.css',
      headers: { 'accept-encoding': 'gzip' },
    })
    expect(css.headers['content-encoding']).toBeUndefined()
    expect(css.headers['content-type']).toBe('text/css; charset=utf-8')
    expect(css.body).toBe('body{margin:0}')
  })

  test('a missing asset or a path out of the assets dir is a JSON 404, never index.html', async () => {
    for (const url of [
      '/assets/app-OLD.js',
      '/assets/..%2Fsecret.txt',
      '/assets/..%2F..%2Fsecret.txt',
      '/assets/app-ABC123.js.gz',
    ]) {
      const response = await app.inject({ method: 'GET', url })
      expect(response.statusCode, url).toBe(404)
      expect(response.json().error.code, url).toBe('ERR_NOT_FOUND')
    }
  })

  test('API and proxy paths and non-GET requests never get the app', async () => {
    const api = await app.inject({ method: 'GET', url: '/api/v1/nothing-here' })
    expect(api.statusCode).toBe(404)
    expect(api.json().error.message).toContain('/api/v1/openapi.json')
    for (const [method, url] of [
      ['GET', '/api/v2/session'],
      ['GET', '/go/alice/lab/'],
      ['POST', '/vclusters/lab'],
    ] as const) {
      const response = await app.inject({ method, url })
      expect(response.statusCode, `${method} ${url}`).toBe(404)
      expect(response.headers['content-type'], `${method} ${url}`).toContain('application/json')
    }
    // The API itself still answers beside the app.
    const settings = await app.inject({ method: 'GET', url: '/api/v1/settings' })
    expect(settings.statusCode).toBe(200)
    expect(settings.json().registration).toEqual({ open: false })
  })

  test('without a build, app paths answer a page that says to run npm run build:ui', async () => {
    const response = await missing.inject({ method: 'GET', url: '/vclusters/lab' })
    expect(response.statusCode).toBe(503)
    expect(response.headers['content-type']).toBe('text/html; charset=utf-8')
    expect(response.headers['cache-control']).toBe('no-cache')
    expect(response.body).toContain('npm run build:ui')
    expect(response.body).toContain(join(root, 'nothing'))
    const asset = await missing.inject({ method: 'GET', url: '/assets/app-ABC123.js' })
    expect(asset.statusCode).toBe(404)
  })
})
