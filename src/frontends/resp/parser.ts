/**
 * Incremental RESP2 request parser.
 *
 * Pure code: bytes in, events out, no sockets. Feed it whatever the transport
 * delivers (any split of the byte stream) and it returns the requests completed
 * by those bytes, in order. The result does not depend on how the stream is
 * split.
 *
 * Two request forms are accepted, as by Redis:
 *  - multibulk: `*<n>\r\n` followed by n × `$<len>\r\n<len bytes>\r\n`;
 *  - inline: one line of space-separated words ending in `\n` or `\r\n` (what a
 *    telnet user types), with Redis-style "double" and 'single' quoting.
 *
 * Memory: the parser never keeps a reference to a pushed chunk after `push`
 * returns. Arguments are copied out of the input, so a stored value does not pin
 * the (much larger) socket read buffer it arrived in. A bulk that arrives in
 * many chunks is accumulated into a buffer that grows geometrically up to its
 * declared length (linear total copying, no per-chunk objects). A bulk larger
 * than `maxBulkBytes` is skipped while it streams in and reported as `tooLarge`.
 */

export interface RespParserLimits {
  /** Largest single argument accepted; larger ones are discarded while streaming and reported as tooLarge. */
  maxBulkBytes: number;
  /** Maximum number of elements in one multibulk request. */
  maxArgs: number;
  /** Maximum length of an inline command line or of a `*`/`$` header line (terminator excluded). */
  maxInlineBytes: number;
  /** A bulk length above this is a protocol error (the connection must close). */
  maxBulkHardBytes: number;
}

export type RespEvent =
  /** A complete request. */
  | { type: 'command'; args: Buffer[] }
  /**
   * A complete request one of whose arguments exceeded maxBulkBytes. `argIndex`
   * and `size` describe the first such argument; every oversized argument is
   * replaced by an empty Buffer in `args`, the others are preserved.
   */
  | { type: 'tooLarge'; argIndex: number; size: number; limit: number; args: Buffer[] }
  /** Fatal: reply `-ERR Protocol error: <message>` and close. Further input is ignored. */
  | { type: 'protocolError'; message: string };

const CR = 0x0d;
const LF = 0x0a;
const STAR = 0x2a;
const DOLLAR = 0x24;
const MINUS = 0x2d;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;

const EMPTY = Buffer.alloc(0);

// Parser states.
const S_IDLE = 0; // between requests
const S_MB_HEADER = 1; // reading the `*<n>` line
const S_ARG_HEADER = 2; // reading a `$<len>` line
const S_ARG_DATA = 3; // reading (or discarding) bulk bytes
const S_ARG_CR = 4; // expecting the \r after bulk data
const S_ARG_LF = 5; // expecting the \n after bulk data
const S_INLINE = 6; // reading an inline command line
const S_DEAD = 7; // after a protocol error

/** Smallest capacity for a growing accumulator. */
const MIN_ACC = 256;

export class RespParser {
  private readonly maxBulkBytes: number;
  private readonly maxArgs: number;
  private readonly maxInlineBytes: number;
  private readonly maxBulkHardBytes: number;

  private state = S_IDLE;
  /** The chunk being parsed (only during push). */
  private buf: Buffer = EMPTY;
  private pos = 0;

  /** Partial line carried over between pushes. */
  private lineAcc: Buffer = EMPTY;
  private lineLen = 0;
  /** The line just read by readLine: lineBuf[lineStart, lineEnd), \n excluded. */
  private lineBuf: Buffer = EMPTY;
  private lineStart = 0;
  private lineEnd = 0;

  /** Current multibulk request. */
  private expected = 0;
  private args: Buffer[] = [];
  private argsBytes = 0;
  private tooLargeIndex = -1;
  private tooLargeSize = 0;

  /** Current bulk argument. */
  private bulkLen = 0;
  private bulkGot = 0;
  private bulkAcc: Buffer = EMPTY;
  private discarding = false;

  private events: RespEvent[] = [];

