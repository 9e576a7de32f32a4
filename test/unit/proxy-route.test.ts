// The proxy's route table, derived from the replicated state alone: which
// paths name a workspace, where vnode 0 is reached from each node (its IP on
// its own host, the far node's mesh address and portal port elsewhere, the
// portal address without a mesh), the reason when it cannot be reached, and
// the view the proxy workers get (routes, refusals, where hops are served,
// users and revoked sessions; which commands rebuild which part). Pure functions over a state
// built with real commands (test/proxy/proxy-fixture.ts).

import { describe, expect, it } from 'vitest'
import { JUPYTER_PORT } from '../../src/agent/host-plan.ts'
import { ProxyError } from '../../src/proxy/proxy-error.ts'
import { buildAuthView, buildRouteView, viewChangeOf } from '../../src/proxy/proxy-view.ts'
import {
  hopAddress,
  memberMeshIps,
  parseWorkspacePath,
  resolveWorkspaceRoute,
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

describe("the workers' view of the state", () => {
  it('follows creations and deletions, and ignores a vcluster being deleted', () => {
    const cluster = ProxyCluster.create()
    const find = (owner: string, name: string) =>
      buildRouteView(cluster.state.view, NODE_A, { portal: '' }).workspaces.get(`${owner}/${name}`)
    expect(find('alice', 'dev')).toBeUndefined()
    const dev = cluster.vcluster('alice', 'dev', NODE_A)
    expect(find('alice', 'dev')).toMatchObject({
      owner: 'alice',
      name: 'dev',
      route: { kind: 'local', address: dev.vnodes[0]!.ip, port: JUPYTER_PORT, token: dev.secret },
    })
    expect(find('bob', 'dev')).toBeUndefined()
    cluster.apply({ type: 'vcluster.delete', at: 0, vcluster: dev.id })
    expect(find('alice', 'dev')).toBeUndefined()
    cluster.vcluster('alice', 'dev', NODE_B)
    cluster.setPortal(NODE_B, '10.0.0.2:8443')
    expect(find('alice', 'dev')?.route).toMatchObject({
      kind: 'remote',
      host: NODE_B,
      hostName: 'host-b',
      address: MESH_IP_B,
      port: 8443,
      localAddress: MESH_IP_A,
    })
  })

  it('carries the refusal sentence of a workspace that cannot be reached', () => {
    const cluster = ProxyCluster.create()
    const dev = cluster.vcluster('alice', 'dev', NODE_A)
    cluster.apply({ type: 'vcluster.stop', at: 0, vcluster: dev.id })
    const route = buildRouteView(cluster.state.view, NODE_A, { portal: '' }).workspaces.get(
      'alice/dev',
    )?.route
    expect(route).toMatchObject({ kind: 'refused', code: 'ERR_WORKSPACE_STOPPED', status: 503 })
  })

  it("serves hops on this host's mesh IP only when the portal listens on another single address", () => {
    const cluster = ProxyCluster.create()
    const hopListen = (portal: string) => buildRouteView(cluster.state.view, NODE_B, { portal }).hopListen
    expect(hopListen('127.0.0.12:8080')).toEqual({ host: MESH_IP_B, port: 8080 })
    expect(hopListen('0.0.0.0:8080')).toBeNull()
    expect(hopListen(`${MESH_IP_B}:8080`)).toBeNull()
    expect(hopListen('')).toBeNull()
  })

  it("knows each user's role, whether they may log in, their session generation and the revoked sessions", () => {
    const cluster = ProxyCluster.create()
    cluster.apply({ type: 'session.revoke', at: 0, user: 'alice', session: 'session-one', expiresAt: 9e15 })
    cluster.apply({ type: 'session.revoke-all', at: 0, user: 'bob' })
    cluster.apply({ type: 'user.disable', at: 0, name: 'bob' })
    const auth = buildAuthView(cluster.state.view)
    expect(auth.sessionKey).toBe(cluster.state.view.sessionKey)
    expect(auth.users.get('admin')).toMatchObject({ role: 'admin', active: true })
    expect(auth.users.get('alice')).toEqual({ role: 'user', active: true, generation: 0 })
    expect(auth.users.get('bob')).toMatchObject({ active: false, generation: 1 })
    expect(auth.revoked.has('session-one')).toBe(true)
  })

  it('is rebuilt in the parts a command may change, and in full for a command it does not know', () => {
    expect(viewChangeOf('login.failure')).toEqual({ auth: false, routes: false })
    expect(viewChangeOf('session.revoke')).toEqual({ auth: true, routes: false })
    expect(viewChangeOf('vnode.observed')).toEqual({ auth: false, routes: true })
    expect(viewChangeOf('user.disable')).toEqual({ auth: true, routes: true })
    expect(viewChangeOf('something.new')).toEqual({ auth: true, routes: true })
    expect(viewChangeOf(null)).toEqual({ auth: true, routes: true })
  })
})
