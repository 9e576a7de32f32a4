// A fake ApiBackend over a real ClusterState: submit() applies the command
// at once (no Raft) with the fixture's clock, exec and save are recorded.
// Plus a seeded cluster (admin, alice, bob, one host, a public busybox image)
// and helpers to log in and send requests with the session cookie and CSRF
// token, for the API tests.

import { createHash, randomBytes } from 'node:crypto'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import type { ApiBackend, ImageKind, VnodeExecResult } from '../../src/api/api-backend.ts'
import type { ApiOptions } from '../../src/api/api-context.ts'
import { buildApiServer } from '../../src/api/api-server.ts'
import { csrfTokenFor, newSessionId, signSession } from '../../src/api/session-token.ts'
import type { ClusterStatus } from '../../src/node/docklet-node.ts'
import { hashPassword } from '../../src/security/password.ts'
import {
  ClusterState,
  type Command,
  type CommandResult,
  encodeCommand,
} from '../../src/state/cluster-state.ts'
import { sessionGenerationOf } from '../../src/state/session-state.ts'
import { StateError } from '../../src/state/state-error.ts'

export const START_MS = 1_800_000_000_000
export const BUSYBOX = 'ab'.repeat(32)
export const PASSWORDS = { admin: 'admin-password', alice: 'alice-password', bob: 'bob-password' } as const
const noKey = { publicKey: '', privateKey: '' }

let hashes: Promise<Record<keyof typeof PASSWORDS, string>> | null = null

/** argon2 is slow on purpose: hash the fixture passwords once per test file. */
function fixtureHashes(): Promise<Record<keyof typeof PASSWORDS, string>> {
  hashes ??= (async () => ({
    admin: await hashPassword(PASSWORDS.admin),
    alice: await hashPassword(PASSWORDS.alice),
    bob: await hashPassword(PASSWORDS.bob),
  }))()
  return hashes
}

export class FakeBackend implements ApiBackend {
  readonly nodeId = 'node-a'
  readonly state = new ClusterState()
  nowMs = START_MS
  readonly submitted: Command[] = []
  readonly execs: Array<{ vclusterId: string; index: number; argv: string[]; timeoutMs: number }> = []

  async submit(command: Command): Promise<CommandResult & { ok: true }> {
    return this.applyNow(command)
  }

  applyNow(command: Command): CommandResult & { ok: true } {
    this.submitted.push(command)
    const result = this.state.apply(encodeCommand({ ...command, at: this.nowMs } as Command))
    if (!result.ok) throw new StateError(result.error.code, result.error.message)
    return result
  }

  async status(): Promise<ClusterStatus> {
    return {
      cluster_id: this.state.view.clusterId,
      self: { id: this.nodeId, pid: 1, address: '/ip4/127.0.0.1/tcp/1' },
      leader: { id: this.nodeId, address: '/ip4/127.0.0.1/tcp/1' },
      term: 3,
      commit_index: 10,
      applied_index: 10,
      members: [
        {
          id: this.nodeId,
          name: 'host-a',
          address: '/ip4/127.0.0.1/tcp/1',
          portal: '',
          role: 'voter',
          online: true,
          last_contact_ms: 0,
          leaving: false,
        },
      ],
      source: 'leader',
    }
  }

  async execVnode(
    vclusterId: string,
    index: number,
    argv: string[],
    options: { timeoutMs: number },
  ): Promise<VnodeExecResult> {
    this.execs.push({ vclusterId, index, argv, timeoutMs: options.timeoutMs })
    return { exitCode: 0, stdout: `${argv.join(' ')}\n`, stderr: '' }
  }

  async saveVnode(
    vclusterId: string,
    index: number,
    image: { name: string; owner: string; description: string },
  ): Promise<{ id: string }> {
    const id = createHash('sha256').update(`${vclusterId}/${index}/${image.name}`).digest('hex')
    this.applyNow({ type: 'image.register', at: 0, id, ...image, sizeBytes: 1024, host: this.nodeId })
    return { id }
  }

