// Length-prefixed framing for opaque frames on a byte stream: each frame is
// preceded by its length as an unsigned LEB128 varint (the multiformats
// convention lpStream also uses). Streams do not preserve message boundaries,
// so the decoder is incremental: it accepts any split of the bytes and emits
// each frame as soon as its last byte arrives.

import type { Uint8ArrayList } from 'uint8arraylist'
import { FrameDecodeError, FrameTooLargeError } from './errors.ts'

/** A varint of 5 bytes holds 35 bits, more than any allowed frame length. */
export const VARINT_BYTES_MAX = 5

/** The largest frameBytesMax a transport accepts (1 GiB); lengths stay exact in 31 bits. */
export const FRAME_BYTES_LIMIT = 2 ** 30

export function varintLength(value: number): number {
  if (value < 0x80) return 1
  if (value < 0x4000) return 2
  if (value < 0x200000) return 3
  if (value < 0x10000000) return 4
  return 5
}

/** Writes `value` as a varint at `offset`; returns the offset after it. */
export function writeVarint(value: number, target: Uint8Array, offset: number): number {
  let rest = value
  let at = offset
  while (rest >= 0x80) {
    target[at++] = (rest & 0x7f) | 0x80
    rest = Math.floor(rest / 128)
  }
  target[at++] = rest
  return at
}

/** Returns one buffer holding the frames, each behind its length prefix. */
export function encodeFrames(frames: readonly Uint8Array[]): Uint8Array {
  let total = 0
  for (const frame of frames) total += varintLength(frame.byteLength) + frame.byteLength
  const out = new Uint8Array(total)
  let at = 0
  for (const frame of frames) {
    at = writeVarint(frame.byteLength, out, at)
    out.set(frame, at)
    at += frame.byteLength
  }
  return out
}

/**
 * Incremental decoder for one stream. After it throws, the stream is broken
 * and the decoder must not be used again.
 */
export class FrameDecoder {
  readonly #frameBytesMax: number
  // Varint being read: value so far, bit weight of the next 7 bits, bytes read.
  #lengthValue = 0
  #lengthWeight = 1
  #lengthBytes = 0
  // Body being read: expected length (-1 while reading the prefix) and pieces.
  // Pieces are views into received chunks; the body is only allocated once
  // all of it has arrived, so a peer announcing a large frame and then
  // stalling costs only the bytes it actually sent.
  #bodyBytes = -1
  #pieces: Uint8Array[] = []
  #piecesBytes = 0

  constructor(frameBytesMax: number) {
    this.#frameBytesMax = frameBytesMax
  }

  /** Bytes of an unfinished frame held by the decoder. */
  get bufferedBytes(): number {
    return this.#piecesBytes + this.#lengthBytes
  }

  /**
   * Consumes `data`, calling `onFrame` for every completed frame in order.
   * Throws FrameTooLargeError or FrameDecodeError on a bad prefix.
   */
  push(data: Uint8Array | Uint8ArrayList, onFrame: (frame: Uint8Array) => void): void {
    if (data instanceof Uint8Array) {
      this.#pushChunk(data, onFrame)
      return
    }
    for (const chunk of data) this.#pushChunk(chunk, onFrame)
  }

  #pushChunk(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): void {
    let at = 0
    const end = chunk.byteLength
    while (at < end) {
      if (this.#bodyBytes < 0) {
        const byte = chunk[at++]!
        this.#lengthValue += (byte & 0x7f) * this.#lengthWeight
        this.#lengthWeight *= 128
        this.#lengthBytes++
        // Checked on every byte so an oversized announcement is refused
        // before any more of it is read.
        if (this.#lengthValue > this.#frameBytesMax) {
          throw new FrameTooLargeError(this.#lengthValue, this.#frameBytesMax)
        }
        if (byte & 0x80) {
          if (this.#lengthBytes >= VARINT_BYTES_MAX) {
            throw new FrameDecodeError(`A frame length prefix is longer than ${VARINT_BYTES_MAX} bytes.`)
          }
          continue
        }
        this.#bodyBytes = this.#lengthValue
        this.#lengthValue = 0
        this.#lengthWeight = 1
        this.#lengthBytes = 0
        if (this.#bodyBytes === 0) {
          this.#bodyBytes = -1
          onFrame(new Uint8Array(0))
        }
        continue
      }
      const wanted = this.#bodyBytes - this.#piecesBytes
      const available = end - at
      if (this.#piecesBytes === 0 && available >= wanted) {
        // Whole frame inside this chunk: one copy so the frame owns its bytes.
        const frame = chunk.slice(at, at + wanted)
        at += wanted
        this.#bodyBytes = -1
        onFrame(frame)
        continue
      }
      const take = Math.min(wanted, available)
      this.#pieces.push(chunk.subarray(at, at + take))
      this.#piecesBytes += take
      at += take
      if (this.#piecesBytes === this.#bodyBytes) {
        const frame = new Uint8Array(this.#bodyBytes)
        let offset = 0
        for (const piece of this.#pieces) {
          frame.set(piece, offset)
          offset += piece.byteLength
        }
        this.#pieces = []
        this.#piecesBytes = 0
        this.#bodyBytes = -1
        onFrame(frame)
      }
    }
  }
}
