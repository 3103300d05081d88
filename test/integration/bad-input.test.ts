import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { Ring } from '../../src/core/ring.ts';
import { PROTOCOL_VERSION, encodeFrame } from '../../src/runtime/transport.ts';
import { TestCluster } from '../support/cluster.ts';

/**
 * Bad input never kills a node or corrupts data. Malformed, truncated, oversized and
 * abandoned requests on the RESP, HTTP and peer ports of a real five-process cluster; after
 * each case the node must still serve a fresh connection, and a sentinel pair written before
 * the bad input must read back intact from the node and from other nodes.
 */

/** Upper bound of every wait on a raw socket: a broken server fails the test instead of hanging it. */
const WAIT_MS = 5_000;
const EMPTY = Buffer.alloc(0);

let cluster: TestCluster;
let ring: Ring;
const clients = new Map<string, Redis>();

// ------------------------------------------------------------------ helpers

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function redisOptions(name: string): RedisOptions {
  return {
    host: '127.0.0.1',
    port: cluster.node(name).respPort,
    maxRetriesPerRequest: 0,
    connectTimeout: WAIT_MS,
    commandTimeout: WAIT_MS,
    retryStrategy: () => null,
  };
}

/** A long-lived ioredis client per node (opened before the bad input of a case). */
function redis(name: string): Redis {
  let c = clients.get(name);
  if (c === undefined) {
    c = new Redis(redisOptions(name));
    clients.set(name, c);
  }
  return c;
}

/** The node after `name` in the cluster list (another node to read from). */
function other(name: string, step = 1): string {
  const names = cluster.names;
  return names[(names.indexOf(name) + step) % names.length]!;
}

/** A RESP2 multibulk request. */
function cmd(...args: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a;
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

type Reply =
  | { type: 'simple'; text: string }
  | { type: 'error'; text: string }
  | { type: 'int'; value: number }
  | { type: 'bulk'; value: Buffer | null }
  | { type: 'array'; items: Reply[] | null };

/** Parses one RESP2 reply at `pos`; null if it is not complete yet. */
function parseReply(b: Buffer, pos: number): { reply: Reply; end: number } | null {
  if (pos >= b.length) return null;
  const nl = b.indexOf('\r\n', pos);
  if (nl < 0) return null;
  const line = b.toString('utf8', pos + 1, nl);
  const next = nl + 2;
  switch (b[pos]) {
    case 0x2b: // +
      return { reply: { type: 'simple', text: line }, end: next };
    case 0x2d: // -
      return { reply: { type: 'error', text: line }, end: next };
    case 0x3a: // :
      return { reply: { type: 'int', value: Number(line) }, end: next };
    case 0x24: {
      // $
      const n = Number(line);
      if (n < 0) return { reply: { type: 'bulk', value: null }, end: next };
      if (b.length < next + n + 2) return null;
      return { reply: { type: 'bulk', value: Buffer.from(b.subarray(next, next + n)) }, end: next + n + 2 };
    }
    case 0x2a: {
      // *
      const n = Number(line);
      if (n < 0) return { reply: { type: 'array', items: null }, end: next };
      const items: Reply[] = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(b, p);
        if (r === null) return null;
        items.push(r.reply);
        p = r.end;
      }
      return { reply: { type: 'array', items }, end: p };
    }
    default:
      throw new Error(`not a RESP reply: byte 0x${(b[pos] ?? 0).toString(16)} at ${pos} in ${JSON.stringify(b.toString('latin1', 0, 200))}`);
  }
}

function parseReplies(b: Buffer): Reply[] {
  const out: Reply[] = [];
  let pos = 0;
  for (;;) {
    const r = parseReply(b, pos);
    if (r === null) return out;
    out.push(r.reply);
    pos = r.end;
  }
}

function show(r: Reply | undefined): string {
  if (r === undefined) return 'no reply';
  switch (r.type) {
    case 'simple':
      return `+${r.text}`;
    case 'error':
      return `-${r.text}`;
    case 'int':
      return `:${r.value}`;
    case 'bulk':
      return r.value === null ? '(nil)' : JSON.stringify(r.value.toString('latin1').slice(0, 80));
    case 'array':
      return r.items === null ? '(nil array)' : `[${r.items.map(show).join(', ')}]`;
  }
}

function assertSimple(r: Reply | undefined, text: string): void {
  assert.ok(r?.type === 'simple' && r.text === text, `expected +${text}, got ${show(r)}`);
}

function assertError(r: Reply | undefined, re: RegExp): void {
  assert.ok(r?.type === 'error' && re.test(r.text), `expected an error matching ${re}, got ${show(r)}`);
}

