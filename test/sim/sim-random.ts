// Seeded randomness for the simulator. Every random choice of a run comes
// from one seed, split into independent named streams (faults, network,
// clients, each node's election jitter), so that changing how often one part
// draws does not shift the choices of the others.

import type { Rng } from '../../consensus/clock.ts'

/** 32-bit FNV-1a over a string: derives a stream's seed from the run seed and a label. */
export function hashString(text: string, seed = 0x811c9dc5): number {
  let hash = seed >>> 0
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash >>> 0
}

/** A small, fast, seeded generator (sfc32) with the helpers the simulator needs. */
export class SimRandom implements Rng {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(seed: number) {
    this.a = 0x9e3779b9
    this.b = 0x243f6a88
    this.c = 0xb7e15162
    this.d = seed >>> 0
    // Warm up so that nearby seeds give unrelated sequences.
    for (let i = 0; i < 16; i++) this.next32()
  }

  /** An independent stream for `label`, derived from `seed`. */
  static stream(seed: number, label: string): SimRandom {
    return new SimRandom(hashString(label, hashString(String(seed))))
  }

  private next32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** A float in [0, 1). */
  float(): number {
    return this.next32() / 4294967296
  }

  /** An integer in [0, maxExclusive). */
  int(maxExclusive: number): number {
    return Math.floor(this.float() * maxExclusive)
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.int(max - min + 1)
  }

  /** A float in [min, max). */
  range(min: number, max: number): number {
    return min + this.float() * (max - min)
  }

  chance(probability: number): boolean {
    return this.float() < probability
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('SimRandom.pick needs at least one item.')
    return items[this.int(items.length)]!
  }

  /** Picks by weight: [[value, weight], ...]. */
  weighted<T>(choices: ReadonlyArray<readonly [T, number]>): T {
    let total = 0
    for (const [, weight] of choices) total += weight
    let roll = this.float() * total
    for (const [value, weight] of choices) {
      roll -= weight
      if (roll < 0) return value
    }
    return choices[choices.length - 1]![0]
  }

  /** An exponentially distributed duration with the given mean. */
  exponential(mean: number): number {
    return -mean * Math.log(1 - this.float())
  }

  shuffle<T>(items: readonly T[]): T[] {
    const copy = [...items]
    for (let i = copy.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const tmp = copy[i]!
      copy[i] = copy[j]!
      copy[j] = tmp
    }
    return copy
  }
}
