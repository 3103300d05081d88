import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ring, sha1Hex } from '../../src/core/ring.ts';
import { initialView, servingChain } from '../../src/core/view.ts';
import type { View } from '../../src/core/view.ts';
import { DEFAULT_NAMES } from '../../src/runtime/config.ts';

const ring = new Ring(DEFAULT_NAMES, 3);
const chainOfKey = (key: string): readonly string[] => ring.canonicalChain(ring.partitionOf(key));

test('node positions are the SHA-1 of the names, in the original system\'s ring order', () => {
  assert.equal(sha1Hex('5554'), '33d6357cfaaf0f72991b0ecd8c56da066613c089');
  assert.deepEqual(
    ring.nodes.map((n) => n.name),
    ['5562', '5556', '5554', '5558', '5560'],
  );
});

test('test vectors of the original course system: "a", "0" and "x"', () => {
  assert.deepEqual(chainOfKey('a'), ['5558', '5560', '5562']);
  assert.deepEqual(chainOfKey('0'), ['5560', '5562', '5556']);
  assert.deepEqual(chainOfKey('x'), ['5562', '5556', '5554']);
});

test('a key belongs to the first node at or after its hash, wrapping past the largest', () => {
  for (let i = 0; i < 2000; i++) {
    const key = `key-${i}`;
    const h = sha1Hex(key);
    const expected = ring.nodes.find((n) => n.position >= h) ?? ring.nodes[0]!;
    assert.equal(ring.ownerOf(ring.partitionOf(key)), expected.name, key);
  }
  // A position equal to a node's position belongs to that node.
  assert.equal(ring.partitionOfPosition(ring.nodes[2]!.position), 2);
  assert.equal(ring.partitionOfPosition('f'.repeat(40)), 0);
  assert.equal(ring.partitionOfPosition('0'.repeat(40)), 0);
});

test('chains are the owner and the next two nodes clockwise; every node is in three chains', () => {
  for (let p = 0; p < ring.size; p++) {
    const chain = ring.canonicalChain(p);
    assert.equal(chain.length, 3);
    for (let i = 0; i < 3; i++) assert.equal(chain[i], ring.nodes[(p + i) % 5]!.name);
  }
  for (const name of DEFAULT_NAMES) assert.equal(ring.partitionsOf(name).length, 3);
});

test('shares add up to the whole ring; 5558 owns nearly half of it', () => {
  const shares = ring.nodes.map((_, p) => ring.share(p));
  assert.ok(Math.abs(shares.reduce((a, b) => a + b, 0) - 1) < 1e-5);
  assert.ok(Math.abs(ring.share(ring.indexOf('5558')) - 0.469) < 0.001);
});

test('configurable replication and node counts; bad rings are refused', () => {
  const r1 = new Ring(['a', 'b', 'c', 'd', 'e', 'f', 'g'], 5);
  assert.equal(r1.canonicalChain(0).length, 5);
  const single = new Ring(['solo'], 1);
  assert.deepEqual(single.canonicalChain(single.partitionOf('anything')), ['solo']);
  assert.throws(() => new Ring(['a', 'b'], 3), /replication factor 3/);
  assert.throws(() => new Ring(['a', 'a'], 1), /unique/);
  assert.throws(() => new Ring([], 1), /at least one/);
});

test('the serving chain drops nodes that are not up, keeping order', () => {
  const view: View = { epoch: 2, states: { ...initialView(ring).states, '5560': 'down' } };
  const p = ring.partitionOf('a');
  assert.deepEqual(servingChain(ring, view, p), ['5558', '5562']);
  const joining: View = { epoch: 3, states: { ...initialView(ring).states, '5558': 'joining' } };
  assert.deepEqual(servingChain(ring, joining, p), ['5560', '5562']);
});
