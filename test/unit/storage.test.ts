import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Entry } from '../../src/core/store.ts';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { open } from 'lmdb';
import { Packr } from 'msgpackr';
import { RedoLog } from '../../src/runtime/redo-log.ts';
import { LmdbStore } from '../../src/runtime/storage.ts';
import { MemoryStore } from '../../src/sim/memory-store.ts';
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
  s.transaction(() => s.pruneLog(0, 4));
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.id), ['id-3', 'id-4'], 'superseded rows below the floor go, live ones stay');
  assert.equal(s.prunedBelow(0), 4);
  // Overwriting a row pruning has passed drops it at once (pruning only goes forward); a row
  // at or above the prune point stays until pruning reaches it.
  s.transaction(() => {
    s.commit(0, put('k', 'v3', 5));
    s.commit(0, put('j', 'y', 6));
  });
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.seq), [4, 5, 6]);
  await s.close();
  const again = new LmdbStore(dir, { durability: 'process' });
  assert.equal(again.prunedBelow(0), 4, 'the prune point is kept');
  await again.close();
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

test('a key is volatile until a sync that began after its write ends; a clear makes its whole partition volatile', async () => {
  const s = new LmdbStore(fresh(), { durability: 'fsync' });
  s.transaction(() => s.commit(1, put('a', '1', 1)));
  const first = s.sync();
  // Written while the first sync runs: that sync does not cover it.
  s.transaction(() => s.commit(1, put('b', '1', 2)));
  assert.ok(s.volatile(1, Buffer.from('a')) && s.volatile(1, Buffer.from('b')));
  assert.equal(s.volatile(1, Buffer.from('c')), false, 'a key never written is not volatile');
  await first;
  assert.equal(s.volatile(1, Buffer.from('a')), false);
  assert.ok(s.volatile(1, Buffer.from('b')), 'written after the sync began');
  await s.sync();
  assert.equal(s.volatile(1, Buffer.from('b')), false);
  s.transaction(() => s.commit(1, clear(3)));
  assert.ok(s.volatile(1, Buffer.from('zzz')) && !s.volatile(2, Buffer.from('zzz')));
  await s.sync();
  assert.equal(s.volatile(1, Buffer.from('zzz')), false);
  await s.close();
  // A checkpoint syncs the redo file it leaves: what it holds is durable at once.
  const c = new LmdbStore(fresh(), { durability: 'fsync', checkpointBytes: 1 });
  c.transaction(() => c.commit(1, put('a', '1', 1)));
  assert.equal(c.durableGeneration, c.writeGeneration, 'the checkpoint made every write durable');
  assert.equal(c.volatile(1, Buffer.from('a')), false, 'durable after the checkpoint');
  await c.close();
});

test('both stores keep a live count per partition as writes commit, clears and catch-up-style compacted history included', async () => {
  const dir = fresh();
  const lmdb = new LmdbStore(dir, { durability: 'fsync' });
  const mem = new MemoryStore();
  const listed = (st: LmdbStore | MemoryStore, p: number): number => st.scan(p, null, 1_000_000).length;
  for (const st of [lmdb, mem]) {
    const apply = (fn: () => void): void => (st instanceof LmdbStore ? st.transaction(fn) : fn());
    apply(() => {
      st.commit(4, put('a', '1', 1));
      st.commit(4, put('b', '1', 2));
      st.commit(4, put('a', '2', 3)); // overwrite: still two
      st.commit(4, del('c', 4)); // delete of an absent key
      st.commit(4, del('b', 5));
    });
    assert.equal(st.liveCount(4), 1);
    apply(() => {
      st.commit(4, put('d', '1', 6));
      st.commit(4, clear(7));
    });
    assert.equal(st.liveCount(4), 0, 'a clear empties the partition');
    apply(() => {
      st.commit(4, put('a', '3', 8)); // its old version is hidden by the clear, not live
      st.commit(4, put('e', '1', 9));
      st.commit(4, del('d', 10)); // hidden by the clear already
    });
    assert.equal(st.liveCount(4), 2);
    assert.equal(st.liveCount(4), listed(st, 4));
    assert.equal(st.liveCount(3), 0);
    // Garbage collection removes what is dead: the count does not move.
    apply(() => st.collectGarbage(4, 10));
    assert.equal(st.liveCount(4), 2);
  }
  await lmdb.close();
  // Kept in meta, with the committed seq: it survives a reopen ...
  let again = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(again.liveCount(4), 2);
  await again.close();
  // ... and a directory written before counts were kept is counted once at open.
  const env = open({ path: dir, maxDbs: 128, useWritemap: true, mapSize: 1024 ** 3 });
  const meta = env.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
  await meta.remove('n:4');
  await env.close();
  again = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(again.liveCount(4), 2);
  await again.close();
});

