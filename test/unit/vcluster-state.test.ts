// The allocation half of the state machine: users, groups and quotas,
// vclusters and their vnodes, images, host capacity, placement, addresses.
// Commands are built by hand and applied to a ClusterState with three member
// hosts. A refused command must change nothing, which is checked by
// comparing snapshot bytes before and after; usage is checked against a sum
// over the vnodes taken from the state's own view.

import { describe, expect, it } from 'vitest'
import {
  ClusterState,
  type Command,
  type CommandResult,
  canonicalJson,
  encodeCommand,
} from '../../src/state/cluster-state.ts'
import type { Resources } from '../../src/state/scheduler.ts'

const HOUR = 3_600_000
const IMAGE = 'ab'.repeat(32)
const limits: Resources = { cpuCores: 1, memoryMb: 500, diskMb: 500 }
const big = { cpuCores: 8, memoryMb: 8000, diskMb: 8000 }

function apply(state: ClusterState, command: Command): CommandResult {
  return state.apply(encodeCommand(command))
}

function applyOk(state: ClusterState, command: Command): Record<string, unknown> {
  const result = apply(state, command)
  if (!result.ok) throw new Error(`${command.type} was refused: ${result.error.message}`)
  return result
}

function bytes(state: ClusterState): string {
  return Buffer.from(state.snapshot()).toString()
}

function join(state: ClusterState, id: string, at: number): void {
  applyOk(state, {
    type: 'token.create',
    at,
    id: `t-${id}`,
    secretHash: 's',
    expiresAt: at + HOUR,
    createdBy: 'a',
  })
  applyOk(state, {
    type: 'member.join',
    at,
    tokenId: `t-${id}`,
    secretHash: 's',
    member: { id, name: `host-${id}`, address: '/ip4/127.0.0.1/tcp/1', portal: '' },
  })
}

/** A cluster of hosts a, b, c (each 8 cores, 8000 MB), user alice in group 'user', a public image 'busybox'. */
function cluster(options: { capacity?: Resources } = {}): ClusterState {
  const state = new ClusterState()
  applyOk(state, {
    type: 'cluster.init',
    at: 1_000,
    clusterId: 'c1',
    member: { id: 'a', name: 'host-a', address: '/ip4/127.0.0.1/tcp/1', portal: '' },
    admin: { name: 'admin', passwordHash: 'h' },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
  })
  join(state, 'b', 2_000)
  join(state, 'c', 3_000)
  for (const host of ['a', 'b', 'c'])
    applyOk(state, { type: 'host.capacity', at: 4_000, host, capacity: options.capacity ?? big })
  applyOk(state, {
    type: 'user.add',
    at: 5_000,
    name: 'alice',
    role: 'user',
    group: 'user',
    passwordHash: 'x',
    sshKey: { publicKey: 'pub', privateKey: 'priv' },
  })
  applyOk(state, {
    type: 'image.register',
    at: 5_000,
    id: IMAGE,
    name: 'busybox',
    owner: 'admin',
    visibility: 'public',
    sizeBytes: 1_000_000,
    host: 'a',
  })
  return state
}

function create(
  state: ClusterState,
  name: string,
  nodes: number,
  options: Partial<Resources> = {},
): CommandResult {
  return apply(state, {
    type: 'vcluster.create',
    at: 10_000,
    owner: 'alice',
    name,
    nodes,
    image: 'busybox',
    limits: { ...limits, ...options },
  })
}

/** Creates a vcluster that must be accepted; returns its id. */
function createId(
  state: ClusterState,
  name: string,
  nodes: number,
  options: Partial<Resources> = {},
): string {
  return String(applyOk(state, createCommand(name, nodes, options)).id)
}

/** Applies a command that must be refused with `code`, and checks that it changed nothing. */
function expectRefused(state: ClusterState, command: Command, code: string): string {
  const before = bytes(state)
  const result = apply(state, command)
  expect(result).toMatchObject({ ok: false, error: { code } })
  expect(bytes(state)).toBe(before)
  return result.ok ? '' : result.error.message
}

