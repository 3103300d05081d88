import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Ring } from '../../src/core/ring.ts';
import type { ClusterInfo } from '../../src/runtime/api.ts';
import { checkHistory, describeViolation, HistoryRecorder } from '../../src/sim/linearizability.ts';
import type { Op } from '../../src/sim/linearizability.ts';
import { Prng } from '../../src/sim/prng.ts';
import { TestCluster } from '../support/cluster.ts';

/**
 * The six phases of the original course grader (UB CSE 486/586 SimpleDynamo, see
 * ORIGINAL-SYSTEM.md §1.4), run in order against ONE real five-process cluster:
 *
 *   1. basic insert, query, delete, `@` and `*`, with exact placement;
 *   2. concurrent operations on distinct keys through all nodes;
 *   3. concurrent operations on the same keys through all nodes (history checked);
 *   4. one failure per operation type: a node is SIGKILLed before the operations and
 *      restarted after them, and must then return the latest data;
 *   5. concurrent operations while a node crashes and recovers mid-run;
 *   6. rolling failures: every node crashes and recovers in turn under concurrent load.
 *
 * Unlike the grader (which reinstalls before phases 1 and 2), data carries over: the test
 * keeps one model of every pair that must exist, and after every phase checks `*` through
 * every node and `@` on every node against it exactly.
 *
 * Clients are ioredis connections without retries or offline queue, opened only to running
 * nodes: every operation sent to a running node must succeed (the cluster retries
 * internally). A connection is closed (after its in-flight operations finished) before its
 * node is killed, and reopened once the node runs again. Nothing is retried here: every
 * failed operation, stale read or wrong scan is collected and reported with the /cluster
 * state of every node and the node logs (also written to a file under the temp directory).
 */

const SEED = Number(process.env.PHASES_SEED ?? Math.floor(Math.random() * 2 ** 31));
const rnd = new Prng(SEED);

