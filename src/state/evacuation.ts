// Moving vnodes off a drained host (`docklet admin host drain ID --evacuate`).
// A move is three steps, each a command, so any replica and any restarted
// agent knows where it stands:
//   1. host.drain with evacuate: each live vnode on the host gets a target
//      (placed by the scheduler like a new vnode; the drained host is not a
//      candidate) and `move = {from, to, image: ''}`. The target's share is
//      reserved at once, so two moves cannot both take the last room.
//   2. The source agent stops the container, saves its files (image + upper
//      layer, flattened) as an internal image and commits vnode.move-saved.
//   3. The target agent fetches that image from the source over libp2p,
//      creates the container with the same hostname and IP, starts it and
//      commits vnode.moved: the vnode now lives on the target, on that image.
// The source's container is then no longer placed there, so its agent
// removes it. A vnode removed mid-move simply stops moving.

import type { ClusterData, CommandResult } from './cluster-state.ts'
import { placeVnodes } from './scheduler.ts'
import { failure } from './state-error.ts'
import type { Vcluster, Vnode } from './vcluster-state.ts'

export interface VnodeMove {
  from: string
  to: string
  /** The saved image (content hash) once the source has saved it; '' before. */
  image: string
}

export type MoveCommand =
  | { type: 'vnode.move-saved'; at: number; vcluster: string; index: number; host: string; image: string }
  | { type: 'vnode.moved'; at: number; vcluster: string; index: number; host: string }

export const moveCommandTypes: ReadonlySet<string> = new Set(['vnode.move-saved', 'vnode.moved'])

const HASH = /^[0-9a-f]{16,128}$/

/**
 * Gives every live vnode on `host` a target. `slots` are the scheduler's
 * view (with moves already under way reserved on their targets). Returns how
 * many got one; the others carry a pending reason saying why not.
 */
export function startEvacuation(
  data: ClusterData,
  host: string,
  slots: Parameters<typeof placeVnodes>[0],
): { moving: number; stuck: number } {
  const mine: Array<{ vcluster: Vcluster; vnode: Vnode }> = []
  for (const id of Object.keys(data.vclusters).sort((a, b) => Number(a) - Number(b))) {
    const vcluster = data.vclusters[id]!
    for (const vnode of vcluster.vnodes)
      if (vnode.host === host && vnode.desired !== 'deleted' && vnode.move === undefined)
        mine.push({ vcluster, vnode })
  }
  const placements = placeVnodes(
    slots,
    mine.map(({ vcluster, vnode }) => ({ vcluster: vcluster.id, limits: vnode.limits })),
    { policy: data.allocation.policy },
  )
  let moving = 0
  mine.forEach(({ vnode }, i) => {
    const placement = placements[i]
    if (placement === undefined) return
    if (placement.host === null) {
      vnode.pendingReason = `cannot move off the drained host: ${placement.reason}`
      return
    }
    vnode.move = { from: host, to: placement.host, image: '' }
    vnode.pendingReason = ''
    moving += 1
  })
  return { moving, stuck: mine.length - moving }
}

export function applyMoveCommand(data: ClusterData, command: MoveCommand): CommandResult {
  const vcluster = data.vclusters[command.vcluster]
  const vnode = vcluster?.vnodes.find((v) => v.index === command.index)
  if (vcluster === undefined || vnode === undefined)
    return failure('ERR_VNODE_NOT_FOUND', `The vcluster ${command.vcluster} has no vnode ${command.index}.`)
  const move = vnode.move
  if (move === undefined || vnode.desired === 'deleted')
    return failure('ERR_NOT_MOVING', `Vnode ${command.index} of vcluster ${vcluster.id} is not being moved.`)
  if (command.type === 'vnode.move-saved') {
    if (command.host !== move.from)
      return failure(
        'ERR_STALE_REPORT',
        `Host ${command.host} reported saving vnode ${command.index} of vcluster ${vcluster.id}, which moves from ${move.from}.`,
      )
    if (typeof command.image !== 'string' || !HASH.test(command.image))
      return failure(
        'ERR_BAD_IMAGE_ID',
        `The image id ${JSON.stringify(command.image)} is not a content hash.`,
      )
    move.image = command.image
    return { ok: true, id: vcluster.id, index: vnode.index }
  }
  if (command.host !== move.to || move.image === '')
    return failure(
      'ERR_STALE_REPORT',
      `Host ${command.host} reported running vnode ${command.index} of vcluster ${vcluster.id}, which moves to ${move.to}.`,
    )
  vnode.host = move.to
  vnode.image = move.image
  delete vnode.move
  vnode.observedAt = command.at
  return { ok: true, id: vcluster.id, index: vnode.index, host: vnode.host }
}
