// The `docklet` command-line program. Parsing (parseCommandLine) and the
// human output (format*) are pure functions, so they are unit-tested without
// a node; main() runs a parsed command: it creates or joins a node, runs it
// (in this process, or detached), or talks to the local node over its
// root-only control socket.
//
// The static imports below need nothing newer than Node 18: the version check
// runs before anything that needs Node 22+ (libp2p, the node itself) is
// imported, which is done with dynamic import().

import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { formatTable, RESOURCE_COMMANDS, ResourceUsageError } from './cli-resources.ts'

// node:fs and node:util through process.getBuiltinModule, not `import`: an ES
// import of a builtin evaluates all of its lazy exports (fs.promises, util's
// TextDecoder and diff), CPU that every short CLI call would pay.
const { closeSync, existsSync, openSync, readFileSync, readSync, realpathSync, statSync } =
  process.getBuiltinModule('node:fs')
const { parseArgs } = process.getBuiltinModule('node:util')

export { formatTable }

import type { NodeConfig } from './config.ts'
import { DEFAULT_DATA_DIR } from './config.ts'
import { ControlError, callControl, callControlStream } from './control/control-client.ts'
import { type DataDirPaths, dataDirPaths, readNodeRecord } from './node/data-dir.ts'
import type { ClusterStatus, MemberStatus } from './node/docklet-node.ts'
import type { RecoverReport } from './node/recover.ts'

// ------------------------------------------------------------------ limits

/** How long --detach waits for a new node to answer on its socket. */
export const START_TIMEOUT_MS = 30_000
/** How long `leave` waits for the node to stop after the leave is committed. */
export const LEAVE_STOP_TIMEOUT_MS = 30_000
/** Join tokens live at most this long: a leaked token should not stay useful for months. */
export const TOKEN_TTL_MAX_MS = 30 * 24 * 3_600_000
/** Lines of docklet.log shown when a detached node dies while starting. */
export const LOG_TAIL_LINES_MAX = 30
const LOG_TAIL_BYTES_MAX = 16 * 1024
const POLL_INTERVAL_MS = 200
const PROGRESS_INTERVAL_MS = 5_000
const CONTROL_TIMEOUT_MS = 60_000
const NODE_MAJOR_MIN = 22

// ------------------------------------------------------------------ errors

/** The command line is wrong: exit code 2, with the usage that would have been right. */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE'
  /** The usage line(s) of the command the user meant, or a pointer to --help. */
  readonly hint: string
  constructor(message: string, hint: string) {
    super(message)
    this.name = 'UsageError'
    this.hint = hint
  }
}

/** An operation the CLI itself refuses or gives up on. */
export class CliError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CliError'
    this.code = code
  }
}

// ------------------------------------------------------------------ commands

/** Settings init/join record for the node; start reuses them. */
export type NodeFlags = Partial<Pick<NodeConfig, 'listen' | 'advertise' | 'portal'>>

interface Common {
  dataDir: string
  json: boolean
}

export type CliCommand =
  | { kind: 'help'; topic: string | null; json: boolean }
  | { kind: 'version'; json: boolean }
  | (Common & { kind: 'init'; node: NodeFlags; detach: boolean; noStart: boolean })
  | (Common & { kind: 'start'; detach: boolean })
  | (Common & { kind: 'join'; peer: string; token: string; node: NodeFlags; detach: boolean })
  | (Common & { kind: 'status' })
  | (Common & { kind: 'token-create'; ttl: string; ttlMs: number })
  | (Common & { kind: 'token-list' })
  | (Common & { kind: 'token-revoke'; id: string })
  | (Common & { kind: 'leave' })
  | (Common & { kind: 'member-remove'; id: string; force: boolean })
  | (Common & { kind: 'recover' })
  | (Common & {
      kind: 'resource'
      name: string
      args: string[]
      values: Record<string, string | boolean | undefined>
    })

interface OptionSpec {
  type: 'string' | 'boolean'
  short?: string
  /** Placeholder for the value in help, e.g. ADDR. */
  value?: string
  help: string
}

interface CommandSpec {
  /** Words after `docklet`, e.g. 'token create'. */
  name: string
  kind: Exclude<CliCommand['kind'], 'help' | 'version'>
  usage: string
  summary: string
  /** Further paragraphs for `docklet <cmd> --help`. */
  details: string
  /** Required positional arguments, in order. */
  args: string[]
  /** Further positionals are allowed (the command of `vnode exec`). */
  restArgs?: boolean
  options: Record<string, OptionSpec>
}