let cluster: TestCluster;
let ring: Ring;
const t0 = performance.now();
const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(2)}s`;

/** Every pair that must exist in the cluster now (the model carried across phases). */
const expected = new Map<string, string>();
/** Keys that were deleted and must stay deleted. */
const deleted = new Set<string>();

let phase = 'setup';
/** Operations that failed although sent to a running node. */
const failures: string[] = [];
/** Wrong answers: stale or lost reads, wrong scans, disagreement. */
const problems: string[] = [];
/** Kills, restarts and view changes, for the report. */
const events: string[] = [];
const timings: string[] = [];

function note(list: string[], msg: string): void {
  list.push(`[${elapsed()} ${phase}] ${msg}`);
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

// ---------------------------------------------------------------------------------------
// Connections: one per running node, closed before the node is killed.

class Clients {
  private readonly conns = new Map<string, Redis>();
  private readonly inflight = new Map<string, number>();
  private readonly closing = new Set<Redis>();

  /** Nodes with an open connection, in configuration order. */
  live(): string[] {
    return cluster.names.filter((n) => this.conns.has(n));
  }

  async open(name: string): Promise<void> {
    if (this.conns.has(name)) throw new Error(`test bug: ${name} is already connected`);
    const r = new Redis({
      host: '127.0.0.1',
      port: cluster.node(name).respPort,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
      // Longer than the cluster's own request timeout (5 s): a command that gets no answer at
      // all shows up as a failure instead of hanging the test.
      commandTimeout: 8000,
    });
    r.on('error', (e: unknown) => {
      if (!this.closing.has(r)) note(failures, `connection to ${name}: ${errorText(e)}`);
    });
    r.on('end', () => {
      if (!this.closing.has(r)) note(failures, `connection to ${name} closed unexpectedly`);
    });
    await r.connect();
    this.conns.set(name, r);
  }

  /** Stops handing out the connection, waits for its in-flight operations, closes it. */
  async close(name: string): Promise<void> {
    const r = this.conns.get(name);
    if (r === undefined) return;
    this.conns.delete(name);
    while ((this.inflight.get(name) ?? 0) > 0) await sleep(2);
    this.closing.add(r);
    r.disconnect();
  }

  closeAll(): void {
    for (const [name, r] of this.conns) {
      this.closing.add(r);
      r.disconnect();
      this.conns.delete(name);
    }
  }

  /** Runs fn on the node's connection. Must be called synchronously after choosing the node. */
  async use<T>(name: string, fn: (r: Redis) => Promise<T>): Promise<T> {
    const r = this.conns.get(name);
    if (r === undefined) throw new Error(`test bug: no open connection to ${name}`);
    this.inflight.set(name, (this.inflight.get(name) ?? 0) + 1);
    try {
      return await fn(r);
    } finally {
      this.inflight.set(name, (this.inflight.get(name) ?? 1) - 1);
    }
  }
}

const clients = new Clients();

/** Operations of the current phase and the slowest of them (how long failover stalled a client). */
let opCount = 0;
let slowest = { ms: 0, what: '' };

type Outcome<T> = { ok: true; value: T } | { ok: false; error: string };

/** One operation; a failure is recorded (never retried) and returned. */
async function attempt<T>(node: string, what: string, fn: (r: Redis) => Promise<T>): Promise<Outcome<T>> {
  const start = performance.now();
  try {
    const value = await clients.use(node, fn);
    const ms = performance.now() - start;
    opCount++;
    if (ms > slowest.ms) slowest = { ms, what: `${what} via ${node} at ${elapsed()} (${phase})` };
    return { ok: true, value };
  } catch (e) {
    const error = errorText(e);
    note(failures, `${what} via ${node} failed after ${Math.round(performance.now() - start)} ms: ${error}`);
    return { ok: false, error };
  }
}

async function put(node: string, key: string, value: string): Promise<boolean> {
  const o = await attempt(node, `SET ${key}`, (r) => r.set(key, value));
  if (o.ok && o.value !== 'OK') note(problems, `SET ${key} via ${node} answered ${JSON.stringify(o.value)}`);
  return o.ok;
}

async function get(node: string, key: string): Promise<Outcome<string | null>> {
  return attempt(node, `GET ${key}`, (r) => r.get(key));
}

/** GET that must return `want` (null = absent). */
async function expectGet(node: string, key: string, want: string | null, why: string): Promise<void> {
  const o = await get(node, key);
  if (o.ok && o.value !== want) {
    note(problems, `${why}: GET ${key} via ${node} returned ${JSON.stringify(o.value)}, expected ${JSON.stringify(want)}`);
  }
}

async function del(node: string, key: string): Promise<Outcome<number>> {
  return attempt(node, `DEL ${key}`, (r) => r.del(key));
}

async function scan(node: string, command: 'LOCALSCAN' | 'SCANALL'): Promise<Map<string, string> | null> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const o = await attempt(node, `${command} ${cursor}`, (r) => r.call(command, cursor, 'COUNT', '250') as Promise<[string, string[]]>);
    if (!o.ok) return null;
    const [next, flat] = o.value;
    for (let i = 0; i < flat.length; i += 2) {
      if (out.has(flat[i]!)) note(problems, `${command} via ${node} listed ${flat[i]} twice`);
      out.set(flat[i]!, flat[i + 1]!);
    }
    cursor = next;
  } while (cursor !== '0');
  return out;
}

// ---------------------------------------------------------------------------------------
// The model: placement and comparisons.

function chainOf(key: string): readonly string[] {
  return ring.canonicalChain(ring.partitionOf(key));
}

/** The pairs of `expected` that node stores: the keys of its three chains. */
function shareOf(name: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of expected) if (chainOf(k).includes(name)) out.set(k, v);
  return out;
}

function diff(label: string, got: Map<string, string>, want: Map<string, string>): void {
  const missing: string[] = [];
  const extra: string[] = [];
  const wrong: string[] = [];
  for (const [k, v] of want) {
    const g = got.get(k);
    if (g === undefined) missing.push(`${k} (chain ${chainOf(k).join('>')}${deleted.has(k) ? ', was deleted once' : ''})`);
    else if (g !== v) wrong.push(`${k}=${JSON.stringify(g)} expected ${JSON.stringify(v)}`);
  }
  for (const [k, v] of got) {
    if (!want.has(k)) extra.push(`${k}=${JSON.stringify(v)} (chain ${chainOf(k).join('>')}${deleted.has(k) ? ', DELETED' : ''})`);
  }
  if (missing.length + extra.length + wrong.length === 0) return;
  const show = (xs: string[]): string => xs.slice(0, 8).join('; ') + (xs.length > 8 ? `; ... (${xs.length})` : '');
  note(
    problems,
    `${label}: ${got.size} pairs, expected ${want.size}; ` +
      `missing ${missing.length} [${show(missing)}], extra ${extra.length} [${show(extra)}], wrong ${wrong.length} [${show(wrong)}]`,
  );
}

/** `@` on each node equals exactly its share; `*` through each node equals everything. */
async function checkScans(label: string, nodes: string[] = clients.live()): Promise<void> {
  for (const name of nodes) {
    const local = await scan(name, 'LOCALSCAN');
    if (local !== null) diff(`${label}: @ on ${name}`, local, shareOf(name));
    const all = await scan(name, 'SCANALL');
    if (all !== null) diff(`${label}: * via ${name}`, all, expected);
  }
}

/** Each key of `keys` is read through every node in `nodes` (pipelined per node) and must equal the model. */
async function checkReads(label: string, keys: string[], nodes: string[] = clients.live()): Promise<void> {
  await Promise.all(
    nodes.map(async (name) => {
      const o = await attempt(name, `pipelined GET of ${keys.length} keys`, (r) => {
        const p = r.pipeline();
        for (const k of keys) p.get(k);
        return p.exec();
      });
      if (!o.ok) return;
      const bad: string[] = [];
      (o.value ?? []).forEach(([err, value], i) => {
        const key = keys[i]!;
        const want = expected.get(key) ?? null;
        if (err !== null) note(failures, `${label}: GET ${key} via ${name} (pipelined) failed: ${errorText(err)}`);
        else if (value !== want) bad.push(`${key}=${JSON.stringify(value)} expected ${JSON.stringify(want)} (chain ${chainOf(key).join('>')})`);
      });
      if (bad.length > 0) note(problems, `${label}: ${bad.length} wrong reads via ${name}: ${bad.slice(0, 8).join('; ')}`);
    }),
  );
}

function checkLinearizable(label: string, ops: Op[]): void {
  const result = checkHistory(ops);
  if (result.unknown) note(problems, `${label}: the linearizability check ran out of budget`);
  for (const v of result.violations.slice(0, 5)) note(problems, `${label}: stale or impossible read: ${describeViolation(v)}`);
}

// ---------------------------------------------------------------------------------------
// Cluster state, kills and restarts.

async function clusterInfo(name: string): Promise<ClusterInfo> {
  const r = await fetch(`${cluster.http(name)}/cluster`, { signal: AbortSignal.timeout(2000) });
  if (!r.ok) throw new Error(`GET /cluster on ${name}: HTTP ${r.status}`);
  return (await r.json()) as ClusterInfo;
}

function running(): string[] {
  return cluster.names.filter((n) => cluster.isRunning(n));
}

function statesOf(info: ClusterInfo): string {
  return `epoch ${info.epoch}: ` + info.nodes.map((n) => `${n.name}=${n.state}`).join(' ');
}

/** Polls /cluster on every running node until it holds; returns the wait in ms. */
async function waitViews(what: string, ok: (info: ClusterInfo[]) => boolean, timeoutMs: number): Promise<number> {
  const start = performance.now();
  let last = '';
  while (performance.now() - start < timeoutMs) {
    try {
      const infos = await Promise.all(running().map(clusterInfo));
      if (ok(infos)) return Math.round(performance.now() - start);
      last = infos.map((i) => `${i.self}: ${statesOf(i)}`).join(' | ');
    } catch (e) {
      last = errorText(e);
    }
    await sleep(50);
  }
  note(problems, `${what}: not reached in ${timeoutMs} ms; last /cluster: ${last}`);
  throw new Error(await report(`${what} timed out`));
}

/** Every running node reports every node 'up', all at one epoch. */
function waitAllUp(): Promise<number> {
  return waitViews(
    'all nodes up on every node',
    (infos) => infos.every((i) => i.nodes.every((n) => n.state === 'up') && i.epoch === infos[0]!.epoch),
    30_000,
  );
}

/** Every running node has noticed the victim is gone. */
function waitNoticed(victim: string): Promise<number> {
  return waitViews(
    `${victim} marked not up`,
    (infos) => infos.every((i) => i.nodes.find((n) => n.name === victim)?.state !== 'up'),
    15_000,
  );
}

async function crash(victim: string): Promise<void> {
  await clients.close(victim);
  await cluster.kill(victim);
  note(events, `SIGKILL ${victim}`);
}

async function recover(victim: string): Promise<void> {
  const start = performance.now();
  await cluster.startNode(victim);
  await clients.open(victim);
  note(events, `restarted ${victim} (healthy after ${Math.round(performance.now() - start)} ms)`);
}

/** Restart, then wait for every node to see every node up again. */
async function recoverAndWait(victim: string): Promise<void> {
  await recover(victim);
  const ms = await waitAllUp();
  note(events, `all up again after ${victim} returned (${ms} ms after it was healthy)`);
  timings.push(`${phase}: ${victim} healthy -> all up on every node: ${ms} ms`);
}

/** Writes the evidence (failures, problems, /cluster of every node, node logs) and returns a summary. */
async function report(title: string): Promise<string> {
  const views: string[] = [];
  for (const name of cluster.names) {
    if (!cluster.isRunning(name)) {
      views.push(`${name}: not running`);
      continue;
    }
    try {
      const info = await clusterInfo(name);
      const notReady = info.local.filter((l) => !l.ready || l.pending > 0);
      views.push(`${name}: ${statesOf(info)}; partitions ${JSON.stringify(notReady.length > 0 ? info.local : info.local.map((l) => [l.partition, l.committed]))}`);
    } catch (e) {
      views.push(`${name}: /cluster failed: ${errorText(e)}`);
    }
  }
  const head = (xs: string[], n: number): string => xs.slice(0, n).join('\n  ') + (xs.length > n ? `\n  ... (${xs.length} in all)` : '');
  const summary = [
    `${title} (seed ${SEED}, PHASES_SEED=${SEED} reproduces the keys and schedule)`,
    `failed operations (${failures.length}):\n  ${head(failures, 25)}`,
    `wrong answers (${problems.length}):\n  ${head(problems, 25)}`,
    `events:\n  ${head(events, 40)}`,
    `/cluster now:\n  ${views.join('\n  ')}`,
  ].join('\n');
  const logs = cluster.names.map((n) => `---- ${n} (last ${Math.min(5000, cluster.output.get(n)?.length ?? 0)} lines) ----\n${(cluster.output.get(n) ?? []).join('\n')}`);
  const file = join(tmpdir(), `chainkv-phases-${process.pid}-${Date.now()}.log`);
  writeFileSync(file, `${summary}\n\nall failures:\n${failures.join('\n')}\n\nall problems:\n${problems.join('\n')}\n\n${logs.join('\n')}\n`);
  const tails = cluster.names.map((n) => `---- ${n} ----\n${(cluster.output.get(n) ?? []).slice(-12).join('\n')}`);
  return `${summary}\nlog tails:\n${tails.join('\n')}\nfull evidence and logs: ${file}`;
}

/** Ends a phase: nothing failed and nothing was wrong, or the whole evidence. */
async function assertClean(t: TestContext): Promise<void> {
  const ms = (performance.now() - phaseStart) / 1000;
  const line = `${phase}: ${ms.toFixed(1)} s, ${opCount} client operations, slowest ${Math.round(slowest.ms)} ms (${slowest.what}), ${expected.size} pairs in the model`;
  timings.push(line);
  t.diagnostic(line);
  if (failures.length + problems.length > 0) assert.fail(await report(`${phase}: not clean`));
}

let phaseStart = 0;
function begin(name: string): void {
  phase = name;
  phaseStart = performance.now();
  opCount = 0;
  slowest = { ms: 0, what: '' };
}

// ---------------------------------------------------------------------------------------
// Keys and values.

let serial = 0;
function newKey(prefix: string): string {
  let k: string;
  do k = `${prefix}-${Math.floor(rnd.next() * 2 ** 32).toString(16)}`;
  while (expected.has(k) || deleted.has(k));
  return k;
}

function newValue(tag: string): string {
  return `${tag}#${++serial}`;
}

