// node dist/bench/raft/rss-probe.js [--duration-s 5 --warmup-s 1 --clients 1,64 --failover-trials 2
//                                  --value-bytes 256 --writes 3000,27000 --keep-dir]
// (after npm run build; `node bench/raft/rss-probe.ts` runs the members as TypeScript instead)
//
// --writes gives each phase a fixed number of writes instead of a fixed time
// (3000,27000 is about what one bench:raft round writes), so two builds are
// compared on the same state size however busy the machine is. Members that
// exit normally also report their CPU time and garbage-collection pauses.
//
// What a docklet bench member's resident memory is made of at its peak. It
// starts the same 3-member cluster as `npm run bench:raft` (same flags, same
// load generator, same phases: writes at each client count, then failovers),
// with bench/raft/memory-report.ts preloaded into every member, and prints
// per member: the kernel's peak (VmHWM) and the breakdown sampled nearest to
// it (V8 heap spaces, ArrayBuffers, native memory, file-backed pages), plus
// each phase's throughput and latency. Run it with `nice -n 19`: RSS does
// not depend on CPU priority, and it leaves the CPUs to latency benchmarks.

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { DockletCluster } from './docklet-cluster.ts'
import { defaultFailoverOptions, defaultLoadOptions, measureFailover, runWriteLoad } from './load.ts'
import { ProcessRegistry } from './process-registry.ts'
import { RssSampler } from './rss-sampler.ts'

const { values } = parseArgs({
  options: {
    'duration-s': { type: 'string', default: '5' },
    'warmup-s': { type: 'string', default: '1' },
    clients: { type: 'string', default: '1,64' },
    'failover-trials': { type: 'string', default: '2' },
    'value-bytes': { type: 'string', default: String(defaultLoadOptions.valueBytes) },
    'keep-dir': { type: 'boolean', default: false },
    /** Fixed writes per phase instead of a fixed time (e.g. 3000,30000): the same state size however busy the CPUs are. */
    writes: { type: 'string' },
  },
  strict: true,
})

/** With --writes, a phase ends after its writes or after this long, whichever comes first. */
const fixedWritesTimeLimitMs = 120_000

function log(line: string): void {
  process.stderr.write(`[rss-probe ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}

const reporterPath = fileURLToPath(
  new URL(import.meta.url.endsWith('.js') ? './memory-report.js' : './memory-report.ts', import.meta.url),
)
const reportDir = mkdtempSync(join(tmpdir(), 'rss-probe-'))
process.env.DOCKLET_MEMORY_REPORT_DIR = reportDir
process.env.DOCKLET_BENCH_NODE_ARGS = [process.env.DOCKLET_BENCH_NODE_ARGS ?? '', `--import=${reporterPath}`]
  .join(' ')
  .trim()

const registry = new ProcessRegistry({ stderrLinesMax: 40 })
const cluster = new DockletCluster(registry)
const sampler = new RssSampler(() => cluster.pids())
const phases: Record<string, unknown>[] = []
try {
  await cluster.start()
  sampler.start()
  const writesPerPhase = values.writes?.split(',').map(Number)
  for (const [i, clients] of values.clients.split(',').map(Number).entries()) {
    const leader = await cluster.findLeader(30_000)
    const writes = writesPerPhase?.[i]
    const startedMs = performance.now()
    const load = await runWriteLoad(
      { url: cluster.url(leader), writes: cluster.writes },
      {
        ...defaultLoadOptions,
        clients,
        valueBytes: Number(values['value-bytes']),
        ...(writes === undefined
          ? { durationMs: Number(values['duration-s']) * 1000, warmupMs: Number(values['warmup-s']) * 1000 }
          : { durationMs: fixedWritesTimeLimitMs, warmupMs: 0, requestsMax: writes }),
      },
    )
    const phase = {
      phase: `c${clients}`,
      writes_per_s:
        writes === undefined
          ? load.writes_per_s
          : Math.round(load.writes / ((performance.now() - startedMs) / 1000)),
      p50_ms: load.p50_ms,
      p99_ms: load.p99_ms,
      errors: load.errors,
      ...(load.errorSamples.length > 0 ? { error_samples: load.errorSamples } : {}),
    }
    phases.push(phase)
    log(JSON.stringify(phase))
  }
  const trials = Number(values['failover-trials'])
  if (trials > 0) {
    const times = await measureFailover(cluster, {
      ...defaultFailoverOptions,
      trials,
      beforeKill: () => sampler.sampleNow(),
      log,
    })
    phases.push({ phase: 'failover', ms: times.map((t) => Math.round(t)) })
  }
} catch (error) {
  log(`FAILED: ${(error as Error).message}\n${cluster.stderrTails()}`)
  process.exitCode = 1
} finally {
  sampler.stop()
  await cluster.stop()
  await registry.close()
}

// One report per member process (a restarted member is a new process).
const reports = readdirSync(reportDir)
  .filter((f) => /^\d+\.json$/.test(f))
  .map((f) => JSON.parse(readFileSync(join(reportDir, f), 'utf8')) as Record<string, unknown>)
  .sort((a, b) => (b.rss_mb as number) - (a.rss_mb as number))
for (const r of reports) {
  const spaces = r.spaces as Record<string, { resident_mb: number; used_mb: number }>
  const spaceText = Object.entries(spaces)
    .filter(([, s]) => s.resident_mb >= 0.1)
    .map(([name, s]) => `${name.replace(/_space$/, '')} ${s.resident_mb}/${s.used_mb}`)
    .join(', ')
  process.stdout.write(
    `pid ${r.pid}: peak sample rss ${r.rss_mb} MB (VmHWM ${r.vm_hwm_mb}) = anon ${r.rss_anon_mb} + file ${r.rss_file_mb} + shmem ${r.rss_shmem_mb}; ` +
      `V8 heap resident ${r.heap_resident_mb} (used ${r.heap_used_mb}), arrayBuffers ${r.array_buffers_mb} (external ${r.external_mb}), ` +
      `native other ${r.native_other_mb}, V8 malloc ${r.v8_malloced_mb} (peak ${r.v8_peak_malloced_mb}), threads ${r.threads}\n` +
      `    spaces resident/used MB: ${spaceText}\n`,
  )
}
// Members that exited normally (not SIGKILLed) also report their CPU time and GC pauses.
for (const f of readdirSync(reportDir).filter((name) => name.endsWith('-exit.json'))) {
  process.stdout.write(`exit ${readFileSync(join(reportDir, f), 'utf8')}`)
}
process.stdout.write(`${JSON.stringify({ rss_mb_max: sampler.maxMb, phases })}\n`)
if (values['keep-dir']) log(`reports kept in ${reportDir}`)
else rmSync(reportDir, { recursive: true, force: true })
