import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { ErrorCodes, KvError } from '../core/errors.ts';
import type { ErrorCode } from '../core/errors.ts';
import type { KvApi, Pair } from '../runtime/api.ts';
import { DEFAULT_PAGE } from '../runtime/api.ts';
import { listen } from './listen.ts';

/**
 * HTTP/JSON front end (node:http, keep-alive). A single key is `/kv/{key}` (UTF-8 text) or
 * `/kv64/{base64url}` (any bytes); values are raw bytes in the body, so they are binary-safe
 * (`curl --data-binary`); listings are JSON with values as UTF-8 or base64 (`?encoding=base64`).
 * Errors are JSON `{ "error": { "code", "message" } }` with a status code from one table. See docs/api.md.
 */

/** Error code -> HTTP status, in one table. */
const HTTP_STATUS: Record<ErrorCode, number> = {
  [ErrorCodes.TIMEOUT]: 504,
  [ErrorCodes.UNAVAILABLE]: 503,
  [ErrorCodes.TOO_LARGE]: 413,
  [ErrorCodes.BAD_REQUEST]: 400,
  [ErrorCodes.SHUTTING_DOWN]: 503,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface HttpServerOptions {
  host: string;
  port: number;
  logger: Logger;
  metrics?: Registry;
}

export class HttpServer {
  private readonly server: Server;
  private readonly log: Logger;

  constructor(
    private readonly api: KvApi,
    private readonly opts: HttpServerOptions,
  ) {
    this.log = opts.logger;
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.server.keepAliveTimeout = 60_000;
    this.server.headersTimeout = 30_000;
    this.server.requestTimeout = 60_000;
  }

  listen(): Promise<number> {
    return listen(this.server, this.opts.host, this.opts.port);
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (path.startsWith('/kv64/')) {
      // Binary-safe form: the key is base64url, taken byte for byte (no listing aliases).
      return this.single(req, res, method, this.key64From(path.slice(6)), '/kv64/{base64url}');
    }
    if (path.startsWith('/kv/') && path !== '/kv/') {
      const key = this.keyFrom(path.slice(4));
      if (key.length === 1 && (key[0] === 0x2a || key[0] === 0x40)) {
        // Writing a reserved key is refused as on RESP (400), not as a method of the listing.
        if (method === 'PUT' || method === 'POST') this.api.checkWriteKey(key);
        // /kv/* and /kv/@ are the same as /kv?scope=all|local.
        return this.listing(req, res, url, method, key[0] === 0x2a ? 'all' : 'local');
      }
      return this.single(req, res, method, key, '/kv/{key}');
    }
    if (path === '/kv' || path === '/kv/') {
      const scope = url.searchParams.get('scope') ?? 'all';
      if (scope !== 'all' && scope !== 'local') throw new HttpError(400, ErrorCodes.BAD_REQUEST, `scope must be "all" or "local", got "${scope}"`);
      return this.listing(req, res, url, method, scope);
    }
    if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, 'KV_ERR_METHOD', `method ${method} is not allowed on ${path}`);
    switch (path) {
      case '/health':
        return this.json(res, 200, { ok: true, node: this.api.node.name, epoch: this.api.node.replica.currentView.epoch });
      case '/cluster':
        return this.json(res, 200, this.api.cluster());
      case '/digest':
        return this.json(res, 200, { node: this.api.node.name, epoch: this.api.node.replica.currentView.epoch, partitions: await this.api.digests() });
      case '/metrics': {
        if (this.opts.metrics === undefined) throw new HttpError(404, 'KV_ERR_NOT_FOUND', 'metrics are disabled');
        const text = await this.opts.metrics.metrics();
        res.writeHead(200, { 'content-type': this.opts.metrics.contentType });
        res.end(text);
        return;
      }
      case '/':
        return this.json(res, 200, {
          name: 'chainkv',
          node: this.api.node.name,
          endpoints: ['/kv/{key}', '/kv64/{base64url key}', '/kv?scope=all|local&limit=&cursor=&encoding=utf8|base64', '/kv?scope=all|local&count=1', '/cluster', '/health', '/metrics'],
        });
      default:
        throw new HttpError(404, 'KV_ERR_NOT_FOUND', `no endpoint ${path}`);
    }
  }

  /** GET/HEAD, PUT/POST or DELETE of one key. */
  private async single(req: IncomingMessage, res: ServerResponse, method: string, key: Buffer, shape: string): Promise<void> {
    switch (method) {
      case 'GET':
      case 'HEAD': {
        const value = await this.api.get(key);
        if (value === null) throw new HttpError(404, 'KV_ERR_NOT_FOUND', `key not found`);
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': value.length });
        res.end(method === 'HEAD' ? undefined : value);
        return;
      }
      case 'PUT':
      case 'POST': {
        this.api.checkWriteKey(key);
        const value = await this.body(req, this.api.maxValueBytes);
        await this.api.put(key, value);
        return this.json(res, 200, { ok: true });
      }
      case 'DELETE':
        return this.json(res, 200, { ok: true, deleted: await this.api.del(key) });
      default:
        throw new HttpError(405, 'KV_ERR_METHOD', `method ${method} is not allowed on ${shape} (use GET, PUT or DELETE)`);
    }
  }

  private async listing(_req: IncomingMessage, res: ServerResponse, url: URL, method: string, scope: 'all' | 'local'): Promise<void> {
    if (method === 'DELETE') {
      if (scope === 'all') await this.api.clearAll();
      else await this.api.clearLocal();
      return this.json(res, 200, { ok: true, scope });
    }
    if (method !== 'GET') throw new HttpError(405, 'KV_ERR_METHOD', `method ${method} is not allowed on a listing (use GET or DELETE)`);
    const countParam = url.searchParams.get('count');
    if (countParam !== null) {
      if (countParam !== '1' && countParam !== 'true') throw new HttpError(400, ErrorCodes.BAD_REQUEST, `count must be "1" or "true", got "${countParam}"`);
      // How many pairs, not which: O(partitions), as DBSIZE.
      const count = scope === 'all' ? await this.api.countAll() : await this.api.countLocal();
      return this.json(res, 200, { scope, node: this.api.node.name, count });
    }
    const limitParam = url.searchParams.get('limit');
    const limit = limitParam === null ? DEFAULT_PAGE : Number(limitParam);
    if (!Number.isInteger(limit) || limit < 1) throw new HttpError(400, ErrorCodes.BAD_REQUEST, `limit must be a positive integer, got "${limitParam}"`);
    const encoding = url.searchParams.get('encoding') ?? 'utf8';
    if (encoding !== 'utf8' && encoding !== 'base64') throw new HttpError(400, ErrorCodes.BAD_REQUEST, `encoding must be "utf8" or "base64"`);
    const cursor = url.searchParams.get('cursor');
    const page = scope === 'all' ? await this.api.scanAll(cursor, limit) : await this.api.scanLocal(cursor, limit);
    const enc = (b: Buffer): string => b.toString(encoding);
    this.json(res, 200, {
      scope,
      node: this.api.node.name,
      encoding,
      items: page.items.map((p: Pair) => ({ key: enc(p.key), value: enc(p.value) })),
      cursor: page.cursor,
    });
  }

  private keyFrom(raw: string): Buffer {
    let s: string;
    try {
      s = decodeURIComponent(raw);
    } catch {
      throw new HttpError(400, ErrorCodes.BAD_REQUEST, 'the key in the path is not valid percent-encoding');
    }
    const key = Buffer.from(s, 'utf8');
    this.api.checkKey(key);
    return key;
  }

  /** The key of `/kv64/{base64url}`: unpadded or padded base64url, canonical, any bytes. */
  private key64From(raw: string): Buffer {
    const s = raw.replace(/(?:=|%3D){1,2}$/i, '');
    const key = /^[A-Za-z0-9_-]*$/.test(s) && s.length % 4 !== 1 ? Buffer.from(s, 'base64url') : null;
    if (key === null || key.toString('base64url') !== s) {
      throw new HttpError(400, ErrorCodes.BAD_REQUEST, 'the key in a /kv64/ path must be base64url (RFC 4648 §5: A-Z a-z 0-9 - _, padding optional)');
    }
    this.api.checkKey(key);
    return key;
  }

  private body(req: IncomingMessage, limit: number): Promise<Buffer> {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      return Promise.reject(new KvError(ErrorCodes.TOO_LARGE, `value of ${declared} bytes exceeds the limit of ${limit} bytes (maxValueBytes)`));
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > limit) {
          reject(new KvError(ErrorCodes.TOO_LARGE, `value of more than ${limit} bytes exceeds the limit of ${limit} bytes (maxValueBytes)`));
          req.resume();
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks, size)));
      req.on('error', reject);
    });
  }

  private json(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private fail(res: ServerResponse, err: unknown): void {
    let status = 500;
    let code = 'KV_ERR_INTERNAL';
    let message = 'internal error';
    if (err instanceof HttpError) ({ status, code, message } = err);
    else if (err instanceof KvError) {
      status = HTTP_STATUS[err.code];
      code = err.code;
      message = err.message;
    } else this.log.error({ err }, 'HTTP request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (status === 413) res.setHeader('connection', 'close');
    this.json(res, status, { error: { code, message } });
  }
}
