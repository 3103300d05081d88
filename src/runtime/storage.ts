import {
  closeSync,
  copyFileSync,
  existsSync,
  fdatasync,
  fdatasyncSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { open } from 'lmdb';
import { Packr } from 'msgpackr';
import type { Database, RootDatabase } from 'lmdb';
import type { MembershipState } from '../core/membership.ts';
import { itemBytes, localPage, pageOf } from '../core/store.ts';
import type { Entry, EntryKind, KeyValue, LocalKeyValue, Store } from '../core/store.ts';
import { copyOf, splitRequestId } from '../core/request-id.ts';
import { RedoLog, syncDir } from './redo-log.ts';

/**
 * LMDB storage adapter (lmdb-js).
 *
 * Layout (one LMDB environment, named databases):
 *   kv      [partition u16][key]        -> [flags u8][seq u48][epoch u32][value]   latest committed version per key
 *   log.<p> [partition u16][seq u48]    -> [kind|0x80 u8][prefix varint][counter varint][key]   one row per live version, for catch-up
 *                                          or [kind u8][idLen u8][id][key]   (an id not shaped node.incarnation.counter; older rows)
 *   meta    string                      -> number, string, object                    committed seq, clear marks, id prefixes (i:<n>), Raft
 * Each partition's log is a database of its own: rows are appended in seq order, and LMDB
 * fills a page before it starts the next one when every insert goes to the end of its tree
 * (in one database shared by three partitions, each partition's inserts landed mid-tree and
 * split pages in half: 93 against 47 MB for 889k rows). Older data directories hold one
 * `log` database, and a `pending` one (pending entries are now kept in memory only); at open
 * the first is moved into the per-partition databases and both are emptied.
 *
 * Writes are made in synchronous LMDB transactions opened with MDB_NOSYNC, so they are visible
 * at once and never block on the disk. Durability is a separate step. In `fsync` mode every
 * transaction's writes are also appended, just before LMDB commits it, as one record of a redo
 * log (redo-log.ts); `sync()` runs one fdatasync of that small sequential file in the thread
 * pool, covering every transaction committed before it started (group commit).
 *
 * LMDB's own file is never relied on after a power loss: with MDB_NOSYNC and MDB_WRITEMAP the
 * kernel writes its pages back in any order, so a machine crash can leave a torn B-tree. A
 * checkpoint (once the redo log since the last one passes `checkpointBytes`) instead copies
 * the database, from one read snapshot, to `snapshot.mdb` (synced, then renamed into place),
 * and only then deletes the redo files it covers. At open, `data.mdb` is trusted if the marker
 * file `boot` names this machine's current boot (the process died but the page cache, which
 * holds every commit, did not) or says the last run closed cleanly (and flushed it); otherwise
 * it is replaced by the snapshot (or by an empty database when the redo log still goes back to
 * its first record). Then the redo records LMDB lacks are applied. In `process` mode there is
 * neither redo log nor snapshot: a committed transaction survives a process kill (it is in the
 * page cache) but not a power loss.
 */
export type Durability = 'fsync' | 'process';

const FLAG_TOMBSTONE = 1;

/** Database codes in redo records (2 was the pending database, no longer written). */
const KV = 0;
const LOG = 1;
const META = 3;
type DbCode = typeof KV | typeof LOG | typeof META;
/** A blind write: [db, key, value] sets, [db, key] deletes. */
type RedoOp = [DbCode, Buffer | string, unknown?];
const redoPackr = new Packr({ useRecords: false, moreTypes: false });
/** meta key: number of the newest redo record whose writes LMDB holds. */
const REDO_SEQ_KEY = 'r';
const KIND_CODE: Record<EntryKind, number> = { put: 0, del: 1, clear: 2 };
const CODE_KIND: EntryKind[] = ['put', 'del', 'clear'];

function kvKey(p: number, key: Buffer): Buffer {
  const k = Buffer.allocUnsafe(2 + key.length);
  k.writeUInt16BE(p, 0);
  key.copy(k, 2);
  return k;
}

function seqKey(p: number, seq: number): Buffer {
  const k = Buffer.allocUnsafe(8);
  k.writeUInt16BE(p, 0);
  k.writeUIntBE(seq, 2, 6);
  return k;
}

function partitionStart(p: number): Buffer {
  const k = Buffer.alloc(2);
  k.writeUInt16BE(p, 0);
  return k;
}

interface Rec {
  tombstone: boolean;
  seq: number;
  epoch: number;
  value: Buffer;
}

function encodeRec(entry: Entry): Buffer {
  const value = entry.value ?? Buffer.alloc(0);
  const b = Buffer.allocUnsafe(11 + value.length);
  b.writeUInt8(entry.kind === 'put' ? 0 : FLAG_TOMBSTONE, 0);
  b.writeUIntBE(entry.seq, 1, 6);
  b.writeUInt32BE(entry.epoch, 7);
  value.copy(b, 11);
  return b;
}

function decodeRec(b: Buffer): Rec {
  return {
    tombstone: (b.readUInt8(0) & FLAG_TOMBSTONE) !== 0,
    seq: b.readUIntBE(1, 6),
    epoch: b.readUInt32BE(7),
    value: b.subarray(11),
  };
}

/**
 * A log row's first byte: its kind, and this flag when the request id is stored as two varints
 * (the number of its `node.incarnation` prefix in meta `i:<n>`, and its counter) instead of as
 * a string. A row is 39 bytes in its page instead of 56 with the benchmark's ids.
 */
const LOG_ID_NUMBERED = 0x80;

function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    bytes++;
  }
  return bytes;
}

