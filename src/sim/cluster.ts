import { coalesce } from '../core/coalesce.ts';
import type { PeerMsg } from '../core/messages.ts';
import { Replica } from '../core/replica.ts';
import type { ClientRequest, ClientResult, Input, Output, ReplicaTiming } from '../core/replica.ts';
import { Ring } from '../core/ring.ts';
import { HistoryRecorder } from './linearizability.ts';
import type { Op } from './linearizability.ts';
import { MemoryStore } from './memory-store.ts';
import { Prng } from './prng.ts';

/**
 * The deterministic simulator: N nodes running the real protocol core in one process, on a
 * virtual clock, with a seeded scheduler that delays and drops messages (FIFO per link, as
 * TCP), crashes and restarts nodes from their persisted state, and pauses them. Clients
 * record a history that the linearizability checker judges. Same seed, same run.
 */
export interface SimOptions {
  seed: number;
  names?: string[];
  replication?: number;
  timing?: Partial<ReplicaTiming>;
  /** One-way message delay range, ms. */
  delayMs?: [number, number];
  /** Probability that a message is lost. */
  dropRate?: number;
  /** Probability that a message is delivered twice (the copy later). */
  dupRate?: number;
  /** Probability that a message skips the FIFO order of its link (as across a reconnect). */
  reorderRate?: number;
  /** fdatasync latency, ms. */
  fsyncMs?: number;
  tickMs?: number;
  /** Clock rate of each node drawn in [1 - drift/2, 1 + drift/2] (relative drift at most `drift`). */
  clockDrift?: number;
  /**
   * Inputs reaching a node are stepped together, as one event-loop turn of the runtime, after
   * a delay drawn in [0, turnMs]; the turn's outputs are coalesced (core/coalesce.ts) as the
   * runtime does. 0: every input is stepped alone, at once.
   */
  turnMs?: number;
  /** Keep the nodes' log outputs (for debugging a seed). */
  keepLogs?: boolean;
  /** Record every delivered message that mentions this key (and every view change) in `logs`. */
  traceKey?: string;
}

type Event =
  | { at: number; n: number; kind: 'deliver'; from: string; to: string; msg: PeerMsg; incarnation: number }
  | { at: number; n: number; kind: 'tick'; node: string; incarnation: number }
  | { at: number; n: number; kind: 'flush'; node: string; incarnation: number }
  | { at: number; n: number; kind: 'drain'; node: string; incarnation: number }
  | { at: number; n: number; kind: 'refused'; to: string; dead: string; incarnation: number }
  | { at: number; n: number; kind: 'call'; fn: () => void };

interface SimNode {
  name: string;
  /** Local clock: offset + now * rate. */
  clockRate: number;
  clockOffset: number;
  /** Cut off from every other node (messages both ways are lost). */
  isolated: boolean;
  store: MemoryStore;
  replica: Replica;
  up: boolean;
  paused: boolean;
  incarnation: number;
  /** Inputs that arrived while paused (kept in the socket buffers), in order. */
  held: Extract<Event, { kind: 'deliver' }>[];
  /** Inputs of the turn not yet stepped (turnMs > 0). */
  inbox: Input[];
  drainScheduled: boolean;
  /** Outputs waiting for the next flush (durable ones and everything behind them). */
  gated: SendOutput[];
  flushScheduled: boolean;
  /** Client callbacks by token. */
  callbacks: Map<number, (r: ClientResult) => void>;
}

type SendOutput = Extract<Output, { type: 'send' | 'reply' }>;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** A binary min-heap of events ordered by (time, insertion number). */
class EventQueue {
  private heap: Event[] = [];
  get size(): number {
    return this.heap.length;
  }
  push(e: Event): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  pop(): Event | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
  private less(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && a.n < b.n);
  }
}

/** History process ids: clients count from 0, final reads from here, clears' per-key deletes from CLEAR_PROCESSES. */
export const FINAL_READ_PROCESSES = 10_000;
export const CLEAR_PROCESSES = 1_000_000;

