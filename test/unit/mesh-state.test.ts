// The mesh part of the replicated state, and the WireGuard configuration a
// host derives from it. Commands are built by hand and applied to
// ClusterState directly: mesh addresses are handed out lowest free first at
// cluster.init and member.join (equal on replicas fed the same commands),
// freed with the member, refused when the range is full; announced keys and
// endpoints are recorded only when well-formed; an old snapshot without mesh
// fields restores. The derivation (desiredMeshFromState, meshViewOf) is
// checked on states built the same way.

import { describe, expect, it } from 'vitest'
import { desiredMeshFromState, meshEndpointFor, meshViewOf } from '../../src/agent/mesh-agent.ts'
import {
  ClusterState,
  type Command,
  type CommandResult,
  encodeCommand,
  type MemberInfo,
} from '../../src/state/cluster-state.ts'
import { checkMeshSettings, meshHosts } from '../../src/state/mesh-state.ts'

const HOUR = 3_600_000
// Valid WireGuard public keys (base64 of 32 bytes, last character from the allowed set).
const KEY_A = 'YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE='
const KEY_B = 'YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI='
const KEY_C = 'Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2M='

function apply(state: ClusterState, command: Command): CommandResult {
  return state.apply(encodeCommand(command))
}

function host(id: string, key: string, port: number): MemberInfo {
  return {
    id,
    name: `host-${id}`,
    address: `/ip4/10.0.0.${port}/tcp/7946`,
    portal: '',
    meshPublicKey: key,
    meshEndpoint: `10.0.0.${port}:51820`,
  }
}

function initialized(mesh?: { network: string }): ClusterState {
  const state = new ClusterState()
  const result = apply(state, {
    type: 'cluster.init',
    at: 1_000,
    clusterId: 'c1',
    member: host('a', KEY_A, 1),
    admin: { name: 'admin', passwordHash: 'h' },
    settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
    ...(mesh === undefined ? {} : { mesh }),
  })
  expect(result.ok).toBe(true)
  return state
}

function join(state: ClusterState, member: MemberInfo, at = 3_000): CommandResult {
  // Named from the state, so replicas fed the same calls get the same token ids.
  const id = `t${Object.keys(state.view.tokens).length + 1}`
  apply(state, { type: 'token.create', at, id, secretHash: 's', expiresAt: at + HOUR, createdBy: 'root' })
  return apply(state, { type: 'member.join', at, tokenId: id, secretHash: 's', member })
}

describe('mesh addresses in the cluster state', () => {
  it('gives the founder the first address of the default range and records its key and endpoint', () => {
    const state = initialized()
    expect(state.view.mesh).toEqual({ network: '10.210.0.0/16' })
    expect(state.member('a')).toMatchObject({
      meshIp: '10.210.0.1',
      meshPublicKey: KEY_A,
      meshEndpoint: '10.0.0.1:51820',
    })
  })

  it('hands joiners the lowest free address of a range chosen at init', () => {
    const state = initialized({ network: '10.77.0.0/24' })
    expect(join(state, host('b', KEY_B, 2)).ok).toBe(true)
    expect(join(state, host('c', KEY_C, 3)).ok).toBe(true)
    expect(['a', 'b', 'c'].map((id) => state.member(id)?.meshIp)).toEqual([
      '10.77.0.1',
      '10.77.0.2',
      '10.77.0.3',
    ])
  })

  it('frees a removed member’s address for the next joiner', () => {
    const state = initialized()
    join(state, host('b', KEY_B, 2))
    expect(apply(state, { type: 'member.remove', at: 4_000, id: 'b' }).ok).toBe(true)
    join(state, host('c', KEY_C, 3), 5_000)
    expect(state.member('c')?.meshIp).toBe('10.210.0.2')
  })

  it('gives replicas that apply the same commands byte-identical states', () => {
    const replicas = [initialized(), initialized()]
    for (const state of replicas) {
      join(state, host('b', KEY_B, 2))
      apply(state, { type: 'member.remove', at: 4_000, id: 'a' })
      join(state, host('c', KEY_C, 3), 5_000)
    }
    expect(Buffer.from(replicas[0]!.snapshot()).equals(Buffer.from(replicas[1]!.snapshot()))).toBe(true)
    expect(replicas[0]!.member('c')?.meshIp).toBe('10.210.0.1')
  })

  it('refuses a join when every address of the range is taken, leaving the token unused', () => {
    const state = initialized({ network: '10.77.0.0/30' })
    expect(join(state, host('b', KEY_B, 2)).ok).toBe(true)
    const refused = join(state, host('c', KEY_C, 3))
    expect(refused).toMatchObject({ ok: false, error: { code: 'ERR_MESH_FULL' } })
    expect(state.member('c')).toBeUndefined()
    expect(Object.values(state.view.tokens).map((token) => token.usedBy)).toEqual(['b', ''])
  })

  it('refuses an init whose mesh range is malformed or overlaps the vcluster network, changing nothing', () => {
    for (const network of ['10.210.0.0', '10.0.0.0/4', '172.16.128.0/20']) {
      const state = new ClusterState()
      const before = state.snapshot()
      const result = apply(state, {
        type: 'cluster.init',
        at: 1_000,
        clusterId: 'c1',
        member: host('a', KEY_A, 1),
        admin: { name: 'admin', passwordHash: 'h' },
        settings: { maxVoters: 3, offlineThresholdMs: 15_000 },
        mesh: { network },
      })
      expect(result, network).toMatchObject({ ok: false, error: { code: 'ERR_BAD_SETTINGS' } })
      expect(state.snapshot()).toEqual(before)
    }
    expect(checkMeshSettings({ network: '172.16.0.0/12' }, '172.16.0.0/16')).toMatch(/overlaps/)
  })

  it('records a malformed key or endpoint as empty, so it cannot reach any host’s WireGuard', () => {
    const state = initialized()
    join(state, { ...host('b', 'not-a-key', 2), meshEndpoint: '10.0.0.2' })
    expect(state.member('b')).toMatchObject({ meshPublicKey: '', meshEndpoint: '', meshIp: '10.210.0.2' })
    expect(meshHosts(state.view).map((h) => h.id)).toEqual(['a'])
  })

  it('updates a member’s key and endpoint from member.update, keeping fields the update leaves out', () => {
    const state = initialized()
    apply(state, {
      type: 'member.update',
      at: 2_000,
      member: {
        id: 'a',
        name: 'host-a',
        address: '/ip4/10.0.0.9/tcp/7946',
        portal: '',
        meshEndpoint: '10.0.0.9:51820',
      },
    })
    expect(state.member('a')).toMatchObject({ meshPublicKey: KEY_A, meshEndpoint: '10.0.0.9:51820' })
    apply(state, { type: 'member.update', at: 2_500, member: { ...host('a', KEY_B, 9) } })
    expect(state.member('a')?.meshPublicKey).toBe(KEY_B)
    expect(state.member('a')?.meshIp).toBe('10.210.0.1')
  })

  it('restores a snapshot taken before the mesh existed, and addresses its members on their next update', () => {
    const state = initialized()
    join(state, host('b', KEY_B, 2))
    const old = JSON.parse(Buffer.from(state.snapshot()).toString('utf8')) as Record<string, unknown>
    delete old.mesh
    for (const member of Object.values(old.members as Record<string, Record<string, unknown>>)) {
      delete member.meshPublicKey
      delete member.meshEndpoint
      delete member.meshIp
    }
    const restored = new ClusterState()
    restored.restore(new TextEncoder().encode(JSON.stringify(old)))
    expect(restored.view.mesh).toEqual({ network: '10.210.0.0/16' })
    expect(restored.member('b')).toMatchObject({ meshPublicKey: '', meshEndpoint: '', meshIp: '' })
    expect(apply(restored, { type: 'member.update', at: 9_000, member: host('b', KEY_B, 2) }).ok).toBe(true)
    expect(restored.member('b')).toMatchObject({ meshPublicKey: KEY_B, meshIp: '10.210.0.1' })
  })

  it('lists a key announced by two members once, for the member that joined first', () => {
    const state = initialized()
    join(state, host('b', KEY_A, 2))
    expect(meshHosts(state.view)).toEqual([
      { id: 'a', publicKey: KEY_A, endpoint: '10.0.0.1:51820', meshIp: '10.210.0.1' },
    ])
  })
})

