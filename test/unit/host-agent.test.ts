// The host agent against the in-memory runtime: a real ClusterState that the
// agent's reports are applied to directly (no Raft), so every test checks
// both sides of the loop — the containers the runtime ends up with and what
// the state says was observed. Covers create/start, stop/start, scale-in and
// delete (the two-phase removal completes), failures reported and retried,
// orphans removed while other clusters' containers are left alone, and no
// change at all while the read barrier fails (no leader).

import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { FakeRuntime, type ImageStore } from '../../runtime/index.ts'
import { HostAgent } from '../../src/agent/host-agent.ts'
import { containerName, containerPrefix } from '../../src/agent/host-plan.ts'
import { ClusterState, type Command } from '../../src/state/cluster-state.ts'
import { applyOk } from '../support/cluster-commands.ts'

const IMAGE = 'cd'.repeat(32)
const OTHER_IMAGE = 'ef'.repeat(32)
const limits = { cpuCores: 1, memoryMb: 256, diskMb: 256 }

function newCluster(): ClusterState {
  const state = new ClusterState()
  applyOk(state, {
    type: 'cluster.init',
    at: 1_000,
    clusterId: 'feedc0de1234',
    member: { id: 'a', name: 'host-a', address: '/ip4/127.0.0.1/tcp/1', portal: '' },
    admin: { name: 'admin', passwordHash: 'h' },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
  })
  applyOk(state, {
    type: 'host.capacity',
    at: 2_000,
    host: 'a',
    capacity: { cpuCores: 8, memoryMb: 8000, diskMb: 8000 },
  })
  applyOk(state, {
    type: 'user.add',
    at: 3_000,
    name: 'alice',
    role: 'user',
    group: 'user',
    passwordHash: 'x',
    sshKey: { publicKey: '', privateKey: '' },
  })
  for (const [id, name] of [
    [IMAGE, 'busybox'],
    [OTHER_IMAGE, 'elsewhere'],
  ] as const) {
    applyOk(state, {
      type: 'image.register',
      at: 4_000,
      id,
      name,
      owner: 'admin',
      visibility: 'public',
      sizeBytes: 1_000,
      host: 'a',
    })
  }
  return state
}

/** An image store that holds IMAGE only. */
const images = {
  get: async (hash: string) => (hash === IMAGE ? { name: 'busybox', hash, size: 1, createdAt: '' } : null),
  rootfsPath: (hash: string) => `/images/${hash}/rootfs`,
} as unknown as ImageStore

interface Harness {
  state: ClusterState
  runtime: FakeRuntime
  agent: HostAgent
  reports: Command[]
  barrierOk: { value: boolean }
}

const agents: HostAgent[] = []
afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop()
})

function harness(runtime = new FakeRuntime()): Harness {
  const state = newCluster()
  const reports: Command[] = []
  const barrierOk = { value: true }
  const agent = new HostAgent({
    nodeId: 'a',
    state,
    runtime,
    images,
    submit: async (command) => {
      reports.push(command)
      return applyOk(state, { ...command, at: Date.now() } as Command)
    },
    barrier: async () => {
      if (!barrierOk.value) throw new Error('no leader')
    },
    mesh: null,
    network: null,
    dataDir: '/tmp',
    logger: pino({ level: 'silent' }),
  })
  agents.push(agent)
  return { state, runtime, agent, reports, barrierOk }
}

function createVcluster(state: ClusterState, nodes: number, image = 'busybox'): string {
  const result = applyOk(state, {
    type: 'vcluster.create',
    at: 10_000,
    owner: 'alice',
    name: 'web',
    nodes,
    image,
    limits,
  })
  return String((result.vcluster as { id: string } | undefined)?.id ?? result.id)
}

function name(state: ClusterState, vcluster: string, index: number): string {
  return containerName(containerPrefix(state.view.clusterId), vcluster, index)
}

function observed(state: ClusterState, vcluster: string): string[] {
  return state.view.vclusters[vcluster]!.vnodes.map((vnode) => vnode.observed)
}