export class SimCluster {
  readonly ring: Ring;
  readonly rng: Prng;
  readonly history = new HistoryRecorder(() => this.now);
  now = 0;
  private readonly nodes = new Map<string, SimNode>();
  private readonly queue = new EventQueue();
  private eventNo = 0;
  private nextToken = 1;
  /** Last delivery time per link, to keep each link FIFO. */
  private readonly linkClock = new Map<string, number>();
  private readonly opts: Required<Omit<SimOptions, 'timing'>> & { timing: Partial<ReplicaTiming> };
  stats = { delivered: 0, dropped: 0, steps: 0, coalesced: 0 };
  readonly logs: string[] = [];

  constructor(opts: SimOptions) {
    this.opts = {
      names: ['5554', '5556', '5558', '5560', '5562'],
      replication: 3,
      timing: {},
      delayMs: [0.05, 0.5],
      dropRate: 0,
      dupRate: 0,
      reorderRate: 0,
      fsyncMs: 0.15,
      tickMs: 10,
      turnMs: 0.2,
      clockDrift: 0,
      keepLogs: false,
      traceKey: '',
      ...opts,
    };
    this.rng = new Prng(opts.seed);
    (globalThis as unknown as { __simNow: () => number }).__simNow = () => this.now;
    this.ring = new Ring(this.opts.names, this.opts.replication);
    for (const name of this.opts.names) {
      const store = new MemoryStore();
      store.sync();
      const node: SimNode = {
        name,
        clockRate: 1 + (this.rng.next() - 0.5) * this.opts.clockDrift,
        clockOffset: this.rng.next() * 1000,
        isolated: false,
        store,
        replica: this.makeReplica(name, store, 1),
        up: true,
        paused: false,
        incarnation: 1,
        held: [],
        inbox: [],
        drainScheduled: false,
        gated: [],
        flushScheduled: false,
        callbacks: new Map(),
      };
      this.nodes.set(name, node);
      this.scheduleTick(node);
    }
  }

  get names(): string[] {
    return [...this.nodes.keys()];
  }

  private makeReplica(name: string, store: MemoryStore, incarnation: number): Replica {
    return new Replica({
      self: name,
      ring: this.ring,
      store,
      incarnation: `i${incarnation}`,
      seed: Math.floor(this.rng.next() * 2 ** 32),
      timing: this.opts.timing,
    });
  }

  /** The node's own clock reading (drifting, offset). */
  localTime(node: SimNode): number {
    return node.clockOffset + this.now * node.clockRate;
  }

  private push(e: DistributiveOmit<Event, 'n'>): void {
    this.queue.push({ ...e, n: this.eventNo++ } as Event);
  }

  /** Runs `fn` at virtual time `at` (absolute). */
  at(at: number, fn: () => void): void {
    this.push({ at, kind: 'call', fn });
  }

  private scheduleTick(node: SimNode): void {
    this.push({ at: this.now + this.opts.tickMs, kind: 'tick', node: node.name, incarnation: node.incarnation });
  }

  node(name: string): SimNode {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }

  /** Sends a client request to a node; the callback gets the result (or an error if the node is down or crashes first). */
  request(name: string, req: ClientRequest, cb: (r: ClientResult) => void): void {
    const node = this.node(name);
    if (!node.up) {
      cb({ ok: false, code: 'KV_ERR_UNAVAILABLE', message: `node ${name} is down (connection refused)` });
      return;
    }
    const token = this.nextToken++;
    node.callbacks.set(token, cb);
    this.input(node, { type: 'client', token, req });
  }

  /** SIGKILL: the node stops at once; in-flight client requests to it end with an unknown outcome. */
  crash(name: string, loseUnsynced = true): void {
    const node = this.node(name);
    if (!node.up) return;
    node.up = false;
    node.paused = false;
    node.held = [];
    node.inbox = [];
    node.drainScheduled = false;
    node.gated = [];
    node.flushScheduled = false;
    node.incarnation++;
    for (const cb of node.callbacks.values()) cb({ ok: false, code: 'KV_ERR_TIMEOUT', message: 'node crashed' });
    node.callbacks.clear();
    node.store.restart(loseUnsynced);
    this.scheduleRefusals(node);
  }

