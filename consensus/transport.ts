// What the driver needs from a network. Frames are opaque bytes here: the
// driver encodes Raft messages (consensus/codec.ts) and net/ carries them.
// net/ implements this shape without importing consensus/ (layers never
// import each other); src/ and the benches hand one to the driver.

export interface SendOptions {
  /**
   * Nothing waits for this frame (a periodic heartbeat, an append that only
   * carries the commit index): the transport may write it at the end of the
   * current turn of the event loop, after the caller has answered its
   * clients. It still leaves after every frame sent to the same peer before
   * it. A transport may ignore this.
   */
  deferrable?: boolean
}

export interface FrameTransport {
  /**
   * Queues one frame for `to`. Returns false when the frame was dropped
   * (unknown peer, queue full, closed): Raft tolerates loss and retries.
   */
  send(to: string, frame: Uint8Array, options?: SendOptions): boolean
  /** Installs the single receiver of frames from peers. */
  onFrame(handler: (from: string, frame: Uint8Array) => void): void
}