test('each partition logs in a database of its own: interleaved commits to three partitions still fill whole pages', async () => {
  const dir = fresh();
  const s = new LmdbStore(dir, { durability: 'process' });
  const rows = 30_000;
  s.transaction(() => {
    for (let i = 1; i <= rows; i++) for (const p of [0, 1, 2]) s.commit(p, put(`k${p}-${i}`, 'v', i));
  });
  assert.equal(s.stats().logRows, 3 * rows);
  await s.close();
  const env = open({ path: dir, readOnly: true, maxDbs: 128 });
  try {
    for (const p of [0, 1, 2]) {
      const stats = env.openDB({ name: `log.${p}`, keyEncoding: 'binary', encoding: 'binary' }).getStats() as { entryCount: number; treeLeafPageCount: number };
      assert.equal(stats.entryCount, rows);
      // A row is 8 + 8 + 2 + 4 + ~7 bytes (node header, key, kind and id length, id, key):
      // about 130 fit a 4 KiB page. Pages split in half would hold about 65.
      const perPage = stats.entryCount / stats.treeLeafPageCount;
      assert.ok(perPage > 100, `log.${p}: ${perPage.toFixed(1)} rows per leaf page`);
    }
  } finally {
    await env.close();
  }
});

test('a data directory with the older single log database is migrated at open, before the redo log is replayed', async () => {
  const dir = fresh();
  let s = new LmdbStore(dir, { durability: 'fsync' });
  s.transaction(() => {
    s.commit(0, put('a', '1', 1));
    s.commit(1, put('b', '1', 1));
    s.commit(0, put('a', '2', 2)); // supersedes seq 1 of partition 0; its row keeps the id
    s.commit(1, del('b', 2));
  });
  await s.close();
  // Rewrite the directory into the older layout: every log row in one `log` database.
  const env = open({ path: dir, maxDbs: 128, useWritemap: true, mapSize: 1024 ** 3 });
  const shared = env.openDB<Buffer, Buffer>({ name: 'log', keyEncoding: 'binary', encoding: 'binary' });
  env.transactionSync(() => {
    for (const p of [0, 1]) {
      const db = env.openDB<Buffer, Buffer>({ name: `log.${p}`, keyEncoding: 'binary', encoding: 'binary' });
      for (const { key, value } of db.getRange({})) shared.putSync(key, value);
      db.dropSync();
    }
  });
  const redoSeq = env.openDB<number, string>({ name: 'meta', encoding: 'msgpack' }).get('r') ?? 0;
  await env.close();
  // And a redo record LMDB does not hold yet (as after a power loss): it drops the superseded
  // row of seq 1 (what pruneLog does). Replayed before the migration, the delete would miss
  // the row, which the migration would then copy back.
  const redo = new RedoLog(dir);
  const row = Buffer.alloc(8);
  row.writeUIntBE(1, 2, 6);
  redo.append(new Packr({ useRecords: false, moreTypes: false }).pack([redoSeq + 1, [[1, row]]]));
  redo.close();
  s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.redoStats.replayedRecords, 1);
  assert.deepEqual(s.changesAfter(0, 0, 10).map((e) => [e.seq, e.kind, e.key.toString(), e.value?.toString()]), [[2, 'put', 'a', '2']]);
  assert.deepEqual(s.changesAfter(1, 0, 10).map((e) => [e.seq, e.kind, e.key.toString()]), [[2, 'del', 'b']]);
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.id), ['id-2']);
  assert.equal(s.stats().logRows, 3);
  // Writes after the migration land in the per-partition logs and survive a reopen.
  s.transaction(() => s.commit(0, put('c', '3', 3)));
  await s.close();
  s = new LmdbStore(dir, { durability: 'fsync' });
  assert.deepEqual(s.changesAfter(0, 0, 10).map((e) => e.seq), [2, 3]);
  assert.equal(s.stats().logRows, 4);
  await s.close();
  const names = open({ path: dir, readOnly: true, maxDbs: 128 });
  try {
    assert.deepEqual([...names.getKeys()].filter((k) => typeof k === 'string' && k.startsWith('log')).sort(), ['log.0', 'log.1']);
  } finally {
    await names.close();
  }
});