const COMMON_OPTIONS: Record<string, OptionSpec> = {
  'data-dir': { type: 'string', value: 'D', help: `the node's data directory (default ${DEFAULT_DATA_DIR})` },
  json: { type: 'boolean', help: 'machine-readable output; errors become {"error":{"code","message"}}' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
}

const NODE_OPTIONS: Record<string, OptionSpec> = {
  listen: {
    type: 'string',
    value: 'ADDR',
    help: 'libp2p listen address, HOST:PORT or a multiaddr (default 0.0.0.0:7946)',
  },
  advertise: {
    type: 'string',
    value: 'ADDR',
    help: 'the address other hosts dial to reach this one (default: the listen address)',
  },
  portal: {
    type: 'string',
    value: 'ADDR',
    help: "portal/API address, HOST:PORT ('' for none; default 0.0.0.0:8080)",
  },
  detach: {
    type: 'boolean',
    help: 'run the node in the background; return once it answers (log: <data-dir>/docklet.log)',
  },
}

const COMMANDS: CommandSpec[] = [
  {
    name: 'init',
    kind: 'init',
    usage:
      'docklet init [--data-dir D] [--listen ADDR] [--advertise ADDR] [--portal ADDR] [--detach | --no-start] [--json]',
    summary: 'Create a new one-node cluster on this host and run its node',
    details:
      'Creates the node identity and the admin account with a generated password, printed once and saved ' +
      'root-only in <data-dir>/admin-password, then runs the node in the foreground (stop it with SIGTERM or ' +
      'Ctrl-C) or, with --detach, in the background.',
    args: [],
    options: {
      ...NODE_OPTIONS,
      'no-start': {
        type: 'boolean',
        help: 'only initialize the data dir; start the node later (docklet start, systemd)',
      },
    },
  },
  {
    name: 'start',
    kind: 'start',
    usage: 'docklet start [--data-dir D] [--detach] [--json]',
    summary: "Run this host's node again, resuming from disk",
    details: 'Use it after a stop or a reboot; the systemd unit runs `docklet start`.',
    args: [],
    options: { detach: NODE_OPTIONS.detach! },
  },
  {
    name: 'join',
    kind: 'join',
    usage:
      'docklet join <peer-address> --token T [--data-dir D] [--listen ADDR] [--advertise ADDR] [--portal ADDR] [--detach] [--json]',
    summary: 'Join this host to a cluster, then run its node',
    details:
      '<peer-address> is a member of the cluster, HOST:PORT or a multiaddr. The token comes from ' +
      '`docklet token create` on a member; the peer must prove one of the identities the token pins. ' +
      'The host enters as a learner, catches up, and is promoted automatically.',
    args: ['peer-address'],
    options: { ...NODE_OPTIONS, token: { type: 'string', value: 'T', help: 'join token (required)' } },
  },
  {
    name: 'status',
    kind: 'status',
    usage: 'docklet status [--data-dir D] [--json]',
    summary: 'Show the cluster: id, leader, term, commit index, members',
    details: 'Members are as the leader sees them when it answers, else as this host last knew them.',
    args: [],
    options: {},
  },
  {
    name: 'token create',
    kind: 'token-create',
    usage: 'docklet token create [--ttl 3h] [--data-dir D] [--json]',
    summary: 'Create a single-use join token',
    details: 'The token pins the identities of the current members and expires after --ttl.',
    args: [],
    options: {
      ttl: {
        type: 'string',
        value: 'DURATION',
        help: 'how long the token is valid: 90s, 30m, 3h, 7d (default 3h, at most 30d)',
      },
    },
  },
  {
    name: 'token list',
    kind: 'token-list',
    usage: 'docklet token list [--data-dir D] [--json]',
    summary: 'List join tokens (valid, used, expired, revoked)',
    details: '',
    args: [],
    options: {},
  },
  {
    name: 'token revoke',
    kind: 'token-revoke',
    usage: 'docklet token revoke ID [--data-dir D] [--json]',
    summary: 'Revoke a join token',
    details: 'ID is the token id shown by `docklet token list`.',
    args: ['ID'],
    options: {},
  },
  {
    name: 'leave',
    kind: 'leave',
    usage: 'docklet leave [--data-dir D] [--json]',
    summary: 'Take this host out of its cluster and stop its node',
    details:
      'Hands leadership over if this host holds it, leaves the voter set, is removed, and stops. ' +
      'The data dir cannot be started again afterwards.',
    args: [],
    options: {},
  },
  {
    name: 'admin member remove',
    kind: 'member-remove',
    usage: 'docklet admin member remove ID [--force] [--data-dir D] [--json]',
    summary: 'Remove a dead host from the cluster',
    details: 'ID is a member id from `docklet status` (the last 12 characters are enough).',
    args: ['ID'],
    options: { force: { type: 'boolean', help: 'remove the member even though it is online' } },
  },
  {
    name: 'admin recover',
    kind: 'recover',
    usage: 'docklet admin recover --force-new-cluster [--data-dir D] [--json]',
    summary: 'Offline: restart a survivor as a one-member cluster keeping all committed state',
    details:
      'For when a majority of the voters is lost for good. Run it with the node stopped, on one survivor. ' +
      'It keeps every entry this host knows committed, drops the rest and every other member, and keeps ' +
      'the old Raft store aside. Afterwards start the node and re-join the other hosts with new tokens ' +
      'after wiping their data dirs.',
    args: [],
    options: {
      'force-new-cluster': {
        type: 'boolean',
        help: 'confirm: rewrite this host into a new one-member cluster',
      },
    },
  },
]

COMMANDS.push(
  ...RESOURCE_COMMANDS.map(
    (spec): CommandSpec => ({
      name: spec.name,
      kind: 'resource',
      usage: spec.usage,
      summary: spec.summary,
      details: spec.details,
      args: spec.args,
      ...(spec.restArgs === true ? { restArgs: true } : {}),
      options: spec.options,
    }),
  ),
)

/** Groups of subcommands (`docklet token`, `docklet admin user`…): alone, they ask for one of theirs. */
const GROUPS: Record<string, string[]> = (() => {
  const groups: Record<string, string[]> = {}
  for (const spec of COMMANDS) {
    const words = spec.name.split(' ')
    for (let n = 1; n < words.length; n++) {
      const group = words.slice(0, n).join(' ')
      const sub = words.slice(n).join(' ')
      groups[group] ??= []
      groups[group].push(sub)
    }
  }
  return groups
})()

const TOP_USAGE = 'docklet <command> [options]   (docklet --help lists the commands)'

/** Options that take a value, across all commands: the pre-scan must skip their values to find the command words. */
const VALUE_OPTIONS = new Set(
  COMMANDS.flatMap((spec) => Object.entries({ ...COMMON_OPTIONS, ...spec.options }))
    .filter(([, option]) => option.type === 'string')
    .map(([name]) => name),
)

/** Edit distance where swapping two neighbouring letters counts once (the commonest typo). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  )
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1)
      d[i]![j] = best
    }
  }
  return d[a.length]![b.length]!
}

function suggestion(word: string, candidates: string[]): string | null {
  let best: string | null = null
  let bestDistance = 3
  for (const candidate of candidates) {
    const distance = candidate.startsWith(word) && word.length >= 2 ? 0 : editDistance(word, candidate)
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  return best
}

/** The words of argv that are not options or option values, with their positions. */
function positionalWords(argv: string[]): string[] {
  const words: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!
    if (token === '--') {
      words.push(...argv.slice(i + 1))
      break
    }
    if (token.startsWith('--')) {
      if (!token.includes('=') && VALUE_OPTIONS.has(token.slice(2))) i++
      continue
    }
    if (token.startsWith('-') && token.length > 1) continue
    words.push(token)
  }
  return words
}

