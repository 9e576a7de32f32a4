// The pure placement function: spread puts a vcluster's vnodes on different
// hosts (least loaded first, then by id), pack fills one host before the
// next, unavailable hosts are skipped, earlier placements count against later
// ones, and a vnode that fits nowhere gets a reason naming the numbers.
// Host slots are built by hand; nothing else is involved.

import { describe, expect, it } from 'vitest'
import { type HostSlot, pendingReason, placeVnodes, type Resources } from '../../src/state/scheduler.ts'

function host(id: string, options: Partial<HostSlot> = {}): HostSlot {
  return {
    id,
    name: `host-${id}`,
    unavailable: null,
    capacity: { cpuCores: 8, memoryMb: 8000, diskMb: 8000 },
    used: { cpuCores: 0, memoryMb: 0, diskMb: 0 },
    vnodesByVcluster: {},
    ...options,
  }
}

const small: Resources = { cpuCores: 1, memoryMb: 1000, diskMb: 1000 }
const requests = (n: number, limits = small, vcluster = '1') =>
  Array.from({ length: n }, () => ({ vcluster, limits }))

describe('placeVnodes', () => {
  it('spreads a vcluster across hosts, one vnode per host before any host gets a second', () => {
    const placed = placeVnodes([host('a'), host('b'), host('c')], requests(4), { policy: 'spread' })
    expect(placed.map((p) => p.host)).toEqual(['a', 'b', 'c', 'a'])
  })

  it('breaks a spread tie by the least loaded host, then by id', () => {
    const busy = host('a', { used: { cpuCores: 0, memoryMb: 4000, diskMb: 0 } })
    const placed = placeVnodes([busy, host('c'), host('b')], requests(2), { policy: 'spread' })
    expect(placed.map((p) => p.host)).toEqual(['b', 'c'])
  })

  it('packs a vcluster onto one host until it is full, preferring the fullest host', () => {
    const partly = host('b', { used: { cpuCores: 2, memoryMb: 2000, diskMb: 2000 } })
    const placed = placeVnodes([host('a'), partly], requests(7), { policy: 'pack' })
    expect(placed.map((p) => p.host)).toEqual(['b', 'b', 'b', 'b', 'b', 'b', 'a'])
  })

  it('skips drained, offline, leaving and unreported hosts', () => {
    const hosts = [
      host('a', { unavailable: 'drained' }),
      host('b', { unavailable: 'offline' }),
      host('c', { unavailable: 'leaving' }),
      host('d', { unavailable: 'unreported' }),
      host('e'),
    ]
    expect(placeVnodes(hosts, requests(2), { policy: 'spread' }).map((p) => p.host)).toEqual(['e', 'e'])
  })

  it('counts earlier placements against later requests and leaves the rest pending with a reason', () => {
    const hosts = [host('a', { capacity: { cpuCores: 4, memoryMb: 2500, diskMb: 8000 } })]
    const placed = placeVnodes(hosts, requests(3), { policy: 'spread' })
    expect(placed[0]?.host).toBe('a')
    expect(placed[1]?.host).toBe('a')
    expect(placed[2]).toEqual({
      host: null,
      reason: 'needs 1000 MB memory; the largest free is 500 MB on host-a',
    })
    expect(hosts[0]?.used.memoryMb).toBe(0)
  })
})

describe('pendingReason', () => {
  it('names the resource, the need and the largest free amount with its host', () => {
    const hosts = [
      host('a', { used: { cpuCores: 0, memoryMb: 7000, diskMb: 0 } }),
      host('b', { used: { cpuCores: 0, memoryMb: 6500, diskMb: 0 } }),
    ]
    expect(pendingReason(hosts, { cpuCores: 1, memoryMb: 2000, diskMb: 100 })).toBe(
      'needs 2000 MB memory; the largest free is 1500 MB on host-b',
    )
  })

  it('says why no host takes vnodes when none is available', () => {
    const hosts = [host('a', { unavailable: 'drained' }), host('b', { unavailable: 'unreported' })]
    expect(pendingReason(hosts, small)).toBe(
      'no host takes new vnodes: host-a is drained, host-b has not reported its capacity',
    )
  })

  it('says when each resource is free somewhere but no one host has all of it', () => {
    const hosts = [
      host('a', { capacity: { cpuCores: 8, memoryMb: 500, diskMb: 8000 } }),
      host('b', { capacity: { cpuCores: 8, memoryMb: 8000, diskMb: 500 } }),
    ]
    expect(pendingReason(hosts, small)).toBe(
      'needs 1 cpu core, 1000 MB memory, 1000 MB disk on one host; no host has all of it free',
    )
  })
})
