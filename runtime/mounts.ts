// What is mounted where, read from /proc/self/mounts, and unmounting through
// the runner. Both the runtime (idempotent destroy, remount after a host
// reboot) and its tests (nothing left behind) use these.

import { readFile } from 'node:fs/promises'
import type { CommandRunner } from './command-runner.ts'

export const MOUNT_TIMEOUT_MS = 30_000

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)))
}

export async function mountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mounts', 'utf8')
  const points: string[] = []
  for (const line of text.split('\n')) {
    const field = line.split(' ')[1]
    if (field !== undefined) points.push(unescapeMountPath(field))
  }
  return points
}

export async function isMounted(path: string): Promise<boolean> {
  return (await mountPoints()).includes(path)
}

/** Mount points at or below `dir`, deepest first (the order to unmount them in). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`
  const found = (await mountPoints()).filter((point) => point === dir || point.startsWith(prefix))
  return [...new Set(found)].sort((a, b) => b.length - a.length)
}

/** Unmounts every mount at `path` (mounts can stack); falls back to a lazy unmount when busy. */
export async function unmountAll(runner: CommandRunner, path: string): Promise<void> {
  for (let round = 0; round < 8 && (await isMounted(path)); round += 1) {
    const result = await runner.run('umount', [path], { timeoutMs: MOUNT_TIMEOUT_MS, okExitCodes: [0, 32] })
    if (result.exitCode !== 0) {
      await runner.run('umount', ['--lazy', path], { timeoutMs: MOUNT_TIMEOUT_MS })
    }
  }
}
