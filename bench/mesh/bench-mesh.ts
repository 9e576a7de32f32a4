// npm run bench:mesh [-- --duration-s 5 --trials 3 --pings 100 --out bench/results/mesh.json]
//
// The data plane between simulated hosts (test/support/netns-hosts.ts: each
// host a network + mount namespace on a LAN bridge that lives in its own
// namespace, so no traffic leaves this machine's namespaces):
//
// - veth: host 0 to host 1 over their LAN addresses (veth, bridge, veth):
//   the physical limit here.
// - wireguard: the same two hosts over their mesh IPs (applyMesh; kernel
//   WireGuard when the host has it, wireguard-go otherwise).
// - overlay: a netns "vnode" on each host, on the vcluster bridge, across the
//   VXLAN-in-WireGuard overlay (applyOverlay), as in test/mesh/mesh.test.ts.
//
// Throughput: `iperf3 -c … -t <duration> -O 1 -J` (first second omitted as
// slow start) against `iperf3 -s -1` in the peer; the receiver's
// bits_per_second. Round trip: `busybox ping -c <pings> -i 0.01`, median of
// every reply's time. The three paths are measured in turn within each
// trial so that noise from other work on the machine hits them alike; the
// figure is the median over trials.
//
// Mesh convergence after a join: hosts 0 and 1 are meshed; host 2's peer is
// added to the desired config of all three and applyMesh runs on the three
// at once (each node converges on its own after the join commits). Timed
// from the first applyMesh call until host 2 has had an echo answered from
// both others' mesh IPs; polling starts when host 2's own apply returns
// (before that its mesh address does not exist) with one-echo pings. Between
// trials host 2's interface is deleted and its peer removed from the others.
//
// Prints a table, then one JSON line (also written to --out). Progress goes
// to stderr. The harness tears everything down at the end, on error, and on
// SIGINT/SIGTERM (its exit hook).

import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { cpus, loadavg, release, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { CommandRunner } from '../../net/command-runner.ts'
import { parseIpAddrJson } from '../../net/ip-link-state.ts'
import { applyOverlay, type OverlayDesired, overlayMtu, overlayNames } from '../../net/vxlan-overlay.ts'
import {
  applyMesh,
  detectWireguardImplementation,
  ensureMeshKey,
  type MeshDesired,
  meshMtuFromUnderlay,
} from '../../net/wireguard-mesh.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { missingPrerequisite, NetnsHosts, type NetnsTarget } from '../../test/support/netns-hosts.ts'
import { median, round } from '../raft/load.ts'

interface BenchOptions {
  durationS: number
  trials: number
  pings: number
  outPath: string
}

type PathName = 'veth' | 'wireguard' | 'overlay'

interface PathSamples {
  gbps: number[]
  retransmits: number[]
  rttMs: number[]
  pingLoss: number
}

const HOSTS = 3
const WG_INTERFACE = 'dkwg0'
const WG_PORT = 51820
const VNI = 100
const CONTROL_PORT = 7946
const IPERF_PORT_BASE = 5201
/** iperf3 omits this many seconds of slow start from its figure. */
const IPERF_OMIT_S = 1
const IPERF_SERVER_READY_MS_MAX = 3000
/** Extra time an iperf3 client may take beyond its test (connect, omit, JSON). */
const IPERF_SLACK_MS = 15_000
const PING_INTERVAL_S = 0.01
const REACH_ATTEMPTS_MAX = 20
/** A join that has not converged by then counts as failed. */
const CONVERGE_GIVE_UP_MS = 15_000
const CONVERGE_POLL_GAP_MS = 10
const CONVERGE_TARGET_MS = 2000
const THROUGHPUT_RATIO_TARGET = 0.9
const ADDED_RTT_TARGET_MS = 0.1
const COMMAND_TIMEOUT_MS = 10_000

const benchDir = dirname(fileURLToPath(import.meta.url))
const defaultOut = join(benchDir, '..', 'results', 'mesh.json')

const meshIp = (index: number): string => `10.99.0.${index + 1}`
const vnodeMac = (index: number): string => `02:00:00:01:00:0${index}`
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      'duration-s': { type: 'string', default: '5' },
      trials: { type: 'string', default: '3' },
      pings: { type: 'string', default: '100' },
      out: { type: 'string', default: defaultOut },
    },
  })
  const integer = (name: string, text: string, min: number, max: number): number => {
    const value = Number(text)
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new Error(`--${name} must be a whole number from ${min} to ${max}, got "${text}".`)
    }
    return value
  }
  return {
    durationS: integer('duration-s', values['duration-s'], 1, 60),
    trials: integer('trials', values.trials, 1, 10),
    pings: integer('pings', values.pings, 10, 1000),
    outPath: values.out,
  }
}

