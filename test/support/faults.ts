import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { Ring } from '../../src/core/ring.ts';
import { nodeDataDir } from '../../src/runtime/config.ts';
import { checkHistory, describeViolation, HistoryRecorder } from '../../src/sim/linearizability.ts';
import type { CheckResult, Op, OpKind } from '../../src/sim/linearizability.ts';
import { Prng } from '../../src/sim/prng.ts';
import { TestCluster } from './cluster.ts';
import { localPairs } from './resp.ts';

/**
 * Fault injection on a real five-process cluster (scripts/faults.ts, test/integration/faults.test.ts).
 *
 * Concurrent clients (ioredis, each operation through a random node) put, get and delete a
 * small hot key set with unique values while a nemesis injects one fault at a time: SIGKILL
 * then restart, SIGSTOP then SIGCONT, network isolation then heal (TCP proxies, see
 * TestCluster), aimed in turn at the head, the middle and the tail of the chain of key "a",
 * at random nodes, at a node in the middle of catch-up (seen 'joining' in /cluster: it is
 * killed again), and at a node whose data directory is deleted while it is down. Before the next fault every node must be 'up' again in every node's view.
 * At the end everything heals, every key is read through every node (recorded), and the run
 * checks: the history is linearizable (Wing-Gong-Lowe, src/sim/linearizability.ts), no
 * acknowledged write is lost and no deleted key comes back (explicitly, from the final
 * reads), and every chain's members hold the same live pairs (LOCALSCAN on each node).
 */

export type FaultKind = 'kill' | 'pause' | 'isolate' | 'catchup-kill' | 'wipe';
export type Aim = 'head' | 'middle' | 'tail' | 'random';

export interface FaultRunOptions {
  /** Milliseconds of client load with faults (the fault in progress at the end is finished). */
  durationMs: number;
  clients: number;
  /** Number of hot keys (the first ones are "a", "0", "x"). */
  keys: number;
  seed: number;
  /** Keep the load (and the nemesis) going until at least this many faults are done. */
  minFaults?: number;
  /**
   * Keep going until a node was killed in the middle of catch-up this many times: a
   * catch-up kill that missed the 'joining' window is retried at once (at most 3 times in a row).
   */
  minCatchupKills?: number;
  /** How long a fault lasts before it is undone, ms (uniform in the range). */
  holdMs?: [number, number];
  /** Quiet time between the cluster settling and the next fault, ms. */
  gapMs?: [number, number];
  /**
   * Every other pause lasts longer than the client command timeout, so that requests sent to
   * the paused node time out (outcome unknown) and are then executed when it resumes. Default true.
   */
  longPauses?: boolean;
  /** Longest wait for every node to be 'up' after a fault. */
  recoverTimeoutMs?: number;
  /** ioredis commandTimeout (a paused node never answers). */
  commandTimeoutMs?: number;
  /** Write the history (and evidence) to the tmp dir even when the run passes. */
  keepHistory?: boolean;
  /** Progress lines (fault timeline as it happens). */
  log?: (line: string) => void;
  /** Print node logs to stderr. */
  nodeLogs?: boolean;
}

export interface OpCounts {
  ok: number;
  /** Definitely not applied (UNAVAILABLE, or never sent: connection not ready). */
  failed: number;
  /** Outcome unknown: TIMEOUT from the cluster or no answer within commandTimeout. */
  timedOut: number;
  /** Outcome unknown: the connection dropped with the request possibly sent. */
  lost: number;
}

export interface FaultEvent {
  n: number;
  kind: FaultKind;
  aim: Aim;
  target: string;
  /** The target's place in the chain of "a" (head/middle/tail) or "-". */
  role: string;
  /** Seconds since the load started. */
  at: number;
  heldMs: number;
  /** Seconds since the load started when the fault was undone. */
  undoneAt: number;
  /** From undoing the fault to every node 'up' everywhere (ms), or null if that timed out. */
  recoveryMs: number | null;
  /** View epoch once settled. */
  epoch: number | null;
  note: string;
}

export interface FaultReport {
  ok: boolean;
  seed: number;
  options: { durationMs: number; clients: number; keys: string[] };
  loadSeconds: number;
  counts: Record<OpKind, OpCounts>;
  /** Error messages of unexpected kinds, with counts. */
  otherErrors: Record<string, number>;
  finalReads: { ok: number; failed: number; failures: string[] };
  maxUnavailableMs: number;
  /** Seconds since the load started when the longest window without a success began. */
  maxUnavailableFrom: number;
  /** The slowest successful operation of the load (a client blocked on one node sees this). */
  slowestOk: { ms: number; kind: OpKind; node: string; at: number };
  timeline: FaultEvent[];
  catchupKills: number;
  check: { ok: boolean; unknown: boolean; ops: number; keys: number };
  /** Linearizability violations, lost writes, returned deletes, disagreeing final reads. */
  violations: string[];
  chainsAgree: boolean;
  chainReport: string[];
  /** Recovery timeouts, nodes that did not come back, harness errors. */
  problems: string[];
  historyFile: string | null;
  evidenceDir: string | null;
}

