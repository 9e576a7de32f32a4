// Port mappings in the replicated state: the lowest free public port of
// the admin-configured range is allocated, only the vcluster's owner may map
// or unmap its ports, the portMappings quota and the range bound the table,
// and a mapping goes with its vnode (scale-in) or vcluster (delete).
// Commands are built by hand and applied to a ClusterState with one host; a
// refused command must leave the snapshot bytes unchanged.

import { describe, expect, it } from 'vitest'
import {
  ClusterState,
  type Command,
  type CommandResult,
  encodeCommand,
} from '../../src/state/cluster-state.ts'
import { defaultPortRange, portMappingsOf } from '../../src/state/port-state.ts'

const IMAGE = 'cd'.repeat(32)
const noKey = { publicKey: '', privateKey: '' }
const limits = { cpuCores: 1, memoryMb: 100, diskMb: 100 }

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

/** Host a, users alice and bob, alice's vcluster "web" (id 1) with vnodes 0 and 1. */
function cluster(): ClusterState {
  const state = new ClusterState()
  applyOk(state, {
    type: 'cluster.init',
    at: 1_000,
    clusterId: 'c1',
    member: { id: 'a', name: 'host-a', address: '/ip4/127.0.0.1/tcp/1', portal: '' },
    admin: { name: 'admin', passwordHash: 'h' },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
  })
  applyOk(state, {
    type: 'host.capacity',
    at: 1_000,
    host: 'a',
    capacity: { cpuCores: 8, memoryMb: 8000, diskMb: 8000 },
  })
  for (const name of ['alice', 'bob'])
    applyOk(state, {
      type: 'user.add',
      at: 1_000,
      name,
      role: 'user',
      group: 'user',
      passwordHash: 'h',
      sshKey: noKey,
    })
  applyOk(state, {
    type: 'image.register',
    at: 1_000,
    id: IMAGE,
    name: 'busybox',
    owner: 'admin',
    visibility: 'public',
    sizeBytes: 1,
  })
  applyOk(state, {
    type: 'vcluster.create',
    at: 1_000,
    owner: 'alice',
    name: 'web',
    nodes: 2,
    image: 'busybox',
    limits,
  })
  return state
}

const add = (at: number, extra: Partial<Extract<Command, { type: 'port.add' }>> = {}): Command => ({
  type: 'port.add',
  at,
  owner: 'alice',
  vcluster: '1',
  index: 0,
  port: 8080,
  protocol: 'tcp',
  ...extra,
})

describe('port state', () => {
  it('allocates the lowest free public port of the range, reusing a freed one', () => {
    const state = cluster()
    expect(applyOk(state, add(2_000))).toMatchObject({ publicPort: defaultPortRange.min })
    expect(applyOk(state, add(2_001, { port: 22 }))).toMatchObject({ publicPort: defaultPortRange.min + 1 })
    applyOk(state, { type: 'port.remove', at: 2_002, owner: 'alice', publicPort: defaultPortRange.min })
    expect(applyOk(state, add(2_003, { port: 443 }))).toMatchObject({ publicPort: defaultPortRange.min })
    expect(portMappingsOf(state.view, 'alice').map((m) => m.port)).toEqual([443, 22])
  })

  it('answers another user’s vcluster like a missing one and changes nothing', () => {
    const state = cluster()
    const before = bytes(state)
    expect(apply(state, add(2_000, { owner: 'bob' }))).toMatchObject({
      ok: false,
      error: { code: 'ERR_VCLUSTER_NOT_FOUND' },
    })
    expect(bytes(state)).toBe(before)
  })

  it('refuses to remove another user’s mapping', () => {
    const state = cluster()
    applyOk(state, add(2_000))
    const before = bytes(state)
    expect(
      apply(state, { type: 'port.remove', at: 2_001, owner: 'bob', publicPort: defaultPortRange.min }),
    ).toMatchObject({ ok: false, error: { code: 'ERR_PORT_MAPPING_NOT_FOUND' } })
    expect(bytes(state)).toBe(before)
  })

  it('refuses a duplicate mapping, a missing vnode, a bad port and a protocol other than tcp', () => {
    const state = cluster()
    applyOk(state, add(2_000))
    const before = bytes(state)
    const cases: Array<[Command, string]> = [
      [add(2_001), 'ERR_PORT_MAPPING_EXISTS'],
      [add(2_001, { index: 7 }), 'ERR_VNODE_NOT_FOUND'],
      [add(2_001, { port: 70_000 }), 'ERR_BAD_PORT'],
      [add(2_001, { protocol: 'udp' as 'tcp' }), 'ERR_BAD_PROTOCOL'],
    ]
    for (const [command, code] of cases)
      expect(apply(state, command)).toMatchObject({ ok: false, error: { code } })
    expect(bytes(state)).toBe(before)
  })

  it('enforces the portMappings quota of the user’s group', () => {
    const state = cluster()
    applyOk(state, { type: 'group.quota', at: 1_500, name: 'user', quota: { portMappings: 2 } })
    applyOk(state, add(2_000, { port: 1 }))
    applyOk(state, add(2_001, { port: 2 }))
    const result = apply(state, add(2_002, { port: 3 }))
    expect(result).toMatchObject({ ok: false, error: { code: 'ERR_QUOTA_EXCEEDED' } })
    expect(result.ok ? '' : result.error.message).toContain('0 of 2 port mappings left')
  })

  it('refuses a mapping when every port of the range is taken', () => {
    const state = cluster()
    applyOk(state, { type: 'ports.range', at: 1_500, min: 5000, max: 5001 })
    applyOk(state, add(2_000, { port: 1 }))
    applyOk(state, add(2_001, { port: 2 }))
    expect(apply(state, add(2_002, { port: 3 }))).toMatchObject({ ok: false, error: { code: 'ERR_NO_PORT' } })
  })

  it('refuses a range outside 1-65535 or upside down', () => {
    const state = cluster()
    const before = bytes(state)
    for (const [min, max] of [
      [0, 10],
      [10, 70_000],
      [20, 10],
    ] as const) {
      expect(apply(state, { type: 'ports.range', at: 1_500, min, max })).toMatchObject({
        ok: false,
        error: { code: 'ERR_BAD_PORT_RANGE' },
      })
    }
    expect(bytes(state)).toBe(before)
  })

  it('drops the mappings of a scaled-in vnode and of a deleted vcluster', () => {
    const state = cluster()
    applyOk(state, add(2_000, { index: 1 }))
    applyOk(state, add(2_001, { index: 0 }))
    applyOk(state, { type: 'vcluster.scale-in', at: 2_002, vcluster: '1', index: 1 })
    expect(portMappingsOf(state.view, 'alice').map((m) => m.index)).toEqual([0])
    applyOk(state, { type: 'vcluster.delete', at: 2_003, vcluster: '1' })
    expect(portMappingsOf(state.view, 'alice')).toEqual([])
  })
})