/** Finds the command named by the leading words; returns it with the number of words it used. */
function resolveCommand(
  words: string[],
  wantsHelp: boolean,
): { spec: CommandSpec; used: number } | { group: string } {
  const first = words[0]
  if (first === undefined) throw new UsageError('No command given.', TOP_USAGE)
  // The longest command name the leading words spell.
  for (let n = Math.min(words.length, 4); n >= 1; n--) {
    const name = words.slice(0, n).join(' ')
    const spec = COMMANDS.find((candidate) => candidate.name === name)
    if (spec !== undefined) return { spec, used: n }
  }
  // Else the longest group they spell.
  let groupWords = 0
  for (let n = Math.min(words.length, 3); n >= 1; n--) {
    if (GROUPS[words.slice(0, n).join(' ')] !== undefined) {
      groupWords = n
      break
    }
  }
  if (groupWords === 0) {
    const candidates = [...new Set([...COMMANDS.map((spec) => spec.name.split(' ')[0]!), 'help'])]
    const near = suggestion(first, candidates)
    throw new UsageError(
      `Unknown command "${first}".`,
      (near === null ? '' : `Did you mean \`docklet ${near}\`? `) +
        'Run `docklet --help` to see the commands.',
    )
  }
  const groupName = words.slice(0, groupWords).join(' ')
  const subs = GROUPS[groupName]!
  const sub = words[groupWords]
  if (sub === undefined) {
    if (wantsHelp) return { group: groupName }
    const direct = [...new Set(subs.map((s) => s.split(' ')[0]!))]
    throw new UsageError(
      `\`docklet ${groupName}\` needs a subcommand: ${direct.join(', ')}.`,
      COMMANDS.filter((spec) => spec.name.startsWith(`${groupName} `))
        .map((spec) => spec.usage)
        .join('\n'),
    )
  }
  const near = suggestion(sub, [...new Set(subs.map((s) => s.split(' ')[0]!))])
  throw new UsageError(
    `Unknown command "docklet ${groupName} ${sub}".`,
    (near === null ? '' : `Did you mean \`docklet ${groupName} ${near}\`? `) +
      `Run \`docklet ${groupName} --help\` to see its commands.`,
  )
}

/** Turns node:util parseArgs errors into sentences that name the option and the right usage. */
function usageErrorFromParseArgs(error: unknown, spec: CommandSpec): UsageError {
  const code = (error as { code?: string }).code
  const message = (error as Error).message
  const option = /'(--?[^' ]+)/.exec(message)?.[1] ?? 'an option'
  const hint = `Usage: ${spec.usage}`
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    return new UsageError(`Unknown option ${option} for \`docklet ${spec.name}\`.`, hint)
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const name = option.replace(/^-+/, '')
    const known = { ...COMMON_OPTIONS, ...spec.options }[name]
    if (known?.type === 'boolean') return new UsageError(`The option ${option} takes no value.`, hint)
    const placeholder = known?.value ?? 'VALUE'
    return new UsageError(`The option ${option} needs a value (${option} ${placeholder}).`, hint)
  }
  return new UsageError(message, hint)
}

const DURATION = /^(\d+)(ms|s|m|h|d)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Parses a token lifetime like 90s, 30m, 3h or 7d (the grammar the node accepts). */
export function parseTtlMs(text: string): number {
  const hint = 'Usage: docklet token create [--ttl 3h]'
  const match = DURATION.exec(text.trim())
  if (match === null)
    throw new UsageError(`--ttl must be a duration like 30m, 3h or 7d, got "${text}".`, hint)
  const ms = Number(match[1]) * UNIT_MS[match[2]!]!
  if (ms <= 0) throw new UsageError('--ttl must be longer than zero.', hint)
  if (ms > TOKEN_TTL_MAX_MS) throw new UsageError(`--ttl must be at most 30d, got "${text}".`, hint)
  return ms
}

/**
 * Parses argv (without node and the script) into a command. Throws
 * UsageError for anything wrong with the command line itself.
 */
export function parseCommandLine(argv: string[]): CliCommand {
  const wantsHelp = argv.includes('--help') || argv.includes('-h')
  const json = argv.includes('--json')
  const words = positionalWords(argv)
  if (words.length === 0) {
    if (argv.includes('--version') || argv.includes('-V')) return { kind: 'version', json }
    if (wantsHelp) return { kind: 'help', topic: null, json }
    throw new UsageError('No command given.', TOP_USAGE)
  }
  if (words[0] === 'help') {
    const topic = words.slice(1)
    if (topic.length === 0) return { kind: 'help', topic: null, json }
    const found = resolveCommand(topic, true)
    return { kind: 'help', topic: 'group' in found ? found.group : found.spec.name, json }
  }
  const found = resolveCommand(words, wantsHelp)
  if ('group' in found) return { kind: 'help', topic: found.group, json }
  const { spec, used } = found
  if (wantsHelp) return { kind: 'help', topic: spec.name, json }

  const options = { ...COMMON_OPTIONS, ...spec.options }
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] }
  try {
    parsed = parseArgs({
      args: argv,
      options: Object.fromEntries(
        Object.entries(options).map(([name, option]) => [
          name,
          option.short === undefined ? { type: option.type } : { type: option.type, short: option.short },
        ]),
      ),
      strict: true,
      allowPositionals: true,
    }) as typeof parsed
  } catch (error) {
    throw usageErrorFromParseArgs(error, spec)
  }
  const hint = `Usage: ${spec.usage}`
  const args = parsed.positionals.slice(used)
  if (args.length < spec.args.length) {
    throw new UsageError(`\`docklet ${spec.name}\` needs <${spec.args[args.length]}>.`, hint)
  }
  if (args.length > spec.args.length && spec.restArgs !== true) {
    throw new UsageError(
      `Unexpected argument "${args[spec.args.length]}" for \`docklet ${spec.name}\`.`,
      hint,
    )
  }
  const values = parsed.values
  const text = (name: string): string | undefined => values[name] as string | undefined
  const flag = (name: string): boolean => values[name] === true
  const dataDir = text('data-dir') ?? DEFAULT_DATA_DIR
  if (dataDir.trim() === '') throw new UsageError('--data-dir must not be empty.', hint)
  const common: Common = { dataDir, json: flag('json') }
  const node: NodeFlags = {}
  for (const name of ['listen', 'advertise', 'portal'] as const) {
    const value = text(name)
    if (value !== undefined) node[name] = value.trim()
  }
  if (node.listen === '') throw new UsageError('--listen must not be empty; give HOST:PORT.', hint)

  switch (spec.kind) {
    case 'init':
      if (flag('detach') && flag('no-start')) {
        throw new UsageError('--detach and --no-start contradict each other: pick one.', hint)
      }
      return { ...common, kind: 'init', node, detach: flag('detach'), noStart: flag('no-start') }
    case 'start':
      return { ...common, kind: 'start', detach: flag('detach') }
    case 'join': {
      const token = text('token')?.trim()
      if (token === undefined || token === '') {
        throw new UsageError(
          '`docklet join` needs --token T (create one with `docklet token create` on a member).',
          hint,
        )
      }
      return { ...common, kind: 'join', peer: args[0]!, token, node, detach: flag('detach') }
    }
    case 'status':
    case 'token-list':
    case 'leave':
      return { ...common, kind: spec.kind }
    case 'token-create': {
      const ttl = text('ttl') ?? '3h'
      return { ...common, kind: 'token-create', ttl: ttl.trim(), ttlMs: parseTtlMs(ttl) }
    }
    case 'token-revoke':
      return { ...common, kind: 'token-revoke', id: args[0]! }
    case 'member-remove':
      return { ...common, kind: 'member-remove', id: args[0]!, force: flag('force') }
    case 'resource':
      return { ...common, kind: 'resource', name: spec.name, args, values }
    case 'recover':
      if (!flag('force-new-cluster')) {
        throw new UsageError(
          '`docklet admin recover` turns this host into a new one-member cluster: it keeps the committed state, ' +
            'drops entries not known committed and every other member. It is for when a majority of the voters ' +
            'is lost for good; add --force-new-cluster to confirm.',
          hint,
        )
      }
      return { ...common, kind: 'recover' }
  }
}

