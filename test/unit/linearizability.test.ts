import { describe, it } from 'node:test';
import { Prng } from '../../src/sim/prng.ts';
import assert from 'node:assert/strict';
import {
  checkHistory,
  describeViolation,
  HistoryRecorder,
} from '../../src/sim/linearizability.ts';
import type { CheckResult, Op, OpKind, OpStatus } from '../../src/sim/linearizability.ts';

// ---------------------------------------------------------------------------
// Helpers

function op(
  process: number,
  kind: OpKind,
  key: string,
  value: string | null,
  invoke: number,
  complete: number,
  status: OpStatus = 'ok',
): Op {
  return { process, key, kind, value, invoke, complete, status };
}
const put = (p: number, key: string, v: string, inv: number, comp: number, status: OpStatus = 'ok'): Op =>
  op(p, 'put', key, v, inv, comp, status);
const get = (p: number, key: string, v: string | null, inv: number, comp: number, status: OpStatus = 'ok'): Op =>
  op(p, 'get', key, v, inv, comp, status);
const del = (p: number, key: string, inv: number, comp: number, status: OpStatus = 'ok'): Op =>
  op(p, 'delete', key, null, inv, comp, status);

function assertOk(r: CheckResult): void {
  assert.equal(r.unknown, false, r.keys.map(describeViolation).join('\n'));
  assert.deepEqual(r.violations.map(describeViolation), []);
  assert.equal(r.ok, true);
}

function assertViolationOn(r: CheckResult, key: string): void {
  assert.equal(r.ok, false);
  assert.equal(r.unknown, false);
  assert.deepEqual(r.violations.map((v) => v.key), [key]);
  const v = r.violations[0]!;
  assert.equal(v.ok, false);
  assert.equal(v.unknown, false);
  assert.ok(v.message?.includes(JSON.stringify(key)), `message should name key ${key}: ${v.message}`);
}

/** The simulator's seeded generator (mulberry32), as a function. */
function mulberry32(seed: number): () => number {
  const rng = new Prng(seed);
  return () => rng.next();
}

interface GenOptions {
  processes: number;
  keys: number;
  opsPerProcess: number;
  infoRate?: number;
  failRate?: number;
  /** Max gap between a process's ops; smaller = more concurrency. */
  maxGap?: number;
  /** Max op duration. */
  maxDuration?: number;
}

/**
 * Simulates a truly linearizable store: each op gets a random linearization
 * point inside [invoke, complete] (info ops that took effect may apply later),
 * the ops are applied to per-key registers in linearization-point order, and
 * gets return what the register held at their point. Put values are unique.
 */
function genLinearizable(rng: () => number, o: GenOptions): Op[] {
  const infoRate = o.infoRate ?? 0;
  const failRate = o.failRate ?? 0;
  const maxGap = o.maxGap ?? 3;
  const maxDuration = o.maxDuration ?? 20;
  const planned: { op: Op; lin: number; applied: boolean }[] = [];
  let counter = 0;
  for (let p = 0; p < o.processes; p++) {
    let t = rng() * 10;
    for (let j = 0; j < o.opsPerProcess; j++) {
      const invoke = t + rng() * maxGap;
      const complete = invoke + 0.01 + rng() * maxDuration;
      const rk = rng();
      const kind: OpKind = rk < 0.45 ? 'put' : rk < 0.85 ? 'get' : 'delete';
      const key = `k${Math.floor(rng() * o.keys)}`;
      const rs = rng();
      const status: OpStatus = rs < failRate ? 'fail' : rs < failRate + infoRate ? 'info' : 'ok';
      let lin = invoke + rng() * (complete - invoke);
      let applied = status === 'ok';
      if (status === 'info' && rng() < 0.5) {
        applied = true;
        lin = invoke + rng() * (complete + 30 - invoke); // may apply after the client gave up
      }
      const value = kind === 'put' ? `v${++counter}` : null;
      planned.push({ op: { process: p, key, kind, value, invoke, complete, status }, lin, applied });
      t = complete;
    }
  }
  const applied = planned.filter((x) => x.applied).sort((a, b) => a.lin - b.lin);
  const registers = new Map<string, string | null>();
  for (const { op: o2 } of applied) {
    if (o2.kind === 'put') registers.set(o2.key, o2.value);
    else if (o2.kind === 'delete') registers.set(o2.key, null);
    else o2.value = registers.get(o2.key) ?? null;
  }
  for (const x of planned) {
    // Info gets carry no constraint; give them nonsense to prove they are ignored.
    if (x.op.kind === 'get' && x.op.status === 'info') x.op.value = 'garbage-from-info-get';
  }
  return planned.map((x) => x.op);
}

