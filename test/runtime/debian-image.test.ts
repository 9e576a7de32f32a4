// The Debian workspace image, built for real with debootstrap from the host's
// apt sources (minutes, network to the mirror): opt-in only, with
// DOCKLET_TEST_DEBIAN_IMAGE=1. Checks progress lines arrive, the image is
// stored under its hash and verifies, and it holds python3, sshd, jupyter
// and busybox init. Cleans its temp dir in afterAll.

import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ImageBuilder, ImageStore } from '../../runtime/index.ts'
import { mountsUnder, unmountAll } from '../../runtime/mounts.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'

const enabled = process.env.DOCKLET_TEST_DEBIAN_IMAGE === '1'

describe.runIf(enabled)('ImageBuilder.buildDebian', () => {
  const runner = new ExecaCommandRunner()
  let root = ''

  afterAll(async () => {
    if (root === '') return
    for (const point of await mountsUnder(root)) await unmountAll(runner, point).catch(() => {})
    await rm(root, { recursive: true, force: true })
  })

  it(
    'builds a verified Debian image with python3, openssh-server and jupyter notebook',
    async () => {
      root = await mkdtemp(join(tmpdir(), 'docklet-debian-'))
      const store = new ImageStore({ dir: root, runner })
      await store.open()
      const lines: string[] = []
      const image = await new ImageBuilder({ store, runner }).buildDebian({
        onProgress: (line) => lines.push(line),
      })
      expect(lines[0]).toContain('debootstrap')
      expect(lines.at(-1)).toContain(image.hash)
      await store.verify(image.hash)
      const rootfs = store.rootfsPath(image.hash)
      for (const path of [
        'usr/bin/python3',
        'usr/sbin/sshd',
        'usr/bin/jupyter-notebook',
        'bin/busybox',
        'etc/inittab',
      ]) {
        expect(existsSync(join(rootfs, path)), path).toBe(true)
      }
    },
    60 * 60_000,
  )
})