test('log rows keep request ids exactly, numbered under their node.incarnation prefix, across reopens and a redo replay', async () => {
  const dir = fresh();
  const ids = ['5562.0e4fcb60.1', '5562.0e4fcb60.300000', '5560.1f00ba44.7', 'x.007', 'plain', '5562.0e4fcb60.123456789012345', '5562.0e4fcb60.1234567890123456'];
  const entry = (i: number): Entry => ({ seq: i + 1, epoch: 1, kind: 'put', key: Buffer.from(`k${i}`), value: Buffer.from('v'), id: ids[i]! });
  let s = new LmdbStore(dir, { durability: 'fsync' });
  s.transaction(() => ids.forEach((_, i) => s.commit(0, entry(i))));
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.id), ids);
  assert.deepEqual(s.changesAfter(0, 0, 100).map((e) => e.id), ids);
  await s.close();
  // Reopened, the prefixes come back from meta; new incarnations get numbers of their own. Then
  // a power loss: LMDB's file goes back to how it was at this open, and only the synced redo
  // log brings back the new rows and the meta rows that number their prefixes.
  const flushed = readFileSync(join(dir, 'data.mdb'));
  s = new LmdbStore(dir, { durability: 'fsync' });
  s.transaction(() => s.commit(1, { ...entry(0), id: '5562.99999999.5' }));
  s.transaction(() => s.commit(1, { ...entry(1), seq: 2, id: '5554.abcdef01.42' }));
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.id), ids);
  assert.deepEqual(s.recentRequests(1, 0).map((r) => r.id), ['5562.99999999.5', '5554.abcdef01.42']);
  await s.sync();
  const redo = RedoLog.files(dir).map((f) => ({ path: f.path, data: readFileSync(f.path) }));
  assert.ok(redo.length > 0, 'the redo log holds the last writes');
  await s.close(); // (a clean close flushes LMDB and removes the redo log: both are put back)
  writeFileSync(join(dir, 'data.mdb'), flushed);
  for (const f of redo) writeFileSync(f.path, f.data);
  s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.redoStats.replayedRecords, 2);
  assert.deepEqual(s.recentRequests(1, 0).map((r) => r.id), ['5562.99999999.5', '5554.abcdef01.42']);
  assert.deepEqual(s.recentRequests(0, 0).map((r) => r.id), ids);
  await s.close();
  // Rows written before ids were numbered (kind, id length, id, key) are read as they are.
  const env = open({ path: dir, maxDbs: 128, useWritemap: true, mapSize: 1024 ** 3 });
  const log2 = env.openDB<Buffer, Buffer>({ name: 'log.2', keyEncoding: 'binary', encoding: 'binary' });
  const kv = env.openDB<Buffer, Buffer>({ name: 'kv', keyEncoding: 'binary', encoding: 'binary' });
  env.transactionSync(() => {
    const key = Buffer.from([0, 2, 0, 0, 0, 0, 0, 1]);
    log2.putSync(key, Buffer.concat([Buffer.from([0, 15]), Buffer.from('5562.0e4fcb60.9'), Buffer.from('old')]));
    kv.putSync(Buffer.concat([Buffer.from([0, 2]), Buffer.from('old')]), Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]), Buffer.from('v')]));
  });
  await env.close();
  s = new LmdbStore(dir, { durability: 'fsync' });
  assert.deepEqual(s.changesAfter(2, 0, 10).map((e) => [e.id, e.key.toString(), e.value?.toString()]), [['5562.0e4fcb60.9', 'old', 'v']]);
  await s.close();
  // What numbering buys: a row with a benchmark-shaped id and a 16-byte key is 39 bytes in its
  // page (with LMDB's node header and pointer), against 56 with the id as a string.
  const dir2 = fresh();
  s = new LmdbStore(dir2, { durability: 'process' });
  s.transaction(() => {
    for (let i = 1; i <= 20_000; i++) s.commit(0, { seq: i, epoch: 1, kind: 'put', key: Buffer.from(`key${String(i).padStart(13, '0')}`), value: Buffer.from('v'), id: `5558.19a9f352.${300_000 + i}` });
  });
  await s.close();
  const env2 = open({ path: dir2, readOnly: true, maxDbs: 128 });
  try {
    const stats = env2.openDB({ name: 'log.0', keyEncoding: 'binary', encoding: 'binary' }).getStats() as { entryCount: number; treeLeafPageCount: number };
    const perPage = stats.entryCount / stats.treeLeafPageCount;
    assert.ok(perPage > 95, `${perPage.toFixed(1)} rows per 4 KiB leaf page (71 with ids as strings)`);
  } finally {
    await env2.close();
  }
});

