// How a vcluster or vnode reads to a person, and whether it still converges
// (pages poll fast only then).

import type { Vcluster, Vnode } from './types.ts'

/** True while the host agents are still making the vnode what it should be. */
export function vnodeConverging(vnode: Vnode): boolean {
  if (vnode.movingTo !== null) return true
  if (vnode.desired === 'running') return vnode.observed !== 'running' && vnode.observed !== 'error'
  if (vnode.desired === 'stopped') return vnode.observed === 'running'
  return vnode.observed !== 'deleted' && vnode.observed !== 'none'
}

export function vclusterConverging(vcluster: Vcluster): boolean {
  return (
    vcluster.status === 'pending' ||
    vcluster.status === 'deleting' ||
    vcluster.vnodes.some((vnode) => vnode.desired !== 'deleted' && vnodeConverging(vnode))
  )
}

/** One word for a vnode's state, for a badge: running, starting, stopping, moving, stopped, error, pending. */
export function vnodeState(vnode: Vnode): string {
  if (vnode.observed === 'error') return 'error'
  if (vnode.host === null) return 'pending'
  if (vnode.movingTo !== null) return 'moving'
  if (vnode.desired === 'running') return vnode.observed === 'running' ? 'running' : 'starting'
  if (vnode.desired === 'stopped') return vnode.observed === 'running' ? 'stopping' : 'stopped'
  return 'deleting'
}

/** The vnodes a person still sees (scale-in hides one at once). */
export function liveVnodes(vcluster: Vcluster): Vnode[] {
  return vcluster.vnodes.filter((vnode) => vnode.desired !== 'deleted')
}
