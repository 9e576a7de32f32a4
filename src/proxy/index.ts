// The any-node proxy: workspaces under /go/<owner>/<vcluster>/ on every
// portal (HTTP and WebSocket, across hosts over the mesh) and port mappings
// on every node. src/main.ts wires both into a running node.

export { HopListener, type HopListenerInit } from './hop-listener.ts'
export { hopHeader, signHop, verifyHop } from './hop-token.ts'
export { PortForwarder, type PortForwarderInit } from './port-forwarder.ts'
export { ProxyError } from './proxy-error.ts'
export { type PortalProxy, type PortalProxyInit, registerWorkspaceProxy } from './register-proxy.ts'
export { WorkspaceProxy, type WorkspaceProxyInit } from './workspace-proxy.ts'
export { parseWorkspacePath, resolveWorkspaceRoute, type WorkspaceRoute } from './workspace-route.ts'
