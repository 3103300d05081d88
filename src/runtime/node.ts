import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { ErrorCodes } from '../core/errors.ts';
import { parsePeerMsg } from '../core/messages.ts';
import { Replica } from '../core/replica.ts';
import type { ClientRequest, ClientResult, Input, Output } from '../core/replica.ts';
import { Ring } from '../core/ring.ts';
import type { ClusterConfig } from './config.ts';
import { nodeAddress, nodeDataDir } from './config.ts';
import { LmdbStore } from './storage.ts';
import { PeerTransport } from './transport.ts';
import type { TurnTrace } from './turn-trace.ts';
import { describeInput, describeOutput } from './turn-trace.ts';

/** A turn of the protocol core longer than this is logged as a warning. */
const SLOW_TURN_MS = 100;

export interface NodeOptions {
  /** The cluster's shared secret; peer connections are authenticated with it (transport.ts). */
  peerSecret?: string;
  /** Notes every turn, for diagnostics (turn-trace.ts); off unless given. */
  trace?: TurnTrace;
}

/**
 * One real node: the protocol core wired to LMDB, the TCP transport, a monotonic clock and a
 * ticker. Inputs that arrive in one event-loop turn are stepped together inside one LMDB
 * write transaction; the outputs are then released in order, those marked durable only after
 * an fdatasync that started after the transaction committed (group commit).
 */
export class NodeRuntime {
  readonly name: string;
  readonly config: ClusterConfig;
  readonly ring: Ring;
  readonly store: LmdbStore;
  readonly replica: Replica;
  readonly transport: PeerTransport;
  private readonly log: Logger;

  private inbox: Input[] = [];
  private drainScheduled = false;
  /**
   * Outputs waiting for durability, one queue per destination (a peer, or "client" for
   * replies), in order; `gen` = store generation they need durable (0: none, only order).
   * Order is kept per destination (links are FIFO), so a durable ack to one peer never holds
   * up a forward to another.
   */
  private readonly gated = new Map<string, { o: Exclude<Output, { type: 'log' }>; gen: number }[]>();
  private nextToken = 1;
  private readonly callbacks = new Map<number, (r: ClientResult) => void>();
  private ticker: NodeJS.Timeout | null = null;
  private stopping = false;
  readonly startedAt = Date.now();
  readonly counters = { requests: 0, steps: 0, fsyncs: 0, messagesIn: 0, badMessages: 0 };
  /** Called after each event-loop turn of the core with its wall time (metrics hook). */
  onTurn: ((ms: number) => void) | null = null;
  /** Called with how long each group commit's outputs waited for their fdatasync, in ms. */
  onSync: ((ms: number) => void) | null = null;

  private readonly trace: TurnTrace | undefined;

  constructor(config: ClusterConfig, name: string, log: Logger, opts: NodeOptions = {}) {
    this.name = name;
    this.trace = opts.trace;
    this.config = config;
    this.log = log;
    const me = nodeAddress(config, name);
    this.ring = new Ring(
      config.nodes.map((n) => n.name),
      config.replication,
    );
    this.store = new LmdbStore(nodeDataDir(config, name), {
      durability: config.durability,
      mapSize: config.mapSizeMiB * 1024 * 1024,
      onCheckpointError: (err) => log.warn({ err }, 'checkpoint failed (copying the database to its snapshot): the redo log is kept, and a checkpoint is tried again later'),
    });
    this.replica = new Replica({
      self: name,
      ring: this.ring,
      store: this.store,
      incarnation: randomBytes(4).toString('hex'),
      seed: randomBytes(4).readUInt32BE(0),
      timing: {
        requestTimeoutMs: config.requestTimeoutMs,
        retryMs: config.retryMs,
        retransmitMs: config.retransmitMs,
        heartbeatMs: config.heartbeatMs,
        electionMinMs: config.electionTimeoutMs,
        electionMaxMs: config.electionTimeoutMs * 1.6,
        detectMs: config.failureDetectMs,
        leaseGrantMs: config.leaseMs,
        leaseRenewMs: Math.max(20, Math.floor(config.leaseMs / 6)),
        clockDrift: config.clockDrift,
      },
    });
    const names = new Set(config.nodes.map((n) => n.name));
    const peers: Record<string, { host: string; port: number }> = {};
    for (const n of config.nodes) if (n.name !== name) peers[n.name] = { host: n.host, port: n.peerPort };
    this.transport = new PeerTransport({
      self: name,
      cluster: config.cluster,
      listen: { host: me.host, port: me.peerPort },
      peers,
      // A frame must hold a page (PAGE_BYTES plus the item that crosses it, with request ids)
      // and a single write of the largest allowed value: frames above the limit are dropped,
      // and a write that can never be forwarded would hold up its chain forever.
      maxFrameBytes: peerFrameLimit(config),
      secret: opts.peerSecret,
      logger: log.child({ component: 'transport' }),
    });
    this.transport.onMessage = (from, raw) => {
      this.counters.messagesIn++;
      const msg = parsePeerMsg(raw, this.ring.size, names);
      if (msg === null) {
        this.counters.badMessages++;
        this.log.warn({ from, type: typeof raw === 'object' && raw !== null ? (raw as { t?: unknown }).t : typeof raw }, 'dropped a malformed peer message');
        return;
      }
      this.enqueue({ type: 'message', from, msg });
    };
    this.transport.onPeerState = (peer, state) => this.log.debug({ peer, state }, 'peer state');
    this.transport.onRefused = (peer) => this.enqueue({ type: 'refused', node: peer });
  }