  /**
   * SIGKILL and a new, empty disk: the node's store and Raft state are gone (a replaced disk, a
   * wiped data directory). It comes back with `restart` under the same name.
   */
  wipe(name: string): void {
    this.crash(name, true);
    const node = this.node(name);
    node.store = new MemoryStore();
    node.store.sync();
  }

  /** While a node is down, every peer's reconnect attempts are refused (its port is closed). */
  private scheduleRefusals(dead: SimNode): void {
    for (const other of this.nodes.values()) {
      if (other === dead) continue;
      this.push({ at: this.now + 20 + this.rng.next() * 30, kind: 'refused', to: other.name, dead: dead.name, incarnation: dead.incarnation });
    }
  }

  /** Cuts a node off from all others (its process keeps running); `heal` reconnects it. */
  isolate(name: string): void {
    this.node(name).isolated = true;
  }

  heal(name: string): void {
    this.node(name).isolated = false;
  }

  restart(name: string): void {
    const node = this.node(name);
    if (node.up) return;
    node.incarnation++;
    node.replica = this.makeReplica(name, node.store, node.incarnation);
    node.up = true;
    this.scheduleTick(node);
  }

  pause(name: string): void {
    this.node(name).paused = true;
  }

  resume(name: string): void {
    const node = this.node(name);
    if (!node.up || !node.paused) return;
    node.paused = false;
    const held = node.held;
    node.held = [];
    for (const e of held) this.deliver(node, e);
    if (node.inbox.length > 0) this.scheduleDrain(node);
    this.scheduleTick(node);
  }

  /** Runs events until virtual time `until` (or until nothing is left). */
  runUntil(until: number): void {
    for (;;) {
      const e = this.queue.pop();
      if (e === undefined) return;
      if (e.at > until) {
        this.queue.push(e);
        this.now = until;
        return;
      }
      this.now = Math.max(this.now, e.at);
      this.handle(e);
    }
  }

  /** Runs until `done()` holds (checked after every event) or `limit` ms of virtual time pass. */
  runWhile(cond: () => boolean, limitMs: number): boolean {
    const until = this.now + limitMs;
    while (cond()) {
      const e = this.queue.pop();
      if (e === undefined || e.at > until) {
        if (e !== undefined) this.queue.push(e);
        return false;
      }
      this.now = Math.max(this.now, e.at);
      this.handle(e);
    }
    return true;
  }

  private handle(e: Event): void {
    switch (e.kind) {
      case 'call':
        return e.fn();
      case 'tick': {
        const node = this.node(e.node);
        if (!node.up || node.paused || node.incarnation !== e.incarnation) return;
        this.input(node, { type: 'tick' });
        this.scheduleTick(node);
        return;
      }
      case 'refused': {
        const dead = this.node(e.dead);
        const to = this.node(e.to);
        if (dead.up || dead.incarnation !== e.incarnation) return;
        if (to.up && !to.paused) this.input(to, { type: 'refused', node: e.dead });
        this.push({ at: this.now + 200, kind: 'refused', to: e.to, dead: e.dead, incarnation: e.incarnation });
        return;
      }
      case 'flush': {
        const node = this.node(e.node);
        if (!node.up || node.incarnation !== e.incarnation) return;
        node.flushScheduled = false;
        node.store.sync();
        const gated = node.gated;
        node.gated = [];
        for (const o of gated) this.emit(node, o);
        return;
      }
      case 'drain': {
        const node = this.node(e.node);
        if (!node.up || node.incarnation !== e.incarnation) return;
        node.drainScheduled = false;
        if (node.paused) return; // resume schedules the rest
        const inbox = node.inbox;
        node.inbox = [];
        // As Replica.stepAll, with a count of what coalescing merged.
        const now = this.localTime(node);
        const outputs: Output[] = [];
        for (const input of inbox) for (const o of node.replica.step(now, input)) outputs.push(o);
        const merged = coalesce(outputs);
        this.stats.steps += inbox.length;
        this.stats.coalesced += outputs.length - merged.length;
        this.process(node, merged);
        return;
      }
      case 'deliver': {
        const node = this.node(e.to);
        if (!node.up || node.incarnation !== e.incarnation) {
          this.stats.dropped++;
          return;
        }
        if (node.paused) {
          node.held.push(e);
          return;
        }
        this.deliver(node, e);
        return;
      }
    }
  }

