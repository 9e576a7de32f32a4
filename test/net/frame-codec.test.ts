// Checks the varint length-prefix framing: encodeFrames output decodes back
// to the same frames however the bytes are split into chunks (one byte at a
// time, random splits, Uint8ArrayList input), and bad prefixes are refused
// before any body is buffered.

import { Uint8ArrayList } from 'uint8arraylist'
import { describe, expect, it } from 'vitest'
import { encodeFrames, FrameDecodeError, FrameDecoder, FrameTooLargeError } from '../../net/index.ts'

function frameOf(bytes: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: bytes }, (_, i) => (seed + i * 31) & 0xff)
}

function decodeAll(decoder: FrameDecoder, chunks: Array<Uint8Array | Uint8ArrayList>): Uint8Array[] {
  const out: Uint8Array[] = []
  for (const chunk of chunks) decoder.push(chunk, (frame) => out.push(frame))
  return out
}

// toEqual on large typed arrays is slow; compare as buffers.
function expectFrames(actual: Uint8Array[], expected: Uint8Array[]): void {
  expect(actual.map((frame) => frame.byteLength)).toEqual(expected.map((frame) => frame.byteLength))
  actual.forEach((frame, i) => {
    expect(Buffer.from(frame).equals(Buffer.from(expected[i]!)), `frame ${i}`).toBe(true)
  })
}

// A small deterministic generator so a failing split can be replayed.
function splitter(seed: number): (max: number) => number {
  let state = seed >>> 0
  return (max) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    return 1 + (state % max)
  }
}

describe('frame codec', () => {
  const frames = [0, 1, 127, 128, 16_383, 16_384, 70_000, 0, 3].map((bytes, i) => frameOf(bytes, i))
  const encoded = encodeFrames(frames)

  it('prefixes each frame with its length as an unsigned varint', () => {
    expect([...encodeFrames([new Uint8Array(0), frameOf(1, 9), new Uint8Array(300)]).subarray(0, 4)]).toEqual(
      [0x00, 0x01, 9, 0xac],
    )
    expect(encodeFrames([new Uint8Array(300)])[1]).toBe(0x02)
  })

  it('decodes frames fed one byte at a time', () => {
    const chunks = [...encoded].map((byte) => Uint8Array.of(byte))
    expectFrames(decodeAll(new FrameDecoder(1 << 20), chunks), frames)
  })

  it('decodes frames from random splits and from Uint8ArrayList chunks', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const next = splitter(seed)
      const chunks: Array<Uint8Array | Uint8ArrayList> = []
      for (let at = 0; at < encoded.byteLength; ) {
        const size = Math.min(next(5000), encoded.byteLength - at)
        const piece = encoded.subarray(at, at + size)
        const half = piece.byteLength >> 1
        chunks.push(
          seed % 2 === 0 ? piece : new Uint8ArrayList(piece.subarray(0, half), piece.subarray(half)),
        )
        at += size
      }
      expectFrames(decodeAll(new FrameDecoder(1 << 20), chunks), frames)
    }
  })

  it('hands out frames that do not alias the received chunk', () => {
    const chunk = encodeFrames([Uint8Array.of(1, 2, 3)])
    const [frame] = decodeAll(new FrameDecoder(16), [chunk])
    chunk.fill(0)
    expect([...frame!]).toEqual([1, 2, 3])
  })

  it('refuses a length above the limit as soon as the prefix shows it, before the body arrives', () => {
    const decoder = new FrameDecoder(1000)
    // 1001 = 0xe9 0x07; the first byte alone (105) is still within the limit.
    expect(() => decoder.push(Uint8Array.of(0xe9), () => {})).not.toThrow()
    expect(() => decoder.push(Uint8Array.of(0x07), () => {})).toThrow(FrameTooLargeError)
    // A 4 GiB announcement is refused without allocating.
    expect(() => new FrameDecoder(1000).push(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f), () => {})).toThrow(
      FrameTooLargeError,
    )
  })

  it('refuses a prefix longer than five bytes', () => {
    expect(() => new FrameDecoder(1 << 30).push(new Uint8Array(6).fill(0x80), () => {})).toThrow(
      FrameDecodeError,
    )
  })

  it('holds only the bytes received of an unfinished frame', () => {
    const decoder = new FrameDecoder(1 << 20)
    decoder.push(encodeFrames([new Uint8Array(100_000)]).subarray(0, 10), () => {})
    expect(decoder.bufferedBytes).toBe(7)
  })
})
