// Shared by the real-LXC test files: what this host lacks to run them, and a
// helper that cleans everything a test left under its temp dir.

import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { isStaticElf } from '../../runtime/image-builder.ts'

const COMMANDS = [
  'lxc-start',
  'lxc-stop',
  'lxc-attach',
  'lxc-info',
  'lxc-ls',
  'lxc-cgroup',
  'lxc-wait',
  'mkfs.ext4',
  'losetup',
  'mount',
  'umount',
  'tar',
  'cp',
  'chroot',
  'ip',
]

function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** What is missing to run real containers here, as sentences naming the Debian package. */
export function missingLxcPrerequisites(): string[] {
  const missing: string[] = []
  if (process.getuid?.() !== 0) missing.push('root (run the tests as root)')
  for (const command of COMMANDS) {
    if (!hasCommand(command))
      missing.push(`the ${command} command (packages: lxc, e2fsprogs, mount, tar, iproute2)`)
  }
  try {
    if (!isStaticElf(readFileSync('/bin/busybox')))
      missing.push('a static /bin/busybox (package busybox-static)')
  } catch {
    missing.push('/bin/busybox (package busybox-static)')
  }
  if (!existsSync('/proc/filesystems') || !readFileSync('/proc/filesystems', 'utf8').includes('overlay')) {
    missing.push('overlayfs in the kernel (modprobe overlay)')
  }
  return missing
}

/** Under CI a missing prerequisite fails the file; elsewhere it is skipped with the reason. */
export function prerequisiteVerdict(): { skip: boolean; failure: string | null; reason: string } {
  const missing = missingLxcPrerequisites()
  if (missing.length === 0) return { skip: false, failure: null, reason: '' }
  const reason = `Real-LXC tests need ${missing.join('; ')}.`
  if (process.env.CI === 'true') return { skip: false, failure: reason, reason }
  console.warn(`Skipping: ${reason}`)
  return { skip: true, failure: null, reason }
}
