import { preload } from './generator.ts';
import { sleep } from './procs.ts';
import { RespConnection, RespError } from './resp.ts';
import type { ChainkvCluster } from './systems.ts';
import { ChainkvTarget, Keyspace } from './targets.ts';
import type { ValuePool } from './targets.ts';

/**
 * Recovery measurements on a chainkv cluster: catch-up speed of a node that was SIGKILLed
 * while writes went on, and the longest gap between successful operations on one key when a
 * member of its chain (head, middle or tail) is SIGKILLed and later restarted.
 */

export interface CatchupResult {
  victim: string;
  /** Keys loaded before the kill. */
  loaded: number;
  /** Keys written while the victim was down. */
  writtenWhileDown: number;
  /** Of those, the ones in the victim's partitions (what it has to copy). */
  toCopy: number;
  /** Spawn of the restarted process until every node shows it 'up'. */
  restartToUpS: number;
  /** First /health answer of the restarted process until every node shows it 'up'. */
  healthToUpS: number;
  /** toCopy / restartToUpS. */
  keysPerSec: number;
  /** toCopy / healthToUpS (without process start-up). */
  keysPerSecAfterBoot: number;
  loadS: number;
  writeWhileDownS: number;
}

export async function measureCatchup(
  cluster: ChainkvCluster,
  values: ValuePool,
  n: number,
  log: (s: string) => void,
): Promise<CatchupResult> {
  // The victim: the node holding the largest share of the ring (the most to copy).
  const share = new Map<string, number>();
  for (let p = 0; p < cluster.ring.size; p++) {
    for (const name of cluster.ring.canonicalChain(p)) share.set(name, (share.get(name) ?? 0) + cluster.ring.share(p));
  }
  const victim = [...share.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  const keys = new Keyspace(2 * n, 'cu');
  const target = await ChainkvTarget.open(cluster, keys, { routing: 'smart', client: 'mini', connsPerNode: 2, label: 'catch-up loader' });
  try {
    log(`catch-up: loading ${n} keys`);
    const loadS = await preload(target, n, values, { batch: 100, parallel: 16 });
    log(`catch-up: loaded in ${loadS.toFixed(1)} s; SIGKILL ${victim} (holds ${(share.get(victim)! * 100).toFixed(1)}% of the keys)`);
    await cluster.killNode(victim);
    const t0 = Date.now();
    while (!(await cluster.othersSee(victim, 'down'))) {
      if (Date.now() - t0 > 30_000) throw new Error(`catch-up: the others did not mark ${victim} down within 30 s`);
      await sleep(20);
    }
    // Writes go to the heads of the current serving chains: route through the survivors.
    target.close();
    const survivors = await ChainkvTarget.open(cluster, keys, { routing: 'plain', client: 'mini', connsPerNode: 2, label: 'catch-up writer', only: cluster.names.filter((x) => x !== victim) });
    let writeS: number;
    try {
      log(`catch-up: writing ${n} more keys while ${victim} is down`);
      writeS = await preload(survivors, n, values, { batch: 100, parallel: 16, from: n });
    } finally {
      survivors.close();
    }
    let toCopy = 0;
    for (let i = n; i < 2 * n; i++) if (cluster.chainOf(keys.key(i)).includes(victim)) toCopy++;
    // Everything the victim already had before the kill is on its disk; what it must copy is
    // the writes made while it was down in its partitions.
    log(`catch-up: restarting ${victim} (${toCopy} keys to copy)`);
    const tSpawn = performance.now();
    await cluster.startNode(victim);
    const tHealth = performance.now();
    const deadline = Date.now() + 300_000;
    for (;;) {
      const views = await Promise.all(cluster.names.map((x) => cluster.clusterView(x)));
      if (views.every((v) => v !== undefined && v.nodes.find((y) => y.name === victim)?.state === 'up')) break;
      if (Date.now() > deadline) throw new Error(`catch-up: ${victim} not up on every node within 300 s`);
      await sleep(20);
    }
    const tUp = performance.now();
    await cluster.waitAllUp(60_000);
    const restartToUpS = (tUp - tSpawn) / 1000;
    const healthToUpS = (tUp - tHealth) / 1000;
    return {
      victim,
      loaded: n,
      writtenWhileDown: n,
      toCopy,
      restartToUpS,
      healthToUpS,
      keysPerSec: toCopy / restartToUpS,
      keysPerSecAfterBoot: toCopy / healthToUpS,
      loadS,
      writeWhileDownS: writeS,
    };
  } finally {
    target.close();
  }
}

export interface GapResult {
  role: 'head' | 'middle' | 'tail';
  node: string;
  key: string;
  via: string;
  /** Whether the killed node was the configuration (Raft) leader: its death adds an election. */
  wasLeader: boolean;
  /** Longest time between two successful operations from the kill until the restart. */
  killGapMs: number;
  /** Longest gap from the restart until the node is up on every node plus one second. */
  rejoinGapMs: number;
  /** Time from the kill until the node was marked down on every other node. */
  markedDownMs: number;
  ops: number;
  errors: number;
  errorSamples: string[];
  /** Reads that did not return the value of the write just before them (must be 0). */
  staleReads: number;
  /** Restart (spawn) until the node is up on every node. */
  rejoinS: number;
  /** Spawn until the restarted process answers /health (storage opened, state reloaded). */
  bootS: number;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no reply within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/**
 * One client, a tight loop of SET k v_n / GET k (expecting v_n) through a node outside the
 * key's chain (so the client's own connection survives; that node routes and retries). After
 * `beforeMs` the chosen chain member is SIGKILLed; `afterMs` later it is restarted; the loop
 * goes on until it is up everywhere plus one second.
 */
export async function measureGap(
  cluster: ChainkvCluster,
  role: 'head' | 'middle' | 'tail',
  log: (s: string) => void,
  opts: { key?: string; beforeMs?: number; afterMs?: number } = {},
): Promise<GapResult> {
  const key = opts.key ?? 'a';
  const chain = cluster.chainOf(key);
  const node = role === 'head' ? chain[0]! : role === 'tail' ? chain[chain.length - 1]! : chain[1]!;
  const via = cluster.names.find((x) => !chain.includes(x))!;
  const beforeMs = opts.beforeMs ?? 1500;
  const afterMs = opts.afterMs ?? 3000;
  await cluster.waitAllUp(120_000);
  const conn = await RespConnection.open('127.0.0.1', cluster.node(via).respPort);
  const okTimes: number[] = [];
  let errors = 0;
  const errorSamples: string[] = [];
  let staleReads = 0;
  let ops = 0;
  let stop = false;
  let n = 0;
  const loop = async (): Promise<void> => {
    while (!stop) {
      const v = `v${++n}`;
      try {
        const r = await withTimeout(conn.send(['SET', key, v]), 10_000);
        if (r !== 'OK') throw r instanceof RespError ? r : new Error(`SET: ${JSON.stringify(r)}`);
        okTimes.push(performance.now());
        ops++;
        const g = await withTimeout(conn.send(['GET', key]), 10_000);
        if (g instanceof RespError) throw g;
        const got = Buffer.isBuffer(g) ? g.toString() : String(g);
        if (got !== v) staleReads++;
        okTimes.push(performance.now());
        ops++;
      } catch (err) {
        errors++;
        if (errorSamples.length < 5) errorSamples.push((err as Error).message);
        await sleep(1);
      }
    }
  };
  const running = loop();
  await sleep(beforeMs);
  const wasLeader = (await cluster.leader()) === node;
  log(`unavailability: SIGKILL ${role} ${node}${wasLeader ? ' (the configuration leader)' : ''} of "${key}" (chain ${chain.join(' -> ')}, client via ${via})`);
  const tKill = performance.now();
  await cluster.killNode(node);
  let markedDownMs = NaN;
  const downWatch = (async () => {
    while (performance.now() - tKill < afterMs) {
      if (await cluster.othersSee(node, 'down')) {
        markedDownMs = performance.now() - tKill;
        return;
      }
      await sleep(10);
    }
  })();
  await sleep(afterMs);
  await downWatch;
  const tRestart = performance.now();
  await cluster.startNode(node);
  const tHealth = performance.now();
  await cluster.waitAllUp(300_000, 20);
  const tUp = performance.now();
  await sleep(1000);
  stop = true;
  await running;
  conn.close();
  // Longest time between consecutive successes, counted from the last success before `from`.
  const gapIn = (from: number, to: number): number => {
    let prev = from;
    for (const t of okTimes) if (t <= from) prev = t;
    let max = 0;
    for (const t of okTimes) {
      if (t <= from) continue;
      if (t > to) {
        max = Math.max(max, Math.min(t, to) - prev);
        return max;
      }
      max = Math.max(max, t - prev);
      prev = t;
    }
    return Math.max(max, to - prev);
  };
  return {
    role,
    node,
    key,
    via,
    wasLeader,
    killGapMs: gapIn(tKill, tRestart),
    rejoinGapMs: gapIn(tRestart, tUp + 1000),
    markedDownMs,
    ops,
    errors,
    errorSamples,
    staleReads,
    rejoinS: (tUp - tRestart) / 1000,
    bootS: (tHealth - tRestart) / 1000,
  };
}
