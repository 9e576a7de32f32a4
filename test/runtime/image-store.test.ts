// The content-addressed image store on real files: the busybox image is
// built and hashes the same when rebuilt; verify catches a tampered tree;
// export/import moves an image to a second store (openTar announcing the
// tar's exact size) and refuses bytes that do not match the expected hash
// (leaving nothing); saveUpper flattens an upper
// layer the kernel wrote (a whiteout for a deleted file, an opaque dir for a
// dir deleted and re-created) onto its parent, leaving out the vnode's SSH
// host keys. Needs root (chroot, mounts);
// all under a temp dir removed in afterAll.

import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { appendFile, chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { CommandRunner, ImageManifest } from '../../runtime/index.ts'
import { hashTree, ImageBuilder, ImageStore } from '../../runtime/index.ts'
import { mountsUnder, unmountAll } from '../../runtime/mounts.ts'
import { ExecaCommandRunner } from '../../src/exec/command-runner.ts'
import { prerequisiteVerdict } from './prerequisites.ts'

const verdict = prerequisiteVerdict()

describe.skipIf(verdict.skip)('ImageStore', () => {
  const runner: CommandRunner = new ExecaCommandRunner()
  let root = ''
  let store: ImageStore
  let busybox: ImageManifest

  beforeAll(async () => {
    if (verdict.failure !== null) throw new Error(verdict.failure)
    root = await mkdtemp(join(tmpdir(), 'docklet-images-'))
    store = new ImageStore({ dir: join(root, 'a'), runner, now: () => new Date('2026-01-01T00:00:00Z') })
    await store.open()
    busybox = await new ImageBuilder({ store, runner }).buildBusybox()
  })

  afterAll(async () => {
    if (root === '') return
    for (const point of await mountsUnder(root)) await unmountAll(runner, point).catch(() => {})
    await rm(root, { recursive: true, force: true })
  })

  it('builds a busybox image that boots busybox init and hashes the same when built again', async () => {
    expect(busybox).toMatchObject({ name: 'busybox', createdAt: '2026-01-01T00:00:00.000Z' })
    expect(busybox.hash).toMatch(/^[0-9a-f]{64}$/)
    const rootfs = store.rootfsPath(busybox.hash)
    expect(execFileSync('readlink', [join(rootfs, 'sbin/init')], { encoding: 'utf8' }).trim()).toBe(
      '/bin/busybox',
    )
    expect(await readFile(join(rootfs, 'etc/inittab'), 'utf8')).toContain('::sysinit:/etc/init.d/rcS')
    const again = await new ImageBuilder({ store, runner }).buildBusybox({ name: 'other-name' })
    expect(again.hash).toBe(busybox.hash)
    expect(await store.list()).toEqual([busybox])
  })

  it('hashes trees by content and mode but not by mtime', async () => {
    const a = join(root, 'tree-a')
    await mkdir(join(a, 'dir'), { recursive: true })
    await writeFile(join(a, 'dir/file'), 'content')
    const b = join(root, 'tree-b')
    await cp(a, b, { recursive: true, preserveTimestamps: false })
    expect((await hashTree(b)).hash).toBe((await hashTree(a)).hash)
    await chmod(join(b, 'dir/file'), 0o600)
    expect((await hashTree(b)).hash).not.toBe((await hashTree(a)).hash)
    // The walk runs on a worker thread: its failures come back as errors naming the path.
    const missing = join(root, 'no-such-tree')
    await expect(hashTree(missing)).rejects.toMatchObject({
      code: 'ENOENT',
      message: expect.stringContaining(missing),
    })
  })

  it('verify detects a tree changed after it was stored', async () => {
    const tree = join(await store.createStaging('tamper'), 'rootfs')
    await cp(store.rootfsPath(busybox.hash), tree, { recursive: true, verbatimSymlinks: true })
    const copy = await store.commitTree(tree, { name: 'copy' })
    expect(copy.hash).toBe(busybox.hash)
    const scratch = await store.commitTree(await makeTree(store, { 'x.txt': 'x' }), { name: 'scratch' })
    await store.verify(scratch.hash)
    await appendFile(join(store.rootfsPath(scratch.hash), 'x.txt'), 'tampered')
    await expect(store.verify(scratch.hash)).rejects.toMatchObject({ code: 'ERR_IMAGE_HASH_MISMATCH' })
    await store.remove(scratch.hash)
    await store.remove(scratch.hash)
    expect(await store.get(scratch.hash)).toBeNull()
  })

  it('moves an image to another store by tar and refuses a tar that does not match the expected hash', async () => {
    const other = new ImageStore({ dir: join(root, 'b'), runner })
    await other.open()
    const tar = await store.openTar(busybox.hash)
    const chunks: Buffer[] = []
    for await (const chunk of tar.stream) chunks.push(chunk as Buffer)
    const bytes = Buffer.concat(chunks)
    expect(bytes.byteLength).toBe(tar.sizeBytes)
    const imported = await other.importTar(Readable.from([bytes]), busybox.hash)
    expect(imported).toEqual(busybox)
    await other.verify(busybox.hash)

    const third = new ImageStore({ dir: join(root, 'c'), runner })
    await third.open()
    const wrong = 'f'.repeat(64)
    await expect(third.importTar(await store.exportTar(busybox.hash), wrong)).rejects.toMatchObject({
      code: 'ERR_IMAGE_HASH_MISMATCH',
    })
    await expect(third.importTar(Readable.from([Buffer.from('not a tar')]), wrong)).rejects.toThrow()
    expect(await third.list()).toEqual([])
    expect(await readdir(join(root, 'c', 'tmp'))).toEqual([])
  })

  it('saveUpper applies deletions, opaque dirs and new files of an overlay upper layer', async () => {
    const parentTree = await makeTree(store, {
      'etc/keep': 'keep',
      'etc/gone': 'gone',
      'etc/ssh/sshd_config': 'PermitRootLogin no',
      'etc/ssh/ssh_host_rsa_key': 'the parent has none after a build; a hand-made tree may',
      'data/old1': 'old',
      'data/old2': 'old',
    })
    const parent = await store.commitTree(parentTree, { name: 'parent' })
    // Let the kernel write the upper layer: change files through a real overlay.
    const work = join(root, 'ovl')
    for (const dir of ['upper', 'work', 'merged']) await mkdir(join(work, dir), { recursive: true })
    const merged = join(work, 'merged')
    execFileSync('mount', [
      '-t',
      'overlay',
      '-o',
      `lowerdir=${store.rootfsPath(parent.hash)},upperdir=${work}/upper,workdir=${work}/work,redirect_dir=off,index=off,metacopy=off`,
      'overlay',
      merged,
    ])
    try {
      await rm(join(merged, 'etc/gone'))
      await rm(join(merged, 'data'), { recursive: true })
      await mkdir(join(merged, 'data'))
      await writeFile(join(merged, 'data/new'), 'new')
      await writeFile(join(merged, 'etc/keep'), 'changed')
      // What a booted vnode's rcS writes: its own host keys.
      await writeFile(join(merged, 'etc/ssh/ssh_host_ed25519_key'), 'private key of this vnode')
      await writeFile(join(merged, 'etc/ssh/ssh_host_ed25519_key.pub'), 'public key of this vnode')
    } finally {
      await unmountAll(runner, merged)
    }
    const saved = await store.saveUpper(join(work, 'upper'), parent.hash, 'saved')
    const tree = store.rootfsPath(saved.hash)
    expect(saved).toMatchObject({ name: 'saved', parent: parent.hash })
    expect(await readFile(join(tree, 'etc/keep'), 'utf8')).toBe('changed')
    expect(existsSync(join(tree, 'etc/gone'))).toBe(false)
    expect((await readdir(join(tree, 'data'))).sort()).toEqual(['new'])
    // The vnode's SSH host keys are not handed to every vnode of the new image; the config stays.
    expect(await readdir(join(tree, 'etc/ssh'))).toEqual(['sshd_config'])
    await store.verify(saved.hash)
    expect(await mountsUnder(root)).toEqual([])
  })
})

/** A small tree in the store's staging, from path → content. */
async function makeTree(store: ImageStore, files: Record<string, string>): Promise<string> {
  const tree = join(await store.createStaging('tree'), 'rootfs')
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(tree, path, '..'), { recursive: true })
    await writeFile(join(tree, path), content)
  }
  return tree
}