  private deliver(node: SimNode, e: Extract<Event, { kind: 'deliver' }>): void {
    this.stats.delivered++;
    if (this.opts.traceKey !== '') this.trace(e.from, node.name, e.msg);
    this.input(node, { type: 'message', from: e.from, msg: e.msg });
  }

  private input(node: SimNode, input: Input): void {
    if (this.opts.turnMs <= 0) {
      this.stats.steps++;
      this.process(node, node.replica.step(this.localTime(node), input));
      return;
    }
    node.inbox.push(input);
    if (!node.drainScheduled) this.scheduleDrain(node);
  }

  private scheduleDrain(node: SimNode): void {
    node.drainScheduled = true;
    this.push({ at: this.now + this.rng.next() * this.opts.turnMs, kind: 'drain', node: node.name, incarnation: node.incarnation });
  }

  private process(node: SimNode, outputs: Output[]): void {
    for (const o of outputs) {
      if (o.type === 'log') {
        if (this.opts.keepLogs) this.logs.push(`${this.now.toFixed(1)} ${node.name} ${o.level} ${o.msg}`);
        continue;
      }
      // As the runtime: order is kept per destination (a peer, or the clients for durable
      // replies); a durable output holds up only later outputs to the same destination.
      const dest = o.type === 'send' ? o.to : o.durable ? '#client' : '';
      const blocked = dest !== '' && node.gated.some((g) => (g.type === 'send' ? g.to : '#client') === dest);
      if (blocked || o.durable) {
        node.gated.push(o);
        if (!node.flushScheduled && o.durable) {
          node.flushScheduled = true;
          this.push({ at: this.now + this.opts.fsyncMs, kind: 'flush', node: node.name, incarnation: node.incarnation });
        }
      } else {
        this.emit(node, o);
      }
    }
  }

  private emit(node: SimNode, o: SendOutput): void {
    if (o.type === 'reply') {
      const cb = node.callbacks.get(o.token);
      if (cb === undefined) return;
      node.callbacks.delete(o.token);
      cb(o.result);
      return;
    }
    if (this.opts.dropRate > 0 && o.to !== node.name && this.rng.chance(this.opts.dropRate)) {
      this.stats.dropped++;
      return;
    }
    const to = this.nodes.get(o.to);
    if (to === undefined) return;
    if ((node.isolated || to.isolated) && to !== node) {
      this.stats.dropped++;
      return;
    }
    const link = `${node.name}>${o.to}`;
    const [lo, hi] = this.opts.delayMs;
    const delay = lo + this.rng.next() * (hi - lo);
    const reorder = o.to !== node.name && this.opts.reorderRate > 0 && this.rng.chance(this.opts.reorderRate);
    // FIFO per link, as TCP; a reordered message ignores the link's order.
    const at = reorder ? this.now + delay : Math.max(this.now + delay, this.linkClock.get(link) ?? 0);
    if (!reorder) this.linkClock.set(link, at);
    this.push({ at, kind: 'deliver', from: node.name, to: o.to, msg: o.msg, incarnation: to.incarnation });
    if (o.to !== node.name && this.opts.dupRate > 0 && this.rng.chance(this.opts.dupRate)) {
      this.push({ at: at + this.rng.next() * 5, kind: 'deliver', from: node.name, to: o.to, msg: o.msg, incarnation: to.incarnation });
    }
  }

