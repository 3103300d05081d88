/**
 * Where a chainkv node's resources go, measured on a fresh local five-node cluster (default
 * names) with the benchmark's generator. bench/analysis.md cites it.
 *
 *   node --import tsx scripts/probe.ts writes [--concurrency 64] [--duration 6] [--skip-preload]
 *     Closed-loop writes through the ring-aware client (after preloading the 100,000 keys, as
 *     the benchmark does, unless --skip-preload); per write: peer messages and fdatasyncs (from each
 *     node's /metrics), write and read system calls (/proc/<pid>/io) and CPU time, user and
 *     system (/proc/<pid>/stat), per node; the mean wait of a group commit for its fdatasync
 *     (chainkv_fsync_wait_seconds); and the share of the core's event-loop turns that
 *     took 5 ms or more, and 10 ms or more (chainkv_turn_duration_seconds).
 *   node --import tsx scripts/probe.ts timeline [--duration 6]
 *     Writes one at a time (c=1) with every node tracing its turns (CHAINKV_TURN_TRACE,
 *     src/runtime/turn-trace.ts), then follows each write through the traces: the median and
 *     p90 of each stage of its path (head, hop, middle, hop, tail, fdatasync, answer, reply).
 *   node --import tsx scripts/probe.ts memory [--keys 1000000]
 *   Either with --durability process: the nodes without fdatasync (default fsync).
 *     Loads the keys as the benchmark's memory phase does; per node: peak RSS, anonymous and
 *     file-backed; for the busiest node, V8's heap at its RSS peak (sampled from /metrics) and
 *     LMDB's pages per database after the load.
 */
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { open } from 'lmdb';
import { preload, runPoint } from '../bench/generator.ts';
import { MemMonitor, installCleanup, sleep } from '../bench/procs.ts';
import { ChainkvCluster } from '../bench/systems.ts';
import { ChainkvTarget, Keyspace, ValuePool } from '../bench/targets.ts';

const { positionals, values: args } = parseArgs({
  allowPositionals: true,
  options: {
    concurrency: { type: 'string', default: '64' },
    duration: { type: 'string', default: '6' },
    keys: { type: 'string', default: '1000000' },
    'skip-preload': { type: 'boolean', default: false },
    durability: { type: 'string', default: 'fsync' },
  },
});
const mode = positionals[0];
if ((mode !== 'writes' && mode !== 'memory' && mode !== 'timeline') || (args.durability !== 'fsync' && args.durability !== 'process')) {
  process.stderr.write('usage: scripts/probe.ts writes [--concurrency 64] [--duration 6] [--skip-preload] | timeline [--duration 6] | memory [--keys 1000000]; [--durability fsync|process]\n');
  process.exit(2);
}

installCleanup();
// The nodes inherit the environment: each writes its trace when it exits.
const traceDir = mode === 'timeline' ? mkdtempSync(join(tmpdir(), 'chainkv-trace-')) : undefined;
if (traceDir !== undefined) process.env.CHAINKV_TURN_TRACE = traceDir;
// CHAINKV_PROBE_CPU_PROF=DIR: run the nodes under node --cpu-prof, profiles in DIR/<name>.
const cluster = await ChainkvCluster.start({ durability: args.durability, cpuProfDir: process.env.CHAINKV_PROBE_CPU_PROF });
let timelineRun: { p50: number; ops: number } | undefined;
try {
  if (mode === 'writes') await probeWrites();
  else if (mode === 'timeline') timelineRun = await runTimelineWrites();
  else await probeMemory();
} finally {
  await cluster.stop();
}
if (traceDir !== undefined && timelineRun !== undefined) reportTimeline(traceDir, timelineRun);

async function metricsText(node: string): Promise<string> {
  return (await fetch(`${cluster.http(node)}/metrics`)).text();
}

function metricIn(text: string, name: string, labels = ''): number {
  return Number(new RegExp(`^${name}\\{${labels}[^}]*\\} (\\S+)`, 'm').exec(text)?.[1] ?? 0);
}

