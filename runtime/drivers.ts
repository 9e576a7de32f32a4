// The driver map (Incus habit): the node picks a runtime by name from config,
// tests pick 'fake'. Adding a driver means one entry here.

import { join } from 'node:path'
import type { CommandRunner } from './command-runner.ts'
import type { ContainerRuntime } from './container-runtime.ts'
import { FakeRuntime } from './fake-runtime.ts'
import { LxcRuntime } from './lxc-runtime.ts'

export type RuntimeDriverName = 'lxc' | 'fake'

export const RUNTIME_DRIVERS: Record<
  RuntimeDriverName,
  (init: { lxcpath: string; runner: CommandRunner }) => ContainerRuntime
> = {
  lxc: (init) => new LxcRuntime(init),
  fake: (init) => new FakeRuntime({ upperRoot: join(init.lxcpath, 'fake-upper') }),
}

export function createRuntime(
  driver: RuntimeDriverName,
  init: { lxcpath: string; runner: CommandRunner },
): ContainerRuntime {
  const factory = RUNTIME_DRIVERS[driver]
  if (factory === undefined) throw new Error(`Unknown container runtime driver "${driver}"; use lxc or fake.`)
  return factory(init)
}
