import { describe, it } from 'node:test';
import { Prng } from '../../src/sim/prng.ts';
import assert from 'node:assert/strict';
import { RespParser } from '../../src/frontends/resp/parser.ts';
import type { RespEvent, RespParserLimits } from '../../src/frontends/resp/parser.ts';
import {
  encode, encodeInto, encodeValue, encodeError, toReply, sanitizeLine,
  OK, PONG, QUEUED, NULL_BULK, NULL_ARRAY, EMPTY_ARRAY, ZERO, ONE,
} from '../../src/frontends/resp/encode.ts';
import type { Reply } from '../../src/frontends/resp/encode.ts';

const LIMITS: RespParserLimits = {
  maxBulkBytes: 1024 * 1024 + 4096,
  maxArgs: 1_048_576,
  maxInlineBytes: 64 * 1024,
  maxBulkHardBytes: 512 * 1024 * 1024,
};

/** The simulator's seeded generator (mulberry32), as a function. */
function prng(seed: number): () => number {
  const rng = new Prng(seed);
  return () => rng.next();
}

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

/** A multibulk request. */
function mb(...args: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [b(`*${args.length}\r\n`)];
  for (const a of args) {
    const data = typeof a === 'string' ? Buffer.from(a, 'utf8') : a;
    parts.push(b(`$${data.length}\r\n`), data, b('\r\n'));
  }
  return Buffer.concat(parts);
}

function cmd(...args: (string | Buffer)[]): RespEvent {
  return { type: 'command', args: args.map((a) => (typeof a === 'string' ? Buffer.from(a, 'utf8') : a)) };
}

function perr(message: string): RespEvent {
  return { type: 'protocolError', message };
}

/** Feeds the chunks to a fresh parser and returns all events. */
function feed(chunks: Buffer[], limits: RespParserLimits = LIMITS): RespEvent[] {
  const p = new RespParser(limits);
  const events: RespEvent[] = [];
  for (const c of chunks) {
    for (const e of p.push(c)) events.push(e);
  }
  return events;
}

/** Splits `data` at the given (sorted) offsets. */
function splitAt(data: Buffer, points: number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(data.subarray(prev, p));
    prev = p;
  }
  out.push(data.subarray(prev));
  return out;
}

function bytewise(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i++) out.push(data.subarray(i, i + 1));
  return out;
}

function randomSplit(data: Buffer, rnd: () => number): Buffer[] {
  // Vary the granularity between splittings: tiny pieces, socket-sized pieces, and in between.
  const scales = [2, 8, 64, 1024, 16384, 65536];
  const scale = scales[Math.floor(rnd() * scales.length)] as number;
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < data.length) {
    const n = 1 + Math.floor(rnd() * scale);
    out.push(data.subarray(pos, pos + n));
    pos += n;
  }
  return out;
}

// ---------------------------------------------------------------------------
// A small stream covering every request form.

const BINARY = Buffer.from([0x00, 0x0d, 0x0a, 0xff, 0x24, 0x2a, 0x0d, 0x0a, 0x0d, 0x0a, 0x80]);
const SMALL_STREAM = Buffer.concat([
  mb('SET', 'key', BINARY),
  mb('SET', '', ''), // $0 arguments
  b('*0\r\n*-1\r\n'), // no command
  b('PING\r\n'),
  b('\r\n'), // empty inline line: ignored
  b('  \t \n'), // blank inline line: ignored
  b('set "a b" \'c \\\'d\' "\\x41\\n\\"q" plain\n'),
  b('*1\r\n$-1\r\n'), // null bulk argument: taken as empty
  mb('GET', 'ключ'), // UTF-8
  mb('PING'),
]);
const SMALL_EXPECTED: RespEvent[] = [
  cmd('SET', 'key', BINARY),
  cmd('SET', '', ''),
  cmd('PING'),
  cmd('set', 'a b', "c 'd", 'A\n"q', 'plain'),
  cmd(''),
  cmd('GET', 'ключ'),
  cmd('PING'),
];