async function metric(node: string, name: string): Promise<number> {
  return metricIn(await metricsText(node), name);
}

interface ProcSample {
  name: string;
  messagesIn: number;
  fsyncs: number;
  turns: number;
  turnsUnder5ms: number;
  turnsUnder10ms: number;
  syncWaitS: number;
  writeCalls: number;
  readCalls: number;
  userS: number;
  sysS: number;
  /** The main thread (the event loop) only, from /proc/<pid>/task/<pid>/schedstat: time on a CPU, and time runnable but waiting for one. */
  runS: number;
  runQueueS: number;
  /** The main thread's involuntary context switches (preemptions). */
  preempted: number;
  at: number;
}

async function sample(): Promise<ProcSample[]> {
  const pids = new Map(cluster.processes().map((p) => [p.label.split(' ').pop()!, p.pid]));
  const out: ProcSample[] = [];
  for (const name of cluster.names) {
    const pid = pids.get(name)!;
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const statText = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const stat = statText.slice(statText.lastIndexOf(')') + 2).split(' ');
    const sched = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ');
    const status = readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8');
    const text = await metricsText(name); // one snapshot, so that counts and buckets agree
    out.push({
      name,
      messagesIn: metricIn(text, 'chainkv_peer_messages_in_total'),
      fsyncs: metricIn(text, 'chainkv_fsync_batches_total'),
      turns: metricIn(text, 'chainkv_turn_duration_seconds_count'),
      turnsUnder5ms: metricIn(text, 'chainkv_turn_duration_seconds_bucket', 'le="0.005",'),
      turnsUnder10ms: metricIn(text, 'chainkv_turn_duration_seconds_bucket', 'le="0.01",'),
      syncWaitS: metricIn(text, 'chainkv_fsync_wait_seconds_sum'),
      writeCalls: Number(/syscw: (\d+)/.exec(io)?.[1]),
      readCalls: Number(/syscr: (\d+)/.exec(io)?.[1]),
      userS: Number(stat[11]) / 100,
      sysS: Number(stat[12]) / 100,
      runS: Number(sched[0]) / 1e9,
      runQueueS: Number(sched[1]) / 1e9,
      preempted: Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1]),
      at: performance.now() / 1000,
    });
  }
  return out;
}

