/**
 * Peer transport: length-prefixed MessagePack frames over TCP between the
 * nodes of one cluster.
 *
 * Wire format: every frame is a 4-byte big-endian unsigned body length
 * followed by a MessagePack body. Each node listens on its peer port and
 * dials every other node for its own outgoing traffic, so the connection
 * A->B carries only A's messages to B. The first frame on a dialed
 * connection is a hello `{ t: 'hello', from, cluster, v }` (v: PROTOCOL_VERSION); the listener
 * accepts messages on a connection only after a valid hello from a known
 * peer of the same cluster, and destroys the connection on anything else.
 * With a shared `secret`, the hello also carries a timestamp, a nonce and an
 * HMAC-SHA256 of them under the secret, and a listener with a secret accepts
 * only a hello whose HMAC is right and whose timestamp is within
 * HELLO_MAX_SKEW_MS of its clock: a process that does not know the secret
 * cannot open a peer connection. (It authenticates the dialer once per
 * connection; it neither encrypts nor signs the frames that follow, which
 * TLS would.)
 *
 * Delivery is best effort: messages may be lost (queue overflow, connection
 * loss) but are never reordered within one connection. The protocol above
 * retransmits.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Server, Socket } from 'node:net';
import { Packr } from 'msgpackr';
import { pino } from 'pino';
import type { Logger } from 'pino';

export interface PeerAddress { host: string; port: number }

export interface TransportOptions {
  /** This node's name. */
  self: string;
  /** Cluster id; must match in the hello. */
  cluster: string;
  /** Where to listen; port 0 picks a free port (read `port` after start). */
  listen: PeerAddress;
  /**
   * Every other node (may include self, which is ignored). A peer whose port
   * is 0 is not dialed until `setPeerAddress` gives it a real port; messages
   * to it are queued meanwhile.
   */
  peers: Record<string, PeerAddress>;
  /** Largest accepted frame body, in bytes. Default 64 MiB. */
  maxFrameBytes?: number;
  /** Per-peer bound on queued (unwritten) messages. Default 10,000. */
  maxQueueMessages?: number;
  /** Per-peer bound on queued (unwritten) bytes. Default 64 MiB. */
  maxQueueBytes?: number;
  /** First reconnect delay. Default 20 ms. */
  reconnectMinMs?: number;
  /** Largest reconnect delay. Default 500 ms. */
  reconnectMaxMs?: number;
  /** An inbound connection that sends no valid hello in this time is closed. Default 10 s. */
  helloTimeoutMs?: number;
  /** A dial that has not connected in this time is abandoned and retried. Default 5 s. */
  connectTimeoutMs?: number;
  /** Shared secret of the cluster's nodes (at least 16 characters): hellos are authenticated with it. */
  secret?: string;
  /** Default: a silent pino logger. */
  logger?: Logger;
}

/**
 * Version of the peer protocol (the messages of core/messages.ts and this framing), sent in
 * every hello. A node accepts connections only from nodes of the same version: messages
 * change meaning between versions (since version 2, a levelling answer may be one page of
 * several, which an older node would take for the whole; since version 3, a node that starts
 * without state probes every node before it votes, which an older node would not answer), so
 * every node of a cluster must run the same version. Hellos without a version come from nodes
 * before version 2.
 */
export const PROTOCOL_VERSION = 3;

/** An authenticated hello may be this far from the listener's clock (nodes' clocks differ). */
export const HELLO_MAX_SKEW_MS = 5 * 60 * 1000;
export const MIN_SECRET_LENGTH = 16;

function helloMac(secret: string, from: string, cluster: string, ts: number, nonce: string): Buffer {
  return createHmac('sha256', secret).update(`chainkv-hello\n${from}\n${cluster}\n${ts}\n${nonce}`).digest();
}

export interface TransportStats {
  /** Message frames handed to sockets (hellos excluded). */
  sentFrames: number;
  /** Message frames received from peers after their hello (hellos excluded). */
  recvFrames: number;
  /** Messages dropped: queue overflow, dropQueue, oversize, unknown peer, after close. */
  dropped: number;
  /** Inbound connections rejected for protocol violations. */
  badConnections: number;
}

export type PeerState = 'up' | 'down';