  constructor(limits: RespParserLimits) {
    for (const key of ['maxBulkBytes', 'maxArgs', 'maxInlineBytes', 'maxBulkHardBytes'] as const) {
      const v = limits[key];
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`RespParser: ${key} must be a non-negative integer`);
    }
    this.maxBulkBytes = limits.maxBulkBytes;
    this.maxArgs = limits.maxArgs;
    this.maxInlineBytes = limits.maxInlineBytes;
    this.maxBulkHardBytes = limits.maxBulkHardBytes;
  }

  /**
   * Bytes currently held for incomplete input: the buffers holding a partial
   * line and a partial bulk (allocated capacity, at most twice what has been
   * received; nothing for a bulk being discarded) and the arguments already
   * parsed for the request in progress. Callers can cap it (like Redis's
   * client-query-buffer-limit) to bound memory per connection.
   */
  get bufferedBytes(): number {
    return this.lineAcc.length + this.bulkAcc.length + this.argsBytes;
  }

  /** Feeds bytes; returns the events completed by them, in order. After a protocolError, further input is ignored (returns []). */
  push(chunk: Buffer): RespEvent[] {
    if (this.state === S_DEAD || chunk.length === 0) return [];
    this.buf = chunk;
    this.pos = 0;
    const events: RespEvent[] = [];
    this.events = events;
    try {
      this.run();
    } finally {
      // Every state consumes all the bytes it is given, so nothing of the chunk is kept.
      this.buf = EMPTY;
      this.pos = 0;
      this.events = [];
    }
    return events;
  }

  private run(): void {
    for (;;) {
      switch (this.state) {
        case S_IDLE: {
          if (this.pos >= this.buf.length) return;
          this.state = this.buf[this.pos] === STAR ? S_MB_HEADER : S_INLINE;
          break;
        }

        case S_MB_HEADER: {
          if (!this.readLine('too big mbulk count string')) return;
          const n = parseHeaderNumber(this.lineBuf, this.lineStart, this.lineEnd);
          if (Number.isNaN(n) || n < -1 || n > this.maxArgs) return this.fail('invalid multibulk length');
          if (n <= 0) {
            this.state = S_IDLE; // *0 and *-1: nothing to do
            break;
          }
          this.expected = n;
          this.args = [];
          this.argsBytes = 0;
          this.tooLargeIndex = -1;
          this.state = S_ARG_HEADER;
          break;
        }

        case S_ARG_HEADER: {
          if (this.lineLen === 0) {
            // Check the type byte as soon as it is there, whatever follows.
            if (this.pos >= this.buf.length) return;
            const c = this.buf[this.pos] as number;
            if (c !== DOLLAR) return this.fail(`expected '$', got '${printableByte(c)}'`);
          }
          if (!this.readLine('too big bulk count string')) return;
          const len = parseHeaderNumber(this.lineBuf, this.lineStart, this.lineEnd);
          if (Number.isNaN(len) || len < -1 || len > this.maxBulkHardBytes) return this.fail('invalid bulk length');
          if (len === -1) {
            // A null bulk has no payload; as a request argument it is taken as empty.
            this.addArg(EMPTY);
            break;
          }
          if (len > this.maxBulkBytes) {
            if (this.tooLargeIndex < 0) {
              this.tooLargeIndex = this.args.length;
              this.tooLargeSize = len;
            }
            this.discarding = true;
            this.bulkLen = len;
            this.bulkGot = 0;
            this.state = S_ARG_DATA;
            break;
          }
          const buf = this.buf;
          const pos = this.pos;
          if (buf.length - pos >= len + 2) {
            // Fast path: the whole bulk and its terminator are in this chunk.
            if (buf[pos + len] !== CR || buf[pos + len + 1] !== LF) return this.fail('expected CRLF after bulk data');
            this.pos = pos + len + 2;
            this.addArg(len === 0 ? EMPTY : copyOut(buf, pos, pos + len));
            break;
          }
          this.discarding = false;
          this.bulkLen = len;
          this.bulkGot = 0;
          this.bulkAcc = EMPTY;
          this.state = S_ARG_DATA;
          break;
        }

        case S_ARG_DATA: {
          const avail = this.buf.length - this.pos;
          const take = Math.min(avail, this.bulkLen - this.bulkGot);
          if (take > 0) {
            if (!this.discarding) this.appendBulk(this.pos, this.pos + take);
            this.bulkGot += take;
            this.pos += take;
          }
          if (this.bulkGot < this.bulkLen) return;
          this.state = S_ARG_CR;
          break;
        }

        case S_ARG_CR: {
          if (this.pos >= this.buf.length) return;
          if (this.buf[this.pos] !== CR) return this.fail('expected CRLF after bulk data');
          this.pos++;
          this.state = S_ARG_LF;
          break;
        }

        case S_ARG_LF: {
          if (this.pos >= this.buf.length) return;
          if (this.buf[this.pos] !== LF) return this.fail('expected CRLF after bulk data');
          this.pos++;
          let arg: Buffer;
          if (this.discarding) {
            arg = EMPTY;
            this.discarding = false;
          } else {
            arg = this.bulkLen === 0 ? EMPTY : this.bulkAcc; // capacity == bulkLen once complete
          }
          this.bulkAcc = EMPTY;
          this.bulkGot = 0;
          this.bulkLen = 0;
          this.addArg(arg);
          break;
        }

        case S_INLINE: {
          if (!this.readLine('too big inline request')) return;
          const b = this.lineBuf;
          let end = this.lineEnd;
          if (end > this.lineStart && b[end - 1] === CR) end--;
          const args = splitInline(b, this.lineStart, end);
          if (args === null) return this.fail('unbalanced quotes in request');
          this.state = S_IDLE;
          if (args.length > 0) this.events.push({ type: 'command', args });
          break;
        }

        default: // S_DEAD
          return;
      }
    }
  }

  /**
   * Reads one \n-terminated line into lineBuf[lineStart, lineEnd) (\n excluded,
   * a preceding \r kept). Returns false if more input is needed or the line is
   * too long (then the parser is dead). A line is too long when its content,
   * without \r\n or \n, exceeds maxInlineBytes: the verdict does not depend on
   * how the input is split.
   */
  private readLine(tooBig: string): boolean {
    const buf = this.buf;
    const pos = this.pos;
    const max = this.maxInlineBytes;
    const nl = buf.indexOf(LF, pos);
    if (nl === -1) {
      const n = buf.length - pos;
      // Even if the last byte is a \r, the content is already longer than allowed.
      if (this.lineLen + n > max + 1) {
        this.fail(tooBig);
        return false;
      }
      this.appendLine(pos, buf.length);
      this.pos = buf.length;
      return false;
    }
    if (this.lineLen === 0) {
      this.lineBuf = buf;
      this.lineStart = pos;
      this.lineEnd = nl;
    } else {
      if (this.lineLen + (nl - pos) > max + 1) {
        this.fail(tooBig);
        return false;
      }
      this.appendLine(pos, nl);
      this.lineBuf = this.lineAcc;
      this.lineStart = 0;
      this.lineEnd = this.lineLen;
      this.lineAcc = EMPTY;
      this.lineLen = 0;
    }
    this.pos = nl + 1;
    let content = this.lineEnd - this.lineStart;
    if (content > 0 && this.lineBuf[this.lineEnd - 1] === CR) content--;
    if (content > max) {
      this.fail(tooBig);
      return false;
    }
    return true;
  }

  private appendLine(start: number, end: number): void {
    const n = end - start;
    if (n === 0) return;
    const need = this.lineLen + n;
    if (need > this.lineAcc.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.lineAcc.length * 2, MIN_ACC));
      this.lineAcc.copy(grown, 0, 0, this.lineLen);
      this.lineAcc = grown;
    }
    this.buf.copy(this.lineAcc, this.lineLen, start, end);
    this.lineLen = need;
  }

  /** Appends buf[start, end) to the bulk accumulator, growing it geometrically but never past bulkLen. */
  private appendBulk(start: number, end: number): void {
    const need = this.bulkGot + (end - start);
    if (need > this.bulkAcc.length) {
      const cap = Math.min(this.bulkLen, Math.max(need, this.bulkAcc.length * 2, MIN_ACC));
      const grown = Buffer.allocUnsafe(cap);
      this.bulkAcc.copy(grown, 0, 0, this.bulkGot);
      this.bulkAcc = grown;
    }
    this.buf.copy(this.bulkAcc, this.bulkGot, start, end);
  }

  private addArg(arg: Buffer): void {
    this.args.push(arg);
    this.argsBytes += arg.length;
    if (this.args.length < this.expected) {
      this.state = S_ARG_HEADER;
      return;
    }
    const args = this.args;
    if (this.tooLargeIndex >= 0) {
      this.events.push({ type: 'tooLarge', argIndex: this.tooLargeIndex, size: this.tooLargeSize, limit: this.maxBulkBytes, args });
    } else {
      this.events.push({ type: 'command', args });
    }
    this.args = [];
    this.argsBytes = 0;
    this.expected = 0;
    this.tooLargeIndex = -1;
    this.tooLargeSize = 0;
    this.state = S_IDLE;
  }

  private fail(message: string): void {
    this.state = S_DEAD;
    this.events.push({ type: 'protocolError', message });
    this.lineAcc = EMPTY;
    this.lineLen = 0;
    this.lineBuf = EMPTY;
    this.bulkAcc = EMPTY;
    this.bulkGot = 0;
    this.discarding = false;
    this.args = [];
    this.argsBytes = 0;
  }
}

