import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_MERGED_BYTES, MAX_MERGED_ENTRIES, coalesce } from '../../src/core/coalesce.ts';
import type { Output } from '../../src/core/replica.ts';
import type { Entry } from '../../src/core/store.ts';

/** Merging one turn's fwd and ack outputs (the simulator's 500 seeds run it under faults). */
const entry = (seq: number, value = 'v'): Entry => ({ seq, epoch: 1, kind: 'put', key: Buffer.from(`k${seq}`), value: Buffer.from(value), id: `id${seq}` });
const fwd = (to: string, p: number, seqs: number[], e = 1): Output => ({ type: 'send', to, msg: { t: 'fwd', e, p, entries: seqs.map((s) => entry(s)) }, durable: false });
const ack = (to: string, p: number, seq: number, durable: boolean, e = 1): Output => ({ type: 'send', to, msg: { t: 'ack', e, p, seq }, durable });

/** A compact picture of outputs: `fwd B p0 [1,2]`, `ack A p1 7 durable`, `gc B p0`, `reply 3`. */
function show(outputs: Output[]): string[] {
  return outputs.map((o) => {
    if (o.type === 'reply') return `reply ${o.token}`;
    if (o.type === 'log') return `log ${o.msg}`;
    const m = o.msg;
    if (m.t === 'fwd') return `fwd ${o.to} p${m.p} e${m.e} [${m.entries.map((x) => x.seq).join(',')}]`;
    if (m.t === 'ack') return `ack ${o.to} p${m.p} e${m.e} ${m.seq}${o.durable ? ' durable' : ''}`;
    return `${m.t} ${o.to}`;
  });
}

test('contiguous fwds to one peer and partition become one, at the first position; others keep their order', () => {
  const reply: Output = { type: 'reply', token: 3, result: { ok: true }, durable: false };
  const out = coalesce([fwd('B', 0, [1]), fwd('B', 1, [8]), reply, fwd('B', 0, [2, 3]), fwd('C', 0, [4]), fwd('B', 1, [9]), fwd('B', 0, [4])]);
  assert.deepEqual(show(out), ['fwd B p0 e1 [1,2,3,4]', 'fwd B p1 e1 [8,9]', 'reply 3', 'fwd C p0 e1 [4]']);
});

test('fwds that do not continue each other, or differ in epoch, stay apart', () => {
  assert.deepEqual(show(coalesce([fwd('B', 0, [5]), fwd('B', 0, [3, 4, 5]), fwd('B', 0, [6])])), ['fwd B p0 e1 [5]', 'fwd B p0 e1 [3,4,5,6]']);
  assert.deepEqual(show(coalesce([fwd('B', 0, [1]), fwd('B', 0, [2], 2)])), ['fwd B p0 e1 [1]', 'fwd B p0 e2 [2]']);
});

test('any other message to the same peer ends merging: nothing merged overtakes it', () => {
  const gc: Output = { type: 'send', to: 'B', msg: { t: 'gc', e: 1, p: 0, floor: 1 }, durable: false };
  assert.deepEqual(show(coalesce([fwd('B', 0, [1]), gc, fwd('B', 0, [2])])), ['fwd B p0 e1 [1]', 'gc B', 'fwd B p0 e1 [2]']);
  const toA = (seq: number, durable: boolean): Output => ack('A', 0, seq, durable);
  const sync: Output = { type: 'send', to: 'A', msg: { t: 'sync', e: 1, p: 0, committed: 1 }, durable: false };
  assert.deepEqual(show(coalesce([toA(1, false), sync, toA(2, false)])), ['ack A p0 e1 1', 'sync A', 'ack A p0 e1 2']);
});

test('acks to one peer and partition become one, at the last position, with the largest seq, durable if any was', () => {
  const out = coalesce([ack('A', 0, 4, true), fwd('A', 1, [1]), ack('A', 0, 5, false), ack('A', 2, 9, false), ack('A', 0, 6, false)]);
  assert.deepEqual(show(out), ['fwd A p1 e1 [1]', 'ack A p2 e1 9', 'ack A p0 e1 6 durable']);
  assert.deepEqual(show(coalesce([ack('A', 0, 4, false), ack('A', 0, 5, false, 2)])), ['ack A p0 e1 4', 'ack A p0 e2 5']);
});

test('a merged fwd stays within the entry and byte caps', () => {
  const many = Array.from({ length: MAX_MERGED_ENTRIES + 5 }, (_, i) => fwd('B', 0, [i + 1]));
  const out = coalesce(many);
  assert.deepEqual(
    out.map((o) => (o.type === 'send' && o.msg.t === 'fwd' ? o.msg.entries.length : -1)),
    [MAX_MERGED_ENTRIES, 5],
  );
  const big = 'x'.repeat(MAX_MERGED_BYTES / 2);
  const heavy = (seq: number): Output => ({ type: 'send', to: 'B', msg: { t: 'fwd', e: 1, p: 0, entries: [entry(seq, big)] }, durable: false });
  assert.deepEqual(show(coalesce([heavy(1), heavy(2), heavy(3)])), ['fwd B p0 e1 [1]', 'fwd B p0 e1 [2]', 'fwd B p0 e1 [3]']);
});

test('merging does not change the messages it was given', () => {
  const first = fwd('B', 0, [1]);
  coalesce([first, fwd('B', 0, [2])]);
  assert.deepEqual(show([first]), ['fwd B p0 e1 [1]']);
});