// ------------------------------------------------------------------ help

function optionLines(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options).map(([name, option]) => {
    const flags = `${option.short === undefined ? '' : `-${option.short}, `}--${name}${option.value === undefined ? '' : ` ${option.value}`}`
    return [flags, option.help] as const
  })
  const width = Math.max(...rows.map(([flags]) => flags.length))
  return rows.map(([flags, help]) => `  ${flags.padEnd(width)}  ${help}`)
}

function wrap(text: string, width = 78): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(/\s+/)) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else line = line === '' ? word : `${line} ${word}`
  }
  if (line !== '') lines.push(line)
  return lines
}

/** Help for the whole program (topic null), a group ('token') or a command ('token create'). */
export function helpText(topic: string | null): string {
  if (topic === null) {
    const argument = (name: string) => (name === name.toUpperCase() ? name : `<${name}>`)
    const rows = COMMANDS.map(
      (spec) => [`${spec.name}${spec.args.map((a) => ` ${argument(a)}`).join('')}`, spec.summary] as const,
    )
    const width = Math.max(...rows.map(([name]) => name.length))
    return [
      'docklet: a masterless cloud OS for a mini-datacenter',
      '',
      'Usage: docklet <command> [options]',
      '',
      'Commands:',
      ...rows.map(([name, summary]) => `  ${name.padEnd(width)}  ${summary}`),
      '',
      'Options of every command:',
      ...optionLines({
        ...COMMON_OPTIONS,
        version: { type: 'boolean', help: 'print the version of docklet' },
      }),
      '',
      'Run `docklet <command> --help` for the options of a command.',
      '',
    ].join('\n')
  }
  const group = GROUPS[topic]
  if (group !== undefined) {
    const specs = COMMANDS.filter((spec) => spec.name.startsWith(`${topic} `))
    return [
      `Commands of docklet ${topic}:`,
      '',
      ...specs.map((spec) => `  ${spec.usage}\n      ${spec.summary}`),
      '',
      `Run \`docklet ${topic} <command> --help\` for details.`,
      '',
    ].join('\n')
  }
  const spec = COMMANDS.find((candidate) => candidate.name === topic)
  if (spec === undefined) return helpText(null)
  return [
    `Usage: ${spec.usage}`,
    '',
    `${spec.summary}.`,
    ...(spec.details === '' ? [] : ['', ...wrap(spec.details)]),
    '',
    'Options:',
    ...optionLines({ ...spec.options, ...COMMON_OPTIONS }),
    '',
  ].join('\n')
}

// ------------------------------------------------------------------ formatting

/** Member ids are long PeerIds; their last 12 characters tell members apart in a table. */
export function shortId(id: string): string {
  return id.length > 12 ? id.slice(-12) : id
}

/** /ip4/10.0.0.5/tcp/7946 -> 10.0.0.5:7946 (what people type); anything else unchanged. */
export function hostPort(address: string): string {
  const match = /^\/(ip4|ip6|dns|dns4|dns6)\/([^/]+)\/tcp\/(\d+)(\/p2p\/[^/]+)?$/.exec(address)
  if (match === null) return address
  return match[1] === 'ip6' ? `[${match[2]}]:${match[3]}` : `${match[2]}:${match[3]}`
}

export function formatAge(ms: number | null): string {
  if (ms === null) return '-'
  if (ms < 1_000) return `${ms} ms ago`
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s ago`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ago`
  return `${Math.floor(ms / 3_600_000)} h ago`
}

function formatTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')
}

/** The human view of `docklet status`: a header and one row per member, the leader marked with *. */
export function formatStatus(status: ClusterStatus): string {
  const leader =
    status.leader === null
      ? 'none known (writes fail until one is elected)'
      : `${shortId(status.leader.id)} at ${hostPort(status.leader.address) || '?'}`
  const lines = [
    `Cluster       ${status.cluster_id === '' ? '(not initialized yet)' : status.cluster_id}`,
    `Leader        ${leader}`,
    `Term          ${status.term}`,
    `Commit index  ${status.commit_index}`,
    `This host     ${shortId(status.self.id)} (pid ${status.self.pid})`,
  ]
  if (status.source === 'local' && status.leader?.id !== status.self.id) {
    lines.push('', 'Note: no leader answered; members are as this host last knew them.')
  }
  const rows = status.members.map((member: MemberStatus) => [
    status.leader?.id === member.id ? '*' : ' ',
    shortId(member.id),
    member.name,
    hostPort(member.address),
    member.leaving ? `${member.role} (leaving)` : member.role,
    member.online ? 'yes' : 'no',
    member.id === status.self.id ? 'this host' : formatAge(member.last_contact_ms),
  ])
  lines.push('', formatTable([' ', 'ID', 'NAME', 'ADDRESS', 'ROLE', 'ONLINE', 'LAST CONTACT'], rows))
  if (status.members.length === 0) lines.push('(no members yet)')
  return `${lines.join('\n')}\n`
}

export interface TokenRow {
  id: string
  created_at: string
  expires_at: string
  state: string
  used_by: string
}