let iperfPort = IPERF_PORT_BASE

/** One iperf3 run from `client` to a one-off server in `server` on `address`; Gbit/s at the receiver. */
async function iperf(
  h: NetnsHosts,
  from: NetnsTarget,
  to: NetnsTarget,
  options: { address: string; durationS: number },
): Promise<{ gbps: number; retransmits: number }> {
  const port = String(iperfPort++)
  const server = h.spawn(to, 'iperf3', ['-s', '-1', '-B', options.address, '-p', port, '--forceflush'])
  try {
    const readyBy = Date.now() + IPERF_SERVER_READY_MS_MAX
    while (!server.output().includes('Server listening')) {
      if (Date.now() > readyBy)
        throw new Error(`iperf3 -s on ${options.address}:${port} did not start: ${server.output().trim()}`)
      await sleep(10)
    }
    const client = await h.run(
      from,
      'iperf3',
      ['-c', options.address, '-p', port, '-t', String(options.durationS), '-O', String(IPERF_OMIT_S), '-J'],
      { timeoutMs: (options.durationS + IPERF_OMIT_S) * 1000 + IPERF_SLACK_MS, okExitCodes: [0, 1] },
    )
    const report = JSON.parse(client.stdout) as {
      error?: string
      end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } }
    }
    const bitsPerSecond = report.end?.sum_received?.bits_per_second
    if (client.exitCode !== 0 || report.error !== undefined || bitsPerSecond === undefined) {
      throw new Error(`iperf3 to ${options.address} failed: ${report.error ?? client.stderr.trim()}`)
    }
    return { gbps: bitsPerSecond / 1e9, retransmits: report.end?.sum_sent?.retransmits ?? 0 }
  } finally {
    await Promise.race([server.exited, sleep(2000)])
    await server.kill()
  }
}

/** `count` echoes 10 ms apart; every answered echo's round trip in ms. */
async function pingTimes(
  h: NetnsHosts,
  from: NetnsTarget,
  options: { address: string; count: number },
): Promise<{ timesMs: number[]; lost: number }> {
  const result = await h.run(
    from,
    'busybox',
    ['ping', '-c', String(options.count), '-i', String(PING_INTERVAL_S), '-W', '2', options.address],
    { okExitCodes: [0, 1], timeoutMs: options.count * PING_INTERVAL_S * 1000 * 5 + 10_000 },
  )
  const timesMs = [...result.stdout.matchAll(/time=([\d.]+) ms/g)].map((match) => Number(match[1]))
  if (timesMs.length < options.count / 2) {
    throw new Error(
      `Only ${timesMs.length} of ${options.count} echoes to ${options.address} were answered: ${result.stdout.slice(-300)}`,
    )
  }
  return { timesMs, lost: options.count - timesMs.length }
}

async function reaches(h: NetnsHosts, from: NetnsTarget, address: string): Promise<void> {
  for (let attempt = 0; attempt < REACH_ATTEMPTS_MAX; attempt++) if (await h.ping(from, address, 1)) return
  throw new Error(`${from.name} cannot reach ${address} after ${REACH_ATTEMPTS_MAX} one-second echoes.`)
}

/** PIDs of wireguard-go processes inside a host's network namespace. */
async function wireguardGoPids(h: NetnsHosts, index: number): Promise<number[]> {
  const result = await new ExecaCommandRunner().run('ip', ['netns', 'pids', h.host(index).netns], {
    timeoutMs: COMMAND_TIMEOUT_MS,
  })
  return result.stdout
    .split(/\s+/)
    .filter((word) => /^\d+$/.test(word))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'wireguard-go'
      } catch {
        return false
      }
    })
}

function toolVersion(file: string, args: string[]): string {
  const result = spawnSync(file, args, { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS })
  return (result.stdout ?? '').split('\n')[0]?.trim() || 'unknown'
}

