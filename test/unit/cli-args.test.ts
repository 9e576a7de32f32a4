// Checks the pure parts of the docklet CLI (src/cli.ts): how a command line
// becomes a command or a usage error (with the exit code and the hint a
// person sees), --ttl parsing, the Node version check, and the human tables
// of `docklet status` and `docklet token list`. No node runs: main() is only
// driven with command lines that fail before any socket or process is used,
// with stdout/stderr captured.

import { afterEach, describe, expect, test, vi } from 'vitest'
import {
  formatAge,
  formatStatus,
  formatTokenList,
  helpText,
  hostPort,
  main,
  nodeVersionProblem,
  parseCommandLine,
  parseTtlMs,
  TOKEN_TTL_MAX_MS,
  UsageError,
} from '../../src/cli.ts'
import type { ClusterStatus } from '../../src/node/docklet-node.ts'

function usageError(argv: string[]): UsageError {
  try {
    parseCommandLine(argv)
  } catch (error) {
    if (error instanceof UsageError) return error
    throw error
  }
  throw new Error(`parseCommandLine(${JSON.stringify(argv)}) did not throw`)
}

/** Runs main() with stdout and stderr captured. */
async function runMain(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const outSpy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout += String(chunk)
    return true
  })
  const errSpy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    stderr += String(chunk)
    return true
  })
  try {
    return { code: await main(argv), stdout, stderr }
  } finally {
    outSpy.mockRestore()
    errSpy.mockRestore()
  }
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('parseCommandLine', () => {
  test('init takes the node flags, an empty --portal included, and defaults the data dir', () => {
    expect(parseCommandLine(['init', '--listen', '127.0.0.1:17001', '--portal', '', '--detach'])).toEqual({
      kind: 'init',
      dataDir: '/var/lib/docklet',
      json: false,
      node: { listen: '127.0.0.1:17001', portal: '' },
      detach: true,
      noStart: false,
    })
  })

  test('options may come before the command and in --name=value form', () => {
    expect(parseCommandLine(['--data-dir', '/tmp/dk1', '--json', 'status'])).toEqual({
      kind: 'status',
      dataDir: '/tmp/dk1',
      json: true,
    })
    expect(parseCommandLine(['token', 'create', '--ttl=90s', '--data-dir=/d'])).toMatchObject({
      kind: 'token-create',
      dataDir: '/d',
      ttl: '90s',
      ttlMs: 90_000,
    })
  })

  test('join takes the peer address and the token', () => {
    expect(
      parseCommandLine(['join', '10.0.0.5:7946', '--token', 'DKLT1-abc', '--listen', '0.0.0.0:7946']),
    ).toEqual({
      kind: 'join',
      dataDir: '/var/lib/docklet',
      json: false,
      peer: '10.0.0.5:7946',
      token: 'DKLT1-abc',
      node: { listen: '0.0.0.0:7946' },
      detach: false,
    })
  })

  test('the nested admin commands and the token subcommands are recognized', () => {
    expect(parseCommandLine(['admin', 'member', 'remove', 'abc123', '--force'])).toMatchObject({
      kind: 'member-remove',
      id: 'abc123',
      force: true,
    })
    expect(parseCommandLine(['admin', 'recover', '--force-new-cluster'])).toMatchObject({ kind: 'recover' })
    expect(parseCommandLine(['token', 'revoke', 'f00d'])).toMatchObject({ kind: 'token-revoke', id: 'f00d' })
    expect(parseCommandLine(['token', 'list', '--json'])).toMatchObject({ kind: 'token-list', json: true })
    expect(parseCommandLine(['leave'])).toMatchObject({ kind: 'leave' })
    expect(parseCommandLine(['start', '--detach'])).toMatchObject({ kind: 'start', detach: true })
  })

  test('--help and help give the topic of the command, group or program', () => {
    expect(parseCommandLine(['--help'])).toEqual({ kind: 'help', topic: null, json: false })
    expect(parseCommandLine(['token', '--help'])).toMatchObject({ kind: 'help', topic: 'token' })
    expect(parseCommandLine(['join', '-h'])).toMatchObject({ kind: 'help', topic: 'join' })
    expect(parseCommandLine(['help', 'admin', 'recover'])).toMatchObject({
      kind: 'help',
      topic: 'admin recover',
    })
    expect(parseCommandLine(['--version'])).toMatchObject({ kind: 'version' })
  })

  test('an unknown command is a usage error that suggests the nearest command', () => {
    const error = usageError(['statsu'])
    expect(error.message).toBe('Unknown command "statsu".')
    expect(error.hint).toContain('Did you mean `docklet status`?')
    expect(usageError(['token', 'crate']).hint).toContain('docklet token create')
    expect(usageError(['frobnicate']).hint).not.toContain('Did you mean')
  })

  test('a group without its subcommand names the subcommands', () => {
    const error = usageError(['token'])
    expect(error.message).toContain('create, list, revoke')
    expect(error.hint).toContain('docklet token revoke ID')
  })

  test('an unknown option names the option and shows the usage of the command', () => {
    const error = usageError(['status', '--bogus'])
    expect(error.message).toBe('Unknown option --bogus for `docklet status`.')
    expect(error.hint).toBe('Usage: docklet status [--data-dir D] [--json]')
    // --force belongs to member remove, not to leave.
    expect(usageError(['leave', '--force']).message).toContain('--force')
  })

  test('an option without its value, or a flag given a value, is a usage error', () => {
    expect(usageError(['token', 'create', '--ttl']).message).toBe(
      'The option --ttl needs a value (--ttl DURATION).',
    )
    expect(usageError(['token', 'create', '--ttl', '--json']).message).toContain('--ttl needs a value')
    expect(usageError(['status', '--json=yes']).message).toBe('The option --json takes no value.')
  })

  test('missing and extra arguments are usage errors', () => {
    expect(usageError(['join', '--token', 'DKLT1-x']).message).toBe('`docklet join` needs <peer-address>.')
    expect(usageError(['join', '10.0.0.5:7946']).message).toContain('needs --token')
    expect(usageError(['token', 'revoke']).message).toBe('`docklet token revoke` needs <ID>.')
    expect(usageError(['status', 'extra']).message).toBe('Unexpected argument "extra" for `docklet status`.')
    expect(usageError([]).message).toBe('No command given.')
  })

  test('recover without --force-new-cluster is refused with an explanation', () => {
    const error = usageError(['admin', 'recover'])
    expect(error.message).toContain('one-member cluster')
    expect(error.message).toContain('--force-new-cluster')
  })

  test('contradicting init flags and an empty --data-dir are refused', () => {
    expect(usageError(['init', '--detach', '--no-start']).message).toContain('contradict')
    expect(usageError(['status', '--data-dir', '']).message).toContain('--data-dir')
  })
})

