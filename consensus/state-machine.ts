// The application the driver applies committed entries to. Deterministic:
// every replica applies the same entries in the same order and must reach
// the same state.

export interface StateMachine<Result = unknown> {
  /** Applies one committed Normal entry (never the empty no-op). Its return value resolves the proposal. */
  apply(data: Uint8Array, index: number): Result
  /** The whole state, for log compaction and for followers that fell behind. */
  snapshot(): Uint8Array
  /**
   * Optional: the whole state as of this call, encoded in the background.
   * The state must be captured before this returns (cheaply: a copy-on-write
   * view, not a copy), because the driver goes on calling apply() and
   * restore() while the promise is pending and compacts the log only up to
   * the index applied at the call. Encode in slices that yield to the event
   * loop (or elsewhere): Raft's timers must never wait behind a snapshot. A
   * state machine that offers this gets it called instead of snapshot() when
   * the driver compacts its log; snapshot() is still used for the first
   * snapshot of a new cluster. When `signal` aborts (the node stops), reject
   * soon; the result is not used.
   */
  snapshotAsync?(options: { signal: AbortSignal }): Promise<Uint8Array>
  /** Replaces the state with a snapshot's. */
  restore(data: Uint8Array): void
}