describe('RespParser: split invariance', () => {
  it('parses the small stream in one push', () => {
    assert.deepEqual(feed([SMALL_STREAM]), SMALL_EXPECTED);
  });

  it('parses the small stream identically at every split point', () => {
    for (let i = 0; i <= SMALL_STREAM.length; i++) {
      assert.deepEqual(feed(splitAt(SMALL_STREAM, [i])), SMALL_EXPECTED, `split at ${i}`);
    }
  });

  it('parses the small stream identically for every pair of split points', () => {
    for (let i = 0; i <= SMALL_STREAM.length; i++) {
      for (let j = i; j <= SMALL_STREAM.length; j++) {
        assert.deepEqual(feed(splitAt(SMALL_STREAM, [i, j])), SMALL_EXPECTED, `split at ${i}, ${j}`);
      }
    }
  });

  it('parses the small stream byte at a time', () => {
    assert.deepEqual(feed(bytewise(SMALL_STREAM)), SMALL_EXPECTED);
  });

  // A bigger pipelined stream: many small commands, binary values up to a few KiB, inline commands.
  const rnd = prng(12345);
  const parts: Buffer[] = [];
  const expected: RespEvent[] = [];
  for (let i = 0; i < 1500; i++) {
    const kind = rnd();
    if (kind < 0.15) {
      parts.push(b(`GET "key ${i}" 'q\\'${i}'\r\n`));
      expected.push(cmd('GET', `key ${i}`, `q'${i}`));
    } else if (kind < 0.2) {
      parts.push(b(`INCR counter:${i}\n`));
      expected.push(cmd('INCR', `counter:${i}`));
    } else {
      const size = rnd() < 0.9 ? Math.floor(rnd() * 40) : Math.floor(rnd() * 8000);
      const value = Buffer.alloc(size);
      for (let j = 0; j < size; j++) value[j] = rnd() < 0.1 ? (rnd() < 0.5 ? 0x0d : 0x0a) : Math.floor(rnd() * 256);
      parts.push(mb('SET', `key:${i}`, value));
      expected.push(cmd('SET', `key:${i}`, value));
    }
  }
  const big = Buffer.concat(parts);

  it('parses a big pipelined stream in one push', () => {
    assert.deepEqual(feed([big]), expected);
  });

  it('parses a big pipelined stream identically over 200 random splittings', () => {
    const r = prng(987654321);
    for (let k = 0; k < 200; k++) {
      const chunks = randomSplit(big, r);
      assert.deepEqual(feed(chunks), expected, `splitting #${k} (${chunks.length} chunks)`);
    }
  });

  it('parses a big pipelined stream byte at a time', () => {
    assert.deepEqual(feed(bytewise(big)), expected);
  });

  it('returns arguments that do not alias the input chunk', () => {
    const chunk = Buffer.from(mb('SET', 'k', 'v'));
    const events = feed([chunk]);
    chunk.fill(0);
    assert.deepEqual(events, [cmd('SET', 'k', 'v')]);
  });

  it('parses a bulk of maxBulkBytes arriving in small chunks', () => {
    const value = Buffer.alloc(LIMITS.maxBulkBytes);
    for (let i = 0; i < value.length; i++) value[i] = (i * 31) & 0xff;
    const stream = Buffer.concat([mb('SET', 'big', value), mb('PING')]);
    const p = new RespParser(LIMITS);
    const events: RespEvent[] = [];
    for (let pos = 0; pos < stream.length; pos += 1000) {
      events.push(...p.push(stream.subarray(pos, pos + 1000)));
      assert.ok(p.bufferedBytes <= LIMITS.maxBulkBytes + 16);
    }
    assert.deepEqual(events, [cmd('SET', 'big', value), cmd('PING')]);
    assert.equal(p.bufferedBytes, 0);
  });
});

// ---------------------------------------------------------------------------

