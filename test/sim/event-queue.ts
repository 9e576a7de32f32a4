// The simulator's only source of time: a priority queue of events ordered by
// (virtual time, sequence number). Timers, frame deliveries, storage
// completions, faults and client steps are all events here, so a run is a
// pure function of its seed. Every event taken off the queue is folded into a
// digest, so two runs of one seed can be compared cheaply.

/** What an event is, for the trace digest and the verbose log. */
export const EventKind = {
  Timer: 1,
  Deliver: 2,
  StorageDone: 3,
  Fault: 4,
  Client: 5,
  Control: 6,
} as const
export type EventKind = (typeof EventKind)[keyof typeof EventKind]

export interface SimEvent {
  timeMs: number
  seq: number
  kind: EventKind
  fn: () => void
  cancelled: boolean
}

/** A bug guard: a run that queues more than this has a runaway producer. */
export const EVENTS_PENDING_MAX = 2_000_000

export class EventQueue {
  nowMs = 0
  /** Events taken off the queue so far. */
  processed = 0
  private readonly heap: SimEvent[] = []
  private seq = 0
  private digest = 0x811c9dc5

  get size(): number {
    return this.heap.length
  }

  /** Runs fn at virtual time atMs (never earlier than now). */
  at(atMs: number, kind: EventKind, fn: () => void): SimEvent {
    if (this.heap.length >= EVENTS_PENDING_MAX) {
      throw new Error(
        `The simulator queued ${EVENTS_PENDING_MAX} events (EVENTS_PENDING_MAX): a producer runs away.`,
      )
    }
    const event: SimEvent = {
      timeMs: Math.max(atMs, this.nowMs),
      seq: this.seq++,
      kind,
      fn,
      cancelled: false,
    }
    this.push(event)
    return event
  }

  after(delayMs: number, kind: EventKind, fn: () => void): SimEvent {
    return this.at(this.nowMs + delayMs, kind, fn)
  }

  /** The next event that is not cancelled, with the clock moved to its time; undefined when empty. */
  pop(): SimEvent | undefined {
    for (;;) {
      const event = this.popRaw()
      if (event === undefined) return undefined
      if (event.cancelled) continue
      this.nowMs = event.timeMs
      this.processed++
      this.mix(Math.round(event.timeMs * 1000))
      this.mix(event.kind)
      return event
    }
  }

  /** Time of the next pending event (cancelled ones included), or Infinity. */
  peekTimeMs(): number {
    return this.heap[0]?.timeMs ?? Number.POSITIVE_INFINITY
  }

  /** Folds a number into the trace digest (callers add what an event did). */
  mix(value: number): void {
    let v = value | 0
    for (let i = 0; i < 4; i++) {
      this.digest ^= v & 0xff
      this.digest = Math.imul(this.digest, 0x01000193) >>> 0
      v >>>= 8
    }
    // Numbers beyond 32 bits (times in microseconds) also fold their high part.
    const high = Math.floor(value / 4294967296)
    if (high !== 0) {
      this.digest ^= high & 0xffff
      this.digest = Math.imul(this.digest, 0x01000193) >>> 0
    }
  }

  mixString(text: string): void {
    for (let i = 0; i < text.length; i++) {
      this.digest ^= text.charCodeAt(i)
      this.digest = Math.imul(this.digest, 0x01000193) >>> 0
    }
  }

  get traceDigest(): string {
    return this.digest.toString(16).padStart(8, '0')
  }

  clear(): void {
    this.heap.length = 0
  }

  private less(a: SimEvent, b: SimEvent): boolean {
    return a.timeMs < b.timeMs || (a.timeMs === b.timeMs && a.seq < b.seq)
  }

  private push(event: SimEvent): void {
    const heap = this.heap
    heap.push(event)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.less(heap[i]!, heap[parent]!)) break
      const tmp = heap[i]!
      heap[i] = heap[parent]!
      heap[parent] = tmp
      i = parent
    }
  }

  private popRaw(): SimEvent | undefined {
    const heap = this.heap
    const top = heap[0]
    if (top === undefined) return undefined
    const last = heap.pop()!
    if (heap.length > 0) {
      heap[0] = last
      let i = 0
      for (;;) {
        const left = 2 * i + 1
        const right = left + 1
        let smallest = i
        if (left < heap.length && this.less(heap[left]!, heap[smallest]!)) smallest = left
        if (right < heap.length && this.less(heap[right]!, heap[smallest]!)) smallest = right
        if (smallest === i) break
        const tmp = heap[i]!
        heap[i] = heap[smallest]!
        heap[smallest] = tmp
        i = smallest
      }
    }
    return top
  }
}
