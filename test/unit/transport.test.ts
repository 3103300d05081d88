import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHmac, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import {
  FrameDecoder,
  FrameTooLargeError,
  PeerTransport,
  PROTOCOL_VERSION,
  decodeBody,
  encodeFrame,
} from '../../src/runtime/transport.ts';
import type { PeerAddress, TransportOptions } from '../../src/runtime/transport.ts';

const HOST = '127.0.0.1';
const CLUSTER = 'test-cluster';
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

// ------------------------------------------------------------------ helpers

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A port that was free a moment ago (bind to 0, read it, release it). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return address.port;
}

interface Received { from: string; msg: unknown }

/** A transport plus what it received and the peer states it reported. */
interface Node {
  t: PeerTransport;
  received: Received[];
  states: { peer: string; state: 'up' | 'down' }[];
}

function makeNode(self: string, peers: Record<string, PeerAddress>, extra: Partial<TransportOptions> = {}): Node {
  const t = new PeerTransport({
    self,
    cluster: CLUSTER,
    listen: { host: HOST, port: 0 },
    peers,
    reconnectMinMs: 10,
    reconnectMaxMs: 100,
    ...extra,
  });
  const node: Node = { t, received: [], states: [] };
  t.onMessage = (from, msg) => node.received.push({ from, msg });
  t.onPeerState = (peer, state) => node.states.push({ peer, state });
  return node;
}

/** Start nodes on port 0, then tell each the others' ports and wait until all are connected. */
async function startCluster(names: string[], extra: Partial<TransportOptions> = {}): Promise<Record<string, Node>> {
  const placeholder: Record<string, PeerAddress> = {};
  for (const n of names) placeholder[n] = { host: HOST, port: 0 };
  const nodes: Record<string, Node> = {};
  for (const n of names) nodes[n] = makeNode(n, placeholder, extra);
  await Promise.all(Object.values(nodes).map((node) => node.t.start()));
  for (const a of names) {
    for (const b of names) {
      nodes[a]!.t.setPeerAddress(b, { host: HOST, port: nodes[b]!.t.port });
    }
  }
  await waitFor('cluster connected', () =>
    names.every((a) => names.every((b) => nodes[a]!.t.isConnected(b))));
  return nodes;
}

async function closeAll(nodes: Iterable<Node>): Promise<void> {
  await Promise.all([...nodes].map((n) => n.t.close()));
}

function seqsFrom(node: Node, from: string): number[] {
  return node.received.filter((r) => r.from === from).map((r) => (r.msg as { seq: number }).seq);
}

