// Checks the pure overlay planner for one vcluster on one host: a fresh host
// gets bridge, VXLAN over the mesh, flood and vnode FDB entries, the gateway
// with its shared MAC, the nftables tables and links up; a converged host gets
// nothing; drift (peer left, wrong VXLAN, changed rules) is corrected; the
// removal plan deletes exactly what exists; rules carry the isolation and NAT.

import { describe, expect, it } from 'vitest'
import { type LinkState, parseFdbJson } from '../../net/ip-link-state.ts'
import { MeshConfigError } from '../../net/mesh-errors.ts'
import {
  gatewayMac,
  type OverlayCurrent,
  type OverlayDesired,
  overlayMtu,
  parseNftTables,
  planOverlay,
  planOverlayRemoval,
  renderOverlayRules,
} from '../../net/vxlan-overlay.ts'

function desired(overrides: Partial<OverlayDesired> = {}): OverlayDesired {
  return {
    vni: 100,
    subnet: '10.250.1.0/24',
    gatewayAddress: '10.250.1.1/24',
    meshInterface: 'dkwg0',
    localMeshIp: '10.99.0.1',
    meshMtu: 1420,
    peerMeshIps: ['10.99.0.2', '10.99.0.3'],
    remoteVnodes: [{ mac: '02:00:00:00:01:02', hostMeshIp: '10.99.0.2' }],
    egressInterface: 'lan0',
    controlPorts: [7946, 8080],
    hostAddresses: ['10.213.0.0/24', '10.99.0.0/24'],
    ...overrides,
  }
}

function link(overrides: Partial<LinkState>): LinkState {
  return {
    name: '',
    kind: null,
    mtu: 1500,
    up: true,
    mac: null,
    master: null,
    addresses: [],
    vxlan: null,
    ...overrides,
  }
}

function converged(want: OverlayDesired = desired()): OverlayCurrent {
  const rules = renderOverlayRules(want)
  return {
    ipForward: true,
    links: [
      link({
        name: 'dkb100',
        kind: 'bridge',
        mtu: 1370,
        mac: gatewayMac(100),
        addresses: [
          { family: 'inet', local: '10.250.1.1', prefixLength: 24, scope: 'global' },
          { family: 'inet6', local: 'fe80::64:6bff:fe00:64', prefixLength: 64, scope: 'link' },
        ],
      }),
      link({
        name: 'dkx100',
        kind: 'vxlan',
        mtu: 1370,
        master: 'dkb100',
        vxlan: { vni: 100, local: '10.99.0.1', port: 4789, learning: false, device: 'dkwg0' },
      }),
    ],
    fdb: parseFdbJson(
      JSON.stringify([
        { mac: 'aa:bb:cc:00:00:01', flags: [], master: 'dkb100', state: 'permanent' },
        { mac: '00:00:00:00:00:00', dst: '10.99.0.2', flags: ['self'], state: 'permanent' },
        { mac: '00:00:00:00:00:00', dst: '10.99.0.3', flags: ['self'], state: 'permanent' },
        { mac: '02:00:00:00:01:02', dst: '10.99.0.2', flags: ['self'], state: 'permanent' },
      ]),
    ),
    nftTables: [
      { family: 'inet', name: 'dkv100', comment: rules.comment },
      { family: 'bridge', name: 'dkv100', comment: rules.comment },
    ],
  }
}

const argv = (commands: { file: string; args: string[] }[]): string[] =>
  commands.map((command) => [command.file, ...command.args].join(' '))

