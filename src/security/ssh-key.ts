// The SSH key pair a user's vnodes share (root's ~/.ssh and
// authorized_keys in every vnode, so `ssh host-1` works inside a vcluster,
// as in the original docklet). Ed25519, written in OpenSSH's own formats:
// "ssh-ed25519 AAAA…" for the public key and an unencrypted
// openssh-key-v1 block for the private key (what ssh-keygen writes).

import { generateKeyPairSync, randomBytes } from 'node:crypto'
import type { SshKeyPair } from '../state/account-state.ts'

const KEY_TYPE = 'ssh-ed25519'
const AUTH_MAGIC = 'openssh-key-v1\0'
const BLOCK_BYTES = 8
const LINE_CHARS = 70

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4)
  buffer.writeUInt32BE(value)
  return buffer
}

/** An SSH wire "string": 4-byte length, then the bytes. */
function sshString(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value
  return Buffer.concat([u32(bytes.length), bytes])
}

/** A new key pair; `comment` ends up after the public key (e.g. docklet:alice). */
export function generateSshKeyPair(comment: string): SshKeyPair {
  const { privateKey } = generateKeyPairSync('ed25519')
  const jwk = privateKey.export({ format: 'jwk' })
  const seed = Buffer.from(jwk.d!, 'base64url')
  const pub = Buffer.from(jwk.x!, 'base64url')
  const publicBlob = Buffer.concat([sshString(KEY_TYPE), sshString(pub)])
  const check = randomBytes(4).readUInt32BE()
  let secret = Buffer.concat([
    u32(check),
    u32(check),
    sshString(KEY_TYPE),
    sshString(pub),
    sshString(Buffer.concat([seed, pub])),
    sshString(comment),
  ])
  const pad = (BLOCK_BYTES - (secret.length % BLOCK_BYTES)) % BLOCK_BYTES
  secret = Buffer.concat([secret, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))])
  const body = Buffer.concat([
    Buffer.from(AUTH_MAGIC),
    sshString('none'),
    sshString('none'),
    sshString(''),
    u32(1),
    sshString(publicBlob),
    sshString(secret),
  ]).toString('base64')
  const lines = body.match(new RegExp(`.{1,${LINE_CHARS}}`, 'g')) ?? []
  return {
    publicKey: `${KEY_TYPE} ${publicBlob.toString('base64')} ${comment}\n`,
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join('\n')}\n-----END OPENSSH PRIVATE KEY-----\n`,
  }
}
