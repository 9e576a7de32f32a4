// The proxy's reader of workspace responses (src/proxy/upstream-response.ts),
// fed byte streams as sockets deliver them: every response is also fed
// split at every possible point, and must decode to the same head and body.
// Checks framing by Content-Length, chunked and read-to-close, the bodiless
// cases (HEAD, 204, 304), skipped 1xx responses, hop-by-hop headers dropped
// (also those the Connection header names), keep-alive, bytes past the end,
// and the refusal of malformed or ambiguous responses.

import { describe, expect, it } from 'vitest'
import {
  parseResponseHead,
  type ResponseHead,
  ResponseReader,
  responseHeadBytesMax,
  UpstreamProtocolError,
} from '../../src/proxy/upstream-response.ts'

interface Read {
  head: ResponseHead | null
  body: string
  done: boolean
  lastSeen: boolean
  excess: boolean
}

function read(chunks: Buffer[], method = 'GET', close = false): Read {
  const reader = new ResponseReader()
  reader.reset(method)
  const result: Read = { head: null, body: '', done: false, lastSeen: false, excess: false }
  const sink = {
    onHead: (head: ResponseHead) => {
      result.head = head
    },
    onBody: (bytes: Buffer, last: boolean) => {
      result.body += bytes.toString('latin1')
      if (last) result.lastSeen = true
    },
  }
  for (const chunk of chunks) if (reader.push(chunk, sink)) result.done = true
  if (close && !result.done) result.done = reader.closed()
  result.excess = reader.excess
  return result
}

/** The response read whole, then split in two at every offset: all reads must agree. */
function readEverySplit(text: string, method = 'GET', close = false): Read {
  const bytes = Buffer.from(text, 'latin1')
  const whole = read([bytes], method, close)
  for (let at = 1; at < bytes.length; at++) {
    const split = read([bytes.subarray(0, at), bytes.subarray(at)], method, close)
    expect(split.body, `split at ${at}`).toBe(whole.body)
    expect(split.done, `split at ${at}`).toBe(whole.done)
    expect(split.head?.status, `split at ${at}`).toBe(whole.head?.status)
  }
  // And one byte at a time.
  const bytewise = read(
    [...bytes].map((byte) => Buffer.from([byte])),
    method,
    close,
  )
  expect(bytewise.body).toBe(whole.body)
  expect(bytewise.done).toBe(whole.done)
  return whole
}