export function formatTokenList(tokens: TokenRow[]): string {
  if (tokens.length === 0) return 'No join tokens. Create one with `docklet token create`.\n'
  const rows = tokens.map((t) => [
    t.id,
    t.state,
    formatTime(t.created_at),
    formatTime(t.expires_at),
    t.used_by === '' ? '-' : shortId(t.used_by),
  ])
  return `${formatTable(['ID', 'STATE', 'CREATED', 'EXPIRES', 'USED BY'], rows)}\n`
}

export function formatTokenCreated(
  created: { id: string; token: string; expires_at: string },
  joinAddress: string | null,
): string {
  return [
    `Created join token ${created.id}, single use, valid until ${formatTime(created.expires_at)}:`,
    '',
    `  ${created.token}`,
    '',
    'On the new host, run:',
    '',
    `  docklet join ${joinAddress === null ? '<address of a member>' : hostPort(joinAddress)} --token ${created.token}`,
    '',
  ].join('\n')
}

/** ' --data-dir D' when D is not the default, so printed commands work as they are. */
function dataDirFlag(dataDir: string): string {
  return resolve(dataDir) === DEFAULT_DATA_DIR ? '' : ` --data-dir ${dataDir}`
}

export function formatInitBanner(password: string, paths: DataDirPaths, clusterId: string): string {
  return [
    `Initialized docklet cluster ${clusterId} in ${paths.root}.`,
    '',
    '  Admin user:      admin',
    `  Admin password:  ${password}`,
    '',
    'This password is shown only once. It is saved, readable by root only, in',
    `${paths.adminPassword}.`,
    '',
  ].join('\n')
}

export function formatRecoverWarning(report: RecoverReport, dataDir: string): string {
  const flag = dataDirFlag(dataDir)
  const removed =
    report.removedMembers.length === 0
      ? 'Removed no members (this host was the only one).'
      : `Removed ${report.removedMembers.length} member(s): ${report.removedMembers.join(', ')}.`
  const lines = [
    'WARNING: this host was turned into a new one-member cluster.',
    '',
    `  - This host (${report.selfId}) is now the only member and the only voter of cluster ${report.clusterId}.`,
    `  - Kept ${report.keptEntries} committed entries after the last snapshot (index ${report.snapshotIndex}), ` +
      `up to index ${report.commitIndex} (term ${report.commitTerm}); the state they built is the new store's snapshot.`,
    `  - Dropped ${report.droppedEntries} uncommitted entries (after index ${report.commitIndex}).`,
    `  - ${removed}`,
    `  - The old Raft store is kept, untouched, at ${report.backupDir}.`,
  ]
  if (report.wasVoter === false) {
    lines.push(
      '  - This host was a standby, not a voter: writes the lost voters committed after it last heard from them are gone.',
    )
  }
  lines.push(
    '',
    'Next:',
    `  1. Start the node: docklet start${flag}  (or: systemctl start docklet)`,
    '  2. On each other host of the old cluster: stop docklet, wipe its data dir, and join again',
    `     with a new token from \`docklet token create${flag}\` here. Never start them on their old data.`,
    '',
  )
  return lines.join('\n')
}

// ------------------------------------------------------------------ running

/** Returns a sentence when this Node cannot run docklet, else null. */
export function nodeVersionProblem(version: string, features: { typescript?: unknown }): string | null {
  const major = Number(version.replace(/^v/, '').split('.')[0])
  if (!Number.isInteger(major) || major < NODE_MAJOR_MIN || !features.typescript) {
    return (
      `docklet needs Node ${NODE_MAJOR_MIN} or newer with TypeScript type stripping (Node 24 recommended), but this is Node ${version}. ` +
      'Install it with `sudo bash src/setup/ensure-deps.sh` (it puts Node 24 in /opt/docklet/node/bin) and run ' +
      'docklet with that node, or use /usr/local/bin/docklet from `sudo bash src/setup/install.sh`.'
    )
  }
  return null
}

const CLI_PATH = fileURLToPath(import.meta.url)

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
}

