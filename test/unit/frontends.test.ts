import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { DEFAULT_NODE_V8_FLAGS, nodeV8Flags } from '../../src/frontends/node-flags.ts';
import { ChainKvError, checkNotReserved, keyPath } from '../../src/frontends/client.ts';
import { HttpServer } from '../../src/frontends/http.ts';
import { RespServer } from '../../src/frontends/resp/server.ts';
import { KvApi } from '../../src/runtime/api.ts';
import { ConfigError, defaultConfig, loadConfig } from '../../src/runtime/config.ts';
import type { NodeRuntime } from '../../src/runtime/node.ts';
import { PeerTransport } from '../../src/runtime/transport.ts';

/**
 * Front-end fixes that need no cluster: the client's key encoding and reserved-key check, the
 * HTTP and RESP servers over a fake in-memory node (every request the core would get is
 * recorded), config validation through loadConfig on temp files, and the transport's log
 * fields.
 */

const silent = pino({ level: 'silent' });

// ------------------------------------------------------------------ a fake node

interface FakeRequest {
  op: string;
  key?: Buffer;
  value?: Buffer;
}

/** A KvApi over an in-memory map; `ops` records every request that reached the "core". */
function fakeApi(): { api: KvApi; store: Map<string, Buffer>; ops: FakeRequest[] } {
  const store = new Map<string, Buffer>();
  const ops: FakeRequest[] = [];
  const node = {
    name: 'fake',
    config: { ...defaultConfig(), maxKeyBytes: 64, maxValueBytes: 1024 },
    request: async (req: FakeRequest) => {
      ops.push(req);
      const k = req.key?.toString('hex') ?? '';
      switch (req.op) {
        case 'put':
          store.set(k, req.value!);
          return { ok: true };
        case 'get':
          return { ok: true, value: store.get(k) ?? null };
        case 'del': {
          const existed = store.delete(k);
          return { ok: true, existed };
        }
        default:
          return { ok: true, items: [] };
      }
    },
  };
  return { api: new KvApi(node as unknown as NodeRuntime), store, ops };
}

const hex = (...bytes: number[]): string => Buffer.from(bytes).toString('hex');

// ------------------------------------------------------------------ client helpers

describe('client: keys', () => {
  test('keys go into /kv64/ as base64url, so bytes that are not UTF-8 stay distinct', () => {
    assert.equal(keyPath(Uint8Array.of(0xff)), '/kv64/_w');
    assert.equal(keyPath(Uint8Array.of(0xfe)), '/kv64/_g');
    assert.notEqual(keyPath(Uint8Array.of(0xff)), keyPath(Uint8Array.of(0xef, 0xbf, 0xbd)));
    assert.equal(keyPath('user:1'), `/kv64/${Buffer.from('user:1').toString('base64url')}`);
    assert.equal(keyPath('..'), '/kv64/Li4');
  });

  test('"*" and "@" are refused as keys, as strings or bytes', () => {
    for (const key of ['*', '@', Uint8Array.of(0x2a), Buffer.from('@')]) {
      assert.throws(
        () => checkNotReserved(key),
        (err: unknown) => err instanceof ChainKvError && err.code === 'KV_ERR_BAD_REQUEST' && /reserved/.test(err.message) && /deleteLocal/.test(err.message),
      );
    }
    for (const key of ['**', '@@', 'a', Uint8Array.of(0x2a, 0)]) checkNotReserved(key);
  });
});

// ------------------------------------------------------------------ HTTP