describe('framing', () => {
  it('reads a body of known length and says the last bytes are the last', () => {
    const r = readEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello')
    expect(r.head).toMatchObject({
      status: 200,
      statusMessage: 'OK',
      framing: 'length',
      length: 5,
      keepAlive: true,
    })
    expect(r.head?.headers).toEqual(['Content-Length', '5', 'Content-Type', 'text/plain'])
    expect(r.body).toBe('hello')
    expect(r.done).toBe(true)
    expect(read([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello')]).lastSeen).toBe(true)
  })

  it('decodes a chunked body with extensions and trailers, and drops Transfer-Encoding', () => {
    const r = readEverySplit(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nExpires: never\r\n\r\n',
    )
    expect(r.head?.framing).toBe('chunked')
    expect(r.head?.headers).toEqual([])
    expect(r.body).toBe('hello world')
    expect(r.done).toBe(true)
  })

  it('reads a body without length to the close of the connection, which is then not reused', () => {
    const open = read([Buffer.from('HTTP/1.1 200 OK\r\n\r\nsome')])
    expect(open.done).toBe(false)
    const r = readEverySplit('HTTP/1.1 200 OK\r\n\r\nsome bytes', 'GET', true)
    expect(r.head).toMatchObject({ framing: 'close', keepAlive: false })
    expect(r.body).toBe('some bytes')
    expect(r.done).toBe(true)
  })

  it('expects no body after HEAD, 204 and 304, whatever the headers say', () => {
    expect(readEverySplit('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', 'HEAD')).toMatchObject({
      done: true,
      body: '',
    })
    expect(readEverySplit('HTTP/1.1 204 No Content\r\n\r\n')).toMatchObject({ done: true, body: '' })
    expect(readEverySplit('HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n')).toMatchObject({
      done: true,
      body: '',
    })
  })

  it('skips 100 Continue and 103 Early Hints before the final response', () => {
    const r = readEverySplit(
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok',
    )
    expect(r.head?.status).toBe(201)
    expect(r.body).toBe('ok')
  })

  it('marks bytes after the end of a response, so the connection is not used again', () => {
    const r = read([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n')])
    expect(r).toMatchObject({ done: true, body: 'ok', excess: true })
  })
})

describe('headers', () => {
  it('drops hop-by-hop headers and the ones Connection names, and keeps repeated ones in order', () => {
    const head = parseResponseHead(
      [
        'HTTP/1.1 200 OK',
        'Set-Cookie: a=1',
        'Connection: keep-alive, X-Private',
        'Keep-Alive: timeout=5',
        'X-Private: secret',
        'Set-Cookie: b=2',
        'Content-Length: 0',
      ].join('\r\n'),
      'GET',
    )
    expect(head.headers).toEqual(['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Content-Length', '0'])
    expect(head.keepAlive).toBe(true)
  })

  it('knows when the upstream closes: Connection: close, or HTTP/1.0 without keep-alive', () => {
    expect(
      parseResponseHead('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0', 'GET').keepAlive,
    ).toBe(false)
    expect(parseResponseHead('HTTP/1.0 200 OK\r\nContent-Length: 0', 'GET').keepAlive).toBe(false)
    expect(
      parseResponseHead('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0', 'GET').keepAlive,
    ).toBe(true)
  })
})

describe('refusals', () => {
  const refused = (text: string) => () => read([Buffer.from(text, 'latin1')])

  it('refuses malformed status lines, header lines and lengths', () => {
    for (const text of [
      'HTTP/2 200 OK\r\n\r\n',
      'HTTP/1.1 20 OK\r\n\r\n',
      'ICY 200 OK\r\n\r\n',
      'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n',
      'HTTP/1.1 200 OK\r\n folded: value\r\n\r\n',
      'HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n',
    ])
      expect(refused(text), JSON.stringify(text)).toThrow(UpstreamProtocolError)
  })

  it('reads the status line exactly: three digits, an optional reason without line breaks', () => {
    expect(parseResponseHead('HTTP/1.1 200', 'GET')).toMatchObject({ status: 200, statusMessage: '' })
    expect(parseResponseHead('HTTP/1.1 404 ', 'GET')).toMatchObject({ status: 404, statusMessage: '' })
    expect(parseResponseHead('HTTP/1.0 599 Odd: reason', 'GET')).toMatchObject({
      status: 599,
      statusMessage: 'Odd: reason',
      keepAlive: false,
    })
    for (const line of [
      'HTTP/1.1 2000 OK',
      'HTTP/1.1 099 Low',
      'HTTP/1.1 20x OK',
      'HTTP/1.2 200 OK',
      'HTTP/1.1  200 OK',
    ])
      expect(() => parseResponseHead(line, 'GET'), line).toThrow(/status line/)
    for (const line of ['HTTP/1.1 200 O\rK', 'HTTP/1.1 200 O\nK: v'])
      expect(() => parseResponseHead(line, 'GET'), JSON.stringify(line)).toThrow(/status line/)
    expect(() => parseResponseHead('HTTP/1.1 200 OK\r\nA: 1\r\n', 'GET')).toThrow(/header line/)
  })

  it('refuses ambiguous framing: two lengths that disagree, a length beside Transfer-Encoding', () => {
    expect(refused('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')).toThrow(
      /two different/,
    )
    expect(refused('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n')).toThrow(
      /both/,
    )
    // The same length twice is only redundant.
    expect(
      read([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx')]).body,
    ).toBe('x')
  })

  it('refuses malformed chunks and a head longer than its limit', () => {
    expect(refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n')).toThrow(/chunk size/)
    expect(refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n')).toThrow(/CRLF/)
    expect(refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n')).toThrow(/CRLF/)
    const long = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(responseHeadBytesMax)}`
    expect(refused(long)).toThrow(/longer than/)
  })
})
