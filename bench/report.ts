import type { ProfileSummary } from './cpuprofile.ts';
import type { PointResult, Workload } from './generator.ts';
import type { PeakMem } from './procs.ts';
import type { CatchupResult, GapResult } from './recovery.ts';

/** Everything one benchmark run measured, and the markdown/console report made from it. */
export interface Row extends PointResult {
  system: string;
}

export interface Machine {
  cpu: string;
  cores: number;
  ramGiB: number;
  node: string;
  etcd: string;
  redis: string;
  kernel: string;
  tmpFs: string;
  loadAvg: string;
  /** fdatasync latency of a 4 KiB write in the temporary directory (what fsync durability costs here). */
  fsync: string;
  /** Which chainkv was run: checkout path, commit, uncommitted changes. */
  chainkv: string;
}

export interface MemoryResult {
  keys: number;
  processes: (PeakMem & { system: string })[];
  loadS: Record<string, number>;
  diskKb: Record<string, number>;
}

export interface LogSummary {
  process: string;
  warn: number;
  error: number;
  samples: string[];
}

export interface BenchResults {
  date: string;
  command: string;
  machine: Machine;
  durationS: number;
  warmupS: number;
  keys: number;
  connsPerNode: number;
  client: string;
  rows: Row[];
  /** Peak memory of every server process during its throughput phase. */
  rss: (PeakMem & { system: string })[];
  preloadS: Record<string, number>;
  catchup?: CatchupResult;
  gaps: GapResult[];
  memory?: MemoryResult;
  profiles: { pass: string; node: string; summary: ProfileSummary }[];
  logs: LogSummary[];
  notes: string[];
  /** Hand-written analysis of the misses (bench/analysis.md), copied into the report. */
  analysis?: string;
  /** Phases that could not finish (a server crashed, a load failed): never hidden. */
  failures: string[];
  chart?: string;
  elapsedS: number;
}

export const REF = 'chainkv fsync smart';
export const WORKLOADS: Workload[] = ['write', 'read', 'mixed'];