interface NodeInfo {
  self: string;
  epoch: number;
  nodes: { name: string; state: string }[];
  local: { partition: number; mode: string; committed: number; last: number; pending: number; ready: boolean }[];
  configuration?: { role?: string; term?: number; leader?: string | null };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function isNodeInfo(x: unknown): x is NodeInfo {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o.epoch === 'number' && Array.isArray(o.nodes) && Array.isArray(o.local);
}

async function nodeInfo(cluster: TestCluster, name: string, timeoutMs = 800): Promise<NodeInfo | null> {
  if (!cluster.isRunning(name)) return null;
  try {
    const r = await fetch(`${cluster.http(name)}/cluster`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!r.ok) return null;
    const body: unknown = await r.json();
    return isNodeInfo(body) ? body : null;
  } catch {
    return null;
  }
}

/**
 * The hot keys: the ring test vectors "a", "0", "x" first, then k0, k1, ..., taking first the
 * ones that land in a partition no key has yet, so that every chain carries load.
 */
export function hotKeys(count: number, ring: Ring): string[] {
  const out = ['a', '0', 'x'].slice(0, Math.max(1, count));
  const covered = new Set(out.map((k) => ring.partitionOf(k)));
  const rest: string[] = [];
  for (let i = 0; out.length < count && i < 10_000; i++) {
    const k = `k${i}`;
    if (covered.size < ring.size && !covered.has(ring.partitionOf(k))) {
      covered.add(ring.partitionOf(k));
      out.push(k);
    } else if (rest.length < count) rest.push(k);
    if (covered.size === ring.size) while (out.length < count && rest.length > 0) out.push(rest.shift()!);
  }
  return out;
}

/**
 * One fault at a time; the first five cover every kind, the first three head, middle and
 * tail. A wipe is a kill whose node comes back with an empty data directory (a replaced disk).
 */
const PLAN: [FaultKind, Aim][] = [
  ['kill', 'head'],
  ['isolate', 'middle'],
  ['pause', 'tail'],
  ['catchup-kill', 'random'],
  ['wipe', 'tail'],
  ['pause', 'head'],
  ['kill', 'middle'],
  ['isolate', 'tail'],
  ['kill', 'random'],
  ['isolate', 'head'],
  ['pause', 'middle'],
  ['kill', 'tail'],
  ['wipe', 'middle'],
  ['isolate', 'random'],
  ['catchup-kill', 'head'],
  ['pause', 'random'],
  ['catchup-kill', 'tail'],
  ['catchup-kill', 'middle'],
  ['wipe', 'head'],
];

type Outcome = { status: 'fail'; cat: 'failed' } | { status: 'info'; cat: 'timedOut' | 'lost' | 'other' };

function classify(err: unknown): Outcome & { message: string } {
  const message = err instanceof Error ? err.message : String(err);
  if (message.startsWith('UNAVAILABLE')) return { status: 'fail', cat: 'failed', message };
  // enableOfflineQueue false: rejected before anything was written to the socket.
  if (message.startsWith("Stream isn't writeable")) return { status: 'fail', cat: 'failed', message };
  if (message.startsWith('TIMEOUT') || message === 'Command timed out') return { status: 'info', cat: 'timedOut', message };
  if (
    message.startsWith('SHUTDOWN') ||
    message === 'Connection is closed.' ||
    message.startsWith('Reached the max retries per request limit') ||
    /ECONNRESET|ECONNREFUSED|EPIPE|socket|closed/i.test(message)
  ) {
    return { status: 'info', cat: 'lost', message };
  }
  return { status: 'info', cat: 'other', message };
}

/** One ioredis connection per (client, node), replaced after a command timeout. */
class Pool {
  private readonly conns = new Map<string, Redis>();
  constructor(
    private readonly cluster: TestCluster,
    private readonly commandTimeoutMs: number,
  ) {}

  get(client: number, node: string): Redis {
    const k = `${client}/${node}`;
    let r = this.conns.get(k);
    if (r === undefined) {
      r = new Redis({
        host: '127.0.0.1',
        port: this.cluster.node(node).respPort,
        maxRetriesPerRequest: 0,
        enableOfflineQueue: false,
        commandTimeout: this.commandTimeoutMs,
        autoResendUnfulfilledCommands: false,
        connectTimeout: 2000,
        retryStrategy: (times: number) => Math.min(times * 50, 300),
      });
      r.on('error', () => undefined);
      this.conns.set(k, r);
    }
    return r;
  }

  reset(client: number, node: string): void {
    const k = `${client}/${node}`;
    this.conns.get(k)?.disconnect();
    this.conns.delete(k);
  }

  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ([...this.conns.values()].every((c) => c.status === 'ready')) return;
      await sleep(20);
    }
  }

  close(): void {
    for (const c of this.conns.values()) c.disconnect();
    this.conns.clear();
  }
}

