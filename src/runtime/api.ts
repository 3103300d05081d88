import { createHash } from 'node:crypto';
import { ErrorCodes, KvError } from '../core/errors.ts';
import type { MembershipStatus } from '../core/membership.ts';
import type { ClientResult } from '../core/replica.ts';
import { servingChain } from '../core/view.ts';
import { PAGE_BYTES, itemBytes } from '../core/store.ts';
import type { NodeRuntime } from './node.ts';

/**
 * The operations every front end offers, on top of one node's core: argument checks with
 * clear errors naming the limit, and the multi-partition operations (`*` and `@`) composed
 * from per-partition requests. Front ends only translate wire formats to these calls.
 */
export interface Pair {
  key: Buffer;
  value: Buffer;
}

export interface Page {
  items: Pair[];
  /** Opaque cursor for the next page, or null when the listing is complete. */
  cursor: string | null;
}

export const RESERVED_KEYS = new Set(['*', '@']);
export const DEFAULT_PAGE = 1000;
export const MAX_PAGE = 10_000;
/** Pairs hashed per event-loop turn by `digests`. */
const DIGEST_CHUNK = 5_000;

function unwrap(r: ClientResult): Extract<ClientResult, { ok: true }> {
  if (!r.ok) throw new KvError(r.code, r.message);
  return r;
}

/** Cursor = "<partition>.<base64url of the last key>" (stateless, valid on any node). */
export function encodeCursor(partition: number, after: Buffer | null): string {
  return `${partition}.${after === null ? '' : after.toString('base64url')}`;
}

export function decodeCursor(cursor: string | undefined | null, partitions: number): { partition: number; after: Buffer | null } {
  if (cursor === undefined || cursor === null || cursor === '' || cursor === '0') return { partition: 0, after: null };
  const m = /^(\d+)\.([A-Za-z0-9_-]*)$/.exec(cursor);
  if (m === null || Number(m[1]) >= partitions) throw new KvError(ErrorCodes.BAD_REQUEST, `invalid cursor "${cursor.slice(0, 64)}"`);
  return { partition: Number(m[1]), after: m[2] === '' ? null : Buffer.from(m[2]!, 'base64url') };
}

export class KvApi {
  constructor(readonly node: NodeRuntime) {}

  get maxKeyBytes(): number {
    return this.node.config.maxKeyBytes;
  }

  get maxValueBytes(): number {
    return this.node.config.maxValueBytes;
  }

  checkKey(key: Buffer): void {
    if (key.length === 0) throw new KvError(ErrorCodes.BAD_REQUEST, 'empty key');
    if (key.length > this.maxKeyBytes) {
      throw new KvError(ErrorCodes.TOO_LARGE, `key of ${key.length} bytes exceeds the limit of ${this.maxKeyBytes} bytes (maxKeyBytes)`);
    }
  }

  checkWriteKey(key: Buffer): void {
    this.checkKey(key);
    if (key.length === 1 && RESERVED_KEYS.has(key.toString('latin1'))) {
      throw new KvError(ErrorCodes.BAD_REQUEST, `the keys "*" and "@" are reserved (they mean all pairs and this node's pairs)`);
    }
  }

  checkValue(value: Buffer): void {
    if (value.length > this.maxValueBytes) {
      throw new KvError(
        ErrorCodes.TOO_LARGE,
        `value of ${value.length} bytes exceeds the limit of ${this.maxValueBytes} bytes (maxValueBytes)`,
      );
    }
  }

  /** Inserts or overwrites. Resolves once the write is committed on every chain member. */
  async put(key: Buffer, value: Buffer): Promise<void> {
    this.checkWriteKey(key);
    this.checkValue(value);
    unwrap(await this.node.request({ op: 'put', key, value }));
  }

  /** Returns the value, or null if the key is absent. */
  async get(key: Buffer): Promise<Buffer | null> {
    this.checkKey(key);
    return unwrap(await this.node.request({ op: 'get', key })).value ?? null;
  }