/** n random keys (n exactly), with at least `perPartition` of them in every partition. */
function newKeys(prefix: string, n: number, perPartition = 0): string[] {
  if (n < perPartition * ring.size) throw new RangeError(`test bug: ${n} keys cannot cover ${ring.size} partitions ${perPartition} times`);
  const keys: string[] = [];
  const taken = new Set<string>();
  const counts = new Array<number>(ring.size).fill(0);
  while (keys.length < n) {
    const k = newKey(prefix);
    const p = ring.partitionOf(k);
    const deficit = counts.reduce((sum, c) => sum + Math.max(0, perPartition - c), 0);
    if (taken.has(k) || (counts[p]! >= perPartition && n - keys.length <= deficit)) continue;
    taken.add(k);
    counts[p]!++;
    keys.push(k);
  }
  return keys;
}

function sample<T>(items: readonly T[], n: number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(rnd.next() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, n);
}

/** Runs `work` over items with one sequential lane per node, all lanes at once. */
async function lanes<T>(nodes: string[], items: T[], work: (node: string, item: T) => Promise<void>): Promise<void> {
  await Promise.all(
    nodes.map(async (node, lane) => {
      for (let i = lane; i < items.length; i += nodes.length) await work(node, items[i]!);
    }),
  );
}

// ---------------------------------------------------------------------------------------