function assertBulk(r: Reply | undefined, value: string | Buffer | null): void {
  assert.ok(r?.type === 'bulk', `expected a bulk reply, got ${show(r)}`);
  if (value === null) assert.equal(r.value, null, `expected a null bulk, got ${show(r)}`);
  else assert.ok(r.value !== null && r.value.equals(Buffer.from(value)), `expected bulk ${JSON.stringify(value.toString().slice(0, 80))}, got ${show(r)}`);
}

/** A raw TCP connection that records everything it receives; every wait has a deadline. */
class Raw {
  private chunks: Buffer[] = [];
  closed = false;
  error: Error | null = null;
  private readonly wakers = new Set<() => void>();

  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.wake();
    });
    // Writes racing a server-side close fail with EPIPE/ECONNRESET: recorded, not thrown.
    socket.on('error', (err) => {
      this.error = err;
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static connect(port: number): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`connecting to port ${port} timed out`));
      }, WAIT_MS);
      const onError = (err: Error): void => {
        clearTimeout(timer);
        reject(err);
      };
      s.once('error', onError);
      s.once('connect', () => {
        clearTimeout(timer);
        s.off('error', onError);
        s.setNoDelay(true);
        resolve(new Raw(s));
      });
    });
  }

  get received(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? EMPTY;
  }

  private wake(): void {
    for (const w of [...this.wakers]) w();
  }

  /** Writes and resolves once the bytes are handed to the kernel (or the socket failed). */
  write(data: Buffer | string): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.write(data, () => resolve());
    });
  }

  /** Resolves with check()'s first defined result, re-checked on every event; rejects on close or timeout. */
  until<T>(what: string, check: () => T | undefined, timeoutMs = WAIT_MS): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wakers.delete(poll);
      };
      const poll = (): void => {
        let v: T | undefined;
        try {
          v = check();
        } catch (err) {
          done();
          reject(err as Error);
          return;
        }
        if (v !== undefined) {
          done();
          resolve(v);
        } else if (this.closed) {
          done();
          reject(new Error(`connection closed while waiting for ${what}; received ${JSON.stringify(this.received.toString('latin1', 0, 300))}`));
        }
      };
      const timer = setTimeout(() => {
        this.wakers.delete(poll);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received ${JSON.stringify(this.received.toString('latin1', 0, 300))}`));
      }, timeoutMs);
      this.wakers.add(poll);
      poll();
    });
  }

  /** The first n replies (more may have arrived). */
  replies(n: number, timeoutMs = WAIT_MS): Promise<Reply[]> {
    return this.until(`${n} replies`, () => {
      const r = parseReplies(this.received);
      return r.length >= n ? r : undefined;
    }, timeoutMs);
  }

  waitClose(timeoutMs = WAIT_MS): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) return resolve();
      const timer = setTimeout(() => {
        this.wakers.delete(poll);
        reject(new Error(`the server did not close the connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const poll = (): void => {
        if (!this.closed) return;
        clearTimeout(timer);
        this.wakers.delete(poll);
        resolve();
      };
      this.wakers.add(poll);
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

interface Sentinel {
  key: string;
  value: Buffer;
}

let seq = 0;

/** Writes a fresh sentinel pair through `via` before a case's bad input. */
async function writeSentinel(via: string): Promise<Sentinel> {
  const s = { key: `sentinel-${via}-${seq++}`, value: Buffer.concat([Buffer.from('sentinel\r\n'), randomBytes(200)]) };
  assert.equal(await redis(via).set(s.key, s.value), 'OK');
  sentinels.push(s);
  return s;
}

const sentinels: Sentinel[] = [];

/**
 * The node is alive and serves: its process runs; a fresh ioredis connection and a fresh raw
 * connection both write and read; the sentinel reads back intact from the node and from two
 * other nodes.
 */
async function assertServes(name: string, sentinel: Sentinel): Promise<void> {
  for (const n of cluster.names) assert.ok(cluster.isRunning(n), `node ${n} is still running`);
  const fresh = new Redis(redisOptions(name));
  try {
    const key = `probe-${name}-${seq++}`;
    assert.equal(await fresh.set(key, 'probe value'), 'OK');
    assert.equal(await fresh.get(key), 'probe value');
    assert.equal(await redis(other(name)).get(key), 'probe value');
  } finally {
    fresh.disconnect();
  }
  const raw = await Raw.connect(cluster.node(name).respPort);
  try {
    const key = `raw-probe-${name}-${seq++}`;
    await raw.write(Buffer.concat([cmd('PING'), cmd('SET', key, 'raw value'), cmd('GET', key)]));
    const [pong, ok, got] = await raw.replies(3);
    assertSimple(pong, 'PONG');
    assertSimple(ok, 'OK');
    assertBulk(got, 'raw value');
  } finally {
    raw.destroy();
  }
  for (const reader of [name, other(name, 1), other(name, 3)]) {
    const got = await redis(reader).getBuffer(sentinel.key);
    assert.ok(got !== null && got.equals(sentinel.value), `sentinel ${sentinel.key} intact when read through ${reader}`);
  }
}

/** Polls a key through a node until it has the expected value (or fails after WAIT_MS). */
async function eventually(name: string, keys: string[], values: (string | null)[]): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const got = await redis(name).mget(...keys);
    if (got.every((v, i) => v === values[i])) return;
    if (Date.now() > deadline) {
      const wrong = keys.map((k, i) => [k, got[i], values[i]]).filter(([, g, w]) => g !== w);
      assert.fail(`${wrong.length} keys differ through ${name}, e.g. ${JSON.stringify(wrong.slice(0, 5))}`);
    }
    await sleep(50);
  }
}

