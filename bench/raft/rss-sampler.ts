// Peak resident memory of the members, read from /proc/<pid>/status. VmHWM is
// the kernel's own high-water mark, so periodic samples miss no peak; sampling
// just before a SIGKILL keeps the victim's peak too.

import { readFileSync } from 'node:fs'

export class RssSampler {
  private readonly pids: () => number[]
  private readonly intervalMs: number
  private timer: NodeJS.Timeout | null = null
  private peakKb = 0

  constructor(pids: () => number[], options: { intervalMs?: number } = {}) {
    this.pids = pids
    this.intervalMs = options.intervalMs ?? 250
  }

  start(): void {
    this.sampleNow()
    this.timer = setInterval(() => this.sampleNow(), this.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    this.sampleNow()
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  sampleNow(): void {
    for (const pid of this.pids()) {
      const kb = peakRssKb(pid)
      if (kb !== null && kb > this.peakKb) this.peakKb = kb
    }
  }

  /** The largest peak of any member seen so far, in MB (MiB). */
  get maxMb(): number {
    return Math.round((this.peakKb / 1024) * 10) / 10
  }
}

/** VmHWM of a live process in kB, or null when it is gone. */
export function peakRssKb(pid: number): number | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8')
  } catch {
    return null
  }
  const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(text)
  return match?.[1] === undefined ? null : Number(match[1])
}
