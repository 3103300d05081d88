import { ErrorCodes } from './errors.ts';
import type { ErrorCode } from './errors.ts';
import type { PeerMsg, Result } from './messages.ts';
import type { Ring } from './ring.ts';
import type { Entry, EntryKind, LocalKeyValue, Store } from './store.ts';
import { servingChain } from './view.ts';
import type { View } from './view.ts';

/**
 * The protocol core of one node: a deterministic state machine. The runtime (or the
 * simulator) feeds it inputs with the current monotonic time and carries out the outputs
 * it returns. It never touches sockets, clocks or timers; storage is reached through the
 * synchronous `Store` interface, whose durability the runtime guarantees before releasing
 * any output marked `durable`.
 *
 * One node plays two roles:
 *  - coordinator: takes a client request, sends it in one hop to the chain member that must
 *    handle it (head for writes, a clean member or the tail for reads, the tail for scans),
 *    retries until the deadline, and answers the client;
 *  - replica: a member of the chains of the partitions it belongs to (chain replication with
 *    CRAQ reads).
 */

export type ClientRequest =
  | { op: 'put'; key: Buffer; value: Buffer }
  | { op: 'del'; key: Buffer }
  | { op: 'get'; key: Buffer }
  /** Delete every key of one partition (a single replicated entry). */
  | { op: 'clear'; partition: number }
  /** A page of live pairs of one partition, from its tail. */
  | { op: 'scan'; partition: number; after: Buffer | null; limit: number }
  /** A page of the pairs stored on this node, replicas included ('@'). */
  | { op: 'local'; afterPartition: number; after: Buffer | null; limit: number };

export type ClientResult =
  | { ok: true; value?: Buffer | null; existed?: boolean; items?: [Buffer, Buffer][]; local?: LocalKeyValue[] }
  | { ok: false; code: ErrorCode; message: string };

export type Input =
  | { type: 'message'; from: string; msg: PeerMsg }
  | { type: 'client'; token: number; req: ClientRequest }
  | { type: 'tick' };

/** `durable`: release only after every store write made before it is on disk. */
export type Output =
  | { type: 'send'; to: string; msg: PeerMsg; durable: boolean }
  | { type: 'reply'; token: number; result: ClientResult; durable: boolean };

export interface ReplicaTiming {
  /** A client request fails with KV_ERR_TIMEOUT after this long. */
  requestTimeoutMs: number;
  /** The coordinator re-sends an unanswered request this often (same request id: applied once). */
  retryMs: number;
  /** A member re-sends unacknowledged entries to its successor after this long without progress. */
  retransmitMs: number;
}

export const defaultTiming: ReplicaTiming = { requestTimeoutMs: 5000, retryMs: 300, retransmitMs: 200 };

export interface ReplicaConfig {
  self: string;
  ring: Ring;
  view: View;
  store: Store;
  /** Distinguishes this process incarnation in request ids (the runtime passes a random value; the simulator a seeded one). */
  incarnation: string;
  timing?: Partial<ReplicaTiming>;
  /** How many recent request ids a head remembers for idempotent retries. */
  dedupWindow?: number;
}

interface Waiter {
  id: string;
  origin: string;
}

interface PartitionState {
  readonly p: number;
  /** Highest committed seq held here. */
  committed: number;
  /** Highest seq held here, pending included. */
  last: number;
  /** Entries committed+1..last, in order (empty at the tail). */
  pending: Entry[];
  /** Per key (latin1): how many pending entries touch it, and the latest. */
  dirty: Map<string, { count: number; latest: Entry }>;
  /** Seq of the latest pending clear, 0 if none. */
  pendingClearSeq: number;
  /** Head only: request ids waiting for a seq to commit. */
  waiters: Map<number, Waiter[]>;
  /** False after a restart until the history is level with the successor's (non-tails only). */
  ready: boolean;
  /** Last time the successor made progress (ack) or entries were (re)sent. */
  progressAt: number;
  syncSentAt: number;
  nackSentAt: number;
}

interface Outstanding {
  readonly token: number;
  readonly id: string;
  readonly req: ClientRequest;
  readonly partition: number;
  readonly deadline: number;
  nextTryAt: number;
  tries: number;
}

