// How fast the load generator itself can go on this machine: the same client
// code against a server (in its own process, like the members) that answers
// every write at once. If a system's throughput comes near this, the
// benchmark measured the generator, not the system.

import type { WriteProtocol } from './bench-cluster.ts'
import { freePorts, pollUntil } from './bench-cluster.ts'
import { httpJson } from './http-json.ts'
import { defaultLoadOptions, type LoadResult, runWriteLoad } from './load.ts'
import type { ProcessRegistry } from './process-registry.ts'

const noopServerSource = `
const http = require('node:http')
const port = Number(process.argv[1])
http
  .createServer({ keepAlive: true }, (req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 11 })
      res.end('{"ok":true}')
    })
  })
  .listen(port, '127.0.0.1')
process.on('disconnect', () => process.exit(0))
`

const noopWrites: WriteProtocol = {
  request(key, value) {
    const body = Buffer.from(value)
    return {
      method: 'PUT',
      path: `/kv/${encodeURIComponent(key)}`,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
      body,
    }
  },
  classify: (status, body) =>
    status === 200 ? { kind: 'ok' } : { kind: 'error', message: `${status}: ${body}` },
}

export async function measureLoadCeiling(
  registry: ProcessRegistry,
  options: { clients: number; durationMs: number; valueBytes: number },
): Promise<LoadResult> {
  const [port] = await freePorts(1)
  const server = registry.spawn('noop-server', process.execPath, ['-e', noopServerSource, String(port)], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  })
  const url = `http://127.0.0.1:${port}`
  try {
    await pollUntil(
      'the no-op server to listen',
      async () => ((await httpJson(url)).status === 200 ? true : undefined),
      {
        timeoutMs: 10_000,
      },
    )
    return await runWriteLoad(
      { url, writes: noopWrites },
      {
        ...defaultLoadOptions,
        clients: options.clients,
        durationMs: options.durationMs,
        warmupMs: 500,
        valueBytes: options.valueBytes,
      },
    )
  } finally {
    await registry.terminate(server)
  }
}