export async function runFaults(opts: FaultRunOptions): Promise<FaultReport> {
  const log = opts.log ?? ((): void => undefined);
  const holdMs = opts.holdMs ?? [400, 2500];
  const gapMs = opts.gapMs ?? [500, 1500];
  const recoverTimeoutMs = opts.recoverTimeoutMs ?? 30_000;
  const commandTimeoutMs = opts.commandTimeoutMs ?? 6000;
  const minFaults = opts.minFaults ?? 0;
  const minCatchupKills = opts.minCatchupKills ?? 0;
  const longPauses = opts.longPauses ?? true;
  let pauses = 0;
  const rng = new Prng(opts.seed);

  const cluster = await TestCluster.create({ isolation: 'proxy', logs: opts.nodeLogs ?? false });
  const ring = new Ring(cluster.names, cluster.config.replication);
  const keys = hotKeys(opts.keys, ring);
  const chainA = ring.canonicalChain(ring.partitionOf('a'));
  const roleOf = (n: string): string => ['head', 'middle', 'tail'][chainA.indexOf(n)] ?? '-';
  const paused = new Set<string>();
  const history = new HistoryRecorder();
  const counts: Record<OpKind, OpCounts> = {
    put: { ok: 0, failed: 0, timedOut: 0, lost: 0 },
    get: { ok: 0, failed: 0, timedOut: 0, lost: 0 },
    delete: { ok: 0, failed: 0, timedOut: 0, lost: 0 },
  };
  const otherErrors: Record<string, number> = {};
  const timeline: FaultEvent[] = [];
  const problems: string[] = [];
  const violations: string[] = [];
  const finalReads = { ok: 0, failed: 0, failures: [] as string[] };
  let chainsAgree = false;
  const chainReport: string[] = [];
  let checkSummary = { ok: false, unknown: false, ops: 0, keys: 0 };
  let ops: Op[] = [];
  let catchupKills = 0;
  const slowestOk = { ms: 0, kind: 'get' as OpKind, node: '', at: 0 };
  let t0 = performance.now();
  let wallT0 = Date.now();
  let loadEnd = t0;
  const since = (): number => (performance.now() - t0) / 1000;
  const pool = new Pool(cluster, commandTimeoutMs);
  let stopping = false;
  let aborted = false;

  /** Every node running, answering, on one epoch, every node 'up', every partition a ready member. */
  const settled = async (): Promise<{ ok: boolean; epoch: number | null; detail: string }> => {
    const infos = await Promise.all(cluster.names.map((n) => nodeInfo(cluster, n)));
    const bad: string[] = [];
    const epochs = new Set<number>();
    infos.forEach((info, i) => {
      const name = cluster.names[i]!;
      if (info === null) {
        bad.push(`${name}: no answer${cluster.isRunning(name) ? '' : ' (not running)'}`);
        return;
      }
      epochs.add(info.epoch);
      const notUp = info.nodes.filter((x) => x.state !== 'up').map((x) => `${x.name}=${x.state}`);
      const notReady = info.local.filter((p) => p.mode !== 'member' || !p.ready).map((p) => `p${p.partition}:${p.mode}${p.ready ? '' : ',not ready'}`);
      if (notUp.length > 0 || notReady.length > 0) bad.push(`${name}@e${info.epoch}: ${[...notUp, ...notReady].join(' ')}`);
    });
    if (epochs.size > 1) bad.push(`epochs differ: ${infos.map((x, i) => `${cluster.names[i]}=${x?.epoch ?? '?'}`).join(' ')}`);
    const epoch = epochs.size === 1 ? [...epochs][0]! : null;
    return { ok: bad.length === 0, epoch, detail: bad.join('; ') };
  };

  const waitSettled = async (timeoutMs: number): Promise<{ ok: boolean; ms: number; epoch: number | null; detail: string }> => {
    const start = performance.now();
    let last = { ok: false, epoch: null as number | null, detail: '' };
    while (performance.now() - start < timeoutMs) {
      last = await settled();
      if (last.ok) return { ok: true, ms: Math.round(performance.now() - start), epoch: last.epoch, detail: '' };
      await sleep(50);
    }
    return { ok: false, ms: Math.round(performance.now() - start), epoch: last.epoch, detail: last.detail };
  };

  const snapshot = async (): Promise<string> => {
    const infos = await Promise.all(cluster.names.map((n) => nodeInfo(cluster, n)));
    return infos.map((x, i) => `${cluster.names[i]}: ${x === null ? 'no answer' : `e${x.epoch} ${x.configuration?.role ?? '?'} t${x.configuration?.term ?? '?'} leader=${x.configuration?.leader ?? '-'} | ${x.nodes.map((n) => `${n.name}=${n.state}`).join(' ')} | ${x.local.map((p) => `p${p.partition}:${p.mode}/${p.committed}/${p.last}/${p.ready ? 'r' : 'nr'}`).join(' ')}`}`).join('\n');
  };

  // ------------------------------------------------------------------ clients

  const client = async (id: number): Promise<void> => {
    const r = new Prng(opts.seed * 7919 + id + 1);
    let n = 0;
    while (!stopping) {
      const key = r.pick(keys);
      const node = r.pick(cluster.names);
      const x = r.next();
      const kind: OpKind = x < 0.45 ? 'put' : x < 0.9 ? 'get' : 'delete';
      const value = kind === 'put' ? `c${id}-${n++}` : null;
      const conn = pool.get(id, node);
      const h = history.invoke(id, kind, key, value);
      const began = performance.now();
      try {
        if (kind === 'put') {
          const res = await conn.set(key, value!);
          if (res !== 'OK') throw new Error(`unexpected reply to SET: ${String(res)}`);
          history.ok(h);
        } else if (kind === 'get') {
          history.ok(h, await conn.get(key));
        } else {
          await conn.del(key);
          history.ok(h);
        }
        counts[kind].ok++;
        const ms = performance.now() - began;
        if (ms > slowestOk.ms) Object.assign(slowestOk, { ms: Math.round(ms), kind, node, at: (began - t0) / 1000 });
      } catch (err) {
        const o = classify(err);
        if (o.status === 'fail') history.fail(h);
        else history.info(h);
        if (o.cat === 'other') {
          otherErrors[o.message.slice(0, 120)] = (otherErrors[o.message.slice(0, 120)] ?? 0) + 1;
          counts[kind].lost++;
        } else counts[kind][o.cat]++;
        if (o.message === 'Command timed out') pool.reset(id, node);
        await sleep(r.int(10, 40));
      }
    }
  };

  // ------------------------------------------------------------------ nemesis

  const pickTarget = (aim: Aim): string => {
    if (aim === 'head') return chainA[0]!;
    if (aim === 'middle') return chainA[1]!;
    if (aim === 'tail') return chainA[chainA.length - 1]!;
    return rng.pick(cluster.names);
  };

  /** Pids this run killed on purpose; any other exit before the end is a crash. */
  const killedPids = new Set<number>();
  const killNode = async (name: string): Promise<void> => {
    if (cluster.isRunning(name)) killedPids.add(cluster.pid(name));
    await cluster.kill(name);
  };
  let exitsSeen = 0;
  const checkCrashes = (): void => {
    for (; exitsSeen < cluster.exits.length; exitsSeen++) {
      const e = cluster.exits[exitsSeen]!;
      if (e.pid !== undefined && killedPids.has(e.pid)) continue;
      const tail = (cluster.output.get(e.name) ?? []).slice(-15).join('\n    ');
      problems.push(`node ${e.name} (pid ${e.pid ?? '?'}) exited on its own (${e.signal ?? `code ${e.code}`}) at +${((e.at - wallT0) / 1000).toFixed(1)} s; its last log lines:\n    ${tail}`);
    }
  };

  /** Starts a node; a failure to come up is a problem of the run, not a crash of the harness. */
  const restart = async (name: string): Promise<boolean> => {
    try {
      await cluster.startNode(name);
      return true;
    } catch (err) {
      problems.push(`restart of ${name} failed: ${(err as Error).message}`);
      return false;
    }
  };

  /** Kills `target`, waits until it is down, restarts it and kills it again as soon as its own /cluster shows it 'joining' (catching up). */
  const catchupKill = async (target: string): Promise<string> => {
    await killNode(target);
    // Wait until the others have taken it out, so that its return goes through 'joining'.
    const deadline = performance.now() + 10_000;
    let down = false;
    while (!down && performance.now() < deadline) {
      const infos = await Promise.all(cluster.names.filter((n) => n !== target).map((n) => nodeInfo(cluster, n)));
      down = infos.filter((x) => x?.nodes.find((n) => n.name === target)?.state === 'down').length >= 3;
      if (!down) await sleep(20);
    }
    if (!down) return 'not seen down within 10 s';
    const st = { killed: false, seen: '' };
    const watch = (async (): Promise<void> => {
      const until = performance.now() + 15_000;
      let othersAt = 0;
      while (performance.now() < until) {
        if (cluster.isRunning(target)) {
          // The target's own view: it knows it is joining, so it is copying its partitions.
          const own = await nodeInfo(cluster, target, 300);
          if (own?.nodes.find((n) => n.name === target)?.state === 'joining') {
            st.killed = true;
            await killNode(target);
            const modes = own.local.map((p) => `p${p.partition}:${p.mode}@${p.committed}`).join(' ');
            st.seen = `joining in its own view (e${own.epoch}), partitions ${modes}`;
            return;
          }
          if (performance.now() - othersAt > 100) {
            othersAt = performance.now();
            const infos = await Promise.all(cluster.names.filter((n) => n !== target).map((n) => nodeInfo(cluster, n, 300)));
            if (infos.filter((x) => x?.nodes.find((n) => n.name === target)?.state === 'up').length >= 3) return;
          }
        }
        await sleep(3);
      }
    })();
    const started = cluster.startNode(target).then(
      () => true,
      (err: unknown) => {
        if (!st.killed) problems.push(`restart of ${target} failed: ${(err as Error).message}`);
        return false;
      },
    );
    await watch;
    await started;
    if (!st.killed) return 'joining not observed (it was back up first)';
    catchupKills++;
    return `killed again while ${st.seen}`;
  };

  const nemesis = async (): Promise<void> => {
    await sleep(rng.int(gapMs[0], gapMs[1]));
    let planIndex = 0;
    let missedInARow = 0;
    for (;;) {
      const elapsed = performance.now() - t0;
      const remaining = opts.durationMs - elapsed;
      if (timeline.length >= minFaults && catchupKills >= minCatchupKills && remaining < 2000) break;
      if (elapsed > opts.durationMs * 3 + 60_000) {
        problems.push(`gave up after ${(elapsed / 1000).toFixed(0)} s: ${timeline.length} faults done (wanted ${minFaults}), ${catchupKills} kills during catch-up (wanted ${minCatchupKills})`);
        break;
      }
      const [kind, aim] = PLAN[planIndex++ % PLAN.length]!;
      const target = pickTarget(aim);
      let hold = rng.int(holdMs[0], holdMs[1]);
      if (kind === 'pause' && longPauses && pauses++ % 2 === 1) hold = commandTimeoutMs + rng.int(500, 1500);
      const at = since();
      log(`+${at.toFixed(1)}s fault ${timeline.length + 1}: ${kind} ${target} (${aim}${aim === 'random' ? `, ${roleOf(target)} of a` : ''}), hold ${hold} ms`);
      let note = '';
      switch (kind) {
        case 'kill':
          await killNode(target);
          await sleep(hold);
          await restart(target);
          break;
        case 'pause':
          cluster.pause(target);
          paused.add(target);
          await sleep(hold);
          paused.delete(target);
          if (cluster.isRunning(target)) cluster.resume(target);
          else note = 'it exited while paused';
          break;
        case 'isolate':
          cluster.isolate(target);
          await sleep(hold);
          cluster.heal(target);
          break;
        case 'wipe':
          await killNode(target);
          rmSync(nodeDataDir(cluster.config, target), { recursive: true, force: true });
          await sleep(hold);
          await restart(target);
          break;
        case 'catchup-kill': {
          const before = catchupKills;
          note = await catchupKill(target);
          missedInARow = catchupKills > before ? 0 : missedInARow + 1;
          // Missed the window: the same fault again next (the plan does not move on).
          if (catchupKills < minCatchupKills && missedInARow > 0 && missedInARow <= 3) planIndex--;
          await sleep(Math.min(hold, 800));
          if (!cluster.isRunning(target)) await restart(target);
          break;
        }
      }
      const undoneAt = since();
      const s = await waitSettled(recoverTimeoutMs);
      checkCrashes();
      const ev: FaultEvent = {
        n: timeline.length + 1, kind, aim, target, role: roleOf(target), at, heldMs: hold, undoneAt,
        recoveryMs: s.ok ? s.ms : null, epoch: s.epoch, note,
      };
      timeline.push(ev);
      log(`+${since().toFixed(1)}s   ${s.ok ? `settled ${s.ms} ms after undo, epoch ${s.epoch}` : `NOT SETTLED after ${s.ms} ms: ${s.detail}`}${note === '' ? '' : `; ${note}`}`);
      if (!s.ok) {
        problems.push(`after fault ${ev.n} (${kind} ${target}) the cluster did not settle within ${recoverTimeoutMs} ms: ${s.detail}\n${await snapshot()}`);
        aborted = true;
        break;
      }
      await sleep(rng.int(gapMs[0], gapMs[1]));
    }
  };

  let clients: Promise<void>[] = [];
  let evidenceDir: string | null = null;
  let historyFile: string | null = null;
  try {
    await cluster.start();
    const first = await waitSettled(30_000);
    if (!first.ok) throw new Error(`the cluster did not settle after start: ${first.detail}`);
    for (let id = 0; id < opts.clients; id++) for (const n of cluster.names) pool.get(id, n);
    await pool.ready(10_000);
    log(`cluster up (epoch ${first.epoch}); chain of "a": ${chainA.join(' -> ')}; ${opts.clients} clients on ${keys.length} keys (${keys.join(' ')})`);

    t0 = performance.now();
    wallT0 = Date.now();
    clients = Array.from({ length: opts.clients }, (_, id) => client(id));
    await nemesis();
    stopping = true;
    loadEnd = performance.now();
    log(`+${since().toFixed(1)}s load stopped; waiting for outstanding operations`);
    await Promise.all(clients);
    pool.close();

    // ---------------------------------------------------------------- heal and settle
    for (const n of [...paused]) {
      cluster.resume(n);
      paused.delete(n);
    }
    cluster.healAll();
    for (const n of cluster.names) if (!cluster.isRunning(n)) await restart(n);
    const healed = await waitSettled(60_000);
    if (!healed.ok) problems.push(`after healing everything the cluster did not settle within 60 s: ${healed.detail}\n${await snapshot()}`);

    checkCrashes();

    // ---------------------------------------------------------------- final reads
    const readers = cluster.names.map(
      (n) => new Redis({ host: '127.0.0.1', port: cluster.node(n).respPort, maxRetriesPerRequest: 0, enableOfflineQueue: true, commandTimeout: commandTimeoutMs }),
    );
    for (const r of readers) r.on('error', () => undefined);
    const finalValues = new Map<string, Map<string, string | null>>();
    let proc = 1_000_000;
    for (const key of keys) {
      const perNode = new Map<string, string | null>();
      finalValues.set(key, perNode);
      for (let i = 0; i < readers.length; i++) {
        const h = history.invoke(proc++, 'get', key, null);
        try {
          const v = await readers[i]!.get(key);
          history.ok(h, v);
          perNode.set(cluster.names[i]!, v);
          finalReads.ok++;
        } catch (err) {
          history.info(h);
          finalReads.failed++;
          finalReads.failures.push(`get ${key} through ${cluster.names[i]}: ${(err as Error).message}`);
        }
      }
    }
    ops = history.finish();

    // ---------------------------------------------------------------- chains agree
    if (!(await chainsQuiet(cluster, ring, 20_000, chainReport))) problems.push(chainReport[chainReport.length - 1]!);
    const local = new Map<string, Map<string, string>>();
    for (let i = 0; i < readers.length; i++) {
      try {
        local.set(cluster.names[i]!, await localPairs(readers[i]!));
      } catch (err) {
        chainReport.push(`LOCALSCAN on ${cluster.names[i]} failed: ${(err as Error).message}`);
      }
    }
    for (const r of readers) r.disconnect();
    chainsAgree = local.size === cluster.names.length;
    for (let p = 0; p < ring.size; p++) {
      const chain = ring.canonicalChain(p);
      const views = chain.map((n) => {
        const m = new Map<string, string>();
        for (const [k, v] of local.get(n) ?? []) if (ring.partitionOf(k) === p) m.set(k, v);
        return m;
      });
      const diffs: string[] = [];
      const allKeys = new Set(views.flatMap((m) => [...m.keys()]));
      for (const k of allKeys) {
        const vals = views.map((m) => m.get(k));
        if (vals.some((v) => v !== vals[0])) diffs.push(`${JSON.stringify(k)}: ${chain.map((n, j) => `${n}=${vals[j] === undefined ? '(absent)' : JSON.stringify(vals[j])}`).join(' ')}`);
      }
      if (diffs.length > 0) {
        chainsAgree = false;
        chainReport.push(`partition ${p} (${chain.join(' -> ')}): ${diffs.length} keys differ: ${diffs.slice(0, 10).join('; ')}`);
      } else chainReport.push(`partition ${p} (${chain.join(' -> ')}): ${views[0]!.size} live pairs, identical on all ${chain.length}`);
    }

    // ---------------------------------------------------------------- explicit checks
    violations.push(...explicitChecks(ops, keys, finalValues));

    // ---------------------------------------------------------------- linearizability
    log(`checking the history (${ops.length} ops)`);
    const checkStart = performance.now();
    const result: CheckResult = checkHistory(ops);
    log(`checked in ${((performance.now() - checkStart) / 1000).toFixed(1)} s`);
    checkSummary = { ok: result.ok, unknown: result.unknown, ops: ops.length, keys: result.keys.length };
    for (const v of result.violations) violations.unshift(describeViolation(v));
    if (result.unknown) {
      for (const k of result.keys.filter((x) => x.unknown)) problems.push(describeViolation(k));
    }
  } catch (err) {
    problems.push(`harness error: ${(err as Error).stack ?? String(err)}`);
  } finally {
    stopping = true;
    pool.close();
    await Promise.allSettled(clients);
    checkCrashes();
    for (const n of [...paused]) {
      try {
        cluster.resume(n);
      } catch {
        // not running any more
      }
    }
    cluster.healAll();
    const ok = problems.length === 0 && violations.length === 0 && chainsAgree && checkSummary.ok && finalReads.failed === 0 && !aborted;
    if (!ok || opts.keepHistory === true) {
      if (ops.length === 0) ops = history.finish();
      evidenceDir = mkdtempSync(join(tmpdir(), `chainkv-faults-seed${opts.seed}-`));
      historyFile = join(evidenceDir, 'history.json');
      writeFileSync(historyFile, JSON.stringify(ops));
      writeFileSync(join(evidenceDir, 'timeline.json'), JSON.stringify(timeline, null, 2));
      mkdirSync(join(evidenceDir, 'logs'));
      for (const n of cluster.names) writeFileSync(join(evidenceDir, 'logs', `${n}.log`), (cluster.output.get(n) ?? []).join('\n') + '\n');
      const infos = await Promise.all(cluster.names.map((n) => nodeInfo(cluster, n, 2000)));
      infos.forEach((x, i) => writeFileSync(join(evidenceDir!, `cluster-${cluster.names[i]}.json`), JSON.stringify(x, null, 2)));
    }
    await cluster.destroy();
  }

  const okTimes = ops.filter((o) => o.status === 'ok' && o.process < 1_000_000 && o.complete <= loadEnd).map((o) => o.complete).sort((a, b) => a - b);
  let maxGap = 0;
  let gapFrom = t0;
  let prev = t0;
  for (const t of [...okTimes, loadEnd]) {
    if (t - prev > maxGap) {
      maxGap = t - prev;
      gapFrom = prev;
    }
    prev = Math.max(prev, t);
  }

  const report: FaultReport = {
    ok: false,
    seed: opts.seed,
    options: { durationMs: opts.durationMs, clients: opts.clients, keys },
    loadSeconds: (loadEnd - t0) / 1000,
    counts,
    otherErrors,
    finalReads,
    maxUnavailableMs: Math.round(maxGap),
    maxUnavailableFrom: (gapFrom - t0) / 1000,
    slowestOk,
    timeline,
    catchupKills,
    check: checkSummary,
    violations,
    chainsAgree,
    chainReport,
    problems,
    historyFile,
    evidenceDir,
  };
  report.ok = problems.length === 0 && violations.length === 0 && chainsAgree && checkSummary.ok && finalReads.failed === 0 && !aborted;
  return report;
}

