// The docklet side of bench:proxy, one process as a node would be: the
// portal app (the real API server over a replicated state built from real
// commands, test/proxy/proxy-fixture.ts) behind the real proxy front
// (registerWorkspaceProxy: worker threads own the portal's address), where
// vcluster alice/bench has vnode 0 on this host. No Raft, no runtime: the
// state is applied directly, and vnode 0 is whatever answers on its IP (the
// bench puts a backend in a network namespace there).
//
// Usage: node bench/proxy/docklet-host.ts --cluster-net 10.251.0.0/16 --workers 1
// Prints one JSON line once the portal listens: {port, vnode_ip, gateway,
// prefix, cookie, path, workers}. Then reads commands on stdin, one a line:
// `mark` starts a measurement (event-loop delay of the main thread, the
// process's CPU time, all threads, and how often the proxy worker threads
// were switched out), `report` prints it as one JSON line,
// `stats` prints the workers' counters; end of input stops the process.

import { readdirSync, readFileSync } from 'node:fs'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { registerWorkspaceProxy } from '../../src/proxy/index.ts'
import { portal } from '../../test/api/api-fixture.ts'
import { NODE_A, ProxyCluster } from '../../test/proxy/proxy-fixture.ts'

/** The event-loop delay histogram samples every this many ms. */
const DELAY_RESOLUTION_MS = 5
const WORKSPACE_PORT = 8888

const { values } = parseArgs({
  options: {
    'cluster-net': { type: 'string', default: '10.251.0.0/16' },
    workers: { type: 'string', default: '1' },
    host: { type: 'string', default: '127.0.0.1' },
  },
})

const cluster = ProxyCluster.create({ clusterNet: values['cluster-net'] })
const vcluster = cluster.vcluster('alice', 'bench', NODE_A)
const vnode = vcluster.vnodes[0]!
const app = portal(cluster.backend)
const proxy = registerWorkspaceProxy(app, {
  state: cluster.state,
  selfId: NODE_A,
  now: () => cluster.backend.nowMs,
  workspacePort: WORKSPACE_PORT,
  workers: Number(values.workers),
})
const port = await proxy.listen({ host: values.host, port: 0 })
const [, prefix] = vcluster.subnet.split('/')
process.stdout.write(
  `${JSON.stringify({
    port,
    vnode_ip: vnode.ip,
    gateway: vcluster.gateway,
    prefix: Number(prefix),
    workspace_port: WORKSPACE_PORT,
    cookie: cluster.cookie('alice', 24 * 3600 * 1000),
    path: '/go/alice/bench/data',
    workers: Number(values.workers),
  })}\n`,
)

const delay = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS })
let cpuAt = process.cpuUsage()
let markedAt = performance.now()

/** Context switches of this process's proxy worker threads so far (Linux /proc; zero elsewhere). */
function proxySwitches(): { voluntary: number; involuntary: number } {
  const total = { voluntary: 0, involuntary: 0 }
  let tasks: string[] = []
  try {
    tasks = readdirSync('/proc/self/task')
  } catch {
    return total
  }
  for (const task of tasks) {
    try {
      if (!readFileSync(`/proc/self/task/${task}/comm`, 'utf8').startsWith('docklet-proxy')) continue
      const status = readFileSync(`/proc/self/task/${task}/status`, 'utf8')
      total.voluntary += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0)
      total.involuntary += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0)
    } catch {
      // The thread ended meanwhile.
    }
  }
  return total
}
let switchesAt = proxySwitches()

const round = (value: number, digits = 3) => Number(value.toFixed(digits))

const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const command = line.trim()
  if (command === 'mark') {
    delay.disable()
    delay.reset()
    delay.enable()
    cpuAt = process.cpuUsage()
    markedAt = performance.now()
    switchesAt = proxySwitches()
    process.stdout.write('{"marked":true}\n')
  } else if (command === 'report') {
    const cpu = process.cpuUsage(cpuAt)
    const switches = proxySwitches()
    process.stdout.write(
      `${JSON.stringify({
        wall_ms: round(performance.now() - markedAt, 1),
        cpu_ms: round((cpu.user + cpu.system) / 1000, 1),
        // The histogram is in ns and includes the sampling interval itself.
        event_loop_delay_ms: {
          p50: round(Math.max(0, delay.percentile(50) / 1e6 - DELAY_RESOLUTION_MS)),
          p99: round(Math.max(0, delay.percentile(99) / 1e6 - DELAY_RESOLUTION_MS)),
          max: round(Math.max(0, delay.max / 1e6 - DELAY_RESOLUTION_MS)),
          resolution_ms: DELAY_RESOLUTION_MS,
        },
        proxy_context_switches: {
          voluntary: switches.voluntary - switchesAt.voluntary,
          involuntary: switches.involuntary - switchesAt.involuntary,
        },
      })}\n`,
    )
  } else if (command === 'stats') {
    void proxy.stats().then((stats) => process.stdout.write(`${JSON.stringify({ stats })}\n`))
  }
})
lines.on('close', () => {
  void app.close().then(() => process.exit(0))
})