/**
 * Makes one read stale: picks an ok get G and ok puts P1 (value v1), P2 on the
 * same key with P1 completing before P2 is invoked and P2 completing before G
 * is invoked, and makes G return v1. Since v1 is unique, G would have to be
 * linearized after P1 with no write in between, but P2 is forced between
 * them: a certain violation. Returns null if the history has no such triple.
 */
function injectStaleRead(rng: () => number, ops: readonly Op[]): { ops: Op[]; key: string } | null {
  const candidates: { g: number; v1: string }[] = [];
  const okPuts = ops.filter((o) => o.kind === 'put' && o.status === 'ok');
  for (let g = 0; g < ops.length; g++) {
    const G = ops[g]!;
    if (G.kind !== 'get' || G.status !== 'ok') continue;
    const puts = okPuts.filter((p) => p.key === G.key);
    let first: Op | null = null;
    for (const p of puts) if (first === null || p.complete < first.complete) first = p;
    if (first === null) continue;
    const p1 = first;
    const p2 = puts.find((p) => p.complete < G.invoke && p1.complete < p.invoke);
    if (p2 !== undefined) candidates.push({ g, v1: p1.value as string });
  }
  if (candidates.length === 0) return null;
  const c = candidates[Math.floor(rng() * candidates.length)]!;
  const out = ops.map((o) => ({ ...o }));
  const G = out[c.g]!;
  G.value = c.v1;
  return { ops: out, key: G.key };
}

// ---------------------------------------------------------------------------

