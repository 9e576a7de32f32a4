// The workspace stand-in of bench:proxy, run inside the vnode's network
// namespace: every HTTP request gets 200 with a 1 KiB body (read to the
// end first, kept alive), every upgrade a WebSocket echo with hand-rolled
// frames (test/proxy/ws-frames.ts). One process, one thread, like a small
// Jupyter.
//
// Usage: node bench/proxy/backend-server.ts --host 10.251.0.2 --port 8888
// Prints `ready` once it listens; stops on SIGTERM or when stdin closes.

import { createServer } from 'node:http'
import { parseArgs } from 'node:util'
import { serveEcho } from '../../test/proxy/ws-frames.ts'

export const RESPONSE_BYTES = 1024

const { values } = parseArgs({
  options: { host: { type: 'string', default: '0.0.0.0' }, port: { type: 'string', default: '8888' } },
})

const body = Buffer.alloc(RESPONSE_BYTES, 'x')
const server = createServer((request, response) => {
  request.resume()
  request.on('end', () => {
    response.writeHead(200, { 'content-type': 'text/plain', 'content-length': RESPONSE_BYTES })
    response.end(body)
  })
})
server.keepAliveTimeout = 60_000
server.on('upgrade', (request, socket, head: Buffer) => serveEcho(request, socket, head))
server.listen({ host: values.host, port: Number(values.port) }, () => process.stdout.write('ready\n'))
const stop = () => {
  server.closeAllConnections()
  server.close(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.stdin.on('end', stop)
process.stdin.resume()
