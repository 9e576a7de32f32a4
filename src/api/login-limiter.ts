// Failed logins per client address, on this node only. The per-user lockout
// lives in the replicated state (session-state.ts); this adds a cheap local
// brake against one address guessing many names (and keeps argon2 work an
// attacker can cause per node bounded). The table is bounded: when full,
// the entry whose window started first is forgotten.

export interface LoginLimiterOptions {
  /** Failed logins one address may make per window. */
  failuresMax: number
  windowMs: number
  /** Addresses remembered at once. */
  addressesMax: number
}

export const defaultLoginLimiterOptions: LoginLimiterOptions = {
  failuresMax: 20,
  windowMs: 5 * 60 * 1000,
  addressesMax: 10_000,
}

interface Entry {
  windowStart: number
  failures: number
}

export class LoginLimiter {
  private readonly options: LoginLimiterOptions
  /** Insertion order = window start order, so the first key is the oldest. */
  private readonly entries = new Map<string, Entry>()

  constructor(options: LoginLimiterOptions = defaultLoginLimiterOptions) {
    this.options = options
  }

  /** Ms until `address` may try again, 0 when it may now. */
  retryAfterMs(address: string, now: number): number {
    const entry = this.entries.get(address)
    if (entry === undefined) return 0
    const windowEnd = entry.windowStart + this.options.windowMs
    if (now >= windowEnd) {
      this.entries.delete(address)
      return 0
    }
    return entry.failures >= this.options.failuresMax ? windowEnd - now : 0
  }

  recordFailure(address: string, now: number): void {
    const entry = this.entries.get(address)
    if (entry !== undefined && now < entry.windowStart + this.options.windowMs) {
      entry.failures += 1
      return
    }
    this.entries.delete(address)
    if (this.entries.size >= this.options.addressesMax) {
      const oldest = this.entries.keys().next()
      if (oldest.done !== true) this.entries.delete(oldest.value)
    }
    this.entries.set(address, { windowStart: now, failures: 1 })
  }

  get size(): number {
    return this.entries.size
  }
}