describe('parseTtlMs', () => {
  test('accepts ms, s, m, h and d', () => {
    expect(parseTtlMs('500ms')).toBe(500)
    expect(parseTtlMs('90s')).toBe(90_000)
    expect(parseTtlMs('30m')).toBe(1_800_000)
    expect(parseTtlMs('3h')).toBe(10_800_000)
    expect(parseTtlMs('30d')).toBe(TOKEN_TTL_MAX_MS)
  })

  test.each([
    ['3x', 'must be a duration'],
    ['h', 'must be a duration'],
    ['1.5h', 'must be a duration'],
    ['', 'must be a duration'],
    ['0s', 'longer than zero'],
    ['31d', 'at most 30d'],
  ])('refuses %j (%s)', (text, why) => {
    expect(() => parseTtlMs(text)).toThrow(UsageError)
    expect(() => parseTtlMs(text)).toThrow(why)
  })

  test('a bad --ttl on the command line is a usage error', () => {
    expect(usageError(['token', 'create', '--ttl', '3 hours']).message).toContain('--ttl must be a duration')
  })
})

describe('main', () => {
  test('a usage error exits 2 with one sentence and the hint on stderr, nothing on stdout', async () => {
    const { code, stdout, stderr } = await runMain(['stauts'])
    expect(code).toBe(2)
    expect(stdout).toBe('')
    expect(stderr).toBe(
      'docklet: Unknown command "stauts".\nDid you mean `docklet status`? Run `docklet --help` to see the commands.\n',
    )
  })

  test('with --json a usage error is one JSON object on stdout', async () => {
    const { code, stdout, stderr } = await runMain(['token', 'create', '--ttl', '9y', '--json'])
    expect(code).toBe(2)
    expect(stderr).toBe('')
    expect(JSON.parse(stdout)).toEqual({
      error: { code: 'ERR_USAGE', message: '--ttl must be a duration like 30m, 3h or 7d, got "9y".' },
    })
  })

  test('talking to a data dir without a node fails with exit 1 and no stack trace', async () => {
    const { code, stderr } = await runMain(['status', '--data-dir', '/nonexistent/docklet-test'])
    expect(code).toBe(1)
    expect(stderr).toMatch(
      /^docklet: No docklet node is running on \/nonexistent\/docklet-test\/docklet\.sock\./,
    )
    expect(stderr).not.toContain('    at ')
  })

  test('--help prints the commands and exits 0', async () => {
    const { code, stdout } = await runMain(['--help'])
    expect(code).toBe(0)
    expect(stdout).toContain('admin member remove ID')
    expect(stdout).toBe(`${helpText(null)}`)
  })
})