function progress(text: string): void {
  process.stderr.write(`${text}\n`)
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`)
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms))
}

function control<T>(
  dataDir: string,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  body?: unknown,
  timeoutMs = CONTROL_TIMEOUT_MS,
) {
  return callControl<T>(dataDirPaths(dataDir).socket, { method, path, body, timeoutMs })
}

/** The node's health answer, or null when no node answers on the socket (other errors are thrown). */
async function health(dataDir: string): Promise<{ id: string } | null> {
  try {
    return await control<{ id: string }>(dataDir, 'GET', '/v1/health', undefined, 2_000)
  } catch (error) {
    // A node shutting down may reset the connection instead of refusing it.
    if (
      error instanceof ControlError &&
      ['ERR_NODE_NOT_RUNNING', 'ERR_TIMEOUT', 'ERR_CONTROL'].includes(error.code)
    )
      return null
    throw error
  }
}

/** Alive and not a zombie (a node detached inside a container without an init may linger as one). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return true
  }
}

/** The pid in <dataDir>/docklet.pid when that process is alive and runs docklet. */
function runningPid(paths: DataDirPaths): number | null {
  let pid: number
  try {
    pid = Number(readFileSync(paths.pid, 'utf8').trim())
  } catch {
    return null
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || !processAlive(pid)) return null
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    if (!/docklet|cli\.ts/.test(cmdline)) return null // a stale pid file and a reused pid
  } catch {}
  return pid
}

function logTail(path: string, fromByte: number): string {
  try {
    const size = statSync(path).size
    const start = Math.max(fromByte, size - LOG_TAIL_BYTES_MAX)
    const fd = openSync(path, 'r')
    try {
      const buffer = Buffer.alloc(size - start)
      readSync(fd, buffer, 0, buffer.length, start)
      return buffer.toString('utf8').trimEnd().split('\n').slice(-LOG_TAIL_LINES_MAX).join('\n')
    } finally {
      closeSync(fd)
    }
  } catch {
    return ''
  }
}

/**
 * Runs `docklet start` for dataDir as a detached child (output appended to
 * docklet.log) and returns once the node answers on its socket. If the child
 * dies first, or does not answer in time, the error carries the log's tail.
 */
async function startDetached(dataDir: string): Promise<{ id: string; pid: number }> {
  const paths = dataDirPaths(dataDir)
  const logStart = existsSync(paths.log) ? statSync(paths.log).size : 0
  const logFd = openSync(paths.log, 'a', 0o600)
  // Filled in by the child's events while this function polls.
  const outcome: { exit: string | null; error: Error | null } = { exit: null, error: null }
  const { spawn } = process.getBuiltinModule('node:child_process')
  const child = spawn(process.execPath, [...process.execArgv, CLI_PATH, 'start', '--data-dir', dataDir], {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    cwd: '/',
  })
  closeSync(logFd)
  child.on('exit', (code, signal) => {
    outcome.exit = signal ?? `exit code ${code}`
  })
  child.on('error', (error) => {
    outcome.error = error
  })
  child.unref()
  const pid = child.pid ?? 0
  progress(`Starting the node in the background (pid ${pid}; log: ${paths.log})…`)
  const startedAt = Date.now()
  let lastProgress = startedAt
  const tail = () => {
    const text = logTail(paths.log, logStart)
    return text === '' ? '' : `\nLast lines of ${paths.log}:\n${text}`
  }
  while (Date.now() - startedAt < START_TIMEOUT_MS) {
    if (outcome.error !== null) {
      throw new CliError('ERR_START_FAILED', `Could not start the node: ${outcome.error.message}.`)
    }
    if (outcome.exit !== null) {
      throw new CliError(
        'ERR_START_FAILED',
        `The node stopped while starting (${outcome.exit}); see ${paths.log}.${tail()}`,
      )
    }
    const answer = await health(dataDir)
    if (answer !== null) return { id: answer.id, pid }
    if (Date.now() - lastProgress >= PROGRESS_INTERVAL_MS) {
      lastProgress = Date.now()
      progress(
        `  still waiting for the node to answer on ${paths.socket} (${Math.round((lastProgress - startedAt) / 1000)} s)…`,
      )
    }
    await sleep(POLL_INTERVAL_MS)
  }
  // A node that cannot answer in 30 s is stuck; do not leave it half-started behind the user's back.
  try {
    process.kill(pid, 'SIGTERM')
  } catch {}
  throw new CliError(
    'ERR_START_TIMEOUT',
    `The node did not answer on ${paths.socket} within ${START_TIMEOUT_MS / 1000} s, so it was stopped (pid ${pid}); see ${paths.log}.${tail()}`,
  )
}

/** Refuses to start a second node on a data dir whose node is running. */
async function refuseIfRunning(dataDir: string): Promise<void> {
  const paths = dataDirPaths(dataDir)
  const answer = await health(dataDir)
  const pid = runningPid(paths)
  if (answer !== null || pid !== null) {
    throw new CliError(
      'ERR_NODE_RUNNING',
      `A docklet node is already running for ${dataDir}${pid === null ? '' : ` (pid ${pid})`}; see \`docklet status${dataDirFlag(dataDir)}\`.`,
    )
  }
}

/** Runs the node in this process until SIGTERM/SIGINT or a completed leave. */
async function runForeground(dataDir: string, flags: NodeFlags): Promise<number> {
  const { runNode } = await import('./main.ts')
  await runNode({ dataDir, flags })
  return 0
}

async function cmdInit(cmd: Extract<CliCommand, { kind: 'init' }>): Promise<number> {
  const dataDir = resolve(cmd.dataDir)
  const { initDataDir } = await import('./main.ts')
  const { password, paths } = await initDataDir(dataDir, cmd.node)
  const clusterId = readNodeRecord(paths)?.clusterId ?? ''
  const secret = { admin_user: 'admin', admin_password: password, data_dir: dataDir, cluster_id: clusterId }
  if (!cmd.json) out(formatInitBanner(password, paths, clusterId))
  else if (!cmd.detach) printJson(secret) // foreground: the first of the JSON lines (pino's follow)
  if (cmd.noStart) {
    if (!cmd.json)
      out(
        `Start the node with \`docklet start${dataDirFlag(dataDir)}\` (or \`systemctl enable --now docklet\`).`,
      )
    return 0
  }
  if (!cmd.detach) return runForeground(dataDir, cmd.node)
  let started: { id: string; pid: number }
  try {
    started = await startDetached(dataDir)
  } catch (error) {
    if (error instanceof CliError) {
      throw new CliError(
        error.code,
        `${error.message}\nThe data dir is initialized (admin password in ${paths.adminPassword}); fix the problem, then run \`docklet start${dataDirFlag(dataDir)} --detach\`.`,
      )
    }
    throw error
  }
  if (cmd.json) printJson({ ...secret, node: started })
  else
    out(
      `The docklet node ${shortId(started.id)} is running (pid ${started.pid}). See it with \`docklet status${dataDirFlag(dataDir)}\`.`,
    )
  return 0
}

async function cmdStart(cmd: Extract<CliCommand, { kind: 'start' }>): Promise<number> {
  const dataDir = resolve(cmd.dataDir)
  const paths = dataDirPaths(dataDir)
  const record = readNodeRecord(paths)
  if (record === null) {
    throw new CliError(
      'ERR_NOT_INITIALIZED',
      `${dataDir} holds no docklet node. Run \`docklet init\` or \`docklet join\` first.`,
    )
  }
  await refuseIfRunning(dataDir)
  if (!cmd.detach) return runForeground(dataDir, {})
  const started = await startDetached(dataDir)
  if (cmd.json) printJson({ data_dir: dataDir, cluster_id: record.clusterId, node: started })
  else out(`The docklet node ${shortId(started.id)} is running (pid ${started.pid}).`)
  return 0
}

async function cmdJoin(cmd: Extract<CliCommand, { kind: 'join' }>): Promise<number> {
  const dataDir = resolve(cmd.dataDir)
  const { decodeJoinToken } = await import('./node/join-token.ts')
  const payload = decodeJoinToken(cmd.token)
  const { loadConfig } = await import('./main.ts')
  const { joinCluster } = await import('./node/join-cluster.ts')
  const config = loadConfig(dataDir, cmd.node, null)
  progress(
    `Contacting ${cmd.peer} (cluster ${payload.clusterId}; trusting only the ${payload.members.length} member identit${payload.members.length === 1 ? 'y' : 'ies'} the token pins)…`,
  )
  const record = await joinCluster({ config, token: cmd.token, peer: cmd.peer })
  progress(`Accepted into cluster ${record.clusterId} as learner; catching up.`)
  const result = { cluster_id: record.clusterId, data_dir: dataDir }
  if (!cmd.detach) {
    if (cmd.json) printJson(result)
    return runForeground(dataDir, cmd.node)
  }
  const started = await startDetached(dataDir)
  if (cmd.json) printJson({ ...result, node: started })
  else {
    out(
      `The docklet node ${shortId(started.id)} is running (pid ${started.pid}); it is promoted once it has caught up. ` +
        `Watch it with \`docklet status${dataDirFlag(dataDir)}\`.`,
    )
  }
  return 0
}

