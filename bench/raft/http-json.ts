// A small HTTP/JSON client for control calls (status, leader lookup), with a
// timeout on every request and a bound on the response size. The load
// generator has its own, leaner request path (load.ts).

import { request } from 'node:http'

const responseBytesMax = 1024 * 1024

export interface JsonResponse {
  status: number
  body: unknown
}

export function httpJson(
  url: string,
  options: { method?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<JsonResponse> {
  const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body))
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method ?? (payload === undefined ? 'GET' : 'POST'),
        headers:
          payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': payload.length },
        signal: AbortSignal.timeout(options.timeoutMs ?? 2_000),
      },
      (res) => {
        const chunks: Buffer[] = []
        let bytes = 0
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          if (bytes > responseBytesMax) {
            req.destroy(new Error(`The response from ${url} exceeded ${responseBytesMax} bytes.`))
            return
          }
          chunks.push(chunk)
        })
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: unknown = text
          try {
            body = text === '' ? null : JSON.parse(text)
          } catch {
            // Not JSON: hand back the text so the caller can show it.
          }
          resolve({ status: res.statusCode ?? 0, body })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(payload)
  })
}