async function probeWrites(): Promise<void> {
  const keyCount = 100_000;
  const values = new ValuePool();
  const t = await ChainkvTarget.open(cluster, new Keyspace(keyCount), { routing: 'smart', client: 'mini', connsPerNode: 4, label: 'probe' });
  try {
    if (!args['skip-preload']) await preload(t, keyCount, values);
    const before = await sample();
    const concurrency = Number(args.concurrency);
    const r = await runPoint(t, { workload: 'write', concurrency, durationMs: Number(args.duration) * 1000, warmupMs: 0, keyCount }, { cores: 2, serverPids: () => [], values });
    const after = await sample();
    const per = (f: (s: ProcSample) => number, scale = 1): string[] => after.map((a, i) => ((f(a) - f(before[i]!)) * scale / r.ops).toFixed(2));
    console.log(`writes at c=${concurrency}: ${r.ops} in ${(r.measuredMs / 1000).toFixed(1)} s, ${Math.round(r.opsPerSec)}/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, p999 ${r.p999.toFixed(2)} ms`);
    console.log(`per write, by node (${cluster.names.join(' ')}):`);
    console.log(`  peer messages received   ${per((s) => s.messagesIn).join(' ')}   (cluster: ${sum(per((s) => s.messagesIn)).toFixed(2)})`);
    console.log(`  fdatasyncs               ${per((s) => s.fsyncs).join(' ')}   (cluster: ${sum(per((s) => s.fsyncs)).toFixed(2)})`);
    console.log(`  write system calls       ${per((s) => s.writeCalls).join(' ')}   (cluster: ${sum(per((s) => s.writeCalls)).toFixed(2)})`);
    console.log(`  read system calls        ${per((s) => s.readCalls).join(' ')}   (cluster: ${sum(per((s) => s.readCalls)).toFixed(2)})`);
    console.log(`  user CPU, µs             ${per((s) => s.userS, 1e6).join(' ')}   (cluster: ${sum(per((s) => s.userS, 1e6)).toFixed(0)})`);
    console.log(`  system CPU, µs           ${per((s) => s.sysS, 1e6).join(' ')}   (cluster: ${sum(per((s) => s.sysS, 1e6)).toFixed(0)})`);
    // Turns are the unit of latency: a request waits for every turn it crosses.
    const delta = (i: number, f: (s: ProcSample) => number): number => f(after[i]!) - f(before[i]!);
    const syncWait = after.map((_, i) => {
      const n = delta(i, (s) => s.fsyncs);
      return n === 0 ? '-' : ((delta(i, (s) => s.syncWaitS) / n) * 1e6).toFixed(0);
    });
    console.log(`  fdatasync wait, mean µs  ${syncWait.join(' ')}   (chainkv_fsync_wait_seconds: from asking to release)`);
    console.log(`event-loop turns of the core, by node: count, and share of 5 ms or more / 10 ms or more:`);
    console.log(
      `  ${after
        .map((a, i) => {
          const n = delta(i, (s) => s.turns);
          const pct = (under: (s: ProcSample) => number): string => ((100 * (n - delta(i, under))) / Math.max(1, n)).toFixed(2);
          return `${a.name} ${n} ${pct((s) => s.turnsUnder5ms)}%/${pct((s) => s.turnsUnder10ms)}%`;
        })
        .join('   ')}`,
    );
    // A turn's wall time includes any time its process was runnable but not running: with more
    // runnable threads than cores, the scheduler preempts a node in the middle of a turn, and
    // every request in that turn (and every request queued behind it) waits.
    console.log(`the event loop's thread, by node: share of wall time on a CPU / runnable but waiting for one; preemptions per second:`);
    console.log(
      `  ${after
        .map((a, i) => {
          const wall = delta(i, (s) => s.at);
          const pct = (f: (s: ProcSample) => number): string => ((100 * delta(i, f)) / wall).toFixed(0);
          return `${a.name} ${pct((s) => s.runS)}%/${pct((s) => s.runQueueS)}% ${Math.round(delta(i, (s) => s.preempted) / wall)}`;
        })
        .join('   ')}`,
    );
  } finally {
    t.close();
  }
}

function sum(xs: string[]): number {
  return xs.reduce((n, x) => n + Number(x), 0);
}

