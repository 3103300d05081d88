import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Op } from '../../src/sim/linearizability.ts';
import { explicitChecks } from '../support/faults.ts';

/** The fault test's explicit checks (lost acknowledged writes, deletes that come back) catch what they claim to. */
const op = (o: Partial<Op> & Pick<Op, 'kind' | 'invoke' | 'complete'>): Op => ({ process: 0, key: 'a', value: null, status: 'ok', ...o });
const finals = (v: string | null): Map<string, Map<string, string | null>> => new Map([['a', new Map([['n1', v], ['n2', v]])]]);

test('a final value that is not the last acknowledged write is a lost write', () => {
  const ops = [op({ kind: 'put', value: 'v1', invoke: 0, complete: 1 }), op({ kind: 'put', value: 'v2', invoke: 2, complete: 3 })];
  assert.deepEqual(explicitChecks(ops, ['a'], finals('v2')), []);
  assert.match(explicitChecks(ops, ['a'], finals('v1')).join('\n'), /acknowledged write is lost/);
  assert.match(explicitChecks(ops, ['a'], finals(null)).join('\n'), /acknowledged write is lost/);
});

test('a deleted key that comes back is reported, in the final value and in any read', () => {
  const ops = [
    op({ kind: 'put', value: 'v1', invoke: 0, complete: 1 }),
    op({ kind: 'delete', invoke: 2, complete: 3 }),
    op({ kind: 'get', value: 'v1', invoke: 4, complete: 5, process: 1 }),
  ];
  const out = explicitChecks(ops, ['a'], finals('v1')).join('\n');
  assert.match(out, /deleted key returned/);
  assert.match(out, /deleted value returned/);
});

test('writes in doubt may or may not have happened; reads of unwritten values are reported', () => {
  const ops = [
    op({ kind: 'put', value: 'v1', invoke: 0, complete: 1 }),
    op({ kind: 'put', value: 'v2', invoke: 2, complete: 3, status: 'info' }),
    op({ kind: 'delete', invoke: 2, complete: 3, status: 'fail' }),
  ];
  assert.deepEqual(explicitChecks(ops, ['a'], finals('v1')), []);
  assert.deepEqual(explicitChecks(ops, ['a'], finals('v2')), []);
  assert.match(explicitChecks(ops, ['a'], finals(null)).join('\n'), /lost/);
  assert.match(explicitChecks([...ops, op({ kind: 'get', value: 'zz', invoke: 5, complete: 6 })], ['a'], finals('v1')).join('\n'), /nobody wrote/);
  const split = new Map([['a', new Map<string, string | null>([['n1', 'v1'], ['n2', 'v2']])]]);
  assert.match(explicitChecks(ops, ['a'], split).join('\n'), /final reads disagree/);
});

test('long histories: a stale read among thousands of overlapping writes is found, a fresh one is not', () => {
  // 4,000 puts by two clients, each overlapping the next; reads in between.
  const ops: Op[] = [];
  for (let i = 0; i < 4000; i++) ops.push(op({ kind: 'put', value: `v${i}`, invoke: i * 10, complete: i * 10 + 15, process: i % 2 }));
  // Reads that may return v2999: during or right after its put, before v3000's put completed.
  ops.push(op({ kind: 'get', value: 'v2999', invoke: 29_995, complete: 30_000, process: 5 }));
  ops.push(op({ kind: 'get', value: 'v2999', invoke: 30_012, complete: 30_013, process: 6 }));
  assert.deepEqual(explicitChecks(ops, ['a'], finals('v3999')), []);
  // v3001's put (invoked after v2999's completed) was acknowledged before this read began.
  ops.push(op({ kind: 'get', value: 'v2999', invoke: 30_030, complete: 30_031, process: 7 }));
  const out = explicitChecks(ops, ['a'], finals('v3999')).join('\n');
  assert.match(out, /stale read: client 7 read "v2999"/);
  assert.match(out, /put "v3001"/);
  assert.doesNotMatch(out, /client [56] /);
});
