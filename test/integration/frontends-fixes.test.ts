import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { Ring } from '../../src/core/ring.ts';
import { ChainKvClient, ChainKvError } from '../../src/frontends/client.ts';
import { TestCluster } from '../support/cluster.ts';

/**
 * Front-end fixes against a real five-process cluster: the typed client's binary keys and
 * reserved-key refusals, HTTP writes on the listing aliases, `chainkv del @` and RESP `DEL`
 * with a reserved key among its keys.
 */
const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/chainkv.mjs', import.meta.url));

let cluster: TestCluster;
let ring: Ring;
let kv: ChainKvClient;
const redisClients: Redis[] = [];

function redis(name: string): Redis {
  const c = new Redis({ host: '127.0.0.1', port: cluster.node(name).respPort, maxRetriesPerRequest: 0 });
  redisClients.push(c);
  return c;
}

/** Runs the chainkv CLI; resolves with its exit code and output (never rejects on a non-zero exit). */
async function chainkv(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 15_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Every pair in the cluster, keys as hex. */
async function everything(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const r = await fetch(`${cluster.http(cluster.names[0]!)}/kv?limit=10000&encoding=base64`);
  const page = (await r.json()) as { items: { key: string; value: string }[]; cursor: string | null };
  assert.equal(page.cursor, null);
  for (const it of page.items) out.set(Buffer.from(it.key, 'base64').toString('hex'), Buffer.from(it.value, 'base64').toString('utf8'));
  return out;
}

const reserved = (err: unknown): boolean => err instanceof ChainKvError && err.code === 'KV_ERR_BAD_REQUEST' && /reserved/.test(err.message);

before(async () => {
  cluster = await TestCluster.create();
  await cluster.start();
  ring = new Ring(cluster.names, cluster.config.replication);
  kv = await ChainKvClient.connect([cluster.http(cluster.names[0]!)]);
});

after(async () => {
  kv?.close();
  for (const c of redisClients) c.disconnect();
  await cluster?.destroy();
});

describe('typed client', () => {
  test('binary keys that are not UTF-8 are stored exactly', async () => {
    await kv.put(Uint8Array.of(0xff), 'ff');
    await kv.put(Uint8Array.of(0xfe), 'fe');
    await kv.put(Buffer.from([0x00, 0x80, 0xc3]), 'mixed');
    assert.equal((await kv.get(Uint8Array.of(0xff)))?.toString(), 'ff');
    assert.equal((await kv.get(Uint8Array.of(0xfe)))?.toString(), 'fe');
    assert.equal(await kv.get(Uint8Array.of(0xef, 0xbf, 0xbd)), null, 'nothing under U+FFFD');
    const all = await everything();
    assert.equal(all.get('ff'), 'ff');
    assert.equal(all.get('fe'), 'fe');
    assert.equal(all.get('0080c3'), 'mixed');
    assert.equal(all.has('efbfbd'), false);
    // The same bytes through RESP, from another node.
    const r = redis(cluster.names[3]!);
    assert.equal(await r.get(Buffer.from([0xff])), 'ff');
    assert.equal(await kv.del(Uint8Array.of(0xff)), true);
    assert.equal(await kv.del(Uint8Array.of(0xff)), false);
    assert.equal(await r.get(Buffer.from([0xfe])), 'fe', 'deleting FF left FE alone');
  });

  test('text keys keep working, also ones a URL path would mangle, and /kv/{key} reads them', async () => {
    for (const key of ['user:1', 'a/b', '..', '.', 'a/../b', '100%', 'sp ace?#', 'ünï']) {
      await kv.put(key, `v-${key}`);
      assert.equal((await kv.get(key))?.toString(), `v-${key}`, key);
    }
    const r = await fetch(`${cluster.http(cluster.names[2]!)}/kv/${encodeURIComponent('ünï')}`);
    assert.equal(await r.text(), 'v-ünï');
    assert.equal((await everything()).get(Buffer.from('..').toString('hex')), 'v-..');
  });

  test('put/get/del refuse "*" and "@"; deleteAll/deleteLocal stay available', async () => {
    await kv.put('survivor', 'still here');
    await assert.rejects(kv.put('*', 'x'), reserved);
    await assert.rejects(kv.put(Uint8Array.of(0x40), 'x'), reserved);
    await assert.rejects(kv.get('*'), reserved);
    await assert.rejects(kv.get('@'), reserved);
    await assert.rejects(kv.del('@'), reserved);
    await assert.rejects(kv.del('*'), reserved);
    assert.equal((await kv.get('survivor'))?.toString(), 'still here', 'del("@") cleared nothing');
    assert.equal(typeof kv.deleteAll, 'function');
    assert.equal(typeof kv.deleteLocal, 'function');
    assert.equal(kv.seedNode, cluster.names[0]);
  });
});

describe('HTTP', () => {
  test('PUT/POST on /kv/* and /kv/@: 400 reserved; GET still lists', async () => {
    const base = cluster.http(cluster.names[1]!);
    const before = await everything();
    for (const path of ['/kv/*', '/kv/@']) {
      for (const method of ['PUT', 'POST']) {
        const r = await fetch(base + path, { method, body: 'x' });
        assert.equal(r.status, 400, `${method} ${path}`);
        const e = ((await r.json()) as { error: { code: string; message: string } }).error;
        assert.equal(e.code, 'KV_ERR_BAD_REQUEST');
        assert.match(e.message, /^the keys "\*" and "@" are reserved/);
      }
    }
    const list = await fetch(`${base}/kv/*?limit=10000`);
    assert.equal(list.status, 200);
    assert.equal(((await list.json()) as { scope: string }).scope, 'all');
    assert.deepEqual(await everything(), before, 'nothing written or deleted');
  });
});

describe('RESP', () => {
  test('DEL a * deletes nothing', async () => {
    const r = redis(cluster.names[4]!);
    await r.set('del-a', '1');
    await assert.rejects(r.del('del-a', '*'), /reserved/);
    assert.equal(await r.get('del-a'), '1');
    assert.equal(await r.del('del-a'), 1);
  });

  test('HELLO 2 SETNAME names the connection; CLIENT ID differs per connection', async () => {
    const r1 = redis(cluster.names[0]!);
    const r2 = redis(cluster.names[0]!);
    await r1.call('HELLO', '2', 'SETNAME', 'fixes-1');
    assert.equal(await r1.call('CLIENT', 'GETNAME'), 'fixes-1');
    await assert.rejects(r1.call('HELLO', '2', 'AUTH', 'default', 'pw'), /^ReplyError: ERR AUTH is not supported \(no users are configured\)$/);
    assert.notEqual(await r1.call('CLIENT', 'ID'), await r2.call('CLIENT', 'ID'));
  });
});

describe('CLI', () => {
  test('del @ without --node is refused; get/put of "*" and "@" are refused', async () => {
    const before = await everything();
    const del = await chainkv('del', '@', '--config', cluster.configFile);
    assert.equal(del.code, 2);
    assert.match(del.stderr, /^chainkv: "del @" deletes every pair stored on one node: name the node with --node URL/);
    const get = await chainkv('get', '*', '--config', cluster.configFile);
    assert.equal(get.code, 2);
    assert.match(get.stderr, /chainkv all/);
    assert.deepEqual(await everything(), before, 'nothing deleted');
  });

  test('del @ --node URL deletes the partitions of that node only; del * deletes everything', async () => {
    const name = cluster.names[2]!;
    const mine = new Set(ring.partitionsOf(name));
    assert.ok(mine.size > 0 && mine.size < ring.size);
    const keys = Array.from({ length: 40 }, (_, i) => `cli-${i}`);
    await Promise.all(keys.map((k) => kv.put(k, 'v')));
    const r = await chainkv('del', '@', '--node', cluster.http(name));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `deleted every pair stored on node ${name} (its partitions, on every replica)`);
    const left = await everything();
    let gone = 0;
    for (const k of keys) {
      const inMine = mine.has(ring.partitionOf(Buffer.from(k)));
      assert.equal(left.has(Buffer.from(k).toString('hex')), !inMine, k);
      if (inMine) gone++;
    }
    assert.ok(gone > 0 && gone < keys.length, 'some keys were on that node, some not');
    const all = await chainkv('del', '*', '--node', cluster.http(cluster.names[0]!));
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.stdout.trim(), 'deleted every key');
    assert.equal((await everything()).size, 0);
  });
});
