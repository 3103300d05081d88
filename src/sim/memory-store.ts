import type { MembershipState } from '../core/membership.ts';
import { itemBytes, localPage, pageOf } from '../core/store.ts';
import type { Entry, KeyValue, LocalKeyValue, Store } from '../core/store.ts';

/**
 * In-memory Store with the same semantics as the LMDB adapter, for the simulator and unit
 * tests. Durability is modelled with an undo journal: every mutation since the last
 * `sync()` can be rolled back, so `restart(true)` forgets exactly what was never made
 * durable (as a power loss would), and pending entries are always dropped on restart.
 */
export class MemoryStore implements Store {
  private readonly kv = new Map<number, Map<string, Entry>>();
  /** Per partition: seq -> entry (every committed version until pruned). Kept in seq order of insertion. */
  private readonly log = new Map<number, Map<number, Entry>>();
  private pending = new Map<number, Map<number, Entry>>();
  private readonly committed = new Map<number, number>();
  private readonly clearedAt = new Map<number, number>();
  private readonly live = new Map<number, number>();
  private readonly pruned = new Map<number, number>();
  private membership: MembershipState | null = null;
  /** Undo actions for every mutation since the last sync, in order. */
  private journal: (() => void)[] = [];
  writes = 0;

  private part<K, V>(m: Map<number, Map<K, V>>, p: number): Map<K, V> {
    let x = m.get(p);
    if (x === undefined) m.set(p, (x = new Map<K, V>()));
    return x;
  }

  /** Sets m[k] = v, journaling how to undo it. */
  private set<K, V>(m: Map<K, V>, k: K, v: V): void {
    const had = m.has(k);
    const old = m.get(k);
    m.set(k, v);
    this.journal.push(() => (had ? m.set(k, old as V) : m.delete(k)));
  }

  private del<K, V>(m: Map<K, V>, k: K): void {
    if (!m.has(k)) return;
    const old = m.get(k) as V;
    m.delete(k);
    this.journal.push(() => m.set(k, old));
  }

  liveCount(p: number): number {
    return this.live.get(p) ?? 0;
  }

  get(p: number, key: Buffer): Buffer | null {
    const e = this.kv.get(p)?.get(key.toString('latin1'));
    if (e === undefined || e.kind !== 'put' || e.seq <= (this.clearedAt.get(p) ?? 0)) return null;
    return e.value;
  }

  scan(p: number, after: Buffer | null, limit: number, maxBytes = Infinity): KeyValue[] {
    const cleared = this.clearedAt.get(p) ?? 0;
    const rows = [...(this.kv.get(p)?.values() ?? [])]
      .filter((e) => e.kind === 'put' && e.seq > cleared && (after === null || Buffer.compare(e.key, after) > 0))
      .sort((a, b) => Buffer.compare(a.key, b.key));
    return pageOf(rows, limit, maxBytes, (e) => itemBytes(e.key, e.value)).map((e) => ({ key: e.key, value: e.value! }));
  }

  scanLocal(afterPartition: number, after: Buffer | null, limit: number, maxBytes = Infinity): LocalKeyValue[] {
    return localPage(this.kv.keys(), afterPartition, after, limit, maxBytes, (p, a, l, b) => this.scan(p, a, l, b));
  }

  committedSeq(p: number): number {
    return this.committed.get(p) ?? 0;
  }

  private logRows(p: number, after: number): Entry[] {
    return [...(this.log.get(p)?.values() ?? [])].filter((e) => e.seq > after).sort((a, b) => a.seq - b.seq);
  }

  changesAfter(p: number, after: number, limit: number, maxBytes = Infinity): Entry[] {
    const kv = this.kv.get(p);
    const live = this.logRows(p, after).filter((e) => e.kind === 'clear' || kv?.get(e.key.toString('latin1'))?.seq === e.seq);
    return pageOf(live, limit, maxBytes, (e) => itemBytes(e.key, e.value));
  }

  recentRequests(p: number, after: number, upTo = Number.MAX_SAFE_INTEGER): { id: string; seq: number }[] {
    return this.logRows(p, after)
      .filter((e) => e.seq <= upTo)
      .map((e) => ({ id: e.id, seq: e.seq }));
  }

