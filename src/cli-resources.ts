// The CLI commands for users, groups, hosts, vclusters, vnodes and images.
// Each one is a call to the node's HTTP API (/api/v1/...) over the root-only
// control socket, where the caller acts as the cluster admin, or, with
// --user U, as user U: the CLI and the portal use the same API, so they
// enforce the same rules.

export interface ResourceOption {
  type: 'string' | 'boolean'
  value?: string
  help: string
}

export interface ResourceContext {
  /** Positional arguments after the command words (for `vnode exec`, the command after `--` too). */
  args: string[]
  text(name: string): string | undefined
  flag(name: string): boolean
  json: boolean
  api<T>(
    method: 'GET' | 'POST' | 'DELETE' | 'PATCH' | 'PUT',
    path: string,
    body?: unknown,
    options?: { timeoutMs?: number },
  ): Promise<T>
  out(text: string): void
  progress(text: string): void
  printJson(value: unknown): void
  /** Sends FILE (streamed, never held in memory) as the body of a request; the node's JSON answer and status. */
  streamUpload<T>(
    method: 'POST' | 'PUT',
    path: string,
    file: string,
    options: { contentType: string; idleTimeoutMs?: number },
  ): Promise<{ status: number; body: T }>
  /** Streams the answer of a GET into FILE, which is replaced only by a complete answer; the bytes written. */
  streamDownload(path: string, file: string, options?: { idleTimeoutMs?: number }): Promise<{ bytes: number }>
}

export interface ResourceSpec {
  name: string
  usage: string
  summary: string
  details: string
  args: string[]
  /** More positionals than `args` are allowed (the command of `vnode exec`). */
  restArgs?: boolean
  options: Record<string, ResourceOption>
  run(ctx: ResourceContext): Promise<number>
}

export class ResourceUsageError extends Error {
  readonly code = 'ERR_USAGE'
}

/** Exports and imports pause while the node tars, hashes or fetches the image: allow long silences. */
const IMAGE_STREAM_IDLE_MS = 30 * 60_000

const USER_OPTION: ResourceOption = {
  type: 'string',
  value: 'U',
  help: 'act for user U (admin only; default: the admin)',
}

const SIZE = /^([0-9]+(?:\.[0-9]+)?)\s*(m|mb|mib|g|gb|gib)?$/i

/** "512", "512M", "2G", "1.5GB" → megabytes; throws a sentence naming the flag. */
export function parseSizeMb(text: string, flag: string): number {
  const match = SIZE.exec(text.trim())
  if (match === null)
    throw new ResourceUsageError(
      `${flag} must be a size like 512, 512M or 2G (megabytes by default), got "${text}".`,
    )
  const unit = (match[2] ?? 'm').toLowerCase()
  const value = Number(match[1]) * (unit.startsWith('g') ? 1024 : 1)
  if (!Number.isSafeInteger(Math.round(value)) || value < 1)
    throw new ResourceUsageError(`${flag} must be at least 1 MB, got "${text}".`)
  return Math.round(value)
}

export function parseCount(text: string | undefined, flag: string, min = 1): number | undefined {
  if (text === undefined) return undefined
  if (!/^[0-9]+$/.test(text.trim()) || Number(text) < min)
    throw new ResourceUsageError(`${flag} must be a whole number of at least ${min}, got "${text}".`)
  return Number(text)
}

function path(...parts: string[]): string {
  return `/api/v1/${parts.map((part) => encodeURIComponent(part)).join('/')}`
}

/** Columns padded to their widest cell, two spaces apart, no trailing spaces (the CLI's one table format). */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  )
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column]!))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

function table(header: string[], rows: string[][]): string {
  return `${formatTable(header, rows)}\n`
}

// ----------------------------------------------------------------- shapes

interface VnodeView {
  index: number
  hostname: string
  host: string | null
  ip: string
  desired: string
  observed: string
  lastError: string
  pendingReason: string
  limits: { cpuCores: number; memoryMb: number; diskMb: number }
}

interface VclusterView {
  id: string
  owner: string
  name: string
  subnet: string
  gateway: string
  status: string
  image: string
  vnodes: VnodeView[]
}

interface ImageView {
  id: string
  name: string
  owner: string
  visibility: string
  description: string
  sizeBytes: number
  hosts: string[]
}

function unwrap<T>(body: unknown, key: string): T {
  if (body !== null && typeof body === 'object' && key in body) return (body as Record<string, T>)[key]!
  return body as T
}

function short(id: string | null): string {
  if (id === null) return '-'
  return id.length > 12 ? id.slice(-12) : id
}

