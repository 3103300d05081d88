import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { Redis } from 'ioredis';
import { TestCluster } from '../support/cluster.ts';
import { localPairs } from '../support/resp.ts';

/**
 * Start order: any order of the five nodes works, and a cluster with one node missing from
 * the start serves every key; the late node then joins, catches up and serves too.
 */
let cluster: TestCluster | undefined;

afterEach(async () => {
  await cluster?.destroy();
  cluster = undefined;
});

async function states(c: TestCluster, via: string): Promise<Record<string, string>> {
  const info = (await (await fetch(`${c.http(via)}/cluster`)).json()) as { nodes: { name: string; state: string }[] };
  return Object.fromEntries(info.nodes.map((n) => [n.name, n.state]));
}

async function waitFor(cond: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await cond()) return;
    } catch {
      // not answering yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('a cluster with one node missing from the start serves every key; the late node joins and catches up', async () => {
  cluster = await TestCluster.create();
  const c = cluster;
  const late = '5558'; // owns nearly half the ring: every one of its chains must close up
  await c.start(c.names.filter((n) => n !== late));
  await waitFor(async () => (await states(c, '5554'))[late] === 'down', 'the missing node to be marked down');
  const r = new Redis({ host: '127.0.0.1', port: c.node('5556').respPort, maxRetriesPerRequest: 0 });
  for (let i = 0; i < 300; i++) assert.equal(await r.set(`m-${i}`, `v${i}`), 'OK');
  for (let i = 0; i < 300; i++) assert.equal(await r.get(`m-${i}`), `v${i}`);
  await c.startNode(late);
  await c.waitAllUp();
  const l = new Redis({ host: '127.0.0.1', port: c.node(late).respPort, maxRetriesPerRequest: 0 });
  const held = (await localPairs(l)).size;
  assert.ok(held > 50, `the late node holds its share after catching up (${held} keys)`);
  for (let i = 0; i < 300; i++) assert.equal(await l.get(`m-${i}`), `v${i}`);
  r.disconnect();
  l.disconnect();
});

test('nodes started one by one in reverse order, with pauses, form one cluster that serves', async () => {
  cluster = await TestCluster.create();
  const c = cluster;
  for (const name of [...c.names].reverse()) {
    await c.startNode(name);
    await new Promise((r) => setTimeout(r, 250));
  }
  await c.waitAllUp();
  const r = new Redis({ host: '127.0.0.1', port: c.node('5562').respPort, maxRetriesPerRequest: 0 });
  for (let i = 0; i < 100; i++) assert.equal(await r.set(`o-${i}`, `v${i}`), 'OK');
  const s = new Redis({ host: '127.0.0.1', port: c.node('5554').respPort, maxRetriesPerRequest: 0 });
  for (let i = 0; i < 100; i++) assert.equal(await s.get(`o-${i}`), `v${i}`);
  r.disconnect();
  s.disconnect();
});