const f0 = (v: number): string => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : 'n/a');
const f2 = (v: number): string => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) : 'n/a');
const pct = (v: number): string => (Number.isFinite(v) ? `${(v * 100).toFixed(0)}%` : 'n/a');
const ratio = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}×` : 'n/a');
const mib = (kb: number): string => `${(kb / 1024).toFixed(0)}`;

export function find(rows: Row[], system: string, workload: Workload, c: number): Row | undefined {
  return rows.find((r) => r.system === system && r.workload === workload && r.concurrency === c);
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  met: boolean | undefined;
  margin: string;
}

function atLeast(name: string, goal: number, measured: number, unit: string, goalText: string, measuredText: string): Target {
  if (!Number.isFinite(measured)) return { name, goal: goalText, measured: 'not measured', met: undefined, margin: '' };
  const met = measured >= goal;
  const margin = met ? `met: ${(measured / goal).toFixed(2)}× the goal` : `missed: ${((measured / goal) * 100).toFixed(0)}% of the goal (short by ${f2(goal - measured)}${unit})`;
  return { name, goal: goalText, measured: measuredText, met, margin };
}

function atMost(name: string, goal: number, measured: number, unit: string, goalText: string, measuredText: string): Target {
  if (!Number.isFinite(measured)) return { name, goal: goalText, measured: 'not measured', met: undefined, margin: '' };
  const met = measured <= goal;
  // Ratio goals (no unit) read best as "share of the limit"; absolute ones with the difference too.
  const margin = met
    ? `met: ${unit === '' ? '' : `${f2(goal - measured)}${unit} under, `}${((measured / goal) * 100).toFixed(0)}% of the limit`
    : `missed: ${unit === '' ? '' : `${f2(measured - goal)}${unit} over, `}${(measured / goal).toFixed(2)}× the limit`;
  return { name, goal: goalText, measured: measuredText, met, margin };
}

export function targets(r: BenchResults): Target[] {
  const out: Target[] = [];
  const get = (sys: string, w: Workload, c: number): Row | undefined => find(r.rows, sys, w, c);
  const w64 = get(REF, 'write', 64);
  const e64w = get('etcd', 'write', 64);
  const wr = w64 !== undefined && e64w !== undefined ? w64.opsPerSec / e64w.opsPerSec : NaN;
  out.push(atLeast('linearizable writes at c=64 vs etcd', 3, wr, '×', '≥ 3× etcd', w64 && e64w ? `${ratio(wr)} (${f0(w64.opsPerSec)} vs ${f0(e64w.opsPerSec)} ops/s)` : ''));
  const r64 = get(REF, 'read', 64);
  const e64r = get('etcd', 'read', 64);
  const rr = r64 !== undefined && e64r !== undefined ? r64.opsPerSec / e64r.opsPerSec : NaN;
  out.push(atLeast('linearizable reads at c=64 vs etcd', 6, rr, '×', '≥ 6× etcd', r64 && e64r ? `${ratio(rr)} (${f0(r64.opsPerSec)} vs ${f0(e64r.opsPerSec)} ops/s)` : ''));
  const w1 = get(REF, 'write', 1);
  out.push(atMost('write p50 at c=1', 0.5, w1?.p50 ?? NaN, ' ms', '≤ 0.5 ms', w1 ? `${f2(w1.p50)} ms` : ''));
  const r1 = get(REF, 'read', 1);
  out.push(atMost('read p50 at c=1', 0.2, r1?.p50 ?? NaN, ' ms', '≤ 0.2 ms', r1 ? `${f2(r1.p50)} ms` : ''));
  for (const w of WORKLOADS) {
    const a = get(REF, w, 64);
    const e = get('etcd', w, 64);
    const q = a !== undefined && e !== undefined ? a.p99 / e.p99 : NaN;
    out.push(atMost(`p99 at c=64 (${w}) vs etcd's`, 1 / 3, q, '', '≤ 1/3 of etcd (0.33×)', a && e ? `${ratio(q)} (${f2(a.p99)} vs ${f2(e.p99)} ms)` : ''));
  }
  if (r.memory !== undefined) {
    const ck = r.memory.processes.filter((p) => p.system === 'chainkv');
    const et = r.memory.processes.filter((p) => p.system === 'etcd');
    const maxCk = Math.max(...ck.map((p) => p.hwmKb));
    const minEt = Math.min(...et.map((p) => p.hwmKb));
    const q = ck.length > 0 && et.length > 0 ? maxCk / minEt : NaN;
    // LMDB maps its file: part of a chainkv node's RSS is page cache the kernel can drop.
    const anonCk = Math.max(...ck.map((p) => p.maxAnonKb));
    const anonEt = Math.min(...et.map((p) => p.maxAnonKb));
    out.push(
      atMost(
        `peak RSS per node, ${f0(r.memory.keys)} keys of 100 B (largest chainkv node vs smallest etcd member)`,
        0.5,
        q,
        '',
        '≤ 0.5× an etcd member',
        `${ratio(q)} (${mib(maxCk)} vs ${mib(minEt)} MiB; anonymous memory only: ${ratio(anonCk / anonEt)}, ${mib(anonCk)} vs ${mib(anonEt)} MiB)`,
      ),
    );
  } else {
    out.push({ name: 'peak RSS per node with 1M keys vs an etcd member', goal: '≤ 0.5×', measured: 'not measured (run with --memory)', met: undefined, margin: '' });
  }
  const cu = r.catchup;
  out.push(atLeast('catch-up speed', 50_000, cu?.keysPerSec ?? NaN, ' keys/s', '≥ 50,000 keys/s', cu ? `${f0(cu.keysPerSec)} keys/s (${f0(cu.keysPerSecAfterBoot)} after process start-up)` : ''));
  for (const g of r.gaps) {
    out.push(atMost(`unavailability after SIGKILL of the ${g.role}`, 1000, g.killGapMs, ' ms', '< 1 s', `${f0(g.killGapMs)} ms`));
  }
  if (r.gaps.length === 0) out.push({ name: 'unavailability after SIGKILL', goal: '< 1 s', measured: 'not measured', met: undefined, margin: '' });
  return out;
}

export function systemsOf(rows: Row[]): string[] {
  return [...new Set(rows.map((r) => r.system))];
}

function concurrencies(rows: Row[]): number[] {
  return [...new Set(rows.map((r) => r.concurrency))].sort((a, b) => a - b);
}

