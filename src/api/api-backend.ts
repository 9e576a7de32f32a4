// What the HTTP API needs from the node it runs on. The API layer (routes,
// schemas, authentication, ownership checks) talks only to this interface,
// so its tests hand it a fake and src/main.ts hands it the real node.

import type { Readable } from 'node:stream'
import type { ClusterStatus } from '../node/docklet-node.ts'
import type { ClusterState, Command, CommandResult } from '../state/cluster-state.ts'
import type { ImageVisibility } from '../state/vcluster-state.ts'

export interface VnodeExecResult {
  exitCode: number
  stdout: string
  stderr: string
}

export type ImageKind = 'busybox' | 'debian'

/** One line of progress of a long operation (image build, vnode save). */
export interface Progress {
  step: string
  /** 0..1 when known. */
  fraction?: number
}

export interface ApiBackend {
  /** This node's member id (libp2p PeerId). */
  readonly nodeId: string
  /** The local replica (reads are served from it). */
  readonly state: ClusterState
  /**
   * Commits a command through the leader. The node fills `at`. Throws an
   * error with a stable `code` (StateError, QuorumLostError) on refusal.
   */
  submit(command: Command): Promise<CommandResult & { ok: true }>
  /** Members, roles, leader, online. */
  status(): Promise<ClusterStatus>
  /** Runs argv as root in a vnode, on whichever host runs it. */
  execVnode(
    vclusterId: string,
    index: number,
    argv: string[],
    options: { timeoutMs: number },
  ): Promise<VnodeExecResult>
  /** Saves a vnode's writable layer as a new private image of `owner`; returns the image id. */
  saveVnode(
    vclusterId: string,
    index: number,
    image: { name: string; owner: string; description: string },
    onProgress?: (progress: Progress) => void,
  ): Promise<{ id: string }>
  /** Builds one of docklet's own images on this host and registers it (owner: the admin, public). */
  buildImage(kind: ImageKind, onProgress?: (progress: Progress) => void): Promise<{ id: string }>
  /** Builds running on this node and their latest step (for progress output). */
  imageBuilds?(): Array<{ kind: ImageKind; step: string; startedAt: number }>
  /**
   * Stores an image tar (as exportImage makes it: manifest.json first, then
   * rootfs/) on this host, accepted only when its tree hashes to the hash its
   * manifest names, and registers it with this host holding it. When the
   * cluster knows the image already, this host just holds it too and
   * `registered` is false. `name` defaults to the manifest's.
   */
  importImage?(
    tar: Readable,
    image: { name?: string; owner: string; description: string; visibility: ImageVisibility },
  ): Promise<{ id: string; registered: boolean }>
  /** The tar of an image, from this host's store (fetched from a host that holds it first, when needed). */
  exportImage?(id: string): Promise<{ stream: Readable; sizeBytes: number }>
}