const createCommand = (name: string, nodes: number, extra: Partial<Resources> = {}): Command => ({
  type: 'vcluster.create',
  at: 10_000,
  owner: 'alice',
  name,
  nodes,
  image: 'busybox',
  limits: { ...limits, ...extra },
})

describe('quotas', () => {
  it('accepts a vcluster exactly at the memory quota and refuses one more megabyte, naming the numbers', () => {
    const state = cluster()
    expect(create(state, 'first', 2, { memoryMb: 750 }).ok).toBe(true)
    const message = expectRefused(state, createCommand('second', 1, { memoryMb: 501 }), 'ERR_QUOTA_EXCEEDED')
    expect(message).toBe('Memory quota exceeded: the vcluster needs 501 MB, you have 500 MB of 2000 MB left.')
    expect(create(state, 'second', 1, { memoryMb: 500 }).ok).toBe(true)
  })

  it('refuses the ninth vnode and the fifth vcluster of the default quota', () => {
    const state = cluster()
    const tiny = { cpuCores: 1, memoryMb: 100, diskMb: 100 }
    // cpu is 4 cores by default: raise it to see the vnode and vcluster counts bite.
    applyOk(state, { type: 'group.quota', at: 9_000, name: 'user', quota: { cpuCores: 100 } })
    for (const name of ['v1', 'v2', 'v3']) expect(create(state, name, 2, tiny).ok).toBe(true)
    expect(expectRefused(state, createCommand('v4', 3, tiny), 'ERR_QUOTA_EXCEEDED')).toBe(
      'Vnode quota exceeded: the vcluster needs 3 vnodes, you have 2 vnodes of 8 vnodes left.',
    )
    const id = createId(state, 'v4', 2, tiny)
    expect(id).toBeDefined()
    expect(
      expectRefused(
        state,
        { type: 'vcluster.scale-out', at: 12_000, vcluster: id, n: 1 },
        'ERR_QUOTA_EXCEEDED',
      ),
    ).toMatch(/^Vnode quota exceeded: the new vnode needs 1 vnode, you have 0 vnodes of 8 vnodes left/)
    applyOk(state, { type: 'group.quota', at: 12_000, name: 'user', quota: { vnodes: 100 } })
    expect(expectRefused(state, createCommand('v5', 1, tiny), 'ERR_QUOTA_EXCEEDED')).toMatch(
      /^Vcluster quota exceeded/,
    )
  })

  it('lets the first of two racing creates win and refuses the second with nothing allocated', () => {
    const state = cluster()
    // Each fits the 4-core quota alone; together they need 6.
    expect(create(state, 'one', 3).ok).toBe(true)
    const message = expectRefused(state, createCommand('two', 3), 'ERR_QUOTA_EXCEEDED')
    expect(message).toBe('Cpu quota exceeded: the vcluster needs 3 cores, you have 1 core of 4 cores left.')
    expect(Object.values(state.view.vclusters).map((vc) => vc.name)).toEqual(['one'])
  })

  it('keeps usage equal to the sum over the user vnodes through create, scale and delete', () => {
    const state = cluster()
    applyOk(state, {
      type: 'group.quota',
      at: 9_000,
      name: 'user',
      quota: { cpuCores: 16, memoryMb: 16000, diskMb: 16000 },
    })
    const a = createId(state, 'a', 3)
    const b = createId(state, 'b', 2, { memoryMb: 700 })
    applyOk(state, { type: 'vcluster.scale-out', at: 11_000, vcluster: a, n: 2 })
    applyOk(state, { type: 'vcluster.scale-in', at: 12_000, vcluster: a, index: 1 })
    applyOk(state, { type: 'vcluster.delete', at: 13_000, vcluster: b })
    const sum = { cpuCores: 0, memoryMb: 0, diskMb: 0, vnodes: 0 }
    for (const vc of Object.values(state.view.vclusters)) {
      if (vc.owner !== 'alice' || vc.status === 'deleting') continue
      for (const vnode of vc.vnodes.filter((v) => v.desired !== 'deleted')) {
        sum.cpuCores += vnode.limits.cpuCores
        sum.memoryMb += vnode.limits.memoryMb
        sum.diskMb += vnode.limits.diskMb
        sum.vnodes += 1
      }
    }
    expect(sum).toEqual({ cpuCores: 4, memoryMb: 2000, diskMb: 2000, vnodes: 4 })
    expect(state.usage('alice')).toEqual({ ...sum, vclusters: 1, images: 0 })
  })
})