/** LEB128, with arithmetic rather than bit operations: counters may pass 2^31. */
function writeVarint(b: Buffer, at: number, n: number): number {
  while (n >= 128) {
    b[at++] = (n % 128) | 128;
    n = Math.floor(n / 128);
  }
  b[at++] = n;
  return at;
}

function readVarint(b: Buffer, at: number): [value: number, next: number] {
  let n = 0;
  let scale = 1;
  for (;;) {
    const byte = b[at++];
    if (byte === undefined) throw new RangeError('log row ends inside a varint');
    n += (byte & 127) * scale;
    if ((byte & 128) === 0) return [n, at];
    scale *= 128;
  }
}

function logKind(row: Buffer): EntryKind {
  return CODE_KIND[row[0]! & ~LOG_ID_NUMBERED]!;
}

/** Where a log row's key begins. */
function logKeyStart(row: Buffer): number {
  if ((row[0]! & LOG_ID_NUMBERED) === 0) return 2 + row[1]!;
  return readVarint(row, readVarint(row, 1)[1])[1];
}

/** Keys per partition (as latin1 strings), and partitions marked whole (by a clear). */
class KeySet {
  private readonly keys = new Map<number, Set<string>>();
  private readonly partitions = new Set<number>();
  add(p: number, key: string | null): void {
    if (key === null) {
      this.partitions.add(p);
      return;
    }
    let set = this.keys.get(p);
    if (set === undefined) this.keys.set(p, (set = new Set()));
    set.add(key);
  }
  has(p: number, key: string): boolean {
    return this.partitions.has(p) || this.keys.get(p)?.has(key) === true;
  }
  absorb(other: KeySet): void {
    for (const p of other.partitions) this.partitions.add(p);
    for (const [p, set] of other.keys) for (const k of set) this.add(p, k);
  }
}

export interface LmdbStoreOptions {
  durability: Durability;
  /** Initial LMDB map size in bytes; by default lmdb-js starts small and grows it as needed. */
  mapSize?: number;
  /**
   * fsync mode: redo log bytes after which the database is copied to its snapshot and the redo
   * files it covers are deleted; default 32 MiB, or half the last snapshot's size if larger.
   */
  checkpointBytes?: number;
  /**
   * This machine's boot id (default: /proc/sys/kernel/random/boot_id). Tests pass another one
   * to act out a power loss: the page cache, and with it `data.mdb`, is then not trusted.
   */
  bootId?: string;
  /** Told when a checkpoint (a snapshot copy) fails; the store tries again later. */
  onCheckpointError?: (err: unknown) => void;
}

/** What the database file was taken to hold at open, and why (logged at start-up). */
export interface Recovery {
  /**
   * `trusted`: `data.mdb` as it was; `snapshot`: replaced by the last snapshot; `empty`: replaced
   * by an empty database (the redo log goes back to its first record); `unverified`: kept,
   * although it may be torn, for lack of either (a directory of an older version).
   */
  base: 'trusted' | 'snapshot' | 'empty' | 'unverified';
  reason: string;
}

/** Marker file: the boot id of the run writing the directory, or CLEAN after a clean close. */
const MARKER = 'boot';
const CLEAN = 'clean';
const SNAPSHOT = 'snapshot.mdb';
const SNAPSHOT_TMP = 'snapshot.tmp';
/** Redo files (left by restarts) after which a checkpoint is taken whatever their size. */
const MAX_REDO_FILES = 8;

function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // Unknown: every unclean stop is then treated as a power loss (safe, and slower to open).
    return `unknown-${randomUUID()}`;
  }
}

function readMarker(dir: string): string | null {
  try {
    return readFileSync(join(dir, MARKER), 'utf8').trim();
  } catch {
    return null;
  }
}