  /** Deletes; resolves with whether the key existed. */
  async del(key: Buffer): Promise<boolean> {
    this.checkWriteKey(key);
    return unwrap(await this.node.request({ op: 'del', key })).existed ?? false;
  }

  /** A page of every live pair in the cluster (`*`), partition by partition, each from its tail. */
  async scanAll(cursor: string | null | undefined, limit = DEFAULT_PAGE): Promise<Page> {
    const size = Math.max(1, Math.min(MAX_PAGE, Math.floor(limit)));
    let { partition, after } = decodeCursor(cursor, this.node.ring.size);
    const items: Pair[] = [];
    let bytes = 0;
    // A page ends at `size` pairs or about PAGE_BYTES of keys and values, whichever comes first.
    while (partition < this.node.ring.size && items.length < size && bytes < PAGE_BYTES) {
      const want = size - items.length;
      const r = unwrap(await this.node.request({ op: 'scan', partition, after, limit: want }));
      const got = r.items ?? [];
      for (const [key, value] of got) {
        items.push({ key, value });
        bytes += itemBytes(key, value);
      }
      // A page may be short because of its byte bound (PAGE_BYTES): only `done` ends a partition.
      if (r.done ?? got.length < want) {
        partition++;
        after = null;
      } else {
        after = got[got.length - 1]![0];
      }
    }
    const done = partition >= this.node.ring.size;
    return { items, cursor: done ? null : encodeCursor(partition, after) };
  }

  /**
   * How many live pairs the cluster holds (`*`): each partition's count from its tail, which
   * keeps it as writes commit, summed. O(partitions), not O(pairs); the partitions are asked
   * all at once but answer each at its own moment, so the sum, like a scan of `*`, is not a
   * snapshot of one instant.
   */
  async countAll(): Promise<number> {
    const counts = await Promise.all(Array.from({ length: this.node.ring.size }, (_, partition) => this.node.request({ op: 'count', partition })));
    return counts.reduce((n, r) => n + (unwrap(r).count ?? 0), 0);
  }

  /** How many live pairs this node stores (`@`), replicas included: O(partitions). */
  async countLocal(): Promise<number> {
    return unwrap(await this.node.request({ op: 'localCount' })).count ?? 0;
  }

  /** A page of the pairs stored on this node (`@`), replicas included. */
  async scanLocal(cursor: string | null | undefined, limit = DEFAULT_PAGE): Promise<Page> {
    const size = Math.max(1, Math.min(MAX_PAGE, Math.floor(limit)));
    const { partition, after } = decodeCursor(cursor, this.node.ring.size);
    const r = unwrap(await this.node.request({ op: 'local', afterPartition: partition, after, limit: size }));
    const local = r.local ?? [];
    const items = local.map((x) => ({ key: x.key, value: x.value }));
    const last = local[local.length - 1];
    const done = r.done ?? local.length < size;
    return { items, cursor: done || last === undefined ? null : encodeCursor(last.partition, last.key) };
  }

  /** Iterates every page of a listing. */
  async *pages(scope: 'all' | 'local', limit = DEFAULT_PAGE): AsyncGenerator<Pair[]> {
    let cursor: string | null = null;
    do {
      const page: Page = scope === 'all' ? await this.scanAll(cursor, limit) : await this.scanLocal(cursor, limit);
      yield page.items;
      cursor = page.cursor;
    } while (cursor !== null);
  }

  /** Deletes every pair in the cluster (`*`): one replicated clear entry per partition. */
  async clearAll(): Promise<void> {
    await this.clearPartitions([...this.node.ring.nodes.keys()]);
  }

  /**
   * Deletes every pair stored on this node (`@`): a replicated clear of each partition this
   * node holds, so the pairs go from all their replicas (deleting one copy only would leave
   * the chains disagreeing).
   */
  async clearLocal(): Promise<void> {
    await this.clearPartitions(this.node.ring.partitionsOf(this.node.name));
  }

