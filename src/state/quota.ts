// Group quotas and the check a request must pass against a user's usage.
// Pure: the state machine sums the usage and calls checkQuota at apply time,
// so two racing requests are checked one after the other against the state
// each one actually meets.

export interface Quota {
  cpuCores: number
  memoryMb: number
  diskMb: number
  vnodes: number
  vclusters: number
  images: number
  portMappings: number
}

/** What a user holds, summed over their vnodes, vclusters and images. */
export interface Usage {
  cpuCores: number
  memoryMb: number
  diskMb: number
  vnodes: number
  vclusters: number
  images: number
}

/**
 * The original docklet's defaults (cpu 4, memory 2000 MB, disk 2000 MB,
 * vnodes 8, images 10, port mappings 8). The original had no vcluster count
 * (its subnet size capped it); 4 here.
 */
export const defaultQuota: Quota = {
  cpuCores: 4,
  memoryMb: 2000,
  diskMb: 2000,
  vnodes: 8,
  vclusters: 4,
  images: 10,
  portMappings: 8,
}

export const quotaKeys = [
  'cpuCores',
  'memoryMb',
  'diskMb',
  'vnodes',
  'vclusters',
  'images',
  'portMappings',
] as const satisfies ReadonlyArray<keyof Quota>

export function emptyUsage(): Usage {
  return { cpuCores: 0, memoryMb: 0, diskMb: 0, vnodes: 0, vclusters: 0, images: 0 }
}

const labels: Record<keyof Usage, { name: string; unit: (n: number) => string }> = {
  cpuCores: { name: 'cpu', unit: (n) => `${n} ${n === 1 ? 'core' : 'cores'}` },
  memoryMb: { name: 'memory', unit: (n) => `${n} MB` },
  diskMb: { name: 'disk', unit: (n) => `${n} MB` },
  vnodes: { name: 'vnode', unit: (n) => `${n} ${n === 1 ? 'vnode' : 'vnodes'}` },
  vclusters: { name: 'vcluster', unit: (n) => `${n} ${n === 1 ? 'vcluster' : 'vclusters'}` },
  images: { name: 'image', unit: (n) => `${n} ${n === 1 ? 'image' : 'images'}` },
}

/**
 * Null when usage + request fits the quota, otherwise a sentence naming the
 * first exceeded resource and the numbers, e.g. "memory quota exceeded: the
 * vcluster needs 3000 MB, you have 1500 MB of 2000 MB left".
 */
export function checkQuota(
  quota: Quota,
  usage: Usage,
  options: { request: Partial<Usage>; what: string },
): string | null {
  for (const key of Object.keys(labels) as Array<keyof Usage>) {
    const wanted = options.request[key] ?? 0
    if (wanted === 0) continue
    if (usage[key] + wanted <= quota[key]) continue
    const left = Math.max(0, quota[key] - usage[key])
    const { name, unit } = labels[key]
    return `${name} quota exceeded: ${options.what} needs ${unit(wanted)}, you have ${unit(left)} of ${unit(quota[key])} left.`
  }
  return null
}

/** A sentence saying which quota value is not a non-negative integer, or null. */
export function checkQuotaValues(values: Partial<Quota>): string | null {
  for (const key of quotaKeys) {
    const value = values[key]
    if (value === undefined) continue
    if (!Number.isSafeInteger(value) || value < 0) {
      return `The ${key} quota must be a whole number of 0 or more, not ${String(value)}.`
    }
  }
  for (const key of Object.keys(values)) {
    if (!(quotaKeys as ReadonlyArray<string>).includes(key)) {
      return `There is no quota named ${key}; quotas are ${quotaKeys.join(', ')}.`
    }
  }
  return null
}
