// Checks RpcService over real libp2p nodes (TCP + noise + yamux on 127.0.0.1,
// port 0), two or three per test in this process: round trips by address and
// by PeerId, 100 concurrent calls, errors crossing the wire with their code
// and data, unknown methods, authorization, timeouts (and that the service
// keeps working after one), the byte and concurrency limits, identity pinning
// with expectPeerId, dial failures, and raw streams carrying garbage or
// answering garbage. Every node a test starts is stopped in afterEach.

import { createServer } from 'node:net'
import type { Libp2p, Stream, StreamMessageEvent } from '@libp2p/interface'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createLibp2pHost,
  encodeFrames,
  FrameDecoder,
  generateIdentity,
  RPC_PROTOCOL,
  RpcDialError,
  RpcError,
  RpcIdentityError,
  RpcRemoteError,
  RpcService,
  type RpcServiceOptions,
  RpcTimeoutError,
  rememberPeer,
} from '../../net/index.ts'

interface RpcNode {
  node: Libp2p
  rpc: RpcService
  id: string
  /** The listen address without /p2p/. */
  addr: string
  events: { type: string; method: string }[]
}

const nodes = new Set<Libp2p>()
const services = new Set<RpcService>()

afterEach(async () => {
  for (const rpc of services) await rpc.stop()
  services.clear()
  for (const node of nodes) await node.stop()
  nodes.clear()
})

async function startRawNode(): Promise<Libp2p> {
  const node = await createLibp2pHost({ identity: await generateIdentity(), listen: '127.0.0.1:0' })
  nodes.add(node)
  return node
}

async function startNode(options: RpcServiceOptions = {}): Promise<RpcNode> {
  const node = await startRawNode()
  const events: RpcNode['events'] = []
  const rpc = new RpcService(node, { ...options, onEvent: (event) => events.push(event) })
  services.add(rpc)
  await rpc.start()
  const addr = node
    .getMultiaddrs()[0]!
    .toString()
    .replace(/\/p2p\/.*$/, '')
  return { node, rpc, id: node.peerId.toString(), addr, events }
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** The rejection of `promise`, failing the test if it resolves. */
async function rejectionOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (err) {
    return err as Error
  }
  throw new Error('expected the promise to reject')
}

/** Reads one length-prefixed frame from a raw stream (or null if it closes first). */
function readFrame(stream: Stream): Promise<Uint8Array | null> {
  return new Promise((resolve) => {
    const frames = new FrameDecoder(1024 * 1024)
    stream.addEventListener('message', (event: StreamMessageEvent) => {
      frames.push(event.data, (frame) => resolve(frame))
    })
    stream.addEventListener('close', () => resolve(null))
  })
}

const text = new TextEncoder()
const json = (frame: Uint8Array | null): unknown =>
  frame === null ? null : JSON.parse(new TextDecoder().decode(frame))