describe('the host agent', () => {
  it('creates and starts the vnodes placed on its host and reports them running', async () => {
    const h = harness()
    const id = createVcluster(h.state, 2)
    await h.agent.settle()
    expect(await h.runtime.state(name(h.state, id, 0))).toBe('running')
    expect(await h.runtime.state(name(h.state, id, 1))).toBe('running')
    expect(observed(h.state, id)).toEqual(['running', 'running'])
    expect(h.state.view.vclusters[id]!.status).toBe('running')
    const hosts = await h.runtime.exec(name(h.state, id, 1), ['cat', '/etc/hosts'], { timeoutMs: 1_000 })
    const vnodes = h.state.view.vclusters[id]!.vnodes
    expect(hosts.stdout).toContain(`${vnodes[0]!.ip}\thost-0`)
    expect(hosts.stdout).toContain(`${vnodes[1]!.ip}\thost-1`)
  })

  it('stops and starts vnodes as the vcluster is stopped and started', async () => {
    const h = harness()
    const id = createVcluster(h.state, 2)
    await h.agent.settle()
    applyOk(h.state, { type: 'vcluster.stop', at: 20_000, vcluster: id })
    await h.agent.settle()
    expect(await h.runtime.state(name(h.state, id, 0))).toBe('stopped')
    expect(observed(h.state, id)).toEqual(['stopped', 'stopped'])
    expect(h.state.view.vclusters[id]!.status).toBe('stopped')
    applyOk(h.state, { type: 'vcluster.start', at: 30_000, vcluster: id })
    await h.agent.settle()
    expect(observed(h.state, id)).toEqual(['running', 'running'])
  })

  it('removes a scaled-in vnode and the state frees it once the container is gone', async () => {
    const h = harness()
    const id = createVcluster(h.state, 3)
    await h.agent.settle()
    applyOk(h.state, { type: 'vcluster.scale-in', at: 20_000, vcluster: id, index: 1 })
    await h.agent.settle()
    expect(await h.runtime.state(name(h.state, id, 1))).toBe('absent')
    expect(h.state.view.vclusters[id]!.vnodes.map((v) => v.index)).toEqual([0, 2])
    // The survivors' /etc/hosts is rewritten without the removed vnode.
    const rewrites = h.runtime.calls.filter((c) => c.operation === 'exec' && c.name === name(h.state, id, 0))
    expect(rewrites.length).toBeGreaterThan(0)
  })

  it('deletes every container of a deleted vcluster and the vcluster leaves the state', async () => {
    const h = harness()
    const id = createVcluster(h.state, 2)
    await h.agent.settle()
    applyOk(h.state, { type: 'vcluster.delete', at: 20_000, vcluster: id })
    await h.agent.settle()
    expect(await h.runtime.list()).toEqual([])
    expect(h.state.view.vclusters[id]).toBeUndefined()
  })

  it('reports a failed create with its reason and retries it after a back-off', async () => {
    const runtime = new FakeRuntime()
    runtime.failNext('create', new Error('disk on fire'))
    const h = harness(runtime)
    const id = createVcluster(h.state, 1)
    await h.agent.settle()
    const vnode = h.state.view.vclusters[id]!.vnodes[0]!
    expect(vnode.observed).toBe('error')
    expect(vnode.lastError).toContain('disk on fire')
    expect(await runtime.state(name(h.state, id, 0))).toBe('absent')
    // The retry comes by itself after the back-off (1 s for the first failure).
    await new Promise((done) => setTimeout(done, 1_300))
    await h.agent.settle()
    expect(observed(h.state, id)).toEqual(['running'])
  })

  it('fails a vnode whose image no host holds with a sentence naming the image', async () => {
    const h = harness()
    const id = createVcluster(h.state, 1, 'elsewhere')
    await h.agent.settle()
    const vnode = h.state.view.vclusters[id]!.vnodes[0]!
    expect(vnode.observed).toBe('error')
    expect(vnode.lastError).toMatch(/image elsewhere .* is not on this host and no other host holds it/)
  })

  it("removes its cluster's containers the state does not place here and leaves other containers alone", async () => {
    const runtime = new FakeRuntime()
    const h = harness(runtime)
    const spec = {
      hostname: 'x',
      imagePath: '/images/x',
      limits,
      network: null,
      hosts: [],
    }
    await runtime.create({ ...spec, name: name(h.state, '99', 0) })
    await runtime.create({ ...spec, name: 'dk-otherclu-1-0' })
    await runtime.create({ ...spec, name: 'someone-elses' })
    await h.agent.settle()
    expect((await runtime.list()).map((c) => c.name)).toEqual(['dk-otherclu-1-0', 'someone-elses'])
  })

  it('changes nothing while the read barrier fails, then converges once it passes', async () => {
    const h = harness()
    h.barrierOk.value = false
    const id = createVcluster(h.state, 1)
    await h.agent.settle()
    expect(await h.runtime.list()).toEqual([])
    expect(h.reports).toEqual([])
    h.barrierOk.value = true
    await h.agent.settle()
    expect(observed(h.state, id)).toEqual(['running'])
  })

  it('recreates a container that vanished behind its back', async () => {
    const h = harness()
    const id = createVcluster(h.state, 1)
    await h.agent.settle()
    await h.runtime.destroy(name(h.state, id, 0))
    await h.agent.settle()
    expect(await h.runtime.state(name(h.state, id, 0))).toBe('running')
  })

  it('runs exec in the vnode and refuses vnodes it does not hold', async () => {
    const h = harness()
    const id = createVcluster(h.state, 1)
    await h.agent.settle()
    const result = await h.agent.exec(id, 0, ['hostname'], 1_000)
    expect(result).toEqual({ exitCode: 0, stdout: 'host-0\n', stderr: '' })
    await expect(h.agent.exec(id, 7, ['hostname'], 1_000)).rejects.toMatchObject({
      code: 'ERR_VNODE_NOT_FOUND',
    })
  })
})

