// Renders the LXC config of a container. Pure, so what a container gets is
// unit-tested without LXC. Every value comes from a validated spec (no
// newlines can reach the file).

import type { ContainerSpec } from './container-runtime.ts'

export interface LxcHostFeatures {
  /** 1: per-controller hierarchies (lxc.cgroup.*); 2: unified (lxc.cgroup2.*). */
  cgroupVersion: 1 | 2
  /** cgroup v1 has memory.memsw.*: cap memory+swap too, so swap cannot bypass the limit. */
  memswAvailable: boolean
  /** Without AppArmor in the kernel LXC cannot load a profile; say unconfined. */
  apparmorAvailable: boolean
}

export interface LxcConfigPaths {
  /** The mounted overlay the container boots from. */
  rootfsPath: string
  logPath: string
}

/** CFS period; quota = cores × period. */
export const CPU_PERIOD_US = 100_000
/** Like the original docklet: a fork bomb hits this, not the host. */
export const PIDS_MAX = 2048
/** Busybox init halts cleanly on SIGUSR2 (LXC's default SIGPWR does nothing there). */
export const HALT_SIGNAL = 'SIGUSR2'

export function renderLxcConfig(spec: ContainerSpec, paths: LxcConfigPaths, host: LxcHostFeatures): string {
  const memoryBytes = spec.limits.memoryMb * 1024 * 1024
  const quotaUs = Math.max(1000, Math.round(spec.limits.cpuCores * CPU_PERIOD_US))
  const lines: string[] = [
    '# Written by docklet; rewritten on every create. Do not edit.',
    `lxc.uts.name = ${spec.hostname}`,
    `lxc.rootfs.path = dir:${paths.rootfsPath}`,
    'lxc.init.cmd = /sbin/init',
    `lxc.signal.halt = ${HALT_SIGNAL}`,
    'lxc.autodev = 1',
    'lxc.mount.auto = proc:mixed sys:ro cgroup:mixed',
    'lxc.tty.max = 0',
    'lxc.pty.max = 64',
    'lxc.console.path = none',
    // The same capabilities the original docklet dropped, minus net_admin and
    // sys_admin that a workspace's own tools (ip, mount of tmpfs) need.
    'lxc.cap.drop = sys_module mac_admin mac_override sys_time sys_rawio',
    `lxc.log.file = ${paths.logPath}`,
    'lxc.log.level = WARN',
  ]
  if (!host.apparmorAvailable) lines.push('lxc.apparmor.profile = unconfined')
  if (host.cgroupVersion === 1) {
    lines.push(
      `lxc.cgroup.memory.limit_in_bytes = ${memoryBytes}`,
      ...(host.memswAvailable ? [`lxc.cgroup.memory.memsw.limit_in_bytes = ${memoryBytes}`] : []),
      `lxc.cgroup.cpu.cfs_period_us = ${CPU_PERIOD_US}`,
      `lxc.cgroup.cpu.cfs_quota_us = ${quotaUs}`,
      `lxc.cgroup.cpu.shares = ${Math.max(2, Math.round(spec.limits.cpuCores * 1024))}`,
      `lxc.cgroup.pids.max = ${PIDS_MAX}`,
    )
  } else {
    lines.push(
      `lxc.cgroup2.memory.max = ${memoryBytes}`,
      'lxc.cgroup2.memory.swap.max = 0',
      `lxc.cgroup2.cpu.max = ${quotaUs} ${CPU_PERIOD_US}`,
      `lxc.cgroup2.cpu.weight = ${Math.min(10_000, Math.max(1, Math.round(spec.limits.cpuCores * 100)))}`,
      `lxc.cgroup2.pids.max = ${PIDS_MAX}`,
    )
  }
  const net = spec.network
  if (net === null) {
    lines.push('lxc.net.0.type = empty')
  } else {
    lines.push('lxc.net.0.type = veth', 'lxc.net.0.name = eth0', 'lxc.net.0.flags = up')
    if (net.bridge !== undefined) lines.push(`lxc.net.0.link = ${net.bridge}`)
    if (net.ip !== undefined) lines.push(`lxc.net.0.ipv4.address = ${net.ip}`)
    if (net.gateway !== undefined) lines.push(`lxc.net.0.ipv4.gateway = ${net.gateway}`)
    if (net.mtu !== undefined) lines.push(`lxc.net.0.mtu = ${net.mtu}`)
    if (net.hwaddr !== undefined) lines.push(`lxc.net.0.hwaddr = ${net.hwaddr}`)
  }
  return `${lines.join('\n')}\n`
}
