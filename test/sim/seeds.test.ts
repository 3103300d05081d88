import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSeed } from '../../src/sim/run.ts';

/**
 * 500 seeded simulator runs of the real protocol core: concurrent clients on hot keys (puts,
 * gets, deletes, and deletes of a whole partition) while
 * nodes crash (losing unsynced writes) and restart, pause, and get cut off, one at a time,
 * aimed at the head, middle and tail of a chain and at nodes in the middle of catch-up.
 * Each history must be linearizable (final reads included) and every chain must agree
 * after healing. A failing seed prints the command that replays it. Further runs below: tiny
 * pages, no faults, request ids kept by time, and nodes whose disk is wiped.
 */
const SEEDS = Number(process.env.CHAINKV_SIM_SEEDS ?? 500);
const BATCH = 50;

for (let from = 1; from <= SEEDS; from += BATCH) {
  const to = Math.min(SEEDS, from + BATCH - 1);
  test(`simulated faults, seeds ${from}-${to}`, () => {
    const failures: string[] = [];
    let okOps = 0;
    let coalesced = 0;
    for (let seed = from; seed <= to; seed++) {
      const r = runSeed({ seed, durationMs: 4000 });
      okOps += r.okOps;
      coalesced += r.coalesced;
      if (!r.ok) {
        failures.push(`seed ${seed}: ${r.problems.join('; ').slice(0, 2000)}\n  faults: ${r.faults.join('; ')}\n  replay: npm run sim -- --seed ${seed} --duration 4000 --verbose`);
      }
    }
    assert.ok(okOps > (to - from + 1) * 300, `too little progress: ${okOps} successful operations`);
    // The runs must exercise the merging of fwd and ack messages the runtime does per turn.
    assert.ok(coalesced > (to - from + 1) * 10, `coalescing barely happened: ${coalesced} outputs merged`);
    assert.deepEqual(failures, []);
  });
}

test('with pages of one entry (catch-up, levelling, scans) and garbage collected a row per tick, seeds 1-40 stay linearizable', () => {
  const failures: string[] = [];
  let pages = 0;
  let levelPages = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const r = runSeed({ seed, durationMs: 4000, timing: { pageBytes: 1, gcRowsPerTick: 1 }, keepLogs: true });
    pages += r.logs.filter((l) => l.includes('catching up from')).length;
    levelPages += r.logs.filter((l) => l.includes('more to come')).length;
    if (!r.ok) failures.push(`seed ${seed}: ${r.problems.join('; ').slice(0, 2000)}\n  faults: ${r.faults.join('; ')}`);
  }
  assert.deepEqual(failures, []);
  // Each such line is a catch-up page with more to come: the bound must have cut pages.
  assert.ok(pages > 40, `only ${pages} intermediate catch-up pages`);
  // Likewise for levelling a chain after a view change (sync and pull answers).
  assert.ok(levelPages > 40, `only ${levelPages} intermediate levelling pages`);
});

test('without faults, every operation succeeds', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const r = runSeed({ seed, durationMs: 2000, faults: false, dropRate: 0 });
    assert.ok(r.ok, r.problems.join('\n'));
    assert.equal(r.okOps, r.ops, `seed ${seed}: ${r.ops - r.okOps} operations did not succeed`);
  }
});

test('request ids kept in storage recognise a retry after a restart, kept by time as well as by count', () => {
  // In seeds 865 and 959 a retry reaches a head after it restarted. With no request ids kept
  // by count (keepLogSeqs 0) they pass, because ids committed within a retry deadline are kept
  // by time; with that horizon ignored (idHorizon returning the committed seq) both apply the
  // retry twice and break linearizability, as they did before ids were kept by time (checked
  // when this test was written). If a protocol change moves these seeds away from that case,
  // find others by breaking idHorizon that way and running
  // `npm run sim -- --seeds 1000 --duration 4000 --keep-log-seqs 0`.
  for (const seed of [865, 959]) {
    const byTime = runSeed({ seed, durationMs: 4000, timing: { keepLogSeqs: 0 } });
    assert.ok(byTime.ok, `seed ${seed}, ids kept by time alone: ${byTime.problems.join('; ').slice(0, 2000)}`);
    const byDefault = runSeed({ seed, durationMs: 4000 });
    assert.ok(byDefault.ok, `seed ${seed}: ${byDefault.problems.join('; ').slice(0, 2000)}`);
  }
});