const MiB = 1024 * 1024;
const HEADER_BYTES = 4;
const MAX_HEADER_VALUE = 0xffff_ffff;
const DEFAULT_MAX_FRAME_BYTES = 64 * MiB;
const DEFAULT_MAX_QUEUE_MESSAGES = 10_000;
const DEFAULT_MAX_QUEUE_BYTES = 64 * MiB;
const DEFAULT_RECONNECT_MIN_MS = 20;
const DEFAULT_RECONNECT_MAX_MS = 500;
const DEFAULT_HELLO_TIMEOUT_MS = 10_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const KEEPALIVE_INITIAL_DELAY_MS = 5_000;
/** How long `close()` waits for a graceful end before destroying a socket. */
const CLOSE_GRACE_MS = 1_000;
/** A connection that lived this long resets the reconnect backoff. */
const STABLE_CONNECTION_MS = 1_000;
/** Upper bound of one coalesced socket write. */
const MAX_WRITE_BATCH_BYTES = 1 * MiB;
/** Pending frames that trigger an immediate write instead of waiting for the tick. */
const MAX_WRITE_BATCH_FRAMES = 4_096;

// copyBuffers: decoded binary values get their own memory instead of being
// views into the receive buffers (which would pin whole socket chunks).
const packr = new Packr({ useRecords: false, mapsAsObjects: true, copyBuffers: true });

/** Encode one message as a complete frame (length header + MessagePack body). */
export function encodeFrame(msg: unknown): Buffer {
  const body = packr.pack(msg);
  const frame = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, HEADER_BYTES);
  return frame;
}

/** Decode one frame body (without its header). Throws on malformed data. */
export function decodeBody(body: Buffer): unknown {
  return packr.unpack(body);
}

export class FrameTooLargeError extends Error {
  readonly frameBytes: number;
  readonly maxFrameBytes: number;
  constructor(frameBytes: number, maxFrameBytes: number) {
    super(`frame of ${frameBytes} bytes exceeds the limit of ${maxFrameBytes} bytes`);
    this.name = 'FrameTooLargeError';
    this.frameBytes = frameBytes;
    this.maxFrameBytes = maxFrameBytes;
  }
}

/**
 * Incremental frame decoder for one byte stream. Accepts chunks split at any
 * offset and returns the complete frame bodies (headers stripped) in order.
 * Incoming chunks are kept in a list and every byte is copied at most once,
 * so a large frame arriving in many small chunks costs linear time. A body
 * that lies within one chunk is returned as a view of that chunk.
 */
export class FrameDecoder {
  private readonly maxFrameBytes: number;
  private chunks: Buffer[] = [];
  /** Index of the first unconsumed chunk in `chunks`. */
  private chunkIndex = 0;
  /** Offset of the first unconsumed byte in `chunks[chunkIndex]`. */
  private chunkOffset = 0;
  /** Unconsumed bytes across all chunks. */
  private buffered = 0;
  /** Body length of the frame being assembled, or -1 while awaiting a header. */
  private bodyLength = -1;
  private failure: FrameTooLargeError | null = null;
  private readonly header = Buffer.alloc(HEADER_BYTES);

