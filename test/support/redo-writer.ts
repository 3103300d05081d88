/**
 * Child process for test/unit/redo-log.test.ts: opens an LmdbStore in fsync mode on a
 * directory, commits `count` puts (one transaction each) to partition 0 starting at seq
 * `from`, waits for sync(), then either closes cleanly ("close") or dies at once with
 * SIGKILL ("kill"), leaving its redo log behind as a crash would.
 *
 *   node --import tsx test/support/redo-writer.ts DIR FROM COUNT close|kill [CHECKPOINT_BYTES]
 */
import { LmdbStore } from '../../src/runtime/storage.ts';

const [dir, fromRaw, countRaw, end, checkpointRaw] = process.argv.slice(2);
const from = Number(fromRaw);
const count = Number(countRaw);
const s = new LmdbStore(dir!, { durability: 'fsync', ...(checkpointRaw !== undefined ? { checkpointBytes: Number(checkpointRaw) } : {}) });
for (let seq = from; seq < from + count; seq++) {
  s.transaction(() => {
    s.commit(0, { seq, epoch: 1, kind: 'put', key: Buffer.from(`k${seq % 500}`), value: Buffer.from(`v${seq}`), id: `id-${seq}` });
    if (seq % 7 === 0) s.saveMembership({ term: seq, votedFor: null, log: [], commit: 0 });
  });
  // Every few transactions, wait for durability, as the tail does before it answers.
  if (seq % 10 === 0) await s.sync();
}
await s.sync();
process.stdout.write(JSON.stringify({ ...s.redoStats, durable: s.durableGeneration === s.writeGeneration }) + '\n');
if (end === 'kill') process.kill(process.pid, 'SIGKILL');
await s.close();