describe('refused requests', () => {
  it('refuses a name clash per owner but allows the same name for another owner', () => {
    const state = cluster()
    applyOk(state, {
      type: 'user.add',
      at: 5_500,
      name: 'bob',
      role: 'user',
      group: 'user',
      passwordHash: 'y',
      sshKey: { publicKey: '', privateKey: '' },
    })
    expect(create(state, 'lab', 1).ok).toBe(true)
    expectRefused(state, createCommand('lab', 1), 'ERR_VCLUSTER_EXISTS')
    expect(apply(state, { ...createCommand('lab', 1), owner: 'bob' } as Command).ok).toBe(true)
  })

  it('refuses an unknown image and a private image of another user', () => {
    const state = cluster()
    expectRefused(state, { ...createCommand('x', 1), image: 'nope' } as Command, 'ERR_IMAGE_NOT_FOUND')
    applyOk(state, { type: 'image.unshare', at: 6_000, id: IMAGE })
    expectRefused(state, createCommand('x', 1), 'ERR_IMAGE_NOT_FOUND')
    expectRefused(state, { ...createCommand('x', 1), image: IMAGE } as Command, 'ERR_IMAGE_NOT_FOUND')
  })

  it('refuses bad names and sizes that are not positive whole numbers within the per-vnode maximum', () => {
    const state = cluster()
    expectRefused(state, createCommand('9lives', 1), 'ERR_BAD_NAME')
    expectRefused(state, createCommand('a'.repeat(33), 1), 'ERR_BAD_NAME')
    expectRefused(state, createCommand('ok', 0), 'ERR_BAD_SIZE')
    expectRefused(state, createCommand('ok', 1.5), 'ERR_BAD_SIZE')
    expectRefused(state, createCommand('ok', 1, { memoryMb: 0 }), 'ERR_BAD_SIZE')
    expectRefused(state, createCommand('ok', 1, { cpuCores: -1 }), 'ERR_BAD_SIZE')
    expect(expectRefused(state, createCommand('ok', 1, { diskMb: 2_000_000 }), 'ERR_BAD_SIZE')).toBe(
      'The disk MB of a vnode can be at most 1048576, not 2000000.',
    )
    expectRefused(state, createCommand('ok', 300), 'ERR_BAD_SIZE')
  })

  it('refuses a disabled user', () => {
    const state = cluster()
    applyOk(state, { type: 'user.disable', at: 6_000, name: 'alice' })
    expectRefused(state, createCommand('lab', 1), 'ERR_USER_NOT_ACTIVE')
  })

  it('never disables or demotes the only active admin', () => {
    const state = cluster()
    expectRefused(state, { type: 'user.disable', at: 6_000, name: 'admin' }, 'ERR_LAST_ADMIN')
    expectRefused(state, { type: 'user.modify', at: 6_000, name: 'admin', role: 'user' }, 'ERR_LAST_ADMIN')
  })
})