describe('HTTP server (fake node)', () => {
  const fake = fakeApi();
  let server: HttpServer;
  let base: string;

  before(async () => {
    server = new HttpServer(fake.api, { host: '127.0.0.1', port: 0, logger: silent });
    base = `http://127.0.0.1:${await server.listen()}`;
  });
  after(() => server.close());

  const req = (method: string, path: string, body?: string): Promise<Response> => fetch(base + path, { method, body });
  const errorOf = async (r: Response): Promise<{ code: string; message: string }> => ((await r.json()) as { error: { code: string; message: string } }).error;

  test('/kv64/{base64url} writes, reads and deletes binary keys exactly', async () => {
    assert.equal((await req('PUT', '/kv64/_w', 'ff')).status, 200);
    assert.equal((await req('POST', '/kv64/_g==', 'fe')).status, 200);
    assert.equal(fake.store.get(hex(0xff))?.toString(), 'ff');
    assert.equal(fake.store.get(hex(0xfe))?.toString(), 'fe');
    assert.equal(fake.store.has(hex(0xef, 0xbf, 0xbd)), false, 'nothing written under U+FFFD');
    assert.equal(await (await req('GET', '/kv64/_w')).text(), 'ff');
    assert.equal(await (await req('GET', '/kv64/_g%3D%3D')).text(), 'fe', 'percent-encoded padding');
    const head = await req('HEAD', '/kv64/_w');
    assert.equal(head.headers.get('content-length'), '2');
    assert.deepEqual(await (await req('DELETE', '/kv64/_w')).json(), { ok: true, deleted: true });
    assert.deepEqual(await (await req('DELETE', '/kv64/_w')).json(), { ok: true, deleted: false });
    assert.equal((await req('GET', '/kv64/_w')).status, 404);
  });

  test('/kv64/ and /kv/ name the same text keys', async () => {
    await req('PUT', `/kv64/${Buffer.from('user:1').toString('base64url')}`, 'alice');
    assert.equal(await (await req('GET', '/kv/user%3A1')).text(), 'alice');
    await req('PUT', '/kv/a%2Fb', 'slash');
    assert.equal(await (await req('GET', `/kv64/${Buffer.from('a/b').toString('base64url')}`)).text(), 'slash');
    // A key /kv/ cannot name (path normalization) works through /kv64/.
    await req('PUT', '/kv64/Li4', 'dotdot');
    assert.equal(fake.store.get(Buffer.from('..').toString('hex'))?.toString(), 'dotdot');
  });

  test('/kv64/ refuses what is not canonical base64url, and an empty key', async () => {
    const before = fake.ops.length;
    for (const bad of ['a+b', 'a/b', 'abcde', '_x', 'Zm9v!', 'Zg===']) {
      const r = await req('PUT', `/kv64/${bad}`, 'x');
      assert.equal(r.status, 400, bad);
      const e = await errorOf(r);
      assert.equal(e.code, 'KV_ERR_BAD_REQUEST', bad);
      assert.match(e.message, /base64url/, bad);
    }
    const empty = await req('GET', '/kv64/');
    assert.equal(empty.status, 400);
    assert.equal((await errorOf(empty)).message, 'empty key');
    assert.equal(fake.ops.length, before, 'no request reached the core');
    const long = await req('GET', `/kv64/${Buffer.alloc(65, 1).toString('base64url')}`);
    assert.equal(long.status, 413);
  });

  test('/kv64/ has no listing aliases: "*" is a reserved key there', async () => {
    assert.equal((await req('GET', '/kv64/Kg')).status, 404);
    for (const method of ['PUT', 'DELETE']) {
      const r = await req(method, '/kv64/QA', method === 'PUT' ? 'x' : undefined);
      assert.equal(r.status, 400, method);
      assert.match((await errorOf(r)).message, /reserved/);
    }
    assert.equal((await req('PATCH', '/kv64/QQ', 'x')).status, 405);
  });

  test('PUT/POST on /kv/* and /kv/@: 400 reserved, not 405; nothing written', async () => {
    const before = fake.ops.length;
    for (const path of ['/kv/*', '/kv/@', '/kv/%2A', '/kv/%40']) {
      for (const method of ['PUT', 'POST']) {
        const r = await req(method, path, 'x');
        assert.equal(r.status, 400, `${method} ${path}`);
        assert.deepEqual(await errorOf(r), {
          code: 'KV_ERR_BAD_REQUEST',
          message: 'the keys "*" and "@" are reserved (they mean all pairs and this node\'s pairs)',
        });
      }
    }
    assert.equal(fake.ops.length, before);
    // Other methods on the listing aliases stay 405 (GET/DELETE are checked on a real cluster).
    assert.equal((await req('PATCH', '/kv/*', 'x')).status, 405);
    assert.equal((await req('HEAD', '/kv/@')).status, 405);
  });
});