describe('checkHistory: basics', () => {
  it('an empty history is ok', () => {
    const r = checkHistory([]);
    assertOk(r);
    assert.deepEqual(r.keys, []);
  });

  it('a sequential history is ok', () => {
    const h = [
      get(1, 'a', null, 0, 1),
      put(1, 'a', '1', 2, 3),
      get(2, 'a', '1', 4, 5),
      put(2, 'a', '2', 6, 7),
      get(1, 'a', '2', 8, 9),
      del(1, 'a', 10, 11),
      get(2, 'a', null, 12, 13),
      put(1, 'a', '3', 14, 15),
      get(1, 'a', '3', 16, 17),
    ];
    const r = checkHistory(h);
    assertOk(r);
    assert.equal(r.keys.length, 1);
    assert.deepEqual(r.keys[0], { key: 'a', ok: true, unknown: false, ops: 9 });
  });

  it('input order does not matter', () => {
    const h = [get(2, 'a', '2', 8, 9), put(1, 'a', '2', 4, 5), put(1, 'a', '1', 0, 1), get(2, 'a', '1', 2, 3)];
    assertOk(checkHistory(h));
  });

  it('a stale read is a violation that names the key', () => {
    const h = [
      put(1, 'a', '1', 0, 10),
      put(1, 'a', '2', 20, 30),
      get(2, 'a', '1', 40, 50),
    ];
    const r = checkHistory(h);
    assertViolationOn(r, 'a');
    const v = r.violations[0]!;
    assert.ok(v.detail);
    assert.equal(v.detail.blockedOp, h[2]);
    assert.equal(v.detail.linearizedCount, 2);
    assert.equal(v.detail.stateAfterPrefix, '2');
    assert.deepEqual(v.detail.lastLinearized, [h[0], h[1]]);
    const text = describeViolation(v);
    assert.match(text, /"a"/);
    assert.match(text, /p2 get -> "1" \[invoke 40, complete 50\] ok/);
    assert.match(text, /p1 put "2" \[invoke 20, complete 30\] ok/);
  });

  it('a read of a value never written is a violation', () => {
    const r = checkHistory([put(1, 'a', '1', 0, 1), get(2, 'a', 'zzz', 2, 3)]);
    assertViolationOn(r, 'a');
    assert.match(r.violations[0]!.message ?? '', /ever wrote it/);
  });

  it('a read of absent after a completed put with no delete is a violation', () => {
    const r = checkHistory([put(1, 'a', '1', 0, 1), get(2, 'a', null, 2, 3)]);
    assertViolationOn(r, 'a');
  });

  it('a read of absent after a concurrent put is ok', () => {
    assertOk(checkHistory([put(1, 'a', '1', 0, 10), get(2, 'a', null, 2, 3)]));
  });

  it('delete then get absent is ok; get of the old value after the delete is not', () => {
    const base = [put(1, 'a', '1', 0, 1), del(1, 'a', 2, 3)];
    assertOk(checkHistory([...base, get(2, 'a', null, 4, 5)]));
    assertViolationOn(checkHistory([...base, get(2, 'a', '1', 4, 5)]), 'a');
  });

  it('a get concurrent with a put may return the old or the new value', () => {
    const base = [put(1, 'a', 'old', 0, 1), put(1, 'a', 'new', 10, 20)];
    assertOk(checkHistory([...base, get(2, 'a', 'old', 12, 18)]));
    assertOk(checkHistory([...base, get(2, 'a', 'new', 12, 18)]));
    // ...but not after the put completed.
    assertViolationOn(checkHistory([...base, get(2, 'a', 'old', 21, 22)]), 'a');
  });

  it('touching intervals (complete == invoke) count as concurrent', () => {
    assertOk(checkHistory([put(1, 'a', '1', 0, 10), get(2, 'a', null, 10, 20)]));
    assertViolationOn(checkHistory([put(1, 'a', '1', 0, 10), get(2, 'a', null, 10.5, 20)]), 'a');
    // A zero-length op is fine.
    assertOk(checkHistory([put(1, 'a', '1', 5, 5), get(2, 'a', '1', 5, 5)]));
  });

  it('two concurrent puts: later reads must agree on the final order', () => {
    const writes = [put(1, 'a', '1', 0, 10), put(2, 'a', '2', 0, 10)];
    assertOk(checkHistory([...writes, get(3, 'a', '2', 20, 21), get(3, 'a', '2', 22, 23)]));
    assertOk(checkHistory([...writes, get(3, 'a', '1', 20, 21), get(4, 'a', '1', 22, 23)]));
    assertViolationOn(checkHistory([...writes, get(3, 'a', '2', 20, 21), get(4, 'a', '1', 22, 23)]), 'a');
    assertViolationOn(checkHistory([...writes, get(3, 'a', '1', 20, 21), get(4, 'a', '2', 22, 23)]), 'a');
  });

  it('concurrent reads during two concurrent puts may see either order, but not both', () => {
    const writes = [put(1, 'a', '1', 0, 100), put(2, 'a', '2', 0, 100)];
    // Reads seeing 1 then 2: fine (order 1,2). Concurrent reads 2 and 1: fine.
    assertOk(checkHistory([...writes, get(3, 'a', '1', 10, 20), get(3, 'a', '2', 30, 40)]));
    assertOk(checkHistory([...writes, get(3, 'a', '2', 10, 20), get(4, 'a', '1', 15, 25)]));
    // 1, then 2, then 1 again: 1 would have to be written twice.
    assertViolationOn(
      checkHistory([...writes, get(3, 'a', '1', 10, 20), get(3, 'a', '2', 30, 40), get(3, 'a', '1', 50, 60)]),
      'a',
    );
  });
});