function assertIncreasing(seqs: number[], label: string): void {
  for (let i = 1; i < seqs.length; i++) {
    assert.ok(seqs[i]! > seqs[i - 1]!, `${label}: seq ${seqs[i]} after ${seqs[i - 1]} at index ${i}`);
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** Open a raw TCP client, let `act` write to it, and wait until the socket is closed (by either side). */
async function rawClient(port: number, act: (s: net.Socket) => void): Promise<void> {
  const socket = net.connect({ host: HOST, port });
  socket.on('error', () => {}); // EPIPE / ECONNRESET when the listener hangs up on us
  socket.on('data', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  act(socket);
  const timer = setTimeout(() => socket.destroy(new Error('listener did not close the connection')), 5_000);
  await closed;
  clearTimeout(timer);
}

function sampleMessages(): unknown[] {
  return [
    { t: 'put', key: 'k', value: Buffer.from('hello') },
    {},
    [],
    null,
    42,
    'a string',
    { nested: { deep: [1, 2, { x: new Uint8Array([9, 8, 7]) }] }, n: -1.5, big: 2 ** 40 },
    { blob: Buffer.alloc(300, 7) },
    { empty: Buffer.alloc(0) },
  ];
}

// ------------------------------------------------------------- frame codec

describe('frame codec', () => {
  test('encodeFrame/decodeBody round-trip, Buffers and Uint8Arrays come back byte-exact', () => {
    for (const msg of sampleMessages()) {
      const frame = encodeFrame(msg);
      assert.equal(frame.readUInt32BE(0), frame.length - 4);
      const back = decodeBody(frame.subarray(4));
      assert.deepEqual(normalize(back), normalize(msg));
    }
    const bytes = randomBytes(1000);
    const back = decodeBody(encodeFrame({ b: bytes, u: new Uint8Array(bytes) }).subarray(4)) as { b: unknown; u: unknown };
    assert.ok(back.b instanceof Uint8Array);
    assert.ok(back.u instanceof Uint8Array);
    assert.ok(Buffer.from(back.b).equals(bytes));
    assert.ok(Buffer.from(back.u).equals(bytes));
  });

  test('decoder: frames split at every byte offset decode identically', () => {
    const msgs = sampleMessages();
    const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
    const expected = msgs.map(normalize);
    for (let cut = 0; cut <= stream.length; cut++) {
      const dec = new FrameDecoder(1024);
      const bodies = [...dec.push(stream.subarray(0, cut)), ...dec.push(stream.subarray(cut))];
      assert.deepEqual(bodies.map((b) => normalize(decodeBody(b))), expected, `cut at ${cut}`);
      assert.equal(dec.midFrame, false);
    }
    // Two cuts (every pair would be slow; every offset with a second cut 7 bytes later).
    for (let cut = 0; cut + 7 <= stream.length; cut++) {
      const dec = new FrameDecoder(1024);
      const bodies = [
        ...dec.push(stream.subarray(0, cut)),
        ...dec.push(stream.subarray(cut, cut + 7)),
        ...dec.push(stream.subarray(cut + 7)),
      ];
      assert.deepEqual(bodies.map((b) => normalize(decodeBody(b))), expected, `cuts at ${cut},${cut + 7}`);
    }
  });

  test('decoder: byte-by-byte, random chunking and many frames per chunk', () => {
    const msgs = Array.from({ length: 500 }, (_, i) => ({ seq: i, pad: 'x'.repeat(i % 37), b: randomBytes(i % 50) }));
    const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
    const expected = msgs.map(normalize);

    const whole = new FrameDecoder(1 << 20).push(stream);
    assert.deepEqual(whole.map((b) => normalize(decodeBody(b))), expected);

    const dec = new FrameDecoder(1 << 20);
    const bytewise: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) bytewise.push(...dec.push(stream.subarray(i, i + 1)));
    assert.deepEqual(bytewise.map((b) => normalize(decodeBody(b))), expected);

    for (let round = 0; round < 20; round++) {
      const d = new FrameDecoder(1 << 20);
      const out: Buffer[] = [];
      let off = 0;
      while (off < stream.length) {
        const n = Math.min(stream.length - off, 1 + Math.floor(Math.random() * 700));
        out.push(...d.push(stream.subarray(off, off + n)));
        off += n;
      }
      assert.deepEqual(out.map((b) => normalize(decodeBody(b))), expected, `round ${round}`);
    }
  });

  test('decoder: a length above the limit throws FrameTooLargeError, even with a split header', () => {
    const atLimit = Buffer.alloc(4 + 100);
    atLimit.writeUInt32BE(100, 0);
    assert.equal(new FrameDecoder(100).push(atLimit).length, 1);

    const over = Buffer.alloc(4);
    over.writeUInt32BE(101, 0);
    assert.throws(() => new FrameDecoder(100).push(over), FrameTooLargeError);

    const dec = new FrameDecoder(64 * 1024 * 1024);
    assert.deepEqual(dec.push(Buffer.from([0xff, 0xff])), []);
    assert.throws(() => dec.push(Buffer.from([0xff, 0xff, 1, 2, 3])), FrameTooLargeError);
    // The stream is unrecoverable: further input keeps failing.
    assert.throws(() => dec.push(Buffer.from([0])), FrameTooLargeError);
  });

  test('decoder: a large frame in many small chunks costs linear time', () => {
    const body = randomBytes(16 * 1024 * 1024);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(body.length, 0);
    const stream = Buffer.concat([header, body]);
    const dec = new FrameDecoder(64 * 1024 * 1024);
    const started = Date.now();
    const out: Buffer[] = [];
    for (let off = 0; off < stream.length; off += 1024) out.push(...dec.push(stream.subarray(off, off + 1024)));
    const elapsed = Date.now() - started;
    assert.equal(out.length, 1);
    assert.ok(out[0]!.equals(body));
    // Re-concatenating per chunk would copy ~128 GiB here; linear work takes milliseconds.
    assert.ok(elapsed < 3_000, `took ${elapsed} ms`);
  });
});

/** Buffers and Uint8Arrays compare as plain byte arrays. */
function normalize(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: [...value] };
  if (Array.isArray(value)) return value.map(normalize);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = normalize(v);
    return out;
  }
  return value;
}

