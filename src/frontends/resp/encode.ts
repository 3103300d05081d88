/**
 * RESP2 reply encoders. Pure code: replies in, bytes out.
 *
 * `encodeInto` appends the pieces of a reply to an output list (for writev or
 * one Buffer.concat per batch of pipelined replies); `encode` returns a single
 * Buffer. Large Buffers are passed through without copying; small pieces are
 * merged so a reply is few Buffers.
 */

/**
 * A RESP2 reply.
 *  - `{ simple }`: simple string `+...` (\r and \n are replaced by spaces);
 *  - `{ error }`: error `-...`, written verbatim after the '-', so it should start
 *    with the error code (`'ERR unknown command'`, `'WRONGTYPE ...'`); \r and \n
 *    are replaced by spaces;
 *  - `{ int }`: integer `:n` (a number must be an integer; int64 range);
 *  - Buffer / Uint8Array / string: bulk string (strings are UTF-8, the length is the byte length);
 *  - null: null bulk `$-1`;
 *  - array: multibulk of nested replies; `{ nullArray: true }`: null array `*-1`.
 */
export type Reply =
  | { simple: string }
  | { error: string }
  | { int: number | bigint }
  | { nullArray: true }
  | Buffer
  | Uint8Array
  | string
  | null
  | readonly Reply[];

export const OK: Buffer = Buffer.from('+OK\r\n', 'latin1');
export const PONG: Buffer = Buffer.from('+PONG\r\n', 'latin1');
export const QUEUED: Buffer = Buffer.from('+QUEUED\r\n', 'latin1');
export const NULL_BULK: Buffer = Buffer.from('$-1\r\n', 'latin1');
export const NULL_ARRAY: Buffer = Buffer.from('*-1\r\n', 'latin1');
export const EMPTY_ARRAY: Buffer = Buffer.from('*0\r\n', 'latin1');
export const ZERO: Buffer = Buffer.from(':0\r\n', 'latin1');
export const ONE: Buffer = Buffer.from(':1\r\n', 'latin1');

const CRLF = Buffer.from('\r\n', 'latin1');
/** Bulks up to this size are copied into one Buffer with their header; larger ones are passed by reference. */
const INLINE_BULK_MAX = 1024;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** Replaces \r and \n (which would end the line early and desynchronise the client) by spaces. */
export function sanitizeLine(s: string): string {
  return s.includes('\r') || s.includes('\n') ? s.replace(/[\r\n]/g, ' ') : s;
}

function formatInt(n: number | bigint): string {
  if (typeof n === 'number') {
    if (Number.isSafeInteger(n)) return String(n === 0 ? 0 : n); // no "-0"
    if (!Number.isInteger(n)) throw new RangeError(`RESP integer reply must be an integer, got ${n}`);
    n = BigInt(n);
  }
  if (n < INT64_MIN || n > INT64_MAX) throw new RangeError(`RESP integer reply out of int64 range: ${n}`);
  return n.toString();
}