// ------------------------------------------------------------------ RESP

type Reply = string | number | null | Buffer | { error: string } | Reply[];

/** A raw RESP2 connection that reads replies one by one. */
class RespConn {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.waiter?.();
    });
  }

  static async open(port: number): Promise<RespConn> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RespConn(socket);
  }

  async call(...args: string[]): Promise<Reply> {
    const parts = [`*${args.length}\r\n`];
    for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
    this.socket.write(parts.join(''));
    const deadline = Date.now() + 5000;
    while (true) {
      const r = parse(this.buf, 0);
      if (r !== null) {
        this.buf = this.buf.subarray(r.end);
        return r.reply;
      }
      if (Date.now() > deadline) throw new Error('no reply');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

function parse(b: Buffer, pos: number): { reply: Reply; end: number } | null {
  const nl = b.indexOf('\r\n', pos);
  if (nl < 0) return null;
  const line = b.toString('latin1', pos + 1, nl);
  switch (String.fromCharCode(b[pos]!)) {
    case '+':
      return { reply: line, end: nl + 2 };
    case '-':
      return { reply: { error: line }, end: nl + 2 };
    case ':':
      return { reply: Number(line), end: nl + 2 };
    case '$': {
      const n = Number(line);
      if (n < 0) return { reply: null, end: nl + 2 };
      if (b.length < nl + 2 + n + 2) return null;
      return { reply: b.subarray(nl + 2, nl + 2 + n).toString('utf8'), end: nl + 2 + n + 2 };
    }
    case '*': {
      const n = Number(line);
      const items: Reply[] = [];
      let at = nl + 2;
      for (let i = 0; i < n; i++) {
        const r = parse(b, at);
        if (r === null) return null;
        items.push(r.reply);
        at = r.end;
      }
      return { reply: items, end: at };
    }
    default:
      throw new Error(`bad reply byte ${b[pos]}`);
  }
}

describe('RESP server (fake node)', () => {
  const fake = fakeApi();
  let server: RespServer;
  let port: number;

  before(async () => {
    server = new RespServer(fake.api, { host: '127.0.0.1', port: 0, logger: silent, version: '0.0.0-test' });
    port = await server.listen();
  });
  after(() => server.close());

  test('DEL with a reserved key among its keys deletes nothing', async () => {
    const c = await RespConn.open(port);
    try {
      assert.equal(await c.call('MSET', 'a', '1', 'b', '2'), 'OK');
      const before = fake.ops.length;
      for (const args of [['a', '*'], ['*', 'a'], ['a', 'b', '@']]) {
        const r = await c.call('DEL', ...args);
        assert.deepEqual(r, { error: 'ERR the keys "*" and "@" are reserved (they mean all pairs and this node\'s pairs)' }, args.join(' '));
      }
      assert.deepEqual(await c.call('UNLINK', 'b', ''), { error: 'ERR empty key' });
      assert.equal(fake.ops.length, before, 'no delete reached the core');
      assert.deepEqual(await c.call('MGET', 'a', 'b'), ['1', '2']);
      assert.equal(await c.call('DEL', 'a', 'b', 'nope'), 2);
    } finally {
      c.close();
    }
  });

  test('EXISTS and MGET check every key first: a clean error, no lookups', async () => {
    const c = await RespConn.open(port);
    try {
      const before = fake.ops.length;
      assert.deepEqual(await c.call('EXISTS', 'a', ''), { error: 'ERR empty key' });
      assert.deepEqual(await c.call('MGET', '', 'a'), { error: 'ERR empty key' });
      assert.equal(fake.ops.length, before);
      // Reading a reserved key is an ordinary lookup.
      assert.deepEqual(await c.call('MGET', '*', '@'), [null, null]);
      assert.equal(await c.call('EXISTS', '*'), 0);
    } finally {
      c.close();
    }
  });

  test('HELLO 2 SETNAME sets the name; AUTH is refused and then nothing is applied', async () => {
    const c = await RespConn.open(port);
    try {
      assert.equal(await c.call('CLIENT', 'GETNAME'), null);
      const hello = (await c.call('HELLO', '2', 'SETNAME', 'worker-1')) as Reply[];
      assert.equal(hello[1], 'chainkv');
      assert.equal(await c.call('CLIENT', 'GETNAME'), 'worker-1');
      assert.deepEqual(await c.call('HELLO', '2', 'AUTH', 'default', 'secret'), { error: 'ERR AUTH is not supported (no users are configured)' });
      assert.deepEqual(await c.call('HELLO', '2', 'AUTH', 'default', 'secret', 'SETNAME', 'other'), {
        error: 'ERR AUTH is not supported (no users are configured)',
      });
      assert.equal(await c.call('CLIENT', 'GETNAME'), 'worker-1', 'a refused HELLO changes nothing');
      assert.match(((await c.call('HELLO', '2', 'SETNAME')) as { error: string }).error, /^ERR Syntax error in HELLO option 'SETNAME'/);
      assert.match(((await c.call('HELLO', '2', 'AUTH', 'u')) as { error: string }).error, /^ERR Syntax error/);
      assert.match(((await c.call('HELLO', '2', 'SETNAME', 'has space')) as { error: string }).error, /cannot contain spaces/);
      assert.match(((await c.call('HELLO', '3')) as { error: string }).error, /^NOPROTO/);
      assert.ok(Array.isArray(await c.call('HELLO')));
      assert.ok(Array.isArray(await c.call('HELLO', '2')), 'no AUTH: no error');
      assert.equal(await c.call('CLIENT', 'SETNAME', ''), 'OK');
      assert.equal(await c.call('CLIENT', 'GETNAME'), null, 'an empty name clears it');
    } finally {
      c.close();
    }
  });

  test('CLIENT ID and HELLO id: one number per connection', async () => {
    const c1 = await RespConn.open(port);
    const c2 = await RespConn.open(port);
    try {
      const id1 = await c1.call('CLIENT', 'ID');
      const id2 = await c2.call('CLIENT', 'ID');
      assert.equal(typeof id1, 'number');
      assert.notEqual(id1, id2);
      assert.equal(await c1.call('CLIENT', 'ID'), id1, 'stable on a connection');
      const hello = (await c2.call('HELLO', '2')) as Reply[];
      assert.equal(hello[hello.indexOf('id') + 1], id2);
    } finally {
      c1.close();
      c2.close();
    }
  });
});

// ------------------------------------------------------------------ config

describe('config validation (loadConfig)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'chainkv-config-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  let n = 0;
  const file = (content: unknown): string => {
    const f = join(dir, `c${n++}.json`);
    writeFileSync(f, JSON.stringify(content));
    return f;
  };
  const refused = (content: unknown, message: RegExp): void => {
    assert.throws(() => loadConfig(file(content)), (err: unknown) => err instanceof ConfigError && message.test(err.message));
  };
  const nodes = (extra: Record<string, unknown> = {}): unknown[] => [
    { name: 'a', host: '127.0.0.1', httpPort: 8101, respPort: 7101, peerPort: 9101 },
    { name: 'b', host: '127.0.0.1', httpPort: 8102, respPort: 7102, peerPort: 9102, ...extra },
  ];

  test('logLevel must be one of pino\'s levels', () => {
    for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) assert.equal(loadConfig(file({ logLevel: level })).logLevel, level);
    refused({ logLevel: 'loud' }, /^"logLevel" must be one of fatal, error, warn, info, debug, trace, silent, got "loud"$/);
    refused({ logLevel: 'INFO' }, /"logLevel" must be one of/);
    refused({ logLevel: 30 }, /"logLevel" must be one of .*got 30$/);
  });

  test('mapSizeMiB: a positive integer up to 1 TiB, default 1024', () => {
    assert.equal(loadConfig(file({})).mapSizeMiB, 1024);
    assert.equal(loadConfig(file({ mapSizeMiB: 8192 })).mapSizeMiB, 8192);
    refused({ mapSizeMiB: 0 }, /^"mapSizeMiB" must be a positive integer, got 0$/);
    refused({ mapSizeMiB: 1.5 }, /^"mapSizeMiB" must be a positive integer/);
    refused({ mapSizeMiB: 2 * 1024 * 1024 }, /^"mapSizeMiB" can be at most 1048576/);
  });

  test('unknown fields inside nodes[] are refused', () => {
    assert.equal(loadConfig(file({ nodes: nodes(), replication: 2 })).nodes.length, 2);
    refused({ nodes: nodes({ prot: 1 }), replication: 2 }, /^nodes\[1\]: unknown field "prot" \(a node has name, host, httpPort, respPort, peerPort\)$/);
    refused({ nodes: ['a'], replication: 1 }, /^nodes\[0\] must be an object/);
    refused({ nodes: [null], replication: 1 }, /^nodes\[0\] must be an object/);
  });

  test('cluster and dataDir must be non-empty strings', () => {
    refused({ cluster: '' }, /^"cluster" must be a non-empty string, got ""$/);
    refused({ cluster: 5 }, /^"cluster" must be a non-empty string, got 5$/);
    refused({ dataDir: '' }, /^"dataDir" must be a non-empty string/);
    refused({ dataDir: ['x'] }, /^"dataDir" must be a non-empty string, got \["x"\]$/);
    assert.throws(() => loadConfig(undefined, { dataDir: '' }), ConfigError, 'overrides are checked too');
    assert.equal(loadConfig(file({ cluster: 'c1', dataDir: '/tmp/x' })).cluster, 'c1');
  });
});

