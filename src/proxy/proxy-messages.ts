// What the main thread and the proxy workers say to each other over the
// worker's message port (structured clone: plain data, Maps and Sets).

import type { PortForwarderOptions } from './port-forwarder.ts'
import type { BridgeClient } from './portal-bridge.ts'
import type { AuthView, ProxyView, RouteView } from './proxy-view.ts'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

export interface ProxyWorkerOptions {
  connectTimeoutMs?: number
  /** Proxied requests and tunnels open at once in this worker. */
  connectionsMax?: number
  hopTtlMs?: number
  loginPath?: string
  hopListenRetryMs?: number
}

export interface ProxyWorkerData {
  /** Which worker this is (0 reports the hop listener's address). */
  index: number
  /** Where the portal listens (null: this node serves no portal; the worker forwards ports only). */
  portal: { host: string; port: number } | null
  /** Several workers share the portal's address (SO_REUSEPORT). */
  reusePort: boolean
  /** This worker forwards the mapped ports (one worker does). */
  ports: PortForwarderOptions | null
  /** The loopback port of the main thread's portal bridge. */
  bridgePort: number
  view: ProxyView
  /** The least level worth sending to the main thread's log. */
  logLevel: LogLevel
  options: ProxyWorkerOptions
}

export type ToWorker =
  | { type: 'view'; clockOffsetMs: number; auth?: AuthView; routes?: RouteView }
  | { type: 'stats' }
  | { type: 'close' }

export interface WorkerStats {
  /** Proxied requests and tunnels open now. */
  active: number
  upstreamIdle: number
  upstreamBusy: number
  /** Mapped public ports this worker listens on. */
  ports: number[]
  /** Forwarded port connections open now. */
  portConnections: number
}

export type FromWorker =
  | { type: 'listening'; port: number }
  | { type: 'listen-failed'; code: string; message: string }
  | { type: 'hops'; address: string }
  | { type: 'bridge'; client: BridgeClient }
  | { type: 'log'; level: LogLevel; fields: Record<string, unknown>; message: string }
  | { type: 'stats'; stats: WorkerStats }
  | { type: 'closed' }
