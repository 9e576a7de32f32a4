// Public surface of net/: frame transports (libp2p and in-memory), the libp2p host and the RPC service.

export type { CommandRunner, PlannedCommand, RunOptions, RunResult } from './command-runner.ts'
export {
  DialError,
  FrameDecodeError,
  FrameTooLargeError,
  InvalidAddressError,
  InvalidIdentityError,
  NetConfigError,
  NetError,
  NotMemberError,
  QueueFullError,
  RpcDialError,
  RpcError,
  RpcIdentityError,
  RpcRemoteError,
  RpcTimeoutError,
  TransportStoppedError,
} from './errors.ts'
export { encodeFrames, FrameDecoder } from './frame-codec.ts'
export {
  Libp2pFrameTransport,
  type Libp2pFrameTransportComponents,
  type Libp2pFrameTransportOptions,
  RAFT_PROTOCOL,
} from './frame-transport.ts'
export {
  FRAME_BYTES_MAX_DEFAULT,
  type FrameTransport,
  type FrameTransportOptions,
  type MemberFrameTransport,
  type PeerAddress,
  type PeerStats,
  QUEUE_BYTES_MAX_DEFAULT,
  QUEUE_FRAMES_MAX_DEFAULT,
  type TransportEvent,
  type TransportEventType,
} from './frame-transport-types.ts'
export {
  type FdbEntry,
  type IpAddress,
  type LinkState,
  parseFdbJson,
  parseIpAddrJson,
  type VxlanInfo,
} from './ip-link-state.ts'
export {
  createLibp2pHost,
  generateIdentity,
  identityFromBytes,
  type Libp2pHostOptions,
  peerIdOfIdentity,
  toMultiaddr,
} from './libp2p-host.ts'
export { MemoryFrameTransport, MemoryNetwork, type MemoryNetworkOptions } from './memory-transport.ts'
export { MeshApplyError, MeshConfigError, MeshParseError } from './mesh-errors.ts'
export {
  RPC_CALLS_MAX_DEFAULT,
  RPC_HANDLER_TIMEOUT_MS_DEFAULT,
  RPC_INBOUND_STREAMS_MAX_DEFAULT,
  RPC_PROTOCOL,
  RPC_REQUEST_BYTES_MAX_DEFAULT,
  RPC_REQUEST_READ_TIMEOUT_MS_DEFAULT,
  RPC_RESPONSE_BYTES_MAX_DEFAULT,
  type RpcAuthorize,
  type RpcCallOptions,
  type RpcCallResult,
  type RpcContext,
  type RpcEvent,
  type RpcEventType,
  type RpcHandler,
  type RpcRegisterOptions,
  RpcService,
  type RpcServiceComponents,
  type RpcServiceOptions,
  rememberPeer,
} from './rpc.ts'
export {
  applyOverlay,
  gatewayMac,
  type NftTable,
  type OverlayCurrent,
  type OverlayDesired,
  overlayMtu,
  overlayNames,
  parseNftTables,
  planOverlay,
  planOverlayRemoval,
  type RemoteVnode,
  readOverlayState,
  removeOverlay,
  renderOverlayRules,
  VXLAN_OVERHEAD_BYTES,
} from './vxlan-overlay.ts'
export {
  type ApplyMeshOptions,
  type ApplyMeshResult,
  applyMesh,
  detectWireguardImplementation,
  ensureMeshKey,
  loadMeshConfig,
  type MeshCurrent,
  type MeshDesired,
  type MeshPeer,
  meshMtuFromUnderlay,
  parseWgDump,
  planMesh,
  readMeshState,
  restoreMesh,
  saveMeshConfig,
  WIREGUARD_OVERHEAD_BYTES,
  type WireguardImplementation,
} from './wireguard-mesh.ts'
