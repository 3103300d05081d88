import { closeSync, fdatasyncSync, fsyncSync, ftruncateSync, openSync, readdirSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { crc32 } from 'node:zlib';

/**
 * A redo log: append-only files of checksummed records, made durable by fdatasync of a small
 * sequential file instead of the database file.
 *
 * Why: with MDB_NOSYNC, an fdatasync of LMDB's data file has to flush every page a
 * transaction touched (B-tree paths in four databases, the free list, the meta page) and
 * costs 0.6-1 ms here; an fdatasync after appending a few hundred bytes to a file costs
 * about 0.15 ms. So a transaction's writes are appended here before LMDB commits it, the
 * tail's acknowledgement waits for this file's fdatasync, and LMDB's own file is flushed
 * only at checkpoints.
 *
 * Files are `redo-<n>.log` in the store's directory. A record is
 *   [length u32 BE][crc32 u32 BE][payload]
 * and reading stops at the first record that is short, of length 0, or fails its checksum
 * (a torn tail, or the zeros after the last record).
 *
 * Files are sized ahead of their records (`PREALLOCATE_BYTES` at a time, sparse: the size
 * only, no blocks), and records are written at their offset. An fdatasync after an append
 * must also make the file's new size durable, a journal commit on ext4; within the file's
 * size it need not, and the tail's fdatasync is on the path of every write (what it saves:
 * docs/design.md §5.2, `scripts/fsync.ts`).
 *
 * Checkpoint: once the log since the last one is long enough, the current file is synced and
 * closed for appends (`rotate`), new records go to the next file, and the caller copies the
 * database to its snapshot (storage.ts); after that the files set aside are deleted
 * (`retireFile`). Replaying the files still present is always safe: every record holds blind
 * writes (set key to value, delete key), and the database (or its snapshot) holds a prefix of
 * the recorded sequence, so re-applying a suffix yields the newest state.
 */
/** A redo file grows in steps of this many bytes (sparse: no blocks until written). */
export const PREALLOCATE_BYTES = 64 * 1024 * 1024;

export class RedoLog {
  readonly dir: string;
  private fd: number;
  private number: number;
  /** Bytes of records in the current file (the offset of the next one). */
  private size = 0;
  /** The current file's size: records and the zeros after them. */
  private allocated = 0;

  /** Opens a new file numbered after every existing one (existing files are left for the caller). */
  constructor(dir: string) {
    this.dir = dir;
    const existing = RedoLog.files(dir);
    this.number = existing.length === 0 ? 1 : existing[existing.length - 1]!.number + 1;
    this.fd = this.create(this.number);
  }

  /** The redo files in `dir`, oldest first. */
  static files(dir: string): { number: number; path: string }[] {
    const out: { number: number; path: string }[] = [];
    for (const name of readdirSync(dir)) {
      const m = /^redo-(\d+)\.log$/.exec(name);
      if (m !== null) out.push({ number: Number(m[1]), path: join(dir, name) });
    }
    return out.sort((a, b) => a.number - b.number);
  }

  /**
   * The intact records of one file, in order; `bytes`, where they end; and `tornBytes`, how
   * many bytes after them were unreadable up to the last byte that is not zero (0 for a
   * cleanly ended file, more after a crash in the middle of an append).
   */
  static read(path: string): { records: Buffer[]; bytes: number; tornBytes: number } {
    const data = readFileSync(path);
    const records: Buffer[] = [];
    let at = 0;
    while (at + 8 <= data.length) {
      const len = data.readUInt32BE(at);
      const sum = data.readUInt32BE(at + 4);
      if (len === 0 || at + 8 + len > data.length) break;
      const payload = data.subarray(at + 8, at + 8 + len);
      if (crc32(payload) !== sum) break;
      records.push(payload);
      at += 8 + len;
    }
    let end = data.length;
    while (end > at && data[end - 1] === 0) end--;
    return { records, bytes: at, tornBytes: end - at };
  }

  /** Bytes of records in the current file. */
  get bytes(): number {
    return this.size;
  }

  /** The current file's descriptor, for `sync` (capture it before an asynchronous flush). */
  get currentFd(): number {
    return this.fd;
  }

  /** Appends one record to the page cache (durable after the next `sync` of this file). */
  append(payload: Buffer): void {
    const record = Buffer.allocUnsafe(8 + payload.length);
    record.writeUInt32BE(payload.length, 0);
    record.writeUInt32BE(crc32(payload), 4);
    payload.copy(record, 8);
    if (this.size + record.length > this.allocated) {
      this.allocated += Math.max(PREALLOCATE_BYTES, record.length);
      ftruncateSync(this.fd, this.allocated);
    }
    // One write: a record is never split between two system calls.
    let done = 0;
    while (done < record.length) done += writeSync(this.fd, record, done, record.length - done, this.size + done);
    this.size += record.length;
  }

  /**
   * Makes the current file durable (synchronously: it is small and this happens once per
   * checkpoint), then starts the next file. Returns the finished file, which stays on disk
   * (and its descriptor open, for flushes already started on it) until a snapshot covers it.
   */
  rotate(): { fd: number; path: string } {
    this.trim();
    fdatasyncSync(this.fd);
    const old = { fd: this.fd, path: this.path(this.number) };
    this.number++;
    this.fd = this.create(this.number);
    this.size = 0;
    this.allocated = 0;
    return old;
  }

  /** Deletes a file (left by an earlier run, or finished) whose records the snapshot holds. */
  static retireFile(path: string): void {
    unlinkSync(path);
    syncDir(dirname(path));
  }

  /** Closes the current file (it stays until a snapshot covers it), cut to its records. */
  close(): void {
    this.trim();
    closeSync(this.fd);
  }

  /** Drops the zeros after the last record: a finished file is only its records. */
  private trim(): void {
    if (this.allocated > this.size) ftruncateSync(this.fd, this.size);
    this.allocated = this.size;
  }

  private path(n: number): string {
    return join(this.dir, `redo-${String(n).padStart(8, '0')}.log`);
  }

  private create(n: number): number {
    // 'wx': a new file (records are written at their offsets, not appended).
    const fd = openSync(this.path(n), 'wx');
    // The file's name must survive a power loss before anything in it is relied on.
    syncDir(this.dir);
    return fd;
  }
}

/** fsync of a directory: makes the creation or removal of its entries durable. */
export function syncDir(dir: string): void {
  const d = openSync(dir, 'r');
  try {
    fsyncSync(d);
  } finally {
    closeSync(d);
  }
}
