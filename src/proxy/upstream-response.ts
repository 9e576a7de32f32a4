// Reads an HTTP/1.1 response from a workspace (or another node) off a raw
// kept-alive socket: the head, then exactly its body, so the socket can
// carry the next request. The proxy writes requests itself and parses only
// what comes back, which costs a fraction of Node's http client per request.
//
// Strict where framing is at stake, since a vnode runs its owner's code: a
// head longer than responseHeadBytesMax, a malformed status line or header
// line, a Content-Length that is not one decimal number (or several that
// disagree), Content-Length beside Transfer-Encoding, a chunk size line that
// is not hex, or bytes after the end of a response make the exchange fail
// and the socket is never used again. A response without a length reads to
// the close of the connection (RFC 9112 §6.3). 1xx responses other than 101
// are skipped: the client side answers Expect itself.
//
// Towards the client go the status, the reason and the headers without the
// hop-by-hop ones (and those the Connection header names); the body is
// handed on as it is decoded, and Node frames it again for the client.

import { HOP_BY_HOP } from './forward-headers.ts'

/** Longest response head accepted (Node's own limit for requests is 16 KiB). */
export const responseHeadBytesMax = 64 * 1024
/** Longest chunk-size line or trailer line. */
export const chunkLineBytesMax = 4 * 1024
/** Most trailer lines after a chunked body (they are dropped). */
export const trailerLinesMax = 64

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const CRLF_CRLF = Buffer.from('\r\n\r\n')

export class UpstreamProtocolError extends Error {
  readonly code = 'ERR_UPSTREAM_PROTOCOL'
  constructor(message: string) {
    super(message)
    this.name = 'UpstreamProtocolError'
  }
}

export type BodyFraming = 'none' | 'length' | 'chunked' | 'close'

export interface ResponseHead {
  status: number
  statusMessage: string
  /** Raw header list for the client (name, value, …), hop-by-hop headers removed. */
  headers: string[]
  framing: BodyFraming
  /** Body bytes when framing is 'length'. */
  length: number
  /** The upstream allows another request on this connection. */
  keepAlive: boolean
}

/** The status line's reason phrase may hold anything but line breaks. */
const LINE_BREAK = /[\r\n]/
const DIGITS = /^\d{1,15}$/

/** Whether `text` holds a decimal digit at `at`. */
function digitAt(text: string, at: number): boolean {
  const code = text.charCodeAt(at)
  return code >= 48 && code <= 57
}

/**
 * Parses one response head (without its final CRLFCRLF); throws
 * UpstreamProtocolError. Every response passes through here, so it walks the
 * text with indexOf instead of splitting it and matching the status line
 * with a regular expression: only the header names and values it hands on
 * are new strings.
 */
