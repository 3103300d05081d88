import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { PREALLOCATE_BYTES, RedoLog } from '../../src/runtime/redo-log.ts';
import { LmdbStore } from '../../src/runtime/storage.ts';
import { tempDirs } from '../support/tmp.ts';

/**
 * The redo log and snapshots under a real process kill (SIGKILL of a writer child) and a
 * simulated power loss: another boot id, and LMDB's file overwritten with garbage (whatever the
 * kernel wrote back of it, in whatever order), so that only the snapshot and the redo log's
 * synced records are left to rebuild it from.
 */
const fresh = tempDirs('chainkv-redo-');

const WRITER = new URL('../support/redo-writer.ts', import.meta.url).pathname;

function write(dir: string, from: number, count: number, end: 'close' | 'kill', checkpointBytes?: number): { checkpoints: number; durable: boolean } {
  const args = ['--import', 'tsx', WRITER, dir, String(from), String(count), end, ...(checkpointBytes !== undefined ? [String(checkpointBytes)] : [])];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
  if (end === 'kill') assert.equal(r.signal, 'SIGKILL', r.stderr);
  else assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { checkpoints: number; durable: boolean };
}

/** Every put of seqs [1, upTo] is there: the newest version of each of the 500 keys. */
function assertHolds(s: LmdbStore, upTo: number): void {
  assert.equal(s.committedSeq(0), upTo);
  for (let k = 0; k < 500; k++) {
    const newest = upTo - ((upTo - k) % 500 + 500) % 500;
    if (newest < 1) continue;
    assert.equal(s.get(0, Buffer.from(`k${k}`))?.toString(), `v${newest}`, `key k${k}`);
  }
  assert.equal(s.loadMembership()?.term, upTo - (upTo % 7));
}

/** A power loss at its worst: every page of LMDB's file written back or not, in any order. */
function tear(dir: string): void {
  const fd = openSync(join(dir, 'data.mdb'), 'r+');
  try {
    writeSync(fd, randomBytes(2 * 1024 * 1024), 0, 2 * 1024 * 1024, 0);
  } finally {
    closeSync(fd);
  }
}

const marker = (dir: string): string => readFileSync(join(dir, 'boot'), 'utf8').trim();
const OTHER_BOOT = 'a-later-boot';

test('a redo file is sized ahead of its records and cut to them when closed; the zeros after them are no torn bytes', () => {
  const dir = fresh();
  const log = new RedoLog(dir);
  const payloads = [Buffer.from('first'), Buffer.alloc(3000, 1), Buffer.from('third')];
  for (const p of payloads) log.append(p);
  const [file] = RedoLog.files(dir);
  assert.equal(statSync(file!.path).size, PREALLOCATE_BYTES, 'sized ahead, not grown by each append');
  // What a crash leaves: the records, then zeros to the file's size.
  const open = RedoLog.read(file!.path);
  assert.deepEqual(open.records, payloads);
  assert.equal(open.bytes, log.bytes);
  assert.equal(open.tornBytes, 0);
  // A record larger than what is left of the file grows it by the record, at least.
  const big = Buffer.alloc(PREALLOCATE_BYTES, 2);
  log.append(big);
  assert.ok(statSync(file!.path).size >= log.bytes);
  log.close();
  assert.equal(statSync(file!.path).size, log.bytes, 'a closed file holds only its records');
  const closed = RedoLog.read(file!.path);
  assert.equal(closed.records.length, 4);
  assert.ok(closed.records[3]!.equals(big));
  assert.equal(closed.tornBytes, 0);
});

test('after a process kill LMDB is trusted (same boot): nothing replayed; a clean close marks the directory clean and keeps the redo log', async () => {
  const dir = fresh();
  write(dir, 1, 300, 'close');
  assert.equal(marker(dir), 'clean');
  assert.ok(RedoLog.files(dir).length >= 1, 'the redo log stays until a snapshot covers it');
  write(dir, 301, 300, 'kill');
  assert.notEqual(marker(dir), 'clean', 'a run writing the directory names its boot');
  const left = RedoLog.files(dir).at(-1)!.path;
  assert.ok(statSync(left).size > RedoLog.read(left).bytes, 'the killed run left its redo file sized ahead, zeros after the records');
  const s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.recovery.base, 'trusted');
  assert.equal(s.redoStats.replayedRecords, 0, 'after a process kill LMDB holds every record (meta r): none is applied again');
  assertHolds(s, 600);
  await s.close();
});