// ------------------------------------------------------------------ cluster

before(async () => {
  cluster = await TestCluster.create();
  await cluster.start();
  ring = new Ring(cluster.names, cluster.config.replication);
});

after(async () => {
  for (const c of clients.values()) c.disconnect();
  await cluster?.destroy();
});

// ------------------------------------------------------------------ RESP

describe('RESP', () => {
  test('malformed multibulk: -ERR Protocol error, the connection closes, other connections are unaffected', async () => {
    const name = cluster.names[0]!;
    const port = cluster.node(name).respPort;
    const sentinel = await writeSentinel(name);
    const bystander = redis(name);
    assert.equal(await bystander.ping(), 'PONG');
    const cases: [string, Buffer, RegExp][] = [
      ['non-numeric multibulk count', Buffer.from('*abc\r\n'), /invalid multibulk length/],
      ['negative multibulk count', Buffer.from('*-5\r\n'), /invalid multibulk length/],
      ['non-numeric bulk length', Buffer.from('*2\r\n$x\r\n'), /invalid bulk length/],
      ['bulk length with a + sign', Buffer.from('*1\r\n$+4\r\nPING\r\n'), /invalid bulk length/],
      ['bulk longer than its length, no CRLF where due', Buffer.from('*1\r\n$3\r\nPINGG\r\n'), /expected CRLF/],
      ['second argument longer than its length', Buffer.from('*2\r\n$3\r\nGET\r\n$1\r\nkk\r\n'), /expected CRLF/],
      ['argument that is not a bulk', Buffer.from('*1\r\n:5\r\n'), /expected '\$'/],
      ['multibulk count line of 100 KiB', Buffer.from('*' + '1'.repeat(100 * 1024)), /too big mbulk count string/],
      ['inline line of 100 KiB without newline', Buffer.from('a'.repeat(100 * 1024)), /too big inline request/],
      ['inline command with unbalanced quotes', Buffer.from('SET k "abc\r\n'), /unbalanced quotes/],
    ];
    for (const [what, bytes, why] of cases) {
      const raw = await Raw.connect(port);
      try {
        await raw.write(bytes);
        const [reply] = await raw.replies(1);
        assert.ok(raw.received.toString('latin1').startsWith('-ERR Protocol error'), `${what}: reply starts with -ERR Protocol error, got ${show(reply)}`);
        assertError(reply, why);
        await raw.waitClose();
        assert.equal(parseReplies(raw.received).length, 1, `${what}: nothing after the protocol error`);
      } finally {
        raw.destroy();
      }
      assert.equal(await bystander.ping(), 'PONG', `${what}: another connection still serves`);
    }

    // Requests before the malformed one are answered first, in order, and applied; nothing after it is.
    const raw = await Raw.connect(port);
    try {
      await raw.write(Buffer.concat([cmd('SET', 'before-garbage', 'applied'), cmd('PING'), Buffer.from('*2\r\n$x\r\n'), cmd('SET', 'after-garbage', 'x')]));
      const [ok, pong, err] = await raw.replies(3);
      assertSimple(ok, 'OK');
      assertSimple(pong, 'PONG');
      assertError(err, /^ERR Protocol error/);
      await raw.waitClose();
    } finally {
      raw.destroy();
    }
    assert.equal(await redis(other(name)).get('before-garbage'), 'applied');
    assert.equal(await redis(other(name)).get('after-garbage'), null);
    assert.equal(await bystander.get('before-garbage'), 'applied');
    await assertServes(name, sentinel);
  });

  test('truncated request then disconnect: nothing is written, the node serves', async () => {
    const name = cluster.names[1]!;
    const port = cluster.node(name).respPort;
    const sentinel = await writeSentinel(name);
    // The literal case: SET k <5 bytes> with only 2 of them sent.
    {
      const raw = await Raw.connect(port);
      await raw.write('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nab');
      raw.destroy();
    }
    // Every strict prefix of a SET (multibulk and inline) on its own connection.
    const full = cmd('SET', 'trunc-key', 'trunc-value');
    const inline = Buffer.from('SET trunc-inline "trunc value"\r\n');
    const cuts: Buffer[] = [];
    for (let n = 1; n < full.length; n++) cuts.push(full.subarray(0, n));
    for (let n = 1; n < inline.length - 1; n++) cuts.push(inline.subarray(0, n)); // up to the \r, no \n
    await Promise.all(
      cuts.map(async (prefix) => {
        const raw = await Raw.connect(port);
        await raw.write(prefix);
        raw.destroy();
      }),
    );
    await sleep(300); // give a wrongly executed request time to land
    for (const reader of [other(name), name]) {
      assert.deepEqual(await redis(reader).mget('k', 'trunc-key', 'trunc-inline'), [null, null, null], `nothing written, read through ${reader}`);
    }
    await assertServes(name, sentinel);
  });

  test('oversized value streamed in chunks: error naming the limit, the connection stays usable', async () => {
    const name = cluster.names[2]!;
    const port = cluster.node(name).respPort;
    const sentinel = await writeSentinel(name);
    const max = cluster.config.maxValueBytes;
    // maxValueBytes + 1 (rejected by the value check) and 3 MiB (discarded while it streams in).
    for (const size of [max + 1, 3 * 1024 * 1024]) {
      const key = `oversized-${size}`;
      const raw = await Raw.connect(port);
      try {
        const request = Buffer.concat([cmd('SET', key, Buffer.alloc(size, 0x61)), cmd('PING'), cmd('GET', key)]);
        for (let off = 0; off < request.length; off += 64 * 1024) await raw.write(request.subarray(off, off + 64 * 1024));
        const [err, pong, got] = await raw.replies(3);
        assert.ok(raw.received.toString('latin1').startsWith('-ERR '), `size ${size}: an -ERR reply, got ${show(err)}`);
        assertError(err, new RegExp(`^ERR .*exceeds the limit of ${max} bytes`));
        assertError(err, /maxValueBytes/);
        assertSimple(pong, 'PONG');
        assertBulk(got, null);
        assert.equal(raw.closed, false, 'the connection stays open');
        await raw.write(cmd('SET', key + '-ok', 'small'));
        const all = await raw.replies(4);
        assertSimple(all[3], 'OK');
      } finally {
        raw.destroy();
      }
      assert.equal(await redis(other(name)).get(key), null, `size ${size}: nothing written`);
      assert.equal(await redis(other(name)).get(key + '-ok'), 'small');
    }
    await assertServes(name, sentinel);
  });

  test('oversized key, wrong arity, unknown command, inline commands', async () => {
    const name = cluster.names[3]!;
    const port = cluster.node(name).respPort;
    const sentinel = await writeSentinel(name);
    const maxKey = cluster.config.maxKeyBytes;
    const raw = await Raw.connect(port);
    try {
      const bigKey = 'k'.repeat(maxKey + 1);
      const hugeKey = Buffer.alloc(2 * 1024 * 1024, 0x6b); // above the parser's bulk limit: discarded while streaming
      const requests = [
        cmd('SET', bigKey, 'v'),
        cmd('GET', bigKey),
        cmd('SET', hugeKey, 'v'),
        cmd('GET'),
        cmd('SET', 'a'),
        cmd('GET', 'a', 'b'),
        cmd('NOSUCHCMD', 'x', 'y'),
        cmd(''),
        cmd('PING'),
      ];
      await raw.write(Buffer.concat(requests));
      const r = await raw.replies(requests.length);
      assertError(r[0], new RegExp(`^ERR key of ${maxKey + 1} bytes exceeds the limit of ${maxKey} bytes \\(maxKeyBytes\\)`));
      assertError(r[1], new RegExp(`^ERR key of ${maxKey + 1} bytes exceeds the limit of ${maxKey} bytes \\(maxKeyBytes\\)`));
      assertError(r[2], new RegExp(`^ERR key of ${hugeKey.length} bytes exceeds the limit of ${maxKey} bytes \\(maxKeyBytes\\)`));
      assertError(r[3], /^ERR wrong number of arguments for 'get' command/);
      assertError(r[4], /^ERR wrong number of arguments for 'set' command/);
      assertError(r[5], /^ERR wrong number of arguments for 'get' command/);
      assertError(r[6], /^ERR unknown command 'NOSUCHCMD'/);
      assertError(r[7], /^ERR unknown command/);
      assertSimple(r[8], 'PONG');

      // Inline commands (what a telnet user types), with \r\n or a bare \n, blank lines ignored.
      await raw.write('PING\r\n\r\nSET inl "a b"\r\nGET inl\nGET\r\nECHO \'x y\'\r\n');
      const all = await raw.replies(requests.length + 5);
      const inline = all.slice(requests.length);
      assertSimple(inline[0], 'PONG');
      assertSimple(inline[1], 'OK');
      assertBulk(inline[2], 'a b');
      assertError(inline[3], /^ERR wrong number of arguments for 'get' command/);
      assertBulk(inline[4], 'x y');
      assert.equal(raw.closed, false, 'errors in commands do not close the connection');
    } finally {
      raw.destroy();
    }
    assert.equal(await redis(other(name)).get('inl'), 'a b');
    assert.equal(await redis(other(name)).exists('k'.repeat(maxKey)), 0);
    await assertServes(name, sentinel);
  });

  test('clients that send a SET and disconnect before the reply: the writes complete (200 at once)', async () => {
    const name = cluster.names[4]!;
    const port = cluster.node(name).respPort;
    const sentinel = await writeSentinel(name);
    // One client that half-closes (FIN) right after its request, one that resets.
    {
      const raw = await Raw.connect(port);
      raw.socket.end(cmd('SET', 'gone-fin', 'fin'));
      const raw2 = await Raw.connect(port);
      await raw2.write(cmd('SET', 'gone-rst', 'rst'));
      raw2.socket.resetAndDestroy();
      await eventually(other(name), ['gone-fin', 'gone-rst'], ['fin', 'rst']);
    }
    const n = 200;
    const keys = Array.from({ length: n }, (_, i) => `gone-${i}`);
    const values = keys.map((k) => `${k}-value`);
    await Promise.all(
      keys.map(async (key, i) => {
        const raw = await Raw.connect(port);
        await raw.write(cmd('SET', key, values[i]!));
        raw.destroy();
      }),
    );
    await eventually(other(name), keys, values);
    await eventually(other(name, 2), keys, values);
    await assertServes(name, sentinel);
  });

  test('1,000 pipelined commands in one write: 1,000 replies in order', async () => {
    const name = cluster.names[0]!;
    const sentinel = await writeSentinel(name);
    const raw = await Raw.connect(cluster.node(name).respPort);
    try {
      const requests: Buffer[] = [];
      for (let i = 0; i < 500; i++) requests.push(cmd('SET', `pipe-${i}`, `value-${i}`), cmd('GET', `pipe-${i}`));
      await raw.write(Buffer.concat(requests));
      const replies = await raw.replies(1000);
      assert.equal(replies.length, 1000, 'exactly 1,000 replies');
      for (let i = 0; i < 500; i++) {
        assertSimple(replies[2 * i], 'OK');
        assertBulk(replies[2 * i + 1], `value-${i}`);
      }
      // Every pipelined command sees the effect of the earlier ones on its keys, reads before writes included.
      const order = [
        cmd('GET', 'pipe-0'),
        cmd('SET', 'pipe-0', 'second'),
        cmd('GET', 'pipe-0'),
        cmd('DEL', 'pipe-0', 'pipe-1'),
        cmd('MGET', 'pipe-0', 'pipe-1', 'pipe-2'),
        cmd('MSET', 'pipe-1', 'm1', 'pipe-0', 'm0'),
        cmd('EXISTS', 'pipe-0', 'pipe-1'),
        cmd('GET', 'pipe-1'),
      ];
      await raw.write(Buffer.concat(order));
      const r = (await raw.replies(1000 + order.length)).slice(1000);
      assertBulk(r[0], 'value-0');
      assertSimple(r[1], 'OK');
      assertBulk(r[2], 'second');
      assert.deepEqual(r[3], { type: 'int', value: 2 });
      assert.equal(show(r[4]), '[(nil), (nil), "value-2"]');
      assertSimple(r[5], 'OK');
      assert.deepEqual(r[6], { type: 'int', value: 2 });
      assertBulk(r[7], 'm1');
    } finally {
      raw.destroy();
    }
    const keys = Array.from({ length: 500 }, (_, i) => `pipe-${i}`);
    assert.deepEqual(await redis(other(name)).mget(...keys), keys.map((_, i) => (i === 0 ? 'm0' : i === 1 ? 'm1' : `value-${i}`)));
    await assertServes(name, sentinel);
  });

  test('slow-loris: 200 connections that send nothing (or half a request) do not stop the node serving others', async () => {
    const name = cluster.names[1]!;
    const port = cluster.node(name).respPort;
    const sentinel = await writeSentinel(name);
    const idle: Raw[] = [];
    try {
      for (let i = 0; i < 200; i++) idle.push(await Raw.connect(port));
      // Half of them start a request and stall in the middle of it.
      const half = cmd('SET', 'loris', 'finished');
      await Promise.all(idle.slice(100).map((r) => r.write(half.subarray(0, 20))));
      await assertServes(name, sentinel);
      // The stalled requests can still be completed, and the idle connections still serve.
      const stalled = idle[150]!;
      await stalled.write(half.subarray(20));
      assertSimple((await stalled.replies(1))[0], 'OK');
      await idle[0]!.write(cmd('GET', 'loris'));
      assertBulk((await idle[0]!.replies(1))[0], 'finished');
      for (const r of idle) assert.equal(r.closed, false, 'idle connections are kept');
    } finally {
      for (const r of idle) r.destroy();
    }
    assert.equal(await redis(other(name)).get('loris'), 'finished');
    await assertServes(name, sentinel);
  });
});