before(async () => {
  cluster = await TestCluster.create();
  ring = new Ring(cluster.names, 3);
  await cluster.start();
  for (const name of cluster.names) await clients.open(name);
  await waitAllUp();
});

after(async () => {
  clients.closeAll();
  if (timings.length > 0) process.stderr.write(`phases (seed ${SEED}):\n  ${timings.join('\n  ')}\n`);
  await cluster?.destroy();
});

test('phase 1: insert, query, delete through each node; @ and * exact; each key on its three chain nodes', async (t) => {
  begin('phase 1');
  const names = cluster.names;
  const keys = newKeys('p1', 400, 3);
  // Insert, one operation at a time, key i through node i mod 5.
  for (const [i, key] of keys.entries()) {
    const value = newValue(`p1-${i}`);
    if (await put(names[i % 5]!, key, value)) expected.set(key, value);
  }
  // Query every key through every node.
  for (const name of names) for (const key of keys) await expectGet(name, key, expected.get(key) ?? null, 'after insert');
  await checkScans('after insert');
  // Placement: each key is on exactly the three nodes of its chain.
  const holders = new Map<string, string[]>();
  for (const name of names) {
    for (const k of (await scan(name, 'LOCALSCAN')) ?? []) holders.set(k[0], [...(holders.get(k[0]) ?? []), name]);
  }
  for (const key of keys) {
    const want = [...chainOf(key)].sort().join(',');
    const got = (holders.get(key) ?? []).sort().join(',');
    if (got !== want) note(problems, `${key} is on [${got}], its chain is [${want}]`);
  }
  // Overwrite a quarter, through a different node than the insert.
  for (const [i, key] of keys.slice(0, 100).entries()) {
    const value = newValue(`p1-over-${i}`);
    if (await put(names[(i + 2) % 5]!, key, value)) expected.set(key, value);
  }
  // Delete another quarter through each node; deleted keys read as absent everywhere.
  const victims = keys.slice(100, 200);
  for (const [i, key] of victims.entries()) {
    const o = await del(names[(i + 1) % 5]!, key);
    if (o.ok && o.value !== 1) note(problems, `DEL ${key} via ${names[(i + 1) % 5]} answered ${o.value}, expected 1`);
    if (o.ok) {
      expected.delete(key);
      deleted.add(key);
    }
  }
  for (const name of names) for (const key of [...victims, ...keys.slice(0, 100)]) await expectGet(name, key, expected.get(key) ?? null, 'after delete');
  for (const [i, key] of victims.slice(0, 10).entries()) {
    const o = await del(names[i % 5]!, key);
    if (o.ok && o.value !== 0) note(problems, `second DEL ${key} answered ${o.value}, expected 0`);
  }
  await checkScans('after delete');
  await assertClean(t);
});

