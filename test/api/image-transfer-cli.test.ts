// `docklet image export` and `docklet image import` end to end, through the
// real CLI and real node processes on 127.0.0.1 (fake container runtime, no
// mesh: images are plain files). Cluster X (one node) builds the busybox
// image and exports it to a file; cluster Y (two nodes) imports that file on
// its node 1 under a new name, public, then exports it through its node 0,
// which does not hold it and so fetches it from node 1 over libp2p first;
// importing that second tar again adds nothing (the cluster has the image)
// and a tar whose manifest names another hash is refused, leaving the image
// list as it was. A user who does not own an image gets the node's sentence
// and no file. Building busybox needs root and a static /bin/busybox: under
// CI their absence fails the file, elsewhere it is skipped with the reason.
// Both clusters' processes and temp dirs go at the end, also on failure.

import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isStaticElf } from '../../runtime/image-builder.ts'
import { ProcessCluster } from '../support/process-cluster.ts'

function missingPrerequisite(): string | null {
  if (process.getuid?.() !== 0) return 'root (the busybox image is built with chroot)'
  try {
    if (isStaticElf(readFileSync('/bin/busybox'))) return null
  } catch {}
  return 'a static /bin/busybox (Debian package busybox-static)'
}

const missing = missingPrerequisite()
if (missing !== null) {
  const reason = `The image export/import CLI tests need ${missing}.`
  if (process.env.CI === 'true') throw new Error(reason)
  console.warn(`Skipping: ${reason}`)
}

const STEP_TIMEOUT_MS = 60_000

interface ImageView {
  id: string
  name: string
  owner: string
  visibility: string
  description: string
  hosts: string[]
  registered?: boolean
}

describe.skipIf(missing !== null)('docklet image export and import between clusters', () => {
  let x: ProcessCluster
  let y: ProcessCluster
  let dir = ''
  let busybox: ImageView
  let imported: ImageView

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'docklet-image-cli-'))
    x = new ProcessCluster({ name: 'docklet-imgx-' })
    y = new ProcessCluster({ name: 'docklet-imgy-' })
    await x.init()
    await y.init()
    await y.join(1)
    await x.cliOk(0, ['image', 'build', 'busybox'], { timeoutMs: STEP_TIMEOUT_MS })
    busybox = (await x.cliOk<ImageView[]>(0, ['image', 'list'])).find((image) => image.name === 'busybox')!
  }, 120_000)

  afterAll(async () => {
    await x?.cleanup()
    await y?.cleanup()
    if (dir !== '') await rm(dir, { recursive: true, force: true })
  }, 60_000)

  it(
    'exports an image to a tar that starts with its manifest',
    async () => {
      const file = join(dir, 'busybox.tar')
      const answer = await x.cliOk<{ bytes: number }>(0, ['image', 'export', 'busybox', file])
      expect(answer.bytes).toBe(statSync(file).size)
      const entries = execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n')
      expect(entries[0]).toBe('manifest.json')
      expect(entries).toContain('rootfs/bin/busybox')
      const manifest = JSON.parse(execFileSync('tar', ['-xOf', file, 'manifest.json'], { encoding: 'utf8' }))
      expect(manifest.hash).toBe(busybox.id)
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'imports the tar into another cluster as a new public image held by the importing node',
    async () => {
      imported = await y.cliOk<ImageView>(1, [
        'image',
        'import',
        join(dir, 'busybox.tar'),
        '--name',
        'bb',
        '--description',
        'busybox from cluster X',
        '--public',
      ])
      expect(imported).toMatchObject({
        id: busybox.id,
        name: 'bb',
        owner: 'admin',
        visibility: 'public',
        description: 'busybox from cluster X',
        hosts: [y.node(1).id],
        registered: true,
      })
      const seen = await y.cliOk<ImageView[]>(0, ['image', 'list'])
      expect(seen.map((image) => image.name)).toEqual(['bb'])
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'exports through a node that lacks the image, which fetches it first and then holds it too',
    async () => {
      const file = join(dir, 'bb.tar')
      await y.cliOk(0, ['image', 'export', 'bb', file])
      const manifest = JSON.parse(execFileSync('tar', ['-xOf', file, 'manifest.json'], { encoding: 'utf8' }))
      expect(manifest.hash).toBe(busybox.id)
      const bb = (await y.cliOk<ImageView[]>(0, ['image', 'list'])).find((image) => image.name === 'bb')!
      expect([...bb.hosts].sort()).toEqual([y.node(0).id, y.node(1).id].sort())

      const again = await y.cliOk<ImageView>(0, ['image', 'import', file, '--name', 'bb-again'])
      expect(again).toMatchObject({ id: busybox.id, name: 'bb', registered: false })
      expect((await y.cliOk<ImageView[]>(0, ['image', 'list'])).map((image) => image.name)).toEqual(['bb'])
    },
    STEP_TIMEOUT_MS,
  )

  it(
    'refuses a tar whose files do not hash to the hash its manifest names',
    async () => {
      const tree = join(dir, 'forged')
      await mkdir(tree)
      execFileSync('tar', ['-C', tree, '-xf', join(dir, 'busybox.tar')])
      const manifest = JSON.parse(readFileSync(join(tree, 'manifest.json'), 'utf8'))
      writeFileSync(join(tree, 'manifest.json'), JSON.stringify({ ...manifest, hash: 'f'.repeat(64) }))
      const forged = join(dir, 'forged.tar')
      execFileSync('tar', ['-C', tree, '--numeric-owner', '-cf', forged, 'manifest.json', 'rootfs'])
      const result = await y.cli(1, ['image', 'import', forged, '--name', 'forged'])
      expect(result.code).not.toBe(0)
      expect(result.json).toMatchObject({
        error: {
          code: 'ERR_BAD_REQUEST',
          message: `The tree in the image tar hashes to ${busybox.id}, not to ${'f'.repeat(64)} as its manifest says: the tar is damaged or was changed. Export the image again.`,
        },
      })
      expect((await y.cliOk<ImageView[]>(1, ['image', 'list'])).map((image) => image.name)).toEqual(['bb'])
    },
    STEP_TIMEOUT_MS,
  )

  it(
    "gives a user the node's sentence for an image they do not own, and writes no file",
    async () => {
      await y.cliOk(0, ['admin', 'user', 'add', 'alice', '--password', 'alice-password-1'])
      const file = join(dir, 'not-mine.tar')
      const result = await y.cli(0, ['image', 'export', 'bb', file, '--user', 'alice'])
      expect(result.code).not.toBe(0)
      expect(result.json).toMatchObject({
        error: {
          code: 'ERR_IMAGE_NOT_FOUND',
          message: 'alice has no image bb; `GET /api/v1/images` lists them.',
        },
      })
      expect(existsSync(file)).toBe(false)
    },
    STEP_TIMEOUT_MS,
  )
})
