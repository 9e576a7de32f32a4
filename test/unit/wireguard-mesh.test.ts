// Checks the pure half of the WireGuard mesh: the parsers of `wg show dump` and
// `ip -j addr show`, and planMesh (create, key/port, peers added, updated and
// removed, addresses, MTU, link up; nothing when already converged), plus the
// executor against a scripted fake runner (probe once, plan, persist, restore).

import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { CommandRunner, RunOptions, RunResult } from '../../net/command-runner.ts'
import { parseIpAddrJson } from '../../net/ip-link-state.ts'
import { MeshConfigError, MeshParseError } from '../../net/mesh-errors.ts'
import {
  applyMesh,
  ensureMeshKey,
  type MeshCurrent,
  type MeshDesired,
  meshMtuFromUnderlay,
  parseWgDump,
  planMesh,
  restoreMesh,
} from '../../net/wireguard-mesh.ts'

const PRIVATE = 'CB1pATTJnXI5fk5toJIW6UsERWmKzDwTNmQH3ytIlkU='
const PUBLIC = 'wCCfiGVZ/zpJRCA0lLrtUqZV6LtlY4ukFWZzEdoIGjE='
const PEER_B = 'gSZEl4L6tpRU7IUwZOPZaot3sfy7oyeWrdIp13nEgE8='
const PEER_C = 'w/0alIWwfSlJ64F+6an+4OSczNjekYjp7yOB1/mqAxQ='

const DUMP = [
  `${PRIVATE}\t${PUBLIC}\t51820\toff`,
  `${PEER_B}\t(none)\t10.213.0.2:51820\t10.99.0.2/32\t1700000000\t1200\t3400\t25`,
  `${PEER_C}\t(none)\t(none)\t(none)\t0\t0\t0\toff`,
].join('\n')