describe('placement', () => {
  it('spreads a vcluster over the hosts by default and skips a drained host', () => {
    const state = cluster()
    applyOk(state, { type: 'host.drain', at: 6_000, host: 'b' })
    const id = createId(state, 'lab', 4)
    expect(state.vcluster(id)?.vnodes.map((v) => v.host)).toEqual(['a', 'c', 'a', 'c'])
  })

  it('packs vnodes onto one host when the cluster policy is pack', () => {
    const state = new ClusterState()
    applyOk(state, {
      type: 'cluster.init',
      at: 1_000,
      clusterId: 'c1',
      member: { id: 'a', name: 'host-a', address: '/ip4/127.0.0.1/tcp/1', portal: '' },
      admin: { name: 'admin', passwordHash: 'h' },
      settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
      allocation: { policy: 'pack' },
    })
    join(state, 'b', 2_000)
    for (const host of ['a', 'b']) applyOk(state, { type: 'host.capacity', at: 3_000, host, capacity: big })
    applyOk(state, {
      type: 'image.register',
      at: 3_000,
      id: IMAGE,
      name: 'busybox',
      owner: 'admin',
      sizeBytes: 1,
    })
    const result = applyOk(state, { ...createCommand('lab', 3), owner: 'admin' } as Command) as { id: string }
    expect(state.vcluster(result.id)?.vnodes.map((v) => v.host)).toEqual(['a', 'a', 'a'])
  })

  it('leaves a vnode pending with a readable reason and places it when capacity arrives', () => {
    const state = cluster({ capacity: { cpuCores: 8, memoryMb: 1500, diskMb: 8000 } })
    applyOk(state, { type: 'group.quota', at: 9_000, name: 'user', quota: { memoryMb: 4000 } })
    const result = applyOk(state, createCommand('lab', 1, { memoryMb: 2000 }))
    expect(result.vnodes).toEqual([
      {
        index: 0,
        host: null,
        ip: '172.16.0.2',
        pendingReason: 'needs 2000 MB memory; the largest free is 1500 MB on host-a',
      },
    ])
    expect(state.vcluster(String(result.id))?.status).toBe('pending')
    applyOk(state, { type: 'host.capacity', at: 20_000, host: 'c', capacity: big })
    expect(state.vcluster(String(result.id))?.vnodes[0]).toMatchObject({ host: 'c', pendingReason: '' })
  })

  it('places pending vnodes in vnode order when a drained host is undrained', () => {
    const state = cluster()
    for (const host of ['a', 'b', 'c']) applyOk(state, { type: 'host.drain', at: 6_000, host })
    const id = createId(state, 'lab', 2)
    expect(state.vcluster(id)?.vnodes[0]?.pendingReason).toBe(
      'no host takes new vnodes: host-a is drained, host-b is drained, host-c is drained',
    )
    expect(applyOk(state, { type: 'host.undrain', at: 7_000, host: 'b' }).placed).toBe(2)
    expect(state.vcluster(id)?.vnodes.map((v) => v.host)).toEqual(['b', 'b'])
  })

  it('derives the vcluster status from what the agents observe', () => {
    const state = cluster()
    const id = createId(state, 'lab', 2)
    const observe = (index: number, observed: 'running' | 'error' | 'stopped', host?: string) =>
      apply(state, {
        type: 'vnode.observed',
        at: 11_000,
        vcluster: id,
        index,
        state: observed,
        error: 'boom',
        ...(host ? { host } : {}),
      })
    observe(0, 'running')
    expect(state.vcluster(id)?.status).toBe('pending')
    observe(1, 'running')
    expect(state.vcluster(id)?.status).toBe('running')
    observe(1, 'error')
    expect(state.vcluster(id)?.status).toBe('error')
    expect(state.vcluster(id)?.vnodes[1]?.lastError).toBe('boom')
    expect(observe(0, 'running', 'c')).toMatchObject({ ok: false, error: { code: 'ERR_STALE_REPORT' } })
    applyOk(state, { type: 'vcluster.stop', at: 12_000, vcluster: id })
    observe(1, 'stopped')
    expect(state.vcluster(id)).toMatchObject({ status: 'stopped', stoppedAt: 12_000 })
  })
})

