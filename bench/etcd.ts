import { Agent, request } from 'node:http';

/**
 * etcd v3 through its JSON gateway (grpc-gateway) over keep-alive HTTP/1.1: POST /v3/kv/put,
 * /v3/kv/range and /v3/kv/txn with base64 keys and values. Reads are etcd's default,
 * linearizable (a ReadIndex round through the leader). One keep-alive Agent per member with
 * enough sockets that no request waits for a socket.
 */
export class EtcdHttp {
  private readonly agent: Agent;

  constructor(readonly host: string, readonly port: number, sockets: number) {
    this.agent = new Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets, scheduling: 'fifo' });
  }

  post(path: string, body: unknown, timeoutMs = 30_000): Promise<unknown> {
    const payload = Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.host,
          port: this.port,
          path,
          method: 'POST',
          agent: this.agent,
          headers: { 'content-type': 'application/json', 'content-length': payload.length },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 200) {
              reject(new Error(`etcd ${path}: HTTP ${res.statusCode ?? '?'} ${text.slice(0, 200)}`));
              return;
            }
            try {
              resolve(JSON.parse(text) as unknown);
            } catch {
              reject(new Error(`etcd ${path}: bad JSON ${text.slice(0, 200)}`));
            }
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`etcd ${path}: timeout after ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  async put(key: Buffer, value: Buffer): Promise<void> {
    const r = await this.post('/v3/kv/put', { key: key.toString('base64'), value: value.toString('base64') });
    checkNoError(r, 'put');
  }

  /** The value of a key, or null when it does not exist. */
  async get(key: Buffer): Promise<Buffer | null> {
    const r = await this.post('/v3/kv/range', { key: key.toString('base64') });
    checkNoError(r, 'range');
    const kvs = (r as { kvs?: { value?: string }[] }).kvs;
    if (kvs === undefined || kvs.length === 0) return null;
    return Buffer.from(kvs[0]!.value ?? '', 'base64');
  }

  /** Several puts in one transaction (etcd allows at most 128 operations per txn by default). */
  async putMany(pairs: readonly (readonly [Buffer, Buffer])[]): Promise<void> {
    const r = await this.post('/v3/kv/txn', {
      success: pairs.map(([k, v]) => ({ request_put: { key: k.toString('base64'), value: v.toString('base64') } })),
    });
    checkNoError(r, 'txn');
  }

  async health(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = request({ host: this.host, port: this.port, path: '/health', method: 'GET', timeout: 1000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(res.statusCode === 200 && Buffer.concat(chunks).toString().includes('true')));
        res.on('error', () => resolve(false));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

function checkNoError(r: unknown, what: string): void {
  if (typeof r !== 'object' || r === null) throw new Error(`etcd ${what}: unexpected answer ${JSON.stringify(r)}`);
  const e = r as { error?: unknown; code?: unknown; message?: unknown };
  if (e.error !== undefined || (e.code !== undefined && e.code !== 0)) {
    throw new Error(`etcd ${what}: ${JSON.stringify(e.message ?? e.error)}`);
  }
}
