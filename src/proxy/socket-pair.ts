// Joins two sockets both ways, streaming: each direction is a pipe, so at
// most a socket's high-water mark of data waits in this process whatever
// the traffic, and the event loop only moves chunks. One side's end is
// passed on as the other's end (half-close works), an error on either side
// destroys both, and a side left half-open after the other closed is cut
// after a linger time, so no pair outlives its peers for long.

import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'

/** A socket whose peer closed stays half-open at most this long. */
export const halfOpenLingerMsDefault = 30_000
/** TCP keepalive on long-lived tunnels (a WebSocket may idle for hours). */
export const keepAliveDelayMs = 60_000

function keepAlive(stream: Duplex): void {
  const socket = stream as Partial<Socket>
  socket.setKeepAlive?.(true, keepAliveDelayMs)
  socket.setNoDelay?.(true)
}

/** Pipes `a` and `b` into each other; `onClosed` runs once, when both have closed. */
export function joinSockets(
  a: Duplex,
  b: Duplex,
  onClosed: () => void,
  options: { lingerMs?: number } = {},
): void {
  const lingerMs = options.lingerMs ?? halfOpenLingerMsDefault
  if (a.destroyed || b.destroyed) {
    // One side went away while the other was being opened: there is nothing to join.
    a.destroy()
    b.destroy()
    queueMicrotask(onClosed)
    return
  }
  keepAlive(a)
  keepAlive(b)
  let open = 2
  const closed = () => {
    open -= 1
    if (open === 0) onClosed()
  }
  const wire = (from: Duplex, to: Duplex) => {
    from.pipe(to)
    from.on('error', () => {
      from.destroy()
      to.destroy()
    })
    from.once('close', () => {
      if (!to.destroyed) {
        to.end()
        setTimeout(() => to.destroy(), lingerMs).unref()
      }
      closed()
    })
  }
  wire(a, b)
  wire(b, a)
}