// ------------------------------------------------------------------ peer port

describe('peer port', () => {
  /** A key of each partition whose chain has `name` at position 0 (head), 1 and 2 (tail). */
  function keysAround(name: string): string[] {
    const out: string[] = [];
    for (let pos = 0; pos < ring.replication; pos++) {
      for (let i = 0; ; i++) {
        const key = `peer-${name}-${pos}-${i}-${seq}`;
        if (ring.canonicalChain(ring.partitionOf(key))[pos] === name) {
          out.push(key);
          break;
        }
      }
    }
    return out;
  }

  function lengthFrame(body: Buffer): Buffer {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(body.length, 0);
    return Buffer.concat([h, body]);
  }

  /** Each input on its own connection to the peer port: the node must close that socket. */
  async function assertRejected(name: string, cases: [string, Buffer][]): Promise<void> {
    const port = cluster.node(name).peerPort;
    for (const [what, bytes] of cases) {
      const raw = await Raw.connect(port);
      try {
        await raw.write(bytes);
        // The hello timeout is 10 s: a close within WAIT_MS is the rejection of this input.
        await raw.waitClose().catch((err: Error) => assert.fail(`${what}: ${err.message}`));
        assert.equal(raw.received.length, 0, `${what}: the listener never writes`);
      } finally {
        raw.destroy();
      }
    }
  }

  /** Reads and writes, through every node, of keys whose chain has the node as head, middle and tail. */
  async function assertChainsServe(name: string): Promise<void> {
    const keys = keysAround(name);
    for (const [i, key] of keys.entries()) {
      assert.equal(ring.canonicalChain(ring.partitionOf(key)).indexOf(name), i);
      assert.equal(await redis(name).set(key, `v1-${key}`), 'OK');
      for (const reader of cluster.names) assert.equal(await redis(reader).get(key), `v1-${key}`, `${key} read through ${reader}`);
      assert.equal(await redis(other(name, 2)).set(key, `v2-${key}`), 'OK');
      for (const reader of cluster.names) assert.equal(await redis(reader).get(key), `v2-${key}`, `${key} read through ${reader}`);
      assert.equal(await redis(other(name, 4)).del(key), 1);
      assert.equal(await redis(name).get(key), null);
    }
  }

  test('garbage bytes, a 0xFFFFFFFF length, non-msgpack frames: the node closes the socket and keeps serving', async () => {
    const name = cluster.names[2]!;
    const sentinel = await writeSentinel(name);
    const junk = randomBytes(4096);
    junk[0] = junk[0]! | 0x10; // the length it spells is >= 256 MiB, above the 64 MiB frame limit
    const cases: [string, Buffer][] = [
      ['random bytes', junk],
      ['a length header of 0xFFFFFFFF', Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(64)])],
      ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
      ['a RESP request', cmd('PING')],
      ['a valid-length frame of non-msgpack', lengthFrame(Buffer.from('this is not msgpack at all'))],
      ['a valid-length frame of msgpack with a truncated array', lengthFrame(Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]))],
      ['an empty frame', lengthFrame(EMPTY)],
    ];
    for (let i = 0; i < 10; i++) {
      const body = randomBytes(1 + Math.floor(Math.random() * 2048));
      cases.push([`a valid-length frame of random bytes #${i} (${body.subarray(0, 8).toString('hex')}...)`, lengthFrame(body)]);
    }
    await assertRejected(name, cases);
    // Half a header, then gone.
    const half = await Raw.connect(cluster.node(name).peerPort);
    await half.write(Buffer.from([0x00, 0x00]));
    half.destroy();
    await assertChainsServe(name);
    await assertServes(name, sentinel);
  });

  test('a non-hello first frame, hellos from unknown nodes, for another cluster or of another protocol version: socket closed, nothing applied', async () => {
    const name = cluster.names[3]!;
    const sentinel = await writeSentinel(name);
    const clusterId = cluster.config.cluster;
    const known = other(name);
    const forged = { t: 'write', e: 1, id: 'x', p: 0, kind: 'put', key: Buffer.from('forged'), value: Buffer.from('forged'), origin: known };
    await assertRejected(name, [
      ['a first frame that is a data message, not a hello', encodeFrame(forged)],
      ['a msgpack number as first frame', encodeFrame(42)],
      ['a hello from an unknown node', encodeFrame({ t: 'hello', from: 'intruder', cluster: clusterId })],
      ['a hello with a wrong cluster id', encodeFrame({ t: 'hello', from: known, cluster: 'another-cluster' })],
      ['a hello claiming to be the node itself', encodeFrame({ t: 'hello', from: name, cluster: clusterId })],
      ['a hello with fields of the wrong types', encodeFrame({ t: 'hello', from: Number(known), cluster: [clusterId] })],
      ['a hello without a cluster', encodeFrame({ t: 'hello', from: known })],
      ['an unknown hello followed by a message in the same write', Buffer.concat([encodeFrame({ t: 'hello', from: 'intruder', cluster: clusterId }), encodeFrame(forged)])],
      ['a wrong-cluster hello followed by a message in the same write', Buffer.concat([encodeFrame({ t: 'hello', from: known, cluster: 'x' }), encodeFrame(forged)])],
      ['a hello of an older chainkv (no protocol version) followed by a message', Buffer.concat([encodeFrame({ t: 'hello', from: known, cluster: clusterId }), encodeFrame(forged)])],
      ['a hello of another protocol version followed by a message', Buffer.concat([encodeFrame({ t: 'hello', from: known, cluster: clusterId, v: PROTOCOL_VERSION + 1 }), encodeFrame(forged)])],
    ]);
    await assertChainsServe(name);
    for (const reader of cluster.names) assert.equal(await redis(reader).get('forged'), null, `the forged write was not applied (via ${reader})`);
    await assertServes(name, sentinel);
  });
});