function machine(underlayMtu: number, meshMtu: number): Record<string, unknown> {
  return {
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model.trim() ?? 'unknown',
    mem_gb: round(totalmem() / 1024 ** 3, 1),
    kernel: release(),
    node: process.version,
    iperf3: toolVersion('iperf3', ['--version']),
    wireguard_go: toolVersion('wireguard-go', ['--version']),
    underlay_mtu: underlayMtu,
    mesh_mtu: meshMtu,
    overlay_mtu: overlayMtu(meshMtu),
    note: 'the simulated hosts are namespaces on this one machine: both ends of every path, wireguard-go and iperf3 share its CPUs with other work',
  }
}

interface Setup {
  h: NetnsHosts
  publicKeys: string[]
  meshMtu: number
}

function meshDesired(setup: Setup, index: number, members: number[]): MeshDesired {
  const { h, publicKeys, meshMtu } = setup
  return {
    interfaceName: WG_INTERFACE,
    privateKeyPath: join(h.host(index).dataDir, 'wg.key'),
    listenPort: WG_PORT,
    address: `${meshIp(index)}/24`,
    mtu: meshMtu,
    peers: members
      .filter((other) => other !== index)
      .map((other) => ({
        publicKey: publicKeys[other]!,
        endpoint: `${h.host(other).lanAddress}:${WG_PORT}`,
        allowedIps: [`${meshIp(other)}/32`],
      })),
  }
}

function overlayDesired(setup: Setup, index: number, members: number[]): OverlayDesired {
  return {
    vni: VNI,
    subnet: '10.250.1.0/24',
    gatewayAddress: '10.250.1.1/24',
    meshInterface: WG_INTERFACE,
    localMeshIp: meshIp(index),
    meshMtu: setup.meshMtu,
    peerMeshIps: members.filter((other) => other !== index).map(meshIp),
    remoteVnodes: members
      .filter((other) => other !== index)
      .map((other) => ({ mac: vnodeMac(other), hostMeshIp: meshIp(other) })),
    egressInterface: 'lan0',
    controlPorts: [CONTROL_PORT],
    hostAddresses: ['10.213.0.0/24', '10.99.0.0/24'],
  }
}

/** Host 2 leaves: its interface (and so its wireguard-go) goes, and the others drop its peer. */
async function unjoinThirdHost(setup: Setup): Promise<void> {
  const { h } = setup
  await h.run(2, 'ip', ['link', 'del', 'dev', WG_INTERFACE], { okExitCodes: [0, 1] })
  for (let attempt = 0; ; attempt++) {
    const pids = await wireguardGoPids(h, 2)
    if (pids.length === 0) break
    if (attempt === 50) for (const pid of pids) process.kill(pid, 'SIGKILL')
    if (attempt > 100) throw new Error(`wireguard-go of host 2 (${pids.join(', ')}) did not exit.`)
    await sleep(20)
  }
  for (const index of [0, 1]) await applyMesh(h.runnerFor(index), meshDesired(setup, index, [0, 1]))
}

/** One join: ms from the first applyMesh until host 2 has an answer from both others' mesh IPs. */
async function convergeOnce(setup: Setup): Promise<{ convergeMs: number; applyMs: number[] }> {
  const { h } = setup
  const all = [0, 1, 2]
  const start = performance.now()
  const applyMs = [0, 0, 0]
  const applies = all.map(async (index) => {
    await applyMesh(h.runnerFor(index), meshDesired(setup, index, all))
    applyMs[index] = performance.now() - start
  })
  await applies[2]
  const deadline = start + CONVERGE_GIVE_UP_MS
  const poll = async (address: string): Promise<number> => {
    while (performance.now() < deadline) {
      const answered = await h.run(2, 'busybox', ['ping', '-c', '1', '-W', '1', address], {
        okExitCodes: [0, 1],
        timeoutMs: 5000,
      })
      if (answered.exitCode === 0) return performance.now() - start
      await sleep(CONVERGE_POLL_GAP_MS)
    }
    throw new Error(`Host 2 did not reach ${address} within ${CONVERGE_GIVE_UP_MS} ms of the join.`)
  }
  const reached = await Promise.all([poll(meshIp(0)), poll(meshIp(1))])
  await Promise.all(applies)
  return { convergeMs: Math.max(...reached), applyMs }
}

