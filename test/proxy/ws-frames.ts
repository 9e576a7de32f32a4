// Just enough WebSocket (RFC 6455) for the proxy tests, written by hand so no
// package is needed: the handshake's accept key, frames with 7- and 16-bit
// lengths (masked from clients, as the RFC demands), a reader that collects
// frames from a byte stream, a tiny echo handler for a server's upgrade
// event, and a client that performs the handshake on a raw TCP socket.

import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
export const OPCODE_TEXT = 0x1
export const OPCODE_CLOSE = 0x8
/** The tests send small messages; anything longer than a 16-bit length is a bug here. */
const PAYLOAD_BYTES_MAX = 0xffff

export function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64')
}

export function encodeFrame(opcode: number, payload: Buffer, masked: boolean): Buffer {
  if (payload.length > PAYLOAD_BYTES_MAX) throw new Error('test frames are at most 64 KiB')
  const short = payload.length < 126
  const header = Buffer.alloc(short ? 2 : 4)
  header[0] = 0x80 | opcode
  header[1] = (masked ? 0x80 : 0) | (short ? payload.length : 126)
  if (!short) header.writeUInt16BE(payload.length, 2)
  if (!masked) return Buffer.concat([header, payload])
  const mask = randomBytes(4)
  const body = Buffer.from(payload)
  for (let i = 0; i < body.length; i++) body[i]! ^= mask[i % 4]!
  return Buffer.concat([header, mask, body])
}

export interface Frame {
  opcode: number
  payload: Buffer
}

/** Collects frames from chunks as they arrive. */
export class FrameReader {
  private buffered = Buffer.alloc(0)
  private readonly waiting: Array<(frame: Frame) => void> = []
  private readonly frames: Frame[] = []

  push(chunk: Buffer): void {
    this.buffered = Buffer.concat([this.buffered, chunk])
    for (;;) {
      const frame = this.take()
      if (frame === null) return
      const waiter = this.waiting.shift()
      if (waiter !== undefined) waiter(frame)
      else this.frames.push(frame)
    }
  }

  next(timeoutMs = 5_000): Promise<Frame> {
    const ready = this.frames.shift()
    if (ready !== undefined) return Promise.resolve(ready)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no WebSocket frame within ${timeoutMs} ms`)),
        timeoutMs,
      )
      this.waiting.push((frame) => {
        clearTimeout(timer)
        resolve(frame)
      })
    })
  }

  private take(): Frame | null {
    const b = this.buffered
    if (b.length < 2) return null
    const masked = (b[1]! & 0x80) !== 0
    let length = b[1]! & 0x7f
    let offset = 2
    if (length === 126) {
      if (b.length < 4) return null
      length = b.readUInt16BE(2)
      offset = 4
    } else if (length === 127) throw new Error('test frames are at most 64 KiB')
    const maskBytes = masked ? 4 : 0
    if (b.length < offset + maskBytes + length) return null
    const payload = Buffer.from(b.subarray(offset + maskBytes, offset + maskBytes + length))
    if (masked) {
      const mask = b.subarray(offset, offset + 4)
      for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!
    }
    this.buffered = b.subarray(offset + maskBytes + length)
    return { opcode: b[0]! & 0x0f, payload }
  }
}

/** Completes a server-side handshake and echoes every text frame (prefixed with `prefix`). */
export function serveEcho(request: IncomingMessage, socket: Duplex, head: Buffer, prefix = ''): void {
  const key = request.headers['sec-websocket-key']
  if (typeof key !== 'string') {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
    return
  }
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`,
  )
  const reader = new FrameReader()
  const loop = async () => {
    for (;;) {
      const frame = await reader.next(60_000)
      if (frame.opcode === OPCODE_CLOSE) {
        socket.end(encodeFrame(OPCODE_CLOSE, Buffer.alloc(0), false))
        return
      }
      socket.write(encodeFrame(OPCODE_TEXT, Buffer.concat([Buffer.from(prefix), frame.payload]), false))
    }
  }
  socket.on('data', (chunk: Buffer) => reader.push(chunk))
  socket.on('error', () => socket.destroy())
  if (head.length > 0) reader.push(head)
  loop().catch(() => socket.destroy())
}

export interface WsClient {
  /** The handshake answer's status line and headers. */
  status: number
  headers: string
  /** The body of a refused handshake (empty after a 101). */
  body: string
  /** The answer carried the Sec-WebSocket-Accept that matches the key sent. */
  acceptOk: boolean
  send(text: string): void
  receive(timeoutMs?: number): Promise<string>
  close(): void
  socket: Socket
}

/** Opens a WebSocket to http://host:port/path with extra request headers; resolves after the handshake answer. */
export function openWebSocket(
  host: string,
  port: number,
  path: string,
  headers: Record<string, string> = {},
  timeoutMs = 5_000,
): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port })
    const key = randomBytes(16).toString('base64')
    const reader = new FrameReader()
    let buffered = Buffer.alloc(0)
    let handshaken = false
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no WebSocket handshake answer from ${host}:${port}${path} within ${timeoutMs} ms`))
    }, timeoutMs)
    const finish = (status: number, head: string, rest: Buffer) => {
      clearTimeout(timer)
      handshaken = true
      if (status === 101) reader.push(rest)
      resolve({
        status,
        headers: head,
        body: status === 101 ? '' : rest.toString(),
        acceptOk: head.includes(`Sec-WebSocket-Accept: ${acceptKey(key)}`),
        send: (text) => socket.write(encodeFrame(OPCODE_TEXT, Buffer.from(text), true)),
        receive: async (ms) => (await reader.next(ms)).payload.toString(),
        close: () => socket.destroy(),
        socket,
      })
    }
    socket.on('error', (error) => {
      clearTimeout(timer)
      if (!handshaken) reject(error)
    })
    socket.on('data', (chunk: Buffer) => {
      if (handshaken) {
        reader.push(chunk)
        return
      }
      buffered = Buffer.concat([buffered, chunk])
      const end = buffered.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = buffered.subarray(0, end).toString()
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0)
      const rest = buffered.subarray(end + 4)
      if (status === 101) {
        finish(status, head, rest)
        return
      }
      // A refusal: wait for its whole body (the proxy closes after it).
      const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? -1)
      if (length >= 0 && rest.length < length) return
      finish(status, head, rest)
    })
    socket.on('connect', () => {
      const lines = [
        `GET ${path} HTTP/1.1`,
        `Host: ${host}:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
        ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
      ]
      socket.write(`${lines.join('\r\n')}\r\n\r\n`)
    })
  })
}