const IP_JSON = JSON.stringify([
  {
    ifname: 'dkwg0',
    flags: ['POINTOPOINT', 'NOARP', 'UP', 'LOWER_UP'],
    mtu: 1420,
    link_type: 'none',
    linkinfo: { info_kind: 'wireguard' },
    addr_info: [
      { family: 'inet', local: '10.99.0.1', prefixlen: 24, scope: 'global' },
      { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
    ],
  },
])

function desired(overrides: Partial<MeshDesired> = {}): MeshDesired {
  return {
    interfaceName: 'dkwg0',
    privateKeyPath: '/var/lib/docklet/wg.key',
    listenPort: 51820,
    address: '10.99.0.1/24',
    mtu: 1420,
    peers: [
      {
        publicKey: PEER_B,
        endpoint: '10.213.0.2:51820',
        allowedIps: ['10.99.0.2/32'],
        persistentKeepaliveS: 25,
      },
    ],
    ...overrides,
  }
}

function converged(): MeshCurrent {
  const wireguard = parseWgDump(DUMP)
  wireguard.peers = wireguard.peers.filter((peer) => peer.publicKey === PEER_B)
  return { link: parseIpAddrJson(IP_JSON)[0]!, wireguard }
}

const argv = (commands: { file: string; args: string[] }[]): string[] =>
  commands.map((command) => [command.file, ...command.args].join(' '))

describe('parsers', () => {
  it('parses the interface line and every peer line of wg show dump', () => {
    const state = parseWgDump(DUMP)
    expect(state).toMatchObject({ privateKey: PRIVATE, publicKey: PUBLIC, listenPort: 51820 })
    expect(state.peers[0]).toEqual({
      publicKey: PEER_B,
      endpoint: '10.213.0.2:51820',
      allowedIps: ['10.99.0.2/32'],
      persistentKeepaliveS: 25,
      latestHandshakeS: 1700000000,
      rxBytes: 1200,
      txBytes: 3400,
    })
    expect(state.peers[1]).toMatchObject({ endpoint: null, allowedIps: [], persistentKeepaliveS: 0 })
  })

  it('reads a fresh interface with no key as privateKey null', () => {
    expect(parseWgDump('(none)\t(none)\t0\toff\n')).toMatchObject({
      privateKey: null,
      listenPort: 0,
      peers: [],
    })
  })

  it('rejects dump output that is not the wg format', () => {
    expect(() => parseWgDump('interface: dkwg0\n')).toThrow(MeshParseError)
    expect(() => parseWgDump(`${DUMP}\nshort\tline`)).toThrow(MeshParseError)
  })

  it('parses ip -j addr show into mtu, UP flag, kind and addresses', () => {
    const link = parseIpAddrJson(IP_JSON)[0]!
    expect(link).toMatchObject({ name: 'dkwg0', kind: 'wireguard', mtu: 1420, up: true, mac: null })
    expect(link.addresses.map((a) => a.local)).toEqual(['10.99.0.1', 'fe80::1'])
    expect(() => parseIpAddrJson('Device "x" does not exist.')).toThrow(MeshParseError)
  })
})

describe('planMesh', () => {
  it('plans nothing when the interface already matches', () => {
    expect(planMesh(converged(), desired(), { implementation: 'userspace', privateKey: PRIVATE })).toEqual([])
  })

  it('creates a missing interface with wireguard-go, then key, peer, address, mtu and up in that order', () => {
    const plan = planMesh({ link: null, wireguard: null }, desired(), { implementation: 'userspace' })
    expect(argv(plan)).toEqual([
      'wireguard-go dkwg0',
      'wg set dkwg0 private-key /var/lib/docklet/wg.key listen-port 51820',
      `wg set dkwg0 peer ${PEER_B} endpoint 10.213.0.2:51820 allowed-ips 10.99.0.2/32 persistent-keepalive 25`,
      'ip addr add 10.99.0.1/24 dev dkwg0',
      'ip link set dev dkwg0 mtu 1420',
      'ip link set dev dkwg0 up',
    ])
  })

  it('uses ip link add type wireguard when the host has kernel WireGuard', () => {
    const plan = planMesh({ link: null, wireguard: null }, desired(), { implementation: 'kernel' })
    expect(argv(plan)[0]).toBe('ip link add dev dkwg0 type wireguard')
  })

  it('recreates an interface that exists but no longer answers wg', () => {
    const plan = planMesh({ link: converged().link, wireguard: null }, desired(), {
      implementation: 'userspace',
    })
    expect(argv(plan).slice(0, 2)).toEqual(['ip link del dev dkwg0', 'wireguard-go dkwg0'])
  })

  it('removes peers that are no longer desired and adds new ones', () => {
    const plan = planMesh(
      converged(),
      desired({ peers: [{ publicKey: PEER_C, endpoint: '10.213.0.3:51820', allowedIps: ['10.99.0.3/32'] }] }),
      { implementation: 'userspace', privateKey: PRIVATE },
    )
    expect(argv(plan)).toEqual([
      `wg set dkwg0 peer ${PEER_B} remove`,
      `wg set dkwg0 peer ${PEER_C} endpoint 10.213.0.3:51820 allowed-ips 10.99.0.3/32 persistent-keepalive off`,
    ])
  })

  it('updates a peer whose endpoint, allowed IPs or keepalive changed', () => {
    const changed = desired({
      peers: [
        { publicKey: PEER_B, endpoint: '10.213.0.9:51820', allowedIps: ['10.99.0.2/32', '10.250.0.0/24'] },
      ],
    })
    expect(
      argv(planMesh(converged(), changed, { implementation: 'userspace', privateKey: PRIVATE })),
    ).toEqual([
      `wg set dkwg0 peer ${PEER_B} endpoint 10.213.0.9:51820 allowed-ips 10.99.0.2/32,10.250.0.0/24 persistent-keepalive off`,
    ])
  })

  it('resets the key when the key file holds another key, and fixes address and mtu', () => {
    const plan = planMesh(converged(), desired({ address: '10.99.0.7/24', mtu: 1380, listenPort: 51821 }), {
      implementation: 'userspace',
      privateKey: PEER_B.replace('gSZ', 'aSZ'),
    })
    expect(argv(plan)).toEqual([
      'wg set dkwg0 private-key /var/lib/docklet/wg.key listen-port 51821',
      'ip addr del 10.99.0.1/24 dev dkwg0',
      'ip addr add 10.99.0.7/24 dev dkwg0',
      'ip link set dev dkwg0 mtu 1380',
    ])
  })

  it('refuses invalid desired configurations with a message naming the field', () => {
    const bad: Partial<MeshDesired>[] = [
      { interfaceName: 'a-very-long-interface-name' },
      { listenPort: 0 },
      { address: '10.99.0.1' },
      { mtu: 1000 },
      { privateKeyPath: 'relative/key' },
      { peers: [{ publicKey: 'not-a-key', allowedIps: [] }] },
      { peers: [{ publicKey: PEER_B, endpoint: 'host:51820', allowedIps: [] }] },
    ]
    for (const overrides of bad) {
      expect(() => planMesh(converged(), desired(overrides), { implementation: 'kernel' })).toThrow(
        MeshConfigError,
      )
    }
  })

  it('derives the mesh MTU from the underlay and refuses an underlay too small for IPv6', () => {
    expect(meshMtuFromUnderlay(1500)).toBe(1420)
    expect(() => meshMtuFromUnderlay(1300)).toThrow(MeshConfigError)
  })
})

/** Answers like a host whose interface is missing and kernel WireGuard is absent; records every call. */
class FakeHostRunner implements CommandRunner {
  calls: string[] = []
  async run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
    const line = [file, ...args].join(' ')
    this.calls.push(line)
    const ok = (stdout = ''): RunResult => ({ exitCode: 0, stdout, stderr: '' })
    if (line.startsWith('ip link add dev dkwgprobe'))
      return { exitCode: 2, stdout: '', stderr: 'Unknown device type.' }
    if (line.startsWith('ip -j -d addr show'))
      return { exitCode: 1, stdout: '', stderr: 'Device "dkwg0" does not exist.' }
    if (line === 'wg genkey') return ok(`${PRIVATE}\n`)
    if (line === 'wg pubkey') return ok(options.input === `${PRIVATE}\n` ? `${PUBLIC}\n` : 'wrong\n')
    return ok()
  }
}