async function cmdStatus(cmd: Extract<CliCommand, { kind: 'status' }>): Promise<number> {
  const status = await control<ClusterStatus>(cmd.dataDir, 'GET', '/v1/status')
  if (cmd.json) printJson(status)
  else out(formatStatus(status))
  return 0
}

async function cmdTokenCreate(cmd: Extract<CliCommand, { kind: 'token-create' }>): Promise<number> {
  const created = await control<{ id: string; token: string; expires_at: string }>(
    cmd.dataDir,
    'POST',
    '/v1/tokens',
    {
      ttl: cmd.ttl,
    },
  )
  if (cmd.json) {
    printJson(created)
    return 0
  }
  // Suggest this host's own address for the join command: the token pins it anyway.
  let joinAddress: string | null = null
  try {
    const { decodeJoinToken } = await import('./node/join-token.ts')
    const self = await health(cmd.dataDir)
    const members = decodeJoinToken(created.token).members
    joinAddress = (members.find((m) => m.id === self?.id) ?? members[0])?.address ?? null
  } catch {}
  out(formatTokenCreated(created, joinAddress))
  return 0
}

async function cmdTokenList(cmd: Extract<CliCommand, { kind: 'token-list' }>): Promise<number> {
  const answer = await control<{ tokens: TokenRow[] }>(cmd.dataDir, 'GET', '/v1/tokens')
  if (cmd.json) printJson(answer)
  else out(formatTokenList(answer.tokens))
  return 0
}

async function cmdTokenRevoke(cmd: Extract<CliCommand, { kind: 'token-revoke' }>): Promise<number> {
  const answer = await control<unknown>(cmd.dataDir, 'DELETE', `/v1/tokens/${encodeURIComponent(cmd.id)}`)
  if (cmd.json) printJson(answer)
  else out(`Revoked join token ${cmd.id}.`)
  return 0
}

/** Expands the short id the status table shows into the member's full id. */
async function fullMemberId(dataDir: string, id: string): Promise<string> {
  const status = await control<ClusterStatus>(dataDir, 'GET', '/v1/status')
  const matches = status.members.filter((m) => m.id === id || m.id.endsWith(id))
  if (matches.length > 1 && !matches.some((m) => m.id === id)) {
    throw new CliError(
      'ERR_AMBIGUOUS_ID',
      `"${id}" matches ${matches.length} members (${matches.map((m) => m.id).join(', ')}); give more of the id.`,
    )
  }
  return matches.length === 1 ? matches[0]!.id : id
}

async function cmdMemberRemove(cmd: Extract<CliCommand, { kind: 'member-remove' }>): Promise<number> {
  const id = await fullMemberId(cmd.dataDir, cmd.id)
  const answer = await control<unknown>(cmd.dataDir, 'POST', `/v1/members/${encodeURIComponent(id)}/remove`, {
    force: cmd.force,
  })
  if (cmd.json) printJson(answer)
  else out(`Removed member ${id} from the cluster.`)
  return 0
}

async function cmdLeave(cmd: Extract<CliCommand, { kind: 'leave' }>): Promise<number> {
  const dataDir = resolve(cmd.dataDir)
  const before = await control<ClusterStatus>(dataDir, 'GET', '/v1/status')
  if (!cmd.json)
    progress('Leaving the cluster: handing leadership over if this host holds it, leaving the voter set…')
  await control<unknown>(dataDir, 'POST', '/v1/leave')
  if (!cmd.json) progress('The leave is committed; waiting for the node to be removed and to stop…')
  const startedAt = Date.now()
  let lastProgress = startedAt
  while (Date.now() - startedAt < LEAVE_STOP_TIMEOUT_MS) {
    const answer = await health(dataDir)
    if (answer === null && !processAlive(before.self.pid)) {
      if (cmd.json) printJson({ ok: true, id: before.self.id, cluster_id: before.cluster_id, stopped: true })
      else {
        out(
          `This host left cluster ${before.cluster_id} and its node stopped. ${dataDir} cannot be started again; ` +
            'remove it before this host joins a cluster anew.',
        )
      }
      return 0
    }
    if (!cmd.json && Date.now() - lastProgress >= PROGRESS_INTERVAL_MS) {
      lastProgress = Date.now()
      progress(`  still waiting (${Math.round((lastProgress - startedAt) / 1000)} s)…`)
    }
    await sleep(POLL_INTERVAL_MS)
  }
  throw new CliError(
    'ERR_LEAVE_TIMEOUT',
    `The node accepted the leave but was still running after ${LEAVE_STOP_TIMEOUT_MS / 1000} s (pid ${before.self.pid}). ` +
      `Check \`docklet status\` on another member and ${dataDirPaths(dataDir).log}.`,
  )
}

async function cmdRecover(cmd: Extract<CliCommand, { kind: 'recover' }>): Promise<number> {
  const dataDir = resolve(cmd.dataDir)
  const paths = dataDirPaths(dataDir)
  const pid = runningPid(paths)
  if ((await health(dataDir)) !== null || pid !== null) {
    throw new CliError(
      'ERR_NODE_RUNNING',
      `The docklet node of ${dataDir} is running${pid === null ? '' : ` (pid ${pid})`}; recovery works on a stopped node. ` +
        `Stop it first: systemctl stop docklet, or kill the pid in ${paths.pid}.`,
    )
  }
  const { recoverForceNewCluster } = await import('./node/recover.ts')
  const report = await recoverForceNewCluster(dataDir)
  if (cmd.json) {
    printJson({
      ok: true,
      cluster_id: report.clusterId,
      self_id: report.selfId,
      commit_index: report.commitIndex,
      commit_term: report.commitTerm,
      kept_entries: report.keptEntries,
      dropped_entries: report.droppedEntries,
      removed_members: report.removedMembers,
      backup_dir: report.backupDir,
      was_voter: report.wasVoter,
    })
  } else out(formatRecoverWarning(report, dataDir))
  return 0
}

