// What the numbers were measured on, including how long an fdatasync takes on
// the disk that holds the members' data dirs: the floor under every commit.

import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { percentile, round } from './load.ts'

export interface MachineInfo {
  cpus: number
  cpu_model: string
  mem_gb: number
  node: string
  etcd_version: string | null
  disk_fsync: string
  /** The generator against a server that answers at once: the most any system could show here. */
  loadgen_ceiling?: { clients: number; writes_per_s: number; p50_ms: number }
  note: string
}

const fsyncProbeWrites = 200

/** Times `fsyncProbeWrites` 256-byte appends, each followed by fdatasync, in a temp dir. */
export function probeFsync(dir = tmpdir()): { p50_ms: number; p99_ms: number; dir: string } {
  const probeDir = mkdtempSync(join(dir, 'bench-fsync-'))
  const block = Buffer.alloc(256, 0x61)
  const times = new Float64Array(fsyncProbeWrites)
  const fd = openSync(join(probeDir, 'probe'), 'a')
  try {
    for (let i = 0; i < fsyncProbeWrites; i++) {
      const start = performance.now()
      writeSync(fd, block)
      fdatasyncSync(fd)
      times[i] = performance.now() - start
    }
  } finally {
    closeSync(fd)
    rmSync(probeDir, { recursive: true, force: true })
  }
  times.sort()
  return { p50_ms: round(percentile(times, 0.5), 3), p99_ms: round(percentile(times, 0.99), 3), dir }
}

export function machineInfo(etcdVersion: string | null): MachineInfo {
  const fsync = probeFsync()
  return {
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model.trim() ?? 'unknown',
    mem_gb: round(totalmem() / 1024 ** 3, 1),
    node: process.version,
    etcd_version: etcdVersion,
    disk_fsync: `append 256 B + fdatasync in ${fsync.dir}: p50 ${fsync.p50_ms} ms, p99 ${fsync.p99_ms} ms (${fsyncProbeWrites} writes); both systems keep their data dirs there and sync every batch`,
    note: 'all members, and the load generator, share these CPUs; other work on the machine adds noise',
  }
}
