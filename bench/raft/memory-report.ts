// Preloaded into a bench member (node --import=<this file>, through
// DOCKLET_BENCH_NODE_ARGS) by bench/raft/rss-probe.ts: samples what the
// process's resident memory is made of and writes the breakdown at its
// highest resident size so far to $DOCKLET_MEMORY_REPORT_DIR/<pid>.json.
// It touches nothing of the member itself; diagnosis only.
//
// The parts: /proc/self/status (RSS split into anonymous, file-backed and
// shared pages, and the kernel's high-water mark VmHWM), process.memoryUsage()
// (V8 heap, external memory and ArrayBuffers), V8's heap spaces (committed and
// resident bytes each), and V8's own malloc use. What is left of anonymous RSS
// after the V8 heap and ArrayBuffers is native memory: LevelDB's memtables and
// block cache, libuv and OpenSSL buffers, glibc arena slack, thread stacks.

import { appendFileSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PerformanceObserver } from 'node:perf_hooks'
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8'

/** Sampling period: short enough to catch a peak within a few MB of VmHWM. */
const sampleIntervalMs = 50
/** A new report is written only when RSS grew this much past the last one (bounds the writes). */
const reportStepBytes = 512 * 1024

const dir = process.env.DOCKLET_MEMORY_REPORT_DIR
const mb = (bytes: number): number => Math.round((bytes / 1024 / 1024) * 10) / 10

function procStatusKb(): Record<string, number> {
  const out: Record<string, number> = {}
  for (const line of readFileSync('/proc/self/status', 'utf8').split('\n')) {
    const match = /^(Vm\w+|Rss\w+|Threads):\s+(\d+)/.exec(line)
    if (match !== null) out[match[1]!] = Number(match[2])
  }
  return out
}

function breakdown(): Record<string, unknown> {
  const status = procStatusKb()
  const usage = process.memoryUsage()
  const heap = getHeapStatistics()
  const spaces = Object.fromEntries(
    getHeapSpaceStatistics().map((s) => [
      s.space_name,
      {
        committed_mb: mb(s.space_size),
        used_mb: mb(s.space_used_size),
        resident_mb: mb(s.physical_space_size),
      },
    ]),
  )
  const rssAnonBytes = (status.RssAnon ?? 0) * 1024
  return {
    pid: process.pid,
    uptime_s: Math.round(process.uptime() * 10) / 10,
    rss_mb: mb(usage.rss),
    vm_hwm_mb: mb((status.VmHWM ?? 0) * 1024),
    rss_anon_mb: mb(rssAnonBytes),
    rss_file_mb: mb((status.RssFile ?? 0) * 1024),
    rss_shmem_mb: mb((status.RssShmem ?? 0) * 1024),
    threads: status.Threads,
    heap_total_mb: mb(usage.heapTotal),
    heap_used_mb: mb(usage.heapUsed),
    heap_resident_mb: mb(heap.total_physical_size),
    external_mb: mb(usage.external),
    array_buffers_mb: mb(usage.arrayBuffers),
    v8_malloced_mb: mb(heap.malloced_memory),
    v8_peak_malloced_mb: mb(heap.peak_malloced_memory),
    // Anonymous pages that are neither V8's heap nor ArrayBuffer backing stores.
    native_other_mb: mb(rssAnonBytes - heap.total_physical_size - usage.arrayBuffers),
    spaces,
  }
}

if (dir !== undefined && dir !== '') {
  let reportedRss = 0
  const file = join(dir, `${process.pid}.json`)
  const timelineFile = join(dir, `${process.pid}.timeline`)
  const sample = (): void => {
    const rss = process.memoryUsage.rss()
    if (rss < reportedRss + reportStepBytes) return
    reportedRss = rss
    const report = breakdown()
    writeFileSync(file, `${JSON.stringify(report)}\n`)
    // One line per new peak: how the parts grew over the run.
    const {
      uptime_s,
      rss_mb,
      heap_resident_mb,
      heap_used_mb,
      array_buffers_mb,
      native_other_mb,
      rss_file_mb,
    } = report
    appendFileSync(
      timelineFile,
      `${uptime_s}s rss ${rss_mb} heap ${heap_resident_mb} (used ${heap_used_mb}) ab ${array_buffers_mb} native ${native_other_mb} file ${rss_file_mb}\n`,
    )
  }
  const timer = setInterval(sample, sampleIntervalMs)
  timer.unref()
  // What memory costs in time: garbage-collection pauses and CPU, written when the member exits.
  const gc = { count: 0, totalMs: 0, maxMs: 0, majorCount: 0, majorMs: 0 }
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc.count++
      gc.totalMs += entry.duration
      gc.maxMs = Math.max(gc.maxMs, entry.duration)
      // detail.kind 4 is a mark-compact (major) collection.
      if ((entry as { detail?: { kind?: number } }).detail?.kind === 4) {
        gc.majorCount++
        gc.majorMs += entry.duration
      }
    }
  }).observe({ entryTypes: ['gc'] })
  process.on('exit', () => {
    const cpu = process.cpuUsage()
    const round = (ms: number): number => Math.round(ms * 10) / 10
    writeFileSync(
      join(dir, `${process.pid}-exit.json`),
      `${JSON.stringify({
        pid: process.pid,
        cpu_s: Math.round((cpu.user + cpu.system) / 1e4) / 100,
        gc_count: gc.count,
        gc_total_ms: round(gc.totalMs),
        gc_max_ms: round(gc.maxMs),
        gc_major_count: gc.majorCount,
        gc_major_ms: round(gc.majorMs),
      })}\n`,
    )
  })
  // On request (SIGUSR2), the breakdown right now, whatever the peak.
  process.on('SIGUSR2', () =>
    writeFileSync(join(dir, `${process.pid}-now.json`), `${JSON.stringify(breakdown())}\n`),
  )
}
