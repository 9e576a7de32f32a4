// The CLI's side of the control socket.

import type { IncomingMessage } from 'node:http'
import { basename, dirname, join } from 'node:path'

// Builtins through process.getBuiltinModule, not `import`: importing node:http
// as an ES module evaluates all of its lazy exports (undici: fetch, WebSocket),
// which costs every CLI call tens of ms of CPU before it sends anything.
const { createReadStream, createWriteStream, renameSync, rmSync, statSync } =
  process.getBuiltinModule('node:fs')
const { request } = process.getBuiltinModule('node:http')
const { connect } = process.getBuiltinModule('node:net')
const { pipeline } = process.getBuiltinModule('node:stream/promises')

export class ControlError extends Error {
  readonly code: string
  readonly status: number
  constructor(code: string, message: string, status: number) {
    super(message)
    this.name = 'ControlError'
    this.code = code
    this.status = status
  }
}

export interface ControlRequest {
  method: 'GET' | 'POST' | 'DELETE' | 'PATCH' | 'PUT'
  path: string
  body?: unknown
  timeoutMs?: number
  headers?: Record<string, string>
}

/** Calls the node on `socketPath`; resolves with the JSON answer or throws ControlError. */
export function callControl<T>(socketPath: string, req: ControlRequest): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = req.body === undefined ? undefined : JSON.stringify(req.body)
    const timeoutMs = req.timeoutMs ?? 30_000
    const r = request(
      {
        socketPath,
        path: req.path,
        method: req.method,
        headers: {
          ...req.headers,
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
        timeout: timeoutMs,
        // Straight to the socket, past http's connection agent: it would spend ~10 ms of CPU
        // testing whether the host name (there is none) is an IPv6 address. The socket carries
        // the idle timeout, as the agent's would.
        createConnection: () => connect({ path: socketPath, timeout: timeoutMs }),
      },
      (res) => {
        readJson(res).then((body) => {
          const status = res.statusCode ?? 0
          if (status >= 400) reject(refusal(status, body))
          else resolve(body as T)
        }, reject)
      },
    )
    r.on('timeout', () =>
      r.destroy(new ControlError('ERR_TIMEOUT', `The node did not answer within ${timeoutMs} ms.`, 0)),
    )
    r.on('error', (error: NodeJS.ErrnoException) => reject(connectionError(error, socketPath)))
    if (payload !== undefined) r.write(payload)
    r.end()
  })
}

/** A JSON answer (an error, or what an upload returns) is read into memory up to this size. */
export const CONTROL_JSON_BYTES_MAX = 64 * 1024 * 1024
/** How long a broken upload waits for the node's answer, which says why it stopped reading. */
const ANSWER_GRACE_MS = 2_000

export interface ControlStreamRequest {
  method: 'GET' | 'POST' | 'PUT'
  path: string
  /** Sends this file as the body, with this Content-Type. */
  bodyFile?: { path: string; contentType: string }
  /**
   * Writes a successful answer's body to this file (through a temporary file
   * beside it, renamed into place once complete); JSON answers are parsed instead.
   */
  responseFile?: string
  /** Kill the request after this long without any bytes moving either way. */
  idleTimeoutMs?: number
  headers?: Record<string, string>
}

export interface ControlStreamAnswer<T> {
  status: number
  /** The parsed answer when the node answered JSON, else null. */
  json: T | null
  /** Bytes written to responseFile (0 when there is none or the answer was JSON). */
  bytes: number
}

function connectionError(error: NodeJS.ErrnoException, socketPath: string): ControlError {
  if (error instanceof ControlError) return error
  if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')
    return new ControlError(
      'ERR_NODE_NOT_RUNNING',
      `No docklet node is running on ${socketPath}. Start it with \`docklet start\` (or \`systemctl start docklet\`).`,
      0,
    )
  if (error.code === 'EACCES')
    return new ControlError(
      'ERR_PERMISSION',
      `Permission denied on ${socketPath}: the docklet CLI must run as root.`,
      0,
    )
  return new ControlError('ERR_CONTROL', `Cannot reach the node on ${socketPath}: ${error.message}`, 0)
}

/** The node's `{error: {code, message}}` answer as a ControlError. */
function refusal(status: number, body: unknown): ControlError {
  const error = (body as { error?: { code?: string; message?: string } }).error
  return new ControlError(
    error?.code ?? 'ERR_INTERNAL',
    error?.message ?? `The node answered ${status}.`,
    status,
  )
}