describe('RespParser: inline commands', () => {
  const cases: [string, string[]][] = [
    ['PING\r\n', ['PING']],
    ['PING\n', ['PING']],
    ['  set   k\tv  \r\n', ['set', 'k', 'v']],
    ['echo "hello world"\r\n', ['echo', 'hello world']],
    ['echo ""\r\n', ['echo', '']],
    ["echo ''\r\n", ['echo', '']],
    ['echo "\\x41\\x4a\\x4A" "\\xZZ"\r\n', ['echo', 'AJJ', 'xZZ']],
    ['echo "\\n\\r\\t\\b\\a\\\\\\"\\q"\r\n', ['echo', '\n\r\t\b\x07\\"q']],
    ["echo 'it\\'s' 'a\\nb'\r\n", ['echo', "it's", 'a\\nb']],
    ['echo foo"bar baz"\r\n', ['echo', 'foobar baz']],
    ['echo "a"\t"b"\r\n', ['echo', 'a', 'b']],
  ];
  for (const [line, args] of cases) {
    it(`splits ${JSON.stringify(line)}`, () => {
      assert.deepEqual(feed([b(line)]), [cmd(...args)]);
      assert.deepEqual(feed(bytewise(b(line))), [cmd(...args)]);
    });
  }

  it('keeps raw bytes of inline words', () => {
    const line = Buffer.concat([b('SET k '), Buffer.from([0xc3, 0xa9, 0x00, 0xff]), b('\r\n')]);
    assert.deepEqual(feed([line]), [cmd('SET', 'k', Buffer.from([0xc3, 0xa9, 0x00, 0xff]))]);
  });

  it('ignores empty and blank lines', () => {
    assert.deepEqual(feed([b('\r\n\n   \r\n\t\n')]), []);
  });

  it('accepts an inline line of exactly maxInlineBytes', () => {
    const limits = { ...LIMITS, maxInlineBytes: 20 };
    const word = 'x'.repeat(20);
    for (const term of ['\n', '\r\n']) {
      const data = b(word + term);
      assert.deepEqual(feed([data], limits), [cmd(word)]);
      assert.deepEqual(feed(bytewise(data), limits), [cmd(word)]);
    }
  });
});

// ---------------------------------------------------------------------------