describe('the WireGuard configuration a host derives from the state', () => {
  const options = {
    publicKey: KEY_B,
    interfaceName: 'dkmesh0',
    privateKeyPath: '/var/lib/docklet/mesh/wg.key',
    listenPort: 51820,
    mtu: 1420,
    persistentKeepaliveS: 25,
  }

  it('makes every other member with a key a peer at its mesh address, with its endpoint and the keepalive', () => {
    const state = initialized()
    join(state, host('b', KEY_B, 2))
    join(state, { ...host('c', KEY_C, 3), meshEndpoint: '' })
    const desired = desiredMeshFromState(state.view, { ...options, selfId: 'b' })
    expect(desired).toEqual({
      interfaceName: 'dkmesh0',
      privateKeyPath: '/var/lib/docklet/mesh/wg.key',
      listenPort: 51820,
      address: '10.210.0.2/16',
      mtu: 1420,
      peers: [
        {
          publicKey: KEY_A,
          endpoint: '10.0.0.1:51820',
          allowedIps: ['10.210.0.1/32'],
          persistentKeepaliveS: 25,
          label: 'a',
        },
        { publicKey: KEY_C, allowedIps: ['10.210.0.3/32'], persistentKeepaliveS: 25, label: 'c' },
      ],
    })
    expect(meshViewOf(desired!, 'b')).toEqual({
      interfaceName: 'dkmesh0',
      localMeshIp: '10.210.0.2',
      mtu: 1420,
      hostMeshIps: { a: '10.210.0.1', b: '10.210.0.2', c: '10.210.0.3' },
    })
  })

  it('drops a removed member’s peer', () => {
    const state = initialized()
    join(state, host('b', KEY_B, 2))
    join(state, host('c', KEY_C, 3))
    apply(state, { type: 'member.remove', at: 4_000, id: 'c' })
    const peers = desiredMeshFromState(state.view, { ...options, selfId: 'b' })?.peers ?? []
    expect(peers.map((peer) => peer.label)).toEqual(['a'])
  })

  it('asks nothing of a host the state does not list yet (a joiner still catching up)', () => {
    expect(desiredMeshFromState(initialized().view, { ...options, selfId: 'b' })).toBeNull()
  })

  it('takes the endpoint from the advertised IPv4 or IPv6 address and none from an unspecified one', () => {
    expect(meshEndpointFor('/ip4/10.213.0.2/tcp/7946', 51820)).toBe('10.213.0.2:51820')
    expect(meshEndpointFor('/ip6/fd00::2/tcp/7946', 51821)).toBe('[fd00::2]:51821')
    expect(meshEndpointFor('/ip4/0.0.0.0/tcp/7946', 51820)).toBe('')
    expect(meshEndpointFor('/dns4/example.org/tcp/7946', 51820)).toBe('')
  })
})
