// The hop header between nodes and the headers the proxy passes on, as pure
// functions: a hop verifies only with the cluster's key, for its target
// node, for its exact path and while it is fresh; request headers lose the
// portal's cookies and headers, the client's Authorization and made-up
// X-Forwarded-*, and gain the workspace token and the proxy's own
// X-Forwarded-*; hop-by-hop headers go either way, repeated ones stay.

import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import * as api from '../../src/api/api-context.ts'
import {
  downstreamResponseHeaders,
  plainAddress,
  type RequestHeaderOptions,
  upstreamRequestHead,
  withoutPortalCookies,
} from '../../src/proxy/forward-headers.ts'
import { hopClockSkewMsMax, hopTtlMsDefault, signHop, verifyHop } from '../../src/proxy/hop-token.ts'
import * as names from '../../src/proxy/portal-names.ts'

const KEY = randomBytes(32).toString('hex')
const NOW = 1_800_000_000_000
const URL = '/go/alice/dev/api/kernels?x=1'

/** The header list of the request head the proxy writes (it checks the request line too). */
function upstreamRequestHeaders(
  raw: string[],
  options: Omit<RequestHeaderOptions, 'chunked'> & { chunked?: boolean },
): string[] {
  const head = upstreamRequestHead(
    { method: 'GET', url: URL, rawHeaders: raw },
    { chunked: false, ...options },
  )
  const lines = head.split('\r\n')
  expect(lines[0]).toBe(`GET ${URL} HTTP/1.1`)
  expect(lines.slice(-2)).toEqual(['', ''])
  return lines.slice(1, -2).flatMap((line) => {
    const colon = line.indexOf(': ')
    return [line.slice(0, colon), line.slice(colon + 2)]
  })
}
const claims = { target: 'node-b', user: 'alice', url: URL, expiresAt: NOW + 10_000 }
const expect_ = { self: 'node-b', url: URL, nowMs: NOW }

describe('hop headers', () => {
  it('verify for the node, the path and the time they were made for', () => {
    expect(verifyHop(KEY, signHop(KEY, claims), expect_)).toEqual(claims)
  })

  it('do not verify with another key, for another node or path, expired, or too long-lived', () => {
    const other = randomBytes(32).toString('hex')
    expect(verifyHop(other, signHop(KEY, claims), expect_)).toBeNull()
    expect(verifyHop(KEY, signHop(other, claims), expect_)).toBeNull()
    expect(verifyHop(KEY, signHop(KEY, claims), { ...expect_, self: 'node-c' })).toBeNull()
    expect(verifyHop(KEY, signHop(KEY, claims), { ...expect_, url: '/go/alice/dev/api/kernels' })).toBeNull()
    expect(verifyHop(KEY, signHop(KEY, claims), { ...expect_, nowMs: claims.expiresAt })).toBeNull()
    const tooLong = { ...claims, expiresAt: NOW + hopTtlMsDefault + hopClockSkewMsMax + 1 }
    expect(verifyHop(KEY, signHop(KEY, tooLong), expect_)).toBeNull()
    expect(verifyHop('', signHop(KEY, claims), expect_)).toBeNull()
  })

  it('do not verify when altered or malformed', () => {
    const token = signHop(KEY, claims)
    const [payload, mac] = token.split('.') as [string, string]
    const altered = Buffer.from(
      JSON.stringify({ t: 'node-b', u: 'admin', p: URL, e: claims.expiresAt }),
    ).toString('base64url')
    for (const bad of [
      `${altered}.${mac}`,
      `${payload}.`,
      `${payload}.${mac}.x`,
      '',
      '.',
      'a'.repeat(100_000),
    ])
      expect(verifyHop(KEY, bad, expect_), bad.slice(0, 40)).toBeNull()
  })
})