describe('applyMesh and restoreMesh', () => {
  let dir: string | undefined
  afterEach(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('generates a root-only key, applies the plan with wireguard-go, persists and restores it', async () => {
    dir = await mkdtemp(join(tmpdir(), 'mesh-unit-'))
    const runner = new FakeHostRunner()
    const keyPath = join(dir, 'keys', 'wg.key')
    expect(await ensureMeshKey(runner, keyPath)).toEqual({ publicKey: PUBLIC })
    expect((await stat(keyPath)).mode & 0o777).toBe(0o600)
    expect(await ensureMeshKey(runner, keyPath)).toEqual({ publicKey: PUBLIC })
    expect(runner.calls.filter((call) => call === 'wg genkey')).toHaveLength(1)

    const stateFile = join(dir, 'mesh.json')
    const wanted = desired({ privateKeyPath: keyPath })
    const result = await applyMesh(runner, wanted, { stateFile })
    expect(result.implementation).toBe('userspace')
    expect(argv(result.commands)[0]).toBe('wireguard-go dkwg0')
    expect(JSON.parse(await readFile(stateFile, 'utf8'))).toEqual({ version: 1, desired: wanted })
    expect((await stat(stateFile)).mode & 0o777).toBe(0o600)

    runner.calls = []
    const restored = await restoreMesh(runner, stateFile)
    expect(restored?.commands.map((c) => c.file)).toContain('wireguard-go')
    expect(runner.calls.some((call) => call.startsWith('ip link add dev dkwgprobe'))).toBe(false)
    expect(await restoreMesh(runner, join(dir, 'absent.json'))).toBeNull()
  })

  it('refuses a key file that does not hold a WireGuard key', async () => {
    dir = await mkdtemp(join(tmpdir(), 'mesh-unit-'))
    const keyPath = join(dir, 'wg.key')
    await writeFile(keyPath, 'garbage\n', { mode: 0o600 })
    await expect(ensureMeshKey(new FakeHostRunner(), keyPath)).rejects.toThrow(MeshConfigError)
  })
})
