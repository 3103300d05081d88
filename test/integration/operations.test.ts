import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { Ring } from '../../src/core/ring.ts';
import { ChainKvClient } from '../../src/frontends/client.ts';
import { TestCluster } from '../support/cluster.ts';

/**
 * Every operation through every interface, against a real five-process cluster: ioredis,
 * redis-cli (Debian's redis-tools), HTTP (fetch) and the typed client. `*` and `@` results
 * are checked against what was written, and each key is checked to live on exactly the
 * three nodes of its chain.
 */
const run = promisify(execFile);

let cluster: TestCluster;
let ring: Ring;
const clients = new Map<string, Redis>();

function redis(name: string): Redis {
  let c = clients.get(name);
  if (c === undefined) {
    c = new Redis({ host: '127.0.0.1', port: cluster.node(name).respPort, lazyConnect: false, maxRetriesPerRequest: 0 });
    clients.set(name, c);
  }
  return c;
}

async function cli(name: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(cluster.node(name).respPort), ...args]);
  return stdout.replace(/\n$/, '');
}

async function localPairs(name: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, flat] = (await redis(name).call('LOCALSCAN', cursor, 'COUNT', '100')) as [string, string[]];
    for (let i = 0; i < flat.length; i += 2) out.set(flat[i]!, flat[i + 1]!);
    cursor = next;
  } while (cursor !== '0');
  return out;
}

async function allPairs(name: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, flat] = (await redis(name).call('SCANALL', cursor, 'COUNT', '37')) as [string, string[]];
    for (let i = 0; i < flat.length; i += 2) {
      assert.ok(!out.has(flat[i]!), `key ${flat[i]} listed twice by *`);
      out.set(flat[i]!, flat[i + 1]!);
    }
    cursor = next;
  } while (cursor !== '0');
  return out;
}

before(async () => {
  cluster = await TestCluster.create();
  await cluster.start();
  ring = new Ring(cluster.names, 3);
});

after(async () => {
  for (const c of clients.values()) c.disconnect();
  await cluster?.destroy();
});

describe('RESP through ioredis', () => {
  test('put, get, overwrite and delete through every node', async () => {
    for (const [i, name] of cluster.names.entries()) {
      const r = redis(name);
      const key = `k-${i}`;
      assert.equal(await r.set(key, `v${i}`), 'OK');
      for (const other of cluster.names) assert.equal(await redis(other).get(key), `v${i}`, `read ${key} via ${other}`);
      assert.equal(await r.set(key, `w${i}`), 'OK');
      assert.equal(await redis(cluster.names[(i + 2) % 5]!).get(key), `w${i}`);
      assert.equal(await r.exists(key), 1);
      assert.equal(await redis(cluster.names[(i + 1) % 5]!).del(key), 1);
      assert.equal(await r.get(key), null);
      assert.equal(await r.del(key), 0);
      assert.equal(await r.exists(key), 0);
    }
  });

  test('binary-safe values and keys', async () => {
    const key = Buffer.from([0x00, 0xff, 0x0d, 0x0a, 0x41]);
    const value = Buffer.alloc(70_000);
    for (let i = 0; i < value.length; i++) value[i] = (i * 31) & 0xff;
    await redis('5554').set(key, value);
    const got = await redis('5560').getBuffer(key);
    assert.ok(got !== null && got.equals(value));
    assert.equal(await redis('5562').del(key), 1);
  });

  test('MSET, MGET, EXISTS and DEL with several keys', async () => {
    const r = redis('5556');
    assert.equal(await r.mset('m1', 'a', 'm2', 'b', 'm3', 'c'), 'OK');
    assert.deepEqual(await redis('5558').mget('m1', 'm2', 'nope', 'm3'), ['a', 'b', null, 'c']);
    assert.equal(await r.exists('m1', 'm2', 'nope'), 2);
    assert.equal(await redis('5562').del('m1', 'm2', 'nope'), 2);
    assert.equal(await r.exists('m1', 'm2', 'm3'), 1);
    await r.del('m3');
  });

  test('PING, ECHO, HELLO 2, SELECT 0, unknown commands and wrong arity', async () => {
    const r = redis('5554');
    assert.equal(await r.ping(), 'PONG');
    assert.equal(await r.echo('hi'), 'hi');
    const hello = (await r.call('HELLO', '2')) as unknown[];
    assert.equal(hello[1], 'chainkv');
    await assert.rejects(r.call('HELLO', '3'), /NOPROTO/);
    assert.equal(await r.select(0), 'OK');
    await assert.rejects(r.call('NOSUCHCMD', 'x'), /unknown command 'NOSUCHCMD'/);
    await assert.rejects(r.call('GET'), /wrong number of arguments for 'get'/);
    await assert.rejects(r.call('SET', 'a', 'b', 'NX'), /not supported/);
    assert.equal(await r.ping(), 'PONG', 'the connection still serves after errors');
  });

  test('oversized keys and values get an error naming the limit, and nothing is written', async () => {
    const r = redis('5558');
    await assert.rejects(r.set('k'.repeat(1025), 'v'), /key of 1025 bytes exceeds the limit of 1024 bytes \(maxKeyBytes\)/);
    await assert.rejects(r.set('big', Buffer.alloc(1024 * 1024 + 1)), /exceeds the limit of 1048576 bytes/);
    assert.equal(await r.get('big'), null);
    assert.equal(await r.set('big', Buffer.alloc(1024 * 1024, 7)), 'OK', 'a value of exactly the limit is fine');
    assert.equal((await redis('5554').getBuffer('big'))?.length, 1024 * 1024);
    await r.del('big');
    await assert.rejects(r.set('*', 'v'), /reserved/);
  });
});