/**
 * Parses the number of a `*<n>\r` / `$<n>\r` line held in b[start, end) (type
 * byte included, \n excluded). The line must end in \r. The number follows
 * Redis's string2ll: optional '-', no '+', no leading zeros, no "-0". Returns
 * NaN if malformed; numbers of more than 15 digits are rejected too (they are
 * far above any limit).
 */
function parseHeaderNumber(b: Buffer, start: number, end: number): number {
  if (end - start < 3 || b[end - 1] !== CR) return NaN;
  let p = start + 1;
  const e = end - 1;
  let negative = false;
  if (b[p] === MINUS) {
    negative = true;
    p++;
  }
  const digits = e - p;
  if (digits < 1 || digits > 15) return NaN;
  const first = (b[p] as number) - 0x30;
  if (first < 0 || first > 9) return NaN;
  if (first === 0) return digits === 1 && !negative ? 0 : NaN;
  let v = first;
  for (p++; p < e; p++) {
    const d = (b[p] as number) - 0x30;
    if (d < 0 || d > 9) return NaN;
    v = v * 10 + d;
  }
  return negative ? -v : v;
}

function copyOut(b: Buffer, start: number, end: number): Buffer {
  const out = Buffer.allocUnsafe(end - start);
  b.copy(out, 0, start, end);
  return out;
}

