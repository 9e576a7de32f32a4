// Smoke: a three-node core network elects a leader and replicates proposals.
import { describe, expect, it } from 'vitest'
import { CoreNetwork } from '../support/core-network.ts'

describe('core smoke', () => {
  it('elects a leader and replicates', () => {
    const net = new CoreNetwork(['a', 'b', 'c'])
    net.elect('a')
    expect(net.leader()).toBe('a')
    net.propose('a', 'x')
    net.propose('a', 'y')
    net.stabilize()
    net.tick('a'); net.stabilize()
    for (const id of ['a', 'b', 'c']) expect(net.appliedData(id)).toEqual(['x', 'y'])
  })
})
