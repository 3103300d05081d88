import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KEEP_LOG_SEQS } from '../../src/core/store.ts';
import type { Entry } from '../../src/core/store.ts';
import { LmdbStore } from '../../src/runtime/storage.ts';
import { tempDirs } from '../support/tmp.ts';

/** The LMDB adapter on a real disk: the Store semantics the core relies on. */
const fresh = tempDirs('chainkv-store-');

let seq = 0;
const put = (key: string, value: string, s = ++seq): Entry => ({ seq: s, epoch: 1, kind: 'put', key: Buffer.from(key), value: Buffer.from(value), id: `id-${s}` });
const del = (key: string, s = ++seq): Entry => ({ seq: s, epoch: 1, kind: 'del', key: Buffer.from(key), value: null, id: `id-${s}` });
const clear = (s = ++seq): Entry => ({ seq: s, epoch: 1, kind: 'clear', key: Buffer.alloc(0), value: null, id: `id-${s}` });

test('commits, overwrites, tombstones and clears; scans in key order; the state survives reopening, pending entries do not', async () => {
  seq = 0;
  const dir = fresh();
  let s = new LmdbStore(dir, { durability: 'fsync' });
  s.transaction(() => {
    s.commit(0, put('b', '1'));
    s.commit(0, put('a', '2'));
    s.commit(0, put('b', '3'));
    s.commit(0, del('a'));
    s.commit(1, put('z', 'other partition', 1));
    s.appendPending(0, put('c', 'pending'));
  });
  assert.equal(s.get(0, Buffer.from('b'))?.toString(), '3');
  assert.equal(s.get(0, Buffer.from('a')), null);
  assert.equal(s.get(0, Buffer.from('c')), null, 'pending is not committed');
  assert.deepEqual(s.scan(0, null, 10).map((kv) => kv.key.toString()), ['b']);
  assert.equal(s.committedSeq(0), 4);
  await s.sync();
  await s.close();
  s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.get(0, Buffer.from('b'))?.toString(), '3');
  assert.equal(s.committedSeq(0), 4);
  assert.equal(s.committedSeq(1), 1);
  assert.equal(s.stats().pending, 0, 'pending entries are dropped at start');
  s.transaction(() => s.commit(0, clear(5)));
  assert.equal(s.get(0, Buffer.from('b')), null, 'a clear hides older versions');
  s.transaction(() => s.commit(0, put('b', 'after clear', 6)));
  assert.equal(s.get(0, Buffer.from('b'))?.toString(), 'after clear');
  assert.deepEqual(s.scanLocal(0, null, 10).map((kv) => `${kv.partition}:${kv.key.toString()}`), ['0:b', '1:z']);
  await s.close();
});

test('changesAfter skips superseded versions; their request ids stay until pruned', async () => {
  const dir = fresh();
  const s = new LmdbStore(dir, { durability: 'process' });
  s.transaction(() => {
    s.commit(0, put('k', 'v1', 1));
    s.commit(0, put('j', 'x', 2));
    s.commit(0, put('k', 'v2', 3));
    s.commit(0, del('j', 4));
  });
  assert.deepEqual(
    s.changesAfter(0, 0, 100).map((e) => `${e.seq}:${e.kind}:${e.key.toString()}`),
    ['3:put:k', '4:del:j'],
  );
  assert.deepEqual(s.changesAfter(0, 3, 100).map((e) => e.seq), [4]);
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.id), ['id-1', 'id-2', 'id-3', 'id-4']);
  s.transaction(() => s.pruneLog(0, 3));
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.id), ['id-3', 'id-4'], 'superseded rows below the floor go, live ones stay');
  // An overwrite far beyond the horizon drops the old row at once.
  s.transaction(() => s.commit(0, put('k', 'v3', 3 + KEEP_LOG_SEQS)));
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.seq), [4, 3 + KEEP_LOG_SEQS]);
  await s.close();
});

test('garbage collection removes tombstones and versions hidden by a clear, up to the floor only', async () => {
  const dir = fresh();
  const s = new LmdbStore(dir, { durability: 'process' });
  s.transaction(() => {
    s.commit(0, put('a', '1', 1));
    s.commit(0, put('b', '1', 2));
    s.commit(0, del('a', 3));
    s.commit(0, del('b', 4));
    s.commit(0, put('c', '1', 5));
  });
  assert.equal(s.stats().records, 3);
  s.transaction(() => s.collectGarbage(0, 3));
  assert.equal(s.stats().records, 2, 'only the tombstone at or below the floor goes');
  s.transaction(() => {
    s.commit(0, clear(6));
    s.commit(0, put('d', '1', 7));
  });
  s.transaction(() => s.collectGarbage(0, 7));
  assert.deepEqual(s.scan(0, null, 10).map((kv) => kv.key.toString()), ['d']);
  assert.equal(s.stats().records, 1, 'versions older than the clear are gone');
  assert.deepEqual(s.changesAfter(0, 0, 100).map((e) => e.seq), [7]);
  await s.close();
});

test('membership state and pending drops; sync makes every earlier write durable', async () => {
  const dir = fresh();
  const s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.loadMembership(), null);
  const state = { term: 3, votedFor: '5554', log: [{ term: 0, view: { epoch: 1, states: { a: 'up' as const } } }], commit: 0 };
  s.transaction(() => {
    s.saveMembership(state);
    s.appendPending(2, put('p', '1', 1));
    s.appendPending(2, put('q', '1', 2));
  });
  assert.equal(s.stats().pending, 2);
  s.transaction(() => s.dropPending(2));
  assert.equal(s.stats().pending, 0);
  assert.ok(s.durableGeneration < s.writeGeneration);
  assert.ok(s.volatile(2, Buffer.from('p')));
  await s.sync();
  assert.equal(s.durableGeneration, s.writeGeneration);
  assert.equal(s.volatile(2, Buffer.from('p')), false);
  await s.close();
  const again = new LmdbStore(dir, { durability: 'fsync' });
  assert.deepEqual(again.loadMembership(), state);
  await again.close();
});