// ------------------------------------------------------------------ transport log fields

describe('transport log lines', () => {
  /** The JSON lines a transport logs while it starts and closes. */
  async function linesOf(make: (stream: { write(s: string): void }) => Logger | undefined): Promise<string[]> {
    const lines: string[] = [];
    const t = new PeerTransport({
      self: 'n1',
      cluster: 'c',
      listen: { host: '127.0.0.1', port: 0 },
      peers: {},
      logger: make({ write: (s) => lines.push(s) }),
    });
    await t.start();
    await t.close();
    assert.ok(lines.length >= 2, 'listening and closed lines');
    return lines;
  }
  const count = (line: string, key: string): number => line.split(`"${key}":`).length - 1;

  test('a logger that already carries component and node (as node.ts passes it): each field once', async () => {
    const lines = await linesOf((stream) => pino({ level: 'info', base: { node: 'n1' } }, stream).child({ component: 'transport' }));
    for (const line of lines) {
      assert.equal(count(line, 'component'), 1, line);
      assert.equal(count(line, 'node'), 1, line);
    }
  });

  test('a logger without them: the transport adds component and node, once', async () => {
    const lines = await linesOf((stream) => pino({ level: 'info', base: null }, stream));
    for (const line of lines) {
      assert.equal(count(line, 'component'), 1, line);
      assert.equal(count(line, 'node'), 1, line);
      const rec = JSON.parse(line) as { component: string; node: string };
      assert.equal(rec.component, 'transport');
      assert.equal(rec.node, 'n1');
    }
  });
});

describe('node V8 flags', () => {
  test('nodes bound heap growth by default; CHAINKV_V8_FLAGS comes after, so it wins', () => {
    assert.deepEqual(nodeV8Flags({}), [DEFAULT_NODE_V8_FLAGS]);
    assert.deepEqual(nodeV8Flags({ CHAINKV_V8_FLAGS: '  ' }), [DEFAULT_NODE_V8_FLAGS]);
    assert.deepEqual(nodeV8Flags({ CHAINKV_V8_FLAGS: '--heap-growing-percent=20' }), [DEFAULT_NODE_V8_FLAGS, '--heap-growing-percent=20']);
  });

  test('this Node knows the default flag (setFlagsFromString ignores unknown ones silently)', () => {
    const r = spawnSync(process.execPath, ['--v8-options'], { encoding: 'utf8' });
    for (const flag of DEFAULT_NODE_V8_FLAGS.split(/\s+/)) {
      const name = flag.replace(/^--/, '').replace(/=.*$/, '');
      assert.ok(r.stdout.includes(`--${name} `) || r.stdout.includes(`--${name}\n`), `V8 has no --${name}`);
    }
  });
});