/** Waits until, for every partition, every chain member has no pending entries and the same committed seq. */
async function chainsQuiet(cluster: TestCluster, ring: Ring, timeoutMs: number, report: string[]): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let detail = '';
  while (performance.now() < deadline) {
    const infos = new Map<string, NodeInfo | null>();
    await Promise.all(cluster.names.map(async (n) => infos.set(n, await nodeInfo(cluster, n))));
    const bad: string[] = [];
    for (let p = 0; p < ring.size; p++) {
      const states = ring.canonicalChain(p).map((n) => ({ n, s: infos.get(n)?.local.find((x) => x.partition === p) }));
      const committed = new Set(states.map((x) => x.s?.committed));
      if (states.some((x) => x.s === undefined || x.s.pending > 0) || committed.size > 1) {
        bad.push(`p${p}: ${states.map((x) => `${x.n}=${x.s === undefined ? '?' : `${x.s.committed}/${x.s.last}`}`).join(' ')}`);
      }
    }
    if (bad.length === 0) return true;
    detail = bad.join('; ');
    await sleep(100);
  }
  report.push(`chains not quiet after ${timeoutMs} ms (committed/last per member): ${detail}`);
  return false;
}

/**
 * Checks stated directly (the linearizability check covers them too, this names them):
 *  - the final reads of a key agree on every node;
 *  - no acknowledged write is lost: the final value is the value of a last acknowledged
 *    write (one that no other acknowledged write follows in real time), or, when some write
 *    to the key is in doubt, of one of those or of a write in doubt;
 *  - no deleted key returns: a get that starts after a delete was acknowledged, and that
 *    delete started after the put of the value read was acknowledged, is a violation;
 *  - every value read was written by someone.
 */