test('phase 2: concurrent operations on distinct keys through all nodes at once', async (t) => {
  begin('phase 2');
  const names = cluster.names;
  const own = names.map((name) => ({ name, keys: newKeys(`p2-${name}`, 100) }));
  // Five clients, one per node, each inserting its own 100 keys, all at once.
  await Promise.all(
    own.map(async ({ name, keys }) => {
      for (const [i, key] of keys.entries()) {
        const value = newValue(`p2-${name}-${i}`);
        if (await put(name, key, value)) expected.set(key, value);
      }
    }),
  );
  // Read back through the four other nodes, every read in flight at once.
  await Promise.all(
    own.flatMap(({ name, keys }) =>
      names.filter((n) => n !== name).flatMap((other) => keys.map((key) => expectGet(other, key, expected.get(key) ?? null, `inserted via ${name}`))),
    ),
  );
  // Concurrently: each client overwrites 20 of its keys and deletes 20 others, through other nodes.
  await Promise.all(
    own.map(async ({ name, keys }, c) => {
      for (const [i, key] of keys.slice(0, 20).entries()) {
        const value = newValue(`p2-over-${name}-${i}`);
        if (await put(names[(c + 1) % 5]!, key, value)) expected.set(key, value);
      }
      for (const key of keys.slice(20, 40)) {
        const o = await del(names[(c + 2) % 5]!, key);
        if (o.ok && o.value !== 1) note(problems, `DEL ${key} answered ${o.value}, expected 1`);
        if (o.ok) {
          expected.delete(key);
          deleted.add(key);
        }
      }
    }),
  );
  await Promise.all(
    own.flatMap(({ name, keys }) =>
      names.filter((n) => n !== name).flatMap((other) => keys.slice(0, 40).map((key) => expectGet(other, key, expected.get(key) ?? null, 'after overwrite/delete'))),
    ),
  );
  await checkScans('end of phase 2');
  await assertClean(t);
});

