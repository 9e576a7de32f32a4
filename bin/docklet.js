#!/usr/bin/env node
// The `docklet` executable. Plain JavaScript that any Node can parse, so an
// old Node gets a sentence saying what to install instead of a syntax or
// module error from the TypeScript sources it cannot load.

const major = Number(process.versions.node.split('.')[0])
if (major < 22 || !process.features.typescript) {
  process.stderr.write(
    `docklet: docklet needs Node 22 or newer with TypeScript type stripping (Node 24 recommended), but this is Node ${process.version}. ` +
      'Install it with `sudo bash src/setup/ensure-deps.sh` (it puts Node 24 in /opt/docklet/node/bin) and run ' +
      'docklet with that node, or use /usr/local/bin/docklet from `sudo bash src/setup/install.sh`.\n',
  )
  process.exit(1)
}

// Cache compiled (and type-stripped) modules across runs: a CLI call then starts in a fraction of the time.
// getBuiltinModule rather than import(): an ES import of a builtin evaluates all of its lazy exports.
process.getBuiltinModule('node:module').enableCompileCache?.()
const { runCli } = await import('../src/cli.ts')
await runCli(process.argv.slice(2))