  pruneLog(p: number, below: number, maxRows = Infinity): number {
    if (!(Number.isSafeInteger(below) && below >= 0)) throw new RangeError(`pruneLog below ${below}`);
    const log = this.log.get(p);
    const kv = this.kv.get(p);
    if (log === undefined) return below;
    let rows = 0;
    for (const [seq, e] of [...log].sort((a, b) => a[0] - b[0])) {
      if (seq >= below) break;
      if (rows++ >= maxRows) {
        this.set(this.pruned, p, Math.max(this.prunedBelow(p), seq));
        return seq;
      }
      if (e.kind !== 'clear' && kv?.get(e.key.toString('latin1'))?.seq !== seq) this.del(log, seq);
    }
    this.set(this.pruned, p, Math.max(this.prunedBelow(p), below));
    return below;
  }

  prunedBelow(p: number): number {
    return this.pruned.get(p) ?? 0;
  }

  collectGarbage(p: number, floor: number, maxRows = Infinity): boolean {
    const log = this.log.get(p);
    const kv = this.kv.get(p);
    if (log === undefined) return true;
    let budget = maxRows;
    for (const [seq, e] of [...log].sort((a, b) => a[0] - b[0])) {
      if (seq > floor) break;
      if (e.kind === 'clear') {
        for (const [k, rec] of [...(kv ?? new Map<string, Entry>())]) {
          if (rec.seq >= seq) continue;
          if (budget-- <= 0) return false; // the clear's row stays: the next call goes on
          this.del(kv!, k);
          this.del(log, rec.seq);
        }
        this.del(log, seq);
      } else if (e.kind === 'del') {
        if (budget-- <= 0) return false;
        const k = e.key.toString('latin1');
        if (kv?.get(k)?.seq === seq) this.del(kv, k);
        this.del(log, seq);
      }
    }
    return true;
  }

  /** Number of tombstones stored (for tests). */
  tombstones(): number {
    let n = 0;
    for (const m of this.kv.values()) for (const e of m.values()) if (e.kind !== 'put') n++;
    return n;
  }

  volatile(): boolean {
    return false;
  }

  appendPending(p: number, entry: Entry): void {
    this.writes++;
    this.part(this.pending, p).set(entry.seq, entry);
  }

  commit(p: number, entry: Entry): void {
    this.writes++;
    this.pending.get(p)?.delete(entry.seq);
    if (entry.kind === 'clear') {
      this.set(this.clearedAt, p, entry.seq);
      this.set(this.live, p, 0);
    } else {
      const k = entry.key.toString('latin1');
      const old = this.kv.get(p)?.get(k);
      const wasLive = old !== undefined && old.kind === 'put' && old.seq > (this.clearedAt.get(p) ?? 0);
      const delta = (entry.kind === 'put' ? 1 : 0) - (wasLive ? 1 : 0);
      if (delta !== 0) this.set(this.live, p, this.liveCount(p) + delta);
      this.set(this.part(this.kv, p), k, entry);
    }
    this.set(this.part(this.log, p), entry.seq, entry);
    this.set(this.committed, p, entry.seq);
  }

  setCommittedSeq(p: number, seq: number): void {
    this.set(this.committed, p, seq);
  }

  dropPending(p: number): void {
    this.pending.delete(p);
  }

  loadMembership(): MembershipState | null {
    return this.membership === null ? null : (JSON.parse(JSON.stringify(this.membership)) as MembershipState);
  }

  saveMembership(state: MembershipState): void {
    this.writes++;
    const old = this.membership;
    this.membership = JSON.parse(JSON.stringify(state)) as MembershipState;
    this.journal.push(() => (this.membership = old));
  }

  pendingCount(): number {
    let n = 0;
    for (const m of this.pending.values()) n += m.size;
    return n;
  }

  /** Marks everything written so far as durable. */
  sync(): void {
    this.journal = [];
  }

  /** A restart after a crash: pending entries are dropped; with loseUnsynced, so is every write after the last sync. */
  restart(loseUnsynced: boolean): void {
    if (loseUnsynced) for (let i = this.journal.length - 1; i >= 0; i--) this.journal[i]!();
    this.journal = [];
    this.pending = new Map();
  }
}
