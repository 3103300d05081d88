import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import { ErrorCodes, KvError } from '../../core/errors.ts';
import type { ErrorCode } from '../../core/errors.ts';
import type { KvApi, Page } from '../../runtime/api.ts';
import { MAX_PAGE } from '../../runtime/api.ts';
import { encode, encodeError, EMPTY_ARRAY, NULL_BULK, OK, PONG } from './encode.ts';
import type { Reply } from './encode.ts';
import { RespParser } from './parser.ts';
import { listen } from '../listen.ts';

/**
 * The Redis protocol (RESP2) front end, so that redis-cli and Redis client libraries work.
 * Replies go out in request order (pipelining), whatever order the cluster answers in.
 * See docs/api.md for the command list and what differs from Redis.
 */

/** Error code -> RESP error prefix, in one table. */
const RESP_ERROR_PREFIX: Record<ErrorCode, string> = {
  [ErrorCodes.TIMEOUT]: 'TIMEOUT',
  [ErrorCodes.UNAVAILABLE]: 'UNAVAILABLE',
  [ErrorCodes.TOO_LARGE]: 'ERR',
  [ErrorCodes.BAD_REQUEST]: 'ERR',
  [ErrorCodes.SHUTTING_DOWN]: 'SHUTDOWN',
};

/** Most replies a connection may have outstanding before we stop reading from it. */
const MAX_INFLIGHT = 4096;

class RespError extends Error {
  constructor(
    message: string,
    readonly prefix = 'ERR',
  ) {
    super(message);
  }
}

type Handler = (args: Buffer[], conn: Conn) => Reply | Buffer | Promise<Reply | Buffer>;

/** Where a command's keys are, as in Redis's command table: args[first..last] every `step`; last < 0 counts from the end. */
interface KeySpec {
  first: number;
  last: number;
  step: number;
}

interface CommandSpec {
  handler: Handler;
  /** Redis arity: positive = exact count (command name included), negative = at least -arity. */
  arity: number;
  flags: string[];
  /** The key arguments; a data command ('readonly' or 'write') without them spans the whole keyspace. */
  keys?: KeySpec;
}

function isKeyArg(spec: KeySpec, index: number, argc: number): boolean {
  const last = spec.last < 0 ? argc + spec.last : spec.last;
  return index >= spec.first && index <= last && (index - spec.first) % spec.step === 0;
}

function keyArgs(spec: KeySpec, args: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (let i = spec.first; i < args.length; i += spec.step) if (isKeyArg(spec, i, args.length)) out.push(args[i]!);
  return out;
}

/**
 * Per-connection command order. Redis runs a connection's commands one after another, so a
 * pipelined `SET k v` then `GET k` reads v. Here a connection's commands run concurrently (the
 * cluster may answer them in any order), except that a data command first waits for the
 * earlier commands of its connection that are still running and share one of its keys; a
 * command that spans the whole keyspace (FLUSHALL, SCAN...) waits for, and is waited for by,
 * every data command.
 */
class CommandOrder {
  private readonly byKey = new Map<string, Promise<unknown>>();
  private readonly running = new Set<Promise<unknown>>();
  private wide: Promise<unknown> | null = null;

  /** The running commands a command on `keys` (null: the whole keyspace) must wait for. */
  before(keys: Buffer[] | null): Promise<unknown>[] {
    if (keys === null) return [...this.running];
    const out: Promise<unknown>[] = [];
    if (this.wide !== null) out.push(this.wide);
    for (const k of keys) {
      const p = this.byKey.get(k.toString('latin1'));
      if (p !== undefined) out.push(p);
    }
    return out;
  }

  /** Records a running command until `done` (which never rejects) settles. */
  track(keys: Buffer[] | null, done: Promise<unknown>): void {
    const names = keys === null ? [] : keys.map((k) => k.toString('latin1'));
    this.running.add(done);
    if (keys === null) this.wide = done;
    for (const k of names) this.byKey.set(k, done);
    const forget = (): void => {
      this.running.delete(done);
      if (this.wide === done) this.wide = null;
      for (const k of names) if (this.byKey.get(k) === done) this.byKey.delete(k);
    };
    done.then(forget, forget);
  }
}

interface Conn {
  socket: Socket;
  /** Per-server connection number, from 1 (CLIENT ID, HELLO's id). */
  id: number;
  name: string | null;
  closing: boolean;
  order: CommandOrder;
}