test('phase 3: concurrent writes and reads of the same 10 keys through all nodes are linearizable', async (t) => {
  begin('phase 3');
  const names = cluster.names;
  const hot = newKeys('p3-hot', 10, 2);
  const written = new Map<string, Set<string>>(hot.map((k) => [k, new Set<string>()]));
  const history = new HistoryRecorder();
  const deadline = performance.now() + 3000;
  let count = 0;
  // Ten clients, two per node, each on its own node.
  await Promise.all(
    Array.from({ length: 10 }, async (_, c) => {
      const node = names[c % 5]!;
      const my = new Prng(SEED ^ (c + 1) * 0x9e3779b9);
      while (performance.now() < deadline) {
        const key = my.pick(hot);
        count++;
        if (my.chance(0.5)) {
          const value = newValue(`p3-c${c}`);
          written.get(key)!.add(value);
          const h = history.invoke(c, 'put', key, value);
          if (await put(node, key, value)) history.ok(h);
          else history.info(h);
        } else {
          const h = history.invoke(c, 'get', key, null);
          const o = await get(node, key);
          if (o.ok) history.ok(h, o.value);
          else history.info(h);
        }
      }
    }),
  );
  // Every node agrees on the final value of each key, and it is one of the written values.
  for (const key of hot) {
    const seen = new Map<string, string | null>();
    for (const [i, name] of names.entries()) {
      const h = history.invoke(100 + i, 'get', key, null);
      const o = await get(name, key);
      if (!o.ok) {
        history.info(h);
        continue;
      }
      history.ok(h, o.value);
      seen.set(name, o.value);
    }
    const values = new Set(seen.values());
    const [final] = values;
    if (values.size !== 1) note(problems, `nodes disagree on ${key}: ${JSON.stringify([...seen])}`);
    else if (final === null || final === undefined || !written.get(key)!.has(final)) note(problems, `final value of ${key} is ${JSON.stringify(final)}, never written`);
    else expected.set(key, final);
  }
  const ops = history.finish();
  t.diagnostic(`phase 3: ${count} operations on 10 keys, ${ops.filter((o) => o.status === 'ok').length} ok`);
  checkLinearizable('phase 3', ops);
  await checkScans('end of phase 3');
  await assertClean(t);
});