/** Reads a JSON answer of at most CONTROL_JSON_BYTES_MAX; an empty answer is `{}`. */
function readJson(res: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    res.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > CONTROL_JSON_BYTES_MAX) {
        res.destroy(new Error(`the answer is larger than ${CONTROL_JSON_BYTES_MAX} bytes`))
        return
      }
      chunks.push(chunk)
    })
    res.once('error', reject)
    res.once('end', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      try {
        resolve(text === '' ? {} : JSON.parse(text))
      } catch {
        reject(
          new ControlError(
            'ERR_BAD_RESPONSE',
            `The node answered with something that is not JSON: ${text.slice(0, 200)}`,
            res.statusCode ?? 0,
          ),
        )
      }
    })
  })
}

/**
 * Like callControl, for bodies too large for memory: the request body comes
 * from a file and a successful non-JSON answer goes to a file, both streamed.
 * Refusals keep the JSON error shape and throw ControlError.
 */
export function callControlStream<T>(
  socketPath: string,
  req: ControlStreamRequest,
): Promise<ControlStreamAnswer<T>> {
  const idleTimeoutMs = req.idleTimeoutMs ?? 30_000
  return new Promise((resolve, reject) => {
    let settled = false
    const fail = (error: unknown) => {
      if (settled) return
      settled = true
      r.destroy()
      reject(error)
    }
    const headers: Record<string, string | number> = { ...req.headers }
    if (req.bodyFile !== undefined) {
      let sizeBytes: number
      try {
        sizeBytes = statSync(req.bodyFile.path).size
      } catch (error) {
        reject(
          new ControlError('ERR_FILE', `Cannot read ${req.bodyFile.path}: ${(error as Error).message}`, 0),
        )
        return
      }
      headers['content-type'] = req.bodyFile.contentType
      headers['content-length'] = sizeBytes
    }
    // A refusal may come while the body is still going out, and the upload then breaks: the answer says why.
    let responded = false
    const failSending = (error: ControlError) => {
      if (!responded) setTimeout(() => fail(error), ANSWER_GRACE_MS).unref()
    }
    const r = request(
      { socketPath, path: req.path, method: req.method, headers, timeout: idleTimeoutMs },
      (res) => {
        responded = true
        const status = res.statusCode ?? 0
        const json = /^application\/json\b/.test(String(res.headers['content-type'] ?? ''))
        if (status >= 400 || json || req.responseFile === undefined) {
          readJson(res).then((body) => {
            if (status >= 400) fail(refusal(status, body))
            else if (!settled) {
              settled = true
              resolve({ status, json: body as T, bytes: 0 })
            }
          }, fail)
          return
        }
        const target = req.responseFile
        const partial = join(dirname(target), `.${basename(target)}.${process.pid}.partial`)
        const expected = Number(res.headers['content-length'] ?? Number.NaN)
        let bytes = 0
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length
        })
        pipeline(res, createWriteStream(partial, { mode: 0o600 })).then(
          () => {
            if (Number.isFinite(expected) && bytes !== expected) {
              rmSync(partial, { force: true })
              fail(
                new ControlError(
                  'ERR_BAD_RESPONSE',
                  `The node's answer ended after ${bytes} of ${expected} bytes; ${target} was not written. Try again.`,
                  status,
                ),
              )
              return
            }
            try {
              renameSync(partial, target)
            } catch (error) {
              rmSync(partial, { force: true })
              fail(new ControlError('ERR_FILE', `Cannot write ${target}: ${(error as Error).message}`, 0))
              return
            }
            if (settled) return
            settled = true
            resolve({ status, json: null, bytes })
          },
          (error: Error) => {
            rmSync(partial, { force: true })
            fail(
              error instanceof ControlError
                ? error
                : new ControlError(
                    'ERR_FILE',
                    `Writing ${target} failed after ${bytes} bytes: ${error.message}`,
                    0,
                  ),
            )
          },
        )
      },
    )
    r.on('timeout', () =>
      r.destroy(new ControlError('ERR_TIMEOUT', `The node sent or took nothing for ${idleTimeoutMs} ms.`, 0)),
    )
    r.on('error', (error: NodeJS.ErrnoException) => {
      if (req.bodyFile !== undefined && error.syscall !== 'connect' && !(error instanceof ControlError))
        failSending(connectionError(error, socketPath))
      else fail(connectionError(error, socketPath))
    })
    if (req.bodyFile === undefined) r.end()
    else {
      const file = req.bodyFile.path
      pipeline(createReadStream(file), r).catch((error: NodeJS.ErrnoException) => {
        if (error instanceof ControlError) fail(error)
        else if (error.syscall === 'connect') fail(connectionError(error, socketPath))
        else failSending(new ControlError('ERR_CONTROL', `Sending ${file} failed: ${error.message}`, 0))
      })
    }
  })
}