export function pointLine(r: Row): string {
  return (
    `${r.system.padEnd(22)} ${r.workload.padEnd(5)} c=${String(r.concurrency).padEnd(4)} ${f0(r.opsPerSec).padStart(8)} ops/s` +
    `  p50 ${f2(r.p50).padStart(5)}  p99 ${f2(r.p99).padStart(6)}  p999 ${f2(r.p999).padStart(6)} ms` +
    `  errors ${r.errors}  gen CPU ${pct(r.genCpuShare)}  servers CPU ${pct(r.serverCpuShare)}`
  );
}

export function ratioLines(rows: Row[]): string[] {
  const out: string[] = [];
  for (const w of WORKLOADS) {
    for (const c of concurrencies(rows)) {
      const e = find(rows, 'etcd', w, c);
      const rd = find(rows, 'redis', w, c);
      for (const sys of systemsOf(rows).filter((s) => s.startsWith('chainkv'))) {
        const a = find(rows, sys, w, c);
        if (a === undefined || (e === undefined && rd === undefined)) continue;
        out.push(
          `${w.padEnd(5)} c=${String(c).padEnd(4)} ${sys.padEnd(22)} ops/s ÷ etcd ${ratio(e ? a.opsPerSec / e.opsPerSec : NaN).padStart(7)}` +
            `  ÷ Redis ${ratio(rd ? a.opsPerSec / rd.opsPerSec : NaN).padStart(7)}  p99 ÷ etcd p99 ${ratio(e ? a.p99 / e.p99 : NaN).padStart(7)}`,
        );
      }
    }
  }
  return out;
}

export function targetLines(r: BenchResults): string[] {
  return targets(r).map((t) => `${t.met === undefined ? 'n/a   ' : t.met ? 'MET   ' : 'MISSED'} ${t.name}: goal ${t.goal}, measured ${t.measured}${t.margin ? ` — ${t.margin}` : ''}`);
}

// ---------------------------------------------------------------- markdown