describe('placement, * and @', () => {
  const written = new Map<string, string>();

  before(async () => {
    await redis('5554').flushall();
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 300; i++) {
      const key = `key-${i}`;
      written.set(key, `value-${i}`);
      ops.push(redis(cluster.names[i % 5]!).set(key, `value-${i}`));
    }
    await Promise.all(ops);
  });

  test('query * returns every pair once with its latest value, through every node', async () => {
    for (const name of cluster.names) assert.deepEqual(await allPairs(name), written, `* via ${name}`);
  });

  test('SCAN (ioredis scanStream) and KEYS list every key', async () => {
    const keys = new Set<string>();
    await new Promise<void>((resolve, reject) => {
      const s = redis('5560').scanStream({ count: 50 });
      s.on('data', (batch: string[]) => batch.forEach((k) => keys.add(k)));
      s.on('end', resolve);
      s.on('error', reject);
    });
    assert.deepEqual([...keys].sort(), [...written.keys()].sort());
    assert.deepEqual((await redis('5556').keys('key-1?')).sort(), [...written.keys()].filter((k) => /^key-1.$/.test(k)).sort());
    assert.equal(await redis('5562').dbsize(), written.size);
    const viaHttp = (await (await fetch(`${cluster.http('5558')}/kv?scope=all&count=1`)).json()) as { count: number };
    assert.equal(viaHttp.count, written.size);
    assert.equal((await fetch(`${cluster.http('5558')}/kv?count=yes`)).status, 400);
  });

  test('query @ returns exactly the pairs of the node\'s chains; each key lives on its three chain nodes', async () => {
    const holders = new Map<string, string[]>();
    for (const name of cluster.names) {
      const local = await localPairs(name);
      for (const [k, v] of local) {
        assert.equal(v, written.get(k), `value of ${k} on ${name}`);
        holders.set(k, [...(holders.get(k) ?? []), name]);
      }
      // LOCALDBSIZE reads the node's live counts, kept as writes commit: the same number.
      assert.equal(await redis(name).call('LOCALDBSIZE'), local.size, `LOCALDBSIZE on ${name}`);
      const viaHttp = (await (await fetch(`${cluster.http(name)}/kv/@?count=1`)).json()) as { count: number; scope: string };
      assert.deepEqual([viaHttp.scope, viaHttp.count], ['local', local.size], `GET /kv/@?count=1 on ${name}`);
    }
    for (const key of written.keys()) {
      const chain = [...ring.canonicalChain(ring.partitionOf(key))].sort();
      assert.deepEqual((holders.get(key) ?? []).sort(), chain, `holders of ${key}`);
    }
  });

  test('the original system\'s placement: "a" on 5558, 5560, 5562', async () => {
    await redis('5554').set('a', '1');
    const on = [];
    for (const name of cluster.names) if ((await localPairs(name)).has('a')) on.push(name);
    assert.deepEqual(on.sort(), ['5558', '5560', '5562']);
  });

  test('LOCALFLUSH deletes the pairs held by one node from every replica; FLUSHALL deletes everything', async () => {
    const before = await allPairs('5554');
    await redis('5556').call('LOCALFLUSH');
    const mine = new Set(ring.partitionsOf('5556'));
    const after = await allPairs('5558');
    for (const [k] of before) {
      assert.equal(after.has(k), !mine.has(ring.partitionOf(k)), `key ${k} after LOCALFLUSH on 5556`);
    }
    assert.equal((await localPairs('5556')).size, 0);
    assert.equal(await redis('5558').flushall(), 'OK');
    for (const name of cluster.names) assert.equal((await localPairs(name)).size, 0, `@ on ${name} after FLUSHALL`);
    assert.equal((await allPairs('5560')).size, 0);
    // Writes after a flush are kept.
    await redis('5560').set('after-flush', 'yes');
    assert.equal(await redis('5554').get('after-flush'), 'yes');
  });
});