test('power loss: LMDB torn; the snapshot plus the synced redo log restore every synced write; a torn tail is ignored', async () => {
  const dir = fresh();
  const stats = write(dir, 1, 3000, 'kill', 16 * 1024);
  assert.ok(stats.checkpoints >= 2, `checkpoints: ${stats.checkpoints}`);
  assert.ok(existsSync(join(dir, 'snapshot.mdb')));
  tear(dir);
  const files = RedoLog.files(dir);
  // A record torn by the crash: its header and the first bytes of its payload, written where
  // the intact records end (the file's size runs on, in zeros: redo files are sized ahead).
  const last = files[files.length - 1]!.path;
  const fd = openSync(last, 'r+');
  writeSync(fd, Buffer.from([0, 0, 1, 0, 9, 9, 9, 9, 1, 2, 3]), 0, 11, RedoLog.read(last).bytes);
  closeSync(fd);
  const s = new LmdbStore(dir, { durability: 'fsync', bootId: OTHER_BOOT });
  assert.equal(s.recovery.base, 'snapshot');
  assert.equal(s.redoStats.tornBytes, 11);
  assert.ok(s.redoStats.replayedRecords > 0, 'the records after the snapshot are applied');
  assertHolds(s, 3000);
  await s.close();
});

test('power loss before the first snapshot: rebuilt from an empty database and the whole redo log', async () => {
  const dir = fresh();
  write(dir, 1, 300, 'kill');
  assert.equal(existsSync(join(dir, 'snapshot.mdb')), false);
  tear(dir);
  const s = new LmdbStore(dir, { durability: 'fsync', bootId: OTHER_BOOT });
  assert.equal(s.recovery.base, 'empty');
  assert.equal(s.redoStats.replayedRecords, 300);
  assertHolds(s, 300);
  await s.close();
});

test('power loss after a clean close and a later run: the redo files kept across the close are replayed too', async () => {
  const dir = fresh();
  write(dir, 1, 1500, 'close', 16 * 1024);
  // A clean close flushed LMDB: trusted even by another boot.
  let s = new LmdbStore(dir, { durability: 'fsync', bootId: OTHER_BOOT });
  assert.equal(s.recovery.base, 'trusted');
  await s.close();
  write(dir, 1501, 300, 'kill');
  tear(dir);
  s = new LmdbStore(dir, { durability: 'fsync', bootId: `${OTHER_BOOT}-2` });
  assert.equal(s.recovery.base, 'snapshot');
  assertHolds(s, 1800);
  await s.close();
});

test('a directory of an older version (no marker, no snapshot) is trusted and snapshotted at once', async () => {
  const dir = fresh();
  write(dir, 1, 300, 'close');
  // What an older version left: no marker, no snapshot, no redo file.
  for (const name of readdirSync(dir)) if (name === 'boot' || name.startsWith('redo-') || name === 'snapshot.mdb') rmSync(join(dir, name));
  let s = new LmdbStore(dir, { durability: 'fsync', bootId: OTHER_BOOT });
  assert.equal(s.recovery.base, 'unverified');
  assertHolds(s, 300);
  await s.close();
  assert.ok(existsSync(join(dir, 'snapshot.mdb')), 'a snapshot is taken at the first open');
  write(dir, 301, 300, 'kill');
  tear(dir);
  s = new LmdbStore(dir, { durability: 'fsync', bootId: `${OTHER_BOOT}-2` });
  assert.equal(s.recovery.base, 'snapshot');
  assertHolds(s, 600);
  await s.close();
});

test('checkpoints keep the redo log short; a kill between checkpoints loses nothing synced', async () => {
  const dir = fresh();
  const stats = write(dir, 1, 3000, 'kill', 16 * 1024);
  assert.ok(stats.checkpoints >= 2, `checkpoints: ${stats.checkpoints}`);
  assert.ok(stats.durable);
  const files = RedoLog.files(dir);
  assert.ok(files.length <= 2, `redo files left: ${files.map((f) => f.path).join(', ')}`);
  const s = new LmdbStore(dir, { durability: 'fsync' });
  assertHolds(s, 3000);
  await s.close();
});
