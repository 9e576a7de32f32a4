// What the driver needs from a network. Frames are opaque bytes here: the
// driver encodes Raft messages (consensus/codec.ts) and net/ carries them.
// net/ implements this shape without importing consensus/ (layers never
// import each other); src/ and the benches hand one to the driver.

export interface FrameTransport {
  /**
   * Queues one frame for `to`. Returns false when the frame was dropped
   * (unknown peer, queue full, closed): Raft tolerates loss and retries.
   */
  send(to: string, frame: Uint8Array): boolean
  /** Installs the single receiver of frames from peers. */
  onFrame(handler: (from: string, frame: Uint8Array) => void): void
}
