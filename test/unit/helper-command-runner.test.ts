// HelperCommandRunner keeps ExecaCommandRunner's contract while the commands
// run in helper processes: output, exit codes, stdin, env and cwd come back as
// they would from a direct spawn; a failure, a timeout (the command is
// killed) and a missing program are CommandErrors naming the command;
// captured output is cut to its tail; commands spread over at most the given
// number of helpers and run at once there; close() stops the helpers and
// refuses later commands; a helper that dies fails its commands and the next
// command gets a new helper. Runs real, harmless programs (sh, cat, sleep);
// the one a killed helper leaves behind is killed by the test.

import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { CommandError } from '../../src/exec/command-runner.ts'
import { HelperCommandRunner } from '../../src/exec/helper-command-runner.ts'
import { OUTPUT_BYTES_MAX } from '../../src/exec/helper-protocol.ts'
import { isAlive } from '../support/process-cluster.ts'

const runners: HelperCommandRunner[] = []
afterEach(() => {
  for (const runner of runners.splice(0)) runner.close()
})

function newRunner(helpers?: number): HelperCommandRunner {
  const runner = new HelperCommandRunner(helpers === undefined ? {} : { helpers })
  runners.push(runner)
  return runner
}

async function waitUntil(done: () => boolean, giveUpMs: number): Promise<boolean> {
  const deadline = Date.now() + giveUpMs
  while (!done()) {
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return true
}

describe('HelperCommandRunner', () => {
  it('returns the exit code and output of a command, with its stdin, env and cwd', async () => {
    const runner = newRunner()
    const result = await runner.run(
      'sh',
      ['-c', 'cat; printf " %s %s" "$DOCKLET_TEST_VALUE" "$(pwd)"; printf oops >&2'],
      { timeoutMs: 10_000, input: 'from stdin', env: { DOCKLET_TEST_VALUE: 'v1' }, cwd: '/tmp' },
    )
    expect(result).toEqual({ exitCode: 0, stdout: 'from stdin v1 /tmp', stderr: 'oops' })
    const bytes = await runner.run('cat', [], { timeoutMs: 10_000, input: new Uint8Array([104, 105]) })
    expect(bytes.stdout).toBe('hi')
  })

  it('fails a command whose exit code is not ok with a CommandError naming it and its stderr', async () => {
    const runner = newRunner()
    const failing = runner.run('sh', ['-c', 'echo "no such thing" >&2; exit 3'], { timeoutMs: 10_000 })
    await expect(failing).rejects.toBeInstanceOf(CommandError)
    await expect(failing).rejects.toMatchObject({
      code: 'ERR_COMMAND',
      exitCode: 3,
      message: expect.stringMatching(/^`sh -c .*` exited with 3: no such thing$/),
    })
    const allowed = await runner.run('sh', ['-c', 'exit 3'], { timeoutMs: 10_000, okExitCodes: [0, 3] })
    expect(allowed.exitCode).toBe(3)
  })

  it('kills a command that outlives its timeout and says so', async () => {
    const runner = newRunner()
    const startedMs = Date.now()
    await expect(
      runner.run('sh', ['-c', 'echo started >&2; exec sleep 30'], { timeoutMs: 300 }),
    ).rejects.toMatchObject({ exitCode: null, message: expect.stringContaining('timed out after 300 ms') })
    // SIGTERM ends sleep at once: the answer comes when the process is gone, not after 30 s.
    expect(Date.now() - startedMs).toBeLessThan(10_000)
  })

  it('says a program that does not exist could not run', async () => {
    const runner = newRunner()
    await expect(runner.run('docklet-no-such-program', ['x'], { timeoutMs: 10_000 })).rejects.toMatchObject({
      message: expect.stringMatching(/^`docklet-no-such-program x` could not run: .*ENOENT/),
    })
  })

  it('keeps only the tail of a large output', async () => {
    const runner = newRunner()
    const result = await runner.run(
      'sh',
      ['-c', `head -c ${OUTPUT_BYTES_MAX + 4096} /dev/zero | tr '\\0' a; printf END`],
      { timeoutMs: 30_000 },
    )
    expect(result.stdout.length).toBe(OUTPUT_BYTES_MAX)
    expect(result.stdout.endsWith('aaaEND')).toBe(true)
  })

  it('spreads commands over at most the given number of helpers, which run them at once', async () => {
    const runner = newRunner(2)
    const startedMs = Date.now()
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, index) =>
        runner.run('sh', ['-c', `sleep 0.5; echo ${index}`], { timeoutMs: 10_000 }),
      ),
    )
    const elapsedMs = Date.now() - startedMs
    expect(results.map((result) => result.stdout.trim())).toEqual(['0', '1', '2', '3', '4', '5'])
    expect(runner.helperCount).toBe(2)
    // One after the other they would take 3 s.
    expect(elapsedMs).toBeLessThan(2_500)
  })

  it('starts every helper at once when asked to, and uses them all', async () => {
    const runner = newRunner(3)
    runner.start()
    expect(runner.helperCount).toBe(3)
    const parents = await Promise.all(
      Array.from({ length: 3 }, () =>
        runner.run('sh', ['-c', 'sleep 0.2; echo $PPID'], { timeoutMs: 10_000 }),
      ),
    )
    expect(new Set(parents.map((result) => result.stdout.trim())).size).toBe(3)
    expect(runner.helperCount).toBe(3)
  })

  it('stops its helpers on close and refuses commands after it', async () => {
    const runner = newRunner(1)
    const { stdout } = await runner.run('sh', ['-c', 'echo $PPID'], { timeoutMs: 10_000 })
    const helperPid = Number(stdout.trim())
    expect(isAlive(helperPid)).toBe(true)
    runner.close()
    expect(await waitUntil(() => !isAlive(helperPid), 5_000)).toBe(true)
    expect(runner.helperCount).toBe(0)
    await expect(runner.run('true', [], { timeoutMs: 10_000 })).rejects.toMatchObject({
      message: expect.stringContaining('the command runner is closed'),
    })
  })

  it('fails the commands of a helper that died and starts a new one for the next command', async () => {
    const runner = newRunner(1)
    const helperPid = Number((await runner.run('sh', ['-c', 'echo $PPID'], { timeoutMs: 10_000 })).stdout)
    const pidFile = join(await mkdtemp(join(tmpdir(), 'docklet-helper-')), 'pid')
    const running = runner.run('sh', ['-c', `echo $$ > ${pidFile}; exec sleep 30`], { timeoutMs: 60_000 })
    running.catch(() => {})
    try {
      expect(
        await waitUntil(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n'), 5_000),
      ).toBe(true)
      process.kill(helperPid, 'SIGKILL')
      await expect(running).rejects.toMatchObject({
        message: expect.stringContaining('the command helper exited (SIGKILL)'),
      })
    } finally {
      // The helper's orphan is ours to end.
      const orphan = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : 0
      if (orphan > 0 && isAlive(orphan)) process.kill(orphan, 'SIGKILL')
      await rm(dirname(pidFile), { recursive: true, force: true })
    }
    const next = Number((await runner.run('sh', ['-c', 'echo $PPID'], { timeoutMs: 10_000 })).stdout)
    expect(next).not.toBe(helperPid)
    expect(isAlive(next)).toBe(true)
  })
})