export function parseResponseHead(text: string, requestMethod: string): ResponseHead {
  let lineEnd = text.indexOf('\r\n')
  if (lineEnd < 0) lineEnd = text.length
  // HTTP/1.x NNN[ reason]
  const minor = text.charCodeAt(7)
  if (
    lineEnd < 12 ||
    !text.startsWith('HTTP/1.', 0) ||
    (minor !== 48 && minor !== 49) ||
    text.charCodeAt(8) !== 32 ||
    text.charCodeAt(9) < 49 ||
    !digitAt(text, 9) ||
    !digitAt(text, 10) ||
    !digitAt(text, 11) ||
    (lineEnd > 12 && text.charCodeAt(12) !== 32) ||
    (lineEnd > 13 && LINE_BREAK.test(text.slice(13, lineEnd)))
  )
    throw new UpstreamProtocolError(
      `a malformed status line: ${JSON.stringify(text.slice(0, Math.min(lineEnd, 80)))}`,
    )
  const http10 = minor === 48
  const status =
    (text.charCodeAt(9) - 48) * 100 + (text.charCodeAt(10) - 48) * 10 + (text.charCodeAt(11) - 48)
  const statusMessage = lineEnd > 13 ? text.slice(13, lineEnd) : ''
  const headers: string[] = []
  let length = -1
  let chunked = false
  let transferEncoding = false
  let keepAlive = !http10
  let listed: string[] | null = null
  let from = lineEnd + 2
  while (from <= text.length && lineEnd < text.length) {
    let end = text.indexOf('\r\n', from)
    if (end < 0) end = text.length
    lineEnd = end
    const colon = text.indexOf(':', from)
    if (colon <= from || colon >= end)
      throw new UpstreamProtocolError(
        `a malformed header line: ${JSON.stringify(text.slice(from, Math.min(end, from + 80)))}`,
      )
    const name = text.slice(from, colon)
    from = end + 2
    if (!TOKEN.test(name))
      throw new UpstreamProtocolError(`a malformed header name: ${JSON.stringify(name.slice(0, 80))}`)
    const value = text.slice(colon + 1, end).trim()
    const lower = name.toLowerCase()
    if (lower === 'content-length') {
      if (!DIGITS.test(value))
        throw new UpstreamProtocolError(`a malformed Content-Length: ${JSON.stringify(value.slice(0, 40))}`)
      const parsed = Number(value)
      if (length >= 0 && parsed !== length)
        throw new UpstreamProtocolError('two different Content-Length headers')
      length = parsed
    } else if (lower === 'transfer-encoding') {
      transferEncoding = true
      const codings = value.toLowerCase().split(',')
      chunked = codings[codings.length - 1]!.trim() === 'chunked'
    } else if (lower === 'connection') {
      for (const token of value.toLowerCase().split(',')) {
        const word = token.trim()
        if (word === 'close') keepAlive = false
        else if (word === 'keep-alive') keepAlive = keepAlive || http10
        else if (word !== '') (listed ??= []).push(word)
      }
    }
    if (HOP_BY_HOP.has(lower)) continue
    headers.push(name, value)
  }
  if (transferEncoding && length >= 0)
    throw new UpstreamProtocolError('both Content-Length and Transfer-Encoding')
  if (listed !== null) {
    const drop = new Set(listed)
    for (let i = headers.length - 2; i >= 0; i -= 2)
      if (drop.has(headers[i]!.toLowerCase())) headers.splice(i, 2)
  }
  let framing: BodyFraming
  if (requestMethod === 'HEAD' || status === 204 || status === 304 || status < 200) framing = 'none'
  else if (transferEncoding) framing = chunked ? 'chunked' : 'close'
  else if (length >= 0) framing = 'length'
  else framing = 'close'
  if (framing === 'close') keepAlive = false
  return {
    status,
    statusMessage,
    headers,
    framing,
    length: framing === 'length' ? length : 0,
    keepAlive,
  }
}

const PHASE = {
  head: 0,
  body: 1,
  chunkSize: 2,
  chunkData: 3,
  chunkDataEnd: 4,
  trailer: 5,
  done: 6,
} as const
type Phase = (typeof PHASE)[keyof typeof PHASE]

export interface ResponseSink {
  /** The head of the (final, non-1xx) response. */
  onHead(head: ResponseHead): void
  /**
   * Body bytes, decoded; a view into the socket's chunk (copy it to keep it
   * past the call). `last` when these end a body of known length.
   */
  onBody(bytes: Buffer, last: boolean): void
}

/**
 * One response's reader: push() every chunk the socket delivers, in order;
 * it calls the sink and says when the response is complete. Reset for the
 * next exchange on the same socket.
 */
export class ResponseReader {
  private phase: Phase = PHASE.head
  private method = 'GET'
  private pending: Buffer | null = null
  private remaining = 0
  private trailers = 0
  head: ResponseHead | null = null
  /** Bytes came after the end of the response: the connection cannot carry another. */
  excess = false

  /** Prepares for the response to a request with `method`. */
  reset(method: string): void {
    this.phase = PHASE.head
    this.method = method
    this.pending = null
    this.remaining = 0
    this.trailers = 0
    this.head = null
    this.excess = false
  }

  get done(): boolean {
    return this.phase === PHASE.done
  }

  /** Nothing of a response has arrived yet (a failure now may be retried on a fresh connection). */
  get untouched(): boolean {
    return this.phase === PHASE.head && this.pending === null
  }