/** Replaces the marker durably: written and synced under another name, renamed, directory synced. */
function writeMarker(dir: string, value: string): void {
  const tmp = join(dir, `${MARKER}.tmp`);
  writeFileSync(tmp, `${value}\n`);
  fsyncPath(tmp);
  renameSync(tmp, join(dir, MARKER));
  syncDir(dir);
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Number of the first redo record still on disk, or null if there is none. */
function firstRedoRecord(dir: string): number | null {
  for (const f of RedoLog.files(dir)) {
    const { records } = RedoLog.read(f.path);
    if (records.length > 0) return (redoPackr.unpack(records[0]!) as [number])[0];
  }
  return null;
}

/**
 * Before LMDB opens the directory: decides whether `data.mdb` can be trusted and, if not, puts
 * in its place what the snapshot and the redo log can rebuild every durable write from.
 */
function prepareBase(dir: string, bootId: string): Recovery {
  const data = join(dir, 'data.mdb');
  if (!existsSync(data)) return { base: 'trusted', reason: 'new database' };
  const marker = readMarker(dir);
  if (marker === CLEAN) return { base: 'trusted', reason: 'the last run closed cleanly' };
  if (marker === bootId) return { base: 'trusted', reason: 'the process stopped, the machine did not (page cache intact)' };
  const why = marker === null ? 'no marker of the last run' : 'the machine restarted since the last run wrote (power loss or crash)';
  const lock = join(dir, 'lock.mdb');
  const snapshot = join(dir, SNAPSHOT);
  if (existsSync(snapshot)) {
    // A copy, not a rename: a crash during recovery starts it again from the same snapshot.
    copyFileSync(snapshot, data);
    fsyncPath(data);
    rmSync(lock, { force: true });
    return { base: 'snapshot', reason: why };
  }
  if (firstRedoRecord(dir) === 1) {
    unlinkSync(data);
    rmSync(lock, { force: true });
    syncDir(dir);
    return { base: 'empty', reason: why };
  }
  return { base: 'unverified', reason: `${why}; no snapshot yet (a directory of an older version)` };
}

export class LmdbStore implements Store {
  readonly dir: string;
  readonly durability: Durability;
  private readonly env: RootDatabase;
  private readonly kv: Database<Buffer, Buffer>;
  /** Per-partition log databases (`log.<p>`). */
  private readonly logs = new Map<number, Database<Buffer, Buffer>>();
  private readonly meta: Database<unknown, string>;
  private readonly committed = new Map<number, number>();
  /** Partitions whose committed seq or live count changed in the current transaction. */
  private readonly committedDirty = new Set<number>();
  /** Seqs received and not yet committed, per partition (memory only; for stats). */
  private readonly pendingSeqs = new Map<number, Set<number>>();
  private readonly clearedAt = new Map<number, number>();
  /** Live pairs per partition (meta `n:p`), kept as writes commit. */
  private readonly live = new Map<number, number>();
  private fd: number;
  /** fsync mode only: the redo log, the current transaction's writes, and checkpoint state. */
  private readonly redo: RedoLog | null = null;
  private readonly redoOps: RedoOp[] = [];
  private inTransaction = false;
  /** Number of the newest redo record (stored in meta `r` by the transaction it records). */
  private redoSeq = 0;
  private readonly checkpointBytes: number;
  private checkpointing: Promise<void> | null = null;
  readonly redoStats = { replayedRecords: 0, tornBytes: 0, checkpoints: 0, checkpointErrors: 0 };
  /** What `data.mdb` was taken to hold at open. */
  readonly recovery: Recovery;
  /** Redo files closed for appends and not yet covered by a snapshot, and their total size. */
  private finished: { fd: number | null; path: string; bytes: number }[] = [];
  private finishedBytes = 0;
  /** Size of the last snapshot; a checkpoint waits for half as many redo bytes if that is more. */
  private snapshotBytes = 0;
  /** After a failed checkpoint: the redo log size at which to try again. */
  private retryCheckpointAt = 0;
  private readonly onCheckpointError: ((err: unknown) => void) | undefined;

  /** Incremented by every write; `syncedGen` is the newest generation known durable. */
  private gen = 0;
  private syncedGen = 0;
  /**
   * Keys written and not yet known durable, in two generations: written since the sync in
   * flight began, and covered by that sync, which drops its generation whole when it ends (a
   * generation number per key, swept at every sync, cost 2% of the nodes' CPU at c=64).
   */
  private unsynced = new KeySet();
  private inSync = new KeySet();
  private syncing: Promise<void> | null = null;
  private closed = false;
  /** Request-id prefixes (`node.incarnation`) numbered for log rows, as meta `i:<n>` holds them. */
  private readonly idPrefixes: string[] = [];
  private readonly idPrefixNumbers = new Map<string, number>();

  constructor(dir: string, opts: LmdbStoreOptions) {
    this.dir = dir;
    this.durability = opts.durability;
    mkdirSync(dir, { recursive: true });
    rmSync(join(dir, SNAPSHOT_TMP), { recursive: true, force: true }); // a checkpoint cut short
    const bootId = opts.bootId ?? readBootId();
    const fresh = !existsSync(join(dir, 'data.mdb'));
    this.recovery = prepareBase(dir, bootId);
    // From here on, writes change the page cache of this boot (in process mode the marker is
    // removed below).
    if (this.durability === 'fsync') writeMarker(dir, bootId);
    this.env = open({
      path: dir,
      noSync: true, // we fsync ourselves, once per group of transactions (see sync())
      overlappingSync: false,
      // Commits change the mapped pages in place instead of one pwrite per dirty page (about
      // a dozen per transaction): 20% more writes per second at c=64 on this machine.
      useWritemap: true,
      // With MDB_WRITEMAP the file is as large as the map (sparse: `du` shows what is used).
      // 1 GiB to start unless configured (`mapSizeMiB`); lmdb-js grows the map when the data
      // outgrows it, and each remap leaves the old mapping resident for a while, so a node
      // that will hold more should start with a larger map.
      mapSize: opts.mapSize ?? 1024 ** 3,
      // kv, meta, one log per partition held (and the `log` and `pending` of older versions)
      maxDbs: 128,
    });
    this.kv = this.env.openDB<Buffer, Buffer>({ name: 'kv', keyEncoding: 'binary', encoding: 'binary' });
    this.meta = this.env.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
    // The root database lists the named databases.
    const names = new Set([...this.env.getKeys()].filter((k): k is string => typeof k === 'string'));
    for (const name of names) {
      const m = /^log\.(\d+)$/.exec(name);
      if (m !== null) this.logOf(Number(m[1]));
    }
    this.fd = openSync(join(dir, 'data.mdb'), 'r+');
    this.checkpointBytes = opts.checkpointBytes ?? 32 * 1024 * 1024;
    this.onCheckpointError = opts.onCheckpointError;
    // Redo files left by earlier runs are replayed in any mode (the mode may have changed
    // between runs). Each record is numbered, and the transaction it records also stores that number in
    // meta `r`: records up to LMDB's `r` are already in LMDB (after a process crash, all of
    // them), so only the ones after it are applied.
    this.redoSeq = (this.meta.get(REDO_SEQ_KEY) as number | undefined) ?? 0;
    // Before any replay: a replayed write to a log row must find the row where it now lives.
    const migrated = names.has('log') && this.migrateSharedLog();
    const leftover = RedoLog.files(dir);
    /** Number of the first record the redo files hold (1: they reach back to the database's start). */
    let firstRecord: number | null = null;
    /** Where each leftover file's records end (its size may hold zeros after them). */
    const recordBytes = new Map<string, number>();
    if (leftover.length > 0) {
      this.env.transactionSync(() => {
        for (const f of leftover) {
          const { records, bytes, tornBytes } = RedoLog.read(f.path);
          recordBytes.set(f.path, bytes);
          this.redoStats.tornBytes += tornBytes;
          for (const rec of records) {
            const [n, ops] = redoPackr.unpack(rec) as [number, RedoOp[]];
            firstRecord ??= n;
            if (n <= this.redoSeq) continue;
            for (const op of ops) this.applyOp(op);
            this.redoSeq = n;
            this.redoStats.replayedRecords++;
          }
        }
        this.meta.putSync(REDO_SEQ_KEY, this.redoSeq);
      });
    }
    // Data directories of versions that kept pending entries in LMDB: those rows are never
    // read again (a restarted node re-reads pending entries from its chain).
    if (names.has('pending')) this.env.openDB({ name: 'pending', keyEncoding: 'binary' }).dropSync();
    if (this.durability === 'fsync') {
      // The leftover files stay until a snapshot covers them: after a power loss later in this
      // run, the snapshot and every redo file since it are what rebuilds the database.
      const snapshotPath = join(dir, SNAPSHOT);
      this.snapshotBytes = existsSync(snapshotPath) ? statSync(snapshotPath).size : 0;
      const covered = fresh || existsSync(snapshotPath) || firstRecord === 1;
      for (const f of leftover) {
        const bytes = recordBytes.get(f.path) ?? 0;
        if (bytes === 0) RedoLog.retireFile(f.path);
        else this.finished.push({ fd: null, path: f.path, bytes });
      }
      this.finishedBytes = this.finished.reduce((n, f) => n + f.bytes, 0);
      this.redo = new RedoLog(dir);
      // Without a snapshot, a directory whose redo log no longer reaches its first record (of an
      // older version, or migrated just now) gets one at once.
      if (!covered || migrated || this.finished.length >= MAX_REDO_FILES) this.checkpoint();
    } else {
      // Process mode promises nothing across a power loss: the database file is all there is.
      if (leftover.length > 0 || migrated) fdatasyncSync(this.fd);
      for (const f of leftover) RedoLog.retireFile(f.path);
      rmSync(join(dir, SNAPSHOT), { force: true });
      rmSync(join(dir, MARKER), { force: true });
      syncDir(dir);
    }
    for (const { key, value } of this.meta.getRange({})) {
      const m = /^(c|x|i|n):(\d+)$/.exec(key);
      if (m === null) continue;
      if (m[1] === 'i') {
        this.idPrefixes[Number(m[2])] = value as string;
        this.idPrefixNumbers.set(value as string, Number(m[2]));
      } else (m[1] === 'c' ? this.committed : m[1] === 'x' ? this.clearedAt : this.live).set(Number(m[2]), value as number);
    }
    // Data directories written before live counts were kept: counted once, here.
    const uncounted = [...this.committed.keys()].filter((p) => !this.live.has(p));
    if (uncounted.length > 0) {
      this.transaction(() => {
        for (const p of uncounted) {
          let n = 0;
          for (const _ of this.livePairs(p, null)) n++;
          this.live.set(p, n);
          this.committedDirty.add(p);
        }
      });
    }
  }

  /** The log database of a partition, opened (and created) on first use. */
  private logOf(p: number): Database<Buffer, Buffer> {
    let db = this.logs.get(p);
    if (db === undefined) {
      db = this.env.openDB<Buffer, Buffer>({ name: `log.${p}`, keyEncoding: 'binary', encoding: 'binary' });
      this.logs.set(p, db);
    }
    return db;
  }

  /** The database a redo code names; log rows go to their partition's log (the key's first two bytes). */
  private db(code: DbCode, key: Buffer | string): Database<unknown, Buffer | string> {
    if (code === KV) return this.kv as Database<unknown, Buffer | string>;
    if (code === META) return this.meta as Database<unknown, Buffer | string>;
    return this.logOf((key as Buffer).readUInt16BE(0)) as Database<unknown, Buffer | string>;
  }

  /**
   * Data directories written before per-partition logs hold every row in one `log` database
   * (keys are the same): the rows are copied to their partition's database and the old one
   * emptied, in one transaction. Returns whether anything was moved.
   */
  private migrateSharedLog(): boolean {
    const shared = this.env.openDB<Buffer, Buffer>({ name: 'log', keyEncoding: 'binary', encoding: 'binary' });
    let moved = 0;
    this.env.transactionSync(() => {
      for (const { key, value } of shared.getRange({})) {
        this.logOf(key.readUInt16BE(0)).putSync(key, value);
        moved++;
      }
      shared.dropSync();
    });
    return moved > 0;
  }

  /** Runs `fn` inside one synchronous write transaction: every store write it makes commits together. */
  transaction<T>(fn: () => T): T {
    const prefixesBefore = this.idPrefixes.length;
    try {
      return this.transactionBody(fn);
    } catch (err) {
      // Prefixes numbered by a transaction that did not commit are not in meta either.
      for (const prefix of this.idPrefixes.splice(prefixesBefore)) this.idPrefixNumbers.delete(prefix);
      throw err;
    }
  }

  private transactionBody<T>(fn: () => T): T {
    return this.env.transactionSync(() => {
      this.inTransaction = true;
      this.redoOps.length = 0;
      try {
        const result = fn();
        // Committed seqs and live counts are written once per transaction, not once per entry.
        for (const p of this.committedDirty) {
          this.put(META, `c:${p}`, this.committed.get(p) ?? 0);
          this.put(META, `n:${p}`, this.live.get(p) ?? 0);
        }
        this.committedDirty.clear();
        // The redo record goes out before LMDB commits: the log always holds at least what
        // the database holds, so a replay never undoes a newer write with an older one.
        this.appendRedo(this.redoOps);
        return result;
      } finally {
        this.inTransaction = false;
        this.redoOps.length = 0;
      }
    });
  }

  /** Sets a key in one of the databases, recording the write for the redo log. */
  private put(db: DbCode, key: Buffer | string, value: unknown): void {
    if (this.redo !== null) {
      // A write outside `transaction` gets one of its own: its record and its number in
      // meta `r` must commit together with it.
      if (!this.inTransaction) return this.transaction(() => this.put(db, key, value));
      this.redoOps.push([db, key, value]);
    }
    this.db(db, key).putSync(key, value);
  }

  /** Deletes a key in one of the databases, recording the write for the redo log. */
  private remove(db: DbCode, key: Buffer | string): void {
    if (this.redo !== null) {
      if (!this.inTransaction) return this.transaction(() => this.remove(db, key));
      this.redoOps.push([db, key]);
    }
    this.db(db, key).removeSync(key);
  }

  private applyOp(op: RedoOp): void {
    const [db, key, value] = op;
    if (op.length >= 3) this.db(db, key).putSync(key, value);
    else this.db(db, key).removeSync(key);
  }

  /** Appends one record of blind writes; the caller then makes them in LMDB, with the record's number. */
  private appendRedo(ops: RedoOp[]): void {
    if (this.redo === null || ops.length === 0) return;
    const n = ++this.redoSeq;
    this.redo.append(redoPackr.pack([n, ops]));
    this.meta.putSync(REDO_SEQ_KEY, n);
    if (this.checkpointing === null && this.redoBytesSinceSnapshot >= Math.max(this.checkpointBytes, this.snapshotBytes / 2, this.retryCheckpointAt)) {
      this.checkpoint();
    }
  }

  /** Redo log written since the last snapshot: the files it does not cover yet, and the current one. */
  private get redoBytesSinceSnapshot(): number {
    return this.finishedBytes + (this.redo?.bytes ?? 0);
  }

  /**
   * Restarts the redo log and snapshots the database: the current file is synced and set
   * aside, new records go to a fresh file, the database is copied (from one read snapshot,
   * taken once the current transaction has committed, so it holds every record of the files
   * set aside) to `snapshot.mdb`, and then those files are deleted.
   */
  private checkpoint(): void {
    const redo = this.redo!;
    const bytes = redo.bytes;
    this.finished.push({ ...redo.rotate(), bytes });
    this.finishedBytes += bytes;
    // Everything written so far is in the old file, now durable.
    this.markDurable(this.gen);
    this.unsynced = new KeySet();
    this.inSync = new KeySet();
    const covered = [...this.finished];
    const inFlight = this.syncing ?? Promise.resolve();
    this.checkpointing = inFlight
      .catch(() => undefined)
      // Runs once the current transaction has committed (the caller may be inside it).
      .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
      .then(() => this.snapshot())
      .then(() => {
        for (const f of covered) {
          if (f.fd !== null) closeSync(f.fd);
          RedoLog.retireFile(f.path);
          this.finishedBytes -= f.bytes;
        }
        this.finished = this.finished.filter((f) => !covered.includes(f));
        this.redoStats.checkpoints++;
      })
      .finally(() => {
        this.checkpointing = null;
      });
    // A failed snapshot leaves the files in place (with the previous snapshot, they still
    // rebuild everything); the next checkpoint tries again.
    this.checkpointing.catch((err: unknown) => {
      this.redoStats.checkpointErrors++;
      // Not again at once (a full disk would have every transaction start another copy):
      // after another checkpoint's worth of redo log.
      this.retryCheckpointAt = this.redoBytesSinceSnapshot + this.checkpointBytes;
      this.onCheckpointError?.(err);
    });
  }

  /**
   * Copies the database to `snapshot.mdb`: LMDB's copy (a read transaction, so one consistent
   * state, written with O_DIRECT in a worker thread) to a temporary directory, synced, then
   * renamed over the previous snapshot.
   */
  private async snapshot(): Promise<void> {
    const tmp = join(this.dir, SNAPSHOT_TMP);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
    await this.env.backup(tmp, false);
    const copy = join(tmp, 'data.mdb');
    const file = await openFile(copy, 'r');
    try {
      await file.sync();
    } finally {
      await file.close();
    }
    renameSync(copy, join(this.dir, SNAPSHOT));
    syncDir(this.dir);
    rmSync(tmp, { recursive: true, force: true });
    this.snapshotBytes = statSync(join(this.dir, SNAPSHOT)).size;
  }

  // ------------------------------------------------------------------ reads

  get(p: number, key: Buffer): Buffer | null {
    const raw = this.kv.getBinary(kvKey(p, key));
    if (raw === undefined) return null;
    const rec = decodeRec(raw);
    if (rec.tombstone || rec.seq <= (this.clearedAt.get(p) ?? 0)) return null;
    return Buffer.from(rec.value);
  }

  /**
   * Live committed pairs of a partition with key > after, in key order, copied out of LMDB.
   * The range (one read snapshot) and the clear mark are taken at the first `next()`.
   */
  private *livePairs(p: number, after: Buffer | null): Generator<KeyValue> {
    const cleared = this.clearedAt.get(p) ?? 0;
    const start = after === null ? partitionStart(p) : kvKey(p, after);
    let first = after !== null;
    for (const { key, value } of this.kv.getRange({ start, end: partitionStart(p + 1) })) {
      if (first) {
        first = false;
        if (key.equals(start)) continue; // exclusive cursor
      }
      const rec = decodeRec(value);
      if (rec.tombstone || rec.seq <= cleared) continue;
      yield { key: Buffer.from(key.subarray(2)), value: Buffer.from(rec.value) };
    }
  }

  scan(p: number, after: Buffer | null, limit: number, maxBytes = Infinity): KeyValue[] {
    return pageOf(this.livePairs(p, after), limit, maxBytes, (kv) => itemBytes(kv.key, kv.value));
  }

  /**
   * Live committed pairs of a partition in key order, in chunks of at most `chunk` pairs and
   * about `maxBytes` of keys and values, all from one LMDB read snapshot: the first `next()`
   * takes it (with the clear mark of that moment), and writes committed while the caller
   * yields between chunks do not show.
   */
  *snapshotScan(p: number, chunk: number, maxBytes = Infinity): Generator<KeyValue[]> {
    let out: KeyValue[] = [];
    let bytes = 0;
    for (const kv of this.livePairs(p, null)) {
      out.push(kv);
      bytes += itemBytes(kv.key, kv.value);
      if (out.length >= chunk || bytes >= maxBytes) {
        yield out;
        out = [];
        bytes = 0;
      }
    }
    if (out.length > 0) yield out;
  }

  scanLocal(afterPartition: number, after: Buffer | null, limit: number, maxBytes = Infinity): LocalKeyValue[] {
    return localPage(this.committed.keys(), afterPartition, after, limit, maxBytes, (p, a, l, b) => this.scan(p, a, l, b));
  }

  committedSeq(p: number): number {
    return this.committed.get(p) ?? 0;
  }

  changesAfter(p: number, after: number, limit: number, maxBytes = Infinity): Entry[] {
    const out: Entry[] = [];
    let bytes = 0;
    for (const { key, value } of this.logOf(p).getRange({ start: seqKey(p, after + 1), end: partitionStart(p + 1) })) {
      if (out.length >= limit || bytes >= maxBytes) break;
      const seq = key.readUIntBE(2, 6);
      const kind = logKind(value);
      const id = this.logId(value);
      const k = Buffer.from(value.subarray(logKeyStart(value)));
      if (kind === 'clear') {
        out.push({ seq, epoch: 0, kind, key: k, value: null, id });
        continue;
      }
      const raw = this.kv.getBinary(kvKey(p, k));
      if (raw === undefined) continue;
      const rec = decodeRec(raw);
      if (rec.seq !== seq) continue; // superseded: its row only keeps the request id until pruned
      out.push({ seq, epoch: rec.epoch, kind: rec.tombstone ? 'del' : 'put', key: k, value: rec.tombstone ? null : Buffer.from(rec.value), id });
      bytes += k.length + (rec.tombstone ? 0 : rec.value.length);
    }
    return out;
  }

  recentRequests(p: number, after: number, upTo = Number.MAX_SAFE_INTEGER): { id: string; seq: number }[] {
    const out: { id: string; seq: number }[] = [];
    const end = upTo >= 2 ** 48 - 1 ? partitionStart(p + 1) : seqKey(p, upTo + 1);
    for (const { key, value } of this.logOf(p).getRange({ start: seqKey(p, after + 1), end })) {
      out.push({ id: this.logId(value), seq: key.readUIntBE(2, 6) });
    }
    return out;
  }

  /** meta `q:p`, read once per partition. */
  private readonly pruned = new Map<number, number>();

  prunedBelow(p: number): number {
    let q = this.pruned.get(p);
    if (q === undefined) this.pruned.set(p, (q = (this.meta.get(`q:${p}`) as number | undefined) ?? 0));
    return q;
  }

  pruneLog(p: number, below: number, maxRows = Infinity): number {
    const from = this.prunedBelow(p);
    if (below <= from) return from;
    let rows = 0;
    let reached = below;
    for (const { key, value } of this.logOf(p).getRange({ start: seqKey(p, from), end: seqKey(p, below) })) {
      if (rows++ >= maxRows) {
        reached = key.readUIntBE(2, 6);
        break;
      }
      if (logKind(value) === 'clear') continue;
      const raw = this.kv.getBinary(kvKey(p, value.subarray(logKeyStart(value))));
      if (raw === undefined || decodeRec(raw).seq !== key.readUIntBE(2, 6)) this.remove(LOG, key);
    }
    this.put(META, `q:${p}`, reached);
    this.pruned.set(p, reached);
    return reached;
  }

  /** Log position up to which garbage was collected, per partition (in memory; a restart rescans from 0). */
  private readonly gcDone = new Map<number, number>();
  /** A clear's sweep cut short by the row budget: the clear's seq and the kv key to go on from, per partition. */
  private readonly gcSweep = new Map<number, { clear: number; from: Buffer }>();

  collectGarbage(p: number, floor: number, maxRows = Infinity): boolean {
    const from = this.gcDone.get(p) ?? 0;
    if (floor <= from) return true;
    let budget = maxRows;
    for (const { key, value } of this.logOf(p).getRange({ start: seqKey(p, from + 1), end: seqKey(p, floor + 1) })) {
      const seq = key.readUIntBE(2, 6);
      const kind = logKind(value);
      if (budget-- <= 0) {
        this.gcDone.set(p, seq - 1);
        return false;
      }
      if (kind === 'clear') {
        // Every version older than the clear is hidden: remove them for good, in key order,
        // from where an earlier call stopped.
        const resume = this.gcSweep.get(p);
        const start = resume !== undefined && resume.clear === seq ? resume.from : partitionStart(p);
        for (const row of this.kv.getRange({ start, end: partitionStart(p + 1) })) {
          if (budget-- <= 0) {
            this.gcSweep.set(p, { clear: seq, from: Buffer.from(row.key) });
            this.gcDone.set(p, seq - 1);
            return false;
          }
          const rec = decodeRec(row.value);
          if (rec.seq < seq) {
            this.remove(KV, row.key);
            this.remove(LOG, seqKey(p, rec.seq));
          }
        }
        this.gcSweep.delete(p);
        this.remove(LOG, key);
        continue;
      }
      if (kind !== 'del') continue;
      const k = kvKey(p, value.subarray(logKeyStart(value)));
      const raw = this.kv.getBinary(k);
      if (raw !== undefined) {
        const rec = decodeRec(raw);
        if (rec.tombstone && rec.seq === seq) this.remove(KV, k);
      }
      this.remove(LOG, key);
    }
    this.gcDone.set(p, floor);
    return true;
  }

  private encodeLog(entry: Entry): Buffer {
    const [prefix, counter] = splitRequestId(entry.id);
    if (typeof counter === 'number') {
      let n = this.idPrefixNumbers.get(prefix);
      if (n === undefined) {
        n = this.idPrefixes.length;
        const copy = copyOf(prefix);
        this.idPrefixes.push(copy);
        this.idPrefixNumbers.set(copy, n);
        this.put(META, `i:${n}`, copy);
      }
      const b = Buffer.allocUnsafe(1 + varintBytes(n) + varintBytes(counter) + entry.key.length);
      b[0] = KIND_CODE[entry.kind] | LOG_ID_NUMBERED;
      entry.key.copy(b, writeVarint(b, writeVarint(b, 1, n), counter));
      return b;
    }
    const id = Buffer.from(entry.id, 'utf8');
    if (id.length > 255) throw new RangeError('request id longer than 255 bytes');
    const b = Buffer.allocUnsafe(2 + id.length + entry.key.length);
    b[0] = KIND_CODE[entry.kind];
    b[1] = id.length;
    id.copy(b, 2);
    entry.key.copy(b, 2 + id.length);
    return b;
  }

  /** A log row's request id. */
  private logId(row: Buffer): string {
    if ((row[0]! & LOG_ID_NUMBERED) === 0) return row.toString('utf8', 2, 2 + row[1]!);
    const [n, at] = readVarint(row, 1);
    const prefix = this.idPrefixes[n];
    if (prefix === undefined) throw new Error(`a log row names request-id prefix ${n}, which meta does not hold`);
    return `${prefix}.${readVarint(row, at)[0]}`;
  }

  volatile(p: number, key: Buffer): boolean {
    if (this.durability === 'process') return false;
    const k = key.toString('latin1');
    return this.unsynced.has(p, k) || this.inSync.has(p, k);
  }

  // ----------------------------------------------------------------- writes

  appendPending(p: number, entry: Entry): void {
    // Pending entries live in memory only (the core keeps them): a restarted node drops them
    // anyway and re-reads them from its chain, so writing them to disk bought nothing.
    let set = this.pendingSeqs.get(p);
    if (set === undefined) this.pendingSeqs.set(p, (set = new Set()));
    set.add(entry.seq);
    this.touch(p, entry);
  }

  commit(p: number, entry: Entry): void {
    const sk = seqKey(p, entry.seq);
    this.pendingSeqs.get(p)?.delete(entry.seq);
    if (entry.kind === 'clear') {
      this.clearedAt.set(p, entry.seq);
      this.put(META, `x:${p}`, entry.seq);
      this.setLive(p, 0);
    } else {
      // The superseded version's log row stays until pruneLog: it keeps its request id
      // for retries (a new head must recognise them), and changesAfter skips it. A row
      // pruning has already passed goes now (pruneLog only scans forward).
      const k = kvKey(p, entry.key);
      const old = this.kv.getBinary(k);
      let wasLive = false;
      if (old !== undefined) {
        const rec = decodeRec(old);
        wasLive = !rec.tombstone && rec.seq > (this.clearedAt.get(p) ?? 0);
        if (rec.seq < this.prunedBelow(p)) this.remove(LOG, seqKey(p, rec.seq));
      }
      const delta = (entry.kind === 'put' ? 1 : 0) - (wasLive ? 1 : 0);
      if (delta !== 0) this.setLive(p, this.liveCount(p) + delta);
      this.put(KV, k, encodeRec(entry));
    }
    this.put(LOG, sk, this.encodeLog(entry));
    this.committed.set(p, entry.seq);
    this.committedDirty.add(p);
    this.touch(p, entry);
  }

  liveCount(p: number): number {
    return this.live.get(p) ?? 0;
  }

  private setLive(p: number, n: number): void {
    this.live.set(p, n);
    this.committedDirty.add(p);
  }

  /** Sets the committed seq of a partition after a catch-up that skipped superseded versions. */
  setCommittedSeq(p: number, seq: number): void {
    this.committed.set(p, seq);
    this.committedDirty.add(p);
  }

  dropPending(p: number): void {
    this.pendingSeqs.delete(p);
  }

  loadMembership(): MembershipState | null {
    return (this.meta.get('raft') as MembershipState | undefined) ?? null;
  }

  saveMembership(state: MembershipState): void {
    this.put(META, 'raft', state);
    this.gen++;
  }

  private touch(p: number, entry: Entry): void {
    this.gen++;
    if (this.durability === 'process') return;
    this.unsynced.add(p, entry.kind === 'clear' ? null : entry.key.toString('latin1'));
  }

  // ------------------------------------------------------------- durability

  /** Generation of the newest write; a `sync()` started after it makes it durable. */
  get writeGeneration(): number {
    return this.gen;
  }

  get durableGeneration(): number {
    return this.durability === 'process' ? this.gen : this.syncedGen;
  }

  /**
   * Makes every write made so far durable. Concurrent calls share fdatasyncs: while one runs,
   * later callers wait for the next one, which starts as soon as the current one ends.
   */
  sync(): Promise<void> {
    if (this.durability === 'process' || this.syncedGen >= this.gen) return Promise.resolve();
    if (this.syncing !== null) {
      return this.syncing.then(() => this.sync());
    }
    const target = this.gen;
    // Every write up to `target` is in the current redo file (a checkpoint syncs the previous
    // one before switching), or in LMDB's file when there is no redo log.
    const fd = this.redo !== null ? this.redo.currentFd : this.fd;
    this.inSync = this.unsynced;
    this.unsynced = new KeySet();
    this.syncing = new Promise<void>((resolve, reject) => {
      fdatasync(fd, (err) => {
        this.syncing = null;
        if (err !== null) {
          this.unsynced.absorb(this.inSync);
          this.inSync = new KeySet();
          return reject(err);
        }
        this.inSync = new KeySet();
        this.markDurable(target);
        resolve();
      });
    });
    return this.syncing;
  }

  private markDurable(target: number): void {
    if (target <= this.syncedGen) return;
    this.syncedGen = target;
  }

  /** Number of live and dead records, for status output. */
  stats(): { records: number; logRows: number; pending: number } {
    let pending = 0;
    for (const set of this.pendingSeqs.values()) pending += set.size;
    return { records: this.kv.getCount(), logRows: [...this.logs.values()].reduce((n, db) => n + db.getCount(), 0), pending };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.committedDirty.size > 0) this.transaction(() => undefined);
    this.closed = true;
    await this.sync().catch(() => undefined);
    await this.checkpointing?.catch(() => undefined);
    if (this.redo !== null) {
      // A clean close flushes LMDB's file and says so in the marker: the next run trusts it
      // even after a power loss in between. The redo files stay until a snapshot covers them.
      this.redo.close();
      for (const f of this.finished) if (f.fd !== null) closeSync(f.fd);
      try {
        fdatasyncSync(this.fd);
        writeMarker(this.dir, CLEAN);
      } catch {
        // Not flushed: the marker still names this boot, as after a crash.
      }
    }
    closeSync(this.fd);
    await this.env.close();
  }
}
