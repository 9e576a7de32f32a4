// What makes a big vcluster come up fast on one host, without giving up
// what must hold: the host agent against the in-memory runtime, a real
// ClusterState its reports are applied to, a fake image fetch and a fake
// command runner for the vcluster network (every command answers after a
// short delay, recorded with its start and end). Checks that public images
// held by another host are copied here ahead of use (recorded as held),
// private ones are not, and a failed copy is not retried at once; that a
// vnode created while its image is being copied ahead joins that same copy;
// that the image fetch runs while the vcluster network converges, yet no
// container is created before the network (bridge, isolation rules) is
// done; that another host's vnode reports cost no round here; and that
// container steps run in parallel but never more than VNODE_STEPS_AT_ONCE
// at a time.

import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import type { CommandRunner, RunOptions, RunResult } from '../../net/index.ts'
import { type ContainerSpec, FakeRuntime, type ImageStore } from '../../runtime/index.ts'
import { HostAgent, VNODE_STEPS_AT_ONCE } from '../../src/agent/host-agent.ts'
import { ClusterState, type Command } from '../../src/state/cluster-state.ts'
import { applyOk } from '../support/cluster-commands.ts'

const LOCAL_IMAGE = 'cd'.repeat(32)
const REMOTE_IMAGE = 'ef'.repeat(32)
const limits = { cpuCores: 1, memoryMb: 64, diskMb: 64 }
const silent = pino({ level: 'silent' })

