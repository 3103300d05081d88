import { copyOf, splitRequestId } from './request-id.ts';
import { ErrorCodes } from './errors.ts';
import type { ErrorCode } from './errors.ts';
import { defaultMembershipTiming, Membership } from './membership.ts';
import type { MembershipState, MembershipTiming } from './membership.ts';
import type { DataMsg, PeerMsg, Result } from './messages.ts';
import { isMembershipMsg } from './messages.ts';
import type { Ring } from './ring.ts';
import { coalesce } from './coalesce.ts';
import { KEEP_LOG_SEQS, PAGE_BYTES, itemBytes, itemsBytes, pageIsFull, pageOf } from './store.ts';
import type { Entry, EntryKind, LocalKeyValue, Store } from './store.ts';
import { initialView, servingChain } from './view.ts';
import type { NodeState, View } from './view.ts';

/**
 * The protocol core of one node: a deterministic state machine. The runtime (or the
 * simulator) feeds it inputs with the node's monotonic time and carries out the outputs it
 * returns. It never touches sockets, clocks or timers; storage is reached through the
 * synchronous `Store` interface, whose durability the runtime guarantees before releasing
 * any output marked `durable`.
 *
 * One node plays three roles:
 *  - coordinator: takes a client request, sends it in one hop to the chain member that must
 *    handle it (head for writes, a clean member or the tail for reads, the tail for scans),
 *    retries until the deadline, and answers the client;
 *  - replica: a member of the chains of the partitions it belongs to (chain replication with
 *    CRAQ reads), which levels itself with its chain at every view change;
 *  - configuration member: one vote in the Raft group that decides views, a lease granter,
 *    and, when leader, the master that marks nodes down, joining and up (membership.ts).
 */

export type ClientRequest =
  | { op: 'put'; key: Buffer; value: Buffer }
  | { op: 'del'; key: Buffer }
  | { op: 'get'; key: Buffer }
  /** Delete every key of one partition (a single replicated entry). */
  | { op: 'clear'; partition: number }
  /** A page of live pairs of one partition, from its tail. */
  | { op: 'scan'; partition: number; after: Buffer | null; limit: number }
  /** How many live pairs one partition holds, from its tail. */
  | { op: 'count'; partition: number }
  /** A page of the pairs stored on this node, replicas included ('@'). */
  | { op: 'local'; afterPartition: number; after: Buffer | null; limit: number }
  /** How many live pairs this node stores, replicas included ('@'). */
  | { op: 'localCount' };

export type ClientResult =
  /** `done` (scan, local): nothing is left after this page; a page can be short because of its byte bound. */
  | { ok: true; value?: Buffer | null; existed?: boolean; items?: [Buffer, Buffer][]; local?: LocalKeyValue[]; done?: boolean; count?: number }
  | { ok: false; code: ErrorCode; message: string };

export type Input =
  | { type: 'message'; from: string; msg: PeerMsg }
  | { type: 'client'; token: number; req: ClientRequest }
  | { type: 'tick' }
  /** A connection to this node was refused: its process is not running. */
  | { type: 'refused'; node: string };

/** `durable`: release only after every store write made before it is on disk. */
export type Output =
  | { type: 'send'; to: string; msg: PeerMsg; durable: boolean }
  | { type: 'reply'; token: number; result: ClientResult; durable: boolean }
  | { type: 'log'; level: 'info' | 'warn'; msg: string; data?: Record<string, unknown> };

export interface ReplicaTiming extends MembershipTiming {
  /** A client request fails with KV_ERR_TIMEOUT after this long. */
  requestTimeoutMs: number;
  /** The coordinator re-sends an unanswered request this often (same request id: applied once). */
  retryMs: number;
  /** A member re-sends unacknowledged entries to its successor after this long without progress. */
  retransmitMs: number;
  /** Entries per catch-up page. */
  catchupPage: number;
  /**
   * Bytes of keys and values per page of a catch-up reply, a retransmission or a scan
   * (PAGE_BYTES): one frame each. The simulator sets it tiny so that every path pages.
   */
  pageBytes: number;
  /** Rows garbage collection looks at per tick (log rows, and the records a clear hides). */
  gcRowsPerTick: number;
  /**
   * Seqs per partition whose request ids the log keeps (superseded versions included), loaded
   * after a restart and sent with syncs and catch-up (KEEP_LOG_SEQS). The simulator can set it
   * small, to see what a horizon by count misses.
   */
  keepLogSeqs: number;
  /**
   * Request ids committed less than this long ago are kept in the log whatever keepLogSeqs
   * says (default requestTimeoutMs + 1 s: a coordinator retries until its deadline). The
   * simulator sets it to 0 to see what a horizon by count alone misses.
   */
  idHorizonMs?: number;
}

export const defaultTiming: ReplicaTiming = {
  ...defaultMembershipTiming,
  requestTimeoutMs: 5000,
  retryMs: 300,
  retransmitMs: 200,
  catchupPage: 5_000,
  pageBytes: PAGE_BYTES,
  gcRowsPerTick: 5000,
  keepLogSeqs: KEEP_LOG_SEQS,
};

export interface ReplicaConfig {
  self: string;
  ring: Ring;
  store: Store;
  /** Distinguishes this process incarnation (request ids, lease promises). */
  incarnation: string;
  /** Seed of this node's own random generator (election timeouts). */
  seed: number;
  timing?: Partial<ReplicaTiming>;
  /** How many recent request ids a node remembers for idempotent retries. */
  dedupWindow?: number;
}



interface Waiter {
  id: string;
  origin: string;
}

/**
 * Per partition of this node's canonical chains.
 *  member:  in the serving chain of the current view;
 *  catchup: this node is joining: copying the partition from the serving chain;
 *  out:     this node is down in the current view (or waits to be let back in).
 */
type Mode = 'member' | 'catchup' | 'out';