describe('checkHistory: fail and info ops', () => {
  it("an 'info' put whose value is later read is ok", () => {
    assertOk(checkHistory([put(1, 'a', '1', 0, 5, 'info'), get(2, 'a', '1', 100, 101)]));
  });

  it("an 'info' put may take effect after its client gave up", () => {
    assertOk(checkHistory([
      put(1, 'a', '1', 0, 5, 'info'),
      get(2, 'a', null, 50, 51),
      get(2, 'a', '1', 100, 101),
    ]));
  });

  it("an 'info' put never read is ok", () => {
    assertOk(checkHistory([put(1, 'a', '1', 0, 5, 'info'), get(2, 'a', null, 100, 101)]));
  });

  it("an 'info' op takes effect at most once", () => {
    const infos = ['1', '2', '3'].map((v, i) => put(i + 1, 'a', v, 0, 1, 'info'));
    assertOk(checkHistory([...infos, get(9, 'a', '3', 10, 11), get(9, 'a', '1', 12, 13), get(9, 'a', '2', 14, 15)]));
    assertViolationOn(
      checkHistory([...infos, get(9, 'a', '3', 10, 11), get(9, 'a', '1', 12, 13), get(9, 'a', '3', 14, 15)]),
      'a',
    );
  });

  it("an 'info' op cannot take effect before it was invoked", () => {
    assertViolationOn(checkHistory([get(2, 'a', '1', 0, 1), put(1, 'a', '1', 5, 6, 'info')]), 'a');
  });

  it("an 'info' delete may explain a read of absent", () => {
    const h = [put(1, 'a', '1', 0, 1), del(1, 'a', 2, 3, 'info'), get(2, 'a', '1', 4, 5), get(2, 'a', null, 6, 7)];
    assertOk(checkHistory(h));
    assertViolationOn(checkHistory([...h, get(2, 'a', '1', 8, 9)]), 'a');
  });

  it("a 'fail' put whose value is read is a violation", () => {
    const r = checkHistory([put(1, 'a', '1', 0, 5, 'fail'), get(2, 'a', '1', 100, 101)]);
    assertViolationOn(r, 'a');
    assert.match(r.violations[0]!.message ?? '', /failed put/);
  });

  it("'fail' ops are ignored otherwise", () => {
    assertOk(checkHistory([
      put(1, 'a', '1', 0, 1),
      del(1, 'a', 2, 3, 'fail'),
      get(2, 'a', 'whatever', 4, 5, 'fail'),
      get(2, 'a', '1', 6, 7),
    ]));
  });

  it("'info' gets constrain nothing", () => {
    assertOk(checkHistory([put(1, 'a', '1', 0, 1), get(2, 'a', 'nonsense', 2, 3, 'info'), get(2, 'a', '1', 4, 5)]));
  });

  it("many unread 'info' writes do not blow up the search", () => {
    const h: Op[] = [];
    for (let i = 0; i < 200; i++) h.push(put(100 + i, 'a', `lost${i}`, i, i + 1, 'info'));
    for (let i = 0; i < 200; i++) h.push(del(100 + i, 'a', 1000 + i, 1000.5 + i, 'info'));
    for (let i = 0; i < 500; i++) {
      h.push(put(1, 'a', `v${i}`, 2000 + 4 * i, 2001 + 4 * i));
      h.push(get(2, 'a', `v${i}`, 2002 + 4 * i, 2003 + 4 * i));
    }
    h.push(get(3, 'a', null, 0, 1));
    assertOk(checkHistory(h, { maxStepsPerKey: 100_000 }));
  });

  it("many concurrent 'info' writes that are read do not blow up the search", () => {
    const h: Op[] = [];
    for (let i = 0; i < 30; i++) h.push(put(100 + i, 'a', `x${i}`, 0, 1, 'info'));
    // Read them in reverse order, each once, with absent reads in between.
    for (let i = 0; i < 30; i++) {
      h.push(get(1, 'a', `x${29 - i}`, 10 + 4 * i, 11 + 4 * i));
      h.push(del(1, 'a', 12 + 4 * i, 13 + 4 * i));
    }
    assertOk(checkHistory(h, { maxStepsPerKey: 200_000 }));
    // Reading one of them twice across a delete is impossible.
    h.push(get(1, 'a', 'x5', 1000, 1001));
    assertViolationOn(checkHistory(h, { maxStepsPerKey: 200_000 }), 'a');
  });
});

describe('checkHistory: per-key checking and budget', () => {
  it('a violation on one key is reported on that key only', () => {
    const h = [
      put(1, 'b', '1', 0, 1),
      put(1, 'a', '1', 0, 1),
      put(2, 'c', 'x', 0, 1),
      put(1, 'b', '2', 2, 3),
      put(1, 'a', '2', 2, 3),
      get(2, 'b', '1', 4, 5), // stale
      get(2, 'a', '2', 6, 7),
      get(3, 'c', 'x', 6, 7),
    ];
    const r = checkHistory(h);
    assertViolationOn(r, 'b');
    assert.deepEqual(r.keys.map((k) => [k.key, k.ok]), [['a', true], ['b', false], ['c', true]]);
    assert.deepEqual(r.keys.map((k) => k.ops), [3, 3, 2]);
    assert.ok(!(r.violations[0]!.message ?? '').includes('"a"'));
  });

  it('an exhausted budget is unknown, never a pass', () => {
    const rng = mulberry32(7);
    const h = genLinearizable(rng, { processes: 5, keys: 1, opsPerProcess: 50 });
    assertOk(checkHistory(h));
    const r = checkHistory(h, { maxStepsPerKey: 10 });
    assert.equal(r.ok, false);
    assert.equal(r.unknown, true);
    assert.deepEqual(r.violations, []);
    assert.equal(r.keys[0]!.unknown, true);
    assert.equal(r.keys[0]!.ok, false);
    assert.match(describeViolation(r.keys[0]!), /unknown/);
  });

  it('rejects malformed ops', () => {
    assert.throws(() => checkHistory([op(1, 'put', 'a', null, 0, 1)]), TypeError);
    assert.throws(() => checkHistory([put(1, 'a', '1', 5, 4)]), RangeError);
    assert.throws(() => checkHistory([put(1, 'a', '1', Number.NaN, 4)]), RangeError);
    // Info ops' completion is ignored.
    assertOk(checkHistory([put(1, 'a', '1', 5, Number.NaN, 'info')]));
  });
});