test('scans and change lists end after the item that reaches the byte bound, in both stores', async () => {
  const dir = fresh();
  const lmdb = new LmdbStore(dir, { durability: 'process' });
  const memory = new MemoryStore();
  const kb = (n: number): string => 'x'.repeat(1024 * n);
  for (const s of [lmdb, memory]) {
    const load = (): void => {
      for (let i = 1; i <= 6; i++) s.commit(0, put(`k${i}`, kb(i), i)); // keys of 2 bytes, values of i KiB
      s.commit(1, put('z', kb(1), 1));
    };
    if (s instanceof LmdbStore) s.transaction(load);
    else load();
    const keys = (page: { key: Buffer }[]): string[] => page.map((kv) => kv.key.toString());
    // k1 and k2 count 3 KiB + 4 bytes: under the bound, so k3 comes too, and reaches it.
    assert.deepEqual(keys(s.scan(0, null, 100, 3 * 1024 + 5)), ['k1', 'k2', 'k3']);
    assert.deepEqual(keys(s.scan(0, null, 100, 3 * 1024 + 4)), ['k1', 'k2']);
    assert.deepEqual(keys(s.scan(0, Buffer.from('k3'), 100, 1)), ['k4'], 'always at least one item');
    assert.deepEqual(keys(s.scan(0, null, 2)), ['k1', 'k2'], 'the count still bounds');
    assert.deepEqual(s.changesAfter(0, 2, 100, 7 * 1024).map((e) => e.seq), [3, 4]);
    assert.deepEqual(s.scanLocal(0, Buffer.from('k5'), 100, 6 * 1024).map((kv) => `${kv.partition}:${kv.key.toString()}`), ['0:k6']);
    assert.deepEqual(s.scanLocal(0, Buffer.from('k5'), 100, 7 * 1024).map((kv) => `${kv.partition}:${kv.key.toString()}`), ['0:k6', '1:z']);
  }
  await lmdb.close();
});

test('pruning goes in slices of at most maxRows rows, reports how far it got, and remembers it across a restart', async () => {
  const dir = fresh();
  const ids = (s: LmdbStore): string[] => s.recentRequests(0, 0).map((r) => r.id);
  let s = new LmdbStore(dir, { durability: 'fsync' });
  s.transaction(() => {
    for (let i = 1; i <= 10; i++) s.commit(0, put('a', `v${i}`, i)); // seqs 1-9 superseded by 10
  });
  assert.equal(s.transaction(() => s.pruneLog(0, 10, 3)), 4, 'rows 1-3 looked at');
  assert.deepEqual(ids(s), ['id-4', 'id-5', 'id-6', 'id-7', 'id-8', 'id-9', 'id-10']);
  assert.equal(s.transaction(() => s.pruneLog(0, 10, 3)), 7);
  await s.close();
  s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.transaction(() => s.pruneLog(0, 5)), 7, 'already pruned further than asked');
  assert.equal(s.transaction(() => s.pruneLog(0, 10)), 10);
  assert.deepEqual(ids(s), ['id-10']);
  assert.equal(s.get(0, Buffer.from('a'))?.toString(), 'v10');
  await s.close();
});

