import { checkHistory, describeViolation } from './linearizability.ts';
import { CLEAR_PROCESSES, FINAL_READ_PROCESSES, SimCluster } from './cluster.ts';
import type { ReplicaTiming } from '../core/replica.ts';

/**
 * One simulated run: five nodes of the real core, concurrent clients on a few hot keys,
 * messages delayed, lost, duplicated and (rarely) reordered,
 * and a nemesis that crashes (losing unsynced writes) and restarts, pauses and resumes,
 * and cuts off and reconnects one node at a time, aimed in turn at the head, the middle
 * and the tail of one chain, at random nodes, and at a node in the middle of catch-up.
 * Then everything heals and the run checks that the history is linearizable (final reads
 * included, so a lost acknowledged write or a resurrected delete fails it) and that every
 * chain's members hold the same data.
 */
export interface RunOptions {
  seed: number;
  /** Virtual milliseconds of client load with faults. */
  durationMs?: number;
  clients?: number;
  keys?: string[];
  faults?: boolean;
  dropRate?: number;
  dupRate?: number;
  reorderRate?: number;
  clockDrift?: number;
  keepLogs?: boolean;
  traceKey?: string;
  /** Protocol timing overrides (e.g. a tiny `pageBytes`, so that every catch-up and retransmission pages). */
  timing?: Partial<ReplicaTiming>;
  /** Share of client operations that delete a whole partition (`*` is one such clear per partition); default 0.01. */
  clearRate?: number;
  /** Also wipe nodes: a quarter of the crashes come back with an empty store and Raft state. */
  wipes?: boolean;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  problems: string[];
  ops: number;
  okOps: number;
  /** Outputs merged away by coalescing (core/coalesce.ts) over the run. */
  coalesced: number;
  faults: string[];
  logs: string[];
}

type Fault = 'crash' | 'wipe' | 'pause' | 'isolate';

export function runSeed(opts: RunOptions): RunResult {
  try {
    return runSeedUnchecked(opts);
  } catch (err) {
    // A failed invariant inside a core is a failure of the seed, not of the runner.
    return { seed: opts.seed, ok: false, problems: [`exception: ${(err as Error).stack ?? String(err)}`], ops: 0, okOps: 0, coalesced: 0, faults: [], logs: [] };
  }
}

function runSeedUnchecked(opts: RunOptions): RunResult {
  const seed = opts.seed;
  const duration = opts.durationMs ?? 6000;
  const keys = opts.keys ?? ['a', '0', 'x', 'k1', 'k2'];
  const sim = new SimCluster({
    seed,
    delayMs: [0.05, 2],
    dropRate: opts.dropRate ?? 0.002,
    dupRate: opts.dupRate ?? 0.002,
    reorderRate: opts.reorderRate ?? 0.002,
    clockDrift: opts.clockDrift ?? 0.01,
    keepLogs: opts.keepLogs ?? false,
    traceKey: opts.traceKey ?? '',
    timing: opts.timing ?? {},
  });
  const rng = sim.rng;
  const faults: string[] = [];
  const problems: string[] = [];

  // Let the configuration group elect a leader and the chains become ready.
  sim.runUntil(800);
  const start = sim.now;
  const until = start + duration;
  sim.startClients({ count: opts.clients ?? 8, keys, until, thinkMs: [0, 5], mix: { put: 0.45, get: 0.45, del: 0.1, clear: opts.clearRate ?? 0.01 } });

  if (opts.faults ?? true) {
    const chainA = sim.ring.canonicalChain(sim.ring.partitionOf('a'));
    const aims = [chainA[0]!, chainA[1]!, chainA[2]!];
    let current: { node: string; kind: Fault } | null = null;
    let round = 0;
    const allUp = (): boolean => {
      const views = sim.names.filter((n) => sim.node(n).up).map((n) => sim.node(n).replica.currentView);
      return views.length > 0 && views.every((v) => Object.values(v.states).every((st) => st === 'up'));
    };
    const joiningNode = (): string | undefined => {
      const v = sim.node(sim.names.find((n) => sim.node(n).up) ?? sim.names[0]!).replica.currentView;
      return sim.names.find((n) => v.states[n] === 'joining');
    };
    const heal = (): void => {
      if (current === null) return;
      const { node, kind } = current;
      if (kind === 'crash' || kind === 'wipe') sim.restart(node);
      else if (kind === 'pause') sim.resume(node);
      else sim.heal(node);
      faults.push(`${sim.now.toFixed(0)} heal ${kind} ${node}`);
      current = null;
    };
    const inject = (): void => {
      if (sim.now >= until - 500) return;
      if (current === null) {
        const joining = joiningNode();
        let node: string | undefined;
        // Every third fault, if someone is catching up, hit it mid catch-up.
        if (joining !== undefined && round % 3 === 2) node = joining;
        else if (allUp()) node = round % 2 === 0 ? aims[Math.floor(round / 2) % 3] : rng.pick(sim.names);
        if (node !== undefined) {
          const kind: Fault = opts.wipes === true && rng.next() < 0.25 ? 'wipe' : rng.pick(['crash', 'crash', 'pause', 'isolate'] as const);
          round++;
          current = { node, kind };
          faults.push(`${sim.now.toFixed(0)} ${kind} ${node}`);
          if (kind === 'crash') sim.crash(node, true);
          else if (kind === 'wipe') sim.wipe(node);
          else if (kind === 'pause') sim.pause(node);
          else sim.isolate(node);
          sim.at(sim.now + 150 + rng.next() * 1500, heal);
        }
      }
      sim.at(sim.now + 100 + rng.next() * 600, inject);
    };
    sim.at(start + 200 + rng.next() * 300, inject);
    sim.at(until, heal);
  }

  sim.runUntil(until + 200);
  // Heal: wait until every node is up again and the chains are quiet.
  const settled = sim.runWhile(() => !sim.isQuiet() || sim.names.some((n) => Object.values(sim.node(n).replica.currentView.states).some((st) => st !== 'up')), 20_000);
  if (!settled) problems.push(`the cluster did not settle with every node up within 20 s of healing:\n    ${sim.busy().join('\n    ')}`);
  sim.finalReads(keys, sim.names[seed % 5]!);
  sim.runUntil(sim.now + 6000);

  const ops = sim.ops();
  const check = checkHistory(ops);
  if (check.unknown) problems.push('linearizability check ran out of budget');
  for (const v of check.violations) problems.push(describeViolation(v));
  const finals = ops.filter((o) => o.process >= FINAL_READ_PROCESSES && o.process < CLEAR_PROCESSES);
  if (finals.some((o) => o.status !== 'ok')) problems.push('a final read after healing did not succeed');
  if (settled) {
    for (const [p, states] of sim.replicaStates()) {
      if (new Set(states.values()).size !== 1) problems.push(`partition ${p} differs across its chain after healing: ${JSON.stringify([...states])}`);
    }
    problems.push(...sim.liveCountMismatches());
  }
  return {
    seed,
    ok: problems.length === 0,
    problems,
    ops: ops.length,
    okOps: ops.filter((o) => o.status === 'ok').length,
    coalesced: sim.stats.coalesced,
    faults,
    logs: sim.logs,
  };
}
