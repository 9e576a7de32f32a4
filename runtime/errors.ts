// Errors of the runtime layer. Each has a stable `code`; callers (the host
// agent, the API's error table) switch on it, never on the message.

export class RuntimeError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RuntimeError'
    this.code = code
  }
}

/** A container spec or an argument is malformed; the message names the field. */
export class InvalidSpecError extends RuntimeError {
  constructor(message: string) {
    super('ERR_INVALID_SPEC', message)
    this.name = 'InvalidSpecError'
  }
}

export class ContainerExistsError extends RuntimeError {
  constructor(name: string) {
    super('ERR_CONTAINER_EXISTS', `Container ${name} already exists; destroy it first or pick another name.`)
    this.name = 'ContainerExistsError'
  }
}

export class ContainerNotFoundError extends RuntimeError {
  constructor(name: string) {
    super('ERR_CONTAINER_NOT_FOUND', `Container ${name} does not exist on this host.`)
    this.name = 'ContainerNotFoundError'
  }
}

export class ContainerNotRunningError extends RuntimeError {
  constructor(name: string) {
    super('ERR_CONTAINER_NOT_RUNNING', `Container ${name} is not running; start it first.`)
    this.name = 'ContainerNotRunningError'
  }
}

/** lxc-start failed; the message carries the tail of the container's LXC log. */
export class ContainerStartError extends RuntimeError {
  constructor(name: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_CONTAINER_START', `Container ${name} did not start: ${detail}`, options)
    this.name = 'ContainerStartError'
  }
}

export class BridgeNotFoundError extends RuntimeError {
  constructor(bridge: string) {
    super('ERR_BRIDGE_NOT_FOUND', `Network bridge ${bridge} does not exist on this host; create it first.`)
    this.name = 'BridgeNotFoundError'
  }
}

export class ImageNotFoundError extends RuntimeError {
  constructor(what: string) {
    super('ERR_IMAGE_NOT_FOUND', `Image ${what} is not on this host; build or fetch it first.`)
    this.name = 'ImageNotFoundError'
  }
}

/** The bytes of an image do not hash to the name they were stored or sent under. */
export class ImageHashMismatchError extends RuntimeError {
  readonly expected: string
  readonly actual: string
  constructor(expected: string, actual: string) {
    super(
      'ERR_IMAGE_HASH_MISMATCH',
      `Image content hashes to ${actual} but ${expected} was expected; the copy is corrupt, delete it and fetch it again.`,
    )
    this.name = 'ImageHashMismatchError'
    this.expected = expected
    this.actual = actual
  }
}

export class ImageInUseError extends RuntimeError {
  constructor(hash: string, reason: string) {
    super('ERR_IMAGE_IN_USE', `Image ${hash} cannot be removed: ${reason}.`)
    this.name = 'ImageInUseError'
  }
}

/** Building an image failed; the message says which step. */
export class ImageBuildError extends RuntimeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_IMAGE_BUILD', message, options)
    this.name = 'ImageBuildError'
  }
}

/** A host tool the runtime needs is missing (lxc, busybox-static, debootstrap…). */
export class PrerequisiteMissingError extends RuntimeError {
  constructor(what: string, hint: string) {
    super('ERR_PREREQUISITE_MISSING', `${what} is missing on this host; ${hint}.`)
    this.name = 'PrerequisiteMissingError'
  }
}

/**
 * A multi-step change failed and undoing it failed too: the host may hold
 * leftovers. `cause` is the original failure, `undoErrors` what the undo hit.
 */
export class RevertFailedError extends RuntimeError {
  readonly undoErrors: readonly unknown[]
  constructor(what: string, cause: unknown, undoErrors: readonly unknown[]) {
    const first = undoErrors[0] instanceof Error ? undoErrors[0].message : String(undoErrors[0])
    super(
      'ERR_REVERT_FAILED',
      `${what} failed (${cause instanceof Error ? cause.message : String(cause)}) and ${undoErrors.length} undo step(s) failed too (first: ${first}); destroy it to clean up.`,
      { cause },
    )
    this.name = 'RevertFailedError'
    this.undoErrors = undoErrors
  }
}