export function formatVcluster(vc: VclusterView): string {
  const lines = [
    `Vcluster  ${vc.owner}/${vc.name} (id ${vc.id})`,
    `Status    ${vc.status}`,
    `Subnet    ${vc.subnet} (gateway ${vc.gateway})`,
    `Image     ${vc.image.slice(0, 12)}`,
    '',
  ]
  const rows = vc.vnodes.map((vnode) => [
    String(vnode.index),
    vnode.hostname,
    vnode.ip,
    vnode.host === null ? `pending: ${vnode.pendingReason}` : short(vnode.host),
    vnode.desired,
    vnode.observed === 'error' ? `error: ${vnode.lastError}` : vnode.observed,
    `${vnode.limits.cpuCores} cpu, ${vnode.limits.memoryMb} MB, ${vnode.limits.diskMb} MB disk`,
  ])
  return `${lines.join('\n')}${table(['INDEX', 'HOSTNAME', 'IP', 'HOST', 'WANTED', 'STATE', 'LIMITS'], rows)}`
}

/** How far a vcluster is from running everything it should; done when every live vnode runs. */
export function vclusterProgress(vc: VclusterView): {
  running: number
  total: number
  errors: string[]
  pending: string[]
} {
  const live = vc.vnodes.filter((vnode) => vnode.desired !== 'deleted')
  return {
    running: live.filter((vnode) => vnode.observed === 'running').length,
    total: live.length,
    errors: live
      .filter((vnode) => vnode.observed === 'error')
      .map((vnode) => `vnode ${vnode.index}: ${vnode.lastError}`),
    pending: live
      .filter((vnode) => vnode.host === null)
      .map((vnode) => `vnode ${vnode.index}: ${vnode.pendingReason}`),
  }
}

const WAIT_POLL_MS = 300
/** How long one waiting request may hold before the CLI prints progress and asks again. */
const WAIT_SLICE_MS = 2_000

/** Polls the vcluster until its vnodes reach `want`; prints progress; exit code 0 when they do. */
async function waitFor(
  ctx: ResourceContext,
  name: string,
  want: 'running' | 'stopped' | 'gone',
  timeoutMs: number,
  goneId = '',
): Promise<number> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (true) {
    let vc: VclusterView | null = null
    if (want !== 'gone') {
      try {
        // The node answers as soon as every vnode is there (or one failed), else after a few seconds.
        vc = unwrap<VclusterView>(
          await ctx.api('GET', `${path('vclusters', name)}?wait=${want}&waitMs=${WAIT_SLICE_MS}`, undefined, {
            timeoutMs: WAIT_SLICE_MS + 30_000,
          }),
          'vcluster',
        )
      } catch (error) {
        if ((error as { code?: string }).code !== 'ERR_VCLUSTER_NOT_FOUND') throw error
      }
    }
    if (want === 'gone') {
      // A vcluster being deleted no longer answers to its name (the name is free again): follow its id.
      const list = unwrap<VclusterView[]>(await ctx.api('GET', path('vclusters')), 'vclusters')
      const left = list.find((candidate) => candidate.id === goneId)?.vnodes.length ?? 0
      if (left === 0) return 0
      const line = `deleting ${name}: ${left} vnode${left === 1 ? '' : 's'} still being removed`
      if (line !== last && !ctx.json) ctx.progress(line)
      last = line
    } else {
      if (vc === null) throw new ResourceUsageError(`The vcluster ${name} disappeared while waiting for it.`)
      const p = vclusterProgress(vc)
      const done =
        want === 'running'
          ? p.running
          : vc.vnodes.filter((vnode) => vnode.desired !== 'deleted' && vnode.observed === 'stopped').length
      const line = `${name}: ${done}/${p.total} vnodes ${want}${p.pending.length > 0 ? ` (waiting for room: ${p.pending.join('; ')})` : ''}`
      if (line !== last && !ctx.json) ctx.progress(line)
      last = line
      if (p.errors.length > 0 && want === 'running') {
        if (ctx.json) ctx.printJson({ error: { code: 'ERR_VNODE_FAILED', message: p.errors.join('; ') } })
        else ctx.progress(`docklet: ${name} has failed vnodes: ${p.errors.join('; ')}`)
        return 1
      }
      if (want === 'running' && p.pending.length > 0 && p.running + p.pending.length === p.total) {
        const message = `${name} cannot start all its vnodes: no host has room for ${p.pending.join('; ')}. It stays pending and starts when room frees up (delete or stop something, raise a host's capacity, or undrain a host).`
        if (ctx.json) ctx.printJson({ error: { code: 'ERR_NO_ROOM', message } })
        else ctx.progress(`docklet: ${message}`)
        return 1
      }
      if (done === p.total) {
        if (ctx.json) ctx.printJson(vc)
        else ctx.out(formatVcluster(vc))
        return 0
      }
    }
    if (Date.now() > deadline) {
      const message = `Gave up waiting after ${Math.round(timeoutMs / 1000)} s: ${last}. The vcluster keeps converging; check it with \`docklet vcluster show ${name}\`.`
      if (ctx.json) ctx.printJson({ error: { code: 'ERR_TIMEOUT', message } })
      else ctx.progress(`docklet: ${message}`)
      return 1
    }
    if (want === 'gone') await new Promise((done) => setTimeout(done, WAIT_POLL_MS))
  }
}

