// Public surface of net/: frame transports (libp2p and in-memory) and the libp2p host.

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
  createLibp2pHost,
  generateIdentity,
  identityFromBytes,
  type Libp2pHostOptions,
  peerIdOfIdentity,
  toMultiaddr,
} from './libp2p-host.ts'
export { MemoryFrameTransport, MemoryNetwork, type MemoryNetworkOptions } from './memory-transport.ts'
