// The CLI's side of the control socket.

import { request } from 'node:http'

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
      },
      (res) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > 64 * 1024 * 1024) {
            res.destroy(new Error('the answer is larger than 64 MiB'))
            return
          }
          chunks.push(chunk)
        })
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: unknown
          try {
            body = text === '' ? {} : JSON.parse(text)
          } catch {
            reject(
              new ControlError(
                'ERR_BAD_RESPONSE',
                `The node answered with something that is not JSON: ${text.slice(0, 200)}`,
                res.statusCode ?? 0,
              ),
            )
            return
          }
          const status = res.statusCode ?? 0
          if (status >= 400) {
            const error = (body as { error?: { code?: string; message?: string } }).error
            reject(
              new ControlError(
                error?.code ?? 'ERR_INTERNAL',
                error?.message ?? `The node answered ${status}.`,
                status,
              ),
            )
            return
          }
          resolve(body as T)
        })
        res.on('error', reject)
      },
    )
    r.on('timeout', () =>
      r.destroy(new ControlError('ERR_TIMEOUT', `The node did not answer within ${timeoutMs} ms.`, 0)),
    )
    r.on('error', (error: NodeJS.ErrnoException) => {
      if (error instanceof ControlError) reject(error)
      else if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED') {
        reject(
          new ControlError(
            'ERR_NODE_NOT_RUNNING',
            `No docklet node is running on ${socketPath}. Start it with \`docklet start\` (or \`systemctl start docklet\`).`,
            0,
          ),
        )
      } else if (error.code === 'EACCES') {
        reject(
          new ControlError(
            'ERR_PERMISSION',
            `Permission denied on ${socketPath}: the docklet CLI must run as root.`,
            0,
          ),
        )
      } else
        reject(new ControlError('ERR_CONTROL', `Cannot reach the node on ${socketPath}: ${error.message}`, 0))
    })
    if (payload !== undefined) r.write(payload)
    r.end()
  })
}