describe('addresses and segments', () => {
  it('gives each vcluster its own /24 and VNI, never hands out the gateway, and never duplicates an address', () => {
    const state = cluster()
    applyOk(state, { type: 'group.quota', at: 9_000, name: 'user', quota: { cpuCores: 100, vnodes: 100 } })
    const one = state.vcluster(createId(state, 'one', 3, { memoryMb: 100, diskMb: 100 }))
    const two = state.vcluster(createId(state, 'two', 2, { memoryMb: 100, diskMb: 100 }))
    expect(one).toMatchObject({ subnet: '172.16.0.0/24', gateway: '172.16.0.1', vni: 1000 })
    expect(two).toMatchObject({ subnet: '172.16.1.0/24', gateway: '172.16.1.1', vni: 1001 })
    expect(one?.vnodes.map((v) => v.ip)).toEqual(['172.16.0.2', '172.16.0.3', '172.16.0.4'])
    expect(one?.vnodes.map((v) => v.hostname)).toEqual(['host-0', 'host-1', 'host-2'])
  })

  it('frees a scaled-in address when its host reports the vnode gone, and reuses it', () => {
    const state = cluster()
    const id = createId(state, 'lab', 3)
    applyOk(state, { type: 'vcluster.scale-in', at: 11_000, vcluster: id, index: 1 })
    // Until the agent confirms, the address is still held.
    applyOk(state, { type: 'vcluster.scale-out', at: 11_500, vcluster: id, n: 1 })
    expect(state.vcluster(id)?.vnodes.map((v) => v.ip)).toEqual([
      '172.16.0.2',
      '172.16.0.3',
      '172.16.0.4',
      '172.16.0.5',
    ])
    const host = state.vcluster(id)?.vnodes[1]?.host ?? ''
    applyOk(state, { type: 'vnode.observed', at: 12_000, vcluster: id, index: 1, state: 'deleted', host })
    applyOk(state, { type: 'vcluster.scale-in', at: 12_500, vcluster: id, index: 3 })
    applyOk(state, { type: 'vnode.observed', at: 12_600, vcluster: id, index: 3, state: 'deleted' })
    applyOk(state, { type: 'vcluster.scale-out', at: 13_000, vcluster: id, n: 1 })
    const vnodes = state.vcluster(id)?.vnodes ?? []
    expect(vnodes.map((v) => [v.index, v.ip])).toEqual([
      [0, '172.16.0.2'],
      [2, '172.16.0.4'],
      [4, '172.16.0.3'],
    ])
  })

  it('frees the subnet and VNI when the last vnode of a deleted vcluster is gone, and reuses them', () => {
    const state = cluster()
    const first = createId(state, 'one', 2)
    applyOk(state, { type: 'vcluster.delete', at: 11_000, vcluster: first })
    expect(state.vcluster(first)?.status).toBe('deleting')
    expect(state.usage('alice').vnodes).toBe(0)
    // Still held while the containers exist: a new vcluster gets the next subnet.
    const second = state.vcluster(createId(state, 'one', 1))
    expect(second).toMatchObject({ subnet: '172.16.1.0/24', vni: 1001 })
    for (const index of [0, 1])
      applyOk(state, { type: 'vnode.observed', at: 12_000, vcluster: first, index, state: 'deleted' })
    expect(state.vcluster(first)).toBeUndefined()
    const third = state.vcluster(createId(state, 'two', 1))
    expect(third).toMatchObject({ subnet: '172.16.0.0/24', vni: 1000 })
    expect(third?.vnodes[0]?.ip).toBe('172.16.0.2')
  })

  it('gives out every VNI and subnet at most once across many vclusters', () => {
    const state = cluster()
    applyOk(state, {
      type: 'group.quota',
      at: 9_000,
      name: 'user',
      quota: { cpuCores: 1000, memoryMb: 100_000, diskMb: 100_000, vnodes: 1000, vclusters: 1000 },
    })
    for (let i = 0; i < 30; i++) create(state, `vc${i}`, 1, { memoryMb: 10, diskMb: 10 })
    for (const id of ['3', '7', '11']) {
      applyOk(state, { type: 'vcluster.delete', at: 20_000, vcluster: id })
      applyOk(state, { type: 'vnode.observed', at: 20_001, vcluster: id, index: 0, state: 'deleted' })
    }
    for (let i = 30; i < 35; i++) create(state, `vc${i}`, 1, { memoryMb: 10, diskMb: 10 })
    const vclusters = Object.values(state.view.vclusters)
    expect(vclusters).toHaveLength(32)
    expect(new Set(vclusters.map((vc) => vc.vni)).size).toBe(32)
    expect(new Set(vclusters.map((vc) => vc.subnet)).size).toBe(32)
  })
})