async function probeMemory(): Promise<void> {
  const keys = Number(args.keys);
  const mon = new MemMonitor(200);
  for (const p of cluster.processes()) mon.watch(p.label, p.pid);
  mon.start();
  // The busiest node (holding the most keys: the default ring is lopsided): its heap at its RSS peak.
  const share = new Map<string, number>();
  for (let i = 0; i < 10_000; i++) {
    for (const n of cluster.ring.canonicalChain(cluster.ring.partitionOf(Buffer.from(`probe-${i}`)))) share.set(n, (share.get(n) ?? 0) + 1);
  }
  const busiest = [...cluster.names].sort((a, b) => (share.get(b) ?? 0) - (share.get(a) ?? 0))[0]!;
  let peak = { rss: 0, heapTotal: 0, heapUsed: 0, external: 0, spaces: [] as string[] };
  const poll = setInterval(() => {
    void (async () => {
      const rss = await metric(busiest, 'process_resident_memory_bytes');
      if (rss <= peak.rss) return;
      const text = await metricsText(busiest);
      const spaces = [...text.matchAll(/^nodejs_heap_space_size_(total|used)_bytes\{space="(\w+)"[^}]*\} (\S+)/gm)].filter((m) => Number(m[3]) >= 1 << 20).map((m) => `${m[2]} ${m[1]} ${(Number(m[3]) / 1048576).toFixed(0)}`);
      peak = { rss, heapTotal: metricIn(text, 'nodejs_heap_size_total_bytes'), heapUsed: metricIn(text, 'nodejs_heap_size_used_bytes'), external: metricIn(text, 'nodejs_external_memory_bytes'), spaces };
    })().catch(() => undefined);
  }, 300);
  const t = await ChainkvTarget.open(cluster, new Keyspace(keys), { routing: 'smart', client: 'mini', connsPerNode: 2, label: 'probe' });
  const t0 = performance.now();
  try {
    await preload(t, keys, new ValuePool());
  } finally {
    t.close();
  }
  console.log(`loaded ${keys} keys in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  await sleep(3000);
  clearInterval(poll);
  mon.stop();
  const MiB = (b: number): string => (b / 1024 / 1024).toFixed(0);
  for (const p of mon.results()) console.log(`${p.label}: peak RSS ${MiB(p.maxRssKb * 1024)} MiB (anonymous ${MiB(p.maxAnonKb * 1024)}, file ${MiB(p.maxFileKb * 1024)})`);
  console.log(`${busiest} at its RSS peak: V8 heap ${MiB(peak.heapTotal)} MiB (${MiB(peak.heapUsed)} used), external ${MiB(peak.external)} MiB; V8 spaces of 1 MiB or more, in MiB: ${peak.spaces.join(', ')}`);
  const env = open({ path: join(cluster.config.dataDir, busiest), readOnly: true, maxDbs: 128 });
  try {
    for (const name of env.getKeys()) {
      if (typeof name !== 'string') continue;
      const s = env.openDB({ name, keyEncoding: 'binary', encoding: 'binary' }).getStats() as { entryCount: number; treeLeafPageCount: number; treeBranchPageCount: number; overflowPages: number };
      const pages = s.treeLeafPageCount + s.treeBranchPageCount + s.overflowPages;
      console.log(`${busiest} LMDB ${name}: ${s.entryCount} entries, ${s.treeLeafPageCount} leaf pages (${(s.entryCount / Math.max(1, s.treeLeafPageCount)).toFixed(1)} per page), ${((pages * 4096) / 1e6).toFixed(1)} MB`);
    }
  } finally {
    await env.close();
  }
}

async function runTimelineWrites(): Promise<{ p50: number; ops: number }> {
  const keyCount = 100_000;
  const values = new ValuePool();
  const t = await ChainkvTarget.open(cluster, new Keyspace(keyCount), { routing: 'smart', client: 'mini', connsPerNode: 1, label: 'probe' });
  try {
    const r = await runPoint(t, { workload: 'write', concurrency: 1, durationMs: Number(args.duration) * 1000, warmupMs: 500, keyCount }, { cores: 2, serverPids: () => [], values });
    return { p50: r.p50, ops: r.ops };
  } finally {
    t.close();
  }
}

interface TraceEvent {
  us: number;
  what: string;
  detail: string;
}

/**
 * Follows each write of a c=1 run through the nodes' traces: the head notes the request, then
 * the forward it decides; the middle the forward's arrival and its own forward; the tail the
 * arrival, its commit (whose answer waits for an fdatasync), the sync's end; the head the
 * answer's arrival and the reply. Writes whose events are not all found are skipped.
 */
function reportTimeline(dir: string, run: { p50: number; ops: number }): void {
  const byNode = new Map<string, TraceEvent[]>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.trace'))) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      const [us, node, what, detail = ''] = line.split(' ');
      if (node === undefined || what === undefined) continue;
      let l = byNode.get(node);
      if (l === undefined) byNode.set(node, (l = []));
      l.push({ us: Number(us), what, detail });
    }
  }
  // First event at `node` after `us` of kind `what` whose detail passes `test`.
  const next = (node: string, us: number, what: string, test: (d: string) => boolean = () => true): TraceEvent | undefined => {
    const l = byNode.get(node) ?? [];
    let lo = 0;
    let hi = l.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (l[mid]!.us < us) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < l.length && l[i]!.us - us < 100_000; i++) if (l[i]!.what === what && test(l[i]!.detail)) return l[i];
    return undefined;
  };
  const peerIn = (d: string, kind: string): string | undefined => d.split(',').find((x) => x.startsWith(`${kind}>`))?.slice(kind.length + 1).replace('!', '');
  const stages = [
    'head: request in, forward decided',
    'hop head -> middle (incl. the write)',
    'middle: forward in, forward decided',
    'hop middle -> tail (incl. the write)',
    'tail: commit decided (LMDB + redo append)',
    'tail: fdatasync (thread pool, both ways)',
    'answer: sync done -> head has it',
    'head: answer in -> reply handed to RESP',
  ];
  const samples: number[][] = stages.map(() => []);
  const inCluster: number[] = [];
  // In process durability the answer waits for no fdatasync: that stage is then empty.
  const durable = args.durability === 'fsync';
  for (const [head, events] of byNode) {
    for (const e0 of events) {
      if (e0.what !== 'in' || e0.detail !== 'client:put') continue;
      const s1 = next(head, e0.us, 'stepped', (d) => d.includes('fwd>'));
      const mid = s1 === undefined ? undefined : peerIn(s1.detail, 'fwd');
      if (s1 === undefined || mid === undefined) continue;
      const e2 = next(mid, s1.us, 'in', (d) => d === `fwd<${head}`);
      const s3 = e2 && next(mid, e2.us, 'stepped', (d) => d.includes('fwd>'));
      const tail = s3 === undefined ? undefined : peerIn(s3.detail, 'fwd');
      if (s3 === undefined || tail === undefined) continue;
      const e4 = next(tail, s3.us, 'in', (d) => d === `fwd<${mid}`);
      const s5 = e4 && next(tail, e4.us, 'stepped', (d) => d.includes(`wres>${head}`));
      const y6 = s5 && (durable ? next(tail, s5.us, 'sync') : s5);
      const y7 = y6 && (durable ? next(tail, y6.us, 'synced') : y6);
      const e8 = y7 && next(head, y7.us, 'in', (d) => d === `wres<${tail}`);
      const r9 = e8 && next(head, e8.us, 'reply');
      if (r9 === undefined) continue;
      const t = [e0, s1, e2, s3, e4, s5, y6, y7, e8, r9].map((x) => x!.us);
      const d = [t[1]! - t[0]!, t[2]! - t[1]!, t[3]! - t[2]!, t[4]! - t[3]!, t[5]! - t[4]!, t[7]! - t[6]!, t[8]! - t[7]!, t[9]! - t[8]!];
      d.forEach((x, i) => samples[i]!.push(x));
      inCluster.push(t[9]! - t[0]!);
    }
  }
  const q = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN;
  console.log(`writes at c=1: ${run.ops} measured, p50 ${run.p50.toFixed(3)} ms as the client saw it; ${inCluster.length} (the warm-up's included) followed through the traces`);
  console.log(`stage, median and p90 in µs:`);
  let sum = 0;
  stages.forEach((name, i) => {
    sum += q(samples[i]!, 0.5);
    console.log(`  ${name.padEnd(44)} ${String(q(samples[i]!, 0.5)).padStart(6)} ${String(q(samples[i]!, 0.9)).padStart(6)}`);
  });
  console.log(`  ${'sum of the medians'.padEnd(44)} ${String(sum).padStart(6)}`);
  console.log(`  ${'request in -> reply, median'.padEnd(44)} ${String(q(inCluster, 0.5)).padStart(6)}`);
  console.log(`  ${'outside the nodes\' cores: client, RESP, the hops to and from the head'.padEnd(44)} ${String(Math.round(run.p50 * 1000 - q(inCluster, 0.5))).padStart(6)}  (client p50 minus the median above)`);
}
