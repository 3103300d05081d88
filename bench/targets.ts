import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Ring } from '../src/core/ring.ts';
import { EtcdHttp } from './etcd.ts';
import { RespConnection, RespError } from './resp.ts';
import type { RespValue } from './resp.ts';
import type { ChainkvCluster, EtcdCluster, RedisServer } from './systems.ts';

/**
 * What the load generator drives: set/get of key number i of a keyspace, plus a batched
 * set for untimed loading. One implementation per system and client flavour.
 */
export interface KvTarget {
  readonly label: string;
  set(i: number, value: Buffer): Promise<void>;
  /** The value, or null when the key does not exist. */
  get(i: number): Promise<Buffer | null>;
  /** Untimed bulk load of keys `indexes` (MSET / etcd txn). */
  setMany(indexes: readonly number[], value: (i: number) => Buffer): Promise<void>;
  close(): void;
}

export const KEY_BYTES = 16;
export const VALUE_BYTES = 100;

/** YCSB-like keys: a prefix and a zero-padded number, 16 bytes in all ("key0000000004217"). */
export class Keyspace {
  private readonly keys: (Buffer | undefined)[];

  constructor(readonly count: number, readonly prefix = 'key') {
    this.keys = new Array<Buffer | undefined>(count);
  }

  key(i: number): Buffer {
    let k = this.keys[i];
    if (k === undefined) {
      k = Buffer.from(this.prefix + String(i).padStart(KEY_BYTES - this.prefix.length, '0'), 'latin1');
      this.keys[i] = k;
    }
    return k;
  }
}

/** A pool of random 100-byte values (printable, so any front end takes them as they are). */
export class ValuePool {
  private readonly values: Buffer[];
  private n = 0;

  constructor(size = 4096) {
    const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
    this.values = Array.from({ length: size }, () => {
      const raw = randomBytes(VALUE_BYTES);
      for (let j = 0; j < raw.length; j++) raw[j] = alphabet.charCodeAt(raw[j]! % alphabet.length);
      return raw;
    });
  }

  next(): Buffer {
    this.n = (this.n + 1) % this.values.length;
    return this.values[this.n]!;
  }
}

// ---------------------------------------------------------------- RESP connections

/** The RESP operations a target needs, from either client implementation. */
export interface RespLike {
  set(key: Buffer, value: Buffer): Promise<void>;
  get(key: Buffer): Promise<Buffer | null>;
  mset(pairs: readonly (readonly [Buffer, Buffer])[]): Promise<void>;
  close(): void;
}

export type RespClientKind = 'mini' | 'ioredis';

function expectOk(v: RespValue, what: string): void {
  if (v instanceof RespError) throw v;
  if (v !== 'OK') throw new Error(`${what}: unexpected reply ${JSON.stringify(v)}`);
}

class MiniResp implements RespLike {
  constructor(private readonly c: RespConnection) {}

  async set(key: Buffer, value: Buffer): Promise<void> {
    expectOk(await this.c.send(['SET', key, value]), 'SET');
  }

  async get(key: Buffer): Promise<Buffer | null> {
    const v = await this.c.send(['GET', key]);
    if (v instanceof RespError) throw v;
    if (v === null || Buffer.isBuffer(v)) return v;
    throw new Error(`GET: unexpected reply ${JSON.stringify(v)}`);
  }

  async mset(pairs: readonly (readonly [Buffer, Buffer])[]): Promise<void> {
    expectOk(await this.c.send(['MSET', ...pairs.flat()]), 'MSET');
  }

  close(): void {
    this.c.close();
  }
}

class IoRedisResp implements RespLike {
  constructor(private readonly r: Redis) {}

  async set(key: Buffer, value: Buffer): Promise<void> {
    const v = await this.r.set(key, value);
    if (v !== 'OK') throw new Error(`SET: unexpected reply ${JSON.stringify(v)}`);
  }

  get(key: Buffer): Promise<Buffer | null> {
    return this.r.getBuffer(key);
  }

  async mset(pairs: readonly (readonly [Buffer, Buffer])[]): Promise<void> {
    const v = await this.r.mset(...pairs.flat());
    if (v !== 'OK') throw new Error(`MSET: unexpected reply ${JSON.stringify(v)}`);
  }

  close(): void {
    this.r.disconnect();
  }
}