export function markdown(r: BenchResults, chartRel: string | undefined): string {
  const L: string[] = [];
  const m = r.machine;
  L.push('# Benchmarks');
  L.push('');
  L.push(
    'chainkv (five nodes, chains of three, every write held by all three members before it is acknowledged) beside etcd (three members) and ' +
      'a single Redis (no replication: the ceiling of one unreplicated server), all on one machine, driven in turn by one closed-loop ' +
      'load generator. Written by `scripts/bench.ts`; every number below comes from the run described here.',
  );
  L.push('');
  L.push('## How this was run');
  L.push('');
  L.push('```sh');
  L.push(r.command);
  L.push('```');
  L.push('');
  L.push(`- Date: ${r.date}; whole run ${f0(r.elapsedS)} s.`);
  L.push(`- Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB.toFixed(0)} GiB RAM, Linux ${m.kernel}; data directories on ${m.tmpFs}; fdatasync of a 4 KiB write there: ${m.fsync}; load average at start ${m.loadAvg}.`);
  L.push(`- Software: chainkv ${m.chainkv}; Node ${m.node}, etcd ${m.etcd} (Debian etcd-server), Redis ${m.redis} (Debian redis-server).`);
  L.push(
    `- Load: closed loop (each of \`c\` workers issues its next request when the previous one completes), keys of 16 bytes uniform over ${f0(r.keys)} keys, values of 100 bytes; ` +
      `${r.durationS} s measured per point after ${r.warmupS} s of warm-up; every key preloaded (untimed) before the first point, so reads always hit. ` +
      'Latency is recorded per request in a log-bucketed histogram (1.6% resolution); errors are counted, never retried, and a failed request is not in the latency figures.',
  );
  L.push(
    `- chainkv: five \`chainkv node\` processes (default names, so the default lopsided ring), durability \`fsync\` (a write is answered once every chain member holds it and the tail has fdatasynced its commit, grouped; the other members write to disk without waiting), and a second pass with durability \`process\` (no fdatasync). ` +
      `Client: RESP, ${r.connsPerNode} pipelined connections per node (${r.client === 'mini' ? 'the benchmark\'s own minimal RESP client, bench/resp.ts, chosen because it costs the shared CPU less: in a 3-s trial of Redis reads at c=64 on this machine it used about 4 µs of CPU per request against about 10 µs for ioredis with auto-pipelining; `--client ioredis` switches' : 'ioredis with auto-pipelining'}). ` +
      '**smart**: the client computes each key\'s chain with `Ring` (src/core/ring.ts) and sends writes to the head and reads to a random chain member (CRAQ); **plain**: every request to a random node, which routes it in one hop.',
  );
  L.push(
    '- etcd: three members, default settings (fsync of the WAL per batch), through the v3 JSON gateway (`POST /v3/kv/put`, `/v3/kv/range`, base64) over keep-alive HTTP/1.1, each request to a random member; reads are etcd\'s default, linearizable.',
  );
  L.push(`- Redis: \`redis-server --appendonly yes --appendfsync always --save ''\`, RESP, the same client as chainkv (${r.connsPerNode} connections).`);
  L.push(
    '- **The generator shares the 2 cores with the servers** it measures: every figure is for servers and client together on one small machine, and the generator\'s own CPU share is in the tables ("gen CPU", share of both cores; "servers CPU" likewise). The machine was also shared with other engineers\' test runs, so the absolute numbers are noisy; the ratios, measured minutes apart, are the more meaningful part.',
  );
  for (const n of r.notes) L.push(`- Note: ${n}`);
  L.push('');
  if (chartRel !== undefined) {
    L.push(`![throughput and p99 at c=64](${chartRel})`);
    L.push('');
  }
  if (r.failures.length > 0) {
    L.push('## Failures in this run');
    L.push('');
    for (const f of r.failures) L.push(`- ${f}`);
    L.push('');
  }
  L.push('## Targets');
  L.push('');
  L.push(`Measured on the \`${REF}\` rows (durable, ring-aware client) against etcd and Redis from the same run.`);
  L.push('');
  L.push('| target | goal | measured | result |');
  L.push('|---|---|---|---|');
  for (const t of targets(r)) L.push(`| ${t.name} | ${t.goal} | ${t.measured} | ${t.met === undefined ? 'n/a' : t.met ? `**met** — ${t.margin.replace(/^met: /, '')}` : `**missed** — ${t.margin.replace(/^missed: /, '')}`} |`);
  L.push('');
  if (r.analysis !== undefined) {
    L.push(r.analysis.replace(/^<!--[\s\S]*?-->\s*/, '').trimEnd());
    L.push('');
  }
  if (r.rows.length > 0) {
    L.push('## Throughput and latency');
    L.push('');
    for (const w of WORKLOADS) {
      const rows = r.rows.filter((x) => x.workload === w);
      if (rows.length === 0) continue;
      L.push(`### ${w === 'write' ? '100% writes' : w === 'read' ? '100% reads' : '50% reads, 50% writes'}`);
      L.push('');
      L.push('| c | system | ops/s | p50 ms | p99 ms | p999 ms | errors | gen CPU | servers CPU |');
      L.push('|---:|---|---:|---:|---:|---:|---:|---:|---:|');
      for (const c of concurrencies(rows)) {
        for (const x of rows.filter((y) => y.concurrency === c)) {
          L.push(`| ${c} | ${x.system} | ${f0(x.opsPerSec)} | ${f2(x.p50)} | ${f2(x.p99)} | ${f2(x.p999)} | ${x.errors} | ${pct(x.genCpuShare)} | ${pct(x.serverCpuShare)} |`);
        }
      }
      L.push('');
    }
    const withErr = r.rows.filter((x) => x.errors > 0);
    if (withErr.length > 0) {
      L.push('Errors seen (first messages per point):');
      L.push('');
      for (const x of withErr) L.push(`- ${x.system} ${x.workload} c=${x.concurrency}: ${x.errors} errors — ${x.errorSamples.map((s) => `\`${s}\``).join('; ')}`);
      L.push('');
    }
    L.push('### Ratios per point');
    L.push('');
    L.push('| workload | c | chainkv | ops/s ÷ etcd | ops/s ÷ Redis | p99 ÷ etcd p99 |');
    L.push('|---|---:|---|---:|---:|---:|');
    for (const w of WORKLOADS) {
      for (const c of concurrencies(r.rows)) {
        const e = find(r.rows, 'etcd', w, c);
        const rd = find(r.rows, 'redis', w, c);
        if (e === undefined && rd === undefined) continue;
        for (const sys of systemsOf(r.rows).filter((s) => s.startsWith('chainkv'))) {
          const a = find(r.rows, sys, w, c);
          if (a === undefined) continue;
          L.push(`| ${w} | ${c} | ${sys} | ${ratio(e ? a.opsPerSec / e.opsPerSec : NaN)} | ${ratio(rd ? a.opsPerSec / rd.opsPerSec : NaN)} | ${ratio(e ? a.p99 / e.p99 : NaN)} |`);
        }
      }
    }
    L.push('');
    L.push('### Load generator CPU');
    L.push('');
    L.push('| system | mean gen CPU | max gen CPU | mean servers CPU |');
    L.push('|---|---:|---:|---:|');
    for (const sys of systemsOf(r.rows)) {
      const rows = r.rows.filter((x) => x.system === sys);
      const mean = rows.reduce((s, x) => s + x.genCpuShare, 0) / rows.length;
      const max = Math.max(...rows.map((x) => x.genCpuShare));
      const srv = rows.reduce((s, x) => s + x.serverCpuShare, 0) / rows.length;
      L.push(`| ${sys} | ${pct(mean)} | ${pct(max)} | ${pct(srv)} |`);
    }
    L.push('');
    L.push('Shares are of both cores (100% = 2 cores busy). Where generator + servers approach 100%, the machine, not the system, is the limit.');
    L.push('');
  }
  if (r.rss.length > 0) {
    L.push('## Peak memory per process (throughput phases)');
    L.push('');
    L.push(`Peak RSS (VmHWM, polled every 200 ms) of each server process while it was preloaded with ${f0(r.keys)} keys and driven; RssAnon/RssFile are the largest anonymous and file-backed (for chainkv: LMDB's memory map) parts seen.`);
    L.push('');
    L.push('| phase | process | peak RSS MiB | max RssAnon MiB | max RssFile MiB |');
    L.push('|---|---|---:|---:|---:|');
    for (const p of r.rss) L.push(`| ${p.system} | ${p.label} | ${mib(p.hwmKb)} | ${mib(p.maxAnonKb)} | ${mib(p.maxFileKb)} |`);
    L.push('');
    const pre = Object.entries(r.preloadS);
    if (pre.length > 0) {
      L.push(`Untimed preload of ${f0(r.keys)} keys (batched MSET / etcd txn of 100): ${pre.map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')}.`);
      L.push('');
    }
  }
  if (r.memory !== undefined) {
    const mm = r.memory;
    L.push(`## Memory with ${f0(mm.keys)} keys of 100 bytes`);
    L.push('');
    L.push(
      `Each system fresh, loaded with ${f0(mm.keys)} keys (16-byte keys, 100-byte values; batched MSET of 100 pairs / etcd txn of 100 puts, 16 batches in flight), then idle for 3 s. chainkv keeps each key on three of five nodes, so a node holds about 60% of the keys on average (more on the lopsided ring's big owners); each etcd member holds all of them.`,
    );
    L.push('');
    L.push('| system | process | peak RSS MiB | max RssAnon MiB | max RssFile MiB |');
    L.push('|---|---|---:|---:|---:|');
    for (const p of mm.processes) L.push(`| ${p.system} | ${p.label} | ${mib(p.hwmKb)} | ${mib(p.maxAnonKb)} | ${mib(p.maxFileKb)} |`);
    L.push('');
    L.push(`Load time: ${Object.entries(mm.loadS).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')}. On disk after loading: ${Object.entries(mm.diskKb).map(([k, v]) => `${k} ${mib(v)} MiB`).join(', ')}.`);
    L.push('');
  }
  if (r.catchup !== undefined || r.gaps.length > 0) {
    L.push('## Recovery (chainkv, durability fsync, fresh cluster)');
    L.push('');
  }
  if (r.catchup !== undefined) {
    const c = r.catchup;
    L.push('### Catch-up');
    L.push('');
    L.push(
      `${f0(c.loaded)} keys of 100 bytes loaded (${c.loadS.toFixed(1)} s); node ${c.victim} (the node in the most chains by ring share) SIGKILLed; ${f0(c.writtenWhileDown)} new keys written through the survivors (${c.writeWhileDownS.toFixed(1)} s), ` +
        `${f0(c.toCopy)} of them in ${c.victim}'s partitions; ${c.victim} restarted. From the spawn of the new process until every node's \`/cluster\` shows it \`up\`: **${c.restartToUpS.toFixed(2)} s → ${f0(c.keysPerSec)} keys/s**; ` +
        `from its first \`/health\` answer (process start-up excluded): ${c.healthToUpS.toFixed(2)} s → ${f0(c.keysPerSecAfterBoot)} keys/s.`,
    );
    L.push('');
  }
  if (r.gaps.length > 0) {
    L.push('### Unavailability after SIGKILL');
    L.push('');
    L.push(
      'One client in a tight loop of `SET k v_n` then `GET k` (expecting `v_n`), through a node outside the key\'s chain (that node routes and retries; the client\'s own connection survives). ' +
        'The chain member is SIGKILLed, restarted 3 s later, and the loop goes on until it is back up everywhere plus 1 s. Gap = longest time between two successful operations.',
    );
    L.push('');
    L.push('| killed | node | longest gap after kill | marked down everywhere after | longest gap during rejoin | restart to /health | restart to up everywhere | ops | errors | stale reads |');
    L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const g of r.gaps) {
      L.push(`| ${g.role} of "${g.key}" | ${g.node}${g.wasLeader ? ', the configuration leader' : ''} (client via ${g.via}) | ${f0(g.killGapMs)} ms | ${f0(g.markedDownMs)} ms | ${f0(g.rejoinGapMs)} ms | ${g.bootS.toFixed(2)} s | ${g.rejoinS.toFixed(2)} s | ${f0(g.ops)} | ${g.errors} | ${g.staleReads} |`);
    }
    L.push('');
    const errs = r.gaps.filter((g) => g.errors > 0);
    for (const g of errs) L.push(`- ${g.role}: errors ${g.errorSamples.map((s) => `\`${s}\``).join('; ')}`);
    if (errs.length > 0) L.push('');
  }
  if (r.profiles.length > 0) {
    L.push('## CPU profiles (--cpu-prof)');
    L.push('');
    L.push('Self time per function (summed over call paths by function name, script and line), top 15 per node; share of the node\'s busy (non-idle) sampled time.');
    L.push('');
    for (const p of r.profiles) {
      L.push(`### ${p.pass}, node ${p.node}: ${(p.summary.totalMs / 1000).toFixed(1)} s sampled, ${((1 - p.summary.idleMs / Math.max(1, p.summary.totalMs)) * 100).toFixed(0)}% busy`);
      L.push('');
      L.push('| self ms | share | function |');
      L.push('|---:|---:|---|');
      for (const t of p.summary.top) L.push(`| ${f0(t.selfMs)} | ${pct(t.share)} | \`${t.fn}\` |`);
      L.push('');
    }
  }
  if (r.logs.length > 0) {
    L.push('## Server log warnings and errors');
    L.push('');
    for (const l of r.logs) L.push(`- ${l.process}: ${l.warn} warnings, ${l.error} errors${l.samples.length > 0 ? ` — e.g. ${l.samples.map((s) => `\`${s}\``).join('; ')}` : ''}`);
    L.push('');
  }
  L.push('## Reproducing');
  L.push('');
  L.push('```sh');
  L.push('npm run bench                                  # full run: 20 s per point (about half an hour)');
  L.push('npm run bench -- --quick                       # 3 s per point (about 6 minutes; 12 with --memory)');
  L.push('npm run bench -- --systems chainkv,etcd        # a subset');
  L.push('npm run bench -- --memory                      # adds the 1M-key memory comparison (slow)');
  L.push('npm run bench -- --memory --no-load --no-recovery   # only the memory comparison');
  L.push('npm run bench -- --cpu-prof                    # chainkv nodes under --cpu-prof, top functions in the report');
  L.push('npm run bench -- --chainkv-root ../other-checkout   # benchmark the nodes of another checkout (e.g. a branch)');
  L.push('```');
  L.push('');
  L.push('etcd-server, redis-server and librsvg2-bin (for the chart) are installed with apt-get when missing. Every server runs in its own process group and is killed on exit, on Ctrl-C and on errors.');
  L.push('');
  return L.join('\n');
}
