/**
 * Where a chainkv node's resources go, measured on a fresh local five-node cluster (default
 * names) with the benchmark's generator. bench/analysis.md cites it.
 *
 *   node --import tsx scripts/probe.ts writes [--concurrency 64] [--duration 6] [--skip-preload]
 *     Closed-loop writes through the ring-aware client (after preloading the 100,000 keys, as
 *     the benchmark does, unless --skip-preload); per write: peer messages and fdatasyncs (from each
 *     node's /metrics), write and read system calls (/proc/<pid>/io) and CPU time, user and
 *     system (/proc/<pid>/stat), per node; and the share of the core's event-loop turns that
 *     took 5 ms or more, and 10 ms or more (chainkv_turn_duration_seconds).
 *   node --import tsx scripts/probe.ts memory [--keys 1000000]
 *   Either with --durability process: the nodes without fdatasync (default fsync).
 *     Loads the keys as the benchmark's memory phase does; per node: peak RSS, anonymous and
 *     file-backed; for the busiest node, V8's heap at its RSS peak (sampled from /metrics) and
 *     LMDB's pages per database after the load.
 */
import { readFileSync } from 'node:fs';
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
if ((mode !== 'writes' && mode !== 'memory') || (args.durability !== 'fsync' && args.durability !== 'process')) {
  process.stderr.write('usage: scripts/probe.ts writes [--concurrency 64] [--duration 6] [--skip-preload] | memory [--keys 1000000]; [--durability fsync|process]\n');
  process.exit(2);
}

installCleanup();
// CHAINKV_PROBE_CPU_PROF=DIR: run the nodes under node --cpu-prof, profiles in DIR/<name>.
const cluster = await ChainkvCluster.start({ durability: args.durability, cpuProfDir: process.env.CHAINKV_PROBE_CPU_PROF });
try {
  if (mode === 'writes') await probeWrites();
  else await probeMemory();
} finally {
  await cluster.stop();
}

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
  writeCalls: number;
  readCalls: number;
  userS: number;
  sysS: number;
}

async function sample(): Promise<ProcSample[]> {
  const pids = new Map(cluster.processes().map((p) => [p.label.split(' ').pop()!, p.pid]));
  const out: ProcSample[] = [];
  for (const name of cluster.names) {
    const pid = pids.get(name)!;
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').slice(readFileSync(`/proc/${pid}/stat`, 'utf8').lastIndexOf(')') + 2).split(' ');
    const text = await metricsText(name); // one snapshot, so that counts and buckets agree
    out.push({
      name,
      messagesIn: metricIn(text, 'chainkv_peer_messages_in_total'),
      fsyncs: metricIn(text, 'chainkv_fsync_batches_total'),
      turns: metricIn(text, 'chainkv_turn_duration_seconds_count'),
      turnsUnder5ms: metricIn(text, 'chainkv_turn_duration_seconds_bucket', 'le="0.005",'),
      turnsUnder10ms: metricIn(text, 'chainkv_turn_duration_seconds_bucket', 'le="0.01",'),
      writeCalls: Number(/syscw: (\d+)/.exec(io)?.[1]),
      readCalls: Number(/syscr: (\d+)/.exec(io)?.[1]),
      userS: Number(stat[11]) / 100,
      sysS: Number(stat[12]) / 100,
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
    console.log(`writes at c=${concurrency}: ${r.ops} in ${(r.measuredMs / 1000).toFixed(1)} s, ${Math.round(r.opsPerSec)}/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`);
    console.log(`per write, by node (${cluster.names.join(' ')}):`);
    console.log(`  peer messages received   ${per((s) => s.messagesIn).join(' ')}   (cluster: ${sum(per((s) => s.messagesIn)).toFixed(2)})`);
    console.log(`  fdatasyncs               ${per((s) => s.fsyncs).join(' ')}   (cluster: ${sum(per((s) => s.fsyncs)).toFixed(2)})`);
    console.log(`  write system calls       ${per((s) => s.writeCalls).join(' ')}   (cluster: ${sum(per((s) => s.writeCalls)).toFixed(2)})`);
    console.log(`  read system calls        ${per((s) => s.readCalls).join(' ')}   (cluster: ${sum(per((s) => s.readCalls)).toFixed(2)})`);
    console.log(`  user CPU, µs             ${per((s) => s.userS, 1e6).join(' ')}   (cluster: ${sum(per((s) => s.userS, 1e6)).toFixed(0)})`);
    console.log(`  system CPU, µs           ${per((s) => s.sysS, 1e6).join(' ')}   (cluster: ${sum(per((s) => s.sysS, 1e6)).toFixed(0)})`);
    // Turns are the unit of latency: a request waits for every turn it crosses.
    const delta = (i: number, f: (s: ProcSample) => number): number => f(after[i]!) - f(before[i]!);
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