  /**
   * Feeds bytes; returns true once the response is complete (bytes past its
   * end set `excess`). Throws UpstreamProtocolError on a framing error.
   */
  push(chunk: Buffer, sink: ResponseSink): boolean {
    let data = chunk
    let offset = 0
    if (this.pending !== null) {
      data = Buffer.concat([this.pending, chunk])
      this.pending = null
    }
    while (offset < data.length) {
      switch (this.phase) {
        case PHASE.head: {
          const end = data.indexOf(CRLF_CRLF, offset)
          if (end < 0) {
            if (data.length - offset > responseHeadBytesMax)
              throw new UpstreamProtocolError(`a response head longer than ${responseHeadBytesMax} bytes`)
            this.pending = data.subarray(offset)
            return false
          }
          if (end - offset > responseHeadBytesMax)
            throw new UpstreamProtocolError(`a response head longer than ${responseHeadBytesMax} bytes`)
          const head = parseResponseHead(data.toString('latin1', offset, end), this.method)
          offset = end + 4
          if (head.status < 200) continue // 100 Continue, 103 Early Hints: the final response follows
          this.head = head
          sink.onHead(head)
          if (head.framing === 'none' || (head.framing === 'length' && head.length === 0))
            this.phase = PHASE.done
          else if (head.framing === 'chunked') this.phase = PHASE.chunkSize
          else {
            this.phase = PHASE.body
            this.remaining = head.framing === 'length' ? head.length : Number.POSITIVE_INFINITY
          }
          break
        }
        case PHASE.body: {
          const take = Math.min(this.remaining, data.length - offset)
          const whole = offset === 0 && take === data.length
          const from = offset
          offset += take
          this.remaining -= take
          if (this.remaining === 0) this.phase = PHASE.done
          sink.onBody(whole ? data : data.subarray(from, offset), this.remaining === 0)
          break
        }
        case PHASE.chunkSize:
        case PHASE.trailer: {
          const end = data.indexOf(10, offset)
          if (end < 0) {
            if (data.length - offset > chunkLineBytesMax)
              throw new UpstreamProtocolError(`a chunk line longer than ${chunkLineBytesMax} bytes`)
            this.pending = data.subarray(offset)
            return false
          }
          if (end === offset || data[end - 1] !== 13)
            throw new UpstreamProtocolError('a chunk line that does not end in CRLF')
          if (end - offset > chunkLineBytesMax)
            throw new UpstreamProtocolError(`a chunk line longer than ${chunkLineBytesMax} bytes`)
          const line = data.toString('latin1', offset, end - 1)
          offset = end + 1
          if (this.phase === PHASE.trailer) {
            if (line === '') this.phase = PHASE.done
            else if (++this.trailers > trailerLinesMax)
              throw new UpstreamProtocolError(`more than ${trailerLinesMax} trailer lines`)
            break
          }
          const size = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;.*)?$/.exec(line)
          if (size === null)
            throw new UpstreamProtocolError(`a malformed chunk size: ${JSON.stringify(line.slice(0, 40))}`)
          this.remaining = Number.parseInt(size[1]!, 16)
          this.phase = this.remaining === 0 ? PHASE.trailer : PHASE.chunkData
          break
        }
        case PHASE.chunkData: {
          const take = Math.min(this.remaining, data.length - offset)
          sink.onBody(data.subarray(offset, offset + take), false)
          offset += take
          this.remaining -= take
          if (this.remaining === 0) this.phase = PHASE.chunkDataEnd
          break
        }
        case PHASE.chunkDataEnd: {
          if (data.length - offset < 2) {
            this.pending = data.subarray(offset)
            return false
          }
          if (data[offset] !== 13 || data[offset + 1] !== 10)
            throw new UpstreamProtocolError('a chunk that does not end in CRLF')
          offset += 2
          this.phase = PHASE.chunkSize
          break
        }
        case PHASE.done:
          this.excess = true
          return true
      }
    }
    return this.phase === PHASE.done
  }

  /** The connection closed: true when that ends the response (a body read to the close). */
  closed(): boolean {
    if (this.phase === PHASE.body && this.remaining === Number.POSITIVE_INFINITY) {
      this.phase = PHASE.done
      return true
    }
    return this.phase === PHASE.done
  }
}