describe('RespParser: protocol errors', () => {
  const SMALL: RespParserLimits = { maxBulkBytes: 64, maxArgs: 8, maxInlineBytes: 32, maxBulkHardBytes: 1000 };
  const cases: [string, string, string][] = [
    ['non-numeric multibulk length', '*abc\r\n', 'invalid multibulk length'],
    ['trailing garbage in multibulk length', '*1x\r\n', 'invalid multibulk length'],
    ['empty multibulk length', '*\r\n', 'invalid multibulk length'],
    ['multibulk length with leading zero', '*01\r\n', 'invalid multibulk length'],
    ['multibulk length with plus sign', '*+1\r\n', 'invalid multibulk length'],
    ['multibulk header without \\r', '*1\n', 'invalid multibulk length'],
    ['multibulk length above maxArgs', '*9\r\n', 'invalid multibulk length'],
    ['negative multibulk length other than -1', '*-2\r\n', 'invalid multibulk length'],
    ['non-numeric bulk length', '*1\r\n$abc\r\n', 'invalid bulk length'],
    ['empty bulk length', '*1\r\n$\r\n', 'invalid bulk length'],
    ['negative bulk length other than -1', '*1\r\n$-2\r\n', 'invalid bulk length'],
    ['bulk length -0', '*1\r\n$-0\r\n', 'invalid bulk length'],
    ['bulk length above maxBulkHardBytes', '*1\r\n$1001\r\n', 'invalid bulk length'],
    ['huge bulk length', '*1\r\n$99999999999999999999\r\n', 'invalid bulk length'],
    ['missing $', '*2\r\n$3\r\nGET\r\nkey\r\n', "expected '$', got 'k'"],
    ['missing $ (unprintable byte)', '*1\r\n\x01', "expected '$', got '\\x01'"],
    ['bulk not followed by CRLF', '*1\r\n$3\r\nfooXY', 'expected CRLF after bulk data'],
    ['bulk followed by \\r only', '*1\r\n$3\r\nfoo\rX', 'expected CRLF after bulk data'],
    ['unterminated double quote', 'SET "abc\r\n', 'unbalanced quotes in request'],
    ['unterminated single quote', "SET 'abc\r\n", 'unbalanced quotes in request'],
    ['closing quote followed by a letter', 'SET "abc"def\r\n', 'unbalanced quotes in request'],
    ['closing single quote followed by a letter', "SET 'abc'def\r\n", 'unbalanced quotes in request'],
    ['inline line too long', `${'x'.repeat(33)}\r\n`, 'too big inline request'],
    ['inline line too long without newline', 'x'.repeat(34), 'too big inline request'],
    ['multibulk count string too long', `*${'1'.repeat(40)}`, 'too big mbulk count string'],
    ['bulk count string too long', `*1\r\n$${'1'.repeat(40)}`, 'too big bulk count string'],
  ];
  for (const [name, input, message] of cases) {
    it(`${name} → ${message}`, () => {
      const data = b(input);
      assert.deepEqual(feed([data], SMALL), [perr(message)]);
      assert.deepEqual(feed(bytewise(data), SMALL), [perr(message)]);
      for (let i = 0; i <= data.length; i++) {
        assert.deepEqual(feed(splitAt(data, [i]), SMALL), [perr(message)], `split at ${i}`);
      }
    });
  }

  it('emits the commands before the error, and nothing after it', () => {
    const p = new RespParser(SMALL);
    assert.deepEqual(p.push(b('PING\r\n*1\r\n$4\r\nPING\r\n*x\r\n*1\r\n$4\r\nPING\r\n')), [cmd('PING'), cmd('PING'), perr('invalid multibulk length')]);
    assert.deepEqual(p.push(mb('PING')), []);
    assert.deepEqual(p.push(b('PING\r\n')), []);
    assert.equal(p.bufferedBytes, 0);
  });

  it('ignores input after an error that arrived in pieces', () => {
    const p = new RespParser(SMALL);
    assert.deepEqual(p.push(b('*1\r\n$')), []);
    assert.deepEqual(p.push(b('-5\r')), []);
    assert.deepEqual(p.push(b('\nPING\r\n')), [perr('invalid bulk length')]);
    assert.deepEqual(p.push(b('PING\r\n')), []);
  });

  it('accepts a bulk of exactly maxBulkHardBytes (as tooLarge) but not one more', () => {
    const ok = Buffer.concat([b('*2\r\n$3\r\nSET\r\n$1000\r\n'), Buffer.alloc(1000, 0x61), b('\r\n')]);
    assert.deepEqual(feed([ok], SMALL), [{ type: 'tooLarge', argIndex: 1, size: 1000, limit: 64, args: [b('SET'), Buffer.alloc(0)] }]);
    assert.deepEqual(feed([b('*2\r\n$3\r\nSET\r\n$1001\r\n')], SMALL), [perr('invalid bulk length')]);
  });

  it('takes a $-1 argument as an empty argument', () => {
    assert.deepEqual(feed([b('*3\r\n$3\r\nSET\r\n$-1\r\n$1\r\nv\r\n')], SMALL), [cmd('SET', '', 'v')]);
  });

  it('ignores *0 and *-1', () => {
    assert.deepEqual(feed([b('*0\r\n*-1\r\n*0\r\n')], SMALL), []);
  });

  it('rejects invalid limits', () => {
    assert.throws(() => new RespParser({ ...SMALL, maxArgs: -1 }), RangeError);
    assert.throws(() => new RespParser({ ...SMALL, maxBulkBytes: 1.5 }), RangeError);
  });
});

// ---------------------------------------------------------------------------

