import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { TestCluster } from '../support/cluster.ts';

/**
 * Whole-dataset work on a large dataset must not stall a node past failure detection (400 ms
 * without a word and the leader takes it for dead):
 * - `GET /digest` (what `chainkv verify` reads) hashed every pair in one turn: 0.6-1.2 s per
 *   node at 600,000 keys, six view changes. It now reads a chunk per turn, from one snapshot.
 * - Deleting `*`: garbage collection removed the versions a clear hides in one turn, 660 ms
 *   for a partition of 300,000 keys; with 600,000 keys the nodes were taken down one after
 *   the other (six view changes). Collection now goes a slice per tick.
 */
let cluster: TestCluster;

before(async () => {
  cluster = await TestCluster.create();
  await cluster.start();
});

after(async () => {
  await cluster?.destroy();
});

async function view(name: string): Promise<{ epoch: number; nodes: { name: string; state: string }[] }> {
  return (await (await fetch(`${cluster.http(name)}/cluster`)).json()) as { epoch: number; nodes: { name: string; state: string }[] };
}

test('digests and FLUSHALL over 600,000 keys leave every node up and the view unchanged', async () => {
  const r = new Redis({ host: '127.0.0.1', port: cluster.node('5554').respPort, maxRetriesPerRequest: 0 });
  try {
    const keys = 600_000;
    const batch = 1000;
    const value = 'v'.repeat(100);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < keys) {
        const from = next;
        next += batch;
        const args: string[] = [];
        for (let i = from; i < Math.min(keys, from + batch); i++) args.push(`big-clear-${i}`, value);
        await r.mset(...args);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    assert.equal(await r.dbsize(), keys);
    const before = await view('5554');
    let hashed = 0;
    for (const name of cluster.names) {
      const d = (await (await fetch(`${cluster.http(name)}/digest`)).json()) as { partitions: { keys: number }[] };
      hashed += d.partitions.reduce((n, x) => n + x.keys, 0);
    }
    assert.equal(hashed, 3 * keys, 'every copy of every key was hashed');
    assert.equal((await view('5554')).epoch, before.epoch, 'no node was taken down by the digests');
    assert.equal(await r.flushall(), 'OK');
    // Several collection rounds (once a second at each head), then look.
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const afterFlush = await view('5554');
    assert.equal(afterFlush.epoch, before.epoch, 'no node was taken down');
    assert.ok(afterFlush.nodes.every((n) => n.state === 'up'), JSON.stringify(afterFlush.nodes));
    assert.equal(await r.dbsize(), 0);
  } finally {
    r.disconnect();
  }
});