  private trace(from: string, to: string, msg: PeerMsg): void {
    const key = this.opts.traceKey;
    const show = (b: unknown): string => (Buffer.isBuffer(b) || b instanceof Uint8Array ? Buffer.from(b).toString() : String(b));
    let line: string | null = null;
    const m = msg as unknown as Record<string, unknown>;
    const entries = (m.entries as { seq: number; kind: string; key: Buffer; value: Buffer | null; id: string }[] | undefined) ?? [];
    const mine = entries.filter((x) => x.kind === 'clear' || show(x.key) === key);
    const p = typeof m.p === 'number' ? m.p : -1;
    const keyPart = this.ring.partitionOf(key);
    if ((m.t === 'write' || m.t === 'read') && show(m.key) === key) line = `${m.t} id=${String(m.id)} e=${String(m.e)} ${m.t === 'write' ? `${String(m.kind)} ${show(m.value)}` : ''}`;
    else if (m.t === 'rres' || m.t === 'wres') line = `${m.t} id=${String(m.id)} ${JSON.stringify(m.r, (_k, v: unknown) => (v !== null && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? show(Buffer.from((v as { data: number[] }).data)) : v))}`;
    else if (p === keyPart && (m.t === 'fwd' || m.t === 'syncr' || m.t === 'cur') && (mine.length > 0 || m.t !== 'fwd'))
      line = `${m.t} e=${String(m.e)} p=${p}${m.committed !== undefined ? ` committed=${String(m.committed)}` : ''} ${mine.map((x) => `${x.seq}:${x.kind}:${show(x.value)}:${x.id}`).join(' ')}`;
    else if (p === keyPart && (m.t === 'ack' || m.t === 'sync' || m.t === 'pull' || m.t === 'nack')) line = `${m.t} e=${String(m.e)} ${JSON.stringify({ seq: m.seq, committed: m.committed, from: m.from })}`;
    else if (m.t === 'ae' && (m.entries as unknown[]).length > 0) line = `ae ${JSON.stringify((m.entries as { view: unknown }[]).map((x) => x.view))} commit=${String(m.commit)}`;
    if (line !== null) this.logs.push(`${this.now.toFixed(2)} ${from}->${to} ${line}`);
  }

  // ------------------------------------------------------------------ clients

  /**
   * Starts `count` client processes, each issuing operations one after another on random
   * keys through random nodes until virtual time `until`, recording the history.
   */
  startClients(opts: { count: number; keys: string[]; until: number; thinkMs?: [number, number]; mix?: { put: number; get: number; del: number; clear?: number } }): void {
    const mix = opts.mix ?? { put: 0.45, get: 0.45, del: 0.1 };
    const [tlo, thi] = opts.thinkMs ?? [0, 2];
    let seq = 0;
    // A clear (delete `*` of one partition) is recorded as a delete of each of the workload's
    // keys in that partition, each under a process of its own that does nothing else: per
    // key, it must take effect at one point between its invocation and its answer.
    let clearProcess = CLEAR_PROCESSES;
    /** Records an answer: ok (with what a get read), info if it may have taken effect, else fail. */
    const record = (h: number, res: ClientResult, read?: string | null): void => {
      if (res.ok) this.history.ok(h, read);
      else if (res.code === 'KV_ERR_TIMEOUT' || res.code === 'KV_ERR_SHUTTING_DOWN') this.history.info(h);
      else this.history.fail(h);
    };
    const thinkThen = (process: number): void => this.at(this.now + tlo + this.rng.next() * (thi - tlo), () => loop(process));
    const loop = (process: number): void => {
      if (this.now >= opts.until) return;
      const key = this.rng.pick(opts.keys);
      const via = this.rng.pick(this.names);
      if (this.rng.next() < (mix.clear ?? 0)) {
        const partition = this.ring.partitionOf(key);
        const hs = opts.keys.filter((k) => this.ring.partitionOf(k) === partition).map((k) => this.history.invoke(clearProcess++, 'delete', k, null));
        this.request(via, { op: 'clear', partition }, (res) => {
          for (const h of hs) record(h, res);
          thinkThen(process);
        });
        return;
      }
      const r = this.rng.next();
      const kind = r < mix.put ? 'put' : r < mix.put + mix.get ? 'get' : 'delete';
      const value = kind === 'put' ? `c${process}-${seq++}` : null;
      const h = this.history.invoke(process, kind, key, value);
      const req: ClientRequest =
        kind === 'put'
          ? { op: 'put', key: Buffer.from(key), value: Buffer.from(value!) }
          : kind === 'get'
            ? { op: 'get', key: Buffer.from(key) }
            : { op: 'del', key: Buffer.from(key) };
      this.request(via, req, (res) => {
        record(h, res, kind === 'get' && res.ok ? (res.value?.toString() ?? null) : undefined);
        thinkThen(process);
      });
    };
    for (let p = 0; p < opts.count; p++) this.at(this.now + this.rng.next() * 2, () => loop(p));
  }