interface RecentWrite {
  p: number;
  seq: number;
  existed: boolean;
}

const keyStr = (key: Buffer): string => key.toString('latin1');

export class Replica {
  readonly self: string;
  readonly ring: Ring;
  private view: View;
  private readonly store: Store;
  private readonly timing: ReplicaTiming;
  private readonly incarnation: string;
  private readonly dedupWindow: number;

  private readonly parts = new Map<number, PartitionState>();
  private readonly outstanding = new Map<string, Outstanding>();
  private readonly recent = new Map<string, RecentWrite>();
  private nextRequest = 1;
  private now = 0;
  private out: Output[] = [];
  private readonly loopback: PeerMsg[] = [];
  /** True while a loopback message released under a durability barrier is handled. */
  private inheritDurable = false;

  constructor(cfg: ReplicaConfig) {
    this.self = cfg.self;
    this.ring = cfg.ring;
    this.view = cfg.view;
    this.store = cfg.store;
    this.timing = { ...defaultTiming, ...cfg.timing };
    this.incarnation = cfg.incarnation;
    this.dedupWindow = cfg.dedupWindow ?? 200_000;
    if (!cfg.ring.has(cfg.self)) throw new RangeError(`node ${cfg.self} is not in the ring`);
    for (const p of this.ring.partitionsOf(this.self)) {
      const committed = this.store.committedSeq(p);
      this.parts.set(p, {
        p,
        committed,
        last: committed,
        pending: [],
        dirty: new Map(),
        pendingClearSeq: 0,
        waiters: new Map(),
        // A restarted member lost its pending entries; until it has re-read its successor's
        // history it must neither order writes (as head) nor forward (it could reuse seqs).
        ready: this.successorOf(p) === undefined,
        progressAt: 0,
        syncSentAt: -Infinity,
        nackSentAt: -Infinity,
      });
    }
  }

  get currentView(): View {
    return this.view;
  }

  /** Feeds one input; returns what the runtime must do, in order. */
  step(now: number, input: Input): Output[] {
    if (now > this.now) this.now = now;
    this.out = [];
    switch (input.type) {
      case 'message':
        this.onMessage(input.from, input.msg);
        break;
      case 'client':
        this.onClient(input.token, input.req);
        break;
      case 'tick':
        this.onTick();
        break;
    }
    this.drainLoopback();
    const out = this.out;
    this.out = [];
    return out;
  }

  /** Partition state summary, for status pages and tests. */
  partitions(): { partition: number; committed: number; last: number; pending: number; ready: boolean }[] {
    return [...this.parts.values()].map((s) => ({
      partition: s.p,
      committed: s.committed,
      last: s.last,
      pending: s.pending.length,
      ready: s.ready,
    }));
  }

  outstandingCount(): number {
    return this.outstanding.size;
  }

  // ---------------------------------------------------------------- coordinator

  private onClient(token: number, req: ClientRequest): void {
    if (req.op === 'local') {
      const local = this.store.scanLocal(req.afterPartition, req.after, req.limit);
      this.out.push({ type: 'reply', token, result: { ok: true, local }, durable: false });
      return;
    }
    const partition = 'key' in req ? this.ring.partitionOf(req.key) : req.partition;
    if (partition < 0 || partition >= this.ring.size) {
      this.reply(token, { ok: false, code: ErrorCodes.BAD_REQUEST, message: `no partition ${partition}` }, false);
      return;
    }
    const id = `${this.self}.${this.incarnation}.${this.nextRequest++}`;
    const o: Outstanding = {
      token,
      id,
      req,
      partition,
      deadline: this.now + this.timing.requestTimeoutMs,
      nextTryAt: this.now,
      tries: 0,
    };
    this.outstanding.set(id, o);
    this.attempt(o);
  }

