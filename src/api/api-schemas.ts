// JSON Schemas of what the API accepts and answers. Routes compose these;
// the OpenAPI document is generated from the routes, so these are also the
// published contract. Objects the API answers with are closed
// (additionalProperties: false) so nothing leaks from the state by accident
// (password hashes, private keys, the session key): the serializer writes
// only what a schema names.

import { namePattern } from '../state/account-state.ts'
import { quotaKeys } from '../state/quota.ts'

export type JsonSchema = Record<string, unknown>

/** Longest password accepted: argon2 cost grows with it. */
export const passwordCharsMax = 1024
export const passwordCharsMin = 8

export const nameSchema = {
  type: 'string',
  pattern: namePattern.source,
  description: 'A letter or _, then up to 31 letters, digits, _ or -.',
} as const

export const passwordSchema = {
  type: 'string',
  minLength: passwordCharsMin,
  maxLength: passwordCharsMax,
} as const

export const errorSchema = {
  type: 'object',
  description: 'Every refusal: a stable code and a sentence saying what failed and what to do.',
  required: ['error'],
  additionalProperties: false,
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      additionalProperties: false,
      properties: { code: { type: 'string' }, message: { type: 'string' } },
    },
  },
} as const

export function closedObject(
  properties: Record<string, JsonSchema>,
  options: { required?: string[]; description?: string } = {},
): JsonSchema {
  return {
    type: 'object',
    ...(options.description === undefined ? {} : { description: options.description }),
    required: options.required ?? Object.keys(properties),
    additionalProperties: false,
    properties,
  }
}

export const emptyObjectSchema = closedObject({})

const integer = { type: 'integer' } as const
const nonNegative = { type: 'integer', minimum: 0 } as const
const text = { type: 'string' } as const

export const quotaSchema = closedObject(Object.fromEntries(quotaKeys.map((key) => [key, nonNegative])))

export const partialQuotaSchema = closedObject(
  Object.fromEntries(quotaKeys.map((key) => [key, nonNegative])),
  {
    required: [],
  },
)

export const usageSchema = closedObject({
  cpuCores: nonNegative,
  memoryMb: nonNegative,
  diskMb: nonNegative,
  vnodes: nonNegative,
  vclusters: nonNegative,
  images: nonNegative,
  portMappings: nonNegative,
})

export const roleSchema = { type: 'string', enum: ['admin', 'user'] } as const
export const statusSchema = { type: 'string', enum: ['normal', 'disabled', 'pending'] } as const

export const userSchema = closedObject({
  name: text,
  role: roleSchema,
  group: text,
  status: statusSchema,
  createdAt: integer,
})

export const groupSchema = closedObject({
  name: text,
  quota: quotaSchema,
  members: nonNegative,
  createdAt: integer,
})

export const resourcesSchema = closedObject({
  cpuCores: nonNegative,
  memoryMb: nonNegative,
  diskMb: nonNegative,
})

export const vnodeSchema = closedObject({
  index: nonNegative,
  hostname: text,
  host: { type: ['string', 'null'] },
  ip: text,
  image: text,
  limits: resourcesSchema,
  desired: { type: 'string', enum: ['running', 'stopped', 'deleted'] },
  observed: { type: 'string', enum: ['none', 'running', 'stopped', 'error', 'deleted'] },
  observedAt: integer,
  lastError: text,
  pendingReason: text,
  movingTo: {
    type: ['string', 'null'],
    description: 'The host this vnode is moving to (evacuation), or null.',
  },
})

export const vclusterSchema = closedObject({
  id: text,
  name: text,
  owner: text,
  status: { type: 'string', enum: ['pending', 'running', 'stopped', 'error', 'deleting'] },
  desired: { type: 'string', enum: ['running', 'stopped'] },
  subnet: text,
  gateway: text,
  vni: integer,
  image: text,
  limits: resourcesSchema,
  createdAt: integer,
  startedAt: integer,
  stoppedAt: integer,
  vnodes: { type: 'array', items: vnodeSchema },
})

export const imageSchema = closedObject({
  id: text,
  name: text,
  owner: text,
  visibility: { type: 'string', enum: ['private', 'public'] },
  description: text,
  sizeBytes: nonNegative,
  createdAt: integer,
  hosts: { type: 'array', items: text },
})

export const portMappingSchema = closedObject({
  publicPort: integer,
  vcluster: text,
  index: nonNegative,
  port: integer,
  protocol: { type: 'string', enum: ['tcp'] },
  createdAt: integer,
})

export const hostSchema = closedObject({
  id: text,
  name: text,
  address: text,
  online: { type: 'boolean' },
  leaving: { type: 'boolean' },
  drained: { type: 'boolean' },
  drainedAt: integer,
  capacity: { anyOf: [resourcesSchema, { type: 'null' }] },
  capacityAt: integer,
  used: resourcesSchema,
  vnodes: nonNegative,
  unavailable: { type: ['string', 'null'], description: 'Why no new vnode is placed here, or null.' },
})

export const sessionSchema = closedObject(
  {
    name: text,
    role: roleSchema,
    group: text,
    status: statusSchema,
    quota: quotaSchema,
    usage: usageSchema,
    csrfToken: { type: 'string', description: 'Send it back in the X-CSRF-Token header on every write.' },
    expiresAt: { type: 'integer', description: 'When the session ends (ms since the epoch).' },
  },
  { required: ['name', 'role', 'group', 'status', 'quota', 'usage'] },
)

export const membersSchema = {
  type: 'object',
  description: 'The Raft members as the leader sees them (or this node, when no leader answers).',
  required: ['cluster_id', 'leader', 'members'],
  additionalProperties: true,
  properties: {
    cluster_id: text,
    leader: { anyOf: [closedObject({ id: text, address: text }), { type: 'null' }] },
    term: integer,
    members: { type: 'array', items: { type: 'object', additionalProperties: true } },
  },
} as const
