/**
 * The benchmark of issue 4: chainkv beside etcd and Redis, on this machine, one load generator.
 *
 *   node --import tsx scripts/bench.ts [--duration 20] [--quick] [--systems chainkv,etcd,redis]
 *        [--out docs/benchmarks.md] [--memory] [--cpu-prof] [--no-load] [--no-recovery]
 *        [--keys 100000] [--conns 4] [--client mini|ioredis] [--catchup-keys 200000]
 *        [--memory-keys 1000000] [--warmup S] [--chainkv-root DIR] [--note TEXT ...]
 *        [--workloads write,read,mixed] [--concurrency 1,16,64] [--modes fsync,process]
 *
 * --quick: 3 s per point and 0.5 s warm-up (default 20 s and 2 s). --memory: also load 1M keys
 * into each system and compare resident memory (slow). --cpu-prof: run the chainkv nodes under
 * `node --cpu-prof` and put each node's top 15 self-time functions in the report.
 * --chainkv-root: benchmark the nodes of another checkout. --note: a line for the report.
 * --workloads, --concurrency, --modes: run a subset of the points (default: every workload;
 * c = 1, 16, 64, and 256 for chainkv; chainkv in both durability modes).
 * Exit status 1 when a phase failed (a server crashed, a load could not finish); the report
 * is written all the same, with the failure at the top.
 *
 * Starts each system fresh (data under the OS temporary directory, 127.0.0.1 only), drives it
 * with the closed-loop generator (bench/generator.ts), stops it before the next one; then
 * measures chainkv's catch-up and unavailability after SIGKILL on a fresh cluster, and with
 * --memory the resident memory of chainkv, etcd and Redis holding 1M keys. Writes the report
 * (markdown, --out) and a PNG chart beside it (bench.png). See docs/benchmarks.md.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, fdatasyncSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { renderSvg, writeChart } from '../bench/chart.ts';
import type { Series } from '../bench/chart.ts';
import { summariseProfile } from '../bench/cpuprofile.ts';
import type { ProfileSummary } from '../bench/cpuprofile.ts';
import { preload, runPoint } from '../bench/generator.ts';
import type { Workload } from '../bench/generator.ts';
import { ensureDebianPackage, installCleanup, keepTmpDirs, makeTmpDir, MemMonitor, removeTmpDirs, sleep } from '../bench/procs.ts';
import { measureCatchup, measureGap } from '../bench/recovery.ts';
import { markdown, pointLine, ratioLines, REF, targetLines, WORKLOADS } from '../bench/report.ts';
import type { BenchResults, LogSummary, Machine, MemoryResult, Row } from '../bench/report.ts';
import { ChainkvCluster, EtcdCluster, etcdVersion, RedisServer, redisVersion } from '../bench/systems.ts';
import type { ServerHandle } from '../bench/systems.ts';
import { ChainkvTarget, EtcdTarget, Keyspace, RedisTarget, ValuePool } from '../bench/targets.ts';
import type { KvTarget, RespClientKind } from '../bench/targets.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string' },
    quick: { type: 'boolean', default: false },
    systems: { type: 'string', default: 'chainkv,etcd,redis' },
    out: { type: 'string', default: 'docs/benchmarks.md' },
    memory: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    'no-load': { type: 'boolean', default: false },
    'no-recovery': { type: 'boolean', default: false },
    keys: { type: 'string', default: '100000' },
    conns: { type: 'string', default: '4' },
    client: { type: 'string', default: 'mini' },
    'catchup-keys': { type: 'string' },
    'memory-keys': { type: 'string', default: '1000000' },
    warmup: { type: 'string' },
    'chainkv-root': { type: 'string' },
    note: { type: 'string', multiple: true },
    workloads: { type: 'string', default: WORKLOADS.join(',') },
    concurrency: { type: 'string' },
    modes: { type: 'string', default: 'fsync,process' },
  },
});

function int(name: string, raw: string, min: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`bench: --${name} must be an integer ≥ ${min}, got "${raw}"`);
    process.exit(2);
  }
  return n;
}

function list(name: string, raw: string, allowed?: readonly string[]): string[] {
  const items = raw.split(',').map((x) => x.trim()).filter((x) => x !== '');
  const bad = allowed === undefined ? [] : items.filter((x) => !allowed.includes(x));
  if (items.length === 0 || bad.length > 0) {
    console.error(`bench: --${name} takes a comma-separated list${allowed !== undefined ? ` of ${allowed.join(', ')}` : ''}, got "${raw}"`);
    process.exit(2);
  }
  return items;
}

const workloads = list('workloads', args.workloads, WORKLOADS) as Workload[];
const modes = list('modes', args.modes, ['fsync', 'process']) as ('fsync' | 'process')[];
const concurrencyOption = args.concurrency === undefined ? undefined : list('concurrency', args.concurrency).map((c) => int('concurrency', c, 1));
const quick = args.quick;
const durationS = args.duration !== undefined ? Number(args.duration) : quick ? 3 : 20;
if (!(durationS > 0)) {
  console.error('bench: --duration must be a positive number of seconds');
  process.exit(2);
}
const warmupS = args.warmup !== undefined ? Number(args.warmup) : quick ? 0.5 : 2;
const keyCount = int('keys', args.keys, 1000);
const conns = int('conns', args.conns, 1);
// 200k even with --quick: with fewer keys the fixed part (process start, levelling) dominates the rate.
const catchupKeys = args['catchup-keys'] !== undefined ? int('catchup-keys', args['catchup-keys'], 100) : 200_000;
const memoryKeys = int('memory-keys', args['memory-keys'], 1000);
if (args.client !== 'mini' && args.client !== 'ioredis') {
  console.error('bench: --client must be mini or ioredis');
  process.exit(2);
}
const client = args.client as RespClientKind;
const systems = args.systems.split(',').map((s) => s.trim()).filter((s) => s !== '');
for (const s of systems) {
  if (!['chainkv', 'etcd', 'redis'].includes(s)) {
    console.error(`bench: unknown system "${s}" (chainkv, etcd, redis)`);
    process.exit(2);
  }
}
const outFile = resolve(args.out);
/** The chainkv checkout whose nodes are benchmarked (default: this one). */
const chainkvRoot = resolve(args['chainkv-root'] ?? ROOT);
if (!existsSync(join(chainkvRoot, 'bin', 'chainkv.mjs'))) {
  console.error(`bench: no bin/chainkv.mjs under ${chainkvRoot}`);
  process.exit(2);
}
const pngFile = join(dirname(outFile), 'bench.png');
mkdirSync(dirname(outFile), { recursive: true });
const CORES = cpus().length;
const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

