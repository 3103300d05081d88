import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatReport, runFaults } from '../support/faults.ts';

/**
 * The short version of `npm run test:faults` (scripts/faults.ts): about 30 s of load from 12
 * clients on a real five-process cluster while one node at a time is killed and restarted,
 * paused and resumed, isolated and healed, killed again in the middle of catch-up, and killed
 * and restarted with an empty data directory. The
 * history must be linearizable, no acknowledged write lost, no deleted key back, every chain's
 * members identical, and every final read must succeed. CHAINKV_FAULTS_SEED replays a seed.
 */
test('faults: kill, pause, isolate, kill during catch-up and wiped disk under concurrent load', { timeout: 240_000 }, async (t) => {
  const seed = process.env.CHAINKV_FAULTS_SEED !== undefined ? Number(process.env.CHAINKV_FAULTS_SEED) : Math.floor(Math.random() * 1_000_000);
  const report = await runFaults({
    durationMs: 30_000,
    clients: 12,
    keys: 8,
    seed,
    // The plan's first five faults: kill (head of "a"), isolate (middle), pause (tail),
    // kill during catch-up, wipe (tail).
    minFaults: 5,
    minCatchupKills: 1,
    longPauses: false,
    log: process.env.CHAINKV_TEST_LOGS === '1' ? (l) => console.log(l) : undefined,
  });
  const text = formatReport(report);
  const c = report.counts;
  t.diagnostic(
    `seed ${seed}: ${report.timeline.length} faults (${report.catchupKills} during catch-up); ok/failed/timed-out/lost: ` +
      `put ${c.put.ok}/${c.put.failed}/${c.put.timedOut}/${c.put.lost}, get ${c.get.ok}/${c.get.failed}/${c.get.timedOut}/${c.get.lost}, ` +
      `delete ${c.delete.ok}/${c.delete.failed}/${c.delete.timedOut}/${c.delete.lost}; max unavailability ${report.maxUnavailableMs} ms`,
  );
  const kinds = new Set(report.timeline.map((e) => e.kind));
  const ctx = `\n${text}`;
  for (const k of ['kill', 'pause', 'isolate', 'catchup-kill', 'wipe'] as const) assert.ok(kinds.has(k), `no ${k} fault was injected${ctx}`);
  assert.ok(report.catchupKills >= 1, `no node was killed in the middle of catch-up${ctx}`);
  assert.deepEqual(report.problems, [], `problems${ctx}`);
  assert.equal(report.finalReads.failed, 0, `final reads failed${ctx}`);
  assert.ok(report.finalReads.ok > 0, `no final reads${ctx}`);
  assert.ok(!report.check.unknown, `the linearizability check ran out of budget${ctx}`);
  assert.deepEqual(report.violations, [], `violations${ctx}`);
  assert.ok(report.check.ok, `history not linearizable${ctx}`);
  assert.ok(report.chainsAgree, `chains disagree${ctx}`);
  const okOps = report.counts.put.ok + report.counts.get.ok + report.counts.delete.ok;
  assert.ok(okOps > 1000, `only ${okOps} operations succeeded${ctx}`);
  assert.ok(report.ok, text);
});
