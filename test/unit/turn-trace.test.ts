import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { describeInput, describeOutput, TurnTrace } from '../../src/runtime/turn-trace.ts';
import { tempDirs } from '../support/tmp.ts';

const fresh = tempDirs('chainkv-trace-');

test('a turn trace is off unless CHAINKV_TURN_TRACE names a directory', () => {
  assert.equal(TurnTrace.fromEnv({}, 'n1'), undefined);
  assert.equal(TurnTrace.fromEnv({ CHAINKV_TURN_TRACE: '  ' }, 'n1'), undefined);
});

test('a turn trace writes one line per event: time in µs, node, what, detail; in order, with wall-clock times', () => {
  const dir = fresh();
  const trace = TurnTrace.fromEnv({ CHAINKV_TURN_TRACE: dir }, '5558')!;
  const before = Date.now() * 1000;
  trace.note('in', describeInput({ type: 'client', token: 1, req: { op: 'put', key: Buffer.from('k'), value: Buffer.from('v') } }));
  trace.note('in', describeInput({ type: 'message', from: '5556', msg: { t: 'ack', e: 3, p: 7, seq: 9 } }));
  trace.note(
    'stepped',
    [
      { type: 'send', to: '5560', msg: { t: 'ack', e: 3, p: 7, seq: 9 }, durable: true } as const,
      { type: 'reply', token: 1, result: { ok: true }, durable: false } as const,
    ]
      .map(describeOutput)
      .join(','),
  );
  trace.note('flushed');
  trace.write();
  const after = Date.now() * 1000;
  const lines = readFileSync(join(dir, '5558.trace'), 'utf8').trim().split('\n');
  assert.deepEqual(
    lines.map((l) => l.split(' ').slice(1).join(' ').trimEnd()),
    ['5558 in client:put', '5558 in ack<5556', '5558 stepped ack>5560!,reply', '5558 flushed'],
  );
  const times = lines.map((l) => Number(l.split(' ')[0]));
  for (let i = 0; i < times.length; i++) {
    assert.ok(times[i]! >= before - 2000 && times[i]! <= after + 2000, `time ${times[i]} within [${before}, ${after}]`);
    if (i > 0) assert.ok(times[i]! >= times[i - 1]!);
  }
});