describe('checkHistory: randomized', () => {
  const opts: GenOptions = { processes: 5, keys: 3, opsPerProcess: 40, infoRate: 0.05, failRate: 0.05 };

  it('accepts 200 histories of a linearizable register', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const h = genLinearizable(mulberry32(seed), opts);
      const r = checkHistory(h);
      assert.equal(r.ok, true, `seed ${seed}:\n${r.keys.filter((k) => !k.ok).map(describeViolation).join('\n')}`);
    }
  });

  it('finds an injected stale read in each of them', () => {
    let mutated = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const rng = mulberry32(seed);
      const h = genLinearizable(rng, opts);
      const bad = injectStaleRead(rng, h);
      if (bad === null) continue;
      mutated++;
      const r = checkHistory(bad.ops);
      assert.equal(r.unknown, false, `seed ${seed}`);
      assert.deepEqual(r.violations.map((v) => v.key), [bad.key], `seed ${seed}`);
    }
    assert.ok(mutated >= 190, `only ${mutated} histories could be mutated`);
  });

  it('accepts highly concurrent single-key histories', () => {
    for (let seed = 1000; seed < 1020; seed++) {
      const h = genLinearizable(mulberry32(seed), {
        processes: 10, keys: 1, opsPerProcess: 100, infoRate: 0.02, failRate: 0.02, maxGap: 1, maxDuration: 30,
      });
      const r = checkHistory(h);
      assert.equal(r.ok, true, `seed ${seed}:\n${r.keys.map(describeViolation).join('\n')}`);
    }
  });
});

/**
 * Exhaustive oracle for tiny single-key histories: tries every order of the
 * ops that respects real time (an ok op that completes strictly before
 * another is invoked precedes it); info writes may be left out.
 */
function bruteForceLinearizable(ops: readonly Op[]): boolean {
  const h = ops.filter((o) => o.status !== 'fail' && !(o.status === 'info' && o.kind === 'get'));
  const used = h.map(() => false);
  const okTotal = h.filter((o) => o.status === 'ok').length;
  const precedes = (a: Op, b: Op): boolean => a.status === 'ok' && a.complete < b.invoke;
  const search = (state: string | null, okUsed: number): boolean => {
    if (okUsed === okTotal) return true;
    for (let i = 0; i < h.length; i++) {
      const o = h[i]!;
      if (used[i]) continue;
      if (h.some((p, j) => !used[j] && j !== i && precedes(p, o))) continue;
      if (o.kind === 'get' && o.value !== state) continue;
      const next = o.kind === 'get' ? state : o.kind === 'put' ? o.value : null;
      used[i] = true;
      const found = search(next, okUsed + (o.status === 'ok' ? 1 : 0));
      used[i] = false;
      if (found) return true;
    }
    return false;
  };
  return search(null, 0);
}

describe('checkHistory: agrees with an exhaustive oracle', () => {
  it('on 20,000 tiny random histories (ties, duplicate values, info and fail ops)', () => {
    const rng = mulberry32(2024);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
    let linearizable = 0;
    for (let iter = 0; iter < 20_000; iter++) {
      const h: Op[] = [];
      const nOps = 1 + Math.floor(rng() * 9);
      for (let p = 0; p < nOps; p++) {
        const invoke = Math.floor(rng() * 12); // integer times: plenty of ties
        const complete = invoke + Math.floor(rng() * 6);
        const kind = pick<OpKind>(['put', 'put', 'get', 'get', 'get', 'delete']);
        const status = pick<OpStatus>(['ok', 'ok', 'ok', 'info', 'fail']);
        const value = kind === 'put' ? pick(['1', '2', '3']) : kind === 'get' ? pick([null, '1', '2', '3']) : null;
        h.push(op(p, kind, 'k', value, invoke, complete, status));
      }
      const expected = bruteForceLinearizable(h);
      const r = checkHistory(h);
      assert.equal(r.unknown, false);
      assert.equal(r.ok, expected, `iteration ${iter}: ${JSON.stringify(h)}`);
      if (expected) linearizable++;
    }
    // Both outcomes must be well represented for this to mean anything.
    assert.ok(linearizable > 4000 && linearizable < 16_000, `${linearizable} linearizable`);
  });
});