  private attempt(o: Outstanding): void {
    o.tries++;
    o.nextTryAt = this.now + this.timing.retryMs;
    const chain = servingChain(this.ring, this.view, o.partition);
    if (chain.length === 0) return; // nobody serves it now; retried until the deadline
    const e = this.view.epoch;
    const req = o.req;
    switch (req.op) {
      case 'put':
      case 'del':
      case 'clear': {
        const kind: EntryKind = req.op;
        const key = req.op === 'clear' ? Buffer.alloc(0) : req.key;
        const value = req.op === 'put' ? req.value : null;
        this.send(chain[0]!, { t: 'write', e, id: o.id, p: o.partition, kind, key, value, origin: this.self });
        return;
      }
      case 'get': {
        // CRAQ: any member may answer a clean key; prefer this node, else the tail.
        const target = chain.includes(this.self) ? this.self : chain[chain.length - 1]!;
        this.send(target, { t: 'read', e, id: o.id, p: o.partition, key: req.key, origin: this.self });
        return;
      }
      case 'scan':
        this.send(chain[chain.length - 1]!, {
          t: 'scan',
          e,
          id: o.id,
          p: o.partition,
          after: req.after,
          limit: req.limit,
          origin: this.self,
        });
        return;
      case 'local':
        return; // answered synchronously in onClient
    }
  }

  private onResult(id: string, r: Result): void {
    const o = this.outstanding.get(id);
    if (o === undefined) return; // already answered (a duplicate or late reply)
    if (!r.ok && r.retry) {
      // Wrong node, stale view or not ready: try again soon, within the deadline.
      o.nextTryAt = Math.min(o.nextTryAt, this.now + Math.min(20, this.timing.retryMs));
      return;
    }
    this.outstanding.delete(id);
    if (!r.ok) {
      this.reply(o.token, { ok: false, code: r.code, message: r.message }, this.inheritDurable);
      return;
    }
    const result: ClientResult = { ok: true };
    if (r.value !== undefined) result.value = r.value;
    if (r.existed !== undefined) result.existed = r.existed;
    if (r.items !== undefined) result.items = r.items;
    this.reply(o.token, result, this.inheritDurable);
  }

  private onTick(): void {
    for (const o of this.outstanding.values()) {
      if (this.now >= o.deadline) {
        this.outstanding.delete(o.id);
        const what = o.req.op === 'get' || o.req.op === 'scan' ? 'read' : 'write (it may or may not have been applied)';
        this.reply(
          o.token,
          {
            ok: false,
            code: ErrorCodes.TIMEOUT,
            message: `${what} of partition ${o.partition} timed out after ${this.timing.requestTimeoutMs} ms (${o.tries} attempts)`,
          },
          false,
        );
      } else if (this.now >= o.nextTryAt) {
        this.attempt(o);
      }
    }
    for (const s of this.parts.values()) this.tickPartition(s);
  }

  private tickPartition(s: PartitionState): void {
    const succ = this.successorOf(s.p);
    if (!s.ready) {
      // Retried often: at a cold start the chain becomes ready from the tail up, one hop per try.
      if (succ !== undefined && this.now - s.syncSentAt >= Math.min(50, this.timing.retransmitMs)) {
        s.syncSentAt = this.now;
        this.send(succ, { t: 'sync', e: this.view.epoch, p: s.p, committed: s.committed });
      }
      return;
    }
    if (succ !== undefined && s.pending.length > 0 && this.now - s.progressAt >= this.timing.retransmitMs) {
      s.progressAt = this.now;
      this.send(succ, { t: 'fwd', e: this.view.epoch, p: s.p, entries: s.pending.slice() });
    }
  }

  // ---------------------------------------------------------------- replica

  private onMessage(from: string, msg: PeerMsg): void {
    switch (msg.t) {
      case 'write':
        return this.onWrite(msg);
      case 'fwd':
        return this.onFwd(from, msg);
      case 'ack':
        return this.onAck(from, msg);
      case 'nack':
        return this.onNack(from, msg);
      case 'read':
        return this.onRead(msg);
      case 'scan':
        return this.onScan(msg);
      case 'sync':
        return this.onSync(from, msg);
      case 'syncr':
        return this.onSyncReply(from, msg);
      case 'wres':
      case 'rres':
      case 'sres':
        return this.onResult(msg.id, msg.r);
    }
  }