export async function openResp(kind: RespClientKind, host: string, port: number): Promise<RespLike> {
  if (kind === 'mini') return new MiniResp(await RespConnection.open(host, port));
  const r = new Redis({ host, port, lazyConnect: true, enableAutoPipelining: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  await r.connect();
  return new IoRedisResp(r);
}

/** `n` connections to one server, used round-robin (each one pipelines its commands). */
class ConnPool {
  private next = 0;
  constructor(readonly conns: RespLike[]) {}

  static async open(kind: RespClientKind, host: string, port: number, n: number): Promise<ConnPool> {
    return new ConnPool(await Promise.all(Array.from({ length: n }, () => openResp(kind, host, port))));
  }

  pick(): RespLike {
    this.next = (this.next + 1) % this.conns.length;
    return this.conns[this.next]!;
  }

  close(): void {
    for (const c of this.conns) c.close();
  }
}

function chunks<T>(xs: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

// ---------------------------------------------------------------- chainkv

export type ChainkvRouting = 'smart' | 'plain';

/**
 * chainkv through RESP. 'smart': the client computes each key's chain with the Ring (as the
 * nodes do) and sends writes to the head and reads to a random member of the chain (CRAQ: a
 * clean member answers from its own copy, others pass the read to the tail). 'plain': every
 * request goes to a random node, which routes it in one hop.
 */
export class ChainkvTarget implements KvTarget {
  /** Per key: index in `pools` of the chain members, head first (smart routing). */
  private readonly chains: (Uint8Array | undefined)[];

  private constructor(
    readonly label: string,
    private readonly keys: Keyspace,
    private readonly ring: Ring,
    private readonly names: string[],
    private readonly pools: ConnPool[],
    private readonly routing: ChainkvRouting,
    private readonly readFrom: 'any' | 'tail',
  ) {
    this.chains = new Array<Uint8Array | undefined>(keys.count);
  }

  static async open(
    cluster: ChainkvCluster,
    keys: Keyspace,
    opts: {
      routing: ChainkvRouting;
      client: RespClientKind;
      connsPerNode: number;
      readFrom?: 'any' | 'tail';
      label: string;
      /** Plain routing only: connect to these nodes only (e.g. the survivors of a kill). */
      only?: string[];
    },
  ): Promise<ChainkvTarget> {
    const names = opts.only ?? cluster.names;
    if (opts.only !== undefined && opts.routing === 'smart') throw new Error('smart routing needs a connection to every node');
    const pools = await Promise.all(names.map((n) => ConnPool.open(opts.client, '127.0.0.1', cluster.node(n).respPort, opts.connsPerNode)));
    return new ChainkvTarget(opts.label, keys, cluster.ring, names, pools, opts.routing, opts.readFrom ?? 'any');
  }

  private chain(i: number): Uint8Array {
    let c = this.chains[i];
    if (c === undefined) {
      const names = this.ring.canonicalChain(this.ring.partitionOf(this.keys.key(i)));
      c = Uint8Array.from(names.map((n) => this.names.indexOf(n)));
      this.chains[i] = c;
    }
    return c;
  }

  private randomPool(): ConnPool {
    return this.pools[Math.floor(Math.random() * this.pools.length)]!;
  }

  set(i: number, value: Buffer): Promise<void> {
    const pool = this.routing === 'smart' ? this.pools[this.chain(i)[0]!]! : this.randomPool();
    return pool.pick().set(this.keys.key(i), value);
  }

  get(i: number): Promise<Buffer | null> {
    let pool: ConnPool;
    if (this.routing === 'smart') {
      const c = this.chain(i);
      pool = this.pools[this.readFrom === 'tail' ? c[c.length - 1]! : c[Math.floor(Math.random() * c.length)]!]!;
    } else {
      pool = this.randomPool();
    }
    return pool.pick().get(this.keys.key(i));
  }

  async setMany(indexes: readonly number[], value: (i: number) => Buffer): Promise<void> {
    if (this.routing === 'smart') {
      // One MSET per head node, so every pair goes straight to its head.
      const byHead = new Map<number, number[]>();
      for (const i of indexes) {
        const h = this.chain(i)[0]!;
        const l = byHead.get(h) ?? [];
        l.push(i);
        byHead.set(h, l);
      }
      await Promise.all(
        [...byHead].map(([h, ids]) => this.pools[h]!.pick().mset(ids.map((i) => [this.keys.key(i), value(i)] as const))),
      );
      return;
    }
    await this.randomPool().pick().mset(indexes.map((i) => [this.keys.key(i), value(i)] as const));
  }

  close(): void {
    for (const p of this.pools) p.close();
  }
}

// ---------------------------------------------------------------- Redis

export class RedisTarget implements KvTarget {
  private constructor(
    readonly label: string,
    private readonly keys: Keyspace,
    private readonly pool: ConnPool,
  ) {}

  static async open(server: RedisServer, keys: Keyspace, opts: { client: RespClientKind; conns: number; label: string }): Promise<RedisTarget> {
    return new RedisTarget(opts.label, keys, await ConnPool.open(opts.client, '127.0.0.1', server.port, opts.conns));
  }

  set(i: number, value: Buffer): Promise<void> {
    return this.pool.pick().set(this.keys.key(i), value);
  }

  get(i: number): Promise<Buffer | null> {
    return this.pool.pick().get(this.keys.key(i));
  }

  async setMany(indexes: readonly number[], value: (i: number) => Buffer): Promise<void> {
    await this.pool.pick().mset(indexes.map((i) => [this.keys.key(i), value(i)] as const));
  }

  close(): void {
    this.pool.close();
  }
}

// ---------------------------------------------------------------- etcd

/** etcd through the v3 JSON gateway, each request to a random member (keep-alive HTTP). */
export class EtcdTarget implements KvTarget {
  private readonly clients: EtcdHttp[];

  constructor(
    readonly label: string,
    private readonly keys: Keyspace,
    cluster: EtcdCluster,
    socketsPerMember: number,
  ) {
    this.clients = cluster.members.map((m) => new EtcdHttp('127.0.0.1', m.clientPort, socketsPerMember));
  }

  private client(): EtcdHttp {
    return this.clients[Math.floor(Math.random() * this.clients.length)]!;
  }

  set(i: number, value: Buffer): Promise<void> {
    return this.client().put(this.keys.key(i), value);
  }

  get(i: number): Promise<Buffer | null> {
    return this.client().get(this.keys.key(i));
  }

  async setMany(indexes: readonly number[], value: (i: number) => Buffer): Promise<void> {
    // etcd's default limit is 128 operations per transaction.
    for (const part of chunks(indexes, 128)) await this.client().putMany(part.map((i) => [this.keys.key(i), value(i)] as const));
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}