test('garbage collection goes in slices: a clear\'s sweep stops at the row budget and goes on from there', async () => {
  const dir = fresh();
  const s = new LmdbStore(dir, { durability: 'process' });
  s.transaction(() => {
    for (let i = 1; i <= 6; i++) s.commit(0, put(`k${i}`, 'v', i));
    s.commit(0, clear(7));
    s.commit(0, put('k9', 'after', 8));
  });
  let calls = 0;
  let done = false;
  while (!done) {
    done = s.transaction(() => s.collectGarbage(0, 8, 2));
    calls++;
    // Hidden records stay hidden whatever the sweep has reached.
    assert.deepEqual(s.scan(0, null, 10).map((kv) => kv.key.toString()), ['k9']);
    assert.ok(calls < 20, 'the sweep makes progress');
  }
  assert.ok(calls >= 4, `${calls} calls: the budget cut the work`);
  assert.equal(s.stats().records, 1, 'versions older than the clear are gone');
  assert.deepEqual(s.changesAfter(0, 0, 100).map((e) => e.seq), [8]);
  assert.equal(s.transaction(() => s.collectGarbage(0, 8, 2)), true, 'nothing left');
  await s.close();
});

test('snapshotScan reads one snapshot in chunks: writes between chunks do not show', async () => {
  const dir = fresh();
  const s = new LmdbStore(dir, { durability: 'process' });
  s.transaction(() => {
    for (let i = 1; i <= 9; i++) s.commit(0, put(`k${i}`, 'old', i));
  });
  const chunks = s.snapshotScan(0, 4);
  const seen: string[] = [];
  let chunk = chunks.next();
  s.transaction(() => {
    s.commit(0, put('k1', 'new', 10));
    s.commit(0, del('k9', 11));
    s.commit(0, put('k99', 'new', 12));
  });
  for (; !chunk.done; chunk = chunks.next()) {
    assert.ok(chunk.value.length <= 4);
    for (const kv of chunk.value) seen.push(`${kv.key.toString()}=${kv.value.toString()}`);
  }
  assert.deepEqual(seen, ['k1=old', 'k2=old', 'k3=old', 'k4=old', 'k5=old', 'k6=old', 'k7=old', 'k8=old', 'k9=old']);
  assert.deepEqual(s.scan(0, null, 20).map((kv) => kv.key.toString()), ['k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7', 'k8', 'k99']);
  await s.close();
});

test('a checkpoint that fails keeps the redo log, is reported, and is not tried again before another checkpoint of redo log', async () => {
  const dir = fresh();
  // A directory where the snapshot must go: renaming the copy into place fails.
  mkdirSync(join(dir, 'snapshot.mdb', 'in-the-way'), { recursive: true });
  const errors: unknown[] = [];
  let s = new LmdbStore(dir, { durability: 'fsync', checkpointBytes: 16 * 1024, onCheckpointError: (err) => errors.push(err) });
  for (let i = 1; i <= 2000; i++) {
    s.transaction(() => s.commit(0, put(`k${i % 100}`, `v${i}`, i)));
    if (i % 50 === 0) await new Promise((r) => setTimeout(r, 5)); // let copies run
  }
  await s.close();
  const logged = RedoLog.files(dir).reduce((n, f) => n + readFileSync(f.path).length, 0);
  assert.ok(errors.length >= 2, `failures reported: ${errors.length}`);
  // One attempt per checkpoint's worth of redo log, not one per transaction after the first failure.
  assert.ok(errors.length <= Math.ceil(logged / (16 * 1024)) + 1, `${errors.length} attempts for ${logged} bytes of redo log`);
  assert.equal(s.redoStats.checkpoints, 0);
  // Nothing was lost: every redo file is still there, and a power loss is survived from them.
  // (Act one out: the last run did not close cleanly, and LMDB's file is not to be trusted.)
  rmSync(join(dir, 'snapshot.mdb'), { recursive: true });
  writeFileSync(join(dir, 'boot'), 'an-earlier-boot\n');
  s = new LmdbStore(dir, { durability: 'fsync', bootId: 'a-later-boot' });
  assert.equal(s.recovery.base, 'empty', 'rebuilt from the whole redo log');
  for (let k = 0; k < 100; k++) {
    const newest = 2000 - ((2000 - k) % 100);
    assert.equal(s.get(0, Buffer.from(`k${k}`))?.toString(), `v${newest}`);
  }
  await s.close();
});
