import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { Ring } from '../../src/core/ring.ts';
import { checkHistory, describeViolation, HistoryRecorder } from '../../src/sim/linearizability.ts';
import { TestCluster } from '../support/cluster.ts';
import { localPairs } from '../support/resp.ts';

/**
 * Many clients writing and reading the same few keys through different nodes at once, on a
 * real five-process cluster; the recorded history must be linearizable. Then SIGKILL and
 * restart: every acknowledged write is still there, and each restarted node holds its chains' data again.
 */
let cluster: TestCluster;
let ring: Ring;

before(async () => {
  cluster = await TestCluster.create();
  await cluster.start();
  ring = new Ring(cluster.names, 3);
});

/** Every connection opened, so that a failed test does not leave one reconnecting for ever (which kept the run from ending). */
const opened: Redis[] = [];

after(async () => {
  for (const c of opened) c.disconnect();
  await cluster?.destroy();
});

function connect(name: string): Redis {
  const c = new Redis({ host: '127.0.0.1', port: cluster.node(name).respPort, maxRetriesPerRequest: 0, enableOfflineQueue: true });
  opened.push(c);
  return c;
}

test('12 clients on 5 hot keys through random nodes: the history is linearizable', async () => {
  const keys = ['a', '0', 'x', 'hot-1', 'hot-2'];
  const history = new HistoryRecorder();
  const conns = cluster.names.map(connect);
  const deadline = Date.now() + 6000;
  let seq = 0;
  const client = async (process: number): Promise<void> => {
    let rnd = process * 7919 + 1;
    const next = (): number => {
      rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
      return rnd / 0x7fffffff;
    };
    while (Date.now() < deadline) {
      const key = keys[Math.floor(next() * keys.length)]!;
      const conn = conns[Math.floor(next() * conns.length)]!;
      const r = next();
      if (r < 0.45) {
        const value = `p${process}-${seq++}`;
        const h = history.invoke(process, 'put', key, value);
        try {
          await conn.set(key, value);
          history.ok(h);
        } catch {
          history.info(h);
        }
      } else if (r < 0.9) {
        const h = history.invoke(process, 'get', key, null);
        try {
          history.ok(h, await conn.get(key));
        } catch {
          history.info(h);
        }
      } else {
        const h = history.invoke(process, 'delete', key, null);
        try {
          await conn.del(key);
          history.ok(h);
        } catch {
          history.info(h);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: 12 }, (_, i) => client(i)));
  const ops = history.finish();
  for (const c of conns) c.disconnect();
  const okOps = ops.filter((o) => o.status === 'ok').length;
  assert.ok(okOps > 1000, `only ${okOps} operations completed`);
  assert.equal(ops.filter((o) => o.status !== 'ok').length, 0, 'no operation should fail without faults');
  const result = checkHistory(ops);
  assert.ok(!result.unknown, 'checker budget exhausted');
  assert.ok(result.ok, result.violations.map(describeViolation).join('\n'));
});

test('SIGKILL and restart keeps every acknowledged write; the restarted node holds its chains\' data again', async () => {
  const writer = connect('5554');
  await writer.flushall();
  const expected = new Map<string, string>();
  const pipeline = writer.pipeline();
  for (let i = 0; i < 3000; i++) {
    expected.set(`durable-${i}`, `value-${i}`);
    pipeline.set(`durable-${i}`, `value-${i}`);
  }
  const results = await pipeline.exec();
  assert.ok(results !== null);
  const failed = results.filter(([err]) => err !== null);
  assert.equal(failed.length, 0, `${failed.length} of 3000 writes failed, e.g. ${String(failed[0]?.[0])}`);
  await writer.del('durable-0', 'durable-1');
  expected.delete('durable-0');
  expected.delete('durable-1');
  writer.disconnect();

  // One node at a time, then all five at once.
  for (const victims of [['5558'], ['5562'], cluster.names]) {
    for (const v of victims) await cluster.kill(v);
    for (const v of victims) await cluster.startNode(v);
    // A restarted node keeps what it committed; what was still pending on it when it died
    // (the tail answers before acks reach the head) it re-reads from its chain before it
    // serves. Once every node is up again, each holds exactly its chains' data.
    await cluster.waitAllUp();
    for (const name of victims) {
      const r = connect(name);
      const local = await localPairs(r);
      const mine = [...expected].filter(([k]) => ring.canonicalChain(ring.partitionOf(k)).includes(name));
      assert.equal(local.size, mine.length, `${name} holds ${local.size} keys, expected ${mine.length}`);
      for (const [k, v] of mine) assert.equal(local.get(k), v, `${k} on ${name}`);
      assert.equal(await r.get('durable-0'), null, 'a deleted key stays deleted');
      r.disconnect();
    }
  }
  // And the cluster serves every key again through every node.
  const r = connect('5556');
  assert.equal(await r.dbsize(), expected.size);
  assert.equal(await r.set('after-restart', 'ok'), 'OK');
  assert.equal(await r.get('durable-2999'), 'value-2999');
  r.disconnect();
});