  /** Reads every key once through the given node, recorded in the history (final reads after healing). */
  finalReads(keys: string[], via: string, process = FINAL_READ_PROCESSES): void {
    keys.forEach((key, i) => {
      const h = this.history.invoke(process + i, 'get', key, null);
      this.request(via, { op: 'get', key: Buffer.from(key) }, (res) => {
        if (res.ok) this.history.ok(h, res.value?.toString() ?? null);
        else this.history.info(h);
      });
    });
  }

  ops(): Op[] {
    return this.history.finish();
  }

  /** Committed state of every partition on every member of its chain, for convergence checks. */
  replicaStates(): Map<number, Map<string, string>> {
    const out = new Map<number, Map<string, string>>();
    for (let p = 0; p < this.ring.size; p++) {
      const states = new Map<string, string>();
      for (const name of this.ring.canonicalChain(p)) {
        const node = this.node(name);
        const pairs = node.store.scan(p, null, Number.MAX_SAFE_INTEGER).map((kv) => `${kv.key.toString()}=${kv.value.toString()}`);
        states.set(name, `${node.store.committedSeq(p)}|${pairs.join(',')}`);
      }
      out.set(p, states);
    }
    return out;
  }

  /** Members whose live count (kept as writes commit) is not the number of pairs a scan lists. */
  liveCountMismatches(): string[] {
    const out: string[] = [];
    for (let p = 0; p < this.ring.size; p++) {
      for (const name of this.ring.canonicalChain(p)) {
        const store = this.node(name).store;
        const listed = store.scan(p, null, Number.MAX_SAFE_INTEGER).length;
        if (store.liveCount(p) !== listed) out.push(`${name} counts ${store.liveCount(p)} live pairs in partition ${p}, a scan lists ${listed}`);
      }
    }
    return out;
  }

  /** What keeps the cluster from being quiet, for diagnostics. */
  busy(): string[] {
    const out: string[] = [];
    for (const n of this.nodes.values()) {
      if (!n.up) continue;
      if (n.replica.outstandingCount() > 0) out.push(`${n.name}: ${n.replica.outstandingCount()} client requests outstanding`);
      for (const p of n.replica.partitions()) {
        if (p.mode !== 'member' || p.pending > 0 || !p.ready) out.push(`${n.name} partition ${p.partition}: ${JSON.stringify(p)}`);
      }
      const v = n.replica.currentView;
      out.push(`${n.name}: view ${v.epoch} ${JSON.stringify(v.states)} lease=${n.replica.hasLease()} ${JSON.stringify(n.replica.membershipStatus())}`);
    }
    return out;
  }

  isQuiet(): boolean {
    for (const n of this.nodes.values()) {
      if (n.replica.outstandingCount() > 0) return false;
      if (!n.up) continue;
      if (n.replica.partitions().some((p) => p.mode !== 'member' || p.pending > 0 || !p.ready)) return false;
    }
    return true;
  }
}
