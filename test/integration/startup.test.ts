import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, test } from 'node:test';
import { Redis } from 'ioredis';
import { NODE_PROCESS_FLAGS } from '../../src/frontends/node-flags.ts';
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

test('`chainkv start` runs every node of a config, with the process options of node-flags.ts; Ctrl-C stops them all', async () => {
  cluster = await TestCluster.create(); // for its config, on free ports; its nodes are not started
  const c = cluster;
  const bin = fileURLToPath(new URL('../../bin/chainkv.mjs', import.meta.url));
  const start = spawn(process.execPath, [bin, 'start', '--config', c.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  start.stdout.on('data', (d: Buffer) => (out += d.toString()));
  start.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => start.on('exit', (code) => resolve(code)));
  try {
    await waitFor(async () => Object.values(await states(c, c.names[0]!)).every((s) => s === 'up'), 'every node up');
    const client = new Redis({ port: c.node(c.names[0]!).respPort, host: '127.0.0.1', lazyConnect: true });
    await client.connect();
    await client.set('started', 'yes');
    assert.equal(await client.get('started'), 'yes');
    client.disconnect();
    // `chainkv status` lists every node with the pairs it stores: the key is on its chain's three nodes.
    const status = spawnSync(process.execPath, [bin, 'status', '--config', c.configFile], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(status.status, 0, status.stderr);
    const keys = c.names.map((n) => Number(new RegExp(`^  ${n} .* keys (\\d+)$`, 'm').exec(status.stdout)?.[1]));
    assert.deepEqual(keys.slice().sort(), [0, 0, 1, 1, 1], status.stdout);
    // Each node's process was started with NODE_PROCESS_FLAGS (they must be on its command
    // line: V8 reads them when it sets up the heap).
    // (Other children, such as esbuild building the bundle after a source change, are not nodes.)
    const children = readFileSync(`/proc/${start.pid}/task/${start.pid}/children`, 'utf8').trim().split(/\s+/);
    const argvOf = (pid: string): string[] => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      } catch {
        return []; // exited meanwhile
      }
    };
    const nodes = children.map(argvOf).filter((argv) => argv.includes('--name'));
    assert.equal(nodes.length, c.names.length, 'one process per node');
    for (const argv of nodes) {
      const at = argv.indexOf('node');
      assert.ok(at > 0, `a node process: ${argv.join(' ')}`);
      for (const flag of NODE_PROCESS_FLAGS) assert.ok(argv.slice(0, at).includes(flag), `${flag} before the script in ${argv.join(' ')}`);
    }
  } finally {
    start.kill('SIGINT');
  }
  assert.equal(await exited, 0, out);
  assert.match(out, /stopping every node/);
});

test('with CHAINKV_PEER_SECRET every node must know the secret: a node started with another one is not let in, and is again with the right one', async () => {
  const secret = 'cluster secret for this test only';
  cluster = await TestCluster.create({ env: { CHAINKV_PEER_SECRET: secret } });
  const c = cluster;
  await c.start();
  await waitFor(async () => Object.values(await states(c, c.names[0]!)).every((s) => s === 'up'), 'every node up');
  const client = new Redis({ port: c.node(c.names[0]!).respPort, host: '127.0.0.1', lazyConnect: true });
  await client.connect();
  try {
    for (let i = 0; i < 20; i++) await client.set(`s-${i}`, `${i}`);
    const odd = c.names[4]!;
    await c.stopNode(odd);
    await c.startNode(odd, { CHAINKV_PEER_SECRET: 'not the cluster secret, but long' });
    // The others refuse its connections (and it theirs): it stays down, and everything is served without it.
    await waitFor(async () => (await states(c, c.names[0]!))[odd] === 'down', `${odd} marked down`);
    await waitFor(async () => (c.output.get(c.names[0]!) ?? []).some((l) => l.includes('wrong HMAC')), 'the refusal in a log');
    for (let i = 0; i < 20; i++) assert.equal(await client.get(`s-${i}`), `${i}`);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await states(c, c.names[0]!))[odd], 'down', 'still not let in');
    // With the right secret it joins, catches up and serves.
    await c.stopNode(odd);
    await c.startNode(odd);
    await waitFor(async () => Object.values(await states(c, c.names[0]!)).every((s) => s === 'up'), 'every node up again');
    const direct = new Redis({ port: c.node(odd).respPort, host: '127.0.0.1', lazyConnect: true });
    await direct.connect();
    try {
      for (let i = 0; i < 20; i++) assert.equal(await direct.get(`s-${i}`), `${i}`);
    } finally {
      direct.disconnect();
    }
  } finally {
    client.disconnect();
  }
});
