import { Agent, request } from 'node:http';
import { Ring } from '../core/ring.ts';
import type { ClusterInfo, PartitionDigest } from '../runtime/api.ts';

/**
 * A typed client that knows the ring: it reads the cluster layout from any node once, then
 * sends each write to its chain's head and each read to its chain's tail, in one hop (any
 * node would route the request correctly; going direct saves the internal hop). If the
 * chosen node cannot be reached it falls back to the other nodes, which route for it.
 *
 *   const kv = await ChainKvClient.connect(['http://127.0.0.1:8001']);
 *   await kv.put('a', 'hello');
 *   (await kv.get('a'))?.toString(); // 'hello'
 */
export class ChainKvError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ChainKvError';
  }

  /** True when a failed write may nevertheless have been applied (timeout, shutdown). */
  get outcomeUnknown(): boolean {
    return this.code === 'KV_ERR_TIMEOUT' || this.code === 'KV_ERR_SHUTTING_DOWN' || this.code === 'KV_ERR_CONNECTION';
  }
}

export interface ClientPair {
  key: string;
  value: string;
}

type Bytes = string | Uint8Array;

const toBuf = (b: Bytes): Buffer => (typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/**
 * The HTTP path of a single key: `/kv64/{base64url}`, which carries any bytes exactly (a key
 * in `/kv/{key}` is taken as UTF-8 text, and `.`/`..` path segments would be normalized).
 */
export function keyPath(key: Bytes): string {
  return `/kv64/${toBuf(key).toString('base64url')}`;
}

/** Refuses the one-byte keys `*` and `@`, which name listings, not keys. */
export function checkNotReserved(key: Bytes): void {
  const k = toBuf(key);
  if (k.length === 1 && (k[0] === 0x2a || k[0] === 0x40)) {
    throw new ChainKvError(
      0,
      'KV_ERR_BAD_REQUEST',
      `the keys "*" and "@" are reserved (they mean all pairs and a node's pairs): use all()/deleteAll() or local(node)/deleteLocal(node)`,
    );
  }
}

export class ChainKvClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });
  private ring: Ring;
  private endpoints: Map<string, string>;
  private chains: string[][];

  /** Name of the node that answered `connect` (the seed's own name). */
  readonly seedNode: string;

  private constructor(info: ClusterInfo) {
    this.seedNode = info.self;
    this.ring = new Ring(
      info.nodes.map((n) => n.name),
      info.replication,
    );
    this.endpoints = new Map(info.nodes.map((n) => [n.name, n.http]));
    this.chains = info.partitions.map((p) => p.serving);
  }

  /** Reads the cluster layout from the first seed that answers. */
  static async connect(seeds: string[]): Promise<ChainKvClient> {
    let last: unknown;
    const probe = new Agent({ keepAlive: false });
    for (const seed of seeds) {
      try {
        const r = await call(probe, `${seed.replace(/\/$/, '')}/cluster`, 'GET');
        return new ChainKvClient(JSON.parse(r.body.toString('utf8')) as ClusterInfo);
      } catch (err) {
        last = err;
      }
    }
    throw new ChainKvError(0, 'KV_ERR_CONNECTION', `no seed answered (${seeds.join(', ')}): ${(last as Error | undefined)?.message ?? 'no seeds'}`);
  }

  get nodes(): string[] {
    return [...this.endpoints.keys()];
  }

  /** Head-first chain of the key's partition, as last read from the cluster. */
  chainOf(key: Bytes): string[] {
    return this.chains[this.ring.partitionOf(toBuf(key))] ?? [];
  }

  /** Inserts or overwrites. The reserved keys `*` and `@` are refused (KV_ERR_BAD_REQUEST). */
  async put(key: Bytes, value: Bytes): Promise<void> {
    checkNotReserved(key);
    await this.keyed('PUT', key, this.chainOf(key)[0], toBuf(value));
  }

  /** The value, or null if absent. The reserved keys `*` and `@` are refused: use all()/local(). */
  async get(key: Bytes): Promise<Buffer | null> {
    checkNotReserved(key);
    const chain = this.chainOf(key);
    try {
      return (await this.keyed('GET', key, chain[chain.length - 1])).body;
    } catch (err) {
      if (err instanceof ChainKvError && err.status === 404) return null;
      throw err;
    }
  }

  /** Deletes; resolves with whether the key existed. `*` and `@` are refused: use deleteAll()/deleteLocal(). */
  async del(key: Bytes): Promise<boolean> {
    checkNotReserved(key);
    const r = await this.keyed('DELETE', key, this.chainOf(key)[0]);
    return (JSON.parse(r.body.toString('utf8')) as { deleted: boolean }).deleted;
  }

  /** Every pair in the cluster (`*`), page by page. */
  all(pageSize = 1000): AsyncGenerator<ClientPair> {
    return this.listing('all', undefined, pageSize);
  }

  /** Every pair stored on one node (`@`), replicas included. */
  local(node: string, pageSize = 1000): AsyncGenerator<ClientPair> {
    return this.listing('local', node, pageSize);
  }

  /** Deletes every pair in the cluster (`*`). */
  async deleteAll(): Promise<void> {
    await this.any('DELETE', '/kv?scope=all');
  }

  /** Deletes `@` on node `node` (a name): its partitions, from every replica. */
  async deleteLocal(node: string): Promise<void> {
    await this.at(node, 'DELETE', '/kv?scope=local');
  }

  async cluster(node?: string): Promise<ClusterInfo> {
    const r = node === undefined ? await this.any('GET', '/cluster') : await this.at(node, 'GET', '/cluster');
    return JSON.parse(r.body.toString('utf8')) as ClusterInfo;
  }

  /** Per-partition digests of one node (for `chainkv verify`). */
  async digests(node: string): Promise<{ node: string; epoch: number; partitions: PartitionDigest[] }> {
    const r = await this.at(node, 'GET', '/digest');
    return JSON.parse(r.body.toString('utf8')) as { node: string; epoch: number; partitions: PartitionDigest[] };
  }

  close(): void {
    this.agent.destroy();
  }

  private async *listing(scope: 'all' | 'local', node: string | undefined, pageSize: number): AsyncGenerator<ClientPair> {
    let cursor: string | null = '';
    while (cursor !== null) {
      const path = `/kv?scope=${scope}&limit=${pageSize}&encoding=base64${cursor === '' ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
      const r = node === undefined ? await this.any('GET', path) : await this.at(node, 'GET', path);
      const page = JSON.parse(r.body.toString('utf8')) as { items: ClientPair[]; cursor: string | null };
      for (const it of page.items) {
        yield { key: Buffer.from(it.key, 'base64').toString('utf8'), value: Buffer.from(it.value, 'base64').toString('utf8') };
      }
      cursor = page.cursor;
    }
  }

  private keyed(method: string, key: Bytes, preferred: string | undefined, body?: Buffer): Promise<Reply> {
    return this.any(method, keyPath(key), body, preferred);
  }

  /** Sends to the preferred node, falling back to the others on connection failure. */
  private async any(method: string, path: string, body?: Buffer, preferred?: string): Promise<Reply> {
    const order = [...this.endpoints.keys()];
    if (preferred !== undefined) order.sort((a, b) => (a === preferred ? -1 : b === preferred ? 1 : 0));
    let last: unknown;
    for (const node of order) {
      try {
        return await this.at(node, method, path, body);
      } catch (err) {
        if (err instanceof ChainKvError && err.code !== 'KV_ERR_CONNECTION') throw err;
        last = err;
      }
    }
    throw last instanceof Error ? last : new ChainKvError(0, 'KV_ERR_CONNECTION', 'no node answered');
  }

  private at(node: string, method: string, path: string, body?: Buffer): Promise<Reply> {
    const base = this.endpoints.get(node);
    if (base === undefined) throw new ChainKvError(0, 'KV_ERR_BAD_REQUEST', `unknown node ${node}`);
    return call(this.agent, base + path, method, body);
  }
}

interface Reply {
  status: number;
  body: Buffer;
}

function call(agent: Agent, url: string, method: string, body?: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent, headers: body === undefined ? {} : { 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => reject(new ChainKvError(0, 'KV_ERR_CONNECTION', err.message)));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        const data = Buffer.concat(chunks);
        if (status >= 200 && status < 300) return resolve({ status, body: data });
        let code = 'KV_ERR_HTTP';
        let message = `HTTP ${status}`;
        try {
          const e = (JSON.parse(data.toString('utf8')) as { error: { code: string; message: string } }).error;
          code = e.code;
          message = e.message;
        } catch {
          // not a JSON error body
        }
        reject(new ChainKvError(status, code, message));
      });
    });
    req.on('error', (err) => reject(new ChainKvError(0, 'KV_ERR_CONNECTION', `${url}: ${err.message}`)));
    req.end(body);
  });
}