installCleanup();

// ---------------------------------------------------------------- machine

function machine(): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown';
  const fs = spawnSync('findmnt', ['-n', '-o', 'FSTYPE', '-T', tmpdir()], { encoding: 'utf8' }).stdout?.trim() || 'unknown';
  return {
    cpu: model,
    cores: CORES,
    ramGiB: totalmem() / 2 ** 30,
    node: process.version,
    etcd: existsSync('/usr/bin/etcd') ? etcdVersion() : 'not installed',
    redis: existsSync('/usr/bin/redis-server') ? redisVersion() : 'not installed',
    kernel: release(),
    tmpFs: `${fs} (${tmpdir()})`,
    loadAvg: loadavg().map((x) => x.toFixed(2)).join(' '),
    chainkv: chainkvDescription(),
    fsync: fsyncProbe(),
  };
}

/** 300 fdatasyncs of a 4 KiB write in the temporary directory: p50 and p99. */
function fsyncProbe(): string {
  const f = join(tmpdir(), `bench-fsync-probe-${process.pid}`);
  const fd = openSync(f, 'w');
  const buf = Buffer.alloc(4096, 1);
  const lat: number[] = [];
  try {
    for (let i = 0; i < 300; i++) {
      writeSync(fd, buf, 0, buf.length, (i % 64) * 4096);
      const t = performance.now();
      fdatasyncSync(fd);
      lat.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    rmSync(f, { force: true });
  }
  lat.sort((a, b) => a - b);
  return `p50 ${lat[150]!.toFixed(2)} ms, p99 ${lat[297]!.toFixed(2)} ms`;
}

function chainkvDescription(): string {
  const git = (...a: string[]): string => spawnSync('git', ['-C', chainkvRoot, ...a], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const commit = git('rev-parse', '--short', 'HEAD');
  const where = chainkvRoot === ROOT ? 'this checkout' : chainkvRoot;
  if (commit === '') return `from ${where} (not a git checkout)`;
  const dirty = git('status', '--porcelain', '--untracked-files=no', '--', 'src', 'bin');
  return `commit ${commit} from ${where}${dirty !== '' ? ' with uncommitted changes in src/bin' : ''}`;
}

// ---------------------------------------------------------------- helpers

function summariseLogs(label: string, files: string[]): LogSummary[] {
  const out: LogSummary[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    const s: LogSummary = { process: `${label} ${basename(f).replace(/\.log$/, '')}`, warn: 0, error: 0, samples: [] };
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      let rec: { level?: unknown; msg?: unknown; err?: { message?: unknown } };
      try {
        rec = JSON.parse(line) as { level?: unknown; msg?: unknown; err?: { message?: unknown } };
      } catch {
        continue;
      }
      const lv = rec.level;
      const isErr = lv === 'error' || lv === 'fatal' || lv === 'panic' || (typeof lv === 'number' && lv >= 50);
      const isWarn = lv === 'warn' || (typeof lv === 'number' && lv >= 40 && lv < 50);
      if (isErr) s.error++;
      else if (isWarn) s.warn++;
      else continue;
      const msg = `${String(rec.msg ?? '')}${rec.err?.message !== undefined ? `: ${String(rec.err.message)}` : ''}`.slice(0, 200);
      if (s.samples.length < 3 && !s.samples.includes(msg)) s.samples.push(msg);
    }
    if (s.warn + s.error > 0) out.push(s);
  }
  return out;
}

/**
 * Per node, the profile of its busiest thread (the main thread; the other one is tsx's
 * module-loader thread, busy only at start-up).
 */
function collectProfiles(pass: string, profDir: string, names: string[], notes: string[]): BenchResults['profiles'] {
  const out: BenchResults['profiles'] = [];
  for (const node of names) {
    const dir = join(profDir, node);
    const files = existsSync(dir) ? readdirSync(dir).filter((x) => x.endsWith('.cpuprofile')) : [];
    if (files.length === 0) {
      notes.push(`--cpu-prof: no profile written by ${pass} node ${node}`);
      continue;
    }
    let best: ProfileSummary | undefined;
    for (const f of files) {
      try {
        const s = summariseProfile(join(dir, f), chainkvRoot);
        if (best === undefined || s.totalMs - s.idleMs > best.totalMs - best.idleMs) best = s;
      } catch (err) {
        notes.push(`could not read CPU profile ${node}/${f}: ${(err as Error).message}`);
      }
    }
    if (best !== undefined) out.push({ pass, node, summary: best });
  }
  return out;
}

function duKb(dir: string): number {
  const r = spawnSync('du', ['-sk', dir], { encoding: 'utf8' });
  return Number(/^(\d+)/.exec(r.stdout ?? '')?.[1] ?? NaN);
}

interface Phase {
  server: ServerHandle;
  targets: KvTarget[];
  concurrency: number[];
}

class PhaseAborted extends Error {}

/** Every point of a phase; a crashed server process aborts the phase (after recording the point). */
async function drive(phase: Phase, values: ValuePool, rows: Row[]): Promise<void> {
  const pids = (): number[] => phase.server.processes().map((p) => p.pid);
  for (const workload of workloads) {
    for (const c of phase.concurrency) {
      for (const t of phase.targets) {
        const r = await runPoint(t, { workload: workload as Workload, concurrency: c, durationMs: durationS * 1000, warmupMs: warmupS * 1000, keyCount }, { cores: CORES, serverPids: pids, values });
        const row: Row = { ...r, system: t.label };
        rows.push(row);
        console.log(pointLine(row));
        const crashes = phase.server.crashes();
        if (crashes.length > 0) throw new PhaseAborted(`server crashed during ${t.label} ${workload} c=${c}: ${crashes.join('; ')}`);
        await sleep(200);
      }
    }
  }
}

/** Starts a server, watches its memory, runs `body`, stops it; a failure is recorded, not fatal. */
async function withServer<S extends ServerHandle>(
  name: string,
  results: BenchResults,
  start: () => Promise<S>,
  body: (server: S, mon: MemMonitor) => Promise<void>,
  after?: (server: S, mon: MemMonitor) => void,
): Promise<void> {
  let server: S;
  try {
    server = await start();
  } catch (err) {
    results.failures.push(`${name}: could not start: ${(err as Error).message.split('\n')[0]}`);
    log(`${name}: could not start: ${(err as Error).message}`);
    return;
  }
  const mon = new MemMonitor(200);
  for (const p of server.processes()) mon.watch(p.label, p.pid);
  mon.start();
  try {
    await body(server, mon);
  } catch (err) {
    const crashes = server.crashes();
    const msg = err instanceof PhaseAborted ? err.message : `${(err as Error).message}${crashes.length > 0 ? ` (${crashes.join('; ')})` : ''}`;
    results.failures.push(`${name}: aborted — ${msg}`);
    log(`${name}: ABORTED — ${msg}`);
  } finally {
    mon.stop();
    await server.stop();
  }
  after?.(server, mon);
}

// ---------------------------------------------------------------- main

async function main(): Promise<BenchResults> {
  const t0 = performance.now();
  const needEtcd = systems.includes('etcd');
  const needRedis = systems.includes('redis');
  if (needEtcd) ensureDebianPackage('/usr/bin/etcd', 'etcd-server', log);
  if (needRedis) ensureDebianPackage('/usr/bin/redis-server', 'redis-server', log);
  try {
    ensureDebianPackage('/usr/bin/rsvg-convert', 'librsvg2-bin', log);
  } catch (err) {
    log(`no chart: ${(err as Error).message}`);
  }
  const results: BenchResults = {
    date: new Date().toISOString(),
    command: `node --import tsx scripts/bench.ts ${process.argv.slice(2).map((a) => (/^[\w,./:=@+-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')}`.trim(),
    machine: machine(),
    durationS,
    warmupS,
    keys: keyCount,
    connsPerNode: conns,
    client,
    rows: [],
    rss: [],
    preloadS: {},
    gaps: [],
    profiles: [],
    logs: [],
    notes: [...(args.note ?? [])],
    failures: [],
    elapsedS: 0,
  };
  if (chainkvRoot !== ROOT && systems.includes('chainkv')) results.notes.push(`the chainkv nodes were run from ${chainkvRoot}, not from this checkout (--chainkv-root).`);
  log(`bench: ${durationS} s per point (+${warmupS} s warm-up), systems ${systems.join(', ')}, ${keyCount} keys, ${CORES} cores, ${results.machine.cpu}`);
  log(`load average at start: ${results.machine.loadAvg}; fdatasync probe: ${results.machine.fsync}`);
  const values = new ValuePool();
  const keys = new Keyspace(keyCount);
  const levels = (sys: string): number[] => concurrencyOption ?? (sys === 'chainkv' ? [1, 16, 64, 256] : [1, 16, 64]);

  if (!args['no-load']) {
    if (systems.includes('chainkv')) {
      for (const durability of modes) {
        const profDir = args['cpu-prof'] ? makeTmpDir(`chainkv-prof-${durability}-`) : undefined;
        const base = `chainkv ${durability}`;
        log(`${base}${profDir ? ' (--cpu-prof)' : ''}: starting five nodes`);
        await withServer(
          base,
          results,
          () => ChainkvCluster.start({ durability, cpuProfDir: profDir, root: chainkvRoot }),
          async (cluster) => {
            const smart = await ChainkvTarget.open(cluster, keys, { routing: 'smart', client, connsPerNode: conns, label: `${base} smart` });
            const plain = await ChainkvTarget.open(cluster, keys, { routing: 'plain', client, connsPerNode: conns, label: `${base} plain` });
            try {
              log(`${base}: preloading ${keyCount} keys`);
              results.preloadS[base] = await preload(smart, keyCount, values);
              await drive({ server: cluster, targets: [smart, plain], concurrency: levels('chainkv') }, values, results.rows);
            } finally {
              smart.close();
              plain.close();
            }
          },
          (cluster, mon) => {
            for (const p of mon.results()) results.rss.push({ ...p, system: base });
            results.logs.push(...summariseLogs(base, cluster.names.map((n) => join(cluster.dir, `node-${n}.log`))));
            if (profDir !== undefined) results.profiles.push(...collectProfiles(base, profDir, cluster.names, results.notes));
          },
        );
      }
    }
    if (needEtcd) {
      log('etcd: starting three members');
      await withServer(
        'etcd',
        results,
        () => EtcdCluster.start(3),
        async (cluster) => {
          const target = new EtcdTarget('etcd', keys, cluster, Math.max(...levels('etcd')));
          try {
            log(`etcd: preloading ${keyCount} keys`);
            results.preloadS.etcd = await preload(target, keyCount, values);
            await drive({ server: cluster, targets: [target], concurrency: levels('etcd') }, values, results.rows);
          } finally {
            target.close();
          }
        },
        (cluster, mon) => {
          for (const p of mon.results()) results.rss.push({ ...p, system: 'etcd' });
          results.logs.push(...summariseLogs('etcd', cluster.members.map((m) => join(cluster.dir, `${m.name}.log`))));
        },
      );
    }
    if (needRedis) {
      log('redis: starting');
      await withServer(
        'redis',
        results,
        () => RedisServer.start(),
        async (server) => {
          const target = await RedisTarget.open(server, keys, { client, conns, label: 'redis' });
          try {
            log(`redis: preloading ${keyCount} keys`);
            results.preloadS.redis = await preload(target, keyCount, values);
            await drive({ server, targets: [target], concurrency: levels('redis') }, values, results.rows);
          } finally {
            target.close();
          }
        },
        (_server, mon) => {
          for (const p of mon.results()) results.rss.push({ ...p, system: 'redis' });
        },
      );
    }
  }

  if (systems.includes('chainkv') && !args['no-recovery']) {
    log('recovery: fresh chainkv cluster (durability fsync)');
    await withServer(
      'chainkv recovery',
      results,
      () => ChainkvCluster.start({ durability: 'fsync', root: chainkvRoot }),
      async (cluster) => {
        results.catchup = await measureCatchup(cluster, values, catchupKeys, log);
        log(`catch-up: ${results.catchup.toCopy} keys in ${results.catchup.restartToUpS.toFixed(2)} s → ${Math.round(results.catchup.keysPerSec)} keys/s`);
        for (const role of ['head', 'middle', 'tail'] as const) {
          const g = await measureGap(cluster, role, log);
          results.gaps.push(g);
          log(
            `unavailability (${role} ${g.node}): longest gap ${g.killGapMs.toFixed(0)} ms after the kill, ${g.rejoinGapMs.toFixed(0)} ms during rejoin ` +
              `(restart to /health ${g.bootS.toFixed(2)} s, to up everywhere ${g.rejoinS.toFixed(2)} s); ${g.errors} errors, ${g.staleReads} stale reads`,
          );
        }
        const crashes = cluster.crashes();
        if (crashes.length > 0) throw new PhaseAborted(`server crashed: ${crashes.join('; ')}`);
      },
      (cluster) => {
        results.logs.push(...summariseLogs('chainkv recovery', cluster.names.map((n) => join(cluster.dir, `node-${n}.log`))));
      },
    );
  }

  if (args.memory) results.memory = await measureMemory(values, results);

  const chartRel = drawChart(results);
  results.elapsedS = (performance.now() - t0) / 1000;
  printSummary(results);
  const analysisFile = join(ROOT, 'bench', 'analysis.md');
  if (existsSync(analysisFile)) results.analysis = readFileSync(analysisFile, 'utf8');
  writeFileSync(outFile, markdown(results, chartRel));
  log(`report written to ${relative(process.cwd(), outFile)}${chartRel !== undefined ? ` and ${relative(process.cwd(), pngFile)}` : ''} (${results.elapsedS.toFixed(0)} s)`);
  return results;
}

/** Throughput and p99 per system per workload at c=64, as a PNG beside the report. */
function drawChart(results: BenchResults): string | undefined {
  const chartSystems = [...new Set(results.rows.filter((r) => r.concurrency === 64).map((r) => r.system))];
  if (chartSystems.length === 0) return undefined;
  const colors: Record<string, string> = {
    'chainkv fsync smart': '#1f77b4',
    'chainkv fsync plain': '#9ecae1',
    'chainkv process smart': '#2ca02c',
    'chainkv process plain': '#a1d99b',
    etcd: '#ff7f0e',
    redis: '#d62728',
  };
  const series = (metric: 'opsPerSec' | 'p99'): Series[] =>
    chartSystems.map((s) => ({
      name: s,
      color: colors[s] ?? '#777',
      values: WORKLOADS.map((w) => results.rows.find((r) => r.system === s && r.workload === w && r.concurrency === 64)?.[metric] ?? NaN),
    }));
  const svg = renderSvg(
    `c=64, ${durationS} s per point — ${results.date.slice(0, 10)}, ${CORES} cores shared with the load generator`,
    [
      { title: 'throughput (higher is better)', unit: 'ops/s', groups: WORKLOADS, series: series('opsPerSec'), format: (v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}k` : v.toFixed(0)) },
      { title: 'p99 latency (lower is better)', unit: 'ms', groups: WORKLOADS, series: series('p99'), format: (v) => (v === 0 || v >= 10 ? v.toFixed(0) : v.toFixed(1)) },
    ],
    series('opsPerSec'),
  );
  const err = writeChart(svg, join(makeTmpDir('bench-chart-'), 'bench.svg'), pngFile);
  if (err !== undefined) {
    results.notes.push(`chart not drawn: ${err}`);
    return undefined;
  }
  return relative(dirname(outFile), pngFile);
}

function printSummary(results: BenchResults): void {
  console.log('');
  console.log('== ratios per point ==');
  for (const l of ratioLines(results.rows)) console.log(l);
  console.log('');
  console.log(`== targets (${REF} vs the others, same run) ==`);
  for (const l of targetLines(results)) console.log(l);
  console.log('');
  console.log('== peak RSS ==');
  for (const p of [...results.rss, ...(results.memory?.processes ?? [])]) {
    console.log(`${p.system.padEnd(22)} ${p.label.padEnd(26)} ${(p.hwmKb / 1024).toFixed(0)} MiB (anon ${(p.maxAnonKb / 1024).toFixed(0)}, file ${(p.maxFileKb / 1024).toFixed(0)})`);
  }
  if (results.rows.length > 0) {
    const g = results.rows.map((r) => r.genCpuShare);
    console.log(`generator CPU share (of ${CORES} cores): mean ${((g.reduce((a, b) => a + b, 0) / g.length) * 100).toFixed(0)}%, max ${(Math.max(...g) * 100).toFixed(0)}%`);
  }
  for (const l of results.logs) console.log(`log: ${l.process}: ${l.warn} warn, ${l.error} error ${l.samples.join(' | ')}`);
  for (const f of results.failures) console.log(`FAILURE: ${f}`);
}

async function measureMemory(values: ValuePool, results: BenchResults): Promise<MemoryResult> {
  const mem: MemoryResult = { keys: memoryKeys, processes: [], loadS: {}, diskKb: {} };
  const keys = new Keyspace(memoryKeys);
  const progress = (name: string) => (done: number): void => log(`memory: ${name} ${done}/${memoryKeys}`);
  const record = (system: string) => (_s: ServerHandle, mon: MemMonitor): void => {
    for (const p of mon.results()) mem.processes.push({ ...p, system });
  };
  if (systems.includes('chainkv')) {
    log(`memory: chainkv (fsync), loading ${memoryKeys} keys`);
    const profDir = args['cpu-prof'] ? makeTmpDir('chainkv-prof-memory-') : undefined;
    await withServer(
      'memory chainkv',
      results,
      () => ChainkvCluster.start({ durability: 'fsync', root: chainkvRoot, cpuProfDir: profDir }),
      async (cluster) => {
        const t = await ChainkvTarget.open(cluster, keys, { routing: 'smart', client: 'mini', connsPerNode: 2, label: 'memory' });
        try {
          mem.loadS.chainkv = await preload(t, memoryKeys, values, { onProgress: progress('chainkv') });
          await sleep(3000);
          mem.diskKb.chainkv = duKb(cluster.config.dataDir);
        } finally {
          t.close();
        }
        const crashes = cluster.crashes();
        if (crashes.length > 0) throw new PhaseAborted(`server crashed: ${crashes.join('; ')}`);
      },
      (cluster, mon) => {
        record('chainkv')(cluster, mon);
        if (profDir !== undefined) results.profiles.push(...collectProfiles(`chainkv loading ${memoryKeys} keys`, profDir, cluster.names, results.notes));
      },
    );
  }
  if (systems.includes('etcd')) {
    log(`memory: etcd, loading ${memoryKeys} keys`);
    await withServer(
      'memory etcd',
      results,
      () => EtcdCluster.start(3),
      async (cluster) => {
        const t = new EtcdTarget('memory', keys, cluster, 16);
        try {
          mem.loadS.etcd = await preload(t, memoryKeys, values, { onProgress: progress('etcd') });
          await sleep(3000);
          mem.diskKb.etcd = duKb(cluster.dir);
        } finally {
          t.close();
        }
      },
      record('etcd'),
    );
  }
  if (systems.includes('redis')) {
    log(`memory: redis, loading ${memoryKeys} keys`);
    await withServer(
      'memory redis',
      results,
      () => RedisServer.start(),
      async (server) => {
        const t = await RedisTarget.open(server, keys, { client: 'mini', conns: 2, label: 'memory' });
        try {
          mem.loadS.redis = await preload(t, memoryKeys, values, { onProgress: progress('redis') });
          await sleep(3000);
          mem.diskKb.redis = duKb(server.dir);
        } finally {
          t.close();
        }
      },
      record('redis'),
    );
  }
  return mem;
}

try {
  const r = await main();
  removeTmpDirs();
  if (r.failures.length > 0) {
    console.error(`bench: ${r.failures.length} phase(s) failed; see the report`);
    process.exit(1);
  }
  process.exit(0);
} catch (err) {
  console.error('bench failed:', err);
  keepTmpDirs();
  console.error(`bench: server logs and data kept under ${tmpdir()} (chainkv-bench-*, etcd-bench-*, redis-bench-*)`);
  process.exit(1);
}
