/**
 * What an fdatasync costs after a small write, appended (the file grows) or within a file
 * already sized ahead (sparse, `ftruncate`): the measurement behind the redo log's sizing
 * ahead (src/runtime/redo-log.ts, docs/design.md §5.2).
 *
 *   node --import tsx scripts/fsync.ts [--dir /tmp] [--writes 2000] [--bytes 300] [--rounds 3]
 *
 * Each round writes `--writes` records of `--bytes` bytes one after another to a new file in
 * `--dir`, with an fdatasync after each, once appending and once within the size, and prints
 * the median and p90 of the fdatasyncs in µs.
 */
import { closeSync, fdatasyncSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string', default: tmpdir() },
    writes: { type: 'string', default: '2000' },
    bytes: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
  },
});
const writes = Number(args.writes);
const record = Buffer.alloc(Number(args.bytes), 7);
const dir = mkdtempSync(join(args.dir, 'chainkv-fsync-'));

function round(sizedAhead: boolean): string {
  const path = join(dir, sizedAhead ? 'sized' : 'append');
  const fd = openSync(path, 'wx');
  if (sizedAhead) ftruncateSync(fd, 64 * 1024 * 1024);
  const us: number[] = [];
  try {
    for (let i = 0, at = 0; i < writes; i++, at += record.length) {
      writeSync(fd, record, 0, record.length, at);
      const t0 = process.hrtime.bigint();
      fdatasyncSync(fd);
      us.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    closeSync(fd);
    rmSync(path);
  }
  us.sort((a, b) => a - b);
  const q = (p: number): string => us[Math.min(us.length - 1, Math.floor(p * us.length))]!.toFixed(0);
  return `${sizedAhead ? 'within the size' : 'appending'}: p50 ${q(0.5)} µs, p90 ${q(0.9)} µs`;
}

try {
  console.log(`fdatasync after a write of ${record.length} bytes, ${writes} times, in ${args.dir}`);
  for (let r = 0; r < Number(args.rounds); r++) console.log(`  ${round(false)}   |   ${round(true)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