describe('forwarded request headers', () => {
  const raw = [
    'Host',
    'portal:8080',
    'Cookie',
    'docklet_session=s; jupyter=j; docklet_csrf=c',
    'Authorization',
    'token guessed',
    'X-CSRF-Token',
    'c',
    'X-Forwarded-For',
    '6.6.6.6',
    'Connection',
    'keep-alive, X-Secret',
    'X-Secret',
    'hop-by-hop',
    'Keep-Alive',
    'timeout=5',
    'Transfer-Encoding',
    'chunked',
    'X-Docklet-Hop',
    'forged',
    'Accept',
    'text/html',
    'Accept',
    'application/json',
  ]

  it("at the first node: the workspace token and the proxy's own X-Forwarded-*, nothing of the portal", () => {
    const out = upstreamRequestHeaders(raw, {
      forwarded: { for: '192.0.2.7', proto: 'http', host: 'portal:8080' },
      authorization: 'token secret',
      hop: null,
      upgrade: false,
    })
    expect(out).toEqual([
      'Host',
      'portal:8080',
      'Cookie',
      'jupyter=j',
      'Accept',
      'text/html',
      'Accept',
      'application/json',
      'X-Forwarded-For',
      '192.0.2.7',
      'X-Forwarded-Proto',
      'http',
      'X-Forwarded-Host',
      'portal:8080',
      'Authorization',
      'token secret',
    ])
  })

  it('towards another node: a hop header, no token; there the X-Forwarded-* of the first node are kept', () => {
    const first = upstreamRequestHeaders(raw, {
      forwarded: { for: '192.0.2.7', proto: 'https', host: 'portal' },
      authorization: null,
      hop: 'signed',
      upgrade: false,
    })
    expect(first).not.toContain('Authorization')
    expect(first.slice(-2)).toEqual(['X-Docklet-Hop', 'signed'])
    const atFar = upstreamRequestHeaders(first, {
      forwarded: 'keep',
      authorization: 'token t',
      hop: null,
      upgrade: false,
    })
    expect(atFar).toContain('192.0.2.7')
    expect(atFar).not.toContain('signed')
    expect(atFar.slice(-2)).toEqual(['Authorization', 'token t'])
  })

  it('keeps Connection and Upgrade on an upgrade', () => {
    const out = upstreamRequestHeaders(
      ['Host', 'h', 'Connection', 'Upgrade', 'Upgrade', 'websocket', 'Cookie', 'docklet_session=x'],
      {
        forwarded: { for: '::1', proto: 'http', host: 'h' },
        authorization: 'token t',
        hop: null,
        upgrade: true,
      },
    )
    expect(out.slice(-4)).toEqual(['Connection', 'Upgrade', 'Upgrade', 'websocket'])
    expect(out).not.toContain('Cookie')
  })

  it('announces a chunked body, which the proxy encodes again after Node decoded it', () => {
    const out = upstreamRequestHeaders(['Host', 'h', 'Transfer-Encoding', 'chunked'], {
      forwarded: 'keep',
      authorization: null,
      hop: null,
      upgrade: false,
      chunked: true,
    })
    expect(out).toEqual(['Host', 'h', 'Transfer-Encoding', 'chunked'])
  })

  it("names the portal's cookies and headers as the API does", () => {
    const { sessionCookie, csrfCookie, csrfHeader, actAsHeader } = names
    expect({ sessionCookie, csrfCookie, csrfHeader, actAsHeader }).toEqual({
      sessionCookie: api.sessionCookie,
      csrfCookie: api.csrfCookie,
      csrfHeader: api.csrfHeader,
      actAsHeader: api.actAsHeader,
    })
  })

  it('strips only the portal cookies, and IPv4-mapped client addresses read as IPv4', () => {
    expect(withoutPortalCookies('docklet_session=a')).toBeNull()
    expect(withoutPortalCookies('a=1;docklet_csrf=x; b=2')).toBe('a=1; b=2')
    expect(plainAddress('::ffff:10.0.0.5')).toBe('10.0.0.5')
    expect(plainAddress('fe80::1')).toBe('fe80::1')
  })
})

describe('forwarded response headers', () => {
  it('drop hop-by-hop headers and keep repeated ones', () => {
    expect(
      downstreamResponseHeaders([
        'Set-Cookie',
        'a=1',
        'Connection',
        'keep-alive',
        'Keep-Alive',
        'timeout=5',
        'Transfer-Encoding',
        'chunked',
        'Set-Cookie',
        'b=2',
        'Content-Type',
        'text/html',
      ]),
    ).toEqual(['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Content-Type', 'text/html'])
  })
})
