// The root-only control socket: the CLI on this host talks to its node here
// (HTTP/JSON over a unix socket in the data dir, mode 0600). Any node
// forwards writes to the leader, so every command works on every host.

import { chmodSync, existsSync, unlinkSync } from 'node:fs'
import Fastify, { type FastifyInstance } from 'fastify'
import { apiFastifyOptions, buildApi } from '../api/api-server.ts'
import type { DockletNode } from '../node/docklet-node.ts'
import { errorBody, statusForError } from './control-errors.ts'

export interface ControlServerOptions {
  socketPath: string
  node: DockletNode
  /** Who acts through the socket (root on this host is the cluster admin). */
  actor: string
}

const DURATION = /^(\d+)(ms|s|m|h|d)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Parses "90s", "15m", "3h", "7d"; throws a sentence naming the flag on anything else. */
export function parseDurationMs(text: string, flag: string): number {
  const match = DURATION.exec(text.trim())
  if (match === null)
    throw Object.assign(new Error(`${flag} must be a duration like 30m, 3h or 7d, got "${text}".`), {
      code: 'ERR_BAD_REQUEST',
    })
  const value = Number(match[1]) * UNIT_MS[match[2]!]!
  if (value <= 0)
    throw Object.assign(new Error(`${flag} must be longer than zero.`), { code: 'ERR_BAD_REQUEST' })
  return value
}

export function buildControlServer(options: ControlServerOptions): FastifyInstance {
  const { node } = options
  const app = Fastify(apiFastifyOptions)
  app.setErrorHandler((error, _request, reply) => {
    void reply.status(statusForError(error)).send(errorBody(error))
  })
  // The HTTP API, as the cluster admin (root on this host); X-Docklet-User acts for a user.
  void app.register(buildApi({ backend: node, mode: 'local-admin' }))

  app.get('/v1/health', async () => ({ ok: true, id: node.id }))

  app.get('/v1/status', async () => node.status())

  // For tests and operators comparing replicas: applied index, snapshot index, sha256 of the state.
  app.get('/v1/debug/state', async () => node.stateDigest())

  app.post<{ Body: { ttl?: string } }>(
    '/v1/tokens',
    {
      schema: {
        body: { type: 'object', properties: { ttl: { type: 'string' } }, additionalProperties: false },
      },
    },
    async (request) => {
      const ttlMs = parseDurationMs(request.body?.ttl ?? '3h', '--ttl')
      return node.createToken(ttlMs, options.actor)
    },
  )

  app.get('/v1/tokens', async () => ({ tokens: node.listTokens() }))

  app.delete<{ Params: { id: string } }>('/v1/tokens/:id', async (request) => {
    await node.revokeToken(request.params.id)
    return { ok: true, id: request.params.id }
  })

  app.post('/v1/leave', async () => {
    await node.leave()
    return { ok: true, id: node.id }
  })

  app.post<{ Params: { id: string }; Body: { force?: boolean } }>(
    '/v1/members/:id/remove',
    {
      schema: {
        body: { type: 'object', properties: { force: { type: 'boolean' } }, additionalProperties: false },
      },
    },
    async (request) => {
      await node.removeMember(request.params.id, request.body?.force === true)
      return { ok: true, id: request.params.id }
    },
  )

  return app
}

/** Listens on the socket, replacing a stale one, and makes it root-only. */
export async function listenControlSocket(app: FastifyInstance, socketPath: string): Promise<void> {
  if (existsSync(socketPath)) unlinkSync(socketPath)
  await app.listen({ path: socketPath })
  chmodSync(socketPath, 0o600)
}