/** Hosts a (this one, with room) and b; busybox is on a, `remote` is registered as held by b only. */
function newCluster(remote: 'public' | 'private', hostBHasRoom = false): ClusterState {
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
    type: 'token.create',
    at: 1_500,
    id: 't-b',
    secretHash: 's',
    expiresAt: 3_600_000,
    createdBy: 'root',
  })
  // Host b reports no capacity: every vnode lands on a.
  applyOk(state, {
    type: 'member.join',
    at: 1_600,
    tokenId: 't-b',
    secretHash: 's',
    member: { id: 'b', name: 'host-b', address: '/ip4/127.0.0.1/tcp/2', portal: '' },
  })
  applyOk(state, {
    type: 'host.capacity',
    at: 2_000,
    host: 'a',
    capacity: { cpuCores: 64, memoryMb: 64_000, diskMb: 64_000 },
  })
  if (hostBHasRoom)
    applyOk(state, {
      type: 'host.capacity',
      at: 2_100,
      host: 'b',
      capacity: { cpuCores: 64, memoryMb: 64_000, diskMb: 64_000 },
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
  applyOk(state, {
    type: 'group.quota',
    at: 3_500,
    name: 'user',
    quota: { cpuCores: 64, memoryMb: 64_000, diskMb: 64_000, vnodes: 64, vclusters: 8 },
  } as unknown as Command)
  for (const [id, name, visibility, host] of [
    [LOCAL_IMAGE, 'busybox', 'public', 'a'],
    [REMOTE_IMAGE, 'elsewhere', remote, 'b'],
  ] as const) {
    applyOk(state, {
      type: 'image.register',
      at: 4_000,
      id,
      name,
      owner: 'admin',
      visibility,
      description: '',
      sizeBytes: 1_000,
      host,
    } as Command)
  }
  return state
}

function createVcluster(state: ClusterState, nodes: number, image: string, owner = 'alice'): string {
  const result = applyOk(state, {
    type: 'vcluster.create',
    at: 10_000,
    owner,
    name: 'web',
    nodes,
    image,
    limits,
  } as Command)
  return String((result.vcluster as { id: string } | undefined)?.id ?? result.id)
}

/** An image store holding LOCAL_IMAGE, and whatever the fake fetch brought. */
function imageStore(held: Set<string>): ImageStore {
  return {
    get: async (hash: string) => (held.has(hash) ? { name: 'x', hash, size: 1, createdAt: '' } : null),
    rootfsPath: (hash: string) => `/images/${hash}/rootfs`,
  } as unknown as ImageStore
}

interface Step {
  what: string
  startMs: number
  endMs: number
}

/** Answers every command after `delayMs` as a host without vcluster networks would, and records it. */
class SlowRunner implements CommandRunner {
  readonly steps: Step[] = []
  inFlight = 0
  readonly #delayMs: number
  constructor(delayMs: number) {
    this.#delayMs = delayMs
  }
  async run(file: string, args: readonly string[], _options: RunOptions): Promise<RunResult> {
    const step: Step = { what: `${file} ${args.join(' ')}`, startMs: performance.now(), endMs: Number.NaN }
    this.inFlight += 1
    await sleep(this.#delayMs)
    this.inFlight -= 1
    step.endMs = performance.now()
    this.steps.push(step)
    const stdout = file === 'ip' && args.includes('-j') ? '[]' : file === 'sysctl' ? '1\n' : ''
    return { exitCode: 0, stdout, stderr: '' }
  }
}

/** Records when containers are made, how many are being made at once, and how often they are listed. */
class TimedRuntime extends FakeRuntime {
  readonly creates: number[] = []
  lists = 0
  atOnce = 0
  atOnceMax = 0
  readonly createDelayMs: number
  constructor(createDelayMs = 0) {
    super()
    this.createDelayMs = createDelayMs
  }
  override async list() {
    this.lists += 1
    return super.list()
  }
  override async create(spec: ContainerSpec): Promise<void> {
    this.creates.push(performance.now())
    this.atOnce += 1
    this.atOnceMax = Math.max(this.atOnceMax, this.atOnce)
    try {
      await sleep(this.createDelayMs)
      await super.create(spec)
    } finally {
      this.atOnce -= 1
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function waitUntil(what: string, done: () => boolean, giveUpMs = 5_000): Promise<void> {
  const deadline = Date.now() + giveUpMs
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`Gave up waiting for ${what}.`)
    await sleep(10)
  }
}

const agents: HostAgent[] = []
afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.stop()
})

interface HarnessOptions {
  remote?: 'public' | 'private'
  hostBHasRoom?: boolean
  runtime?: FakeRuntime
  fetchImage?: (hash: string, hosts: string[]) => Promise<void>
  runner?: CommandRunner
}

function harness(options: HarnessOptions = {}) {
  const state = newCluster(options.remote ?? 'private', options.hostBHasRoom ?? false)
  const runtime = options.runtime ?? new FakeRuntime()
  const held = new Set([LOCAL_IMAGE])
  const fetches: Array<{ hash: string; hosts: string[] }> = []
  const agent = new HostAgent({
    nodeId: 'a',
    state,
    runtime,
    images: imageStore(held),
    submit: async (command) => applyOk(state, { ...command, at: Date.now() } as Command),
    barrier: async () => {},
    mesh:
      options.runner === undefined
        ? null
        : {
            view: () => ({
              interfaceName: 'dkmesh0',
              localMeshIp: '10.210.0.1',
              mtu: 1420,
              hostMeshIps: { a: '10.210.0.1' },
            }),
            onChange: () => () => {},
          },
    network:
      options.runner === undefined
        ? null
        : { runner: options.runner, egressInterface: 'eth0', controlPorts: [7946] },
    fetchImage: async (hash, hosts) => {
      fetches.push({ hash, hosts })
      await (options.fetchImage ?? (async () => {}))(hash, hosts)
      held.add(hash)
    },
    dataDir: '/tmp',
    logger: silent,
  })
  agents.push(agent)
  return { state, runtime, agent, fetches }
}

describe('the host agent, at pace', () => {
  it('copies a public image that another host holds ahead of use and records that it holds it too', async () => {
    const h = harness({ remote: 'public' })
    await h.agent.settle()
    await waitUntil('the image copied here', () => h.state.view.images[REMOTE_IMAGE]!.hosts.includes('a'))
    expect(h.fetches).toEqual([{ hash: REMOTE_IMAGE, hosts: ['b'] }])
    await h.agent.settle()
    await sleep(50)
    expect(h.fetches).toHaveLength(1)
  })

  it('leaves a private image on its host until a vnode here needs it', async () => {
    const h = harness({ remote: 'private' })
    await h.agent.settle()
    await sleep(50)
    await h.agent.settle()
    expect(h.fetches).toEqual([])
    expect(h.state.view.images[REMOTE_IMAGE]!.hosts).toEqual(['b'])
  })

  it('does not retry a failed copy ahead of use at once', async () => {
    const h = harness({
      remote: 'public',
      fetchImage: async () => {
        throw new Error('host b is unreachable')
      },
    })
    await h.agent.settle()
    await waitUntil('a copy attempt', () => h.fetches.length === 1)
    for (let round = 0; round < 3; round++) {
      await sleep(20)
      await h.agent.settle()
    }
    expect(h.fetches).toHaveLength(1)
    expect(h.state.view.images[REMOTE_IMAGE]!.hosts).toEqual(['b'])
  })

  it('lets vnodes created while their image is being copied ahead wait for that same copy', async () => {
    let release = () => {}
    const released = new Promise<void>((resolve) => {
      release = resolve
    })
    const h = harness({ remote: 'public', fetchImage: () => released })
    await h.agent.settle()
    await waitUntil('the copy ahead to start', () => h.fetches.length === 1)
    const id = createVcluster(h.state, 3, 'elsewhere')
    const round = h.agent.settle()
    await sleep(50)
    expect(await h.runtime.list()).toEqual([]) // no image yet, no container
    release()
    await round
    await h.agent.settle()
    expect(h.state.view.vclusters[id]!.vnodes.map((vnode) => vnode.observed)).toEqual([
      'running',
      'running',
      'running',
    ])
    expect(h.fetches).toHaveLength(1)
  })

  it('fetches the image while the vcluster network converges, and creates no container before the network is done', async () => {
    const runner = new SlowRunner(40)
    const runtime = new TimedRuntime()
    let fetchStartedMs = Number.NaN
    const h = harness({
      remote: 'private',
      runner,
      runtime,
      fetchImage: async () => {
        fetchStartedMs = performance.now()
        await sleep(20)
      },
    })
    const id = createVcluster(h.state, 4, 'elsewhere', 'admin') // the private image is the admin's
    await h.agent.settle()
    expect(h.state.view.vclusters[id]!.vnodes.every((vnode) => vnode.observed === 'running')).toBe(true)
    const overlay = runner.steps.filter((step) => !step.what.startsWith('ip -o link show type bridge'))
    expect(overlay.length).toBeGreaterThan(2)
    const networkDoneMs = Math.max(...overlay.map((step) => step.endMs))
    // The fetch began before the network was done (they overlap)…
    expect(fetchStartedMs).toBeLessThan(networkDoneMs)
    // …and every container came after the last network command.
    expect(runtime.creates).toHaveLength(4)
    for (const createdMs of runtime.creates) expect(createdMs).toBeGreaterThanOrEqual(networkDoneMs)
  })

  it("spends no round on another host's vnode reports, and still one on a change that concerns it", async () => {
    const runtime = new TimedRuntime()
    const h = harness({ runtime, hostBHasRoom: true })
    h.agent.start()
    const id = createVcluster(h.state, 6, 'busybox')
    await h.agent.settle()
    const vnodes = h.state.view.vclusters[id]!.vnodes
    const onB = vnodes.filter((vnode) => vnode.host === 'b')
    expect(onB.length).toBeGreaterThan(0)
    expect(vnodes.filter((vnode) => vnode.host === 'a').every((vnode) => vnode.observed === 'running')).toBe(
      true,
    )
    // The capacity report start() sends costs a round of its own: let it pass first.
    await sleep(50)
    await h.agent.settle()
    const listsBefore = runtime.lists
    for (const vnode of onB) {
      applyOk(h.state, {
        type: 'vnode.observed',
        at: 20_000,
        vcluster: id,
        index: vnode.index,
        state: 'running',
        host: 'b',
      } as Command)
    }
    await sleep(50)
    expect(runtime.lists).toBe(listsBefore)
    applyOk(h.state, { type: 'vcluster.stop', at: 30_000, vcluster: id })
    await waitUntil('a round after the stop', () => runtime.lists > listsBefore)
    await h.agent.settle()
    expect(
      h.state.view.vclusters[id]!.vnodes.filter((vnode) => vnode.host === 'a').map((v) => v.observed),
    ).toEqual(vnodes.filter((vnode) => vnode.host === 'a').map(() => 'stopped'))
  })

  it(`runs container steps in parallel, never more than ${VNODE_STEPS_AT_ONCE} at once`, async () => {
    const runtime = new TimedRuntime(20)
    const h = harness({ runtime })
    const id = createVcluster(h.state, 3 * VNODE_STEPS_AT_ONCE, 'busybox')
    await h.agent.settle()
    expect(h.state.view.vclusters[id]!.vnodes.every((vnode) => vnode.observed === 'running')).toBe(true)
    expect(runtime.creates).toHaveLength(3 * VNODE_STEPS_AT_ONCE)
    expect(runtime.atOnceMax).toBe(VNODE_STEPS_AT_ONCE)
  })
})