describe('RpcService', () => {
  it('returns the handler result and gives the handler the caller’s authenticated PeerId', async () => {
    const server = await startNode()
    const client = await startNode()
    server.rpc.register('echo', async (params, context) => ({ params, from: context.peerId }))
    const answer = await client.rpc.call(server.addr, 'echo', { n: 1, s: 'x' }, { timeoutMs: 5000 })
    expect(answer).toEqual({ result: { params: { n: 1, s: 'x' }, from: client.id }, peerId: server.id })
  })

  it('dials a PeerId through the addresses given to rememberPeer, and accepts synchronous handlers', async () => {
    const server = await startNode()
    const client = await startNode()
    server.rpc.register('status', () => ({ ok: true }))
    await rememberPeer(client.node, {
      id: server.id,
      addrs: [server.addr.replace(/^\/ip4\/([^/]+)\/tcp\//, '$1:')],
    })
    const answer = await client.rpc.call(server.id, 'status', undefined, { timeoutMs: 5000 })
    expect(answer).toEqual({ result: { ok: true }, peerId: server.id })
  })

  it('answers 100 concurrent calls, each with its own result', async () => {
    const server = await startNode()
    const client = await startNode()
    server.rpc.register('double', async (params) => {
      await new Promise((resolve) => setTimeout(resolve, 20))
      return (params as number) * 2
    })
    const calls = Array.from({ length: 100 }, (_, i) =>
      client.rpc.call<number>(server.addr, 'double', i, { timeoutMs: 10_000 }),
    )
    const results = (await Promise.all(calls)).map((answer) => answer.result)
    expect(results).toEqual(Array.from({ length: 100 }, (_, i) => i * 2))
  })

  it('carries a handler error’s code, message and data to the caller', async () => {
    const server = await startNode()
    const client = await startNode()
    class NotLeaderError extends Error {
      readonly code = 'ERR_NOT_LEADER'
      readonly leader: string
      constructor(leader: string) {
        super(`This node is not the leader; the leader is ${leader}.`)
        this.leader = leader
      }
    }
    server.rpc.register('submit', async () => {
      throw new NotLeaderError('peer-L')
    })
    server.rpc.register('quota', async () => {
      throw Object.assign(new Error('Over quota.'), {
        code: 'ERR_QUOTA',
        details: { usedMb: 10, limitMb: 8 },
      })
    })
    server.rpc.register('crash', async () => {
      throw new TypeError('x is undefined')
    })

    const notLeader = await rejectionOf(client.rpc.call(server.addr, 'submit', {}, { timeoutMs: 5000 }))
    expect(notLeader).toBeInstanceOf(RpcRemoteError)
    expect(notLeader).toMatchObject({
      code: 'ERR_NOT_LEADER',
      message: 'This node is not the leader; the leader is peer-L.',
      details: { leader: 'peer-L' },
      method: 'submit',
      peer: server.id,
    })
    const quota = await rejectionOf(client.rpc.call(server.addr, 'quota', {}, { timeoutMs: 5000 }))
    expect(quota).toMatchObject({
      code: 'ERR_QUOTA',
      message: 'Over quota.',
      details: { usedMb: 10, limitMb: 8 },
    })
    const crash = await rejectionOf(client.rpc.call(server.addr, 'crash', {}, { timeoutMs: 5000 }))
    expect(crash).toBeInstanceOf(RpcRemoteError)
    expect(crash).toMatchObject({ code: 'ERR_RPC_HANDLER', message: 'x is undefined' })
    expect(server.events.map((event) => event.type)).toEqual(['handler-error'])
  })

  it('refuses an unknown method with ERR_RPC_UNKNOWN_METHOD', async () => {
    const server = await startNode()
    const client = await startNode()
    const error = await rejectionOf(client.rpc.call(server.addr, 'nope', {}, { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RpcRemoteError)
    expect((error as RpcRemoteError).code).toBe('ERR_RPC_UNKNOWN_METHOD')
    expect(error.message).toContain('"nope"')
  })

  it('asks authorize for each request and answers ERR_RPC_FORBIDDEN when it refuses', async () => {
    const server = await startNode()
    const member = await startNode()
    const stranger = await startNode()
    const asked: [string, string][] = []
    server.rpc.register('secret', async () => 42, {
      authorize: (peerId, method) => {
        asked.push([peerId, method])
        return peerId === member.id
      },
    })
    const allowed = await member.rpc.call(server.addr, 'secret', {}, { timeoutMs: 5000 })
    expect(allowed.result).toBe(42)
    const error = await rejectionOf(stranger.rpc.call(server.addr, 'secret', {}, { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RpcRemoteError)
    expect((error as RpcRemoteError).code).toBe('ERR_RPC_FORBIDDEN')
    expect(asked).toEqual([
      [member.id, 'secret'],
      [stranger.id, 'secret'],
    ])
  })

  it('times out a slow handler, aborts its signal, and keeps serving afterwards', async () => {
    const server = await startNode()
    const client = await startNode()
    let handlerSignal: AbortSignal | undefined
    server.rpc.register('slow', async (_params, context) => {
      handlerSignal = context.signal
      await new Promise((resolve) => setTimeout(resolve, 3000))
      return 'late'
    })
    server.rpc.register('fast', async () => 'quick')
    const startedMs = Date.now()
    const error = await rejectionOf(client.rpc.call(server.addr, 'slow', {}, { timeoutMs: 200 }))
    expect(Date.now() - startedMs).toBeLessThan(1500)
    expect(error).toBeInstanceOf(RpcTimeoutError)
    expect((error as RpcTimeoutError).code).toBe('ERR_RPC_TIMEOUT')
    expect(error.message).toContain('slow')
    expect(error.message).toContain(server.id)
    // The caller's reset reaches the server and aborts the handler's signal.
    await expect.poll(() => handlerSignal?.aborted, { timeout: 2000 }).toBe(true)
    const again = await client.rpc.call(server.addr, 'fast', {}, { timeoutMs: 5000 })
    expect(again.result).toBe('quick')
  })

  it('answers ERR_RPC_HANDLER_TIMEOUT and frees the slot when a handler outlives handlerTimeoutMs', async () => {
    const server = await startNode({ handlerTimeoutMs: 200, inboundStreamsMax: 1 })
    const client = await startNode()
    let handlerSignal: AbortSignal | undefined
    server.rpc.register('stuck', async (_params, context) => {
      handlerSignal = context.signal
      return new Promise(() => {}) // never settles
    })
    server.rpc.register('fast', async () => 'quick')
    const error = await rejectionOf(client.rpc.call(server.addr, 'stuck', {}, { timeoutMs: 5000 }))
    expect((error as RpcRemoteError).code).toBe('ERR_RPC_HANDLER_TIMEOUT')
    expect(handlerSignal?.aborted).toBe(true)
    // With inboundStreamsMax 1, this succeeds only if the stuck handler's slot was freed.
    expect((await client.rpc.call(server.addr, 'fast', {}, { timeoutMs: 5000 })).result).toBe('quick')
    expect(server.events.map((event) => event.type)).toEqual(['handler-timeout'])
  })

  it('lets a method registered with its own handlerTimeoutMs run past the service default', async () => {
    const server = await startNode({ handlerTimeoutMs: 100 })
    const client = await startNode()
    server.rpc.register(
      'slow',
      async () => {
        await new Promise((resolve) => setTimeout(resolve, 400))
        return 'saved'
      },
      { handlerTimeoutMs: 5000 },
    )
    server.rpc.register('stuck', async () => new Promise(() => {}))
    expect((await client.rpc.call(server.addr, 'slow', {}, { timeoutMs: 5000 })).result).toBe('saved')
    // Other methods keep the service's bound.
    const error = await rejectionOf(client.rpc.call(server.addr, 'stuck', {}, { timeoutMs: 5000 }))
    expect((error as RpcRemoteError).code).toBe('ERR_RPC_HANDLER_TIMEOUT')
    expect(() => server.rpc.register('bad', async () => 1, { handlerTimeoutMs: 0 })).toThrow(
      /handlerTimeoutMs/,
    )
  })

  it('refuses a request over the server’s requestBytesMax without calling the handler', async () => {
    const server = await startNode({ requestBytesMax: 1024 })
    const client = await startNode()
    let calls = 0
    server.rpc.register('store', async () => {
      calls++
      return 'stored'
    })
    const error = await rejectionOf(
      client.rpc.call(server.addr, 'store', 'x'.repeat(200_000), { timeoutMs: 5000 }),
    )
    expect(error).toBeInstanceOf(RpcRemoteError)
    expect((error as RpcRemoteError).code).toBe('ERR_RPC_REQUEST_TOO_LARGE')
    expect(calls).toBe(0)
    expect(server.events.map((event) => event.type)).toEqual(['request-too-large'])
    // A small request still goes through.
    expect((await client.rpc.call(server.addr, 'store', 'x', { timeoutMs: 5000 })).result).toBe('stored')
  })

  it('refuses locally a request over the caller’s own requestBytesMax', async () => {
    const server = await startNode()
    const client = await startNode({ requestBytesMax: 1024 })
    server.rpc.register('store', async () => 'stored')
    const error = await rejectionOf(
      client.rpc.call(server.addr, 'store', 'x'.repeat(2000), { timeoutMs: 5000 }),
    )
    expect(error).toBeInstanceOf(RpcError)
    expect(error).not.toBeInstanceOf(RpcRemoteError)
    expect((error as RpcError).code).toBe('ERR_RPC_REQUEST_TOO_LARGE')
  })

  it('answers ERR_RPC_RESPONSE_TOO_LARGE when a result exceeds responseBytesMax', async () => {
    const server = await startNode({ responseBytesMax: 1024 })
    const client = await startNode()
    server.rpc.register('dump', async () => 'y'.repeat(5000))
    const error = await rejectionOf(client.rpc.call(server.addr, 'dump', {}, { timeoutMs: 5000 }))
    expect((error as RpcRemoteError).code).toBe('ERR_RPC_RESPONSE_TOO_LARGE')
    expect(server.events.map((event) => event.type)).toEqual(['response-too-large'])
  })

  it('answers ERR_RPC_BUSY to requests beyond inboundStreamsMax and serves again once they finish', async () => {
    const server = await startNode({ inboundStreamsMax: 2 })
    const client = await startNode()
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let entered = 0
    server.rpc.register('wait', async () => {
      entered++
      await gate
      return 'done'
    })
    const first = [0, 1].map(() => client.rpc.call(server.addr, 'wait', {}, { timeoutMs: 5000 }))
    await expect.poll(() => entered, { timeout: 2000 }).toBe(2)
    const busy = await rejectionOf(client.rpc.call(server.addr, 'wait', {}, { timeoutMs: 5000 }))
    expect((busy as RpcRemoteError).code).toBe('ERR_RPC_BUSY')
    release()
    expect((await Promise.all(first)).map((answer) => answer.result)).toEqual(['done', 'done'])
    expect((await client.rpc.call(server.addr, 'wait', {}, { timeoutMs: 5000 })).result).toBe('done')
    expect(server.events.map((event) => event.type)).toEqual(['busy'])
  })

  it('accepts the expected peer and refuses another one at the dialled address', async () => {
    const serverA = await startNode()
    const serverB = await startNode()
    const client = await startNode()
    let callsOnB = 0
    serverA.rpc.register('join', async () => 'welcome')
    serverB.rpc.register('join', async () => {
      callsOnB++
      return 'welcome'
    })
    const ok = await client.rpc.call(
      serverA.addr,
      'join',
      {},
      { timeoutMs: 5000, expectPeerId: [serverA.id] },
    )
    expect(ok).toEqual({ result: 'welcome', peerId: serverA.id })

    const error = await rejectionOf(
      client.rpc.call(serverB.addr, 'join', {}, { timeoutMs: 5000, expectPeerId: [serverA.id] }),
    )
    expect(error).toBeInstanceOf(RpcIdentityError)
    expect((error as RpcIdentityError).code).toBe('ERR_RPC_IDENTITY')
    expect(error.message).toBe(
      `The peer at ${serverB.addr} is ${serverB.id}, which this token does not trust (expected one of ${serverA.id}).`,
    )
    // An address naming the wrong peer is refused before dialling.
    const named = await rejectionOf(
      client.rpc.call(
        `${serverB.addr}/p2p/${serverB.id}`,
        'join',
        {},
        { timeoutMs: 5000, expectPeerId: [serverA.id] },
      ),
    )
    expect((named as RpcIdentityError).code).toBe('ERR_RPC_IDENTITY')
    expect(callsOnB).toBe(0)
    expect(client.events.map((event) => event.type)).toEqual(['identity-mismatch', 'identity-mismatch'])
  })

  it('fails promptly with RpcDialError naming the address when nothing listens there', async () => {
    const client = await startNode()
    const address = `127.0.0.1:${await closedPort()}`
    const startedMs = Date.now()
    const error = await rejectionOf(client.rpc.call(address, 'status', {}, { timeoutMs: 5000 }))
    expect(Date.now() - startedMs).toBeLessThan(2000)
    expect(error).toBeInstanceOf(RpcDialError)
    expect((error as RpcDialError).code).toBe('ERR_RPC_DIAL')
    expect(error.message).toContain(`/ip4/127.0.0.1/tcp/${address.split(':')[1]}`)
    expect(error.message).toMatch(/ECONNREFUSED|refused/i)
  })

  it('survives garbage, oversized and missing requests on raw streams and keeps serving', async () => {
    const server = await startNode({ requestBytesMax: 1024, requestReadTimeoutMs: 200 })
    const raw = await startRawNode()
    server.rpc.register('ping', async () => 'pong')
    const target = server.node.getMultiaddrs()[0]!

    // A frame whose body is not JSON gets ERR_RPC_BAD_REQUEST.
    const notJson = await raw.dialProtocol(target, RPC_PROTOCOL)
    const notJsonAnswer = readFrame(notJson)
    notJson.send(encodeFrames([text.encode('{not json')]))
    expect(json(await notJsonAnswer)).toMatchObject({ error: { code: 'ERR_RPC_BAD_REQUEST' } })

    // A length prefix longer than any varint gets ERR_RPC_BAD_REQUEST.
    const badPrefix = await raw.dialProtocol(target, RPC_PROTOCOL)
    const badPrefixAnswer = readFrame(badPrefix)
    badPrefix.send(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]))
    expect(json(await badPrefixAnswer)).toMatchObject({ error: { code: 'ERR_RPC_BAD_REQUEST' } })

    // A prefix announcing 1 GiB is refused from the prefix alone.
    const huge = await raw.dialProtocol(target, RPC_PROTOCOL)
    const hugeAnswer = readFrame(huge)
    huge.send(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x04, 1, 2, 3]))
    expect(json(await hugeAnswer)).toMatchObject({ error: { code: 'ERR_RPC_REQUEST_TOO_LARGE' } })

    // JSON that is not a request object.
    const notRequest = await raw.dialProtocol(target, RPC_PROTOCOL)
    const notRequestAnswer = readFrame(notRequest)
    notRequest.send(encodeFrames([text.encode('[1,2,3]')]))
    expect(json(await notRequestAnswer)).toMatchObject({ error: { code: 'ERR_RPC_BAD_REQUEST' } })

    // A stream that never sends a request is reset after requestReadTimeoutMs.
    const silent = await raw.dialProtocol(target, RPC_PROTOCOL)
    expect(await readFrame(silent)).toBeNull()

    expect(server.events.map((event) => event.type)).toEqual([
      'bad-request',
      'bad-request',
      'request-too-large',
      'bad-request',
      'request-timeout',
    ])
    const client = await startNode()
    expect((await client.rpc.call(server.addr, 'ping', {}, { timeoutMs: 5000 })).result).toBe('pong')
  })

  it('reports ERR_RPC_BAD_RESPONSE when the server answers something that is not a response', async () => {
    const raw = await startRawNode()
    await raw.handle(RPC_PROTOCOL, (stream) => {
      stream.addEventListener('message', () => {
        stream.send(encodeFrames([text.encode('{"neither":1}')]))
        void stream.close()
      })
    })
    const client = await startNode()
    const error = await rejectionOf(client.rpc.call(raw.getMultiaddrs()[0]!, 'ping', {}, { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RpcError)
    expect((error as RpcError).code).toBe('ERR_RPC_BAD_RESPONSE')
    expect(error.message).toContain('neither "result" nor "error"')
  })

  it('fails calls in flight with ERR_RPC_STOPPED when the caller’s service stops', async () => {
    const server = await startNode()
    const client = await startNode()
    server.rpc.register('slow', async () => new Promise((resolve) => setTimeout(resolve, 3000)))
    const pending = rejectionOf(client.rpc.call(server.addr, 'slow', {}, { timeoutMs: 10_000 }))
    await new Promise((resolve) => setTimeout(resolve, 200))
    await client.rpc.stop()
    expect(((await pending) as RpcError).code).toBe('ERR_RPC_STOPPED')
  })
})