  constructor(maxFrameBytes: number) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 0 || maxFrameBytes > MAX_HEADER_VALUE) {
      throw new RangeError(`maxFrameBytes must be an integer in [0, ${MAX_HEADER_VALUE}], got ${maxFrameBytes}`);
    }
    this.maxFrameBytes = maxFrameBytes;
  }

  /** True while part of a frame (header or body) has been received but not completed. */
  get midFrame(): boolean {
    return this.buffered > 0 || this.bodyLength >= 0;
  }

  /** Feed one chunk; returns the frame bodies it completed. Throws FrameTooLargeError. */
  push(chunk: Buffer): Buffer[] {
    if (this.failure !== null) throw this.failure;
    const out: Buffer[] = [];
    if (chunk.length === 0) return out;
    if (this.buffered === 0) {
      this.parseDirect(chunk, out);
      return out;
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (true) {
      if (this.bodyLength < 0) {
        if (this.buffered < HEADER_BYTES) break;
        this.copyOut(this.header, HEADER_BYTES);
        this.startBody(this.header.readUInt32BE(0));
      }
      if (this.buffered < this.bodyLength) break;
      out.push(this.take(this.bodyLength));
      this.bodyLength = -1;
      if (this.buffered === 0) break;
    }
    this.compact();
    return out;
  }

  /** Fast path when nothing is buffered: slice frames straight out of the chunk. */
  private parseDirect(chunk: Buffer, out: Buffer[]): void {
    let offset = 0;
    while (true) {
      if (this.bodyLength < 0) {
        if (chunk.length - offset < HEADER_BYTES) break;
        this.startBody(chunk.readUInt32BE(offset));
        offset += HEADER_BYTES;
      }
      if (chunk.length - offset < this.bodyLength) break;
      out.push(chunk.subarray(offset, offset + this.bodyLength));
      offset += this.bodyLength;
      this.bodyLength = -1;
    }
    if (offset < chunk.length) {
      this.chunks = [offset === 0 ? chunk : chunk.subarray(offset)];
      this.chunkIndex = 0;
      this.chunkOffset = 0;
      this.buffered = chunk.length - offset;
    }
  }

  private startBody(length: number): void {
    if (length > this.maxFrameBytes) {
      this.failure = new FrameTooLargeError(length, this.maxFrameBytes);
      this.chunks = [];
      this.chunkIndex = 0;
      this.chunkOffset = 0;
      this.buffered = 0;
      throw this.failure;
    }
    this.bodyLength = length;
  }

  /** Remove and return the next n buffered bytes (n <= buffered). */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[this.chunkIndex];
    if (first !== undefined && first.length - this.chunkOffset >= n) {
      const view = first.subarray(this.chunkOffset, this.chunkOffset + n);
      this.advance(n);
      return view;
    }
    const target = Buffer.allocUnsafe(n);
    this.copyOut(target, n);
    return target;
  }

  /** Copy the next n buffered bytes into target[0..n) and consume them. */
  private copyOut(target: Buffer, n: number): void {
    let written = 0;
    while (written < n) {
      const chunk = this.chunks[this.chunkIndex];
      if (chunk === undefined) throw new Error('FrameDecoder: buffer underrun');
      const count = Math.min(n - written, chunk.length - this.chunkOffset);
      chunk.copy(target, written, this.chunkOffset, this.chunkOffset + count);
      written += count;
      this.advance(count);
    }
  }

  private advance(n: number): void {
    this.buffered -= n;
    this.chunkOffset += n;
    const chunk = this.chunks[this.chunkIndex];
    if (chunk !== undefined && this.chunkOffset >= chunk.length) {
      this.chunkIndex += 1;
      this.chunkOffset = 0;
    }
  }

  /** Drop consumed chunks from the list (amortised, never per byte). */
  private compact(): void {
    if (this.buffered === 0) {
      this.chunks = [];
      this.chunkIndex = 0;
      this.chunkOffset = 0;
    } else if (this.chunkIndex > 0 && this.chunkIndex * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.chunkIndex);
      this.chunkIndex = 0;
    }
  }
}

/** FIFO of encoded frames with O(1) push/shift and byte accounting. */
class FrameQueue {
  private items: Buffer[] = [];
  private head = 0;
  bytes = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(frame: Buffer): void {
    this.items.push(frame);
    this.bytes += frame.length;
  }

  shift(): Buffer | undefined {
    if (this.head >= this.items.length) return undefined;
    const frame = this.items[this.head];
    this.items[this.head] = EMPTY;
    this.head += 1;
    if (frame !== undefined) this.bytes -= frame.length;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return frame;
  }

  clear(): number {
    const n = this.length;
    this.items = [];
    this.head = 0;
    this.bytes = 0;
    return n;
  }
}

const EMPTY = Buffer.alloc(0);

/** Outgoing side of one peer: the dialed connection and its send queue. */
interface OutPeer {
  name: string;
  addr: PeerAddress | null;
  socket: Socket | null;
  /** TCP connected and hello written. */
  connected: boolean;
  /** socket.write returned false; wait for 'drain' before writing more. */
  waitingDrain: boolean;
  connectedAt: number;
  queue: FrameQueue;
  backoffMs: number;
  reconnectTimer: NodeJS.Timeout | null;
  state: PeerState | null;
}

/** One accepted connection on the listening port. */
interface InConn {
  socket: Socket;
  remote: string;
  decoder: FrameDecoder;
  /** Peer name once a valid hello arrived. */
  from: string | null;
  rejected: boolean;
  helloTimer: NodeJS.Timeout | null;
}

interface Hello { t: 'hello'; from: string; cluster: string; v: number; ts?: number; nonce?: string; mac?: Buffer }

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}

function errorFields(err: unknown): Record<string, unknown> {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === undefined ? { err: err.message } : { err: err.message, code };
  }
  return { err: String(err) };
}