  async start(): Promise<void> {
    await this.transport.start();
    this.ticker = setInterval(() => this.enqueue({ type: 'tick' }), this.config.tickMs);
    const parts = this.replica.partitions();
    const { recovery, redoStats } = this.store;
    if (recovery.base !== 'trusted' || redoStats.replayedRecords > 0) {
      const msg = `storage recovered: database ${recovery.base === 'trusted' ? 'kept' : recovery.base === 'unverified' ? 'kept, unverified' : `rebuilt from ${recovery.base === 'snapshot' ? 'the snapshot' : 'empty'}`} (${recovery.reason}), ${redoStats.replayedRecords} redo records applied`;
      if (recovery.base === 'unverified') this.log.warn({ ...recovery, ...redoStats }, msg);
      else this.log.info({ ...recovery, ...redoStats }, msg);
    }
    this.log.info(
      { partitions: parts.map((p) => p.partition), committed: parts.map((p) => p.committed) },
      `node ${this.name} started (storage ${this.store.dir}, durability ${this.config.durability})`,
    );
  }

  /** Submits a client request to the core; resolves with its result (never rejects). */
  request(req: ClientRequest): Promise<ClientResult> {
    if (this.stopping) {
      return Promise.resolve({ ok: false, code: ErrorCodes.SHUTTING_DOWN, message: `node ${this.name} is shutting down` });
    }
    this.counters.requests++;
    const token = this.nextToken++;
    return new Promise((resolve) => {
      this.callbacks.set(token, resolve);
      this.enqueue({ type: 'client', token, req });
    });
  }

  private enqueue(input: Input): void {
    this.inbox.push(input);
    if (this.trace !== undefined && input.type !== 'tick') this.trace.note('in', describeInput(input));
    if (!this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(() => this.drain());
    }
  }

  private drain(): void {
    this.drainScheduled = false;
    const inbox = this.inbox;
    this.inbox = [];
    let outputs: Output[] = [];
    const now = performance.now();
    this.trace?.note('turn', inbox.map(describeInput).join(','));
    try {
      this.store.transaction(() => {
        outputs = this.replica.stepAll(now, inbox);
      });
    } catch (err) {
      // An invariant of the core failed or the disk failed: stopping is the only safe move
      // (crash-only; a restarted node re-syncs from its chain).
      this.log.fatal({ err }, 'protocol core failed; exiting');
      process.exit(70);
    }
    this.counters.steps += inbox.length;
    const tookMs = performance.now() - now;
    if (tookMs >= SLOW_TURN_MS) {
      // The event loop was blocked this long: heartbeats and leases wait too, and past
      // failureDetectMs the leader takes the node for dead.
      this.log.warn({ ms: Math.round(tookMs), inputs: inbox.length }, `slow turn: ${inbox.length} inputs took ${Math.round(tookMs)} ms`);
    }
    this.trace?.note('stepped', outputs.map(describeOutput).join(','));
    this.dispatch(outputs);
    this.transport.flush();
    this.trace?.note('flushed');
    this.onTurn?.(performance.now() - now);
  }

  private dispatch(outputs: Output[]): void {
    const gen = this.store.writeGeneration;
    let needSync = false;
    for (const o of outputs) {
      if (o.type === 'log') {
        this.log[o.level](o.data ?? {}, o.msg);
        continue;
      }
      // Replies are independent of each other; sends keep their order per peer.
      const dest = o.type === 'send' ? o.to : o.durable ? 'client' : '';
      const queue = dest === '' ? undefined : this.gated.get(dest);
      if ((queue === undefined || queue.length === 0) && (!o.durable || this.store.durableGeneration >= gen)) {
        this.emit(o);
      } else {
        if (queue === undefined) this.gated.set(dest, [{ o, gen: o.durable ? gen : 0 }]);
        else queue.push({ o, gen: o.durable ? gen : 0 });
        needSync ||= o.durable;
      }
    }
    if (needSync) {
      this.counters.fsyncs++;
      const syncStart = performance.now();
      this.trace?.note('sync');
      this.store.sync().then(
        () => {
          const ms = performance.now() - syncStart;
          this.onSync?.(ms);
          if (ms >= SLOW_TURN_MS) this.log.warn({ ms: Math.round(ms) }, `slow fdatasync: durable outputs waited ${Math.round(ms)} ms`);
          this.release();
        },
        (err: unknown) => {
          this.log.fatal({ err }, 'fdatasync failed; exiting');
          process.exit(71);
        },
      );
    }
  }

  private release(): void {
    this.trace?.note('synced');
    const durable = this.store.durableGeneration;
    for (const queue of this.gated.values()) {
      let n = 0;
      while (n < queue.length && queue[n]!.gen <= durable) this.emit(queue[n++]!.o);
      if (n > 0) queue.splice(0, n);
    }
    this.transport.flush();
    this.trace?.note('flushed');
  }

  private emit(o: Exclude<Output, { type: 'log' }>): void {
    if (o.type === 'send') {
      this.transport.send(o.to, o.msg);
      return;
    }
    const cb = this.callbacks.get(o.token);
    if (cb === undefined) return;
    this.trace?.note('reply');
    this.callbacks.delete(o.token);
    cb(o.result);
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.ticker !== null) clearInterval(this.ticker);
    // Let durable outputs already in flight go out before the transport closes.
    await this.store.sync().catch(() => undefined);
    this.release();
    for (const [token, cb] of this.callbacks) {
      this.callbacks.delete(token);
      cb({ ok: false, code: ErrorCodes.SHUTTING_DOWN, message: `node ${this.name} is shutting down` });
    }
    await this.transport.close();
    await this.store.close();
  }
}

/** Largest peer frame a node accepts: 64 MiB of room for pages and ids, plus the largest key and value. */
export function peerFrameLimit(config: Pick<ClusterConfig, 'maxKeyBytes' | 'maxValueBytes'>): number {
  return 64 * 1024 * 1024 + config.maxKeyBytes + config.maxValueBytes;
}
