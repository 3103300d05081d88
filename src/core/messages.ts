import type { ErrorCode } from './errors.ts';
import type { MembershipMsg } from './membership.ts';
import type { Entry, EntryKind } from './store.ts';

/**
 * Peer messages. Every data-path message carries the sender's view epoch (`e`); a node
 * refuses messages of another epoch and the sender retries once its view is current.
 * Replies are addressed by request id to the node that coordinates the client request.
 */
export type DataMsg =
  /** coordinator -> head: a write to order. */
  | { t: 'write'; e: number; id: string; p: number; kind: EntryKind; key: Buffer; value: Buffer | null; origin: string }
  /** head -> coordinator: the write committed on every member (or failed). */
  | { t: 'wres'; id: string; r: Result }
  /** predecessor -> successor: consecutive entries of a partition's history. */
  | { t: 'fwd'; e: number; p: number; entries: Entry[] }
  /** successor -> predecessor: everything up to `seq` is committed downstream (cumulative). */
  | { t: 'ack'; e: number; p: number; seq: number }
  /** successor -> predecessor: a gap; resend from `from`. */
  | { t: 'nack'; e: number; p: number; from: number }
  /** coordinator -> chain member: read one key (a member with a dirty copy passes it to the tail). */
  | { t: 'read'; e: number; id: string; p: number; key: Buffer; origin: string }
  | { t: 'rres'; id: string; r: Result }
  /** coordinator -> tail: a page of a partition's live pairs. */
  | { t: 'scan'; e: number; id: string; p: number; after: Buffer | null; limit: number; origin: string }
  /** How many live pairs the partition holds (answered by its tail, with `sres`). */
  | { t: 'count'; e: number; id: string; p: number; origin: string }
  | { t: 'sres'; id: string; r: Result }
  /** member -> successor, after a view change or restart: send me your history after `committed`. */
  /** History after `after` (the sender's committed seq when absent): a page of it per answer. */
  | { t: 'sync'; e: number; p: number; committed: number; after?: number }
  /** new tail that is not level (rejoined or restarted) -> every other member: send me your history after `committed`. */
  | { t: 'pull'; e: number; p: number; committed: number; after?: number }
  /**
   * Answer to sync and pull: the sender's committed seq and every entry it holds after the
   * asked one; `level` says whether the sender's history is known to hold its successor's.
   */
  /**
   * A page of history: committed changes through `complete` (compacted), then, once every
   * committed change is in (complete = committed), pending entries; `more` if the page ended
   * before the history did. `last` is the highest seq the sender holds.
   */
  | { t: 'syncr'; e: number; p: number; committed: number; complete: number; last: number; more: boolean; entries: Entry[]; ids: [string, number][]; level: boolean }
  /** predecessor -> successor: every canonical member has committed `floor`; tombstones up to it may go. */
  | { t: 'gc'; e: number; p: number; floor: number }
  /** joining node -> tail: a page of committed changes after `after`. */
  | { t: 'cu'; e: number; p: number; after: number; limit: number }
  | { t: 'cur'; e: number; p: number; committed: number; entries: Entry[]; more: boolean; ids: [string, number][] };

export type PeerMsg = DataMsg | MembershipMsg;

/** Outcome of a request: `retry` means "not here, not now" (wrong node, stale view, not ready). */
export type Result =
  | { ok: true; value?: Buffer | null; existed?: boolean; items?: [Buffer, Buffer][]; done?: boolean; count?: number }
  | { ok: false; retry: true; why: string }
  | { ok: false; retry: false; code: ErrorCode; message: string };

const MEMBERSHIP_TYPES = new Set(['rv', 'rvr', 'ae', 'aer', 'snap', 'lq', 'lg', 'join', 'caught', 'probe', 'probed']);

export function isMembershipMsg(msg: PeerMsg): msg is MembershipMsg {
  return MEMBERSHIP_TYPES.has(msg.t);
}

// ---------------------------------------------------------------------------------------
// Validation of what arrives from the network. A message that does not have the shape of
// its type is dropped before it reaches the core: the core's invariants assume well-formed
// input, and a bad peer (or anything else that reached the peer port) must not stop a node.

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x) && !Buffer.isBuffer(x);
const isNat = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
const isStr = (x: unknown): x is string => typeof x === 'string' && x.length <= 1024;
const isBuf = (x: unknown): boolean => Buffer.isBuffer(x) || x instanceof Uint8Array;
const isBufOrNull = (x: unknown): boolean => x === null || isBuf(x);
const KINDS = new Set(['put', 'del', 'clear']);
const STATES = new Set(['up', 'down', 'joining']);

function validEntry(e: unknown): boolean {
  return isObj(e) && isNat(e.seq) && isNat(e.epoch) && typeof e.kind === 'string' && KINDS.has(e.kind) && isBuf(e.key) && isBufOrNull(e.value) && isStr(e.id) && (e.existed === undefined || typeof e.existed === 'boolean') && (e.origin === undefined || isStr(e.origin));
}

function validEntries(x: unknown): boolean {
  return Array.isArray(x) && x.every(validEntry);
}

/** Request ids of superseded versions travel with syncs and catch-up, so that a retry is recognised anywhere. */
function validIds(x: unknown): boolean {
  return Array.isArray(x) && x.every((it) => Array.isArray(it) && it.length === 2 && isStr(it[0]) && isNat(it[1]));
}