describe('evacuating a drained host', () => {
  it('moves every vnode to another host with its hostname, IP and files, and the source lets go of it', async () => {
    const state = newCluster()
    applyOk(state, {
      type: 'token.create',
      at: 5_000,
      id: 't-b',
      secretHash: 's',
      expiresAt: 9e12,
      createdBy: 'a',
    })
    applyOk(state, {
      type: 'member.join',
      at: 5_000,
      tokenId: 't-b',
      secretHash: 's',
      member: { id: 'b', name: 'host-b', address: '/ip4/127.0.0.1/tcp/2', portal: '' },
    })
    // Host b reports no capacity yet, so the vcluster lands on a.
    const saved = 'aa'.repeat(32)
    const stores = { a: new Set([IMAGE]), b: new Set([IMAGE]) }
    const fetched: string[] = []
    const make = (host: 'a' | 'b') => {
      const runtime = new FakeRuntime()
      const store = {
        get: async (hash: string) =>
          stores[host].has(hash) ? { name: 'x', hash, size: 1, createdAt: '' } : null,
        rootfsPath: (hash: string) => `/images/${hash}/rootfs`,
        saveUpper: async (_upper: string, parent: string) => {
          expect(parent).toBe(IMAGE)
          stores[host].add(saved)
          return { name: 'move', hash: saved, size: 1, createdAt: '' }
        },
      } as unknown as ImageStore
      const agent = new HostAgent({
        nodeId: host,
        state,
        runtime,
        images: store,
        submit: async (command) => applyOk(state, { ...command, at: Date.now() } as Command),
        barrier: async () => {},
        mesh: null,
        network: null,
        fetchImage: async (hash, from) => {
          fetched.push(`${hash}@${from.join(',')}`)
          stores[host].add(hash)
        },
        dataDir: '/tmp',
        logger: pino({ level: 'silent' }),
      })
      agents.push(agent)
      return { runtime, agent }
    }
    const a = make('a')
    const b = make('b')
    const id = createVcluster(state, 2)
    await a.agent.settle()
    const before = state.view.vclusters[id]!.vnodes.map((v) => ({ ip: v.ip, host: v.host }))
    expect(before.every((v) => v.host === 'a')).toBe(true)

    applyOk(state, {
      type: 'host.capacity',
      at: 20_000,
      host: 'b',
      capacity: { cpuCores: 8, memoryMb: 8000, diskMb: 8000 },
    })
    const drained = applyOk(state, { type: 'host.drain', at: 21_000, host: 'a', evacuate: true })
    expect(drained).toMatchObject({ moving: 2, stuck: 0 })
    for (let round = 0; round < 4; round++) {
      await a.agent.settle()
      await b.agent.settle()
    }
    const after = state.view.vclusters[id]!.vnodes
    expect(after.map((v) => v.host)).toEqual(['b', 'b'])
    expect(after.map((v) => v.ip)).toEqual(before.map((v) => v.ip))
    expect(after.every((v) => v.move === undefined && v.image === saved)).toBe(true)
    // Both vnodes saved to the same bytes here, so b fetched them once, from a.
    expect(fetched).toEqual([`${saved}@a`])
    expect(await a.runtime.list()).toEqual([])
    const onB = await b.runtime.list()
    expect(onB.map((c) => c.state)).toEqual(['running', 'running'])
    expect(onB.map((c) => c.imagePath)).toEqual([`/images/${saved}/rootfs`, `/images/${saved}/rootfs`])
    expect(after.map((v) => v.observed)).toEqual(['running', 'running'])
  })
})