  private async clearPartitions(partitions: number[]): Promise<void> {
    const results = await Promise.all(partitions.map((partition) => this.node.request({ op: 'clear', partition })));
    for (const r of results) unwrap(r);
  }

  /**
   * A digest of each partition this node stores: SHA-1 over its live pairs in key order,
   * with the committed seq it reflects. Members of a chain that agree have equal digests
   * at equal seqs (`chainkv verify` compares them).
   */
  async digests(): Promise<PartitionDigest[]> {
    const out: PartitionDigest[] = [];
    for (const p of this.node.ring.partitionsOf(this.node.name)) {
      // The state, the committed seq and the pairs are read from one moment: the pairs from
      // an LMDB read snapshot taken in this same turn, read a chunk per turn so that the node
      // keeps serving (hashing 600,000 keys in one turn took 0.6-1.2 s, and the leader took
      // the node for dead).
      const st = this.node.replica.partitions().find((x) => x.partition === p);
      const committed = this.node.store.committedSeq(p);
      const chunks = this.node.store.snapshotScan(p, DIGEST_CHUNK, PAGE_BYTES);
      const h = createHash('sha1');
      let keys = 0;
      for (let chunk = chunks.next(); !chunk.done; chunk = chunks.next()) {
        for (const kv of chunk.value) {
          const len = Buffer.allocUnsafe(8);
          len.writeUInt32BE(kv.key.length, 0);
          len.writeUInt32BE(kv.value.length, 4);
          h.update(len).update(kv.key).update(kv.value);
          keys++;
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      out.push({ partition: p, node: this.node.name, mode: st?.mode ?? 'out', ready: st?.ready ?? false, committed, pending: st?.pending ?? 0, keys, digest: h.digest('hex') });
    }
    return out;
  }

  /** Ring, chains and node states as this node sees them. */
  cluster(): ClusterInfo {
    const ring = this.node.ring;
    const view = this.node.replica.currentView;
    return {
      self: this.node.name,
      cluster: this.node.config.cluster,
      epoch: view.epoch,
      replication: ring.replication,
      nodes: this.node.config.nodes.map((n) => ({
        name: n.name,
        position: ring.nodes[ring.indexOf(n.name)]!.position,
        state: view.states[n.name] ?? 'down',
        http: `http://${n.host}:${n.httpPort}`,
        resp: `${n.host}:${n.respPort}`,
        peer: `${n.host}:${n.peerPort}`,
      })),
      partitions: ring.nodes.map((owner, p) => ({
        partition: p,
        owner: owner.name,
        share: ring.share(p),
        chain: [...ring.canonicalChain(p)],
        serving: servingChain(ring, view, p),
      })),
      local: this.node.replica.partitions(),
      configuration: this.node.replica.membershipStatus(),
      lease: this.node.replica.hasLease(),
    };
  }
}

export interface PartitionDigest {
  partition: number;
  node: string;
  mode: string;
  ready: boolean;
  committed: number;
  pending: number;
  keys: number;
  digest: string;
}

export interface ClusterInfo {
  self: string;
  cluster: string;
  epoch: number;
  replication: number;
  nodes: { name: string; position: string; state: string; http: string; resp: string; peer: string }[];
  partitions: { partition: number; owner: string; share: number; chain: string[]; serving: string[] }[];
  /** This node's partitions: mode (member, catchup, out), committed seq, pending entries, readiness, live pairs stored here; catchupTarget while catching up. */
  local: { partition: number; mode: string; committed: number; last: number; pending: number; ready: boolean; pairs: number; catchupTarget?: number }[];
  /** This node's view of the configuration group: Raft role, term, leader, commit index; remaining read lease; an unsettled start without state (design.md §4.7). */
  configuration: MembershipStatus;
  /** Whether this node holds a read lease on the current view. */
  lease: boolean;
}
