// Applying commands to a ClusterState in unit tests, as the Raft log would.

import { type ClusterState, type Command, encodeCommand } from '../../src/state/cluster-state.ts'

/** Applies `command`; throws with the state's reason if it is refused. */
export function applyOk(state: ClusterState, command: Command): Record<string, unknown> {
  const result = state.apply(encodeCommand(command))
  if (!result.ok) throw new Error(`${command.type} was refused: ${result.error.message}`)
  return result
}