describe('RespParser: too large arguments', () => {
  it('discards an argument of maxBulkBytes+1 while streaming and keeps the rest', () => {
    const size = LIMITS.maxBulkBytes + 1;
    const large = Buffer.alloc(size, 0x78);
    const stream = Buffer.concat([mb('SET', 'key', large, 'EX', '10'), mb('GET', 'key'), b('PING\r\n')]);
    const p = new RespParser(LIMITS);
    const events: RespEvent[] = [];
    let maxBuffered = 0;
    for (let pos = 0; pos < stream.length; pos += 1000) {
      events.push(...p.push(stream.subarray(pos, pos + 1000)));
      maxBuffered = Math.max(maxBuffered, p.bufferedBytes);
    }
    assert.ok(maxBuffered < 2000, `bufferedBytes reached ${maxBuffered}`);
    assert.deepEqual(events, [
      { type: 'tooLarge', argIndex: 2, size, limit: LIMITS.maxBulkBytes, args: [b('SET'), b('key'), Buffer.alloc(0), b('EX'), b('10')] },
      cmd('GET', 'key'),
      cmd('PING'),
    ]);
    assert.equal(p.bufferedBytes, 0);
  });

  it('reports the first of several too large arguments and blanks them all', () => {
    const limits = { ...LIMITS, maxBulkBytes: 10 };
    const stream = Buffer.concat([mb('MSET', 'a', 'x'.repeat(11), 'b', 'y'.repeat(20)), mb('PING')]);
    const expected: RespEvent[] = [
      { type: 'tooLarge', argIndex: 2, size: 11, limit: 10, args: [b('MSET'), b('a'), Buffer.alloc(0), b('b'), Buffer.alloc(0)] },
      cmd('PING'),
    ];
    assert.deepEqual(feed([stream], limits), expected);
    assert.deepEqual(feed(bytewise(stream), limits), expected);
  });

  it('still checks the terminator of a discarded bulk', () => {
    const limits = { ...LIMITS, maxBulkBytes: 10 };
    assert.deepEqual(feed([b(`*1\r\n$11\r\n${'x'.repeat(11)}XY`)], limits), [perr('expected CRLF after bulk data')]);
  });
});

// ---------------------------------------------------------------------------