test('nodes wiped (empty store and Raft state) and restarted under their names: seeds 1-150 stay linearizable and every wiped node rejoins', () => {
  // Before amnesiac starts were handled (design.md §4.7), 6 of 600 such seeds failed: stale
  // reads from a wiped tail that took its empty store for a complete one, and chains that
  // never became ready again.
  const failures: string[] = [];
  let wipes = 0;
  let rejoins = 0;
  let freshLater = 0;
  for (let seed = 1; seed <= 150; seed++) {
    const r = runSeed({ seed, durationMs: 4000, wipes: true, keepLogs: true });
    wipes += r.faults.filter((f) => /^\d+ wipe /.test(f)).length;
    rejoins += r.logs.filter((l) => l.includes('started without state while the cluster holds data')).length;
    // After the cluster's first start, no node may take the path of a cluster without data.
    freshLater += r.logs.filter((l) => l.includes('started without state in a cluster without data') && Number.parseFloat(l) > 700).length;
    if (!r.ok) failures.push(`seed ${seed}: ${r.problems.join('; ').slice(0, 2000)}\n  faults: ${r.faults.join('; ')}\n  replay: npm run sim -- --seed ${seed} --duration 4000 --wipes --verbose`);
  }
  assert.deepEqual(failures, []);
  assert.ok(wipes >= 50, `only ${wipes} wipes`);
  // At least one such line per wipe (a wiped node that crashes again before its resolution is
  // on disk resolves, and says so, once more).
  assert.ok(rejoins >= wipes, `every wiped node found that the cluster holds data and rejoined: ${rejoins} of ${wipes}`);
  assert.equal(freshLater, 0, 'a wiped node took the cluster for a new one');
});

test('a head that left its chain with writes pending forgets their request ids: a retry after it rejoined is applied, not taken for whatever the chain put at that seq', () => {
  // Seed 3403 (with --wipes, although no node is wiped in it): a head cut off with a write
  // pending is marked down, rejoins, and as head again gets the coordinator's retry. Keeping
  // the id of the dropped entry, it answered "ok" for a seq the chain had given to another
  // write, and the write was lost (checked when this test was written).
  const r = runSeed({ seed: 3403, durationMs: 6000, wipes: true });
  assert.ok(r.ok, r.problems.join('; ').slice(0, 2000));
});

test('with the Raft log compacted to one committed entry, seeds 1-60 stay linearizable and lagging nodes take snapshots', () => {
  const failures: string[] = [];
  let snapshots = 0;
  for (let seed = 1; seed <= 60; seed++) {
    const r = runSeed({ seed, durationMs: 4000, timing: { logKeep: 1 }, wipes: seed % 2 === 0, keepLogs: true });
    snapshots += r.logs.filter((l) => l.includes('as a snapshot')).length;
    if (!r.ok) failures.push(`seed ${seed}: ${r.problems.join('; ').slice(0, 2000)}\n  faults: ${r.faults.join('; ')}\n  replay: npm run sim -- --seed ${seed} --duration 4000 --raft-log-keep 1${seed % 2 === 0 ? ' --wipes' : ''} --verbose`);
  }
  assert.deepEqual(failures, []);
  assert.ok(snapshots >= 20, `only ${snapshots} snapshots taken`);
});

test('a member still levelling when the view changes is no longer level: it cannot become a tail that lacks what the chain committed', () => {
  // Seed 7227 (with wipes and the Raft log compacted to one entry): a tail that rejoined took
  // the head's pending entries and committed them while the middle was still levelling; the
  // tail was then wiped, and the middle, counted level from its last ready view, became tail
  // and served a value older than an acknowledged write (checked when this test was written).
  const r = runSeed({ seed: 7227, durationMs: 6000, wipes: true, timing: { logKeep: 1 } });
  assert.ok(r.ok, r.problems.join('; ').slice(0, 2000));
});

test('followers blocked from appending a removal by their lease promises promise the node nothing more, so the removal commits', () => {
  // Seed 100848 (with wipes and the Raft log compacted to one entry): the leader proposed to
  // take out a node that had been silent to it, but the node still renewed its leases with the
  // followers, whose promises then blocked the removal, and every later view change, until
  // the run ended (checked when this test was written).
  const r = runSeed({ seed: 100848, durationMs: 6000, wipes: true, timing: { logKeep: 1 } });
  assert.ok(r.ok, r.problems.join('; ').slice(0, 2000));
});
