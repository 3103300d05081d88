import { Histogram } from './histogram.ts';
import { readCpuSeconds, sleep } from './procs.ts';
import type { KvTarget, ValuePool } from './targets.ts';

/**
 * The closed-loop load generator: `concurrency` workers, each with one request outstanding,
 * issuing the next as soon as the previous completes. Keys uniform over the keyspace.
 * Operations that complete during the measured window (after the warm-up) are counted and
 * their latencies recorded; errors are counted (and the first few kept) — never hidden.
 */
export type Workload = 'write' | 'read' | 'mixed';

export interface PointSpec {
  workload: Workload;
  concurrency: number;
  durationMs: number;
  warmupMs: number;
  keyCount: number;
}

export interface PointResult {
  workload: Workload;
  concurrency: number;
  /** Successful operations in the measured window. */
  ops: number;
  opsPerSec: number;
  p50: number;
  p99: number;
  p999: number;
  mean: number;
  max: number;
  /** Failed operations (error replies, timeouts, missing keys after the preload) in the measured window. */
  errors: number;
  errorSamples: string[];
  /** Generator CPU over the window / (wall time x cores). */
  genCpuShare: number;
  /** Server processes' CPU over the window / (wall time x cores). */
  serverCpuShare: number;
  measuredMs: number;
}

export interface RunContext {
  cores: number;
  /** Server pids whose CPU time is sampled around the window. */
  serverPids: () => number[];
  values: ValuePool;
}

function cpuOf(pids: number[]): number {
  let s = 0;
  for (const p of pids) s += readCpuSeconds(p) ?? 0;
  return s;
}

export async function runPoint(target: KvTarget, spec: PointSpec, ctx: RunContext): Promise<PointResult> {
  const hist = new Histogram();
  let errors = 0;
  const errorSamples: string[] = [];
  const start = performance.now();
  const measureFrom = start + spec.warmupMs;
  const end = measureFrom + spec.durationMs;
  let counting = false;
  let cpu0 = process.cpuUsage();
  const pids = ctx.serverPids();
  let srv0 = cpuOf(pids);
  let wall0 = measureFrom;

  const noteError = (err: unknown): void => {
    if (!counting) return;
    errors++;
    if (errorSamples.length < 5) errorSamples.push(err instanceof Error ? err.message : String(err));
  };

  const once = async (isWrite: boolean): Promise<void> => {
    const i = Math.floor(Math.random() * spec.keyCount);
    if (isWrite) {
      await target.set(i, ctx.values.next());
    } else {
      const v = await target.get(i);
      if (v === null) throw new Error(`key #${i} not found (it was preloaded)`);
    }
  };

  const worker = async (): Promise<void> => {
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) return;
      const isWrite = spec.workload === 'write' || (spec.workload === 'mixed' && Math.random() < 0.5);
      let failed = false;
      try {
        await once(isWrite);
      } catch (err) {
        failed = true;
        noteError(err);
      }
      const t1 = performance.now();
      if (!counting && t1 >= measureFrom) {
        // First completion in the window: start the CPU clocks here.
        counting = true;
        cpu0 = process.cpuUsage();
        srv0 = cpuOf(pids);
        wall0 = t1;
      }
      if (counting && t1 <= end && !failed) hist.recordMs(t1 - t0);
      if (failed) await sleep(1); // no hot spin on a dead connection
    }
  };

  await Promise.all(Array.from({ length: spec.concurrency }, () => worker()));
  const wall = Math.max(1, Math.min(performance.now(), end) - wall0);
  const cpu = process.cpuUsage(cpu0);
  const srv = cpuOf(pids) - srv0;
  const measuredMs = Math.max(1, end - Math.max(measureFrom, wall0));
  return {
    workload: spec.workload,
    concurrency: spec.concurrency,
    ops: hist.count,
    opsPerSec: (hist.count / measuredMs) * 1000,
    p50: hist.quantileMs(0.5),
    p99: hist.quantileMs(0.99),
    p999: hist.quantileMs(0.999),
    mean: hist.meanMs(),
    max: hist.max / 1000,
    errors,
    errorSamples,
    genCpuShare: (cpu.user + cpu.system) / 1000 / (wall * ctx.cores),
    serverCpuShare: (srv * 1000) / (wall * ctx.cores),
    measuredMs,
  };
}

/** Untimed bulk load of keys 0..count-1: batches of `batch` keys, `parallel` batches in flight. */
export async function preload(
  target: KvTarget,
  count: number,
  values: ValuePool,
  opts: { batch?: number; parallel?: number; onProgress?: (done: number) => void; from?: number } = {},
): Promise<number> {
  const batch = opts.batch ?? 100;
  const parallel = opts.parallel ?? 16;
  const from = opts.from ?? 0;
  const t0 = performance.now();
  let next = from;
  let done = 0;
  let lastReport = t0;
  const worker = async (): Promise<void> => {
    while (next < from + count) {
      const lo = next;
      const hi = Math.min(from + count, lo + batch);
      next = hi;
      const idx = Array.from({ length: hi - lo }, (_, j) => lo + j);
      let tries = 0;
      for (;;) {
        try {
          await target.setMany(idx, () => values.next());
          break;
        } catch (err) {
          if (++tries >= 5) throw new Error(`preload of keys ${lo}..${hi - 1} failed 5 times: ${(err as Error).message}`, { cause: err });
          await sleep(200);
        }
      }
      done += hi - lo;
      const now = performance.now();
      if (opts.onProgress !== undefined && now - lastReport > 5000) {
        lastReport = now;
        opts.onProgress(done);
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, () => worker()));
  return (performance.now() - t0) / 1000;
}