export function explicitChecks(ops: readonly Op[], keys: readonly string[], finals: Map<string, Map<string, string | null>>): string[] {
  const out: string[] = [];
  const show = (v: string | null | undefined): string => (v === null ? '(absent)' : v === undefined ? '?' : JSON.stringify(v));
  for (const key of keys) {
    const perNode = finals.get(key) ?? new Map<string, string | null>();
    const values = [...perNode.values()];
    if (values.length === 0) continue;
    if (values.some((v) => v !== values[0])) {
      out.push(`key ${JSON.stringify(key)}: final reads disagree: ${[...perNode].map(([n, v]) => `${n}=${show(v)}`).join(' ')}`);
      continue;
    }
    const final = values[0]!;
    const writes = ops.filter((o) => o.key === key && o.kind !== 'get' && o.status !== 'fail');
    const acked = writes.filter((o) => o.status === 'ok');
    const inDoubt = writes.filter((o) => o.status === 'info');
    // The acknowledged writes no other acknowledged write started after (linear, not quadratic:
    // long runs have thousands of writes per key).
    const latestInvoke = acked.reduce((m, w) => Math.max(m, w.invoke), -Infinity);
    const last = acked.filter((w) => w.complete >= latestInvoke);
    const allowed = new Set<string | null>(last.map((w) => (w.kind === 'put' ? w.value : null)));
    if (acked.length === 0) allowed.add(null);
    for (const w of inDoubt) allowed.add(w.kind === 'put' ? w.value : null);
    if (!allowed.has(final)) {
      const lastDesc = last.map((w) => `${w.kind}${w.kind === 'put' ? ` ${show(w.value)}` : ''} (client ${w.process}, done at ${w.complete.toFixed(1)} ms)`).join(', ');
      const what = final === null ? 'an acknowledged write is lost' : last.every((w) => w.kind === 'delete') && inDoubt.length === 0 ? 'a deleted key returned' : 'an acknowledged write is lost';
      out.push(`key ${JSON.stringify(key)}: ${what}: final value ${show(final)}, last acknowledged write(s): ${lastDesc || 'none'}${inDoubt.length > 0 ? `, ${inDoubt.length} writes in doubt` : ''}`);
    }
  }
  // Deleted (or overwritten) values never come back; values read were written.
  const putOf = new Map<string, Op>();
  for (const o of ops) if (o.kind === 'put' && o.value !== null) putOf.set(`${o.key}\u0000${o.value}`, o);
  const byKey = new Map<string, Op[]>();
  for (const o of ops) if (o.kind !== 'get' && o.status === 'ok') (byKey.get(o.key) ?? byKey.set(o.key, []).get(o.key)!).push(o);
  // Per key, acknowledged writes by invocation time, and for each position the write that
  // completed first among it and all later-invoked ones: "did an acknowledged write start
  // after t and complete before u" is then a binary search, not a scan.
  const earliestFrom = new Map<string, Op[]>();
  for (const [key, writes] of byKey) {
    writes.sort((a, b) => a.invoke - b.invoke);
    const suffix: Op[] = new Array<Op>(writes.length);
    for (let i = writes.length - 1; i >= 0; i--) {
      const next = suffix[i + 1];
      suffix[i] = next !== undefined && next.complete < writes[i]!.complete ? next : writes[i]!;
    }
    earliestFrom.set(key, suffix);
  }
  const firstInvokedAfter = (writes: Op[], t: number): number => {
    let lo = 0;
    let hi = writes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (writes[mid]!.invoke > t) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
  let reported = 0;
  for (const g of ops) {
    if (g.kind !== 'get' || g.status !== 'ok' || g.value === null || reported >= 20) continue;
    const put = putOf.get(`${g.key}\u0000${g.value}`);
    if (put === undefined) {
      out.push(`key ${JSON.stringify(g.key)}: client ${g.process} read ${JSON.stringify(g.value)}, which nobody wrote`);
      reported++;
      continue;
    }
    if (put.status !== 'ok') continue;
    // The put itself was invoked before it completed, so it is never among these.
    const writes = byKey.get(g.key) ?? [];
    const first = earliestFrom.get(g.key)?.[firstInvokedAfter(writes, put.complete)];
    const later = first !== undefined && first.complete < g.invoke ? first : undefined;
    if (later !== undefined) {
      out.push(
        `key ${JSON.stringify(g.key)}: ${later.kind === 'delete' ? 'a deleted value returned' : 'stale read'}: client ${g.process} read ${JSON.stringify(g.value)} ` +
          `at ${g.invoke.toFixed(1)}-${g.complete.toFixed(1)} ms, but ${later.kind}${later.kind === 'put' ? ` ${JSON.stringify(later.value)}` : ''} ` +
          `(client ${later.process}, ${later.invoke.toFixed(1)}-${later.complete.toFixed(1)} ms) was acknowledged after that value's put (done at ${put.complete.toFixed(1)} ms)`,
      );
      reported++;
    }
  }
  return out;
}

export function formatReport(r: FaultReport): string {
  const lines: string[] = [];
  const pad = (s: string | number, n: number): string => String(s).padStart(n);
  lines.push(`seed ${r.seed}: ${r.options.clients} clients, keys ${r.options.keys.join(' ')}, ${r.loadSeconds.toFixed(1)} s of load`);
  lines.push(`operations      ok  failed  timed-out  lost   (failed: not applied; timed-out and lost: outcome unknown)`);
  for (const k of ['put', 'get', 'delete'] as const) {
    const c = r.counts[k];
    lines.push(`  ${k.padEnd(8)} ${pad(c.ok, 7)} ${pad(c.failed, 7)} ${pad(c.timedOut, 10)} ${pad(c.lost, 5)}`);
  }
  for (const [m, n] of Object.entries(r.otherErrors)) lines.push(`  other error x${n}: ${m}`);
  lines.push(`final reads: ${r.finalReads.ok} ok, ${r.finalReads.failed} failed${r.finalReads.failures.length > 0 ? `: ${r.finalReads.failures.join('; ')}` : ''}`);
  lines.push(`max unavailability: ${r.maxUnavailableMs} ms (no operation succeeded on any key from +${r.maxUnavailableFrom.toFixed(1)} s)`);
  lines.push(`slowest successful operation: ${r.slowestOk.ms} ms (${r.slowestOk.kind} through ${r.slowestOk.node}, sent at +${r.slowestOk.at.toFixed(1)} s)`);
  lines.push(`fault timeline (${r.timeline.length} faults, ${r.catchupKills} kills during catch-up):`);
  for (const e of r.timeline) {
    lines.push(
      `  +${e.at.toFixed(1).padStart(5)}s #${e.n} ${e.kind.padEnd(12)} ${e.target} (${e.aim === 'random' ? `random, ${e.role}` : e.aim} of a) held ${e.heldMs} ms, undone +${e.undoneAt.toFixed(1)}s, ` +
        `${e.recoveryMs === null ? 'NOT settled' : `all up ${e.recoveryMs} ms later (epoch ${e.epoch})`}${e.note === '' ? '' : `; ${e.note}`}`,
    );
  }
  lines.push(`history: ${r.check.ops} ops on ${r.check.keys} keys, linearizable: ${r.check.ok ? 'yes' : r.check.unknown ? 'UNKNOWN (search budget exhausted)' : 'NO'}`);
  lines.push(`chains agree: ${r.chainsAgree ? 'yes' : 'NO'}`);
  for (const c of r.chainReport) lines.push(`  ${c}`);
  for (const p of r.problems) lines.push(`problem: ${p}`);
  if (r.violations.length === 0) lines.push('violations: 0');
  else {
    lines.push(`violations: ${r.violations.length}`);
    for (const v of r.violations) lines.push(`  ${v}`);
  }
  if (r.historyFile !== null) lines.push(`history file: ${r.historyFile}`);
  if (r.evidenceDir !== null) lines.push(`evidence (history, timeline, node logs, /cluster of each node): ${r.evidenceDir}`);
  lines.push(r.ok ? 'result: ok' : 'result: FAILED');
  return lines.join('\n');
}
