// An in-memory ContainerRuntime for unit tests of the layers above (host
// agent, scheduler loops): same validation and state rules as LxcRuntime, no
// host changes. exec answers `hostname` and `cat <file>` from what create
// wrote; anything else goes to an injectable handler. failNext() makes the
// next call of an operation throw, to test retries and back-off.

import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import {
  assertContainerName,
  type ContainerInfo,
  type ContainerMetrics,
  type ContainerRuntime,
  type ContainerSpec,
  type ContainerState,
  type ExecOptions,
  type ExecResult,
  renderHostsFile,
  validateContainerSpec,
} from './container-runtime.ts'
import {
  ContainerExistsError,
  ContainerNotFoundError,
  ContainerNotRunningError,
  InvalidSpecError,
} from './errors.ts'

export type FakeOperation = 'create' | 'start' | 'stop' | 'destroy' | 'exec'
export type FakeExecHandler = (
  name: string,
  argv: readonly string[],
  files: Map<string, string>,
) => ExecResult | null

/** A fake host with more containers than this is a test bug (a leak in a loop). */
export const FAKE_CONTAINERS_MAX = 100_000

interface FakeContainer {
  spec: ContainerSpec
  state: 'running' | 'stopped'
  files: Map<string, string>
}

export class FakeRuntime implements ContainerRuntime {
  readonly #containers = new Map<string, FakeContainer>()
  readonly #failures = new Map<FakeOperation, Error[]>()
  readonly #execHandler: FakeExecHandler | undefined
  /** Every call, in order, for assertions like "start was retried twice". */
  readonly calls: Array<{ operation: FakeOperation; name: string }> = []

  readonly #upperRoot: string | undefined

  constructor(options: { execHandler?: FakeExecHandler; upperRoot?: string } = {}) {
    this.#execHandler = options.execHandler
    this.#upperRoot = options.upperRoot
  }

  /** The next call of `operation` throws `error` (queued: call twice to fail twice). */
  failNext(operation: FakeOperation, error: Error): void {
    const queue = this.#failures.get(operation) ?? []
    queue.push(error)
    this.#failures.set(operation, queue)
  }

  #enter(operation: FakeOperation, name: string): void {
    this.calls.push({ operation, name })
    const error = this.#failures.get(operation)?.shift()
    if (error !== undefined) throw error
  }

  #get(name: string): FakeContainer {
    assertContainerName(name)
    const container = this.#containers.get(name)
    if (container === undefined) throw new ContainerNotFoundError(name)
    return container
  }

  async create(spec: ContainerSpec): Promise<void> {
    validateContainerSpec(spec)
    this.#enter('create', spec.name)
    if (this.#containers.has(spec.name)) throw new ContainerExistsError(spec.name)
    if (this.#containers.size >= FAKE_CONTAINERS_MAX)
      throw new Error(`More than ${FAKE_CONTAINERS_MAX} fake containers.`)
    const files = new Map<string, string>()
    files.set('/etc/hostname', `${spec.hostname}\n`)
    files.set('/etc/hosts', renderHostsFile(spec.hosts))
    for (const file of spec.files ?? []) {
      files.set(
        file.path,
        typeof file.content === 'string' ? file.content : Buffer.from(file.content).toString(),
      )
    }
    this.#containers.set(spec.name, { spec: structuredClone(spec), state: 'stopped', files })
  }

  async start(name: string): Promise<void> {
    const container = this.#get(name)
    this.#enter('start', name)
    container.state = 'running'
  }

  async stop(name: string, _options: { timeoutMs: number }): Promise<void> {
    const container = this.#get(name)
    this.#enter('stop', name)
    container.state = 'stopped'
  }

  async destroy(name: string): Promise<void> {
    assertContainerName(name)
    this.#enter('destroy', name)
    this.#containers.delete(name)
  }

  async exec(name: string, argv: readonly string[], _options: ExecOptions): Promise<ExecResult> {
    const container = this.#get(name)
    this.#enter('exec', name)
    if (argv.length === 0) throw new InvalidSpecError('exec needs a command: argv is empty.')
    if (container.state !== 'running') throw new ContainerNotRunningError(name)
    const handled = this.#execHandler?.(name, argv, container.files)
    if (handled !== undefined && handled !== null) return handled
    if (argv[0] === 'hostname' && argv.length === 1)
      return { exitCode: 0, stdout: `${container.spec.hostname}\n`, stderr: '' }
    if (argv[0] === 'cat' && argv.length === 2) {
      const content = container.files.get(argv[1]!)
      if (content !== undefined) return { exitCode: 0, stdout: content, stderr: '' }
      return { exitCode: 1, stdout: '', stderr: `cat: can't open '${argv[1]}': No such file or directory\n` }
    }
    return { exitCode: 127, stdout: '', stderr: `${argv[0]}: not found in the fake runtime\n` }
  }

  async state(name: string): Promise<ContainerState> {
    assertContainerName(name)
    return this.#containers.get(name)?.state ?? 'absent'
  }

  async list(): Promise<ContainerInfo[]> {
    return [...this.#containers.values()]
      .map((c) => ({
        name: c.spec.name,
        hostname: c.spec.hostname,
        imagePath: c.spec.imagePath,
        state: c.state,
      }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }

  async metrics(name: string): Promise<ContainerMetrics> {
    const container = this.#get(name)
    const running = container.state === 'running'
    return {
      cpuUsageMs: 0,
      memoryUsageBytes: 0,
      memoryLimitBytes: running ? container.spec.limits.memoryMb * 1024 * 1024 : null,
      diskUsedBytes: 0,
      diskLimitBytes: container.spec.limits.diskMb * 1024 * 1024,
    }
  }

  async upperDir(name: string): Promise<string> {
    const container = this.#get(name)
    if (this.#upperRoot === undefined) return `/fake/${name}/upper`
    const upper = join(this.#upperRoot, name, 'upper')
    for (const [path, content] of container.files) {
      await mkdir(dirname(join(upper, path)), { recursive: true })
      await writeFile(join(upper, path), content)
    }
    await mkdir(upper, { recursive: true })
    return upper
  }
}
