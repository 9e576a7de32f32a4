// What the API answers, as the app reads it (src/api/api-schemas.ts is the
// contract; /api/v1/openapi.json publishes it). Written out here rather than
// imported: the app depends on the HTTP API, not on the node's sources.

export interface Quota {
  cpuCores: number
  memoryMb: number
  diskMb: number
  vnodes: number
  vclusters: number
  images: number
  portMappings: number
}

export type Usage = Quota

export type Role = 'admin' | 'user'
export type UserStatus = 'normal' | 'disabled' | 'pending'

export interface Session {
  name: string
  role: Role
  group: string
  status: UserStatus
  quota: Quota
  usage: Usage
  csrfToken?: string
  expiresAt?: number
}

export interface Resources {
  cpuCores: number
  memoryMb: number
  diskMb: number
}

export interface Vnode {
  index: number
  hostname: string
  host: string | null
  ip: string
  image: string
  limits: Resources
  desired: 'running' | 'stopped' | 'deleted'
  observed: 'none' | 'running' | 'stopped' | 'error' | 'deleted'
  observedAt: number
  lastError: string
  pendingReason: string
  movingTo: string | null
}

export type VclusterStatus = 'pending' | 'running' | 'stopped' | 'error' | 'deleting'

export interface Vcluster {
  id: string
  name: string
  owner: string
  status: VclusterStatus
  desired: 'running' | 'stopped'
  subnet: string
  gateway: string
  vni: number
  image: string
  limits: Resources
  createdAt: number
  startedAt: number
  stoppedAt: number
  vnodes: Vnode[]
}

export interface Image {
  id: string
  name: string
  owner: string
  visibility: 'private' | 'public'
  description: string
  sizeBytes: number
  createdAt: number
  hosts: string[]
}

export interface PortMapping {
  publicPort: number
  vcluster: string
  index: number
  port: number
  protocol: 'tcp'
  createdAt: number
}

export interface User {
  name: string
  role: Role
  group: string
  status: UserStatus
  createdAt: number
}

export interface Group {
  name: string
  quota: Quota
  members: number
  createdAt: number
}

export interface Host {
  id: string
  name: string
  address: string
  online: boolean
  leaving: boolean
  drained: boolean
  drainedAt: number
  capacity: Resources | null
  capacityAt: number
  used: Resources
  vnodes: number
  unavailable: string | null
}

export interface Member {
  id: string
  name: string
  address: string
  portal: string
  role: 'voter' | 'standby' | 'learner' | 'joining'
  online: boolean
  last_contact_ms: number | null
  leaving: boolean
}

export interface Members {
  cluster_id: string
  leader: { id: string; address: string } | null
  term?: number
  members: Member[]
  source?: 'leader' | 'local'
}

export interface Settings {
  registration: { open: boolean }
  ports: { min: number; max: number }
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

export const quotaLabels: Record<keyof Quota, { name: string; unit: string }> = {
  cpuCores: { name: 'CPU', unit: 'cores' },
  memoryMb: { name: 'Memory', unit: 'MB' },
  diskMb: { name: 'Disk', unit: 'MB' },
  vnodes: { name: 'Vnodes', unit: '' },
  vclusters: { name: 'Vclusters', unit: '' },
  images: { name: 'Images', unit: '' },
  portMappings: { name: 'Port mappings', unit: '' },
}

/** The API's rule for user, group, vcluster and image names. */
export const namePattern = /^[A-Za-z_][A-Za-z0-9_-]{0,31}$/
export const nameRule = 'a letter or _, then up to 31 letters, digits, _ or -'
export const passwordCharsMin = 8
