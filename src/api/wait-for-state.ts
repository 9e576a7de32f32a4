// A write commits on the leader; this node's replica applies it a moment
// later. A route that answers with what it just changed waits here until
// the local replica shows the change (or gives up after a bounded time), so
// a client reads its own writes from any node.

import type { ClusterState } from '../state/cluster-state.ts'

/** True once `ready()` holds on `state`, false if it did not within timeoutMs. */
export function waitForState(state: ClusterState, ready: () => boolean, timeoutMs: number): Promise<boolean> {
  if (ready()) return Promise.resolve(true)
  return new Promise((resolve) => {
    const finish = (value: boolean) => {
      clearTimeout(timer)
      unwatch()
      resolve(value)
    }
    const timer = setTimeout(() => finish(ready()), timeoutMs)
    const unwatch = state.watch(() => {
      if (ready()) finish(true)
    })
  })
}