describe('planOverlay', () => {
  it('plans nothing for a host that already carries the vcluster as desired', () => {
    expect(planOverlay(converged(), desired())).toEqual([])
  })

  it('builds everything on a fresh host, in an order that works', () => {
    const plan = planOverlay({ ipForward: false, links: [], fdb: [], nftTables: [] }, desired())
    expect(argv(plan)).toEqual([
      'sysctl -w net.ipv4.ip_forward=1',
      'ip link add dev dkb100 type bridge',
      'ip link set dev dkb100 address 02:64:6b:00:00:64',
      'ip link set dev dkb100 mtu 1370',
      'ip link add dev dkx100 type vxlan id 100 local 10.99.0.1 dstport 4789 nolearning dev dkwg0',
      'ip link set dev dkx100 mtu 1370',
      'ip link set dev dkx100 master dkb100',
      'bridge fdb append 00:00:00:00:00:00 dev dkx100 dst 10.99.0.2',
      'bridge fdb append 00:00:00:00:00:00 dev dkx100 dst 10.99.0.3',
      'bridge fdb replace 02:00:00:00:01:02 dev dkx100 dst 10.99.0.2 self permanent',
      'ip addr add 10.250.1.1/24 dev dkb100',
      'nft -f -',
      'ip link set dev dkx100 up',
      'ip link set dev dkb100 up',
    ])
    expect(plan[11]?.input).toBe(renderOverlayRules(desired()).script)
  })

  it('drops the forwarding entries of a host that no longer holds the vcluster', () => {
    const want = desired({ peerMeshIps: ['10.99.0.3'], remoteVnodes: [] })
    expect(argv(planOverlay(converged(), want))).toEqual([
      'bridge fdb del 00:00:00:00:00:00 dev dkx100 dst 10.99.0.2',
      'bridge fdb del 02:00:00:00:01:02 dev dkx100 dst 10.99.0.2',
    ])
  })

  it('recreates a VXLAN device with the wrong source address and reloads rules that drifted', () => {
    const current = converged()
    current.links[1] = link({
      ...current.links[1]!,
      vxlan: { ...current.links[1]!.vxlan!, local: '10.99.0.9' },
    })
    current.nftTables[0] = { family: 'inet', name: 'dkv100', comment: 'docklet vni 100 0000' }
    expect(argv(planOverlay(current, desired()))).toEqual([
      'ip link del dev dkx100',
      'ip link add dev dkx100 type vxlan id 100 local 10.99.0.1 dstport 4789 nolearning dev dkwg0',
      'ip link set dev dkx100 mtu 1370',
      'ip link set dev dkx100 master dkb100',
      'bridge fdb append 00:00:00:00:00:00 dev dkx100 dst 10.99.0.2',
      'bridge fdb append 00:00:00:00:00:00 dev dkx100 dst 10.99.0.3',
      'bridge fdb replace 02:00:00:00:01:02 dev dkx100 dst 10.99.0.2 self permanent',
      'nft -f -',
      'ip link set dev dkx100 up',
    ])
  })

  it('refuses invalid input with a message naming the field', () => {
    const bad: Partial<OverlayDesired>[] = [
      { vni: 0 },
      { gatewayAddress: '10.250.1.1' },
      { localMeshIp: '10.99.0' },
      { peerMeshIps: ['10.99.0.1'] },
      { remoteVnodes: [{ mac: '02:00:00:00:01:02', hostMeshIp: '10.99.0.9' }] },
      { controlPorts: [70000] },
      { meshMtu: 600 },
    ]
    for (const overrides of bad)
      expect(() => planOverlay(converged(), desired(overrides))).toThrow(MeshConfigError)
  })
})

describe('rules and removal', () => {
  it('renders isolation, control-port, NAT and gateway-locality rules into one atomic script', () => {
    const { script, comment } = renderOverlayRules(desired())
    expect(script).toContain(`comment "${comment}"`)
    expect(script).toContain('iifname "dkb100" meta l4proto { tcp, udp } th dport { 7946, 8080 } drop')
    expect(script).toContain('iifname "dkb100" oifname != "lan0" drop')
    expect(script.indexOf('iifname "dkb100" oifname "dkb100" accept')).toBeLessThan(
      script.indexOf('iifname "dkb100" oifname != "lan0" drop'),
    )
    expect(script).toContain('ip saddr 10.250.1.0/24 oifname "lan0" masquerade')
    expect(script).toContain('oifname "dkx100" ether type arp arp daddr ip 10.250.1.1 drop')
    expect(script).toContain(`iifname "dkx100" ether saddr ${gatewayMac(100)} drop`)
    expect(renderOverlayRules(desired({ controlPorts: [7946] })).comment).not.toBe(comment)
  })

  it('reads table names and comments from nft list ruleset', () => {
    const text =
      'table inet dkv100 {\n\tcomment "docklet vni 100 abc"\n\tchain input {\n\t}\n}\ntable ip other {\n}\n'
    expect(parseNftTables(text)).toEqual([
      { family: 'inet', name: 'dkv100', comment: 'docklet vni 100 abc' },
      { family: 'ip', name: 'other', comment: null },
    ])
  })

  it('removes the tables and links of a vcluster, and nothing when none are left', () => {
    expect(argv(planOverlayRemoval(converged(), 100))).toEqual([
      'nft delete table inet dkv100',
      'nft delete table bridge dkv100',
      'ip link del dev dkx100',
      'ip link del dev dkb100',
    ])
    expect(planOverlayRemoval({ ipForward: true, links: [], fdb: [], nftTables: [] }, 100)).toEqual([])
  })

  it('gives the overlay the mesh MTU minus VXLAN overhead and a MAC shared by all hosts', () => {
    expect(overlayMtu(1420)).toBe(1370)
    expect(gatewayMac(0x123456)).toBe('02:64:6b:12:34:56')
  })
})