/** Numeric SCAN cursors (redis-cli parses them as integers) mapped to our opaque cursors. */
class CursorTable {
  private next = 1;
  private readonly map = new Map<number, string>();
  constructor(private readonly capacity = 10_000) {}
  put(cursor: string | null): string {
    if (cursor === null) return '0';
    const id = this.next++;
    this.map.set(id, cursor);
    if (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value!);
    return String(id);
  }
  get(arg: Buffer): string | null {
    const s = arg.toString('latin1');
    if (s === '0') return null;
    const c = /^\d+$/.test(s) ? this.map.get(Number(s)) : undefined;
    if (c === undefined) throw new RespError('invalid cursor (unknown or expired)');
    return c;
  }
}

/** Redis-style glob (*, ?, [abc], [^a], [a-z], \x) to a RegExp over latin1 strings. */
export function globToRegExp(pattern: string): RegExp {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[\\s\\S]*';
    else if (c === '?') re += '[\\s\\S]';
    else if (c === '\\' && i + 1 < pattern.length) re += escapeRe(pattern[++i]!);
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith('^');
      if (negate) body = body.slice(1);
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]]/g, (m) => '\\' + m)}]`;
      i = end;
    } else re += escapeRe(c);
  }
  return new RegExp(re + '$');
}

function escapeRe(c: string): string {
  return /[.*+?^${}()|[\]\\/]/.test(c) ? '\\' + c : c;
}

function parseCount(args: Buffer[], from: number): { count: number; match: RegExp | null } {
  let count = 10;
  let match: RegExp | null = null;
  for (let i = from; i < args.length; i += 2) {
    const opt = args[i]!.toString('latin1').toUpperCase();
    const val = args[i + 1];
    if (val === undefined) throw new RespError('syntax error');
    if (opt === 'COUNT') {
      count = Number(val.toString('latin1'));
      if (!Number.isInteger(count) || count < 1) throw new RespError('value is not an integer or out of range');
      count = Math.min(count, MAX_PAGE);
    } else if (opt === 'MATCH') match = globToRegExp(val.toString('latin1'));
    else if (opt === 'TYPE') {
      if (val.toString('latin1').toLowerCase() !== 'string') throw new RespError('only TYPE string exists here');
    } else throw new RespError('syntax error');
  }
  return { count, match };
}

export interface RespServerOptions {
  host: string;
  port: number;
  logger: Logger;
  version: string;
}

export class RespServer {
  private readonly server: Server;
  private readonly commands = new Map<string, CommandSpec>();
  private readonly cursors = new CursorTable();
  private readonly conns = new Set<Socket>();
  private readonly log: Logger;
  private nextConnId = 1;
  stats = { connections: 0, commands: 0, errors: 0 };

  constructor(
    private readonly api: KvApi,
    private readonly opts: RespServerOptions,
  ) {
    this.log = opts.logger;
    this.register();
    this.server = createServer((socket) => this.onConnection(socket));
  }

  listen(): Promise<number> {
    return listen(this.server, this.opts.host, this.opts.port);
  }

  close(): Promise<void> {
    for (const s of this.conns) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(socket: Socket): void {
    this.stats.connections++;
    this.conns.add(socket);
    socket.setNoDelay(true);
    const conn: Conn = { socket, id: this.nextConnId++, name: null, closing: false, order: new CommandOrder() };
    const maxBulk = Math.max(this.api.maxValueBytes, this.api.maxKeyBytes) + 1024;
    const parser = new RespParser({
      maxBulkBytes: maxBulk,
      maxArgs: 1_048_576,
      maxInlineBytes: 64 * 1024,
      maxBulkHardBytes: 512 * 1024 * 1024,
    });
    // Replies in request order: each command gets a slot; slots are written from the front
    // as soon as they are filled.
    const slots: (Buffer | undefined)[] = [];
    let head = 0;
    let paused = false;
    const flush = (): void => {
      const out: Buffer[] = [];
      while (head < slots.length && slots[head] !== undefined) {
        out.push(slots[head]!);
        slots[head] = undefined;
        head++;
      }
      if (head === slots.length) {
        slots.length = 0;
        head = 0;
      }
      if (out.length > 0 && !socket.destroyed) socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
      if (conn.closing && slots.length === 0) socket.end();
      if (paused && slots.length - head < MAX_INFLIGHT / 2) {
        paused = false;
        socket.resume();
      }
    };
    // Replies that complete in the same turn go out in one write: the flush runs after the
    // microtask queue has drained (every reply the node released in that turn is in place).
    let flushQueued = false;
    const flushAfterTurn = (): void => {
      flushQueued = false;
      flush();
    };
    const submit = (reply: Buffer | Promise<Buffer>): void => {
      const i = slots.length;
      slots.push(undefined);
      if (reply instanceof Promise) {
        void reply.then((b) => {
          slots[i] = b;
          if (!flushQueued) {
            flushQueued = true;
            process.nextTick(flushAfterTurn);
          }
        });
      } else {
        slots[i] = reply;
      }
    };
    socket.on('data', (chunk: Buffer) => {
      if (conn.closing) return;
      for (const ev of parser.push(chunk)) {
        if (ev.type === 'protocolError') {
          this.stats.errors++;
          this.log.debug({ remote: socket.remoteAddress, error: ev.message }, 'RESP protocol error; closing connection');
          submit(encodeError(`Protocol error: ${ev.message}`));
          conn.closing = true;
          break;
        }
        if (ev.type === 'tooLarge') {
          this.stats.errors++;
          const keys = this.commands.get(ev.args[0]!.toString('latin1').toUpperCase())?.keys;
          submit(
            encodeError(
              keys !== undefined && isKeyArg(keys, ev.argIndex, ev.args.length)
                ? `key of ${ev.size} bytes exceeds the limit of ${this.api.maxKeyBytes} bytes (maxKeyBytes)`
                : `argument of ${ev.size} bytes exceeds the limit of ${this.api.maxValueBytes} bytes (maxValueBytes)`,
            ),
          );
          continue;
        }
        submit(this.execute(ev.args, conn));
        if (conn.closing) break;
      }
      flush();
      if (!paused && slots.length - head >= MAX_INFLIGHT) {
        paused = true;
        socket.pause();
      }
    });
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'RESP connection error'));
    socket.on('close', () => this.conns.delete(socket));
  }

  private execute(args: Buffer[], conn: Conn): Buffer | Promise<Buffer> {
    this.stats.commands++;
    const name = args[0]!.toString('latin1').toUpperCase();
    const spec = this.commands.get(name);
    if (spec === undefined) {
      const shown = args.slice(1, 4).map((a) => `'${a.toString('utf8').slice(0, 40)}'`).join(' ');
      return encodeError(`unknown command '${args[0]!.toString('utf8').slice(0, 64)}', with args beginning with: ${shown}`);
    }
    if (spec.arity > 0 ? args.length !== spec.arity : args.length < -spec.arity) {
      return encodeError(`wrong number of arguments for '${name.toLowerCase()}' command`);
    }
    if (!spec.flags.includes('readonly') && !spec.flags.includes('write')) return this.run(spec, args, conn);
    const keys = spec.keys === undefined ? null : keyArgs(spec.keys, args);
    const earlier = conn.order.before(keys);
    const reply = earlier.length === 0 ? this.run(spec, args, conn) : Promise.all(earlier).then(() => this.run(spec, args, conn));
    if (reply instanceof Promise) conn.order.track(keys, reply);
    return reply;
  }

  private run(spec: CommandSpec, args: Buffer[], conn: Conn): Buffer | Promise<Buffer> {
    try {
      const r = spec.handler(args, conn);
      if (r instanceof Promise) return r.then((x) => this.toBuffer(x), (err: unknown) => this.errorReply(err));
      return this.toBuffer(r);
    } catch (err) {
      return this.errorReply(err);
    }
  }

  private toBuffer(r: Reply | Buffer): Buffer {
    // Pre-encoded constant replies go out as they are; any other Buffer is a bulk string.
    return Buffer.isBuffer(r) && PREENCODED.has(r) ? r : encode(r);
  }

  private errorReply(err: unknown): Buffer {
    this.stats.errors++;
    if (err instanceof KvError) return encodeError(err.message, RESP_ERROR_PREFIX[err.code]);
    if (err instanceof RespError) return encodeError(err.message, err.prefix);
    this.log.error({ err }, 'RESP command failed');
    return encodeError(`internal error: ${(err as Error).message}`);
  }

  private register(): void {
    const api = this.api;
    const add = (name: string, arity: number, flags: string[], handler: Handler, keys?: KeySpec): void => {
      this.commands.set(name, { handler, arity, flags, keys });
    };
    const ONE_KEY: KeySpec = { first: 1, last: 1, step: 1 };
    const ALL_KEYS: KeySpec = { first: 1, last: -1, step: 1 };
    const keysOf = async (scope: 'all' | 'local', match: RegExp | null): Promise<Buffer[]> => {
      const keys: Buffer[] = [];
      for await (const page of api.pages(scope, MAX_PAGE)) {
        for (const p of page) if (match === null || match.test(p.key.toString('latin1'))) keys.push(p.key);
      }
      return keys;
    };
    const scanReply = (page: Page, match: RegExp | null, withValues: boolean): Reply => {
      const items = match === null ? page.items : page.items.filter((p) => match.test(p.key.toString('latin1')));
      const flat: Reply[] = [];
      for (const it of items) {
        flat.push(it.key);
        if (withValues) flat.push(it.value);
      }
      return [this.cursors.put(page.cursor), flat];
    };
    const count = (scope: 'all' | 'local'): Promise<number> => (scope === 'all' ? api.countAll() : api.countLocal());

    add('PING', -1, ['fast'], (a) => (a.length > 2 ? errArity('ping') : a.length === 2 ? a[1]! : PONG));
    add('ECHO', 2, ['fast'], (a) => a[1]!);
    add('QUIT', -1, ['fast'], (_a, c) => {
      c.closing = true;
      return OK;
    });
    add('GET', 2, ['readonly'], async (a) => (await api.get(a[1]!)) ?? NULL_BULK, ONE_KEY);
    add('SET', -3, ['write'], async (a) => {
      if (a.length > 3) throw new RespError('SET options (EX, PX, NX, XX, GET...) are not supported; use plain SET key value');
      await api.put(a[1]!, a[2]!);
      return OK;
    }, ONE_KEY);
    add('DEL', -2, ['write'], async (a) => {
      // Check every key first, so that a bad key (e.g. "*") leaves nothing deleted.
      for (const k of a.slice(1)) api.checkWriteKey(k);
      const existed = await Promise.all(a.slice(1).map((k) => api.del(k)));
      return { int: existed.filter(Boolean).length };
    }, ALL_KEYS);
    this.commands.set('UNLINK', this.commands.get('DEL')!);
    add('EXISTS', -2, ['readonly'], async (a) => {
      for (const k of a.slice(1)) api.checkKey(k);
      const values = await Promise.all(a.slice(1).map((k) => api.get(k)));
      return { int: values.filter((v) => v !== null).length };
    }, ALL_KEYS);
    add('MGET', -2, ['readonly'], async (a) => {
      for (const k of a.slice(1)) api.checkKey(k);
      return Promise.all(a.slice(1).map((k) => api.get(k)));
    }, ALL_KEYS);
    add('MSET', -3, ['write'], async (a) => {
      if (a.length % 2 !== 1) return errArity('mset');
      // Check every pair first, so that a bad pair leaves nothing half-written.
      for (let i = 1; i < a.length; i += 2) {
        api.checkWriteKey(a[i]!);
        api.checkValue(a[i + 1]!);
      }
      const writes: Promise<void>[] = [];
      for (let i = 1; i < a.length; i += 2) writes.push(api.put(a[i]!, a[i + 1]!));
      await Promise.all(writes);
      return OK;
    }, { first: 1, last: -1, step: 2 });
    add('KEYS', 2, ['readonly'], async (a) => keysOf('all', globToRegExp(a[1]!.toString('latin1'))));
    add('SCAN', -2, ['readonly'], async (a) => {
      const { count: n, match } = parseCount(a, 2);
      return scanReply(await api.scanAll(this.cursors.get(a[1]!), n), match, false);
    });
    add('SCANALL', -2, ['readonly'], async (a) => {
      const { count: n, match } = parseCount(a, 2);
      return scanReply(await api.scanAll(this.cursors.get(a[1]!), n), match, true);
    });
    add('DBSIZE', 1, ['readonly'], async () => ({ int: await count('all') }));
    add('FLUSHALL', -1, ['write'], async () => {
      await api.clearAll();
      return OK;
    });
    this.commands.set('FLUSHDB', this.commands.get('FLUSHALL')!);
    // '@': this node's pairs, replicas included.
    add('LOCALKEYS', -1, ['readonly'], async (a) => keysOf('local', a[1] === undefined ? null : globToRegExp(a[1].toString('latin1'))));
    add('LOCALSCAN', -2, ['readonly'], async (a) => {
      const { count: n, match } = parseCount(a, 2);
      return scanReply(await api.scanLocal(this.cursors.get(a[1]!), n), match, true);
    });
    add('LOCALDBSIZE', 1, ['readonly'], async () => ({ int: await count('local') }));
    add('LOCALFLUSH', 1, ['write'], async () => {
      await api.clearLocal();
      return OK;
    });
    add('SELECT', 2, ['fast'], (a) => {
      if (a[1]!.toString('latin1') !== '0') throw new RespError('DB index is out of range (only database 0 exists)');
      return OK;
    });
    add('HELLO', -1, ['fast'], (a, c) => {
      const ver = a[1]?.toString('latin1');
      if (ver !== undefined && ver !== '2') throw new RespError('unsupported protocol version (only RESP2)', 'NOPROTO');
      // HELLO [2 [AUTH username password] [SETNAME name]]: check every option, then apply.
      let auth = false;
      let name: string | null | undefined;
      for (let i = 2; i < a.length; i++) {
        const opt = a[i]!.toString('latin1').toUpperCase();
        if (opt === 'AUTH' && i + 2 < a.length) {
          auth = true;
          i += 2;
        } else if (opt === 'SETNAME' && i + 1 < a.length) {
          name = clientName(a[++i]!);
        } else throw new RespError(`Syntax error in HELLO option '${a[i]!.toString('utf8').slice(0, 64)}'`);
      }
      if (auth) throw new RespError('AUTH is not supported (no users are configured)');
      if (name !== undefined) c.name = name;
      return ['server', 'chainkv', 'version', this.opts.version, 'proto', { int: 2 }, 'id', { int: c.id }, 'mode', 'cluster', 'role', 'master', 'modules', []];
    });
    add('CLIENT', -2, ['fast'], (a, c) => {
      const sub = a[1]!.toString('latin1').toUpperCase();
      if (sub === 'SETNAME') {
        if (a.length !== 3) errArity('client|setname');
        c.name = clientName(a[2]!);
        return OK;
      }
      if (sub === 'GETNAME') return c.name;
      if (sub === 'SETINFO') return OK;
      if (sub === 'ID') return { int: c.id };
      throw new RespError(`unknown subcommand '${sub}' for CLIENT`);
    });
    add('INFO', -1, ['fast'], () => {
      const info = api.cluster();
      const lines = [
        '# Server',
        `chainkv_version:${this.opts.version}`,
        'redis_version:7.0.0',
        `node:${info.self}`,
        `cluster:${info.cluster}`,
        `uptime_in_seconds:${Math.floor((Date.now() - api.node.startedAt) / 1000)}`,
        '',
        '# Cluster',
        `epoch:${info.epoch}`,
        `replication:${info.replication}`,
        ...info.nodes.map((n) => `node_${n.name}:state=${n.state},resp=${n.resp},http=${n.http}`),
        ...info.local.map((p) => `partition_${p.partition}:committed=${p.committed},pending=${p.pending},ready=${p.ready ? 1 : 0}`),
        '',
        '# Stats',
        `total_connections_received:${this.stats.connections}`,
        `total_commands_processed:${this.stats.commands}`,
        `total_error_replies:${this.stats.errors}`,
        '',
      ];
      return lines.join('\r\n');
    });
    add('COMMAND', -1, ['fast'], (a) => {
      const sub = a[1]?.toString('latin1').toUpperCase();
      if (sub === 'COUNT') return { int: this.commands.size };
      if (sub === 'DOCS') return EMPTY_ARRAY;
      if (sub !== undefined && sub !== 'INFO') throw new RespError(`unknown subcommand '${sub}' for COMMAND`);
      const names = sub === 'INFO' ? a.slice(2).map((x) => x.toString('latin1').toUpperCase()) : [...this.commands.keys()];
      return names.map((n) => {
        const s = this.commands.get(n);
        if (s === undefined) return null;
        const keyed = !['PING', 'ECHO', 'QUIT', 'SELECT', 'HELLO', 'CLIENT', 'INFO', 'COMMAND', 'DBSIZE', 'FLUSHALL', 'FLUSHDB', 'KEYS', 'SCAN', 'SCANALL'].includes(n) && !n.startsWith('LOCAL');
        const last = n === 'MSET' || n === 'DEL' || n === 'EXISTS' || n === 'MGET' || n === 'UNLINK' ? -1 : keyed ? 1 : 0;
        return [n.toLowerCase(), { int: s.arity }, s.flags.map((f) => ({ simple: f })), { int: keyed ? 1 : 0 }, { int: last }, { int: n === 'MSET' ? 2 : keyed ? 1 : 0 }];
      });
    });
  }
}

/** A connection name as Redis takes it: empty clears it; no spaces, newlines or other special characters. */
function clientName(arg: Buffer): string | null {
  if (arg.length === 0) return null;
  for (const byte of arg) {
    if (byte < 0x21 || byte > 0x7e) throw new RespError('Client names cannot contain spaces, newlines or special characters.');
  }
  return arg.toString('latin1');
}

function errArity(cmd: string): never {
  throw new RespError(`wrong number of arguments for '${cmd}' command`);
}

const PREENCODED = new Set<Buffer>([OK, PONG, NULL_BULK, EMPTY_ARRAY]);
