// Checks MemoryNetwork / MemoryFrameTransport: the shared conformance suite
// (same behaviour as the libp2p transport), then the fault hooks the
// simulations rely on: partitions, random loss from a seeded source, delay.

import { afterEach, describe, expect, it } from 'vitest'
import { MemoryNetwork, NetConfigError } from '../../net/index.ts'
import { frameTransportConformance, type HarnessPeer, recordEvent } from './frame-transport-conformance.ts'

frameTransportConformance('memory', () => {
  const network = new MemoryNetwork()
  let next = 0
  const start = (id: string, options = {}): HarnessPeer => {
    const peer: HarnessPeer = { id, address: { id, addrs: [] }, transport: undefined!, events: [] }
    peer.transport = network.createTransport(id, {
      ...options,
      onEvent: (event) => recordEvent(peer.events, event),
    })
    return peer
  }
  return {
    createPeer: async (options) => start(`peer-${next++}`, options),
    stopPeer: async (peer) => peer.transport.stop(),
    restartPeer: async (peer) => start(peer.id),
    unreachablePeer: async () => ({ id: `absent-${next++}`, addrs: [] }),
    cleanup: () => network.close(),
  }
})

describe('memory network faults', () => {
  let network: MemoryNetwork

  afterEach(async () => {
    await network.close()
  })

  function pair(options: ConstructorParameters<typeof MemoryNetwork>[0] = {}) {
    network = new MemoryNetwork(options)
    const a = network.createTransport('a')
    const b = network.createTransport('b')
    a.setPeers([{ id: 'b', addrs: [] }])
    b.setPeers([{ id: 'a', addrs: [] }])
    const atB: number[] = []
    b.onFrame((_from, frame) => atB.push(frame[0]!))
    return { a, b, atB }
  }

  const tick = () => new Promise((resolve) => setTimeout(resolve, 0))

  it('delivers asynchronously, never inside send()', async () => {
    const { a, atB } = pair()
    a.send('b', Uint8Array.of(1))
    expect(atB).toEqual([])
    await tick()
    expect(atB).toEqual([1])
  })

  it('drops frames across a partition until it is healed', async () => {
    const { a, atB } = pair()
    network.partition('b', 'a')
    expect(a.send('b', Uint8Array.of(1))).toBe(true)
    await tick()
    expect(atB).toEqual([])
    expect(network.faultDrops).toBe(1)
    network.heal('a', 'b')
    a.send('b', Uint8Array.of(2))
    await tick()
    expect(atB).toEqual([2])
  })

  it('drops frames at the configured rate using the injected random source', async () => {
    // A fixed sequence: below the rate drops, at or above it delivers.
    const draws = [0.1, 0.9, 0.2, 0.8]
    let i = 0
    const { a, atB } = pair({ random: () => draws[i++ % draws.length]! })
    network.setDropRate(0.5)
    for (let n = 1; n <= 4; n++) a.send('b', Uint8Array.of(n))
    await tick()
    expect(atB).toEqual([2, 4])
    expect(network.faultDrops).toBe(2)
  })

  it('delays delivery by the configured time and keeps order', async () => {
    const { a, atB } = pair()
    network.setDelayMs(30)
    const sentAt = Date.now()
    a.send('b', Uint8Array.of(1))
    await tick()
    a.send('b', Uint8Array.of(2))
    await tick()
    expect(atB).toEqual([])
    while (atB.length < 2) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(29)
    expect(atB).toEqual([1, 2])
  })

  it('refuses a second running endpoint for the same id and invalid fault settings', () => {
    pair()
    expect(() => network.createTransport('a')).toThrow(NetConfigError)
    expect(() => network.setDropRate(1.5)).toThrow(NetConfigError)
    expect(() => network.setDelayMs(-1)).toThrow(NetConfigError)
  })
})