  private onWrite(msg: Extract<PeerMsg, { t: 'write' }>): void {
    const s = this.parts.get(msg.p);
    const chain = servingChain(this.ring, this.view, msg.p);
    if (msg.e !== this.view.epoch || s === undefined || chain[0] !== this.self) {
      return this.send(msg.origin, { t: 'wres', id: msg.id, r: { ok: false, retry: true, why: 'not head' } });
    }
    if (!s.ready) return this.send(msg.origin, { t: 'wres', id: msg.id, r: { ok: false, retry: true, why: 'syncing' } });

    const seen = this.recent.get(msg.id);
    if (seen !== undefined) {
      // A retry of a write this head already ordered: answer once it is committed, never apply twice.
      if (seen.seq <= s.committed) {
        this.send(msg.origin, { t: 'wres', id: msg.id, r: { ok: true, existed: seen.existed } }, true);
      } else {
        this.addWaiter(s, seen.seq, msg.id, msg.origin);
      }
      return;
    }

    const existed = msg.kind === 'put' ? this.latestExists(s, msg.key) : msg.kind === 'del' ? this.latestExists(s, msg.key) : true;
    const entry: Entry = { seq: s.last + 1, epoch: this.view.epoch, kind: msg.kind, key: msg.key, value: msg.value, id: msg.id };
    this.remember(msg.id, { p: s.p, seq: entry.seq, existed });
    this.addWaiter(s, entry.seq, msg.id, msg.origin);
    if (chain.length === 1) {
      this.commitEntry(s, entry);
      this.releaseWaiters(s);
    } else {
      this.appendPending(s, entry);
      if (s.pending.length === 1) s.progressAt = this.now;
      this.send(chain[1]!, { t: 'fwd', e: this.view.epoch, p: s.p, entries: [entry] });
    }
  }

  private onFwd(from: string, msg: Extract<PeerMsg, { t: 'fwd' }>): void {
    const s = this.parts.get(msg.p);
    if (msg.e !== this.view.epoch || s === undefined || this.predecessorOf(msg.p) !== from) return;
    const succ = this.successorOf(msg.p);
    const passOn: Entry[] = [];
    let duplicate = false;
    for (const entry of msg.entries) {
      if (entry.seq <= s.last) {
        duplicate = true;
        continue;
      }
      if (entry.seq !== s.last + 1) {
        if (this.now - s.nackSentAt >= this.timing.retransmitMs / 2) {
          s.nackSentAt = this.now;
          this.send(from, { t: 'nack', e: this.view.epoch, p: s.p, from: s.last + 1 });
        }
        break;
      }
      if (succ === undefined) {
        this.commitEntry(s, entry);
      } else {
        this.appendPending(s, entry);
        passOn.push(entry);
      }
    }
    if (succ === undefined) {
      // Tail: committed on receipt; acknowledge once it is durable.
      this.send(from, { t: 'ack', e: this.view.epoch, p: s.p, seq: s.committed }, true);
    } else if (passOn.length > 0) {
      if (s.pending.length === passOn.length) s.progressAt = this.now;
      this.send(succ, { t: 'fwd', e: this.view.epoch, p: s.p, entries: passOn });
    } else if (duplicate && s.committed > 0) {
      // A retransmission of what we already hold: remind the sender how far commits went.
      this.send(from, { t: 'ack', e: this.view.epoch, p: s.p, seq: s.committed }, true);
    }
  }

  private onAck(from: string, msg: Extract<PeerMsg, { t: 'ack' }>): void {
    const s = this.parts.get(msg.p);
    if (msg.e !== this.view.epoch || s === undefined || this.successorOf(msg.p) !== from) return;
    const upTo = Math.min(msg.seq, s.last);
    if (upTo <= s.committed) return;
    while (s.pending.length > 0 && s.pending[0]!.seq <= upTo) {
      const entry = s.pending.shift()!;
      this.commitEntry(s, entry);
    }
    s.progressAt = this.now;
    const pred = this.predecessorOf(s.p);
    if (pred !== undefined) this.send(pred, { t: 'ack', e: this.view.epoch, p: s.p, seq: s.committed }, true);
    this.releaseWaiters(s);
  }