describe('images', () => {
  it('refuses deleting an image in use, records the hosts that hold it, and counts images against the quota', () => {
    const state = cluster()
    create(state, 'lab', 1)
    expectRefused(state, { type: 'image.delete', at: 11_000, id: IMAGE }, 'ERR_IMAGE_IN_USE')
    applyOk(state, { type: 'image.held', at: 11_000, hash: IMAGE, host: 'c' })
    applyOk(state, { type: 'image.held', at: 11_000, hash: IMAGE, host: 'b' })
    expect(state.view.images[IMAGE]?.hosts).toEqual(['a', 'b', 'c'])
    applyOk(state, { type: 'group.quota', at: 11_000, name: 'user', quota: { images: 1 } })
    const save = (n: number): Command => ({
      type: 'image.register',
      at: 12_000,
      id: String(n).repeat(32),
      name: `saved${n}`,
      owner: 'alice',
      sizeBytes: 10,
    })
    applyOk(state, save(1))
    expectRefused(state, save(2), 'ERR_QUOTA_EXCEEDED')
    expect(state.usage('alice').images).toBe(1)
  })
})

describe('snapshots', () => {
  it('restores a snapshot to the same bytes', () => {
    const state = cluster()
    const id = createId(state, 'lab', 3)
    applyOk(state, { type: 'vcluster.scale-in', at: 11_000, vcluster: id, index: 2 })
    applyOk(state, { type: 'host.drain', at: 11_000, host: 'c' })
    const restored = new ClusterState()
    restored.restore(state.snapshot())
    expect(bytes(restored)).toBe(bytes(state))
    expect(restored.vcluster(id)?.vnodes).toHaveLength(3)
  })

  it('restores a snapshot taken before users, groups and vclusters existed, and works on from it', () => {
    const old = {
      clusterId: 'c1',
      createdAt: 1_000,
      settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
      members: {
        a: {
          id: 'a',
          name: 'host-a',
          address: '/ip4/127.0.0.1/tcp/1',
          portal: '',
          joinedAt: 1_000,
          online: true,
          onlineChangedAt: 1_000,
          caughtUp: true,
          leaving: false,
        },
      },
      tokens: {},
      users: {
        admin: { name: 'admin', role: 'admin', passwordHash: 'h', createdAt: 1_000, status: 'normal' },
      },
    }
    const state = new ClusterState()
    state.restore(new TextEncoder().encode(canonicalJson(old)))
    expect(Object.keys(state.view.groups).sort()).toEqual(['admin', 'user'])
    expect(state.view.users.admin).toMatchObject({
      group: 'admin',
      sshKey: { publicKey: '', privateKey: '' },
    })
    applyOk(state, { type: 'host.capacity', at: 2_000, host: 'a', capacity: big })
    applyOk(state, {
      type: 'image.register',
      at: 2_000,
      id: IMAGE,
      name: 'busybox',
      owner: 'admin',
      sizeBytes: 1,
    })
    const result = applyOk(state, { ...createCommand('lab', 1), owner: 'admin' } as Command) as { id: string }
    expect(state.vcluster(result.id)?.vnodes[0]).toMatchObject({ host: 'a', ip: '172.16.0.2' })
    const again = new ClusterState()
    again.restore(state.snapshot())
    expect(bytes(again)).toBe(bytes(state))
  })
})