function validResult(r: unknown): boolean {
  if (!isObj(r) || typeof r.ok !== 'boolean') return false;
  if (r.ok) {
    return (
      (r.value === undefined || isBufOrNull(r.value)) &&
      (r.existed === undefined || typeof r.existed === 'boolean') &&
      (r.count === undefined || isNat(r.count)) &&
      (r.items === undefined || (Array.isArray(r.items) && r.items.every((it) => Array.isArray(it) && it.length === 2 && isBuf(it[0]) && isBuf(it[1]))))
    );
  }
  return r.retry === true ? typeof r.why === 'string' : typeof r.code === 'string' && typeof r.message === 'string';
}

function validView(v: unknown, names: ReadonlySet<string>): boolean {
  if (!isObj(v) || !isNat(v.epoch) || !isObj(v.states)) return false;
  const states = v.states;
  return [...names].every((n) => typeof states[n] === 'string' && STATES.has(states[n] as string)) && Object.keys(states).length === names.size;
}

/** Returns the message if it is a well-formed peer message for a ring of `partitions` partitions and these node names, else null. */
export function parsePeerMsg(x: unknown, partitions: number, names: ReadonlySet<string>): PeerMsg | null {
  if (!isObj(x) || typeof x.t !== 'string') return null;
  const p = (v: unknown): boolean => isNat(v) && v < partitions;
  const node = (v: unknown): boolean => typeof v === 'string' && names.has(v);
  let ok: boolean;
  switch (x.t) {
    case 'write':
      ok = isNat(x.e) && isStr(x.id) && p(x.p) && typeof x.kind === 'string' && KINDS.has(x.kind) && isBuf(x.key) && isBufOrNull(x.value) && node(x.origin);
      break;
    case 'wres':
    case 'rres':
    case 'sres':
      ok = isStr(x.id) && validResult(x.r);
      break;
    case 'fwd':
      ok = isNat(x.e) && p(x.p) && validEntries(x.entries);
      break;
    case 'ack':
      ok = isNat(x.e) && p(x.p) && isNat(x.seq);
      break;
    case 'nack':
      ok = isNat(x.e) && p(x.p) && isNat(x.from);
      break;
    case 'read':
      ok = isNat(x.e) && isStr(x.id) && p(x.p) && isBuf(x.key) && node(x.origin);
      break;
    case 'scan':
      ok = isNat(x.e) && isStr(x.id) && p(x.p) && isBufOrNull(x.after) && isNat(x.limit) && node(x.origin);
      break;
    case 'count':
      ok = isNat(x.e) && isStr(x.id) && p(x.p) && node(x.origin);
      break;
    case 'sync':
    case 'pull':
      ok = isNat(x.e) && p(x.p) && isNat(x.committed) && (x.after === undefined || isNat(x.after));
      break;
    case 'syncr':
      ok =
        isNat(x.e) &&
        p(x.p) &&
        isNat(x.committed) &&
        isNat(x.complete) &&
        x.complete <= x.committed &&
        isNat(x.last) &&
        typeof x.more === 'boolean' &&
        validEntries(x.entries) &&
        validIds(x.ids) &&
        typeof x.level === 'boolean';
      break;
    case 'gc':
      ok = isNat(x.e) && p(x.p) && isNat(x.floor);
      break;
    case 'cu':
      ok = isNat(x.e) && p(x.p) && isNat(x.after) && isNat(x.limit);
      break;
    case 'cur':
      ok = isNat(x.e) && p(x.p) && isNat(x.committed) && validEntries(x.entries) && typeof x.more === 'boolean' && validIds(x.ids);
      break;
    case 'rv':
      ok = isNat(x.term) && isNat(x.last) && isNat(x.lastTerm);
      break;
    case 'rvr':
      ok = isNat(x.term) && typeof x.granted === 'boolean';
      break;
    case 'ae':
      ok =
        isNat(x.term) &&
        isNat(x.prev) &&
        isNat(x.prevTerm) &&
        isNat(x.commit) &&
        Array.isArray(x.entries) &&
        x.entries.every((le) => isObj(le) && isNat(le.term) && validView(le.view, names));
      break;
    case 'snap':
      ok = isNat(x.term) && isNat(x.index) && isNat(x.commit) && isObj(x.entry) && isNat(x.entry.term) && validView(x.entry.view, names);
      break;
    case 'aer':
      ok = isNat(x.term) && typeof x.ok === 'boolean' && isNat(x.match) && (x.blocked === undefined || typeof x.blocked === 'boolean');
      break;
    case 'lq':
      ok = isNat(x.e) && isNat(x.r) && isStr(x.inc);
      break;
    case 'lg':
      ok = isNat(x.e) && isNat(x.r);
      break;
    case 'join':
      ok = isStr(x.inc) && (x.reset === undefined || typeof x.reset === 'boolean');
      break;
    case 'probe':
      ok = true;
      break;
    case 'probed':
      ok = isNat(x.term) && isNat(x.last) && typeof x.data === 'boolean';
      break;
    case 'caught':
      ok = isNat(x.e) && isStr(x.inc);
      break;
    default:
      ok = false;
  }
  return ok ? (x as unknown as PeerMsg) : null;
}