  private onNack(from: string, msg: Extract<PeerMsg, { t: 'nack' }>): void {
    const s = this.parts.get(msg.p);
    if (msg.e !== this.view.epoch || s === undefined || this.successorOf(msg.p) !== from) return;
    const entries: Entry[] = [];
    if (msg.from <= s.committed) entries.push(...this.store.changesAfter(s.p, msg.from - 1, 10_000));
    for (const e of s.pending) if (e.seq >= msg.from) entries.push(e);
    if (entries.length > 0) this.send(from, { t: 'fwd', e: this.view.epoch, p: s.p, entries });
  }

  private onRead(msg: Extract<PeerMsg, { t: 'read' }>): void {
    const s = this.parts.get(msg.p);
    const chain = servingChain(this.ring, this.view, msg.p);
    if (msg.e !== this.view.epoch || s === undefined || !chain.includes(this.self) || !s.ready) {
      return this.send(msg.origin, { t: 'rres', id: msg.id, r: { ok: false, retry: true, why: 'not a serving member' } });
    }
    const tail = chain[chain.length - 1]!;
    if (tail !== this.self && (s.pendingClearSeq > 0 || s.dirty.has(keyStr(msg.key)))) {
      // CRAQ: our copy has an uncommitted write; only the tail knows which version is committed.
      return this.send(tail, msg);
    }
    const value = this.store.get(s.p, msg.key);
    this.send(msg.origin, { t: 'rres', id: msg.id, r: { ok: true, value } }, this.store.volatile(s.p, msg.key));
  }

  private onScan(msg: Extract<PeerMsg, { t: 'scan' }>): void {
    const s = this.parts.get(msg.p);
    const chain = servingChain(this.ring, this.view, msg.p);
    if (msg.e !== this.view.epoch || s === undefined || chain[chain.length - 1] !== this.self) {
      return this.send(msg.origin, { t: 'sres', id: msg.id, r: { ok: false, retry: true, why: 'not tail' } });
    }
    const page = this.store.scan(s.p, msg.after, msg.limit);
    const items: [Buffer, Buffer][] = page.map((kv) => [kv.key, kv.value]);
    const durable = page.some((kv) => this.store.volatile(s.p, kv.key));
    this.send(msg.origin, { t: 'sres', id: msg.id, r: { ok: true, items, done: page.length < msg.limit } }, durable);
  }

  private onSync(from: string, msg: Extract<PeerMsg, { t: 'sync' }>): void {
    const s = this.parts.get(msg.p);
    // Answer only once level ourselves: our history must include all the tail has.
    if (msg.e !== this.view.epoch || s === undefined || !s.ready || this.predecessorOf(msg.p) !== from) return;
    const entries = this.store.changesAfter(s.p, msg.committed, Number.MAX_SAFE_INTEGER);
    for (const e of s.pending) if (e.seq > msg.committed) entries.push(e);
    this.send(from, { t: 'syncr', e: this.view.epoch, p: s.p, committed: s.committed, entries }, true);
  }

  private onSyncReply(from: string, msg: Extract<PeerMsg, { t: 'syncr' }>): void {
    const s = this.parts.get(msg.p);
    if (msg.e !== this.view.epoch || s === undefined || s.ready || this.successorOf(msg.p) !== from) return;
    // Everything the successor holds becomes ours: its committed changes (compacted: superseded
    // versions are skipped, so seqs may jump) and then its pending entries, contiguous.
    for (const entry of msg.entries) {
      if (entry.seq <= s.committed) continue;
      if (entry.seq <= msg.committed) {
        this.store.commit(s.p, entry);
      } else {
        if (s.committed < msg.committed) {
          this.store.setCommittedSeq(s.p, msg.committed);
          s.committed = s.last = msg.committed;
        }
        this.assert(entry.seq === s.last + 1, `sync of partition ${s.p} from ${from} has a gap at ${entry.seq}`);
        this.appendPending(s, entry);
      }
      this.remember(entry.id, { p: s.p, seq: entry.seq, existed: true });
    }
    if (s.committed < msg.committed) {
      this.store.setCommittedSeq(s.p, msg.committed);
      s.committed = msg.committed;
      if (s.last < s.committed) s.last = s.committed;
    }
    s.ready = true;
    s.progressAt = this.now;
  }