function printableByte(c: number): string {
  return c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
}

function isSpace(c: number): boolean {
  // isspace(): space, \t, \n, \v, \f, \r
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Splits an inline command line b[start, end) into arguments the way Redis's
 * sdssplitargs does: words separated by whitespace; "double quotes" with the
 * escapes \xHH \n \r \t \b \a and \<any> (the character itself); 'single
 * quotes' with \' only. A quote may start inside a word (foo"bar baz" is one
 * argument), and a closing quote must be followed by whitespace or the end of
 * the line. Returns null for unbalanced quotes.
 */
function splitInline(b: Buffer, start: number, end: number): Buffer[] | null {
  const out: Buffer[] = [];
  let p = start;
  for (;;) {
    while (p < end && isSpace(b[p] as number)) p++;
    if (p >= end) return out;

    // Fast path: a plain word.
    let q = p;
    for (; q < end; q++) {
      const c = b[q] as number;
      if (isSpace(c) || c === DQUOTE || c === SQUOTE) break;
    }
    if (q >= end || isSpace(b[q] as number)) {
      out.push(copyOut(b, p, q));
      p = q;
      continue;
    }

    // Slow path: the word contains quotes.
    const bytes: number[] = [];
    for (let i = p; i < q; i++) bytes.push(b[i] as number);
    p = q;
    let inDouble = false;
    let inSingle = false;
    for (;;) {
      if (inDouble) {
        if (p >= end) return null;
        const c = b[p] as number;
        if (c === BACKSLASH && p + 3 < end && b[p + 1] === 0x78 && hexVal(b[p + 2] as number) >= 0 && hexVal(b[p + 3] as number) >= 0) {
          bytes.push(hexVal(b[p + 2] as number) * 16 + hexVal(b[p + 3] as number));
          p += 4;
        } else if (c === BACKSLASH && p + 1 < end) {
          const e = b[p + 1] as number;
          switch (e) {
            case 0x6e: bytes.push(0x0a); break; // \n
            case 0x72: bytes.push(0x0d); break; // \r
            case 0x74: bytes.push(0x09); break; // \t
            case 0x62: bytes.push(0x08); break; // \b
            case 0x61: bytes.push(0x07); break; // \a
            default: bytes.push(e);
          }
          p += 2;
        } else if (c === DQUOTE) {
          if (p + 1 < end && !isSpace(b[p + 1] as number)) return null;
          p++;
          break;
        } else {
          bytes.push(c);
          p++;
        }
      } else if (inSingle) {
        if (p >= end) return null;
        const c = b[p] as number;
        if (c === BACKSLASH && p + 1 < end && b[p + 1] === SQUOTE) {
          bytes.push(SQUOTE);
          p += 2;
        } else if (c === SQUOTE) {
          if (p + 1 < end && !isSpace(b[p + 1] as number)) return null;
          p++;
          break;
        } else {
          bytes.push(c);
          p++;
        }
      } else {
        if (p >= end) break;
        const c = b[p] as number;
        if (isSpace(c)) break;
        if (c === DQUOTE) inDouble = true;
        else if (c === SQUOTE) inSingle = true;
        else bytes.push(c);
        p++;
      }
    }
    out.push(Buffer.from(bytes));
  }
}
