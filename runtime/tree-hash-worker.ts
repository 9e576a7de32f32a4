// The worker thread of hashTree (tree-hash.ts): walks one tree with
// synchronous fs calls and posts back its digest or what stopped it.

import { parentPort, workerData } from 'node:worker_threads'
import { hashTreeSync, type TreeHashReply } from './tree-hash.ts'

const { root } = workerData as { root: string }
let reply: TreeHashReply
try {
  reply = { ok: true, digest: hashTreeSync(root) }
} catch (error) {
  const code = (error as { code?: unknown }).code
  reply = {
    ok: false,
    code: typeof code === 'string' ? code : undefined,
    message: error instanceof Error ? error.message : String(error),
  }
}
parentPort?.postMessage(reply)
