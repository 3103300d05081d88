import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Replica, transferAllowanceMs } from '../../src/core/replica.ts';
import type { Output } from '../../src/core/replica.ts';
import { Ring } from '../../src/core/ring.ts';
import { MemoryStore } from '../../src/sim/memory-store.ts';

/**
 * A coordinator's periodic retries of a request nobody answers (a lost message, a silent
 * node): a large write waits as long as its bytes take to move before it is sent again.
 * The core alone, stepped by hand: nothing it sends is ever answered.
 */
const NAMES = ['5554', '5556', '5558', '5560', '5562'];

function writeSendTimes(valueBytes: number, untilMs: number): number[] {
  const ring = new Ring(NAMES, 3);
  // A key whose chain does not hold the coordinator: every attempt is a message to the head.
  let i = 0;
  while (ring.canonicalChain(ring.partitionOf(`k${i}`)).includes('5554')) i++;
  const key = `k${i}`;
  const r = new Replica({ self: '5554', ring, store: new MemoryStore(), incarnation: 'i1', seed: 7, timing: { requestTimeoutMs: 60_000 } });
  const times: number[] = [];
  const note = (now: number, out: Output[]): void => {
    for (const o of out) if (o.type === 'send' && o.msg.t === 'write') times.push(now);
  };
  note(0, r.step(0, { type: 'client', token: 1, req: { op: 'put', key: Buffer.from(key), value: Buffer.alloc(valueBytes, 1) } }));
  for (let now = 10; now <= untilMs; now += 10) note(now, r.step(now, { type: 'tick' }));
  return times;
}

test('unanswered retries of a small write go every retryMs', () => {
  const times = writeSendTimes(100, 3_000);
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  // Attempts are made on ticks (every 10 ms here), so each gap is retryMs or one tick more.
  assert.ok(gaps.length >= 8, `sent at ${times.join(', ')}`);
  for (const g of gaps) assert.ok(g >= 300 && g <= 310, `gap ${g} ms; sent at ${times.join(', ')}`);
});

test('a large write is not sent again before its bytes could have moved', () => {
  const bytes = 20 * 1024 * 1024;
  const allowance = transferAllowanceMs(bytes + 2);
  assert.ok(allowance > 2000, `allowance ${allowance} ms`);
  const times = writeSendTimes(bytes, 20_000);
  assert.ok(times.length >= 3);
  assert.ok(times[1]! - times[0]! >= 300 + allowance, `second attempt after ${times[1]! - times[0]!} ms`);
  assert.ok(times[1]! - times[0]! <= 300 + allowance + 10);
  assert.ok(times[2]! - times[1]! >= 300 + allowance);
});