function socketClosed(socket: Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

export class PeerTransport {
  /** Called for every message from a peer (after its hello) and for self-sends. */
  onMessage: (from: string, msg: unknown) => void = () => {};
  /** Called when the outgoing connection to a peer goes up or down (once per change). */
  onPeerState: (peer: string, state: PeerState) => void = () => {};
  /** Called when a dial to a peer is refused (ECONNREFUSED): nothing listens on its port. */
  onRefused: (peer: string) => void = () => {};

  private readonly self: string;
  private readonly cluster: string;
  private readonly listenAddr: PeerAddress;
  private readonly maxFrameBytes: number;
  private readonly maxQueueMessages: number;
  private readonly maxQueueBytes: number;
  private readonly reconnectMinMs: number;
  private readonly reconnectMaxMs: number;
  private readonly helloTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly flushFrames: number;
  private readonly flushBytes: number;
  private readonly log: Logger;

  private readonly peers = new Map<string, OutPeer>();
  private readonly inbound = new Set<InConn>();
  /** The accepted (post-hello) inbound connection of each peer. */
  private readonly inboundByPeer = new Map<string, InConn>();
  private readonly dirty = new Set<OutPeer>();
  private flushImmediate: NodeJS.Immediate | null = null;
  private server: Server | null = null;
  private listening: Promise<void> | null = null;
  private boundPort: number;
  private started = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly counters: TransportStats = { sentFrames: 0, recvFrames: 0, dropped: 0, badConnections: 0 };
  private readonly secret: string | undefined;

  constructor(opts: TransportOptions) {
    this.self = opts.self;
    this.cluster = opts.cluster;
    this.listenAddr = { host: opts.listen.host, port: opts.listen.port };
    this.boundPort = opts.listen.port;
    this.maxFrameBytes = positiveInt('maxFrameBytes', opts.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
    if (this.maxFrameBytes > MAX_HEADER_VALUE) throw new RangeError(`maxFrameBytes must be at most ${MAX_HEADER_VALUE}`);
    this.maxQueueMessages = positiveInt('maxQueueMessages', opts.maxQueueMessages, DEFAULT_MAX_QUEUE_MESSAGES);
    this.maxQueueBytes = positiveInt('maxQueueBytes', opts.maxQueueBytes, DEFAULT_MAX_QUEUE_BYTES);
    this.reconnectMinMs = positiveInt('reconnectMinMs', opts.reconnectMinMs, DEFAULT_RECONNECT_MIN_MS);
    this.reconnectMaxMs = Math.max(this.reconnectMinMs,
      positiveInt('reconnectMaxMs', opts.reconnectMaxMs, DEFAULT_RECONNECT_MAX_MS));
    this.helloTimeoutMs = positiveInt('helloTimeoutMs', opts.helloTimeoutMs, DEFAULT_HELLO_TIMEOUT_MS);
    this.connectTimeoutMs = positiveInt('connectTimeoutMs', opts.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS);
    // Write eagerly before the queue bound could drop frames from a writable connection.
    this.flushFrames = Math.min(MAX_WRITE_BATCH_FRAMES, this.maxQueueMessages);
    this.flushBytes = Math.min(MAX_WRITE_BATCH_BYTES, this.maxQueueBytes);
    // Bind `component` and `node` unless the given logger already carries them (pino would
    // repeat a key bound twice in every line).
    const base = opts.logger ?? pino({ level: 'silent' });
    const bound = base.bindings();
    const fields: Record<string, string> = {};
    if (!('component' in bound)) fields.component = 'transport';
    if (!('node' in bound)) fields.node = opts.self;
    this.log = Object.keys(fields).length === 0 ? base : base.child(fields);
    if (opts.secret !== undefined && opts.secret.length < MIN_SECRET_LENGTH) {
      throw new RangeError(`the peer secret must be at least ${MIN_SECRET_LENGTH} characters`);
    }
    this.secret = opts.secret;
    for (const [name, addr] of Object.entries(opts.peers)) {
      if (name === this.self) continue;
      this.peers.set(name, this.newPeer(name, addr));
    }
  }

  /** The actual listen port (after start; the configured one before). */
  get port(): number {
    return this.boundPort;
  }

  /** Listen on the peer port, then start dialing every peer. */
  async start(): Promise<void> {
    if (this.started) throw new Error('PeerTransport already started');
    if (this.closed) throw new Error('PeerTransport is closed');
    this.started = true;
    const server = net.createServer((socket) => this.onInbound(socket));
    this.server = server;
    this.listening = new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(this.listenAddr.port, this.listenAddr.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    await this.listening;
    server.on('error', (err) => this.log.error(errorFields(err), 'peer listener error'));
    const address = server.address();
    if (address !== null && typeof address === 'object') this.boundPort = address.port;
    this.log.info({ host: this.listenAddr.host, port: this.boundPort, authenticated: this.secret !== undefined }, this.secret !== undefined ? 'peer transport listening (hellos authenticated with the peer secret)' : 'peer transport listening');
    if (this.closed) return;
    for (const peer of this.peers.values()) this.dial(peer);
  }

  /**
   * Set (or add) a peer's address. A changed address drops the current
   * connection and redials at once; port 0 means "unknown, do not dial".
   */
  setPeerAddress(name: string, addr: PeerAddress): void {
    if (name === this.self) return;
    const next = { host: addr.host, port: addr.port };
    let peer = this.peers.get(name);
    if (peer === undefined) {
      peer = this.newPeer(name, next);
      this.peers.set(name, peer);
    } else {
      const cur = peer.addr;
      if (cur !== null && cur.host === next.host && cur.port === next.port) return;
      if (cur === null && next.port === 0) return;
      peer.addr = next.port === 0 ? null : next;
      this.dropConnection(peer);
    }
    if (!this.started || this.closed) return;
    this.dialNow(peer);
  }

  /** Dials a peer at once, dropping a pending reconnect and its backoff. */
  private dialNow(peer: OutPeer): void {
    if (peer.reconnectTimer !== null) {
      clearTimeout(peer.reconnectTimer);
      peer.reconnectTimer = null;
    }
    peer.backoffMs = this.reconnectMinMs;
    this.dial(peer);
  }

  /**
   * Queue a message for a peer. Frames are coalesced and written once per
   * tick; while the peer is unreachable they wait in a bounded queue whose
   * oldest entries are dropped on overflow. Self-sends are delivered to
   * onMessage in a microtask. Throws only if the message cannot be encoded.
   */
  send(to: string, msg: unknown): void {
    if (this.closed) {
      this.counters.dropped += 1;
      return;
    }
    if (to === this.self) {
      queueMicrotask(() => {
        if (!this.closed) this.deliver(this.self, msg);
      });
      return;
    }
    const peer = this.peers.get(to);
    if (peer === undefined) {
      this.counters.dropped += 1;
      this.log.warn({ peer: to }, 'send to unknown peer dropped');
      return;
    }
    const frame = encodeFrame(msg);
    if (frame.length - HEADER_BYTES > this.maxFrameBytes) {
      this.counters.dropped += 1;
      this.log.warn({ peer: to, bytes: frame.length - HEADER_BYTES, max: this.maxFrameBytes }, 'oversize message dropped');
      return;
    }
    peer.queue.push(frame);
    if (peer.connected && !peer.waitingDrain) {
      if (peer.queue.length >= this.flushFrames || peer.queue.bytes >= this.flushBytes) {
        this.flushPeer(peer);
      } else {
        this.scheduleFlush(peer);
      }
    }
    this.enforceQueueBound(peer);
  }

  /** Discard every message queued (not yet written) for a peer; returns how many. */
  dropQueue(to: string): number {
    const peer = this.peers.get(to);
    if (peer === undefined) return 0;
    const n = peer.queue.clear();
    this.counters.dropped += n;
    return n;
  }

  /** Whether the outgoing connection to a peer is established (always true for self). */
  isConnected(peer: string): boolean {
    if (peer === this.self) return true;
    return this.peers.get(peer)?.connected ?? false;
  }

  stats(): TransportStats {
    return { ...this.counters };
  }

  /** Stop listening, end every connection, clear all timers. Idempotent. */
  close(): Promise<void> {
    if (this.closing === null) this.closing = this.doClose();
    return this.closing;
  }

  // ---------------------------------------------------------------- outgoing

  private newPeer(name: string, addr: PeerAddress): OutPeer {
    return {
      name,
      addr: addr.port === 0 ? null : { host: addr.host, port: addr.port },
      socket: null,
      connected: false,
      waitingDrain: false,
      connectedAt: 0,
      queue: new FrameQueue(),
      backoffMs: this.reconnectMinMs,
      reconnectTimer: null,
      state: null,
    };
  }

  private dial(peer: OutPeer): void {
    if (this.closed || peer.addr === null || peer.socket !== null || peer.reconnectTimer !== null) return;
    const { host, port } = peer.addr;
    this.log.debug({ peer: peer.name, host, port }, 'dialing peer');
    const socket = net.connect({ host, port });
    peer.socket = socket;
    peer.connected = false;
    peer.waitingDrain = false;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_INITIAL_DELAY_MS);
    socket.setTimeout(this.connectTimeoutMs);
    let warnedIncoming = false;

    socket.once('timeout', () => {
      if (!peer.connected || peer.socket !== socket) socket.destroy(new Error('connect timeout'));
    });
    socket.once('connect', () => {
      if (peer.socket !== socket) return;
      socket.setTimeout(0);
      peer.connected = true;
      peer.connectedAt = Date.now();
      // The hello goes first, in the same write as whatever was queued meanwhile.
      this.flushPeer(peer, this.helloFrame());
      this.setPeerState(peer, 'up');
    });
    socket.on('data', () => {
      // The dialed side only writes; a listener that talks back is ignored.
      if (!warnedIncoming) {
        warnedIncoming = true;
        this.log.warn({ peer: peer.name }, 'unexpected data on outgoing connection ignored');
      }
    });
    socket.on('drain', () => {
      if (peer.socket !== socket) return;
      peer.waitingDrain = false;
      this.flushPeer(peer);
    });
    socket.on('error', (err) => {
      this.log.debug({ peer: peer.name, host, port, ...errorFields(err) }, 'peer connection error');
      if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED' && !this.closed) {
        try {
          this.onRefused(peer.name);
        } catch (e) {
          this.log.error({ peer: peer.name, ...errorFields(e) }, 'onRefused handler threw');
        }
      }
    });
    socket.on('close', () => {
      if (peer.socket !== socket) return;
      const lived = peer.connected ? Date.now() - peer.connectedAt : 0;
      peer.socket = null;
      peer.connected = false;
      peer.waitingDrain = false;
      this.dirty.delete(peer);
      if (this.closed) return;
      this.setPeerState(peer, 'down');
      if (lived >= STABLE_CONNECTION_MS) peer.backoffMs = this.reconnectMinMs;
      this.scheduleReconnect(peer);
    });
  }

  /** Forget the current outgoing connection (e.g. its address changed). */
  private dropConnection(peer: OutPeer): void {
    const socket = peer.socket;
    if (socket === null) return;
    const wasConnected = peer.connected;
    peer.socket = null;
    peer.connected = false;
    peer.waitingDrain = false;
    this.dirty.delete(peer);
    socket.destroy();
    if (wasConnected && !this.closed) this.setPeerState(peer, 'down');
  }

  private scheduleReconnect(peer: OutPeer): void {
    if (this.closed || peer.reconnectTimer !== null) return;
    const delay = peer.backoffMs;
    peer.backoffMs = Math.min(peer.backoffMs * 2, this.reconnectMaxMs);
    peer.reconnectTimer = setTimeout(() => {
      peer.reconnectTimer = null;
      this.dial(peer);
    }, delay);
  }

  private setPeerState(peer: OutPeer, state: PeerState): void {
    if (peer.state === state) return;
    peer.state = state;
    if (state === 'up') this.log.info({ peer: peer.name }, 'peer up');
    else this.log.info({ peer: peer.name }, 'peer down');
    try {
      this.onPeerState(peer.name, state);
    } catch (err) {
      this.log.error({ peer: peer.name, ...errorFields(err) }, 'onPeerState handler threw');
    }
  }

  private enforceQueueBound(peer: OutPeer): void {
    const queue = peer.queue;
    let dropped = 0;
    while (queue.length > this.maxQueueMessages || (queue.bytes > this.maxQueueBytes && queue.length > 0)) {
      queue.shift();
      dropped += 1;
    }
    if (dropped > 0) {
      this.counters.dropped += dropped;
      this.log.debug({ peer: peer.name, dropped }, 'send queue full, oldest messages dropped');
    }
  }

  /**
   * Writes everything queued for connected peers now, instead of at the next turn. The node
   * calls it after handling a batch of inputs, so a message costs no extra event-loop turn.
   */
  flush(): void {
    if (this.flushImmediate !== null) {
      clearImmediate(this.flushImmediate);
      this.flushImmediate = null;
    }
    const peers = [...this.dirty];
    this.dirty.clear();
    for (const p of peers) this.flushPeer(p);
  }

  private scheduleFlush(peer: OutPeer): void {
    this.dirty.add(peer);
    if (this.flushImmediate !== null) return;
    this.flushImmediate = setImmediate(() => {
      this.flushImmediate = null;
      const peers = [...this.dirty];
      this.dirty.clear();
      for (const p of peers) this.flushPeer(p);
    });
  }

  /**
   * Write the queued frames of a connected peer, coalesced into as few
   * socket writes as possible. `prefix` (the hello) goes first.
   */
  private flushPeer(peer: OutPeer, prefix?: Buffer): void {
    const socket = peer.socket;
    if (socket === null || !peer.connected || peer.waitingDrain) return;
    this.dirty.delete(peer);
    let first: Buffer | undefined = prefix;
    while (first !== undefined || peer.queue.length > 0) {
      const batch: Buffer[] = [];
      let bytes = 0;
      if (first !== undefined) {
        batch.push(first);
        bytes += first.length;
        first = undefined;
      }
      let frames = 0;
      while (peer.queue.length > 0 && (bytes < MAX_WRITE_BATCH_BYTES || batch.length === 0)) {
        const frame = peer.queue.shift();
        if (frame === undefined) break;
        batch.push(frame);
        bytes += frame.length;
        frames += 1;
      }
      const data = batch.length === 1 ? (batch[0] ?? EMPTY) : Buffer.concat(batch, bytes);
      this.counters.sentFrames += frames;
      if (!socket.write(data)) {
        peer.waitingDrain = true;
        return;
      }
    }
  }

  // ---------------------------------------------------------------- incoming

  private onInbound(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const conn: InConn = {
      socket,
      remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
      decoder: new FrameDecoder(this.maxFrameBytes),
      from: null,
      rejected: false,
      helloTimer: null,
    };
    this.inbound.add(conn);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_INITIAL_DELAY_MS);
    conn.helloTimer = setTimeout(() => {
      conn.helloTimer = null;
      this.reject(conn, 'no hello in time');
    }, this.helloTimeoutMs);
    conn.helloTimer.unref();

    socket.on('data', (chunk: Buffer) => this.onInboundData(conn, chunk));
    socket.on('error', (err) => {
      this.log.debug({ remote: conn.remote, peer: conn.from, ...errorFields(err) }, 'inbound connection error');
    });
    socket.on('close', () => {
      if (conn.helloTimer !== null) {
        clearTimeout(conn.helloTimer);
        conn.helloTimer = null;
      }
      this.inbound.delete(conn);
      if (conn.from !== null && this.inboundByPeer.get(conn.from) === conn) this.inboundByPeer.delete(conn.from);
      if (!conn.rejected && !this.closed && conn.decoder.midFrame) {
        this.reject(conn, 'connection closed mid-frame');
      }
    });
  }

  private onInboundData(conn: InConn, chunk: Buffer): void {
    if (conn.rejected || this.closed) return;
    let bodies: Buffer[];
    try {
      bodies = conn.decoder.push(chunk);
    } catch (err) {
      this.reject(conn, err instanceof FrameTooLargeError ? err.message : 'frame decoding failed');
      return;
    }
    for (const body of bodies) {
      let msg: unknown;
      try {
        msg = decodeBody(body);
      } catch (err) {
        this.reject(conn, `undecodable frame: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      if (conn.from === null) {
        const problem = this.checkHello(msg);
        if (problem !== null) {
          this.reject(conn, problem);
          return;
        }
        this.acceptHello(conn, (msg as Hello).from);
        continue;
      }
      this.counters.recvFrames += 1;
      this.deliver(conn.from, msg);
      if (conn.rejected || this.closed) return;
    }
  }

  /** The first frame of a dialed connection (a new timestamp and nonce each time, with a secret). */
  private helloFrame(): Buffer {
    const hello: Hello = { t: 'hello', from: this.self, cluster: this.cluster, v: PROTOCOL_VERSION };
    if (this.secret !== undefined) {
      hello.ts = Date.now();
      hello.nonce = randomBytes(16).toString('hex');
      hello.mac = helloMac(this.secret, this.self, this.cluster, hello.ts, hello.nonce);
    }
    return encodeFrame(hello);
  }

  /** Returns why `msg` is not an acceptable hello, or null if it is. */
  private checkHello(msg: unknown): string | null {
    if (!isRecord(msg) || msg['t'] !== 'hello') return 'first frame is not a hello';
    const from = msg['from'];
    const cluster = msg['cluster'];
    if (typeof from !== 'string' || typeof cluster !== 'string') return 'malformed hello';
    if (cluster !== this.cluster) return `hello for wrong cluster ${JSON.stringify(cluster)}`;
    if (from === this.self || !this.peers.has(from)) return `hello from unknown node ${JSON.stringify(from)}`;
    const v = msg['v'];
    if (v !== PROTOCOL_VERSION) {
      return `${from} speaks peer protocol ${typeof v === 'number' ? `version ${v}` : 'version 1 (an older chainkv)'}, this node version ${PROTOCOL_VERSION}: every node of a cluster must run the same chainkv version`;
    }
    if (this.secret !== undefined) {
      const { ts, nonce, mac } = msg;
      if (typeof ts !== 'number' || typeof nonce !== 'string' || !Buffer.isBuffer(mac)) return `hello from ${from} is not authenticated (this node has a peer secret; has ${from}?)`;
      const want = helloMac(this.secret, from, cluster, ts, nonce);
      if (mac.length !== want.length || !timingSafeEqual(mac, want)) return `hello from ${from} has a wrong HMAC (a different peer secret?)`;
      if (Math.abs(Date.now() - ts) > HELLO_MAX_SKEW_MS) return `hello from ${from} is stamped ${Math.round((ts - Date.now()) / 1000)} s from this node's clock`;
    }
    return null;
  }

  private acceptHello(conn: InConn, from: string): void {
    conn.from = from;
    if (conn.helloTimer !== null) {
      clearTimeout(conn.helloTimer);
      conn.helloTimer = null;
    }
    // A peer has one outgoing connection; an older one from it is stale.
    const previous = this.inboundByPeer.get(from);
    if (previous !== undefined && previous !== conn) {
      this.log.debug({ peer: from, remote: previous.remote }, 'replacing stale inbound connection');
      previous.socket.destroy();
    }
    this.inboundByPeer.set(from, conn);
    this.log.debug({ peer: from, remote: conn.remote }, 'inbound peer connection accepted');
    // The peer is listening again (it just connected to us): dial it now rather than when
    // the backoff says, so a restarted node hears from us at once.
    const out = this.peers.get(from);
    if (out !== undefined && out.socket === null && out.reconnectTimer !== null && !this.closed) this.dialNow(out);
  }

  private reject(conn: InConn, reason: string): void {
    if (conn.rejected) return;
    conn.rejected = true;
    this.counters.badConnections += 1;
    this.log.warn({ remote: conn.remote, peer: conn.from, reason }, 'bad peer connection closed');
    if (conn.helloTimer !== null) {
      clearTimeout(conn.helloTimer);
      conn.helloTimer = null;
    }
    conn.socket.destroy();
  }

  private deliver(from: string, msg: unknown): void {
    try {
      this.onMessage(from, msg);
    } catch (err) {
      this.log.error({ peer: from, ...errorFields(err) }, 'onMessage handler threw');
    }
  }

  // ------------------------------------------------------------------ close

  private async doClose(): Promise<void> {
    this.closed = true;
    // A start() still binding must finish first so its server can be closed.
    if (this.listening !== null) await this.listening.catch(() => {});
    if (this.flushImmediate !== null) {
      clearImmediate(this.flushImmediate);
      this.flushImmediate = null;
    }
    const waits: Promise<void>[] = [];
    for (const peer of this.peers.values()) {
      if (peer.reconnectTimer !== null) {
        clearTimeout(peer.reconnectTimer);
        peer.reconnectTimer = null;
      }
      const socket = peer.socket;
      if (socket === null) continue;
      if (peer.connected) {
        // Best effort: hand over what is queued, then end gracefully.
        this.flushPeer(peer);
        const grace = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
        socket.once('close', () => clearTimeout(grace));
        socket.end();
      } else {
        socket.destroy();
      }
      waits.push(socketClosed(socket));
    }
    this.dirty.clear();
    for (const conn of this.inbound) {
      if (conn.helloTimer !== null) {
        clearTimeout(conn.helloTimer);
        conn.helloTimer = null;
      }
      conn.socket.destroy();
      waits.push(socketClosed(conn.socket));
    }
    const server = this.server;
    if (server !== null && server.listening) {
      waits.push(new Promise<void>((resolve) => server.close(() => resolve())));
    }
    await Promise.all(waits);
    for (const peer of this.peers.values()) {
      peer.socket = null;
      peer.connected = false;
    }
    // libuv releases closed handles (and cancelled connect requests) one
    // loop turn after the 'close' events; resolve only once they are gone.
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.log.info('peer transport closed');
  }
}
