import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { RedoLog } from '../../src/runtime/redo-log.ts';
import { LmdbStore } from '../../src/runtime/storage.ts';
import { tempDirs } from '../support/tmp.ts';

/**
 * The redo log under a real process kill (SIGKILL of a writer child) and a simulated power
 * loss: LMDB's file put back as it was at its last flush, only the redo log's synced records
 * left to restore the rest.
 */
const fresh = tempDirs('chainkv-redo-');

const WRITER = new URL('../support/redo-writer.ts', import.meta.url).pathname;

/** Copies LMDB's file keeping it sparse (with MDB_WRITEMAP it is as large as the map). */
function copySparse(from: string, to: string): void {
  const r = spawnSync('cp', ['--sparse=always', from, to], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

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

test('a clean close leaves no redo log; a killed writer leaves one, whose records LMDB already holds', async () => {
  const dir = fresh();
  write(dir, 1, 300, 'close');
  assert.deepEqual(RedoLog.files(dir), [], 'a clean close flushes LMDB and removes the redo log');
  write(dir, 301, 300, 'kill');
  assert.equal(RedoLog.files(dir).length, 1, 'a killed writer leaves its redo log');
  const s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.redoStats.replayedRecords, 0, 'after a process kill LMDB holds every record (meta r): none is applied again');
  assertHolds(s, 600);
  await s.close();
});

test('power loss: LMDB as of its last flush plus the synced redo log restore every synced write; a torn tail is ignored', async () => {
  const dir = fresh();
  write(dir, 1, 400, 'close');
  // LMDB's file as it is on disk after the clean close (flushed): what survives a power loss.
  copySparse(join(dir, 'data.mdb'), join(dir, 'flushed.mdb'));
  write(dir, 401, 400, 'kill');
  // The power loss: every LMDB page written since the flush is gone; the redo log was synced.
  copySparse(join(dir, 'flushed.mdb'), join(dir, 'data.mdb'));
  // A record cut short by the crash, after the synced ones.
  const [file] = RedoLog.files(dir);
  appendFileSync(file!.path, Buffer.from([0, 0, 1, 0, 9, 9, 9, 9, 1, 2, 3]));
  const s = new LmdbStore(dir, { durability: 'fsync' });
  assert.equal(s.redoStats.tornBytes, 11);
  assert.equal(s.redoStats.replayedRecords, 400, 'exactly the records LMDB lost are applied');
  assertHolds(s, 800);
  await s.close();
  assert.deepEqual(RedoLog.files(dir), []);
});

test('checkpoints keep the redo log short; a kill between checkpoints loses nothing synced', async () => {
  const dir = fresh();
  const stats = write(dir, 1, 3000, 'kill', 16 * 1024);
  assert.ok(stats.checkpoints >= 5, `checkpoints: ${stats.checkpoints}`);
  assert.ok(stats.durable);
  const files = RedoLog.files(dir);
  assert.ok(files.length <= 2, `redo files left: ${files.map((f) => f.path).join(', ')}`);
  const s = new LmdbStore(dir, { durability: 'fsync' });
  assertHolds(s, 3000);
  await s.close();
  assert.equal(readdirSync(dir).filter((n) => n.startsWith('redo-')).length, 0);
});