test('phase 4: a node crashes before each kind of operation and recovers after it, with the latest data', async (t) => {
  begin('phase 4');
  const rounds: { op: 'insert' | 'query' | 'delete'; victim: string }[] = [
    { op: 'insert', victim: '5558' },
    { op: 'query', victim: '5562' },
    { op: 'delete', victim: '5554' },
  ];
  for (const { op, victim } of rounds) {
    phase = `phase 4 (${op}, ${victim} down)`;
    await crash(victim);
    const live = clients.live();
    const touched: string[] = [];
    if (op === 'insert') {
      // 300 new keys and 100 overwrites of older keys, through the four remaining nodes.
      const fresh = newKeys('p4', 300, 2);
      const over = sample([...expected.keys()], 100);
      const items = [...fresh, ...over].map((key) => ({ key, value: newValue(`p4-${victim}`) }));
      await lanes(live, items, async (node, { key, value }) => {
        if (await put(node, key, value)) expected.set(key, value);
      });
      touched.push(...items.map((i) => i.key));
    } else if (op === 'query') {
      // Every pair of the model, and some deleted keys, through the remaining nodes.
      const keys = [...expected.keys(), ...sample([...deleted], 50)];
      await lanes(live, keys, (node, key) => expectGet(node, key, expected.get(key) ?? null, `query with ${victim} down`));
      touched.push(...sample(keys, 200));
    } else {
      // 200 deletes of existing keys, at least 100 of them on the victim's chains.
      const onVictim = [...expected.keys()].filter((k) => chainOf(k).includes(victim));
      const others = [...expected.keys()].filter((k) => !chainOf(k).includes(victim));
      const keys = [...sample(onVictim, 150), ...sample(others, 50)];
      await lanes(live, keys, async (node, key) => {
        const o = await del(node, key);
        if (o.ok && o.value !== 1) note(problems, `DEL ${key} via ${node} with ${victim} down answered ${o.value}, expected 1`);
        if (o.ok) {
          expected.delete(key);
          deleted.add(key);
        }
      });
      touched.push(...keys);
    }
    await waitNoticed(victim);
    await recoverAndWait(victim);
    // The recovered node answers with the latest data, missed writes and deletes included.
    await checkReads(`${victim} after missing ${op}s`, touched, [victim]);
    await checkReads(`all keys via ${victim} after recovery`, [...expected.keys()], [victim]);
    await checkScans(`after ${op} round`);
    if (failures.length + problems.length > 0) break;
  }
  phase = 'phase 4';
  await assertClean(t);
});

interface LoadResult {
  history: HistoryRecorder;
  /** Per key of this phase: the last acknowledged value (single writer per key). */
  last: Map<string, string>;
  /** Keys with a write of unknown outcome. */
  uncertain: Set<string>;
  count: number;
}

/**
 * Concurrent clients until `stop()` says so: each owns some of `keys` and overwrites them;
 * every client reads any key of `keys` (history checked) and older pairs of the model, which
 * nobody writes during the run and must read exactly as the model says. Each operation goes
 * to a random node among those with an open connection at that moment.
 */