function waitTimeoutMs(ctx: ResourceContext): number {
  const seconds = parseCount(ctx.text('timeout'), '--timeout') ?? 300
  return seconds * 1000
}

const WAIT_OPTIONS: Record<string, ResourceOption> = {
  'no-wait': { type: 'boolean', help: 'return once the change is committed, without waiting for the vnodes' },
  timeout: { type: 'string', value: 'SECONDS', help: 'how long to wait for the vnodes (default 300)' },
}

function quotaFrom(ctx: ResourceContext): Record<string, number> {
  const quota: Record<string, number> = {}
  const cpu = parseCount(ctx.text('cpu'), '--cpu')
  if (cpu !== undefined) quota.cpuCores = cpu
  if (ctx.text('memory') !== undefined) quota.memoryMb = parseSizeMb(ctx.text('memory')!, '--memory')
  if (ctx.text('disk') !== undefined) quota.diskMb = parseSizeMb(ctx.text('disk')!, '--disk')
  for (const [flag, key] of [
    ['vnodes', 'vnodes'],
    ['vclusters', 'vclusters'],
    ['images', 'images'],
    ['ports', 'portMappings'],
  ] as const) {
    const value = parseCount(ctx.text(flag), `--${flag}`, 0)
    if (value !== undefined) quota[key] = value
  }
  return quota
}

const QUOTA_OPTIONS: Record<string, ResourceOption> = {
  cpu: { type: 'string', value: 'N', help: 'cpu cores in all of a user’s vnodes' },
  memory: { type: 'string', value: 'SIZE', help: 'memory, e.g. 2000 or 4G' },
  disk: { type: 'string', value: 'SIZE', help: 'disk, e.g. 2000 or 10G' },
  vnodes: { type: 'string', value: 'N', help: 'vnodes' },
  vclusters: { type: 'string', value: 'N', help: 'vclusters' },
  images: { type: 'string', value: 'N', help: 'saved images' },
  ports: { type: 'string', value: 'N', help: 'port mappings' },
}

async function simple(
  ctx: ResourceContext,
  method: 'POST' | 'DELETE' | 'PATCH' | 'PUT',
  url: string,
  body: unknown,
  done: string,
): Promise<number> {
  const answer = await ctx.api(method, url, body)
  if (ctx.json) ctx.printJson(answer)
  else ctx.out(done)
  return 0
}

// ----------------------------------------------------------------- commands