// --------------------------------------------------------------- transport

describe('PeerTransport', () => {
  test('three nodes: 10,000 A->B in order, B->A and C->A concurrently, Buffers byte-exact', { timeout: 60_000 }, async () => {
    const nodes = await startCluster(['A', 'B', 'C']);
    const { A, B, C } = nodes as Record<'A' | 'B' | 'C', Node>;
    try {
      const N = 10_000;
      const sentBytes = new Map<string, Buffer>();
      for (let i = 0; i < N; i++) A.t.send('B', { seq: i, body: `message ${i}` });
      for (let i = 0; i < 3_000; i++) {
        const fromB = randomBytes(i % 200);
        const fromC = randomBytes((i * 7) % 3000);
        sentBytes.set(`B:${i}`, fromB);
        sentBytes.set(`C:${i}`, fromC);
        B.t.send('A', { seq: i, data: fromB });
        C.t.send('A', { seq: i, data: fromC, u8: new Uint8Array(fromC) });
      }
      // One large binary value as well.
      const large = randomBytes(5 * 1024 * 1024);
      C.t.send('B', { seq: 0, data: large });

      await waitFor('A->B complete', () => seqsFrom(B, 'A').length === N, 30_000);
      await waitFor('B->A and C->A complete', () => A.received.length === 6_000, 30_000);
      await waitFor('C->B large message', () => seqsFrom(B, 'C').length === 1, 30_000);

      assert.deepEqual(seqsFrom(B, 'A'), range(0, N));
      assert.deepEqual(seqsFrom(A, 'B'), range(0, 3_000));
      assert.deepEqual(seqsFrom(A, 'C'), range(0, 3_000));
      for (const r of A.received) {
        const m = r.msg as { seq: number; data: unknown; u8?: unknown };
        const expected = sentBytes.get(`${r.from}:${m.seq}`);
        assert.ok(expected !== undefined);
        assert.ok(m.data instanceof Uint8Array, 'binary arrives as Uint8Array/Buffer');
        assert.ok(Buffer.from(m.data).equals(expected), `bytes of ${r.from}:${m.seq}`);
        if (r.from === 'C') {
          assert.ok(m.u8 instanceof Uint8Array);
          assert.ok(Buffer.from(m.u8).equals(expected));
        }
      }
      const big = B.received.find((r) => r.from === 'C')!.msg as { data: Uint8Array };
      assert.ok(Buffer.from(big.data).equals(large));

      assert.equal(A.t.stats().sentFrames, N);
      assert.equal(B.t.stats().recvFrames, N + 1);
      assert.equal(A.t.stats().recvFrames, 6_000);
      for (const n of [A, B, C]) {
        assert.equal(n.t.stats().dropped, 0);
        assert.equal(n.t.stats().badConnections, 0);
        assert.ok(n.states.every((s) => s.state === 'up'), 'no peer went down');
      }
    } finally {
      await closeAll(Object.values(nodes));
    }
  });

  test('small messages sent in one tick are coalesced into one socket write', async () => {
    const nodes = await startCluster(['A', 'B']);
    const { A, B } = nodes as Record<'A' | 'B', Node>;
    const proto = net.Socket.prototype;
    const originalWrite = proto.write;
    let writes = 0;
    try {
      proto.write = function (this: net.Socket, ...args: unknown[]): boolean {
        if (this !== process.stdout && this !== process.stderr) writes += 1;
        return Reflect.apply(originalWrite, this, args) as boolean;
      } as typeof originalWrite;
      for (let i = 0; i < 1_000; i++) A.t.send('B', { seq: i });
      await waitFor('burst delivered', () => B.received.length === 1_000);
      assert.ok(writes <= 2, `1000 messages took ${writes} socket writes`);
      assert.deepEqual(seqsFrom(B, 'A'), range(0, 1_000));
    } finally {
      proto.write = originalWrite;
      await closeAll(Object.values(nodes));
    }
  });

  test('self-sends are delivered asynchronously through onMessage', async () => {
    const A = makeNode('A', { A: { host: HOST, port: 0 } });
    await A.t.start();
    try {
      const msg = { seq: 1 };
      A.t.send('A', msg);
      assert.equal(A.received.length, 0, 'not delivered synchronously');
      await Promise.resolve();
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(A.received, [{ from: 'A', msg }]);
      assert.equal(A.t.isConnected('A'), true);
    } finally {
      await A.t.close();
    }
  });

  test('B started after A has been sending: A queues, then delivers in order', async () => {
    const portB = await freePort();
    const A = makeNode('A', { B: { host: HOST, port: portB } });
    await A.t.start();
    let B: Node | undefined;
    try {
      for (let i = 0; i < 500; i++) A.t.send('B', { seq: i });
      await sleep(150); // several refused dials meanwhile
      for (let i = 500; i < 1_000; i++) A.t.send('B', { seq: i });
      assert.equal(A.t.isConnected('B'), false);
      assert.deepEqual(A.states, [{ peer: 'B', state: 'down' }], 'down reported once despite retries');

      B = makeNode('B', { A: { host: HOST, port: A.t.port } }, { listen: { host: HOST, port: portB } });
      await B.t.start();
      await waitFor('queued messages delivered', () => seqsFrom(B!, 'A').length === 1_000);
      assert.deepEqual(seqsFrom(B, 'A'), range(0, 1_000));
      assert.deepEqual(A.states.map((s) => s.state), ['down', 'up']);
      assert.equal(A.t.stats().dropped, 0);
    } finally {
      await closeAll(B === undefined ? [A] : [A, B]);
    }
  });

  test('a peer that comes back and connects to us is dialed at once, not when the backoff ends', async () => {
    const portB = await freePort();
    // A's backoff grows to 5 s while B is away.
    const A = makeNode('A', { B: { host: HOST, port: portB } }, { reconnectMinMs: 5_000, reconnectMaxMs: 5_000 });
    await A.t.start();
    let B: Node | undefined;
    try {
      A.t.send('B', { seq: 1 });
      await sleep(100); // the first dial was refused; the next one is 5 s away
      assert.equal(A.t.isConnected('B'), false);
      B = makeNode('B', { A: { host: HOST, port: A.t.port } }, { listen: { host: HOST, port: portB } });
      await B.t.start();
      B.t.send('A', { seq: 2 }); // B dials A: A learns that B listens again
      const t0 = Date.now();
      await waitFor('A connected to B', () => A.t.isConnected('B'), 4_000);
      assert.ok(Date.now() - t0 < 2_000, `A dialed B ${Date.now() - t0} ms after B connected`);
      await waitFor('queued message delivered', () => seqsFrom(B!, 'A').length === 1);
    } finally {
      await closeAll(B === undefined ? [A] : [A, B]);
    }
  });

  test('bounded queue drops the oldest messages; dropQueue discards the rest', async () => {
    const portB = await freePort();
    const A = makeNode('A', { B: { host: HOST, port: portB } }, { maxQueueMessages: 100 });
    await A.t.start();
    let B: Node | undefined;
    try {
      for (let i = 0; i < 250; i++) A.t.send('B', { seq: i });
      assert.equal(A.t.stats().dropped, 150);
      assert.equal(A.t.dropQueue('B'), 100);
      assert.equal(A.t.stats().dropped, 250);
      for (let i = 1_000; i < 1_005; i++) A.t.send('B', { seq: i });

      B = makeNode('B', { A: { host: HOST, port: A.t.port } }, { listen: { host: HOST, port: portB } });
      await B.t.start();
      await waitFor('queued messages delivered', () => B!.received.length === 5);
      await sleep(50);
      assert.deepEqual(seqsFrom(B, 'A'), range(1_000, 1_005));
    } finally {
      await closeAll(B === undefined ? [A] : [A, B]);
    }
  });

  test('the byte bound of the queue keeps the newest messages', async () => {
    const portB = await freePort();
    const frameBytes = encodeFrame({ seq: 10, pad: 'p'.repeat(100) }).length;
    const A = makeNode('A', { B: { host: HOST, port: portB } }, { maxQueueBytes: frameBytes * 4 });
    await A.t.start();
    let B: Node | undefined;
    try {
      for (let i = 10; i < 30; i++) A.t.send('B', { seq: i, pad: 'p'.repeat(100) });
      assert.equal(A.t.stats().dropped, 16);
      B = makeNode('B', { A: { host: HOST, port: A.t.port } }, { listen: { host: HOST, port: portB } });
      await B.t.start();
      await waitFor('queued messages delivered', () => B!.received.length === 4);
      assert.deepEqual(seqsFrom(B, 'A'), range(26, 30));
    } finally {
      await closeAll(B === undefined ? [A] : [A, B]);
    }
  });

  test('garbage on the peer port: listener closes it, counts it, and keeps serving', { timeout: 60_000 }, async () => {
    // C is a known peer of B that never runs; its name is used for forged hellos.
    const nodes = await startCluster(['A', 'B'], { helloTimeoutMs: 1_000 });
    const { A, B } = nodes as Record<'A' | 'B', Node>;
    B.t.setPeerAddress('C', { host: HOST, port: 0 });
    const portB = B.t.port;
    const frame = (msg: unknown): Buffer => encodeFrame(msg);
    const rawFrame = (body: Buffer): Buffer => {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(body.length, 0);
      return Buffer.concat([h, body]);
    };
    const hello = (from: string, cluster: string): Buffer => frame({ t: 'hello', from, cluster });

    const cases: { name: string; act: (s: net.Socket) => void }[] = [
      { name: 'raw random bytes', act: (s) => s.write(randomBytes(4096)) },
      { name: 'huge length header', act: (s) => s.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])) },
      { name: 'length just above the limit', act: (s) => {
        const h = Buffer.alloc(4);
        h.writeUInt32BE(64 * 1024 * 1024 + 1, 0);
        s.write(h);
      } },
      { name: 'valid frame that is not a hello', act: (s) => s.write(frame({ t: 'put', key: 'x', value: 1 })) },
      { name: 'undecodable msgpack', act: (s) => s.write(rawFrame(Buffer.from([0x92, 0x01]))) },
      { name: 'empty frame', act: (s) => s.write(rawFrame(Buffer.alloc(0))) },
      { name: 'hello from an unknown node', act: (s) => s.write(hello('Z', CLUSTER)) },
      { name: 'hello claiming to be the listener itself', act: (s) => s.write(hello('B', CLUSTER)) },
      { name: 'hello with the wrong cluster id', act: (s) => s.write(hello('A', 'other-cluster')) },
      { name: 'hello without a cluster id', act: (s) => s.write(frame({ t: 'hello', from: 'A' })) },
      { name: 'valid hello, then an oversize frame', act: (s) => {
        s.write(hello('C', CLUSTER));
        s.write(Buffer.from([0xf0, 0, 0, 0]));
      } },
      { name: 'silence (no hello before the timeout)', act: () => {} },
      { name: 'partial hello, then silence', act: (s) => s.write(hello('C', CLUSTER).subarray(0, 6)) },
      { name: 'disconnect mid-frame', act: (s) => {
        s.write(hello('C', CLUSTER).subarray(0, 9));
        s.end();
      } },
      { name: 'valid hello, then disconnect mid-frame', act: (s) => {
        s.write(Buffer.concat([hello('C', CLUSTER), frame({ seq: 1 }).subarray(0, 3)]));
        s.end();
      } },
    ];

    try {
      let seq = 0;
      for (const c of cases) {
        const before = B.t.stats().badConnections;
        await rawClient(portB, c.act);
        await waitFor(`badConnections after "${c.name}"`, () => B.t.stats().badConnections === before + 1, 5_000);
        // A->B traffic still flows after every case.
        const first = seq;
        for (let i = 0; i < 20; i++) A.t.send('B', { seq: seq++ });
        await waitFor(`traffic after "${c.name}"`, () => seqsFrom(B, 'A').length === seq, 5_000);
        assert.deepEqual(seqsFrom(B, 'A').slice(first), range(first, seq), c.name);
      }
      // Nothing forged got through, and the real connection never dropped.
      assert.deepEqual(B.received.map((r) => r.from).filter((f) => f !== 'A'), []);
      assert.equal(B.t.stats().badConnections, cases.length);
      assert.ok(A.states.every((s) => s.state === 'up'), 'A->B never went down');
      assert.deepEqual(seqsFrom(B, 'A'), range(0, seq));

      // A client that connects and leaves without sending anything is harmless, not "bad".
      await rawClient(portB, (s) => s.end());
      await sleep(50);
      assert.equal(B.t.stats().badConnections, cases.length);
    } finally {
      await closeAll(Object.values(nodes));
    }
  });

  test('with a peer secret, only nodes that know it connect: a wrong or missing secret, a forged, copied or stale hello is refused', { timeout: 60_000 }, async () => {
    const secret = 'correct horse battery staple';
    const names = ['A', 'B', 'C', 'D'];
    const placeholder: Record<string, PeerAddress> = Object.fromEntries(names.map((n) => [n, { host: HOST, port: 0 }]));
    const A = makeNode('A', placeholder, { secret, helloTimeoutMs: 1_000 });
    const B = makeNode('B', placeholder, { secret });
    const C = makeNode('C', placeholder, { secret: 'another secret, long enough' });
    const D = makeNode('D', placeholder); // no secret at all
    const all = [A, B, C, D];
    try {
      await Promise.all(all.map((n) => n.t.start()));
      for (const x of all) for (const [i, y] of all.entries()) x.t.setPeerAddress(names[i]!, { host: HOST, port: y.t.port });
      await waitFor('A and B connected both ways', () => A.t.isConnected('B') && B.t.isConnected('A'));
      A.t.send('B', { seq: 1 });
      B.t.send('A', { seq: 2 });
      C.t.send('A', { seq: 3 });
      D.t.send('A', { seq: 4 });
      await waitFor('A<->B delivered', () => seqsFrom(B, 'A').length === 1 && seqsFrom(A, 'B').length === 1);
      await waitFor('C and D refused by A', () => A.t.stats().badConnections >= 2);
      await sleep(300);
      assert.deepEqual(seqsFrom(A, 'C'), [], 'a node with another secret is not heard');
      assert.deepEqual(seqsFrom(A, 'D'), [], 'a node without a secret is not heard');
      // C and D would keep dialing A, each refusal another bad connection: stop them before
      // counting the forged hellos' refusals.
      await closeAll([C, D]);
      // Forged hellos on A's port: without the HMAC, with one made under another key, with a
      // right one for a copied nonce but changed sender, a right one stamped too long ago, and
      // right ones from another protocol version.
      const mac = (key: string, from: string, ts: number, nonce: string): Buffer =>
        createHmac('sha256', key).update(`chainkv-hello\n${from}\n${CLUSTER}\n${ts}\n${nonce}`).digest();
      const now = Date.now();
      const v = PROTOCOL_VERSION;
      const forged = [
        { t: 'hello', from: 'B', cluster: CLUSTER, v },
        { t: 'hello', from: 'B', cluster: CLUSTER, v, ts: now, nonce: 'n1', mac: mac('guessed secret, long enough', 'B', now, 'n1') },
        { t: 'hello', from: 'C', cluster: CLUSTER, v, ts: now, nonce: 'n2', mac: mac(secret, 'B', now, 'n2') },
        { t: 'hello', from: 'B', cluster: CLUSTER, v, ts: now - 10 * 60_000, nonce: 'n3', mac: mac(secret, 'B', now - 10 * 60_000, 'n3') },
        // Right secret, but another protocol version, or none (a node of an older chainkv).
        { t: 'hello', from: 'B', cluster: CLUSTER, v: v + 1, ts: now, nonce: 'n5', mac: mac(secret, 'B', now, 'n5') },
        { t: 'hello', from: 'B', cluster: CLUSTER, ts: now, nonce: 'n6', mac: mac(secret, 'B', now, 'n6') },
      ];
      const before = A.t.stats().badConnections;
      for (const hello of forged) {
        await rawClient(A.t.port, (sock) => sock.write(Buffer.concat([encodeFrame(hello), encodeFrame({ t: 'write', forged: true })])));
      }
      assert.equal(A.t.stats().badConnections - before, forged.length, 'every forged hello closed its connection');
      assert.ok(!A.received.some((r) => (r.msg as { forged?: boolean }).forged === true), 'nothing after a forged hello was delivered');
      // A hello under the right secret, stamped now, is accepted from a raw client too.
      const ok = { t: 'hello', from: 'B', cluster: CLUSTER, v: PROTOCOL_VERSION, ts: now, nonce: 'n4', mac: mac(secret, 'B', now, 'n4') };
      const sock = net.connect({ host: HOST, port: A.t.port });
      await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
      sock.write(Buffer.concat([encodeFrame(ok), encodeFrame({ seq: 99 })]));
      await waitFor('the authenticated raw hello is accepted', () => seqsFrom(A, 'B').includes(99));
      sock.destroy();
      assert.throws(() => makeNode('E', placeholder, { secret: 'short' }), /at least 16 characters/);
    } finally {
      await closeAll(all);
    }
  });

  test('B killed while A sends, restarted on the same port: A reconnects by itself', { timeout: 60_000 }, async () => {
    const nodes = await startCluster(['A', 'B']);
    const { A } = nodes as Record<'A' | 'B', Node>;
    const B1 = nodes['B']!;
    let B2: Node | undefined;
    let seq = 0;
    const pump = setInterval(() => {
      for (let i = 0; i < 5; i++) A.t.send('B', { seq: seq++ });
    }, 1);
    try {
      await waitFor('B1 receiving', () => B1.received.length >= 200);
      const portB = B1.t.port;
      await B1.t.close();
      await waitFor('A sees B down', () => A.states.some((s) => s.peer === 'B' && s.state === 'down'));
      assert.equal(A.t.isConnected('B'), false);
      await sleep(200); // A keeps sending and retrying meanwhile

      B2 = makeNode('B', { A: { host: HOST, port: A.t.port } }, { listen: { host: HOST, port: portB } });
      await B2.t.start();
      await waitFor('A sees B up again', () => A.states.filter((s) => s.peer === 'B').length >= 3);
      await waitFor('B2 receiving', () => B2!.received.length >= 200);
      clearInterval(pump);
      const last = seq;
      A.t.send('B', { seq: last });
      await waitFor('last message', () => seqsFrom(B2!, 'A').includes(last));

      assert.deepEqual(A.states.filter((s) => s.peer === 'B').map((s) => s.state), ['up', 'down', 'up']);
      const s1 = seqsFrom(B1, 'A');
      const s2 = seqsFrom(B2, 'A');
      assertIncreasing(s1, 'B1');
      assertIncreasing(s2, 'B2');
      assert.ok(s2[0]! > s1[s1.length - 1]!, 'B2 only sees messages sent after B1 got its last');
      // Everything queued while B was down and sent after the restart arrived without gaps.
      assert.deepEqual(s2, range(s2[0]!, last + 1));
      assert.equal(A.t.stats().dropped, 0);
    } finally {
      clearInterval(pump);
      await closeAll(B2 === undefined ? [A, B1] : [A, B1, B2]);
    }
  });

  test('logging: refused dials only at debug level, a bad connection warns with its remote address', async () => {
    const lines: { level: number; msg?: string; remote?: string; reason?: string; code?: string }[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line) as (typeof lines)[number]); } });
    const portB = await freePort();
    const A = makeNode('A', { B: { host: HOST, port: portB } }, { logger, reconnectMinMs: 5, reconnectMaxMs: 10 });
    try {
      await A.t.start();
      await waitFor('several refused dials', () => lines.filter((l) => l.code === 'ECONNREFUSED').length >= 5);
      assert.ok(lines.filter((l) => l.code === 'ECONNREFUSED').every((l) => l.level === 20), 'ECONNREFUSED logged at debug');
      assert.equal(lines.filter((l) => l.level >= 40).length, 0, 'no warnings while a peer is not up yet');
      assert.equal(lines.filter((l) => l.msg === 'peer down').length, 1);

      const client = new Promise<void>((resolve) => {
        const s = net.connect({ host: HOST, port: A.t.port }, () => s.write(Buffer.from([0xff, 0xff, 0xff, 0xff])));
        s.on('error', () => {});
        s.once('close', () => resolve());
      });
      await client;
      const warns = lines.filter((l) => l.level === 40);
      assert.equal(warns.length, 1);
      assert.match(warns[0]!.remote ?? '', /^127\.0\.0\.1:\d+$/);
      assert.match(warns[0]!.reason ?? '', /exceeds/);
    } finally {
      await A.t.close();
    }
  });

  test('after close() nothing reconnects and sends are dropped', async () => {
    const server = net.createServer((s) => {
      connections += 1;
      s.destroy(); // forces A to keep redialing
    });
    let connections = 0;
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
    const address = server.address();
    assert.ok(address !== null && typeof address === 'object');
    const A = makeNode('A', { X: { host: HOST, port: address.port } }, { reconnectMinMs: 5, reconnectMaxMs: 10 });
    try {
      await A.t.start();
      await waitFor('A dialing X', () => connections >= 2);
      await A.t.close();
      await A.t.close(); // idempotent
      const after = connections;
      await sleep(100);
      assert.equal(connections, after);
      const dropped = A.t.stats().dropped;
      A.t.send('X', { late: true });
      assert.equal(A.t.stats().dropped, dropped + 1);
    } finally {
      await A.t.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('close() leaves no open handles: a process using transports exits by itself', { timeout: 30_000 }, async () => {
    // Nodes A and B exchange messages; A also keeps redialing a dead peer D.
    const script = `
      import { PeerTransport } from './src/runtime/transport.ts';
      const host = '127.0.0.1';
      const mk = (self) => new PeerTransport({ self, cluster: 'c', listen: { host, port: 0 },
        peers: { A: { host, port: 0 }, B: { host, port: 0 }, D: { host, port: 1 } },
        reconnectMinMs: 5, reconnectMaxMs: 20 });
      const a = mk('A'), b = mk('B');
      let got = 0;
      b.onMessage = () => { got++; };
      await a.start(); await b.start();
      a.setPeerAddress('B', { host, port: b.port });
      b.setPeerAddress('A', { host, port: a.port });
      for (let i = 0; i < 100; i++) a.send('B', { i });
      while (got < 100) await new Promise((r) => setTimeout(r, 5));
      await Promise.all([a.close(), b.close()]);
      const left = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap' && r !== 'PipeWrap');
      console.log(JSON.stringify({ got, left }));
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    clearTimeout(killer);
    assert.equal(code, 0, `child did not exit cleanly (code ${code}): ${stderr}`);
    const report = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { got: number; left: string[] };
    assert.equal(report.got, 100);
    assert.deepEqual(report.left, []);
  });
});
