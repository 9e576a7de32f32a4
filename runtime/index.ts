// The public surface of runtime/: src/ imports from here only.

export type { CommandRunner, RunOptions, RunResult } from './command-runner.ts'
export * from './container-runtime.ts'
export { createRuntime, RUNTIME_DRIVERS, type RuntimeDriverName } from './drivers.ts'
export * from './errors.ts'
export { type FakeExecHandler, type FakeOperation, FakeRuntime } from './fake-runtime.ts'
export {
  type AptSource,
  DEBIAN_PACKAGES,
  ImageBuilder,
  type ImageBuilderInit,
  imageAptSources,
  JUPYTER_CONFIG_PATH,
  type JupyterConfig,
  parseAptSources,
  renderJupyterConfig,
} from './image-builder.ts'
export { IMPORT_BYTES_MAX, type ImageManifest, ImageStore, type ImageStoreInit } from './image-store.ts'
export { type LxcHostFeatures, renderLxcConfig } from './lxc-config.ts'
export { detectHostFeatures, LxcRuntime, type LxcRuntimeInit } from './lxc-runtime.ts'
export { Revert } from './revert.ts'
export { hashTree, type TreeDigest } from './tree-hash.ts'