export const RESOURCE_COMMANDS: ResourceSpec[] = [
  {
    name: 'admin user add',
    usage: 'docklet admin user add NAME [--password P] [--role user|admin] [--group G] [--json]',
    summary: 'Create a user (prints a generated password unless --password is given)',
    details: 'The user gets the quota of their group (default: "user").',
    args: ['NAME'],
    options: {
      password: { type: 'string', value: 'P', help: 'the password (default: generated and printed once)' },
      role: { type: 'string', value: 'ROLE', help: 'user (default) or admin' },
      group: { type: 'string', value: 'G', help: 'the group whose quota applies' },
    },
    async run(ctx) {
      const generated = ctx.text('password') === undefined
      // node:crypto is loaded here only: every other command would pay for loading it.
      const password =
        ctx.text('password') ?? process.getBuiltinModule('node:crypto').randomBytes(12).toString('base64url')
      const body: Record<string, string> = { name: ctx.args[0]!, password }
      if (ctx.text('role') !== undefined) body.role = ctx.text('role')!
      if (ctx.text('group') !== undefined) body.group = ctx.text('group')!
      const answer = await ctx.api('POST', path('users'), body)
      if (ctx.json) ctx.printJson({ ...(answer as object), ...(generated ? { password } : {}) })
      else ctx.out(`Created user ${ctx.args[0]}.${generated ? `\nPassword (shown once): ${password}` : ''}`)
      return 0
    },
  },
  {
    name: 'admin user list',
    usage: 'docklet admin user list [--json]',
    summary: 'List users with their role, group and status',
    details: '',
    args: [],
    options: {},
    async run(ctx) {
      const users = unwrap<Array<Record<string, unknown>>>(await ctx.api('GET', path('users')), 'users')
      if (ctx.json) ctx.printJson(users)
      else
        ctx.out(
          table(
            ['NAME', 'ROLE', 'GROUP', 'STATUS'],
            users.map((u) => [String(u.name), String(u.role), String(u.group), String(u.status)]),
          ),
        )
      return 0
    },
  },
  {
    name: 'admin user modify',
    usage:
      'docklet admin user modify NAME [--role user|admin] [--group G] [--status normal|disabled] [--password P] [--json]',
    summary: "Change a user's role, group, status or password",
    details: 'A new password ends the sessions the user had.',
    args: ['NAME'],
    options: {
      role: { type: 'string', value: 'ROLE', help: 'user or admin' },
      group: { type: 'string', value: 'G', help: 'the group whose quota applies' },
      status: { type: 'string', value: 'S', help: 'normal or disabled (approves a pending user)' },
      password: { type: 'string', value: 'P', help: 'a new password' },
    },
    async run(ctx) {
      const body: Record<string, string> = {}
      for (const key of ['role', 'group', 'status', 'password'])
        if (ctx.text(key) !== undefined) body[key] = ctx.text(key)!
      if (Object.keys(body).length === 0)
        throw new ResourceUsageError('Say what to change: --role, --group, --status or --password.')
      return simple(ctx, 'PATCH', path('users', ctx.args[0]!), body, `Updated user ${ctx.args[0]}.`)
    },
  },
  {
    name: 'admin user disable',
    usage: 'docklet admin user disable NAME [--json]',
    summary: 'Disable a user: no more logins or new vclusters',
    details: '',
    args: ['NAME'],
    options: {},
    run: (ctx) =>
      simple(ctx, 'POST', path('users', ctx.args[0]!, 'disable'), {}, `Disabled user ${ctx.args[0]}.`),
  },
  {
    name: 'admin group add',
    usage: 'docklet admin group add NAME [--cpu N] [--memory SIZE] [--disk SIZE] [--vnodes N] … [--json]',
    summary: 'Create a group with a quota (unset limits take the defaults)',
    details: 'Defaults: cpu 4, memory 2000 MB, disk 2000 MB, vnodes 8, vclusters 4, images 10, ports 8.',
    args: ['NAME'],
    options: QUOTA_OPTIONS,
    run: (ctx) =>
      simple(
        ctx,
        'POST',
        path('groups'),
        { name: ctx.args[0]!, quota: quotaFrom(ctx) },
        `Created group ${ctx.args[0]}.`,
      ),
  },
  {
    name: 'admin group list',
    usage: 'docklet admin group list [--json]',
    summary: 'List groups and their quotas',
    details: '',
    args: [],
    options: {},
    async run(ctx) {
      const groups = unwrap<Array<{ name: string; quota: Record<string, number> }>>(
        await ctx.api('GET', path('groups')),
        'groups',
      )
      if (ctx.json) ctx.printJson(groups)
      else
        ctx.out(
          table(
            ['NAME', 'CPU', 'MEMORY MB', 'DISK MB', 'VNODES', 'VCLUSTERS', 'IMAGES', 'PORTS'],
            groups.map((g) => [
              g.name,
              ...['cpuCores', 'memoryMb', 'diskMb', 'vnodes', 'vclusters', 'images', 'portMappings'].map(
                (k) => String(g.quota[k] ?? '-'),
              ),
            ]),
          ),
        )
      return 0
    },
  },
  {
    name: 'admin group quota',
    usage: 'docklet admin group quota NAME [--cpu N] [--memory SIZE] [--disk SIZE] [--vnodes N] … [--json]',
    summary: "Change a group's quota",
    details: 'Only the limits given change.',
    args: ['NAME'],
    options: QUOTA_OPTIONS,
    async run(ctx) {
      const quota = quotaFrom(ctx)
      if (Object.keys(quota).length === 0)
        throw new ResourceUsageError('Say which limits to change, e.g. --cpu 8 --memory 8G.')
      return simple(
        ctx,
        'PATCH',
        path('groups', ctx.args[0]!),
        { quota },
        `Updated the quota of ${ctx.args[0]}.`,
      )
    },
  },
  {
    name: 'admin host list',
    usage: 'docklet admin host list [--json]',
    summary: 'List hosts: capacity, use, drained',
    details: '',
    args: [],
    options: {},
    async run(ctx) {
      const hosts = unwrap<Array<Record<string, unknown>>>(await ctx.api('GET', path('hosts')), 'hosts')
      if (ctx.json) ctx.printJson(hosts)
      else
        ctx.out(
          table(
            ['ID', 'NAME', 'CAPACITY', 'VNODES', 'DRAINED'],
            hosts.map((h) => {
              const c = h.capacity as { cpuCores: number; memoryMb: number; diskMb: number } | null
              return [
                short(String(h.id)),
                String(h.name ?? ''),
                c === null ? 'unreported' : `${c.cpuCores} cpu, ${c.memoryMb} MB, ${c.diskMb} MB disk`,
                String(h.vnodes ?? '-'),
                h.drained === true ? 'yes' : 'no',
              ]
            }),
          ),
        )
      return 0
    },
  },
  {
    name: 'admin host drain',
    usage: 'docklet admin host drain ID [--evacuate] [--json]',
    summary: 'Stop placing vnodes on a host (and with --evacuate, move its vnodes away)',
    details: 'ID is a member id from `docklet status` (the last 12 characters are enough).',
    args: ['ID'],
    options: {
      evacuate: { type: 'boolean', help: "move the host's vnodes to other hosts, keeping their IPs" },
    },
    run: (ctx) =>
      simple(
        ctx,
        'POST',
        path('hosts', ctx.args[0]!, 'drain'),
        { evacuate: ctx.flag('evacuate') },
        `Drained host ${ctx.args[0]}.`,
      ),
  },
  {
    name: 'admin host undrain',
    usage: 'docklet admin host undrain ID [--json]',
    summary: 'Let a drained host take vnodes again',
    details: '',
    args: ['ID'],
    options: {},
    run: (ctx) =>
      simple(
        ctx,
        'POST',
        path('hosts', ctx.args[0]!, 'undrain'),
        {},
        `Host ${ctx.args[0]} takes vnodes again.`,
      ),
  },
  {
    name: 'vcluster create',
    usage:
      'docklet vcluster create NAME --nodes N --image IMG [--cpu N] [--memory SIZE] [--disk SIZE] [--user U] [--no-wait] [--json]',
    summary: 'Create a vcluster and wait until its vnodes run',
    details:
      'IMG is an image name (yours or a public one) or its id. Limits are per vnode (defaults: 1 cpu, 512 MB, 1024 MB disk). ' +
      'Shows progress while the vnodes are placed, created and started.',
    args: ['NAME'],
    options: {
      nodes: { type: 'string', value: 'N', help: 'number of vnodes (default 1)' },
      image: { type: 'string', value: 'IMG', help: 'image name or id (required)' },
      cpu: { type: 'string', value: 'N', help: 'cpu cores per vnode' },
      memory: { type: 'string', value: 'SIZE', help: 'memory per vnode, e.g. 512 or 1G' },
      disk: { type: 'string', value: 'SIZE', help: 'disk per vnode, e.g. 1024 or 2G' },
      user: USER_OPTION,
      ...WAIT_OPTIONS,
    },
    async run(ctx) {
      const image = ctx.text('image')
      if (image === undefined || image.trim() === '')
        throw new ResourceUsageError(
          '`docklet vcluster create` needs --image IMG (see `docklet image list`).',
        )
      const body: Record<string, unknown> = {
        name: ctx.args[0]!,
        nodes: parseCount(ctx.text('nodes'), '--nodes') ?? 1,
        image: image.trim(),
      }
      const cpu = parseCount(ctx.text('cpu'), '--cpu')
      if (cpu !== undefined) body.cpuCores = cpu
      if (ctx.text('memory') !== undefined) body.memoryMb = parseSizeMb(ctx.text('memory')!, '--memory')
      if (ctx.text('disk') !== undefined) body.diskMb = parseSizeMb(ctx.text('disk')!, '--disk')
      const created = unwrap<VclusterView>(await ctx.api('POST', path('vclusters'), body), 'vcluster')
      if (ctx.flag('no-wait')) {
        if (ctx.json) ctx.printJson(created)
        else ctx.out(formatVcluster(created))
        return 0
      }
      if (!ctx.json) ctx.progress(`Created ${created.owner}/${created.name}; starting its vnodes…`)
      return waitFor(ctx, ctx.args[0]!, 'running', waitTimeoutMs(ctx))
    },
  },
  {
    name: 'vcluster list',
    usage: 'docklet vcluster list [--user U | --all] [--json]',
    summary: 'List vclusters',
    details: '',
    args: [],
    options: { user: USER_OPTION, all: { type: 'boolean', help: "every user's vclusters (admin)" } },
    async run(ctx) {
      const query = ctx.flag('all') ? '?all=true' : ''
      const list = unwrap<VclusterView[]>(await ctx.api('GET', `${path('vclusters')}${query}`), 'vclusters')
      if (ctx.json) ctx.printJson(list)
      else if (list.length === 0) ctx.out('No vclusters. Create one with `docklet vcluster create`.')
      else
        ctx.out(
          table(
            ['OWNER', 'NAME', 'STATUS', 'VNODES', 'SUBNET'],
            list.map((vc) => {
              const p = vclusterProgress(vc)
              return [vc.owner, vc.name, vc.status, `${p.running}/${p.total} running`, vc.subnet]
            }),
          ),
        )
      return 0
    },
  },
  {
    name: 'vcluster show',
    usage: 'docklet vcluster show NAME [--user U] [--json]',
    summary: 'Show a vcluster and its vnodes',
    details: '',
    args: ['NAME'],
    options: { user: USER_OPTION },
    async run(ctx) {
      const vc = unwrap<VclusterView>(await ctx.api('GET', path('vclusters', ctx.args[0]!)), 'vcluster')
      if (ctx.json) ctx.printJson(vc)
      else ctx.out(formatVcluster(vc))
      return 0
    },
  },
  {
    name: 'vcluster scale-out',
    usage: 'docklet vcluster scale-out NAME [--nodes N] [--user U] [--no-wait] [--json]',
    summary: 'Add vnodes to a vcluster',
    details: 'New vnodes get the vcluster’s image and limits.',
    args: ['NAME'],
    options: {
      nodes: { type: 'string', value: 'N', help: 'how many vnodes to add (default 1)' },
      user: USER_OPTION,
      ...WAIT_OPTIONS,
    },
    async run(ctx) {
      const n = parseCount(ctx.text('nodes'), '--nodes') ?? 1
      const answer = await ctx.api('POST', path('vclusters', ctx.args[0]!, 'scale-out'), { n })
      if (ctx.flag('no-wait')) {
        if (ctx.json) ctx.printJson(answer)
        else ctx.out(`Adding ${n} vnode${n === 1 ? '' : 's'} to ${ctx.args[0]}.`)
        return 0
      }
      return waitFor(ctx, ctx.args[0]!, 'running', waitTimeoutMs(ctx))
    },
  },
  {
    name: 'vcluster scale-in',
    usage: 'docklet vcluster scale-in NAME --index I [--user U] [--json]',
    summary: 'Remove one vnode from a vcluster',
    details: 'Its container is destroyed and its address freed.',
    args: ['NAME'],
    options: {
      index: { type: 'string', value: 'I', help: 'the vnode to remove (required)' },
      user: USER_OPTION,
    },
    async run(ctx) {
      const index = parseCount(ctx.text('index'), '--index', 0)
      if (index === undefined) throw new ResourceUsageError('`docklet vcluster scale-in` needs --index I.')
      return simple(
        ctx,
        'POST',
        path('vclusters', ctx.args[0]!, 'scale-in'),
        { index },
        `Removing vnode ${index} of ${ctx.args[0]}.`,
      )
    },
  },
  {
    name: 'vcluster start',
    usage: 'docklet vcluster start NAME [--user U] [--no-wait] [--json]',
    summary: "Start a vcluster's vnodes",
    details: '',
    args: ['NAME'],
    options: { user: USER_OPTION, ...WAIT_OPTIONS },
    async run(ctx) {
      const answer = await ctx.api('POST', path('vclusters', ctx.args[0]!, 'start'), {})
      if (ctx.flag('no-wait')) {
        if (ctx.json) ctx.printJson(answer)
        else ctx.out(`Starting ${ctx.args[0]}.`)
        return 0
      }
      return waitFor(ctx, ctx.args[0]!, 'running', waitTimeoutMs(ctx))
    },
  },
  {
    name: 'vcluster stop',
    usage: 'docklet vcluster stop NAME [--user U] [--no-wait] [--json]',
    summary: "Stop a vcluster's vnodes (their files are kept)",
    details: '',
    args: ['NAME'],
    options: { user: USER_OPTION, ...WAIT_OPTIONS },
    async run(ctx) {
      const answer = await ctx.api('POST', path('vclusters', ctx.args[0]!, 'stop'), {})
      if (ctx.flag('no-wait')) {
        if (ctx.json) ctx.printJson(answer)
        else ctx.out(`Stopping ${ctx.args[0]}.`)
        return 0
      }
      return waitFor(ctx, ctx.args[0]!, 'stopped', waitTimeoutMs(ctx))
    },
  },
  {
    name: 'vcluster delete',
    usage: 'docklet vcluster delete NAME [--user U] [--no-wait] [--json]',
    summary: 'Delete a vcluster and everything its vnodes held',
    details: 'Save a vnode as an image first if you want to keep its files.',
    args: ['NAME'],
    options: { user: USER_OPTION, ...WAIT_OPTIONS },
    async run(ctx) {
      const before = unwrap<VclusterView>(await ctx.api('GET', path('vclusters', ctx.args[0]!)), 'vcluster')
      const answer = await ctx.api('DELETE', path('vclusters', ctx.args[0]!))
      if (!ctx.flag('no-wait')) {
        const code = await waitFor(ctx, ctx.args[0]!, 'gone', waitTimeoutMs(ctx), before.id)
        if (code !== 0) return code
      }
      if (ctx.json) ctx.printJson(answer)
      else ctx.out(`Deleted ${ctx.args[0]}.`)
      return 0
    },
  },
  {
    name: 'vnode exec',
    usage: 'docklet vnode exec VCLUSTER INDEX [--user U] [--timeout SECONDS] -- CMD [ARG...]',
    summary: 'Run a command in a vnode; prints its output and exits with its exit code',
    details: 'Runs as root in the vnode, on whichever host holds it.',
    args: ['VCLUSTER', 'INDEX'],
    restArgs: true,
    options: {
      user: USER_OPTION,
      timeout: { type: 'string', value: 'SECONDS', help: 'kill the command after this long (default 60)' },
    },
    async run(ctx) {
      const index = parseCount(ctx.args[1], 'INDEX', 0)!
      const argv = ctx.args.slice(2)
      if (argv.length === 0)
        throw new ResourceUsageError(
          'Give the command to run after `--`, e.g. `docklet vnode exec web 0 -- hostname`.',
        )
      const timeoutMs = (parseCount(ctx.text('timeout'), '--timeout') ?? 60) * 1000
      const result = await ctx.api<{ exitCode: number; stdout: string; stderr: string }>(
        'POST',
        path('vclusters', ctx.args[0]!, 'vnodes', String(index), 'exec'),
        { argv, timeoutMs },
        { timeoutMs: timeoutMs + 30_000 },
      )
      if (ctx.json) ctx.printJson(result)
      else {
        process.stdout.write(result.stdout)
        process.stderr.write(result.stderr)
      }
      return result.exitCode
    },
  },
  {
    name: 'image build',
    usage: 'docklet image build busybox|debian [--json]',
    summary: "Build one of docklet's own images on this host (admin)",
    details:
      'busybox takes seconds (from Debian’s busybox-static); debian runs debootstrap from this host’s apt sources ' +
      'and installs Python, openssh-server and Jupyter Notebook (minutes).',
    args: ['KIND'],
    options: {},
    async run(ctx) {
      const kind = ctx.args[0]!
      if (kind !== 'busybox' && kind !== 'debian')
        throw new ResourceUsageError(`Unknown image kind "${kind}": docklet builds busybox or debian.`)
      if (!ctx.json) ctx.progress(`Building the ${kind} image on this host…`)
      let finished = false
      const building = ctx
        .api<{ id: string }>('POST', path('images', 'build'), { kind }, { timeoutMs: 3_600_000 })
        .finally(() => {
          finished = true
        })
      // The build answers when it is done; meanwhile show the step it is at.
      let last = ''
      while (!finished && !ctx.json) {
        await Promise.race([building.catch(() => {}), new Promise((done) => setTimeout(done, 2_000))])
        if (finished) break
        const { builds } = await ctx
          .api<{ builds: Array<{ kind: string; step: string; startedAt: number }> }>(
            'GET',
            path('images', 'builds'),
          )
          .catch(() => ({ builds: [] as Array<{ kind: string; step: string; startedAt: number }> }))
        const mine = builds.find((build) => build.kind === kind)
        if (mine !== undefined && mine.step !== last) {
          last = mine.step
          ctx.progress(`  ${Math.round((Date.now() - mine.startedAt) / 1000)} s: ${mine.step}`)
        }
      }
      const answer = await building
      if (ctx.json) ctx.printJson(answer)
      else ctx.out(`Built image ${kind} (${answer.id.slice(0, 12)}).`)
      return 0
    },
  },
  {
    name: 'image list',
    usage: 'docklet image list [--user U] [--json]',
    summary: 'List your images and the public ones',
    details: '',
    args: [],
    options: { user: USER_OPTION },
    async run(ctx) {
      const images = unwrap<ImageView[]>(await ctx.api('GET', path('images')), 'images')
      if (ctx.json) ctx.printJson(images)
      else if (images.length === 0) ctx.out('No images. Build one with `docklet image build busybox`.')
      else
        ctx.out(
          table(
            ['ID', 'NAME', 'OWNER', 'VISIBILITY', 'SIZE', 'HOSTS', 'DESCRIPTION'],
            images.map((image) => [
              image.id.slice(0, 12),
              image.name,
              image.owner,
              image.visibility,
              `${(image.sizeBytes / (1024 * 1024)).toFixed(1)} MB`,
              String(image.hosts.length),
              image.description,
            ]),
          ),
        )
      return 0
    },
  },
  {
    name: 'image save',
    usage: 'docklet image save VCLUSTER INDEX NAME [--description TEXT] [--user U] [--json]',
    summary: 'Save a vnode as a private image',
    details: 'The image holds the vnode’s files on top of its own image.',
    args: ['VCLUSTER', 'INDEX', 'NAME'],
    options: {
      description: { type: 'string', value: 'TEXT', help: 'what the image holds' },
      user: USER_OPTION,
    },
    async run(ctx) {
      const index = parseCount(ctx.args[1], 'INDEX', 0)!
      if (!ctx.json) ctx.progress(`Saving vnode ${index} of ${ctx.args[0]} as ${ctx.args[2]}…`)
      const answer = await ctx.api<{ id: string }>(
        'POST',
        path('vclusters', ctx.args[0]!, 'vnodes', String(index), 'save'),
        { image: ctx.args[2]!, description: ctx.text('description') ?? '' },
        { timeoutMs: 1_800_000 },
      )
      if (ctx.json) ctx.printJson(answer)
      else ctx.out(`Saved image ${ctx.args[2]} (${answer.id.slice(0, 12)}).`)
      return 0
    },
  },
  {
    name: 'image export',
    usage: 'docklet image export IMAGE FILE [--user U] [--json]',
    summary: 'Write an image to a tar file',
    details:
      'IMAGE is a name or an id (yours; an admin may export any). The tar holds manifest.json and rootfs/ ' +
      'and is what `docklet image import` takes. Works on any host: one that lacks the image fetches it first.',
    args: ['IMAGE', 'FILE'],
    options: { user: USER_OPTION },
    async run(ctx) {
      const [image, file] = [ctx.args[0]!, ctx.args[1]!]
      if (!ctx.json) ctx.progress(`Exporting ${image} to ${file}…`)
      const { bytes } = await ctx.streamDownload(path('images', image, 'export'), file, {
        idleTimeoutMs: IMAGE_STREAM_IDLE_MS,
      })
      if (ctx.json) ctx.printJson({ ok: true, image, file, bytes })
      else ctx.out(`Exported ${image} to ${file} (${(bytes / (1024 * 1024)).toFixed(1)} MB).`)
      return 0
    },
  },
  {
    name: 'image import',
    usage: 'docklet image import FILE [--name N] [--description TEXT] [--public] [--json]',
    summary: 'Add an image from a tar made by `docklet image export` (admin)',
    details:
      'The image is stored on this host, accepted only when its files hash to the hash in its manifest, and ' +
      'becomes your image, private unless --public. When the cluster has the image already, nothing is added: ' +
      'this host holds it too from then on.',
    args: ['FILE'],
    options: {
      name: { type: 'string', value: 'N', help: 'the image name (default: the name in the tar)' },
      description: { type: 'string', value: 'TEXT', help: 'what the image holds' },
      public: { type: 'boolean', help: 'share the image with every user' },
    },
    async run(ctx) {
      const file = ctx.args[0]!
      const query = new URLSearchParams()
      if (ctx.text('name') !== undefined) query.set('name', ctx.text('name')!)
      if (ctx.text('description') !== undefined) query.set('description', ctx.text('description')!)
      if (ctx.flag('public')) query.set('public', 'true')
      const search = query.size === 0 ? '' : `?${query}`
      if (!ctx.json) ctx.progress(`Importing ${file} on this host…`)
      const { status, body } = await ctx.streamUpload<ImageView>(
        'POST',
        `${path('images', 'import')}${search}`,
        file,
        { contentType: 'application/x-tar', idleTimeoutMs: IMAGE_STREAM_IDLE_MS },
      )
      const registered = status === 201
      if (ctx.json) ctx.printJson({ ...body, registered })
      else if (registered) ctx.out(`Imported image ${body.name} (${body.id.slice(0, 12)}).`)
      else
        ctx.out(
          `The cluster has this image already, as ${body.owner}'s ${body.name} (${body.id.slice(0, 12)}); this host holds it now too.`,
        )
      return 0
    },
  },
  {
    name: 'image share',
    usage: 'docklet image share IMAGE [--user U] [--json]',
    summary: 'Make an image public',
    details: 'IMAGE is a name or an id.',
    args: ['IMAGE'],
    options: { user: USER_OPTION },
    run: (ctx) => simple(ctx, 'POST', path('images', ctx.args[0]!, 'share'), {}, `Shared ${ctx.args[0]}.`),
  },
  {
    name: 'image unshare',
    usage: 'docklet image unshare IMAGE [--user U] [--json]',
    summary: 'Make an image private again',
    details: '',
    args: ['IMAGE'],
    options: { user: USER_OPTION },
    run: (ctx) =>
      simple(ctx, 'POST', path('images', ctx.args[0]!, 'unshare'), {}, `Unshared ${ctx.args[0]}.`),
  },
  {
    name: 'image describe',
    usage: 'docklet image describe IMAGE TEXT [--user U] [--json]',
    summary: "Set an image's description",
    details: '',
    args: ['IMAGE', 'TEXT'],
    options: { user: USER_OPTION },
    run: (ctx) =>
      simple(
        ctx,
        'PATCH',
        path('images', ctx.args[0]!),
        { description: ctx.args[1]! },
        `Described ${ctx.args[0]}.`,
      ),
  },
  {
    name: 'image delete',
    usage: 'docklet image delete IMAGE [--user U] [--json]',
    summary: 'Delete an image no vnode uses',
    details: '',
    args: ['IMAGE'],
    options: { user: USER_OPTION },
    run: (ctx) => simple(ctx, 'DELETE', path('images', ctx.args[0]!), undefined, `Deleted ${ctx.args[0]}.`),
  },
]