async function measure(options: BenchOptions): Promise<void> {
  const missing = missingPrerequisite([
    'ip',
    'nft',
    'nsenter',
    'unshare',
    'bridge',
    'wg',
    'busybox',
    'iperf3',
  ])
  if (missing !== null) throw new Error(`bench:mesh cannot run: ${missing}.`)
  const startedAt = performance.now()
  const loadAtStart = loadavg().map((value) => round(value, 2))
  log(`building ${HOSTS} simulated hosts`)
  const h = await NetnsHosts.create({ hosts: HOSTS, runner: new ExecaCommandRunner() })
  let summary: Record<string, unknown>
  let rows: string[][]
  try {
    const lan = parseIpAddrJson((await h.run(0, 'ip', ['-j', 'addr', 'show', 'dev', 'lan0'])).stdout)[0]!
    const meshMtu = meshMtuFromUnderlay(lan.mtu)
    const publicKeys: string[] = []
    const runners: CommandRunner[] = []
    for (let index = 0; index < HOSTS; index++) {
      runners.push(h.runnerFor(index))
      publicKeys.push((await ensureMeshKey(runners[index]!, join(h.host(index).dataDir, 'wg.key'))).publicKey)
    }
    const setup: Setup = { h, publicKeys, meshMtu }
    const implementations = await Promise.all(runners.map((runner) => detectWireguardImplementation(runner)))
    const implementation = implementations.every((value) => value === 'kernel') ? 'kernel' : 'wireguard-go'

    log('meshing hosts 0 and 1, overlay with one vnode on each')
    for (const index of [0, 1]) await applyMesh(runners[index]!, meshDesired(setup, index, [0, 1]))
    const vnodes: NetnsTarget[] = []
    for (const index of [0, 1]) {
      await applyOverlay(runners[index]!, overlayDesired(setup, index, [0, 1]))
      vnodes.push(
        await h.addVnode(index, {
          address: `10.250.1.${10 + index}/24`,
          gateway: '10.250.1.1',
          bridge: overlayNames(VNI).bridge,
          mtu: overlayMtu(meshMtu),
          mac: vnodeMac(index),
        }),
      )
    }
    const paths: Record<PathName, { from: NetnsTarget; to: NetnsTarget; address: string }> = {
      veth: { from: h.host(0), to: h.host(1), address: h.host(1).lanAddress },
      wireguard: { from: h.host(0), to: h.host(1), address: meshIp(1) },
      overlay: { from: vnodes[0]!, to: vnodes[1]!, address: '10.250.1.11' },
    }
    const names = Object.keys(paths) as PathName[]
    for (const name of names) await reaches(h, paths[name].from, paths[name].address)

    const samples = Object.fromEntries(
      names.map((name) => [name, { gbps: [], retransmits: [], rttMs: [], pingLoss: 0 } as PathSamples]),
    ) as Record<PathName, PathSamples>
    for (let trial = 1; trial <= options.trials; trial++) {
      for (const name of names) {
        const path = paths[name]
        const throughput = await iperf(h, path.from, path.to, {
          address: path.address,
          durationS: options.durationS,
        })
        const rtt = await pingTimes(h, path.from, { address: path.address, count: options.pings })
        samples[name].gbps.push(throughput.gbps)
        samples[name].retransmits.push(throughput.retransmits)
        samples[name].rttMs.push(...rtt.timesMs)
        samples[name].pingLoss += rtt.lost
        log(
          `trial ${trial}/${options.trials} ${name}: ${throughput.gbps.toFixed(3)} Gbit/s, rtt median ${median(rtt.timesMs).toFixed(3)} ms`,
        )
      }
    }

    // Diagnostic: one vnode to its own host's gateway (veth + bridge, no VXLAN, no
    // WireGuard): the overlay path crosses such a hop on each side.
    const localHop: number[] = []
    for (let trial = 1; trial <= options.trials; trial++) {
      localHop.push(
        ...(await pingTimes(h, vnodes[0]!, { address: '10.250.1.1', count: options.pings })).timesMs,
      )
    }

    log('join convergence: host 2 joins the mesh of hosts 0 and 1')
    const converge: number[] = []
    const applies: number[][] = []
    for (let trial = 1; trial <= options.trials; trial++) {
      if (trial > 1) await unjoinThirdHost(setup)
      const result = await convergeOnce(setup)
      converge.push(result.convergeMs)
      applies.push(result.applyMs.map((ms) => round(ms, 1)))
      log(
        `trial ${trial}/${options.trials} converge: ${result.convergeMs.toFixed(1)} ms (applies done at ${result.applyMs.map((ms) => ms.toFixed(1)).join(' / ')} ms)`,
      )
    }

    const figure = (name: PathName) => ({
      gbps: round(median(samples[name].gbps), 3),
      rtt_ms: round(median(samples[name].rttMs), 3),
      gbps_trials: samples[name].gbps.map((value) => round(value, 3)),
      rtt_ms_p90: round(
        [...samples[name].rttMs].sort((a, b) => a - b)[Math.floor(samples[name].rttMs.length * 0.9)]!,
        3,
      ),
      retransmits: samples[name].retransmits,
      echoes: samples[name].rttMs.length,
      echoes_lost: samples[name].pingLoss,
    })
    const veth = figure('veth')
    const wireguard = figure('wireguard')
    const overlay = figure('overlay')
    const convergeMs = round(median(converge), 1)
    const ratio = round(overlay.gbps / wireguard.gbps, 3)
    const addedRttMs = round(overlay.rtt_ms - wireguard.rtt_ms, 3)
    summary = {
      veth,
      wireguard,
      overlay,
      mesh_converge_ms: convergeMs,
      vnode_to_local_gateway_rtt_ms: round(median(localHop), 3),
      mesh_converge_ms_trials: converge.map((ms) => round(ms, 1)),
      mesh_apply_done_ms_trials: applies,
      wireguard_impl: implementation,
      targets: {
        overlay_over_wireguard_throughput: ratio,
        overlay_throughput_met: ratio >= THROUGHPUT_RATIO_TARGET,
        overlay_added_rtt_ms: addedRttMs,
        overlay_added_rtt_met: addedRttMs < ADDED_RTT_TARGET_MS,
        mesh_converge_met: convergeMs < CONVERGE_TARGET_MS,
      },
      settings: {
        duration_s: options.durationS,
        iperf_omit_s: IPERF_OMIT_S,
        trials: options.trials,
        pings_per_trial: options.pings,
        ping_interval_s: PING_INTERVAL_S,
      },
      machine: {
        ...machine(lan.mtu, meshMtu),
        load_average_at_start: loadAtStart,
        load_average_at_end: loadavg().map((value) => round(value, 2)),
      },
    }
    rows = [
      ['path', 'Gbit/s (median)', 'per trial', 'rtt ms (median)', 'rtt p90'],
      ...names.map((name) => {
        const f = figure(name)
        return [
          name,
          f.gbps.toFixed(3),
          f.gbps_trials.join(' '),
          f.rtt_ms.toFixed(3),
          f.rtt_ms_p90.toFixed(3),
        ]
      }),
    ]
    rows.push(
      [],
      ['overlay / wireguard throughput', `${ratio}`, `target >= ${THROUGHPUT_RATIO_TARGET}`],
      ['overlay - wireguard rtt (ms)', `${addedRttMs}`, `target < ${ADDED_RTT_TARGET_MS}`],
      [
        'mesh converge after join (ms)',
        `${convergeMs}`,
        `trials ${converge.map((ms) => ms.toFixed(0)).join(' ')}`,
      ],
      ['wireguard', implementation],
      ['bench wall time (s)', ((performance.now() - startedAt) / 1000).toFixed(1)],
    )
  } finally {
    log('tearing down')
    await h.teardown()
  }
  const widths = rows.reduce<number[]>((acc, row) => {
    row.forEach((cell, index) => {
      acc[index] = Math.max(acc[index] ?? 0, cell.length)
    })
    return acc
  }, [])
  const table = rows.map((row) => row.map((cell, index) => cell.padEnd(widths[index]!)).join('  ')).join('\n')
  process.stdout.write(`\n${table}\n\n`)
  const line = JSON.stringify(summary)
  await mkdir(dirname(options.outPath), { recursive: true })
  await writeFile(options.outPath, `${line}\n`)
  process.stdout.write(`${line}\n`)
}

measure(parseOptions(process.argv.slice(2))).catch((error: unknown) => {
  process.stderr.write(`bench:mesh failed: ${(error as Error).message}\n`)
  process.exit(1)
})
