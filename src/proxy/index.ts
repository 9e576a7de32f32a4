// The node's data plane for users: workspaces under /go/<owner>/<vcluster>/
// on every portal (HTTP and WebSocket, across hosts over the mesh) and port
// mappings on every node, both served by proxy worker threads off the main
// thread. src/main.ts wires them into a running node.

export { hopHeader, signHop, verifyHop } from './hop-token.ts'
export { ProxyError } from './proxy-error.ts'
export { ProxyFront, type ProxyFrontInit, ProxyListenError, proxyWorkersDefault } from './proxy-front.ts'
export { type PortalProxy, type PortalProxyInit, registerWorkspaceProxy } from './register-proxy.ts'
export { parseWorkspacePath, resolveWorkspaceRoute, type WorkspaceRoute } from './workspace-route.ts'