describe('checkHistory: performance sanity', () => {
  it('checks a 20k-op concurrent history (10 processes, 20 keys)', () => {
    const h = genLinearizable(mulberry32(42), {
      processes: 10, keys: 20, opsPerProcess: 2000, infoRate: 0.01, failRate: 0.01,
    });
    assert.equal(h.length, 20_000);
    const r = checkHistory(h);
    assertOk(r);
    assert.equal(r.keys.length, 20);
  });

  it('checks a 100k-op single-key history without recursion', () => {
    const h: Op[] = [];
    for (let i = 0; i < 50_000; i++) {
      h.push(put(i % 3, 'big', `v${i}`, 10 * i, 10 * i + 6));
      h.push(get(3 + (i % 3), 'big', i % 2 === 0 ? `v${i}` : i === 0 ? null : `v${i - 1}`, 10 * i + 1, 10 * i + 5));
    }
    assertOk(checkHistory(h));
    // Break the very last read: the search must backtrack over the whole history.
    h[h.length - 1] = { ...h[h.length - 1]!, value: 'v0' };
    const r = checkHistory(h);
    assertViolationOn(r, 'big');
    assert.equal(r.violations[0]!.detail?.blockedOp?.value, 'v0');
  });
});

describe('HistoryRecorder', () => {
  it('records ops with the clock and closes open ops as info on finish()', () => {
    let t = 0;
    const rec = new HistoryRecorder(() => t++);
    const a = rec.invoke(1, 'put', 'k', 'v1'); // t=0
    const b = rec.invoke(2, 'get', 'k', null); // t=1
    const c = rec.invoke(3, 'delete', 'k', null); // t=2
    const d = rec.invoke(4, 'put', 'k', 'v2'); // t=3
    rec.ok(a); // t=4
    rec.ok(b, 'v1'); // t=5
    rec.fail(c); // t=6
    assert.equal(rec.ops.length, 3);
    assert.deepEqual(rec.ops.map((o) => o.status), ['ok', 'ok', 'fail']);
    const e = rec.invoke(2, 'get', 'k', null); // t=7
    rec.info(e); // t=8
    const f = rec.invoke(1, 'get', 'other', null); // t=9
    rec.ok(f, null); // t=10
    assert.equal(rec.ops.length, 5); // d is still open

    const all = rec.finish(); // d closed at t=11
    assert.deepEqual(all, [
      { process: 1, key: 'k', kind: 'put', value: 'v1', invoke: 0, complete: 4, status: 'ok' },
      { process: 2, key: 'k', kind: 'get', value: 'v1', invoke: 1, complete: 5, status: 'ok' },
      { process: 3, key: 'k', kind: 'delete', value: null, invoke: 2, complete: 6, status: 'fail' },
      { process: 4, key: 'k', kind: 'put', value: 'v2', invoke: 3, complete: 11, status: 'info' },
      { process: 2, key: 'k', kind: 'get', value: null, invoke: 7, complete: 8, status: 'info' },
      { process: 1, key: 'other', kind: 'get', value: null, invoke: 9, complete: 10, status: 'ok' },
    ]);
    assert.equal(rec.ops.length, 6);
    assertOk(checkHistory(all));
    assert.equal(typeof d, 'number');
  });

  it('rejects misuse', () => {
    const rec = new HistoryRecorder();
    const h = rec.invoke(1, 'put', 'k', 'v');
    assert.throws(() => rec.invoke(1, 'get', 'k', null), /still open/);
    rec.ok(h);
    assert.throws(() => rec.ok(h), /already completed/);
    assert.throws(() => rec.fail(999), /unknown op handle/);
    assert.throws(() => rec.invoke(2, 'put', 'k', null), TypeError);
    // After completion the process may invoke again; the default clock is monotonic.
    rec.ok(rec.invoke(1, 'get', 'k', null), 'v');
    const ops = rec.finish();
    assert.equal(ops.length, 2);
    assert.ok(ops[1]!.invoke >= ops[0]!.complete);
    assertOk(checkHistory(ops));
  });

  it('a recorded stale read is caught', () => {
    let t = 0;
    const rec = new HistoryRecorder(() => t++);
    rec.ok(rec.invoke(1, 'put', 'k', '1'));
    rec.ok(rec.invoke(1, 'put', 'k', '2'));
    rec.ok(rec.invoke(2, 'get', 'k', null), '1');
    assertViolationOn(checkHistory(rec.finish()), 'k');
  });
});