describe('redis-cli', () => {
  test('set, get, del, keys, dbsize, info and an unknown command', async () => {
    assert.equal(await cli('5554', 'set', 'cli-key', 'hello world'), 'OK');
    assert.equal(await cli('5562', 'get', 'cli-key'), 'hello world');
    assert.match(await cli('5558', 'keys', 'cli-*'), /cli-key/);
    assert.match(await cli('5556', 'info'), /chainkv_version:/);
    assert.match(await cli('5556', 'dbsize'), /^\d+$/);
    assert.equal(await cli('5560', 'del', 'cli-key'), '1');
    assert.equal(await cli('5554', 'get', 'cli-key'), '');
    assert.match(await cli('5554', 'frobnicate'), /ERR unknown command/);
  });

  test('redis-cli --scan lists the keys (numeric cursors)', async () => {
    await redis('5554').mset('scan-1', 'a', 'scan-2', 'b', 'scan-3', 'c');
    const out = await cli('5556', '--scan', '--pattern', 'scan-*');
    assert.deepEqual(out.split('\n').sort(), ['scan-1', 'scan-2', 'scan-3']);
  });
});

describe('HTTP', () => {
  test('PUT, GET, DELETE /kv/{key}, listings, errors as JSON', async () => {
    const base = cluster.http('5556');
    let r = await fetch(`${base}/kv/http%20key`, { method: 'PUT', body: 'v1' });
    assert.equal(r.status, 200);
    r = await fetch(`${cluster.http('5562')}/kv/http%20key`);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'v1');
    r = await fetch(`${cluster.http('5554')}/kv?scope=all&limit=2`);
    const page = (await r.json()) as { items: { key: string; value: string }[]; cursor: string | null };
    assert.ok(page.items.length <= 2);
    r = await fetch(`${base}/kv/http%20key`, { method: 'DELETE' });
    assert.deepEqual(await r.json(), { ok: true, deleted: true });
    r = await fetch(`${base}/kv/http%20key`);
    assert.equal(r.status, 404);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'KV_ERR_NOT_FOUND');
    r = await fetch(`${base}/kv/x`, { method: 'PUT', body: Buffer.alloc(1024 * 1024 + 1) });
    assert.equal(r.status, 413);
    assert.match(((await r.json()) as { error: { message: string } }).error.message, /limit of 1048576 bytes/);
    r = await fetch(`${base}/kv?scope=everything`);
    assert.equal(r.status, 400);
    r = await fetch(`${base}/nowhere`);
    assert.equal(r.status, 404);
    r = await fetch(`${base}/health`);
    assert.equal(((await r.json()) as { ok: boolean }).ok, true);
  });

  test('paged * over HTTP returns every key once', async () => {
    await redis('5554').flushall();
    const keys = Array.from({ length: 120 }, (_, i) => `page-${i}`);
    await Promise.all(keys.map((k) => redis('5558').set(k, k.toUpperCase())));
    const seen = new Map<string, string>();
    let cursor: string | null = null;
    let pages = 0;
    do {
      const url = `${cluster.http('5560')}/kv?scope=all&limit=25${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
      const page = (await (await fetch(url)).json()) as { items: { key: string; value: string }[]; cursor: string | null };
      for (const it of page.items) {
        assert.ok(!seen.has(it.key));
        seen.set(it.key, it.value);
      }
      cursor = page.cursor;
      pages++;
    } while (cursor !== null);
    assert.equal(seen.size, keys.length);
    assert.ok(pages >= 5);
    for (const k of keys) assert.equal(seen.get(k), k.toUpperCase());
  });

  test('/cluster shows the ring and the chains', async () => {
    const info = (await (await fetch(`${cluster.http('5554')}/cluster`)).json()) as {
      partitions: { owner: string; chain: string[] }[];
      nodes: { name: string; state: string }[];
    };
    assert.equal(info.nodes.length, 5);
    assert.ok(info.nodes.every((n) => n.state === 'up'));
    assert.deepEqual(
      info.partitions.find((p) => p.owner === '5558')?.chain,
      ['5558', '5560', '5562'],
    );
  });

  test('/metrics counts requests, turns and fdatasync waits in Prometheus text', async () => {
    const metricIn = (text: string, name: string, node: string): number => {
      const m = new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text);
      assert.ok(m !== null, `${name} in /metrics of ${node}`);
      return Number(m[1]);
    };
    const metricsText = async (node: string): Promise<string> => (await fetch(`${cluster.http(node)}/metrics`)).text();
    const metric = async (name: string): Promise<number> => metricIn(await metricsText('5556'), name, '5556');
    // Each write waits for the fdatasync of its partition's tail, wherever that is: summed over
    // the nodes, one /metrics read per node for every name asked.
    const clusterSums = async (...names: string[]): Promise<number[]> => {
      const totals = names.map(() => 0);
      for (const n of cluster.names) {
        const text = await metricsText(n);
        names.forEach((name, i) => (totals[i]! += metricIn(text, name, n)));
      }
      return totals;
    };
    const requests = await metric('chainkv_client_requests_total');
    const turns = await metric('chainkv_turn_duration_seconds_count');
    const [syncs, syncSeconds] = await clusterSums('chainkv_fsync_wait_seconds_count', 'chainkv_fsync_wait_seconds_sum');
    for (let i = 0; i < 20; i++) await redis('5556').set(`metrics-${i}`, 'v');
    assert.ok((await metric('chainkv_client_requests_total')) >= requests + 20);
    assert.ok((await metric('chainkv_turn_duration_seconds_count')) > turns);
    // One after another, no two writes can share a group commit.
    const [syncsAfter, syncSecondsAfter] = await clusterSums('chainkv_fsync_wait_seconds_count', 'chainkv_fsync_wait_seconds_sum');
    assert.ok(syncsAfter! >= syncs! + 20);
    assert.ok(syncSecondsAfter! > syncSeconds!);
    // A histogram: cumulative buckets by turn duration.
    const text = await metricsText('5556');
    assert.match(text, /^chainkv_turn_duration_seconds_bucket\{le="0.001",node="5556"\} \d+$/m);
  });
});

describe('typed client', () => {
  test('routes by the ring and lists * and @', async () => {
    const kv = await ChainKvClient.connect([cluster.http('5558')]);
    try {
      await kv.deleteAll();
      await kv.put('tc-1', 'one');
      await kv.put('tc-2', 'two');
      assert.equal((await kv.get('tc-1'))?.toString(), 'one');
      assert.equal(await kv.get('tc-missing'), null);
      assert.equal(await kv.del('tc-2'), true);
      assert.equal(await kv.del('tc-2'), false);
      const all = [];
      for await (const p of kv.all()) all.push(p);
      assert.deepEqual(all, [{ key: 'tc-1', value: 'one' }]);
      const holders = [];
      for (const n of kv.nodes) {
        for await (const p of kv.local(n)) if (p.key === 'tc-1') holders.push(n);
      }
      assert.deepEqual(holders.sort(), [...kv.chainOf('tc-1')].sort());
    } finally {
      kv.close();
    }
  });
});
