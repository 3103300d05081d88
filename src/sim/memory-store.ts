import type { Entry, KeyValue, LocalKeyValue, Store } from '../core/store.ts';

interface Rec {
  entry: Entry;
}

/**
 * In-memory Store with the same semantics as the LMDB adapter, for the simulator and unit
 * tests. `crash()` models a process crash: pending entries are dropped on restart, and with
 * `loseUnsynced` every write after the last `sync()` is forgotten too (power loss).
 */
export class MemoryStore implements Store {
  private kv = new Map<number, Map<string, Rec>>();
  private log = new Map<number, Map<number, Entry>>();
  private pending = new Map<number, Map<number, Entry>>();
  private committed = new Map<number, number>();
  private clearedAt = new Map<number, number>();
  private snapshot: string | null = null;
  writes = 0;

  private part<K, V>(m: Map<number, Map<K, V>>, p: number): Map<K, V> {
    let x = m.get(p);
    if (x === undefined) m.set(p, (x = new Map<K, V>()));
    return x;
  }

  get(p: number, key: Buffer): Buffer | null {
    const r = this.kv.get(p)?.get(key.toString('latin1'));
    if (r === undefined || r.entry.kind !== 'put' || r.entry.seq <= (this.clearedAt.get(p) ?? 0)) return null;
    return r.entry.value;
  }

  scan(p: number, after: Buffer | null, limit: number): KeyValue[] {
    const cleared = this.clearedAt.get(p) ?? 0;
    const rows = [...(this.kv.get(p)?.values() ?? [])]
      .filter((r) => r.entry.kind === 'put' && r.entry.seq > cleared && (after === null || Buffer.compare(r.entry.key, after) > 0))
      .sort((a, b) => Buffer.compare(a.entry.key, b.entry.key));
    return rows.slice(0, limit).map((r) => ({ key: r.entry.key, value: r.entry.value! }));
  }

  scanLocal(afterPartition: number, after: Buffer | null, limit: number): LocalKeyValue[] {
    const out: LocalKeyValue[] = [];
    for (const p of [...this.kv.keys()].sort((a, b) => a - b)) {
      if (p < afterPartition) continue;
      for (const kv of this.scan(p, p === afterPartition ? after : null, limit - out.length)) out.push({ partition: p, ...kv });
      if (out.length >= limit) break;
    }
    return out;
  }

  committedSeq(p: number): number {
    return this.committed.get(p) ?? 0;
  }

  changesAfter(p: number, after: number, limit: number): Entry[] {
    return [...(this.log.get(p)?.values() ?? [])]
      .filter((e) => e.seq > after)
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit);
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
    const log = this.part(this.log, p);
    if (entry.kind === 'clear') {
      this.clearedAt.set(p, entry.seq);
    } else {
      const kv = this.part(this.kv, p);
      const k = entry.key.toString('latin1');
      const old = kv.get(k);
      if (old !== undefined) log.delete(old.entry.seq);
      kv.set(k, { entry });
    }
    log.set(entry.seq, entry);
    this.committed.set(p, entry.seq);
  }

  setCommittedSeq(p: number, seq: number): void {
    this.committed.set(p, seq);
  }

  pendingCount(): number {
    let n = 0;
    for (const m of this.pending.values()) n += m.size;
    return n;
  }

  /** Marks everything written so far as durable. */
  sync(): void {
    this.snapshot = this.serialize();
  }

  /** A restart after a crash: pending entries are dropped; with loseUnsynced, so is every write after the last sync. */
  restart(loseUnsynced: boolean): void {
    if (loseUnsynced) this.restore(this.snapshot);
    this.pending = new Map();
  }

  private serialize(): string {
    const entries = (m: Map<number, Map<unknown, Entry>>) => [...m].map(([p, x]) => [p, [...x.values()].map(enc)]);
    const enc = (e: Entry) => ({ ...e, key: e.key.toString('base64'), value: e.value?.toString('base64') ?? null });
    const kv = [...this.kv].map(([p, x]) => [p, [...x.values()].map((r) => enc(r.entry))]);
    return JSON.stringify({ kv, log: entries(this.log), committed: [...this.committed], clearedAt: [...this.clearedAt] });
  }

  private restore(snap: string | null): void {
    this.kv = new Map();
    this.log = new Map();
    this.committed = new Map();
    this.clearedAt = new Map();
    if (snap === null) return;
    type Enc = Omit<Entry, 'key' | 'value'> & { key: string; value: string | null };
    const dec = (e: Enc): Entry => ({ ...e, key: Buffer.from(e.key, 'base64'), value: e.value === null ? null : Buffer.from(e.value, 'base64') });
    const s = JSON.parse(snap) as { kv: [number, Enc[]][]; log: [number, Enc[]][]; committed: [number, number][]; clearedAt: [number, number][] };
    for (const [p, rows] of s.kv) this.kv.set(p, new Map(rows.map((e) => [Buffer.from(e.key, 'base64').toString('latin1'), { entry: dec(e) }])));
    for (const [p, rows] of s.log) this.log.set(p, new Map(rows.map((e) => [e.seq, dec(e)])));
    this.committed = new Map(s.committed);
    this.clearedAt = new Map(s.clearedAt);
  }
}
