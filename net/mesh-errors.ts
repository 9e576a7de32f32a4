// Errors of the host-side mesh (WireGuard mesh and VXLAN overlays). Each has a
// stable `code`. They extend NetError so callers of net/ switch on one family.

import { NetError } from './errors.ts'

/** The output of `ip`, `wg`, `bridge` or `nft` could not be understood. */
export class MeshParseError extends NetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_MESH_PARSE', message, options)
    this.name = 'MeshParseError'
  }
}

/** A desired mesh or overlay configuration is invalid; the message names the field. */
export class MeshConfigError extends NetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_MESH_CONFIG', message, options)
    this.name = 'MeshConfigError'
  }
}

/** A step of a mesh or overlay plan failed; the message names the step and the cause. */
export class MeshApplyError extends NetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_MESH_APPLY', message, options)
    this.name = 'MeshApplyError'
  }
}
