// Builds the browser app: ui/src -> ui/dist (index.html + assets/ with
// content-hashed names and a gzipped copy of each text asset).
//
//   node ui/build.ts     (npm run build:ui)
//
// The new build is written beside ui/dist and swapped in with renames, so a
// node serving ui/dist never sees a half-written app. No source maps ship:
// the app is small and readable in ui/src. A bundle larger than its limit
// fails the build, so growth is a decision, not an accident.

import { existsSync } from 'node:fs'
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'

const uiDir = dirname(fileURLToPath(import.meta.url))
const distDir = join(uiDir, 'dist')
/** The script bundle's limit (minified, before gzip). */
export const scriptBytesMax = 160 * 1024
/** The stylesheet's limit (minified). */
export const styleBytesMax = 48 * 1024
/** Text assets smaller than this gain nothing from a gzipped copy. */
const gzipBytesMin = 512

export interface UiBuildResult {
  distDir: string
  files: Array<{ name: string; bytes: number; gzipBytes: number | null }>
}

function fail(message: string): never {
  throw new Error(`The UI build failed: ${message}`)
}

export async function buildUi(): Promise<UiBuildResult> {
  const staging = join(uiDir, `dist.tmp-${process.pid}`)
  await rm(staging, { recursive: true, force: true })
  await mkdir(join(staging, 'assets'), { recursive: true })
  try {
    const result = await build({
      absWorkingDir: uiDir,
      entryPoints: { app: join(uiDir, 'src/main.tsx') },
      bundle: true,
      minify: true,
      format: 'esm',
      target: ['es2022', 'chrome100', 'firefox100', 'safari15'],
      outdir: join(staging, 'assets'),
      entryNames: '[name]-[hash]',
      assetNames: '[name]-[hash]',
      jsx: 'automatic',
      jsxImportSource: 'preact',
      sourcemap: false,
      legalComments: 'none',
      metafile: true,
      logLevel: 'silent',
      define: { 'process.env.NODE_ENV': '"production"' },
    })
    if (result.warnings.length > 0)
      fail(result.warnings.map((w) => `${w.location?.file ?? ''}: ${w.text}`).join('; '))
    const outputs = Object.keys(result.metafile.outputs).map((path) => resolve(uiDir, path))
    const script = outputs.find((path) => path.endsWith('.js'))
    const style = outputs.find((path) => path.endsWith('.css'))
    if (script === undefined || style === undefined) fail('esbuild wrote no script or no stylesheet.')
    const template = await readFile(join(uiDir, 'index.html'), 'utf8')
    if (!template.includes('<!--styles-->') || !template.includes('<!--scripts-->'))
      fail('ui/index.html lacks the <!--styles--> or <!--scripts--> placeholder.')
    const html = template
      .replace('<!--styles-->', `<link rel="stylesheet" href="/assets/${basename(style)}">`)
      .replace('<!--scripts-->', `<script type="module" src="/assets/${basename(script)}"></script>`)
    await writeFile(join(staging, 'index.html'), html)

    const files: UiBuildResult['files'] = []
    for (const path of outputs) {
      const bytes = (await stat(path)).size
      const limit =
        path === script ? scriptBytesMax : path === style ? styleBytesMax : Number.POSITIVE_INFINITY
      if (bytes > limit)
        fail(`${basename(path)} is ${bytes} bytes, over its ${limit}-byte limit in ui/build.ts.`)
      let gzipBytes: number | null = null
      if (bytes >= gzipBytesMin && /\.(js|css|svg|json)$/.test(path)) {
        const gzipped = gzipSync(await readFile(path), { level: 9 })
        if (gzipped.length < bytes) {
          await writeFile(`${path}.gz`, gzipped)
          gzipBytes = gzipped.length
        }
      }
      files.push({ name: `assets/${basename(path)}`, bytes, gzipBytes })
    }

    // Swap: dist -> dist.old, staging -> dist, drop dist.old.
    const old = join(uiDir, `dist.old-${process.pid}`)
    if (existsSync(distDir)) await rename(distDir, old)
    await rename(staging, distDir)
    await rm(old, { recursive: true, force: true })
    return { distDir, files }
  } catch (error) {
    await rm(staging, { recursive: true, force: true })
    throw error
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const started = Date.now()
    const { files } = await buildUi()
    for (const file of files) {
      const gzip = file.gzipBytes === null ? '' : ` (${(file.gzipBytes / 1024).toFixed(1)} KiB gzipped)`
      process.stdout.write(`ui/dist/${file.name}  ${(file.bytes / 1024).toFixed(1)} KiB${gzip}\n`)
    }
    process.stdout.write(`ui/dist built in ${Date.now() - started} ms\n`)
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`)
    process.exit(1)
  }
}
