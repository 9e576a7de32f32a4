// Time as the driver sees it. The real clock lives in src/main.ts and the
// benches; the simulator hands in a virtual one.

export interface Clock {
  nowMs(): number
  /** Calls fn every intervalMs until the returned function is called. */
  every(intervalMs: number, fn: () => void): () => void
}

/** Deterministic randomness for election jitter: a seeded generator in tests. */
export interface Rng {
  /** An integer in [0, maxExclusive). */
  int(maxExclusive: number): number
}

/** The wall clock. Created only where real time is wanted (src/main.ts, benches). */
export function realClock(): Clock {
  return {
    nowMs: () => performance.now(),
    every(intervalMs, fn) {
      const timer = setInterval(fn, intervalMs)
      return () => clearInterval(timer)
    },
  }
}

/** A small, fast, seeded generator (mulberry32): the same seed gives the same sequence. */
export function seededRng(seed: number): Rng {
  let state = seed >>> 0
  return {
    int(maxExclusive: number): number {
      state = (state + 0x6d2b79f5) >>> 0
      let t = state
      t = Math.imul(t ^ (t >>> 15), t | 1)
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
      const unit = ((t ^ (t >>> 14)) >>> 0) / 4294967296
      return Math.floor(unit * maxExclusive)
    },
  }
}
