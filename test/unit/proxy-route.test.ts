// The proxy's route table, derived from the replicated state alone: which
// paths name a workspace, where vnode 0 is reached from each node (its IP on
// its own host, the far node's mesh address and portal port elsewhere, the
// portal address without a mesh), the reason when it cannot be reached, and
// the lookup cache following state changes. Pure functions over a state
// built with real commands (test/proxy/proxy-fixture.ts).

import { describe, expect, it } from 'vitest'
import { JUPYTER_PORT } from '../../src/agent/host-plan.ts'
import { ProxyError } from '../../src/proxy/proxy-error.ts'
import {
  hopAddress,
  memberMeshIps,
  parseWorkspacePath,
  resolveWorkspaceRoute,
  WorkspaceTable,
} from '../../src/proxy/workspace-route.ts'
import type { Vcluster } from '../../src/state/vcluster-state.ts'
import { MESH_IP_A, MESH_IP_B, NODE_A, NODE_B, ProxyCluster } from '../proxy/proxy-fixture.ts'

function refusal(run: () => unknown): { code: string; status: number; message: string } {
  try {
    run()
  } catch (error) {
    if (error instanceof ProxyError) return { code: error.code, status: error.status, message: error.message }
    throw error
  }
  throw new Error('expected a ProxyError')
}

describe('workspace paths', () => {
  it('names owner and vcluster, and knows the bare path without a slash', () => {
    expect(parseWorkspacePath('/go/alice/dev/')).toEqual({ owner: 'alice', name: 'dev', bare: false })
    expect(parseWorkspacePath('/go/alice/dev/api/kernels?x=/go/bob/y/')).toEqual({
      owner: 'alice',
      name: 'dev',
      bare: false,
    })
    expect(parseWorkspacePath('/go/alice/dev')).toEqual({ owner: 'alice', name: 'dev', bare: true })
    expect(parseWorkspacePath('/go/alice/dev?a=1')).toEqual({ owner: 'alice', name: 'dev', bare: true })
  })

  it('names nothing for other paths and for names no user or vcluster can have', () => {
    for (const url of [
      '/api/v1/session',
      '/go/',
      '/go/alice',
      '/go/alice/',
      '/go/../x/',
      '/go/al%20ice/dev/',
      '/gone/a/b/',
    ])
      expect(parseWorkspacePath(url), url).toBeNull()
  })
})

describe('routes from the state', () => {
  function setup(): { cluster: ProxyCluster; onA: Vcluster; onB: Vcluster } {
    const cluster = ProxyCluster.create()
    cluster.setPortal(NODE_A, '10.0.0.1:8080')
    cluster.setPortal(NODE_B, '10.0.0.2:8443')
    return {
      cluster,
      onA: cluster.vcluster('alice', 'a', NODE_A),
      onB: cluster.vcluster('alice', 'b', NODE_B),
    }
  }

  it("dials vnode 0's IP and Jupyter's port with the token on vnode 0's own host", () => {
    const { cluster, onA } = setup()
    expect(resolveWorkspaceRoute(cluster.state.view, onA, NODE_A)).toMatchObject({
      kind: 'local',
      address: onA.vnodes[0]!.ip,
      port: JUPYTER_PORT,
      token: onA.secret,
    })
  })

  it("goes to the far node's mesh IP and portal port from any other host", () => {
    const { cluster, onA, onB } = setup()
    expect(resolveWorkspaceRoute(cluster.state.view, onB, NODE_A)).toMatchObject({
      kind: 'remote',
      host: NODE_B,
      address: MESH_IP_B,
      port: 8443,
    })
    expect(resolveWorkspaceRoute(cluster.state.view, onA, NODE_B)).toMatchObject({
      kind: 'remote',
      address: MESH_IP_A,
      port: 8080,
    })
    expect(memberMeshIps(cluster.state.view)).toEqual(new Set([MESH_IP_A, MESH_IP_B]))
  })

  it("uses the far node's portal address when the hosts have no mesh, and nothing for a wildcard one", () => {
    const { cluster } = setup()
    // Without a mesh key a host is not on the mesh.
    cluster.apply({
      type: 'member.update',
      at: 0,
      member: {
        id: NODE_A,
        name: 'host-a',
        address: '/ip4/127.0.0.1/tcp/1',
        portal: '10.0.0.1:8080',
        meshPublicKey: '',
      },
    })
    expect(hopAddress(cluster.state.view, NODE_A, NODE_B)).toEqual({ address: '10.0.0.2', port: 8443 })
    cluster.setPortal(NODE_B, '0.0.0.0:8443')
    expect(hopAddress(cluster.state.view, NODE_A, NODE_B)).toBeNull()
    cluster.setPortal(NODE_B, '')
    expect(hopAddress(cluster.state.view, NODE_A, NODE_B)).toBeNull()
  })

  it('says why a workspace cannot be reached: stopped, not running, failed, no token, no portal', () => {
    const { cluster, onA, onB } = setup()
    const view = () => cluster.state.view
    cluster.apply({ type: 'vcluster.stop', at: 0, vcluster: onA.id })
    expect(refusal(() => resolveWorkspaceRoute(view(), onA, NODE_A))).toMatchObject({
      code: 'ERR_WORKSPACE_STOPPED',
      status: 503,
    })
    const pending = cluster.vcluster('alice', 'p', NODE_A, { running: false })
    expect(refusal(() => resolveWorkspaceRoute(view(), pending, NODE_A)).code).toBe(
      'ERR_WORKSPACE_NOT_RUNNING',
    )
    cluster.apply({
      type: 'vnode.observed',
      at: 0,
      vcluster: pending.id,
      index: 0,
      state: 'error',
      error: 'lxc-start failed',
      host: NODE_A,
    })
    expect(refusal(() => resolveWorkspaceRoute(view(), pending, NODE_A)).message).toContain(
      'lxc-start failed',
    )
    const tokenless = { ...onB, secret: undefined } as Vcluster
    expect(refusal(() => resolveWorkspaceRoute(view(), tokenless, NODE_B)).code).toBe(
      'ERR_WORKSPACE_NO_JUPYTER',
    )
    cluster.setPortal(NODE_B, '')
    expect(refusal(() => resolveWorkspaceRoute(view(), onB, NODE_A))).toMatchObject({
      code: 'ERR_HOST_UNREACHABLE',
      status: 502,
    })
  })
})

describe('the lookup table', () => {
  it('follows creations and deletions, and ignores a vcluster being deleted', () => {
    const cluster = ProxyCluster.create()
    const table = new WorkspaceTable(cluster.state)
    expect(table.find('alice', 'dev')).toBeUndefined()
    const dev = cluster.vcluster('alice', 'dev', NODE_A)
    expect(table.find('alice', 'dev')?.id).toBe(dev.id)
    expect(table.find('bob', 'dev')).toBeUndefined()
    cluster.apply({ type: 'vcluster.delete', at: 0, vcluster: dev.id })
    expect(table.find('alice', 'dev')).toBeUndefined()
    const again = cluster.vcluster('alice', 'dev', NODE_B)
    expect(table.find('alice', 'dev')?.id).toBe(again.id)
    table.close()
  })
})
