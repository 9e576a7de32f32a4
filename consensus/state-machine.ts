// The application the driver applies committed entries to. Deterministic:
// every replica applies the same entries in the same order and must reach
// the same state.

export interface StateMachine<Result = unknown> {
  /** Applies one committed Normal entry (never the empty no-op). Its return value resolves the proposal. */
  apply(data: Uint8Array, index: number): Result
  /** The whole state, for log compaction and for followers that fell behind. */
  snapshot(): Uint8Array
  /** Replaces the state with a snapshot's. */
  restore(data: Uint8Array): void
}