interface PartitionState {
  readonly p: number;
  mode: Mode;
  /** Highest committed seq held here. */
  committed: number;
  /** Highest seq held here, pending included. */
  last: number;
  /** Entries committed+1..last, in order. */
  pending: Entry[];
  /** Per key (latin1): how many pending entries touch it, and the latest. */
  dirty: Map<string, { count: number; latest: Entry }>;
  /** Seq of the latest pending clear, 0 if none. */
  pendingClearSeq: number;
  /** Request ids waiting for a seq to commit (this node ordered them as head). */
  waiters: Map<number, Waiter[]>;
  /** Member only: level with the chain of the current view (synced with successor / pulled by a new tail). */
  ready: boolean;
  /** Whether this node's history is known to contain its successor's (false after a restart or rejoin until synced). */
  level: boolean;
  /** Catch-up: the serving chain's committed seq was reached. */
  caught: boolean;
  progressAt: number;
  syncSentAt: number;
  nackSentAt: number;
  /** For progress output during catch-up. */
  catchupTarget: number;
  /** The seq below which the log has been pruned, as the store last reported (0 until the first prune after a start). */
  prunedAt: number;
  /** Head: the last garbage-collection floor sent down the chain, and when. */
  gcFloor: number;
  gcAt: number;
  /** Any member: the floor it was told it may collect garbage up to, and how far it got (a slice per tick). */
  gcWant: number;
  gcDone: number;
  /** A tail that is not level: the answers to its pulls, by member. */
  pulls: Map<string, { from: string; msg: Extract<DataMsg, { t: 'syncr' }> }>;
  /** A member levelling page by page: the member whose history it is taking (after the first page). */
  levelFrom: string | undefined;
  /** (time, committed seq) every ID_MARK_MS, for the request-id horizon by time; in memory, so empty after a start. */
  marks: { at: number; seq: number }[];
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

export interface RecentWrite {
  p: number;
  seq: number;
  existed: boolean;
}

const keyStr = (key: Buffer): string => key.toString('latin1');

/** A joining node asks again for a catch-up page not answered within this time. */
const CATCHUP_REASK_MS = 1000;
/** ... and asks for the first page this often until one arrives. */
const CATCHUP_FIRST_ASK_MS = 100;

/** How often a partition notes its committed seq, for the request-id horizon by time. */
const ID_MARK_MS = 250;

/** Log pruning: once this many seqs are behind the dedup horizon, prune up to this many rows per tick. */
const PRUNE_MIN_SEQS = 1000;
const PRUNE_ROWS_PER_TICK = 2000;

/** A retransmission's entries: the first ones, at most 1,000 and about `maxBytes` of keys and values (one frame). */
function fwdPage(entries: readonly Entry[], maxBytes: number): Entry[] {
  return pageOf(entries, 1000, maxBytes, (e) => itemBytes(e.key, e.value));
}

/**
 * How long sending `bytes` may plausibly take beyond a small message's round trip, at a
 * conservative 10 MB/s per hop and member (copies in and out of frames, LMDB, the redo log):
 * a re-send before then only adds the same bytes to a link and a member already busy with
 * them. A 70 MiB value on a slow two-core VM took about 2 s per member; with re-sends every
 * 200-300 ms it never completed, not within 60 s (recovery.test.ts). Negligible for small
 * values (100 bytes: 0.01 ms; 1 MiB: 105 ms).
 */
export function transferAllowanceMs(bytes: number): number {
  return bytes / 10_000;
}

/**
 * The window of recent request ids, in two generations: when the current one is full it
 * becomes the previous one and the oldest generation is dropped whole. O(1) per id (evicting
 * one id at a time from a Map's front slows down as deleted slots pile up).
 *
 * A generation is also at least `minAgeMs` old when it becomes the previous one, so an id is
 * remembered for at least that long whatever the write rate: a coordinator retries a request
 * under the same id until its deadline (requestTimeoutMs), and a retry whose id was forgotten
 * would be applied twice. By count alone, an id could be forgotten after 100,000 others:
 * 4.2 s at the 24,000 writes/s the busiest node sees while the benchmark loads keys, less
 * than the 5-s deadline.
 *
 * An id `node.incarnation.counter` is held as its counter, a number, under its prefix: no
 * string per id. An id decoded from a peer's frame is a slice of a string msgpack made of the
 * frame's bytes, and a slice keeps its whole parent alive: held as strings, the ~270,000 ids
 * of the busiest node's window kept 25 MiB of strings (design.md §3.2).
 */
export class RecentIds {
  private current: IdGeneration = new Map();
  private previous: IdGeneration = new Map();
  private currentSize = 0;
  private currentSince = 0;
  constructor(
    private readonly half: number,
    private readonly minAgeMs: number,
  ) {}
  get(id: string, p: number): RecentWrite | undefined {
    const [prefix, counter] = splitRequestId(id);
    const v = this.current.get(p)?.get(prefix)?.get(counter) ?? this.previous.get(p)?.get(prefix)?.get(counter);
    return v === undefined ? undefined : { p, seq: Math.floor(v / 2), existed: v % 2 === 1 };
  }
  /** Forgets an id recorded for `seq` (a pending entry that was dropped, never committed). */
  forget(id: string, p: number, seq: number): void {
    const [prefix, counter] = splitRequestId(id);
    for (const gen of [this.current, this.previous]) {
      const ids = gen.get(p)?.get(prefix);
      const v = ids?.get(counter);
      if (v !== undefined && Math.floor(v / 2) === seq) ids!.delete(counter);
    }
  }
  set(id: string, w: RecentWrite, now: number): void {
    if (this.currentSize === 0) this.currentSince = now;
    const [prefix, counter] = splitRequestId(id);
    let byPrefix = this.current.get(w.p);
    if (byPrefix === undefined) this.current.set(w.p, (byPrefix = new Map()));
    let ids = byPrefix.get(prefix);
    // A copy of the prefix, not a slice that would keep a frame's string alive.
    if (ids === undefined) byPrefix.set(copyOf(prefix), (ids = new Map()));
    const before = ids.size;
    ids.set(typeof counter === 'string' ? copyOf(counter) : counter, w.seq * 2 + (w.existed ? 1 : 0));
    this.currentSize += ids.size - before;
    if (this.currentSize >= this.half && now - this.currentSince >= this.minAgeMs) {
      this.previous = this.current;
      this.current = new Map();
      this.currentSize = 0;
    }
  }
}

/** Per partition, per id prefix, counter -> seq * 2 + existed. */
type IdGeneration = Map<number, Map<string, Map<number | string, number>>>;

function sameChain(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class Replica {
  readonly self: string;
  readonly ring: Ring;
  private view: View;
  private readonly store: Store;
  private readonly timing: ReplicaTiming;
  private readonly incarnation: string;
  private readonly dedupWindow: number;
  private readonly membership: Membership;
  private rngState: number;

  private readonly parts = new Map<number, PartitionState>();
  private readonly outstanding = new Map<string, Outstanding>();
  private readonly recent: RecentIds;
  private nextRequest = 1;
  private now = 0;
  private out: Output[] = [];
  private readonly loopback: { msg: DataMsg; durable: boolean }[] = [];
  /** True while a loopback message released under a durability barrier is handled. */
  private inheritDurable = false;
  private joinAskedAt = -Infinity;
  private caughtReportedAt = -Infinity;
  private started = false;

  constructor(cfg: ReplicaConfig) {
    this.self = cfg.self;
    this.ring = cfg.ring;
    this.store = cfg.store;
    this.timing = { ...defaultTiming, ...cfg.timing };
    this.incarnation = cfg.incarnation;
    this.dedupWindow = cfg.dedupWindow ?? 200_000;
    // A retry arrives at most requestTimeoutMs after the first attempt (plus its trip here).
    this.recent = new RecentIds(Math.max(1, Math.ceil(this.dedupWindow / 2)), this.timing.requestTimeoutMs + 1000);
    this.rngState = cfg.seed >>> 0 || 1;
    if (!cfg.ring.has(cfg.self)) throw new RangeError(`node ${cfg.self} is not in the ring`);
    this.membership = new Membership(
      {
        self: this.self,
        names: this.ring.nodes.map((n) => n.name),
        send: (to, msg, durable) => this.out.push({ type: 'send', to, msg, durable }),
        persist: (state: MembershipState) => this.store.saveMembership(state),
        random: () => this.random(),
        onCommittedView: (view) => this.applyView(view),
        log: (msg, data) => this.log('info', msg, data),
        // Committed or only received: a write the tail acknowledged may still be pending here.
        hasData: () => [...this.parts.values()].some((s) => s.committed > 0 || s.last > 0 || s.pending.length > 0),
        onResolved: (rejoin) => this.onAmnesiaResolved(rejoin),
      },
      initialView(this.ring),
      this.store.loadMembership(),
      this.timing,
      this.incarnation,
    );
    this.view = this.membership.committedView;
    const selfUp = this.selfState(this.view) === 'up';
    for (const p of this.ring.partitionsOf(this.self)) {
      const committed = this.store.committedSeq(p);
      const chain = this.chainOf(p);
      const isTail = chain[chain.length - 1] === this.self;
      this.parts.set(p, {
        p,
        mode: selfUp ? 'member' : this.selfState(this.view) === 'joining' ? 'catchup' : 'out',
        committed,
        last: committed,
        pending: [],
        dirty: new Map(),
        pendingClearSeq: 0,
        waiters: new Map(),
        // After a (re)start pending entries are gone: a tail's committed state is all it
        // needs; any other member first re-reads its successor's history.
        ready: selfUp && isTail,
        level: isTail,
        caught: false,
        progressAt: 0,
        syncSentAt: -Infinity,
        nackSentAt: -Infinity,
        catchupTarget: 0,
        prunedAt: 0,
        pulls: new Map(),
        levelFrom: undefined,
        marks: [],
        gcFloor: 0,
        gcAt: 0,
        gcWant: 0,
        gcDone: 0,
      });
      // Request ids of recent writes, from the log: a retry of a write committed before a
      // restart is recognised, not applied a second time. When each was committed is not
      // known after a restart, so every id pruning has left is taken, at least the last
      // keepLogSeqs (pruning only drops ids older than a retry can be, see idHorizon).
      const loadFrom = Math.min(committed - this.timing.keepLogSeqs, this.store.prunedBelow(p));
      for (const { id, seq } of this.store.recentRequests(p, Math.max(0, loadFrom))) {
        this.recent.set(id, { p, seq, existed: true }, this.now);
      }
    }
  }

  private random(): number {
    // xorshift32: the core's own deterministic generator.
    let x = this.rngState;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rngState = x >>> 0;
    return this.rngState / 4294967296;
  }

  get currentView(): View {
    return this.view;
  }

  /** Feeds one input; returns what the runtime must do, in order. */
  step(now: number, input: Input): Output[] {
    if (now > this.now) this.now = now;
    this.out = [];
    if (!this.started) {
      this.started = true;
      this.membership.start(this.now);
      this.log('info', `starting in view ${this.view.epoch} as ${this.view.states[this.self]}`, { epoch: this.view.epoch });
    }
    switch (input.type) {
      case 'message':
        if (isMembershipMsg(input.msg)) this.membership.onMessage(input.from, input.msg, this.now);
        else this.onMessage(input.from, input.msg);
        break;
      case 'client':
        this.onClient(input.token, input.req);
        break;
      case 'tick':
        this.membership.tick(this.now);
        this.onTick();
        break;
      case 'refused':
        this.membership.refused(input.node, this.now);
        break;
    }
    this.drainLoopback();
    const out = this.out;
    this.out = [];
    return out;
  }

  /**
   * Steps every input of one turn in order, then coalesces the turn's outputs (coalesce.ts):
   * one `fwd` and one `ack` per peer and partition instead of one per write.
   */
  stepAll(now: number, inputs: readonly Input[]): Output[] {
    if (inputs.length === 1) return coalesce(this.step(now, inputs[0]!));
    const outputs: Output[] = [];
    for (const input of inputs) for (const o of this.step(now, input)) outputs.push(o);
    return coalesce(outputs);
  }

  /** Partition state summary, for status pages and tests. */
  partitions(): { partition: number; mode: Mode; committed: number; last: number; pending: number; ready: boolean; pairs: number; catchupTarget?: number }[] {
    return [...this.parts.values()].map((s) => ({
      partition: s.p,
      mode: s.mode,
      committed: s.committed,
      last: s.last,
      pending: s.pending.length,
      ready: s.ready,
      pairs: this.store.liveCount(s.p),
      ...(s.mode === 'catchup' ? { catchupTarget: s.catchupTarget } : {}),
    }));
  }

  outstandingCount(): number {
    return this.outstanding.size;
  }

  membershipStatus(): ReturnType<Membership['status']> {
    return this.membership.status(this.now);
  }

  hasLease(): boolean {
    return this.membership.hasLease(this.view.epoch, this.now);
  }

  // ---------------------------------------------------------------- views

  /**
   * This node's state in `view` as far as its data goes: a node that started without state
   * serves nothing until it knows whether the cluster holds data (membership's probe), and,
   * if it does, until it has left its chains and caught up like a returning node.
   */
  private selfState(view: View): NodeState {
    const state = view.states[this.self]!;
    return state === 'up' && (!this.membership.resolved || this.membership.mustRejoin) ? 'down' : state;
  }

  /** An amnesiac start learned whether the cluster holds data. */
  private onAmnesiaResolved(rejoin: boolean): void {
    if (rejoin || this.view.states[this.self] !== 'up') return;
    // A cluster without data: an empty history is a complete one. Enter the chains as a
    // restarted node would.
    for (const s of this.parts.values()) {
      const chain = this.chainOf(s.p);
      s.mode = 'member';
      s.ready = false;
      s.level = chain[chain.length - 1] === this.self;
      s.syncSentAt = -Infinity;
      if (s.level) this.becomeReady(s);
    }
  }

  private applyView(view: View): void {
    const old = this.view;
    if (view.epoch === old.epoch) return;
    this.view = view;
    this.membership.renewLeaseNow();
    const selfState = this.selfState(view);
    const wasUp = this.selfState(old) === 'up';
    const changes = this.ring.nodes.map((n) => n.name).filter((n) => old.states[n] !== view.states[n]);
    this.log('info', `view ${view.epoch}: ${changes.map((n) => `${n} ${old.states[n]}->${view.states[n]}`).join(', ') || 'no state change'}`, {
      epoch: view.epoch,
      states: view.states,
    });
    for (const s of this.parts.values()) {
      if (selfState !== 'up') {
        if (s.mode === 'member' || (selfState === 'joining' && s.mode === 'out')) this.resetPartition(s);
        s.mode = selfState === 'joining' ? 'catchup' : 'out';
        s.caught = false;
        s.catchupTarget = 0;
        continue;
      }
      const oldChain = servingChain(this.ring, old, s.p);
      const newChain = servingChain(this.ring, view, s.p);
      if (s.mode !== 'member') {
        // Back in the chain after catching up: our history may lag the chain's.
        s.mode = 'member';
        s.level = false;
      } else if (wasUp && sameChain(oldChain, newChain) && s.ready) {
        continue; // this chain did not change
      }
      // A member still levelling when the view changed may lack entries the chain committed
      // meanwhile (a tail that rejoined takes its history from any level member, the head
      // included): it is level again only once it has synced.
      if (!s.ready) s.level = false;
      s.ready = false;
      s.syncSentAt = -Infinity;
      s.pulls.clear();
      s.levelFrom = undefined;
      const isTail = newChain[newChain.length - 1] === this.self;
      if (isTail && s.level) this.becomeReady(s);
    }
    // Outstanding requests may now have other targets: try again at once.
    for (const o of this.outstanding.values()) o.nextTryAt = this.now;
  }

  private resetPartition(s: PartitionState): void {
    // Left the chain: what was never committed here is forgotten (the chain keeps it or
    // it was never acknowledged); waiting coordinators retry against the new head.
    if (s.pending.length > 0) this.store.dropPending(s.p);
    // Their request ids too: the chain may give these seqs to other writes, and a retry must
    // then be applied anew, not taken for the write now at that seq.
    for (const e of s.pending) if (e.id !== '') this.recent.forget(e.id, s.p, e.seq);
    s.pending = [];
    s.dirty.clear();
    s.pendingClearSeq = 0;
    s.last = s.committed;
    s.waiters.clear();
    s.ready = false;
    s.level = false;
  }

  private becomeReady(s: PartitionState): void {
    s.ready = true;
    s.level = true;
    s.progressAt = this.now;
  }

  // ---------------------------------------------------------------- coordinator

  private onClient(token: number, req: ClientRequest): void {
    if (req.op === 'localCount') {
      let count = 0;
      for (const p of this.ring.partitionsOf(this.self)) count += this.store.liveCount(p);
      this.out.push({ type: 'reply', token, result: { ok: true, count }, durable: false });
      return;
    }
    if (req.op === 'local') {
      const local = this.store.scanLocal(req.afterPartition, req.after, req.limit, this.timing.pageBytes);
      this.out.push({ type: 'reply', token, result: { ok: true, local, done: !pageIsFull(local, req.limit, this.timing.pageBytes) }, durable: false });
      return;
    }
    const partition = 'key' in req ? this.ring.partitionOf(req.key) : req.partition;
    if (!Number.isInteger(partition) || partition < 0 || partition >= this.ring.size) {
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
    // Periodic retries are for a lost message or a silent node (a view change or a `retry`
    // answer tries again at once); a put also waits as long as its bytes take to move, so a
    // large value is not sent again while its first copy is on its way (design.md §3.1).
    const bytes = o.req.op === 'put' ? itemBytes(o.req.key, o.req.value) : 0;
    o.nextTryAt = this.now + this.timing.retryMs + transferAllowanceMs(bytes);
    const chain = this.chainOf(o.partition);
    if (chain.length === 0) return; // nobody serves it now; retried until the deadline
    const e = this.view.epoch;
    const req = o.req;
    const tail = chain[chain.length - 1]!;
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
        // CRAQ: any member may answer a clean key; prefer this node when it holds a lease.
        const local = chain.includes(this.self) && this.hasLease() && this.parts.get(o.partition)?.ready === true;
        this.send(local ? this.self : tail, { t: 'read', e, id: o.id, p: o.partition, key: req.key, origin: this.self });
        return;
      }
      case 'scan':
        this.send(tail, { t: 'scan', e, id: o.id, p: o.partition, after: req.after, limit: req.limit, origin: this.self });
        return;
      case 'count':
        this.send(tail, { t: 'count', e, id: o.id, p: o.partition, origin: this.self });
        return;
      case 'local':
      case 'localCount':
        return; // answered synchronously in onClient
    }
  }

  private onResult(id: string, r: Result): void {
    const o = this.outstanding.get(id);
    if (o === undefined) return; // already answered (a duplicate or late reply)
    if (!r.ok && r.retry) {
      // Wrong node, another view, not ready, no lease: try again soon, within the deadline.
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
    if (r.done !== undefined) result.done = r.done;
    if (r.count !== undefined) result.count = r.count;
    this.reply(o.token, result, this.inheritDurable);
  }

  private onTick(): void {
    for (const o of this.outstanding.values()) {
      if (this.now >= o.deadline) {
        this.outstanding.delete(o.id);
        const what = o.req.op === 'get' || o.req.op === 'scan' || o.req.op === 'count' ? 'read' : 'write (it may or may not have been applied)';
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
    const selfState = this.view.states[this.self];
    // A node whose data is gone leaves its chains first (the leader marks it down), then
    // comes back like any returning node.
    if (this.membership.mustRejoin && selfState !== 'up') this.membership.rejoined();
    if (this.membership.resolved && this.selfState(this.view) === 'down' && this.now - this.joinAskedAt >= 250) {
      // We were taken out of the view (or restarted into a view that took us out): ask back in.
      this.joinAskedAt = this.now;
      this.membership.requestJoin();
    }
    let allCaught = selfState === 'joining';
    for (const s of this.parts.values()) {
      // Superseded log rows behind the dedup horizon go a slice per tick: a pass over 20,000
      // rows at once took 65 ms, a turn in which the node answered nothing.
      if (s.marks.length === 0 || this.now - s.marks[s.marks.length - 1]!.at >= ID_MARK_MS) s.marks.push({ at: this.now, seq: s.committed });
      while (s.marks.length > 1 && s.marks[1]!.at <= this.now - this.idHorizonMs()) s.marks.shift();
      const horizon = this.idHorizon(s);
      if (horizon - s.prunedAt >= Math.min(PRUNE_MIN_SEQS, this.timing.keepLogSeqs)) s.prunedAt = this.store.pruneLog(s.p, horizon, PRUNE_ROWS_PER_TICK);
      if (s.mode === 'member') {
        this.tickMember(s);
        this.continueGarbageCollection(s);
      }
      else if (s.mode === 'catchup') {
        this.tickCatchup(s);
        allCaught &&= s.caught;
      }
    }
    if (allCaught && this.now - this.caughtReportedAt >= 200) {
      this.caughtReportedAt = this.now;
      this.membership.reportCaughtUp(this.view.epoch);
    }
  }

  private tickMember(s: PartitionState): void {
    const chain = this.chainOf(s.p);
    const i = chain.indexOf(this.self);
    const succ = chain[i + 1];
    const pred = i > 0 ? chain[i - 1] : undefined;
    const e = this.view.epoch;
    if (!s.ready) {
      if (this.now - s.syncSentAt < Math.min(50, this.timing.retransmitMs)) return;
      s.syncSentAt = this.now;
      if (s.levelFrom !== undefined) this.askNextPage(s, s.levelFrom);
      else if (succ !== undefined) this.send(succ, { t: 'sync', e, p: s.p, committed: s.committed });
      else if (pred !== undefined) {
        // A tail that is not level (it rejoined, or restarted) takes the history of a level
        // member; if none is level (they restarted too), of the one that committed most: with
        // at most one failure at a time it holds every committed entry.
        for (const m of chain) if (m !== this.self && !s.pulls.has(m)) this.send(m, { t: 'pull', e, p: s.p, committed: s.committed });
        const answers = [...s.pulls.values()];
        const best = answers.find((a) => a.msg.level) ?? (answers.length === chain.length - 1 ? answers.sort((a, b) => b.msg.committed - a.msg.committed)[0] : undefined);
        if (best !== undefined) this.onSyncReply(best.from, best.msg);
      } else this.becomeReady(s); // alone in the chain
      return;
    }
    if (succ === undefined) {
      // Tail: commits what it holds whenever it holds a lease on the view (CR7 after a change).
      if (s.pending.length > 0 && this.hasLease()) {
        while (s.pending.length > 0) this.commitEntry(s, s.pending.shift()!, true);
        if (pred !== undefined) this.send(pred, { t: 'ack', e, p: s.p, seq: s.committed }, true);
        this.releaseWaiters(s);
      }
      return;
    }
    if (s.pending.length > 0 && this.now - s.progressAt >= this.timing.retransmitMs) {
      // Not before the successor could have taken in the first page (transferAllowanceMs).
      const page = fwdPage(s.pending, this.timing.pageBytes);
      if (this.now - s.progressAt >= this.timing.retransmitMs + transferAllowanceMs(itemsBytes(page))) {
        s.progressAt = this.now;
        this.send(succ, { t: 'fwd', e, p: s.p, entries: page });
      }
    }
    // Head: once a second, if every canonical member is in the chain, everything the head
    // committed is committed (and durable) on all of them: tombstones up to it can go.
    if (pred === undefined && s.committed > s.gcFloor && this.now - s.gcAt >= 1000 && chain.length === this.ring.replication) {
      s.gcAt = this.now;
      s.gcFloor = s.committed;
      s.gcWant = Math.max(s.gcWant, s.gcFloor);
      this.send(succ, { t: 'gc', e, p: s.p, floor: s.gcFloor }, true);
    }
  }

  /**
   * Collection goes a slice per tick: after a delete of `*` on a partition of 300,000 keys,
   * removing them took 660 ms in one turn, longer than failure detection waits for a node.
   */
  private continueGarbageCollection(s: PartitionState): void {
    if (s.gcWant > s.gcDone && this.store.collectGarbage(s.p, s.gcWant, this.timing.gcRowsPerTick)) s.gcDone = s.gcWant;
  }

  private tickCatchup(s: PartitionState): void {
    if (s.caught) return;
    // Pages are asked for as soon as the previous one is applied; the tick only re-asks for
    // one that seems lost (a large page can take a few hundred ms to read, send and apply on
    // a busy machine: asking again too early makes the source read every page twice).
    // Until the first page arrives, ask often: the source ignores asks until it has learnt
    // the view in which this node is joining, which is usually a few ms after this node did.
    if (this.now - s.syncSentAt < (s.catchupTarget === 0 ? CATCHUP_FIRST_ASK_MS : CATCHUP_REASK_MS)) return;
    const chain = this.chainOf(s.p);
    const source = chain[chain.length - 1];
    if (source === undefined) return;
    s.syncSentAt = this.now;
    this.send(source, { t: 'cu', e: this.view.epoch, p: s.p, after: s.committed, limit: this.timing.catchupPage });
  }

  // ---------------------------------------------------------------- replica

  private onMessage(from: string, msg: DataMsg): void {
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
      case 'count':
        return this.onCount(msg);
      case 'sync':
        return this.onSync(from, msg);
      case 'pull':
        return this.onPull(from, msg);
      case 'syncr':
        return this.onSyncReply(from, msg);
      case 'gc':
        return this.onGarbageCollect(from, msg);
      case 'cu':
        return this.onCatchupRequest(from, msg);
      case 'cur':
        return this.onCatchupReply(from, msg);
      case 'wres':
      case 'rres':
      case 'sres':
        return this.onResult(msg.id, msg.r);
    }
  }

  private member(p: number, e: number): PartitionState | undefined {
    const s = this.parts.get(p);
    if (s === undefined || s.mode !== 'member' || e !== this.view.epoch) return undefined;
    return s;
  }

  private onWrite(msg: Extract<DataMsg, { t: 'write' }>): void {
    const s = this.member(msg.p, msg.e);
    const chain = this.chainOf(msg.p);
    if (s === undefined || chain[0] !== this.self) {
      return this.send(msg.origin, { t: 'wres', id: msg.id, r: { ok: false, retry: true, why: 'not head' } });
    }
    if (!s.ready) return this.send(msg.origin, { t: 'wres', id: msg.id, r: { ok: false, retry: true, why: 'syncing' } });

    const seen = this.recent.get(msg.id, s.p);
    if (seen !== undefined && seen.seq <= s.last) {
      // A retry of a write this chain already ordered: answer once it is committed, never apply twice.
      if (seen.seq <= s.committed) this.send(msg.origin, { t: 'wres', id: msg.id, r: { ok: true, existed: seen.existed } });
      else this.addWaiter(s, seen.seq, msg.id, msg.origin);
      return;
    }

    const existed = msg.kind === 'clear' ? true : this.latestExists(s, msg.key);
    const entry: Entry = { seq: s.last + 1, epoch: this.view.epoch, kind: msg.kind, key: msg.key, value: msg.value, id: msg.id, existed, origin: msg.origin };
    this.appendPending(s, entry);
    if (chain.length === 1) {
      // Alone: answered through the waiter list when committed (CR3 below does not apply).
      this.addWaiter(s, entry.seq, msg.id, msg.origin);
      // Alone in the chain: head and tail. Commits (in order) whenever it holds a lease.
      if (this.hasLease()) {
        while (s.pending.length > 0) this.commitEntry(s, s.pending.shift()!, false);
        this.releaseWaiters(s);
      }
    } else {
      if (s.pending.length === 1) s.progressAt = this.now;
      this.send(chain[1]!, { t: 'fwd', e: this.view.epoch, p: s.p, entries: [entry] });
    }
  }

  private onFwd(from: string, msg: Extract<DataMsg, { t: 'fwd' }>): void {
    const s = this.member(msg.p, msg.e);
    if (s === undefined || !s.ready || this.predecessorOf(msg.p) !== from) return;
    const succ = this.successorOf(msg.p);
    const isTail = succ === undefined;
    const canCommit = isTail && this.hasLease();
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
      if (canCommit && s.pending.length === 0) {
        this.commitEntry(s, entry, true);
        this.remember(s.p, entry);
      } else {
        this.appendPending(s, entry);
        if (!isTail) passOn.push(entry);
      }
    }
    if (isTail) {
      // Committed on receipt (with a lease); acknowledged once durable.
      if (canCommit || duplicate) this.send(from, { t: 'ack', e: this.view.epoch, p: s.p, seq: s.committed }, true);
    } else if (passOn.length > 0) {
      if (s.pending.length === passOn.length) s.progressAt = this.now;
      this.send(succ, { t: 'fwd', e: this.view.epoch, p: s.p, entries: passOn });
    } else if (duplicate && s.committed > 0) {
      // A retransmission of what we already hold: remind the sender how far commits went.
      this.send(from, { t: 'ack', e: this.view.epoch, p: s.p, seq: s.committed });
    }
  }

  private onAck(from: string, msg: Extract<DataMsg, { t: 'ack' }>): void {
    const s = this.member(msg.p, msg.e);
    if (s === undefined || this.successorOf(msg.p) !== from) return;
    const upTo = Math.min(msg.seq, s.last);
    if (upTo <= s.committed) return;
    while (s.pending.length > 0 && s.pending[0]!.seq <= upTo) this.commitEntry(s, s.pending.shift()!);
    s.progressAt = this.now;
    // Upstream acks need no fsync here: the tail committed durably before its ack (§3.2).
    const pred = this.predecessorOf(s.p);
    if (pred !== undefined) this.send(pred, { t: 'ack', e: this.view.epoch, p: s.p, seq: s.committed });
    this.releaseWaiters(s);
  }

  private onNack(from: string, msg: Extract<DataMsg, { t: 'nack' }>): void {
    const s = this.member(msg.p, msg.e);
    if (s === undefined || this.successorOf(msg.p) !== from) return;
    const entries = fwdPage(s.pending.filter((e) => e.seq >= msg.from), this.timing.pageBytes);
    if (entries.length > 0) this.send(from, { t: 'fwd', e: this.view.epoch, p: s.p, entries });
  }

  private onRead(msg: Extract<DataMsg, { t: 'read' }>): void {
    const s = this.member(msg.p, msg.e);
    const chain = this.chainOf(msg.p);
    if (s === undefined || !s.ready || !this.hasLease()) {
      return this.send(msg.origin, { t: 'rres', id: msg.id, r: { ok: false, retry: true, why: 'not serving' } });
    }
    const tail = chain[chain.length - 1]!;
    if (tail !== this.self && (s.pendingClearSeq > 0 || s.dirty.has(keyStr(msg.key)))) {
      // CRAQ: our copy has an uncommitted write; only the tail knows which version is committed.
      return this.send(tail, msg);
    }
    if (tail === this.self && s.pending.length > 0 && (s.pendingClearSeq > 0 || s.dirty.has(keyStr(msg.key)))) {
      // A tail that holds entries it has not committed yet (no lease when they came): not now.
      return this.send(msg.origin, { t: 'rres', id: msg.id, r: { ok: false, retry: true, why: 'tail committing' } });
    }
    const value = this.store.get(s.p, msg.key);
    this.send(msg.origin, { t: 'rres', id: msg.id, r: { ok: true, value } }, this.store.volatile(s.p, msg.key));
  }

  /**
   * The partition, if this node may answer a listing of it (scan, count) from its committed
   * state: the ready tail, leased, with nothing pending. Otherwise the asker is told to retry.
   */
  private listingTail(msg: Extract<DataMsg, { t: 'scan' | 'count' }>): PartitionState | undefined {
    const s = this.member(msg.p, msg.e);
    const chain = this.chainOf(msg.p);
    if (s === undefined || !s.ready || chain[chain.length - 1] !== this.self || !this.hasLease() || s.pending.length > 0) {
      this.send(msg.origin, { t: 'sres', id: msg.id, r: { ok: false, retry: true, why: 'not tail' } });
      return undefined;
    }
    return s;
  }

  /** The tail's count of live pairs at its committed state (held back until that state is on disk). */
  private onCount(msg: Extract<DataMsg, { t: 'count' }>): void {
    const s = this.listingTail(msg);
    if (s === undefined) return;
    this.send(msg.origin, { t: 'sres', id: msg.id, r: { ok: true, count: this.store.liveCount(s.p) } }, true);
  }

  private onScan(msg: Extract<DataMsg, { t: 'scan' }>): void {
    const s = this.listingTail(msg);
    if (s === undefined) return;
    // Bounded in bytes too: the page travels as one frame.
    const page = this.store.scan(s.p, msg.after, msg.limit, this.timing.pageBytes);
    const items: [Buffer, Buffer][] = page.map((kv) => [kv.key, kv.value]);
    const durable = page.some((kv) => this.store.volatile(s.p, kv.key));
    this.send(msg.origin, { t: 'sres', id: msg.id, r: { ok: true, items, done: !pageIsFull(page, msg.limit, this.timing.pageBytes) } }, durable);
  }

  /** Predecessor asks for our history after its committed seq (answered once we are level). */
  private onSync(from: string, msg: Extract<DataMsg, { t: 'sync' }>): void {
    const s = this.member(msg.p, msg.e);
    if (s === undefined || !s.ready || this.predecessorOf(msg.p) !== from) return;
    this.send(from, this.historyPage(s, msg.after ?? msg.committed, true), true);
  }

  /**
   * The seq at and below which request ids may be forgotten: at least keepLogSeqs behind the
   * committed seq, and committed before now - (requestTimeoutMs + 1 s), when no coordinator
   * retries them any more, as far as this node has watched (0 for its first seconds: what was
   * committed before it started may be recent). By count alone, a partition taking more than
   * keepLogSeqs writes within a coordinator's retry deadline would forget ids still retried.
   */
  private idHorizon(s: PartitionState): number {
    const first = s.marks[0];
    const old = first !== undefined && first.at <= this.now - this.idHorizonMs() ? first.seq : 0;
    return Math.min(s.committed - this.timing.keepLogSeqs, old);
  }

  private idHorizonMs(): number {
    return this.timing.idHorizonMs ?? this.timing.requestTimeoutMs + 1000;
  }

  /** Request ids of committed writes after `after` (superseded ones included), capped to the dedup horizon. */
  private idsAfter(s: PartitionState, after: number, upTo?: number): [string, number][] {
    const from = Math.max(after, this.idHorizon(s));
    return this.store.recentRequests(s.p, from, upTo).map((r) => [r.id, r.seq]);
  }

  /** A tail that is not level asks the other members for their history. */
  private onPull(from: string, msg: Extract<DataMsg, { t: 'pull' }>): void {
    const s = this.member(msg.p, msg.e);
    const chain = this.chainOf(msg.p);
    if (s === undefined || chain[chain.length - 1] !== from) return;
    this.send(from, this.historyPage(s, msg.after ?? msg.committed, s.level), true);
  }

  /**
   * A page of our history after `after`, one frame: committed changes (compacted) first, at
   * most `catchupPage` entries and about `pageBytes` of keys and values; once every committed
   * change is in, pending entries, as many as fit. The asker applies each page, which is
   * complete through its `complete` seq, and asks for the next after what it then holds.
   */
  private historyPage(s: PartitionState, after: number, level: boolean): Extract<DataMsg, { t: 'syncr' }> {
    const limit = this.timing.catchupPage;
    const maxBytes = this.timing.pageBytes;
    const base = { t: 'syncr' as const, e: this.view.epoch, p: s.p, committed: s.committed, last: s.last, level };
    const entries = after < s.committed ? this.store.changesAfter(s.p, after, limit, maxBytes) : [];
    if (pageIsFull(entries, limit, maxBytes)) {
      const complete = entries[entries.length - 1]!.seq;
      return { ...base, complete, more: complete < s.committed || s.last > s.committed, entries, ids: this.idsAfter(s, after, complete) };
    }
    // Every committed change is in and leaves room: pending entries fill the rest of the page.
    const pending = s.pending.filter((e) => e.seq > after);
    const page = pageOf([...entries, ...pending], limit, maxBytes, (e) => itemBytes(e.key, e.value));
    return { ...base, complete: s.committed, more: page.length < entries.length + pending.length, entries: page, ids: this.idsAfter(s, after) };
  }

  /** Levelling page by page: asks `from` for what follows what we now hold. */
  private askNextPage(s: PartitionState, from: string): void {
    const msg = { e: this.view.epoch, p: s.p, committed: s.committed, after: s.last };
    this.send(from, this.successorOf(s.p) === undefined ? { t: 'pull', ...msg } : { t: 'sync', ...msg });
  }

  private onSyncReply(from: string, msg: Extract<DataMsg, { t: 'syncr' }>): void {
    const s = this.member(msg.p, msg.e);
    if (s === undefined || s.ready) return;
    const chain = this.chainOf(msg.p);
    const pulled = this.successorOf(msg.p) === undefined && chain.includes(from) && from !== this.self;
    if (!pulled && this.successorOf(msg.p) !== from) return;
    if (s.levelFrom !== undefined && from !== s.levelFrom) return; // taking another member's history, page by page
    if (pulled && s.levelFrom === undefined && !s.pulls.has(from)) {
      // Collected; tickMember picks the answer to apply.
      s.pulls.set(from, { from, msg });
      if (!msg.level) return;
    }
    const lastBefore = s.last;
    for (const [id, seq] of msg.ids) this.recent.set(id, { p: s.p, seq, existed: true }, this.now);
    // 1. What we hold and the source committed is committed. (A page vouches only for what
    //    it is complete through: the source's later commits come with later pages.)
    const complete = msg.complete;
    const upTo = Math.min(complete, s.last);
    while (s.pending.length > 0 && s.pending[0]!.seq <= upTo) this.commitEntry(s, s.pending.shift()!);
    // 2. What the source holds beyond our history becomes ours: its committed changes
    //    (compacted: superseded versions are skipped, so seqs may jump), then its pending
    //    entries, contiguous.
    for (const entry of msg.entries) {
      if (entry.seq <= s.last) continue;
      if (entry.seq <= complete) {
        this.store.commit(s.p, entry);
        this.remember(s.p, entry);
        continue;
      }
      if (s.committed < complete && s.last < complete) this.jumpCommitted(s, complete);
      this.assert(entry.seq === s.last + 1, `sync of partition ${s.p} from ${from} has a gap at ${entry.seq} after ${s.last}`);
      this.appendPending(s, entry);
    }
    if (s.last < complete) this.jumpCommitted(s, complete);
    if (msg.more) {
      // The rest comes from the same member, page by page; at once if this page brought
      // something (a late answer to an ask sent twice does not start a second stream).
      s.levelFrom = from;
      s.pulls.clear();
      if (s.last > lastBefore) {
        this.log('info', `partition ${s.p} levelling from ${from}: holds ${s.last}, more to come`, { partition: s.p, committed: s.committed, last: s.last });
        s.syncSentAt = this.now;
        this.askNextPage(s, from);
      }
      return;
    }
    s.levelFrom = undefined;
    this.becomeReady(s);
    const succ = this.successorOf(s.p);
    if (succ !== undefined && !pulled) {
      // Whatever we hold beyond the successor's history goes down now (CR8).
      const ahead = s.pending.filter((x) => x.seq > msg.last);
      if (ahead.length > 0) this.send(succ, { t: 'fwd', e: this.view.epoch, p: s.p, entries: fwdPage(ahead, this.timing.pageBytes) });
    }
    this.releaseWaiters(s);
  }

  private jumpCommitted(s: PartitionState, seq: number): void {
    this.store.setCommittedSeq(s.p, seq);
    s.committed = seq;
    s.last = Math.max(s.last, seq);
  }

  private onGarbageCollect(from: string, msg: Extract<DataMsg, { t: 'gc' }>): void {
    const s = this.member(msg.p, msg.e);
    const chain = this.chainOf(msg.p);
    if (s === undefined || !s.ready || this.predecessorOf(msg.p) !== from || chain.length !== this.ring.replication) return;
    const floor = Math.min(msg.floor, s.committed);
    s.gcWant = Math.max(s.gcWant, floor);
    this.continueGarbageCollection(s);
    const succ = this.successorOf(msg.p);
    if (succ !== undefined) this.send(succ, { t: 'gc', e: this.view.epoch, p: s.p, floor }, true);
  }

  private onCatchupRequest(from: string, msg: Extract<DataMsg, { t: 'cu' }>): void {
    const s = this.member(msg.p, msg.e);
    if (s === undefined || !s.ready || this.view.states[from] !== 'joining') return;
    const limit = Math.max(1, Math.min(msg.limit, 50_000));
    // Bounded in bytes too: the page travels as one frame.
    const entries = this.store.changesAfter(s.p, msg.after, limit, this.timing.pageBytes);
    const more = pageIsFull(entries, limit, this.timing.pageBytes);
    const upTo = more ? entries[entries.length - 1]!.seq : s.committed;
    const ids = this.idsAfter(s, msg.after, upTo);
    this.send(from, { t: 'cur', e: this.view.epoch, p: s.p, committed: s.committed, entries, more, ids });
  }

  private onCatchupReply(from: string, msg: Extract<DataMsg, { t: 'cur' }>): void {
    const s = this.parts.get(msg.p);
    if (s === undefined || s.mode !== 'catchup' || msg.e !== this.view.epoch || s.caught) return;
    // A reply to an ask that was repeated, arriving after the first answer was applied: it
    // brings nothing new, and asking for "the next page" again would start a second stream of
    // asks beside the first one.
    if (msg.more && msg.entries.length > 0 && msg.entries[msg.entries.length - 1]!.seq <= s.committed) return;
    for (const [id, seq] of msg.ids) this.recent.set(id, { p: s.p, seq, existed: true }, this.now);
    for (const entry of msg.entries) if (entry.seq > s.committed) this.store.commit(s.p, entry);
    const lastSeq = msg.entries.length > 0 ? msg.entries[msg.entries.length - 1]!.seq : s.committed;
    s.committed = s.last = Math.max(s.committed, lastSeq);
    s.catchupTarget = msg.committed;
    if (!msg.more) {
      if (s.committed < msg.committed) this.jumpCommitted(s, msg.committed);
      s.caught = true;
      this.log('info', `partition ${s.p} caught up from ${from} at seq ${s.committed}`, { partition: s.p, committed: s.committed });
    } else {
      this.log('info', `partition ${s.p} catching up from ${from}: ${s.committed} of ${msg.committed}`, { partition: s.p, committed: s.committed, target: msg.committed });
      // Ask for the next page at once (the tick re-asks if this one is lost).
      s.syncSentAt = this.now;
      this.send(from, { t: 'cu', e: this.view.epoch, p: s.p, after: s.committed, limit: this.timing.catchupPage });
    }
    if ([...this.parts.values()].every((x) => x.mode !== 'catchup' || x.caught)) {
      this.caughtReportedAt = this.now;
      this.membership.reportCaughtUp(this.view.epoch);
    }
  }

  // ---------------------------------------------------------------- helpers

  private appendPending(s: PartitionState, entry: Entry): void {
    this.store.appendPending(s.p, entry);
    s.pending.push(entry);
    s.last = entry.seq;
    this.remember(s.p, entry);
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

  /**
   * Commits the next entry. `asTail`: this node is the tail, so the commit decides the write:
   * it answers the waiting coordinator directly (CR3), once the commit is on disk.
   */
  private commitEntry(s: PartitionState, entry: Entry, asTail = false): void {
    this.assert(entry.seq === s.committed + 1, `commit of ${entry.seq} after ${s.committed} in partition ${s.p}`);
    this.store.commit(s.p, entry);
    if (asTail && entry.origin !== undefined) {
      this.send(entry.origin, { t: 'wres', id: entry.id, r: { ok: true, existed: entry.existed ?? true } }, true);
    }
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
        const seen = this.recent.get(w.id, s.p);
        this.send(w.origin, { t: 'wres', id: w.id, r: { ok: true, existed: seen?.existed ?? true } });
      }
    }
  }

  /** Every member remembers request ids it holds, so that as a new head it recognises a retry. */
  private remember(p: number, entry: Entry): void {
    if (entry.id === '') return;
    this.recent.set(entry.id, { p, seq: entry.seq, existed: entry.existed ?? true }, this.now);
  }

  /** Serving chains of the current view, computed once per view (hot path). */
  private chains: readonly (readonly string[])[] = [];
  private chainsEpoch = -1;

  private chainOf(p: number): readonly string[] {
    if (this.chainsEpoch !== this.view.epoch) {
      this.chains = this.ring.nodes.map((_, i) => servingChain(this.ring, this.view, i));
      this.chainsEpoch = this.view.epoch;
    }
    return this.chains[p] ?? [];
  }

  private successorOf(p: number): string | undefined {
    const chain = this.chainOf(p);
    const i = chain.indexOf(this.self);
    return i >= 0 ? chain[i + 1] : undefined;
  }

  private predecessorOf(p: number): string | undefined {
    const chain = this.chainOf(p);
    const i = chain.indexOf(this.self);
    return i > 0 ? chain[i - 1] : undefined;
  }

  private send(to: string, msg: DataMsg, durable = false): void {
    if (to === this.self) {
      // Loopback work runs now, inside this step; anything it answers must wait for the
      // same durability as the message itself would have.
      this.loopback.push({ msg, durable });
      return;
    }
    this.out.push({ type: 'send', to, msg, durable });
  }

  private drainLoopback(): void {
    let guard = 0;
    while (this.loopback.length > 0) {
      this.assert(++guard < 1_000_000, 'loopback does not drain');
      const { msg, durable } = this.loopback.shift()!;
      const before = this.inheritDurable;
      this.inheritDurable = durable;
      this.onMessage(this.self, msg);
      this.inheritDurable = before;
    }
  }

  private reply(token: number, result: ClientResult, durable: boolean): void {
    this.out.push({ type: 'reply', token, result, durable: durable || this.inheritDurable });
  }

  private log(level: 'info' | 'warn', msg: string, data?: Record<string, unknown>): void {
    this.out.push({ type: 'log', level, msg, ...(data === undefined ? {} : { data }) });
  }

  private assert(cond: boolean, what: string): asserts cond {
    if (!cond) throw new Error(`invariant violated on ${this.self}: ${what}`);
  }
}