/** Appends the bytes of `reply` to `out` as one or more Buffers (which must not be modified). */
export function encodeInto(out: Buffer[], reply: Reply): void {
  if (reply === null) {
    out.push(NULL_BULK);
  } else if (typeof reply === 'string') {
    const n = Buffer.byteLength(reply, 'utf8');
    if (n <= INLINE_BULK_MAX) {
      out.push(Buffer.from(`$${n}\r\n${reply}\r\n`, 'utf8'));
    } else {
      out.push(Buffer.from(`$${n}\r\n`, 'latin1'), Buffer.from(reply, 'utf8'), CRLF);
    }
  } else if (reply instanceof Uint8Array) {
    const data = Buffer.isBuffer(reply) ? reply : Buffer.from(reply.buffer, reply.byteOffset, reply.byteLength);
    const n = data.length;
    if (n <= INLINE_BULK_MAX) {
      const head = `$${n}\r\n`;
      const b = Buffer.allocUnsafe(head.length + n + 2);
      b.write(head, 0, 'latin1');
      data.copy(b, head.length);
      b[b.length - 2] = 0x0d;
      b[b.length - 1] = 0x0a;
      out.push(b);
    } else {
      out.push(Buffer.from(`$${n}\r\n`, 'latin1'), data, CRLF);
    }
  } else if (Array.isArray(reply)) {
    // (Array.isArray does not narrow readonly arrays, hence the explicit type.)
    const items: readonly Reply[] = reply;
    if (items.length === 0) {
      out.push(EMPTY_ARRAY);
      return;
    }
    out.push(Buffer.from(`*${items.length}\r\n`, 'latin1'));
    for (const item of items) encodeInto(out, item);
  } else if ('simple' in reply) {
    out.push(Buffer.from(`+${sanitizeLine(reply.simple)}\r\n`, 'utf8'));
  } else if ('error' in reply) {
    out.push(Buffer.from(`-${sanitizeLine(reply.error)}\r\n`, 'utf8'));
  } else if ('int' in reply) {
    out.push(Buffer.from(`:${formatInt(reply.int)}\r\n`, 'latin1'));
  } else if ('nullArray' in reply) {
    out.push(NULL_ARRAY);
  } else {
    throw new TypeError('not a RESP reply');
  }
}

/** Encodes one reply as a single Buffer (possibly a shared constant: do not modify it). */
export function encode(reply: Reply): Buffer {
  const out: Buffer[] = [];
  encodeInto(out, reply);
  return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
}

/** Encodes an error reply from a code and a message: `-CODE message`. */
export function encodeError(message: string, code = 'ERR'): Buffer {
  return encode({ error: `${code} ${message}` });
}

/**
 * A JS value tree that `toReply` maps onto a reply:
 *  - string / Buffer / Uint8Array → bulk string; null / undefined → null bulk;
 *  - integer number or bigint → integer; true / false → :1 / :0;
 *  - other numbers → bulk string ("1.5", "inf", "-inf", "nan"), as Redis replies floats;
 *  - Error → `-ERR <message>` (use a `{ error }` reply for other codes);
 *  - array → array; Map → flat array of key, value, key, value… (as HGETALL in RESP2);
 *  - a tagged reply (`{ simple }`, `{ error }`, `{ int }`, `{ nullArray }`) is taken as is.
 */
export type ReplyValue =
  | string
  | Uint8Array
  | number
  | bigint
  | boolean
  | null
  | undefined
  | Error
  | { simple: string }
  | { error: string }
  | { int: number | bigint }
  | { nullArray: true }
  | readonly ReplyValue[]
  | ReadonlyMap<ReplyValue, ReplyValue>;

function formatFloat(n: number): string {
  if (Number.isNaN(n)) return 'nan';
  if (n === Infinity) return 'inf';
  if (n === -Infinity) return '-inf';
  return String(n);
}

/** Builds a reply from a JS value tree (see ReplyValue). */
export function toReply(value: ReplyValue): Reply {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
      return Number.isInteger(value) ? { int: value } : formatFloat(value);
    case 'bigint':
      return { int: value };
    case 'boolean':
      return { int: value ? 1 : 0 };
  }
  if (value instanceof Uint8Array) return value;
  if (value instanceof Error) return { error: `ERR ${value.message}` };
  if (Array.isArray(value)) {
    const items: readonly ReplyValue[] = value;
    return items.map(toReply);
  }
  if (value instanceof Map) {
    const flat: Reply[] = [];
    for (const [k, v] of value as ReadonlyMap<ReplyValue, ReplyValue>) flat.push(toReply(k), toReply(v));
    return flat;
  }
  if ('simple' in value || 'error' in value || 'int' in value || 'nullArray' in value) return value;
  throw new TypeError('value cannot be encoded as a RESP reply');
}

/** encode(toReply(value)). */
export function encodeValue(value: ReplyValue): Buffer {
  return encode(toReply(value));
}