describe('nodeVersionProblem', () => {
  test('Node 20 is refused with a sentence that says how to get a newer one', () => {
    const problem = nodeVersionProblem('v20.20.2', { typescript: false })
    expect(problem).toContain('needs Node 22 or newer')
    expect(problem).toContain('src/setup/ensure-deps.sh')
  })

  test('Node 22 without type stripping is refused; Node 24 with it is accepted', () => {
    expect(nodeVersionProblem('v22.5.0', {})).not.toBeNull()
    expect(nodeVersionProblem('v24.21.0', { typescript: 'strip' })).toBeNull()
  })
})

function status(overrides: Partial<ClusterStatus> = {}): ClusterStatus {
  const peer = (n: number) => `12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAApeer${n}-abcdef`
  return {
    cluster_id: '0123456789abcdef',
    self: { id: peer(2), pid: 4242, address: '/ip4/127.0.0.1/tcp/17002' },
    leader: { id: peer(1), address: '/ip4/127.0.0.1/tcp/17001' },
    term: 7,
    commit_index: 120,
    applied_index: 120,
    source: 'leader',
    members: [
      {
        id: peer(1),
        name: 'alpha',
        address: '/ip4/127.0.0.1/tcp/17001',
        portal: '',
        role: 'voter',
        online: true,
        last_contact_ms: 0,
        leaving: false,
      },
      {
        id: peer(2),
        name: 'beta',
        address: '/ip4/127.0.0.1/tcp/17002',
        portal: '',
        role: 'voter',
        online: true,
        last_contact_ms: 150,
        leaving: false,
      },
      {
        id: peer(3),
        name: 'gamma-long-name',
        address: '/ip6/::1/tcp/17003',
        portal: '',
        role: 'standby',
        online: false,
        last_contact_ms: 95_000,
        leaving: true,
      },
    ],
    ...overrides,
  }
}

describe('formatStatus', () => {
  test('prints a header and a table with short ids, HOST:PORT and the leader marked with *', () => {
    expect(formatStatus(status())).toBe(
      [
        'Cluster       0123456789abcdef',
        'Leader        peer1-abcdef at 127.0.0.1:17001',
        'Term          7',
        'Commit index  120',
        'This host     peer2-abcdef (pid 4242)',
        '',
        '   ID            NAME             ADDRESS          ROLE               ONLINE  LAST CONTACT',
        '*  peer1-abcdef  alpha            127.0.0.1:17001  voter              yes     0 ms ago',
        '   peer2-abcdef  beta             127.0.0.1:17002  voter              yes     this host',
        '   peer3-abcdef  gamma-long-name  [::1]:17003      standby (leaving)  no      1 min ago',
        '',
      ].join('\n'),
    )
  })

  test('says when no leader is known and the members come from this host', () => {
    const text = formatStatus(status({ leader: null, source: 'local' }))
    expect(text).toContain('Leader        none known (writes fail until one is elected)')
    expect(text).toContain('no leader answered')
    expect(text).not.toContain('*')
  })
})

describe('small formatters', () => {
  test('hostPort turns TCP multiaddrs into HOST:PORT and leaves anything else alone', () => {
    expect(hostPort('/ip4/10.0.0.5/tcp/7946')).toBe('10.0.0.5:7946')
    expect(hostPort('/dns/node-a.lan/tcp/7946/p2p/12D3KooWabc')).toBe('node-a.lan:7946')
    expect(hostPort('/ip4/10.0.0.5/udp/7946/quic')).toBe('/ip4/10.0.0.5/udp/7946/quic')
  })

  test('formatAge picks a unit that reads well', () => {
    expect(formatAge(null)).toBe('-')
    expect(formatAge(999)).toBe('999 ms ago')
    expect(formatAge(1_500)).toBe('1.5 s ago')
    expect(formatAge(7_200_000)).toBe('2 h ago')
  })

  test('formatTokenList shows one row per token, or how to create one', () => {
    expect(formatTokenList([])).toContain('docklet token create')
    expect(
      formatTokenList([
        {
          id: 'a1b2c3d4e5f6',
          created_at: '2025-01-01T10:00:00.000Z',
          expires_at: '2025-01-01T13:00:00.000Z',
          state: 'used',
          used_by: '12D3KooWxxxxxxxxxxxxxxLastTwelve',
        },
      ]),
    ).toBe(
      [
        'ID            STATE  CREATED               EXPIRES               USED BY',
        'a1b2c3d4e5f6  used   2025-01-01 10:00:00Z  2025-01-01 13:00:00Z  xxLastTwelve',
        '',
      ].join('\n'),
    )
  })
})