  // ---------------------------------------------------------------- helpers

  private appendPending(s: PartitionState, entry: Entry): void {
    this.store.appendPending(s.p, entry);
    s.pending.push(entry);
    s.last = entry.seq;
    if (entry.kind === 'clear') {
      s.pendingClearSeq = entry.seq;
    } else {
      const k = keyStr(entry.key);
      const d = s.dirty.get(k);
      if (d === undefined) s.dirty.set(k, { count: 1, latest: entry });
      else {
        d.count++;
        d.latest = entry;
      }
    }
  }

  private commitEntry(s: PartitionState, entry: Entry): void {
    this.assert(entry.seq === s.committed + 1, `commit of ${entry.seq} after ${s.committed} in partition ${s.p}`);
    this.store.commit(s.p, entry);
    s.committed = entry.seq;
    if (s.last < entry.seq) s.last = entry.seq;
    if (entry.kind === 'clear') {
      if (s.pendingClearSeq === entry.seq) s.pendingClearSeq = 0;
    } else {
      const k = keyStr(entry.key);
      const d = s.dirty.get(k);
      if (d !== undefined && --d.count === 0) s.dirty.delete(k);
    }
  }

  /** Whether the key is live after every write this node has ordered or received (pending included). */
  private latestExists(s: PartitionState, key: Buffer): boolean {
    const d = s.dirty.get(keyStr(key));
    if (d !== undefined && d.latest.seq > s.pendingClearSeq) return d.latest.kind === 'put';
    if (s.pendingClearSeq > 0) return false;
    return this.store.get(s.p, key) !== null;
  }

  private addWaiter(s: PartitionState, seq: number, id: string, origin: string): void {
    const list = s.waiters.get(seq);
    if (list === undefined) s.waiters.set(seq, [{ id, origin }]);
    else if (!list.some((w) => w.id === id && w.origin === origin)) list.push({ id, origin });
  }

  private releaseWaiters(s: PartitionState): void {
    for (const [seq, list] of s.waiters) {
      if (seq > s.committed) continue;
      s.waiters.delete(seq);
      for (const w of list) {
        const seen = this.recent.get(w.id);
        this.send(w.origin, { t: 'wres', id: w.id, r: { ok: true, existed: seen?.existed ?? true } }, true);
      }
    }
  }

  private remember(id: string, w: RecentWrite): void {
    this.recent.set(id, w);
    if (this.recent.size > this.dedupWindow) {
      const oldest = this.recent.keys().next();
      if (!oldest.done) this.recent.delete(oldest.value);
    }
  }

  private successorOf(p: number): string | undefined {
    const chain = servingChain(this.ring, this.view, p);
    const i = chain.indexOf(this.self);
    return i >= 0 ? chain[i + 1] : undefined;
  }

  private predecessorOf(p: number): string | undefined {
    const chain = servingChain(this.ring, this.view, p);
    const i = chain.indexOf(this.self);
    return i > 0 ? chain[i - 1] : undefined;
  }

  private send(to: string, msg: PeerMsg, durable = false): void {
    if (to === this.self) {
      this.loopback.push(msg);
      // Loopback work runs now, inside this step; anything it answers must wait for the
      // same durability as the message itself would have.
      if (durable) this.loopbackDurable.add(msg);
      return;
    }
    this.out.push({ type: 'send', to, msg, durable });
  }

  private readonly loopbackDurable = new Set<PeerMsg>();

  private drainLoopback(): void {
    let guard = 0;
    while (this.loopback.length > 0) {
      this.assert(++guard < 1_000_000, 'loopback does not drain');
      const msg = this.loopback.shift()!;
      const durable = this.loopbackDurable.delete(msg);
      const before = this.inheritDurable;
      this.inheritDurable = durable;
      this.onMessage(this.self, msg);
      this.inheritDurable = before;
    }
  }

  private reply(token: number, result: ClientResult, durable: boolean): void {
    this.out.push({ type: 'reply', token, result, durable: durable || this.inheritDurable });
  }

  private assert(cond: boolean, what: string): asserts cond {
    if (!cond) throw new Error(`invariant violated on ${this.self}: ${what}`);
  }
}
