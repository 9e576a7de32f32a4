// A node's clock in the simulator. Its time is the virtual time of the event
// queue seen through the node's own skew (a rate slightly off 1 and an
// offset), so nodes tick at slightly different speeds, as real hosts do.
// Each incarnation of a node gets its own SimClock; a crash disposes it, which
// cancels every timer the dead RaftNode registered, so nothing of it runs again.
// A paused node (a stopped process, SIGSTOP) runs no timer until it resumes;
// then each one fires once, as a late setInterval would.

import type { Clock } from '../../consensus/clock.ts'
import { EventKind, type EventQueue, type SimEvent } from './event-queue.ts'

export interface ClockSkew {
  /** Local milliseconds per virtual millisecond (e.g. 0.97 runs 3 % slow). */
  rate: number
  /** Local time at virtual time 0. */
  offsetMs: number
}

/** Timers one clock may hold; the driver uses one ticker plus one per waiting leader transfer. */
export const CLOCK_TIMERS_MAX = 10_000

interface Timer {
  intervalMs: number
  fn: () => void
  event: SimEvent | null
  stopped: boolean
}

export class SimClock implements Clock {
  private readonly queue: EventQueue
  private readonly skew: ClockSkew
  private readonly timers = new Set<Timer>()
  private disposed = false
  /** Virtual time until which the node is paused (0: running). */
  pausedUntilMs = 0

  constructor(queue: EventQueue, skew: ClockSkew) {
    this.queue = queue
    this.skew = skew
  }

  nowMs(): number {
    return this.skew.offsetMs + this.queue.nowMs * this.skew.rate
  }

  every(intervalMs: number, fn: () => void): () => void {
    if (this.disposed) return () => {}
    if (this.timers.size >= CLOCK_TIMERS_MAX) {
      throw new Error(`A simulated clock holds ${CLOCK_TIMERS_MAX} timers (CLOCK_TIMERS_MAX): timers leak.`)
    }
    const timer: Timer = { intervalMs, fn, event: null, stopped: false }
    this.timers.add(timer)
    this.arm(timer)
    return () => this.stop(timer)
  }

  /** The node crashed: no timer of this incarnation fires again. */
  dispose(): void {
    this.disposed = true
    for (const timer of this.timers) {
      timer.stopped = true
      if (timer.event !== null) timer.event.cancelled = true
    }
    this.timers.clear()
  }

  get timerCount(): number {
    return this.timers.size
  }

  private arm(timer: Timer): void {
    // Local interval -> virtual interval: a fast clock (rate > 1) fires sooner.
    this.armAt(timer, this.queue.nowMs + timer.intervalMs / this.skew.rate)
  }

  private armAt(timer: Timer, atMs: number): void {
    timer.event = this.queue.at(atMs, EventKind.Timer, () => {
      if (timer.stopped || this.disposed) return
      if (this.queue.nowMs < this.pausedUntilMs) {
        this.armAt(timer, this.pausedUntilMs)
        return
      }
      timer.fn()
      if (!timer.stopped && !this.disposed) this.arm(timer)
    })
  }

  private stop(timer: Timer): void {
    timer.stopped = true
    if (timer.event !== null) timer.event.cancelled = true
    this.timers.delete(timer)
  }
}