  async buildImage(kind: ImageKind): Promise<{ id: string }> {
    const id = createHash('sha256').update(`built/${kind}`).digest('hex')
    this.applyNow({
      type: 'image.register',
      at: 0,
      id,
      name: `${kind}-built`,
      owner: 'admin',
      visibility: 'public',
      sizeBytes: 1024,
      host: this.nodeId,
    })
    return { id }
  }
}

/** Host node-a (16 cores), users admin, alice, bob (group user), public image busybox. */
export async function seededBackend(): Promise<FakeBackend> {
  const hash = await fixtureHashes()
  const backend = new FakeBackend()
  backend.applyNow({
    type: 'cluster.init',
    at: 0,
    clusterId: 'c1',
    member: { id: backend.nodeId, name: 'host-a', address: '/ip4/127.0.0.1/tcp/1', portal: '' },
    admin: { name: 'admin', passwordHash: hash.admin },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
  })
  backend.nowMs += 1
  backend.applyNow({
    type: 'host.capacity',
    at: 0,
    host: backend.nodeId,
    capacity: { cpuCores: 16, memoryMb: 32_000, diskMb: 100_000 },
  })
  for (const name of ['alice', 'bob'] as const)
    backend.applyNow({
      type: 'user.add',
      at: 0,
      name,
      role: 'user',
      group: 'user',
      passwordHash: hash[name],
      sshKey: noKey,
    })
  backend.applyNow({
    type: 'image.register',
    at: 0,
    id: BUSYBOX,
    name: 'busybox',
    owner: 'admin',
    visibility: 'public',
    sizeBytes: 1024,
  })
  return backend
}

export function portal(backend: FakeBackend, options: Partial<ApiOptions> = {}): FastifyInstance {
  return buildApiServer({ backend, now: () => backend.nowMs, replicaWaitMs: 200, ...options })
}

export interface Session {
  cookie: string
  csrf: string
}

/** Cookie header value from a response's Set-Cookie headers. */
export function cookiesOf(response: LightMyRequestResponse): string {
  const header = response.headers['set-cookie']
  const lines = header === undefined ? [] : Array.isArray(header) ? header : [header]
  return lines.map((line) => line.split(';')[0]).join('; ')
}

export async function login(app: FastifyInstance, name: string, password: string): Promise<Session> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/session', payload: { name, password } })
  if (response.statusCode !== 200) throw new Error(`login of ${name} failed: ${response.body}`)
  return { cookie: cookiesOf(response), csrf: (response.json() as { csrfToken: string }).csrfToken }
}

/**
 * A session minted directly with the cluster's session key, as a login would
 * issue it, without argon2's cost (route tests; login itself is tested in
 * api-auth.test.ts).
 */
export function sessionFor(backend: FakeBackend, name: string, ttlMs = 3_600_000): Session {
  if (backend.state.view.sessionKey === '')
    backend.applyNow({ type: 'session.key', at: 0, key: randomBytes(32).toString('hex') })
  const key = backend.state.view.sessionKey
  const sessionId = newSessionId()
  const token = signSession(key, {
    user: name,
    generation: sessionGenerationOf(backend.state.view, name),
    sessionId,
    issuedAt: backend.nowMs,
    expiresAt: backend.nowMs + ttlMs,
  })
  return { cookie: `docklet_session=${token}`, csrf: csrfTokenFor(key, sessionId) }
}

export function loginAs(app: FastifyInstance, name: keyof typeof PASSWORDS): Promise<Session> {
  return login(app, name, PASSWORDS[name])
}

/** A request with the session's cookie and CSRF header. */
export function send(
  app: FastifyInstance,
  session: Session | null,
  options: InjectOptions & { method: string; url: string },
): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { ...(options.headers as Record<string, string> | undefined) }
  if (session !== null) {
    headers.cookie = session.cookie
    headers['x-csrf-token'] = session.csrf
  }
  return app.inject({ ...options, headers } as InjectOptions) as Promise<LightMyRequestResponse>
}

export function errorOf(response: LightMyRequestResponse): { status: number; code: string; message: string } {
  const body = response.json() as { error?: { code: string; message: string } }
  return { status: response.statusCode, code: body.error?.code ?? '', message: body.error?.message ?? '' }
}
