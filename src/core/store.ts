/**
 * What the protocol core needs from storage, as a synchronous interface: reads see every
 * write made so far (the adapter keeps not-yet-durable writes visible), and writes are
 * applied in call order. Durability is not the store's promise to the core but the
 * runtime's: an output marked `durable` is released only after every write made before it
 * is on disk ("persist, then send", as in etcd's Ready). The real adapter is LMDB; the
 * simulator's is an in-memory store that forgets what was not flushed when a node crashes.
 */
import type { MembershipState } from './membership.ts';

/**
 * Log rows of superseded versions are kept for at least this many seqs per partition (and for
 * at least a retry deadline after their commit: Replica.idHorizon): they carry the request ids
 * a restarted node needs to recognise retries of writes it committed before. A store drops the
 * row of a superseded version at once only below the point pruning has reached.
 */
export const KEEP_LOG_SEQS = 200_000;

/**
 * Bytes of keys and values per page of a scan, a catch-up reply or a retransmission: a page
 * ends after the item that reaches this many (so it always holds at least one). Each page
 * travels as one peer frame, and a count of items alone does not bound its size: 10,000
 * values of 1 MiB would be a 10 GiB frame, which the transport drops as oversized, so a
 * node catching up after missing many large values would ask for the same page forever.
 */
export const PAGE_BYTES = 8 * 1024 * 1024;

/** Bytes an item counts for against PAGE_BYTES. */
export function itemBytes(key: Buffer, value: Buffer | null): number {
  return key.length + (value?.length ?? 0);
}

/** Bytes a list of items counts for against PAGE_BYTES. */
export function itemsBytes(items: readonly { key: Buffer; value: Buffer | null }[]): number {
  let total = 0;
  for (const it of items) total += itemBytes(it.key, it.value);
  return total;
}

/** Whether a page may have more after it: it holds `limit` items, or its keys and values reach `maxBytes`. */
export function pageIsFull(items: readonly { key: Buffer; value: Buffer | null }[], limit: number, maxBytes: number): boolean {
  return items.length >= limit || itemsBytes(items) >= maxBytes;
}

/**
 * A page of `@` over the partitions a store holds: each partition's `scan` in turn, from the
 * cursor (afterPartition, after), until `limit` pairs or `maxBytes` of keys and values.
 */
export function localPage(
  partitions: Iterable<number>,
  afterPartition: number,
  after: Buffer | null,
  limit: number,
  maxBytes: number,
  scan: (p: number, after: Buffer | null, limit: number, maxBytes: number) => KeyValue[],
): LocalKeyValue[] {
  const out: LocalKeyValue[] = [];
  let bytes = 0;
  for (const p of [...partitions].sort((a, b) => a - b)) {
    if (p < afterPartition) continue;
    for (const kv of scan(p, p === afterPartition ? after : null, limit - out.length, maxBytes - bytes)) {
      out.push({ partition: p, key: kv.key, value: kv.value });
      bytes += itemBytes(kv.key, kv.value);
    }
    if (out.length >= limit || bytes >= maxBytes) break;
  }
  return out;
}

/** The first items of a sequence, at most `limit`, ending after the one that reaches `maxBytes`. */
export function pageOf<T>(items: Iterable<T>, limit: number, maxBytes: number, bytes: (item: T) => number): T[] {
  const out: T[] = [];
  if (limit <= 0 || maxBytes <= 0) return out;
  let total = 0;
  // Stops right after the item that fills the page: no further item is read (a generator is
  // not advanced past it).
  for (const item of items) {
    out.push(item);
    total += bytes(item);
    if (out.length >= limit || total >= maxBytes) break;
  }
  return out;
}

export type EntryKind = 'put' | 'del' | 'clear';

/** One change in a partition's history, ordered by `seq` (contiguous per partition, assigned by the head). */
export interface Entry {
  readonly seq: number;
  /** Epoch of the view under which the head assigned the sequence number. */
  readonly epoch: number;
  readonly kind: EntryKind;
  /** The key (empty for `clear`, which deletes every key of the partition). */
  readonly key: Buffer;
  /** The value of a put; null for del and clear. */
  readonly value: Buffer | null;
  /** Request id, kept so that a retried write is applied once. */
  readonly id: string;
  /** Whether the key was live just before this write (as ordered by the head); answers DEL. */
  readonly existed?: boolean;
  /** The coordinator waiting for this write: the tail answers it directly once committed. */
  readonly origin?: string;
}

export interface KeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
}

export interface LocalKeyValue extends KeyValue {
  readonly partition: number;
}

export interface Store {
  /** Live committed value of a key, or null if absent, deleted or cleared. */
  get(partition: number, key: Buffer): Buffer | null;
  /**
   * Live committed pairs of a partition with key > after (bytewise), in key order, at most
   * `limit`, ending after the pair that brings keys and values to `maxBytes` (default: no bound).
   */
  scan(partition: number, after: Buffer | null, limit: number, maxBytes?: number): KeyValue[];
  /** Live committed pairs of every partition stored here, ordered by (partition, key), after the cursor; bounded as `scan`. */
  scanLocal(afterPartition: number, after: Buffer | null, limit: number, maxBytes?: number): LocalKeyValue[];
  /** Highest committed sequence number of a partition (0 if none). */
  committedSeq(partition: number): number;
  /**
   * Committed entries with seq > after, in seq order, at most `limit`, ending after the entry
   * that brings keys and values to `maxBytes` (superseded versions are skipped).
   */
  changesAfter(partition: number, after: number, limit: number, maxBytes?: number): Entry[];
  /** Request ids of committed entries with after < seq <= upTo (superseded versions included, until pruned), in seq order. */
  recentRequests(partition: number, after: number, upTo?: number): { id: string; seq: number }[];
  /**
   * Drops the log rows of superseded versions with seq < below (their request ids are no
   * longer needed), looking at no more than `maxRows` rows. Returns the seq below which every
   * row has been looked at (`below` once it is done; a store may remember it across restarts
   * and return more). Called with increasing `below`.
   */
  pruneLog(partition: number, below: number, maxRows?: number): number;
  /** The seq below which superseded log rows may have been pruned (0 if never): ids above it are all still there. */
  prunedBelow(partition: number): number;
  /**
   * Physically removes tombstones (and versions hidden by a clear) with seq <= floor, once
   * every canonical member of the chain is known to have committed past them, looking at no
   * more than `maxRows` rows (log rows, and the records a clear hides). Returns whether it
   * reached the floor; if not, call again (with the same or a higher floor) to go on.
   */
  collectGarbage(partition: number, floor: number, maxRows?: number): boolean;
  /** Whether the latest write touching this key (or partition) is not yet known durable. */
  volatile(partition: number, key: Buffer): boolean;
  /** Number of live committed pairs of a partition (what `scan` would list), kept as writes commit: O(1). */
  liveCount(partition: number): number;

  /** Records an entry received but not yet committed. */
  appendPending(partition: number, entry: Entry): void;
  /** Applies an entry to the committed state (and drops its pending copy, if any); its seq becomes the committed seq. */
  commit(partition: number, entry: Entry): void;
  /** Sets the committed seq after a catch-up whose entries skipped superseded versions. */
  setCommittedSeq(partition: number, seq: number): void;
  /** Forgets every pending entry of a partition (the node left the chain). */
  dropPending(partition: number): void;

  /** The persisted configuration state (Raft term, vote, log, commit index), or null on first start. */
  loadMembership(): MembershipState | null;
  saveMembership(state: MembershipState): void;
}