describe('encode', () => {
  const enc = (r: Reply): string => encode(r).toString('latin1');

  it('encodes simple strings, sanitising CR and LF', () => {
    assert.equal(enc({ simple: 'OK' }), '+OK\r\n');
    assert.equal(enc({ simple: 'a\r\nb' }), '+a  b\r\n');
  });

  it('encodes errors verbatim, sanitising CR and LF', () => {
    assert.equal(enc({ error: 'ERR unknown command' }), '-ERR unknown command\r\n');
    assert.equal(enc({ error: 'ERR bad\r\nthing\nhere\r' }), '-ERR bad  thing here \r\n');
    assert.equal(encodeError('wrong number of arguments').toString(), '-ERR wrong number of arguments\r\n');
    assert.equal(encodeError('Operation against a key\nholding the wrong kind of value', 'WRONGTYPE').toString(),
      '-WRONGTYPE Operation against a key holding the wrong kind of value\r\n');
    assert.equal(sanitizeLine('no newline'), 'no newline');
  });

  it('encodes integers', () => {
    assert.equal(enc({ int: 0 }), ':0\r\n');
    assert.equal(enc({ int: -0 }), ':0\r\n');
    assert.equal(enc({ int: 42 }), ':42\r\n');
    assert.equal(enc({ int: -7 }), ':-7\r\n');
    assert.equal(enc({ int: Number.MAX_SAFE_INTEGER }), ':9007199254740991\r\n');
    assert.equal(enc({ int: 2 ** 60 }), ':1152921504606846976\r\n');
    assert.equal(enc({ int: 2n ** 63n - 1n }), ':9223372036854775807\r\n');
    assert.equal(enc({ int: -(2n ** 63n) }), ':-9223372036854775808\r\n');
    assert.throws(() => encode({ int: 1.5 }), RangeError);
    assert.throws(() => encode({ int: NaN }), RangeError);
    assert.throws(() => encode({ int: 2n ** 63n }), RangeError);
  });

  it('encodes bulk strings with their byte length', () => {
    assert.equal(encode('héllo').toString('utf8'), '$6\r\nhéllo\r\n');
    assert.equal(enc(''), '$0\r\n\r\n');
    assert.equal(enc(Buffer.alloc(0)), '$0\r\n\r\n');
    assert.deepEqual(encode(Buffer.from([0x00, 0x0d, 0x0a, 0xff])), Buffer.from([0x24, 0x34, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0xff, 0x0d, 0x0a]));
    assert.deepEqual(encode(new Uint8Array([1, 2, 3])), Buffer.from('$3\r\n\x01\x02\x03\r\n', 'latin1'));
    assert.equal(enc(null), '$-1\r\n');
  });

  it('encodes large bulks without copying the data', () => {
    const data = Buffer.alloc(5000, 0x7a);
    const out: Buffer[] = [];
    encodeInto(out, data);
    assert.ok(out.includes(data));
    assert.deepEqual(Buffer.concat(out), Buffer.concat([b('$5000\r\n'), data, b('\r\n')]));
    const s = 'é'.repeat(3000);
    assert.deepEqual(encode(s), Buffer.concat([b('$6000\r\n'), Buffer.from(s, 'utf8'), b('\r\n')]));
  });

  it('encodes nested arrays, empty arrays and null arrays', () => {
    const reply: Reply = ['a', { int: 1 }, [null, { nullArray: true }, []], { simple: 'x' }, { error: 'ERR e' }, Buffer.from('bin\r\n')];
    assert.equal(enc(reply), '*6\r\n$1\r\na\r\n:1\r\n*3\r\n$-1\r\n*-1\r\n*0\r\n+x\r\n-ERR e\r\n$5\r\nbin\r\n\r\n');
    assert.equal(enc([]), '*0\r\n');
    assert.equal(enc({ nullArray: true }), '*-1\r\n');
  });

  it('encodeInto appends pieces that concatenate to encode()', () => {
    const out: Buffer[] = [];
    encodeInto(out, { simple: 'OK' });
    encodeInto(out, ['k', 'v']);
    encodeInto(out, { int: 3 });
    assert.equal(Buffer.concat(out).toString(), '+OK\r\n*2\r\n$1\r\nk\r\n$1\r\nv\r\n:3\r\n');
  });

  it('exports the usual constant replies', () => {
    assert.equal(OK.toString(), '+OK\r\n');
    assert.equal(PONG.toString(), '+PONG\r\n');
    assert.equal(QUEUED.toString(), '+QUEUED\r\n');
    assert.equal(NULL_BULK.toString(), '$-1\r\n');
    assert.equal(NULL_ARRAY.toString(), '*-1\r\n');
    assert.equal(EMPTY_ARRAY.toString(), '*0\r\n');
    assert.equal(ZERO.toString(), ':0\r\n');
    assert.equal(ONE.toString(), ':1\r\n');
  });

  it('round-trips an encoded array of bulks through the request parser', () => {
    const args = [Buffer.from('SET'), Buffer.from('ключ'), BINARY, Buffer.alloc(0), Buffer.alloc(3000, 0x0d)];
    const wire = encode(args);
    const expected = [cmd(...args)];
    assert.deepEqual(feed([wire]), expected);
    assert.deepEqual(feed(randomSplit(wire, prng(7))), expected);
  });

  it('builds replies from JS value trees', () => {
    assert.equal(encodeValue(null).toString(), '$-1\r\n');
    assert.equal(encodeValue(undefined).toString(), '$-1\r\n');
    assert.equal(encodeValue(true).toString(), ':1\r\n');
    assert.equal(encodeValue(false).toString(), ':0\r\n');
    assert.equal(encodeValue(12).toString(), ':12\r\n');
    assert.equal(encodeValue(10n).toString(), ':10\r\n');
    assert.equal(encodeValue(1.5).toString(), '$3\r\n1.5\r\n');
    assert.equal(encodeValue(-Infinity).toString(), '$4\r\n-inf\r\n');
    assert.equal(encodeValue(new Error('boom\nbang')).toString(), '-ERR boom bang\r\n');
    assert.equal(
      encodeValue(['a', [1, null], new Map<string, number | string>([['f1', 'v1'], ['f2', 2]]), { simple: 'OK' }, { error: 'WRONGTYPE x' }, []]).toString(),
      '*6\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n*4\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n:2\r\n+OK\r\n-WRONGTYPE x\r\n*0\r\n',
    );
    assert.deepEqual(toReply([Buffer.from('x'), { nullArray: true }]), [Buffer.from('x'), { nullArray: true }]);
  });
});