// ------------------------------------------------------------------ HTTP

describe('HTTP', () => {
  const signal = (): AbortSignal => AbortSignal.timeout(WAIT_MS);

  /** Sends raw bytes to the node's HTTP port; resolves with the response once the server closes. */
  async function rawHttp(name: string, request: string | Buffer): Promise<{ status: number; body: string }> {
    const raw = await Raw.connect(cluster.node(name).httpPort);
    try {
      await raw.write(request);
      await raw.waitClose();
      return parseHttp(raw.received);
    } finally {
      raw.destroy();
    }
  }

  function parseHttp(b: Buffer): { status: number; body: string } {
    const text = b.toString('latin1');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(text);
    assert.ok(m !== null, `an HTTP response, got ${JSON.stringify(text.slice(0, 200))}`);
    const sep = text.indexOf('\r\n\r\n');
    return { status: Number(m[1]), body: sep < 0 ? '' : text.slice(sep + 4) };
  }

  async function errorOf(r: Response): Promise<{ code: string; message: string }> {
    assert.match(r.headers.get('content-type') ?? '', /application\/json/);
    return ((await r.json()) as { error: { code: string; message: string } }).error;
  }

  /** Through `name` and another node, over HTTP: the key does not exist. */
  async function assertAbsent(name: string, key: string): Promise<void> {
    for (const reader of [name, other(name)]) {
      const r = await fetch(`${cluster.http(reader)}/kv/${encodeURIComponent(key)}`, { signal: signal() });
      assert.equal(r.status, 404, `${key} not written (read through ${reader})`);
      await r.body?.cancel();
    }
  }

  test('malformed percent-encoding in the key path: 400 with a JSON error', async () => {
    const name = cluster.names[4]!;
    const sentinel = await writeSentinel(name);
    for (const path of ['/kv/%ZZ', '/kv/%', '/kv/abc%E0%A4%A', '/kv/%FF']) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const r = await fetch(cluster.http(name) + path, { method, body: method === 'PUT' ? 'x' : undefined, signal: signal() });
        assert.equal(r.status, 400, `${method} ${path}`);
        const e = await errorOf(r);
        assert.equal(e.code, 'KV_ERR_BAD_REQUEST');
        assert.match(e.message, /percent-encoding/);
      }
    }
    await assertServes(name, sentinel);
  });

  test('a chunked PUT body (no content-length) over the limit: 413, nothing written', async () => {
    const name = cluster.names[0]!;
    const sentinel = await writeSentinel(name);
    const limit = cluster.config.maxValueBytes;
    const raw = await Raw.connect(cluster.node(name).httpPort);
    try {
      await raw.write('PUT /kv/chunked-big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
      const size = 64 * 1024;
      const chunk = Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), Buffer.alloc(size, 0x62), Buffer.from('\r\n')]);
      // Stream until the server answers (it may answer, and close, before the body ends).
      for (let sent = 0; sent <= limit + 2 * size && raw.received.length === 0 && !raw.closed; sent += size) await raw.write(chunk);
      if (raw.received.length === 0 && !raw.closed) await raw.write('0\r\n\r\n');
      await raw.until('an HTTP response', () => (raw.received.includes('}}') ? true : undefined));
      const { status, body } = parseHttp(raw.received);
      assert.equal(status, 413);
      const e = (JSON.parse(body.slice(0, body.indexOf('}}') + 2)) as { error: { code: string; message: string } }).error;
      assert.equal(e.code, 'KV_ERR_TOO_LARGE');
      assert.match(e.message, new RegExp(`limit of ${limit} bytes`));
    } finally {
      raw.destroy();
    }
    await assertAbsent(name, 'chunked-big');
    await assertServes(name, sentinel);
  });

  test('a method not allowed on /kv/{key}: 405', async () => {
    const name = cluster.names[1]!;
    const sentinel = await writeSentinel(name);
    for (const method of ['PATCH', 'OPTIONS']) {
      const r = await fetch(`${cluster.http(name)}/kv/some-key`, { method, body: method === 'PATCH' ? 'x' : undefined, signal: signal() });
      assert.equal(r.status, 405, `${method} /kv/some-key`);
      assert.equal((await errorOf(r)).code, 'KV_ERR_METHOD');
    }
    const r = await fetch(`${cluster.http(name)}/health`, { method: 'PUT', body: 'x', signal: signal() });
    assert.equal(r.status, 405);
    await r.body?.cancel();
    // A method the HTTP parser does not know is refused by node:http itself.
    assert.equal((await rawHttp(name, 'FROB /kv/some-key HTTP/1.1\r\nHost: x\r\n\r\n')).status, 400);
    await assertAbsent(name, 'some-key');
    await assertServes(name, sentinel);
  });

  test('a client that aborts mid-body: nothing written, the node serves', async () => {
    const name = cluster.names[2]!;
    const sentinel = await writeSentinel(name);
    const port = cluster.node(name).httpPort;
    // Content-length 100, 10 bytes sent, then the socket is destroyed.
    {
      const raw = await Raw.connect(port);
      await raw.write('PUT /kv/aborted-key HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789');
      await sleep(50);
      raw.destroy();
    }
    // The same, but the client half-closes and waits: the server gives up on the request.
    {
      const raw = await Raw.connect(port);
      raw.socket.end('PUT /kv/aborted-key-2 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789');
      await raw.waitClose();
      raw.destroy();
    }
    // A chunked body cut off in the middle of a chunk.
    {
      const raw = await Raw.connect(port);
      await raw.write('PUT /kv/aborted-key-3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n01234');
      raw.destroy();
    }
    await sleep(300); // give a wrongly applied write time to land
    for (const key of ['aborted-key', 'aborted-key-2', 'aborted-key-3']) await assertAbsent(name, key);
    const put = await fetch(`${cluster.http(name)}/kv/after-abort`, { method: 'PUT', body: 'fine', signal: signal() });
    assert.equal(put.status, 200);
    await put.body?.cancel();
    const got = await fetch(`${cluster.http(other(name))}/kv/after-abort`, { signal: signal() });
    assert.equal(await got.text(), 'fine');
    await assertServes(name, sentinel);
  });

  test('an empty key: /kv/ is the listing, like /kv', async () => {
    const name = cluster.names[3]!;
    const sentinel = await writeSentinel(name);
    await redis(name).set('listed-key', 'listed');
    const r = await fetch(`${cluster.http(name)}/kv/?limit=10000`, { signal: signal() });
    assert.equal(r.status, 200);
    const page = (await r.json()) as { scope: string; items: { key: string; value: string }[] };
    assert.equal(page.scope, 'all');
    assert.ok(page.items.some((it) => it.key === 'listed-key' && it.value === 'listed'), '/kv/ lists the pairs');
    const local = (await (await fetch(`${cluster.http(name)}/kv/?scope=local&limit=10000`, { signal: signal() })).json()) as { scope: string };
    assert.equal(local.scope, 'local');
    const put = await fetch(`${cluster.http(name)}/kv/`, { method: 'PUT', body: 'x', signal: signal() });
    assert.equal(put.status, 405, 'PUT on the listing is refused, not taken as a write to an empty key');
    assert.equal((await errorOf(put)).code, 'KV_ERR_METHOD');
    await assertServes(name, sentinel);
  });
});

// ------------------------------------------------------------------ at the end

test('every sentinel written during the run reads back intact through every node', async () => {
  assert.ok(sentinels.length >= 8);
  for (const name of cluster.names) {
    assert.ok(cluster.isRunning(name), `node ${name} is still running`);
    const got = await redis(name).mgetBuffer(...sentinels.map((s) => s.key));
    for (const [i, s] of sentinels.entries()) assert.ok(got[i]?.equals(s.value), `${s.key} through ${name}`);
  }
});
