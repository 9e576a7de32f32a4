// Writing files into a container's root tree from the host, safely. The tree
// is the container's: a symlink in it (say /etc/hosts -> /run/hosts or an
// absolute /root -> /home) must resolve inside the tree, never to the host's
// own files. Paths are therefore resolved component by component here,
// with symlinks followed relative to the container root.

import { chmod, chown, lstat, mkdir, readlink, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { InvalidSpecError } from './errors.ts'

/** Same as the kernel's limit on nested symlinks. */
export const SYMLINK_HOPS_MAX = 40

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'ENOENT'
}

/**
 * Resolves the parent directories of `path` inside `root` (creating missing
 * ones with `dirMode`, owned by root) and returns the host path of `path`
 * itself; its last component is not followed.
 */
export async function resolveInRoot(
  root: string,
  path: string,
  options: { dirMode: number },
): Promise<string> {
  let pending = path.split('/').filter((part) => part !== '')
  const resolved: string[] = []
  let hops = 0
  while (pending.length > 0) {
    const part = pending.shift()!
    if (part === '.') continue
    if (part === '..') {
      resolved.pop()
      continue
    }
    if (pending.length === 0) {
      resolved.push(part)
      break
    }
    const candidate = join(root, ...resolved, part)
    let stats: Awaited<ReturnType<typeof lstat>> | null = null
    try {
      stats = await lstat(candidate)
    } catch (error) {
      if (!isNotFound(error)) throw error
    }
    if (stats === null) {
      await mkdir(candidate, { mode: options.dirMode })
      await chmod(candidate, options.dirMode)
      await chown(candidate, 0, 0)
      resolved.push(part)
    } else if (stats.isSymbolicLink()) {
      hops += 1
      if (hops > SYMLINK_HOPS_MAX)
        throw new InvalidSpecError(`Too many symlinks while resolving ${path} in the image.`)
      const target = await readlink(candidate)
      if (target.startsWith('/')) resolved.length = 0
      pending = [...target.split('/').filter((p) => p !== ''), ...pending]
    } else if (stats.isDirectory()) {
      resolved.push(part)
    } else {
      throw new InvalidSpecError(
        `Cannot write ${path}: /${[...resolved, part].join('/')} is not a directory in the image.`,
      )
    }
  }
  return join(root, ...resolved)
}

/** Writes a root-owned file at `path` inside `root`, replacing whatever is there (a symlink is replaced, not followed). */
export async function writeFileInRoot(
  root: string,
  path: string,
  content: string | Uint8Array,
  options: { mode: number; dirMode?: number },
): Promise<void> {
  const target = await resolveInRoot(root, path, { dirMode: options.dirMode ?? 0o755 })
  try {
    const stats = await lstat(target)
    if (!stats.isFile()) await rm(target, { recursive: true, force: true })
  } catch (error) {
    if (!isNotFound(error)) throw error
  }
  await writeFile(target, content, { mode: options.mode })
  await chmod(target, options.mode)
  await chown(target, 0, 0)
}

/** Makes `path` a root-owned directory with exactly `mode` inside `root`. */
export async function ensureDirInRoot(root: string, path: string, options: { mode: number }): Promise<void> {
  const target = await resolveInRoot(root, path, { dirMode: 0o755 })
  let stats: Awaited<ReturnType<typeof lstat>> | null = null
  try {
    stats = await lstat(target)
  } catch (error) {
    if (!isNotFound(error)) throw error
  }
  if (stats !== null && !stats.isDirectory()) await rm(target, { force: true })
  if (stats === null || !stats.isDirectory()) await mkdir(target, { mode: options.mode })
  await chmod(target, options.mode)
  await chown(target, 0, 0)
}