async function cmdResource(cmd: Extract<CliCommand, { kind: 'resource' }>): Promise<number> {
  const spec = RESOURCE_COMMANDS.find((candidate) => candidate.name === cmd.name)!
  const actAs = typeof cmd.values.user === 'string' ? cmd.values.user.trim() : ''
  const socket = dataDirPaths(cmd.dataDir).socket
  try {
    return await spec.run({
      args: cmd.args,
      text: (name) => (typeof cmd.values[name] === 'string' ? (cmd.values[name] as string) : undefined),
      flag: (name) => cmd.values[name] === true,
      json: cmd.json,
      api: (method, path, body, options) =>
        callControl(socket, {
          method,
          path,
          body,
          timeoutMs: options?.timeoutMs ?? CONTROL_TIMEOUT_MS,
          ...(actAs === '' ? {} : { headers: { 'x-docklet-user': actAs } }),
        }),
      out,
      progress,
      printJson,
      streamUpload: async <T>(
        method: 'POST' | 'PUT',
        path: string,
        file: string,
        options: { contentType: string; idleTimeoutMs?: number },
      ) => {
        const answer = await callControlStream<T>(socket, {
          method,
          path,
          bodyFile: { path: resolve(file), contentType: options.contentType },
          idleTimeoutMs: options.idleTimeoutMs ?? CONTROL_TIMEOUT_MS,
          ...(actAs === '' ? {} : { headers: { 'x-docklet-user': actAs } }),
        })
        return { status: answer.status, body: answer.json as T }
      },
      streamDownload: async (path, file, options) => {
        const answer = await callControlStream(socket, {
          method: 'GET',
          path,
          responseFile: resolve(file),
          idleTimeoutMs: options?.idleTimeoutMs ?? CONTROL_TIMEOUT_MS,
          ...(actAs === '' ? {} : { headers: { 'x-docklet-user': actAs } }),
        })
        return { bytes: answer.bytes }
      },
    })
  } catch (error) {
    if (error instanceof ResourceUsageError) throw new UsageError(error.message, `Usage: ${spec.usage}`)
    throw error
  }
}

function version(): string {
  try {
    return (
      JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
    ).version
  } catch {
    return 'unknown'
  }
}

async function run(cmd: CliCommand): Promise<number> {
  switch (cmd.kind) {
    case 'help':
      out(helpText(cmd.topic))
      return 0
    case 'version':
      if (cmd.json) printJson({ version: version(), node: process.version })
      else out(`docklet ${version()} (Node ${process.version})`)
      return 0
    case 'init':
      return cmdInit(cmd)
    case 'start':
      return cmdStart(cmd)
    case 'join':
      return cmdJoin(cmd)
    case 'status':
      return cmdStatus(cmd)
    case 'token-create':
      return cmdTokenCreate(cmd)
    case 'token-list':
      return cmdTokenList(cmd)
    case 'token-revoke':
      return cmdTokenRevoke(cmd)
    case 'leave':
      return cmdLeave(cmd)
    case 'member-remove':
      return cmdMemberRemove(cmd)
    case 'recover':
      return cmdRecover(cmd)
    case 'resource':
      return cmdResource(cmd)
  }
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : 'ERR_INTERNAL'
}

/** One sentence on stderr (or one JSON object on stdout); the stack only with DOCKLET_DEBUG=1. */
function report(error: unknown, json: boolean): void {
  const debug = process.env.DOCKLET_DEBUG === '1'
  let message = error instanceof Error ? error.message : String(error)
  if (codeOf(error) === 'ERR_INTERNAL' && !debug)
    message += ' (run again with DOCKLET_DEBUG=1 to see where it failed)'
  if (json) printJson({ error: { code: codeOf(error), message } })
  else {
    process.stderr.write(`docklet: ${message}\n`)
    if (error instanceof UsageError) process.stderr.write(`${error.hint}\n`)
  }
  if (debug && error instanceof Error && error.stack !== undefined) process.stderr.write(`${error.stack}\n`)
}

/** Runs the command line; resolves with the exit code (0 ok, 1 failed, 2 usage error). */
export async function main(argv: string[]): Promise<number> {
  const jsonRequested = argv.includes('--json')
  const problem = nodeVersionProblem(process.version, process.features as { typescript?: unknown })
  if (problem !== null) {
    report(new CliError('ERR_NODE_VERSION', problem), jsonRequested)
    return 1
  }
  let cmd: CliCommand
  try {
    cmd = parseCommandLine(argv)
  } catch (error) {
    report(error, jsonRequested)
    return error instanceof UsageError ? 2 : 1
  }
  try {
    return await run(cmd)
  } catch (error) {
    report(error, jsonRequested)
    return 1
  }
}

/** Entry point: runs main and exits (the node's sockets and timers must not keep a finished CLI alive). */
export async function runCli(argv: string[]): Promise<never> {
  const code = await main(argv)
  return exitCli(code)
}

/** How long a finished CLI waits for its output to drain before it exits anyway. */
const OUTPUT_DRAIN_MS = 5_000

/**
 * Ends a finished CLI with `code`. process.exit() can hang for good in Node's
 * platform teardown: a V8 background thread that waits for the main thread to
 * collect garbage is joined by a main thread that never will (nodejs/node#64274;
 * seen after `docklet image import` streamed a 400 MB tar: the CLI had printed
 * its answer and never exited). So, once its output has drained, the CLI
 * replaces itself with `/bin/sh -c 'exit N'` (process.execve): the exit code
 * stays, and no teardown runs. process.exit() where that is not possible.
 */
export async function exitCli(code: number): Promise<never> {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.writableLength === 0) continue
    await new Promise<void>((done) => {
      const timer = setTimeout(done, OUTPUT_DRAIN_MS)
      stream.once('drain', () => {
        clearTimeout(timer)
        done()
      })
    })
  }
  process.getBuiltinModule('node:module').flushCompileCache?.()
  if (typeof process.execve === 'function' && existsSync('/bin/sh')) {
    try {
      process.execve('/bin/sh', ['sh', '-c', `exit ${code}`])
    } catch {
      // Not allowed here (a worker thread, a sandbox): the usual way.
    }
  }
  process.exit(code)
}

function isEntryPoint(): boolean {
  const entry = process.argv[1]
  if (entry === undefined) return false
  try {
    return realpathSync(entry) === realpathSync(CLI_PATH)
  } catch {
    return false
  }
}

if (isEntryPoint()) void runCli(process.argv.slice(2))