async function load(tag: string, workers: number, keys: string[], stop: () => boolean): Promise<LoadResult> {
  const history = new HistoryRecorder();
  const last = new Map<string, string>();
  const uncertain = new Set<string>();
  const stable = [...expected];
  let count = 0;
  // Every key is written once before the mixed workload.
  const lists = Array.from({ length: workers }, (_, w) => keys.filter((_k, i) => i % workers === w));
  const writeOne = async (w: number, key: string, my: Prng): Promise<void> => {
    const value = newValue(`${tag}-w${w}`);
    const node = my.pick(clients.live());
    const h = history.invoke(w, 'put', key, value);
    count++;
    if (await put(node, key, value)) {
      history.ok(h);
      last.set(key, value);
    } else {
      history.info(h);
      uncertain.add(key);
    }
  };
  await Promise.all(
    lists.map(async (mine, w) => {
      const my = new Prng(SEED ^ (w + 17) * 0x85ebca6b);
      for (const key of mine) await writeOne(w, key, my);
      while (!stop()) {
        const x = my.next();
        if (x < 0.45) {
          await writeOne(w, my.pick(mine), my);
        } else if (x < 0.85) {
          const key = my.pick(keys);
          const node = my.pick(clients.live());
          const h = history.invoke(w, 'get', key, null);
          count++;
          const o = await get(node, key);
          if (o.ok) history.ok(h, o.value);
          else history.info(h);
        } else if (stable.length > 0) {
          const [key, value] = my.pick(stable);
          count++;
          await expectGet(my.pick(clients.live()), key, value, 'older pair during failures');
        }
      }
    }),
  );
  return { history, last, uncertain, count };
}

/** After a load: every acknowledged write is read back through every node, and the model updated. */
async function settle(label: string, keys: string[], result: LoadResult): Promise<void> {
  for (const key of keys) {
    const v = result.last.get(key);
    if (result.uncertain.has(key)) continue; // reported as a failed operation already
    if (v === undefined) note(problems, `test bug: ${key} never written`);
    else expected.set(key, v);
  }
  await checkReads(`${label}: acknowledged writes`, keys.filter((k) => !result.uncertain.has(k)));
  checkLinearizable(label, result.history.finish());
}

test('phase 5: concurrent operations while a node crashes and recovers mid-run', async (t) => {
  begin('phase 5');
  const victim = '5560';
  const keys = newKeys('p5', 400, 3);
  const start = performance.now();
  let done = false;
  const running = load('p5', 10, keys, () => done);
  try {
    await sleep(2000);
    await crash(victim);
    await waitNoticed(victim);
    await sleep(Math.max(0, start + 5000 - performance.now()));
    await recover(victim);
    const ms = await waitAllUp();
    timings.push(`phase 5: ${victim} healthy -> all up on every node: ${ms} ms (under load)`);
    note(events, `all up again (${ms} ms)`);
    await sleep(Math.max(1000, start + 8000 - performance.now()));
  } finally {
    done = true;
    await running.catch(() => undefined);
  }
  const result = await running;
  t.diagnostic(`phase 5: ${result.count} operations by 10 clients`);
  await settle('phase 5', keys, result);
  // The recovered node's '@' is exactly its share; '*' and '@' everywhere match the model.
  await checkScans('end of phase 5');
  await assertClean(t);
});

test('phase 6: rolling failures: every node crashes and recovers in turn under concurrent load', async (t) => {
  begin('phase 6');
  const keys = newKeys('p6', 300, 3);
  let done = false;
  const running = load('p6', 8, keys, () => done);
  try {
    await sleep(500);
    for (const victim of ['5554', '5556', '5558', '5560', '5562']) {
      await crash(victim);
      await waitNoticed(victim);
      await sleep(200);
      await recoverAndWait(victim);
      await sleep(300);
    }
  } finally {
    done = true;
    await running.catch(() => undefined);
  }
  const result = await running;
  t.diagnostic(`phase 6: ${result.count} operations by 8 clients`);
  await settle('phase 6', keys, result);
  // Every acknowledged write on all three replicas ('@' on each node) and in '*'.
  await checkScans('end of phase 6');
  await assertClean(t);
});
