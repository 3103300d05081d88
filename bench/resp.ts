import { connect } from 'node:net';
import type { Socket } from 'node:net';

/**
 * A minimal pipelining RESP2 client for the benchmark: every command is written at once
 * (commands issued in one event-loop turn go out in one write), replies are matched in FIFO
 * order. No reconnection, no offline queue: a closed connection fails every pending command
 * and every later one. Much cheaper per command than a full client library, so the load
 * generator takes less CPU from the servers it measures (see docs/benchmarks.md).
 */
export type RespValue = string | number | Buffer | null | RespError | RespValue[];

export class RespError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RespError';
  }
}

interface Pending {
  resolve: (v: RespValue) => void;
  reject: (e: Error) => void;
}

const CRLF = Buffer.from('\r\n');

/** One RESP command as bytes: an array of bulk strings. */
export function encodeCommand(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a;
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF);
  }
  return Buffer.concat(parts);
}

/** Incremental RESP2 reply parser. Returns undefined when the buffer holds no complete reply. */
class Parser {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;

  push(chunk: Buffer): void {
    if (this.pos >= this.buf.length) {
      this.buf = chunk;
    } else {
      this.buf = Buffer.concat([this.buf.subarray(this.pos), chunk]);
    }
    this.pos = 0;
  }

  /** The next complete reply, or undefined (position unchanged) if more bytes are needed. */
  next(): { value: RespValue } | undefined {
    const start = this.pos;
    const r = this.parse();
    if (r === undefined) this.pos = start;
    return r;
  }

  private line(): string | undefined {
    const end = this.buf.indexOf(13, this.pos); // \r
    if (end < 0 || end + 1 >= this.buf.length) return undefined;
    const s = this.buf.toString('latin1', this.pos, end);
    this.pos = end + 2;
    return s;
  }

  private parse(): { value: RespValue } | undefined {
    if (this.pos >= this.buf.length) return undefined;
    const type = this.buf[this.pos]!;
    this.pos++;
    const l = this.line();
    if (l === undefined) return undefined;
    switch (type) {
      case 43: // +
        return { value: l };
      case 45: // -
        return { value: new RespError(l) };
      case 58: // :
        return { value: Number(l) };
      case 36: {
        // $
        const n = Number(l);
        if (n < 0) return { value: null };
        if (this.pos + n + 2 > this.buf.length) return undefined;
        const v = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
        this.pos += n + 2;
        return { value: v };
      }
      case 42: {
        // *
        const n = Number(l);
        if (n < 0) return { value: null };
        const items: RespValue[] = [];
        for (let i = 0; i < n; i++) {
          const r = this.parse();
          if (r === undefined) return undefined;
          items.push(r.value);
        }
        return { value: items };
      }
      default:
        throw new Error(`bad RESP reply type byte ${type}`);
    }
  }
}

export class RespConnection {
  private readonly socket: Socket;
  private readonly pending: (Pending | undefined)[] = [];
  private head = 0;
  private readonly parser = new Parser();
  private closedError: Error | undefined;
  private corked = false;
  readonly ready: Promise<void>;

  constructor(readonly host: string, readonly port: number) {
    this.socket = connect({ host, port, noDelay: true });
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => this.fail(new Error(`connection to ${host}:${port} closed`)));
  }

  static async open(host: string, port: number): Promise<RespConnection> {
    const c = new RespConnection(host, port);
    await c.ready;
    return c;
  }

  get inFlight(): number {
    return this.pending.length - this.head;
  }

  /** Sends a command; resolves with its reply (a RespError reply resolves, it does not reject). */
  send(args: readonly (string | Buffer)[]): Promise<RespValue> {
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    return new Promise<RespValue>((resolve, reject) => {
      this.pending.push({ resolve, reject });
      if (!this.corked) {
        this.corked = true;
        this.socket.cork();
        process.nextTick(() => {
          this.corked = false;
          this.socket.uncork();
        });
      }
      this.socket.write(encodeCommand(args));
    });
  }

  /** Like send, but a RespError reply rejects. */
  async call(args: readonly (string | Buffer)[]): Promise<RespValue> {
    const v = await this.send(args);
    if (v instanceof RespError) throw v;
    return v;
  }

  close(): void {
    this.socket.destroy();
    this.fail(new Error('connection closed by the client'));
  }

  private onData(chunk: Buffer): void {
    this.parser.push(chunk);
    for (;;) {
      let r: { value: RespValue } | undefined;
      try {
        r = this.parser.next();
      } catch (err) {
        this.socket.destroy();
        this.fail(err as Error);
        return;
      }
      if (r === undefined) return;
      const p = this.pending[this.head];
      if (p === undefined) {
        this.socket.destroy();
        this.fail(new Error('reply without a pending command'));
        return;
      }
      this.pending[this.head] = undefined;
      this.head++;
      if (this.head > 1024 && this.head * 2 > this.pending.length) {
        this.pending.splice(0, this.head);
        this.head = 0;
      }
      p.resolve(r.value);
    }
  }

  private fail(err: Error): void {
    if (this.closedError === undefined) this.closedError = err;
    const waiting = this.pending.splice(this.head);
    this.pending.length = 0;
    this.head = 0;
    for (const p of waiting) p?.reject(err);
  }
}
