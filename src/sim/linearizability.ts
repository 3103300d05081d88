/**
 * Linearizability checker for chainkv histories.
 *
 * The model is a per-key register with an "absent" state: put(v) sets it to v,
 * delete sets it to absent (null), get must return the current state. Every
 * key is an independent register, so the history is checked key by key
 * (linearizability is P-compositional): a history is linearizable iff each
 * per-key sub-history is.
 *
 * Each key is checked with the Wing–Gong search with Lowe's memoisation (the
 * "WGL" algorithm):
 *
 *  - Every operation contributes a call entry (at its invoke time) and a
 *    return entry (at its complete time) to a doubly linked list ordered by
 *    time. On equal times calls sort before returns, so an op that completes at
 *    exactly the time another is invoked is treated as concurrent with it.
 *  - The search scans the list from the front. A call entry whose operation is
 *    legal in the current model state may be linearized next: it is "lifted"
 *    out of the list (both its entries) and pushed on an explicit stack. Hitting
 *    a return entry means an op's deadline has passed without it being
 *    linearized, so the search backtracks: it pops the last linearized op,
 *    restores it to the list and tries the next candidate after it.
 *  - A cache of (set of linearized ops, model state) pairs already explored
 *    prunes configurations that have been reached before by a different order.
 *
 * Outcomes:
 *  - 'fail' ops never took effect and are dropped.
 *  - 'info' ops (outcome unknown) may take effect at any time after their
 *    invoke, or never: their return time is +Infinity and the search succeeds
 *    once every 'ok' op is linearized. An 'info' get constrains nothing and is
 *    dropped.
 *
 * Info writes would make the search exponential (with k of them pending, any
 * of the 2^k subsets may have applied), so they are handled by a sound
 * reduction. In any valid linearization, an info write that is not
 * immediately followed by a get (the next op is a write, or there is none), or
 * that does not change the state, can be removed and the rest stays valid.
 * So it suffices to linearize an info write only fused with an ok get that
 * observes it: when the scan reaches an ok get reading v while the state is
 * not v, the pair (info write of v, get) may be linearized as one step, using
 * an info write of v that was invoked before the first pending return. Any
 * one of those will do: they all write v and, never returning, stay eligible
 * from then on, so they are interchangeable. Info ops are therefore kept out
 * of the entry list, and info writes whose value no ok get returns are dropped
 * up front.
 *
 * Two more reductions that keep the search small on concurrent histories:
 *  - Forced reads: when a pending get is legal in the current state and
 *    minimal in real time, it is the only choice tried at that point (in any
 *    valid completion it can be moved to the front, as it changes nothing).
 *  - All put values that no ok get returns are merged into one model value:
 *    the model cannot tell them apart.
 *
 * The search is iterative (no recursion) and bounded by a step budget per key;
 * a key whose budget runs out is reported as unknown, never as passing.
 */

export type OpKind = 'put' | 'get' | 'delete';
/** fail = definitely not applied; info = outcome unknown (e.g. timeout). */
export type OpStatus = 'ok' | 'fail' | 'info';

export interface Op {
  /** Client id (one outstanding op per process). */
  process: number;
  key: string;
  kind: OpKind;
  /** put: value written (never null); ok get: value read, null = key absent; delete: null. */
  value: string | null;
  /** Monotonic time of invocation (any unit, e.g. ms from performance.now()). */
  invoke: number;
  /** Monotonic time of completion; ignored for 'info' ops (treated as +Infinity). */
  complete: number;
  status: OpStatus;
}

/** Where the search for a non-linearizable (or undecided) key got furthest. */
export interface ViolationDetail {
  /** Length of the longest linearizable prefix the search found. */
  linearizedCount: number;
  /** The last (up to 10) ops of that prefix, in linearization order. */
  lastLinearized: Op[];
  /** Register state after that prefix (null = absent). */
  stateAfterPrefix: string | null;
  /** The op whose completion passed with no legal place for it (null if not determined). */
  blockedOp: Op | null;
  /** Other not-yet-linearized ops that were candidates at that point (up to 10). */
  pending: Op[];
}

export interface KeyResult {
  key: string;
  ok: boolean;
  unknown: boolean;
  /** Number of operations on this key in the input history (all statuses). */
  ops: number;
  message?: string;
  /** Structured form of the message, for violations and unknown results. */
  detail?: ViolationDetail;
}

export interface CheckResult {
  /** True only if every key is linearizable (never true when some key is unknown). */
  ok: boolean;
  /** Some key's search ran out of budget. */
  unknown: boolean;
  /** One per key, sorted by key. */
  keys: KeyResult[];
  /** Non-ok, non-unknown keys. */
  violations: KeyResult[];
}

export interface CheckOptions {
  /** Search step budget per key; default 5e6. */
  maxStepsPerKey?: number;
}

const DEFAULT_MAX_STEPS = 5_000_000;
const TAIL_OPS = 10;
const PENDING_OPS = 10;

const KIND_PUT = 0;
const KIND_GET = 1;
const KIND_DELETE = 2;

/** Value id of the absent state (null). */
const ABSENT = 0;
/** Value id shared by all values that no ok get of the key returns. */
const UNREAD = 1;

export function checkHistory(ops: readonly Op[], opts: CheckOptions = {}): CheckResult {
  const maxSteps = opts.maxStepsPerKey ?? DEFAULT_MAX_STEPS;
  if (!(maxSteps > 0)) throw new RangeError(`maxStepsPerKey must be positive, got ${maxSteps}`);
  for (const op of ops) validateOp(op);

  // Sort once by invoke time (stable), then split per key: every per-key
  // array is in invoke order.
  const order = Array.from(ops.keys());
  order.sort((a, b) => ops[a]!.invoke - ops[b]!.invoke || a - b);
  const byKey = new Map<string, Op[]>();
  for (const idx of order) {
    const op = ops[idx]!;
    let list = byKey.get(op.key);
    if (list === undefined) {
      list = [];
      byKey.set(op.key, list);
    }
    list.push(op);
  }

  const keyNames = [...byKey.keys()].sort(compareStrings);
  const keys: KeyResult[] = [];
  for (const key of keyNames) keys.push(checkKey(key, byKey.get(key) ?? [], maxSteps));

  const violations = keys.filter((k) => !k.ok && !k.unknown);
  const unknown = keys.some((k) => k.unknown);
  return { ok: violations.length === 0 && !unknown, unknown, keys, violations };
}

export function describeViolation(result: KeyResult): string {
  if (result.message !== undefined) return result.message;
  if (result.ok) return `key ${JSON.stringify(result.key)}: linearizable (${result.ops} ops)`;
  if (result.unknown) return `key ${JSON.stringify(result.key)}: unknown (search budget exhausted, ${result.ops} ops)`;
  return `key ${JSON.stringify(result.key)}: not linearizable (${result.ops} ops)`;
}

/** Records a history from concurrent clients. */
export class HistoryRecorder {
  readonly #now: () => number;
  /** Indexed by handle; null while the op is still open. */
  readonly #done: (Op | null)[] = [];
  readonly #open = new Map<number, Omit<Op, 'complete' | 'status'>>();
  readonly #openByProcess = new Map<number, number>();

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Starts an op and returns its handle. A process may have one open op at a time. */
  invoke(process: number, kind: OpKind, key: string, value: string | null): number {
    const busy = this.#openByProcess.get(process);
    if (busy !== undefined) {
      throw new Error(`process ${process} invoked ${kind} ${JSON.stringify(key)} while op ${busy} is still open`);
    }
    if (kind === 'put' && value === null) throw new TypeError('put needs a non-null value');
    const handle = this.#done.length;
    this.#done.push(null);
    this.#open.set(handle, { process, key, kind, value: kind === 'put' ? value : null, invoke: this.#now() });
    this.#openByProcess.set(process, handle);
    return handle;
  }

  /** Completes an op successfully. For gets pass the value read (null or undefined = absent). */
  ok(handle: number, readValue?: string | null): void {
    this.#close(handle, 'ok', readValue);
  }

  /** Completes an op that definitely did not take effect. */
  fail(handle: number): void {
    this.#close(handle, 'fail', undefined);
  }

  /** Completes an op whose outcome is unknown (e.g. it timed out). */
  info(handle: number): void {
    this.#close(handle, 'info', undefined);
  }

  /** Completed ops (ok/fail/info), in invocation order. Ops still open are not included. */
  get ops(): Op[] {
    const out: Op[] = [];
    for (const op of this.#done) if (op !== null) out.push(op);
    return out;
  }

  /** Closes every still-open op as 'info' and returns all ops, in invocation order. */
  finish(): Op[] {
    for (const handle of [...this.#open.keys()]) this.#close(handle, 'info', undefined);
    return this.ops;
  }

  #close(handle: number, status: OpStatus, readValue: string | null | undefined): void {
    const open = this.#open.get(handle);
    if (open === undefined) {
      throw new Error(handle >= 0 && handle < this.#done.length ? `op ${handle} already completed` : `unknown op handle ${handle}`);
    }
    this.#open.delete(handle);
    this.#openByProcess.delete(open.process);
    let value = open.value;
    if (open.kind === 'get') value = status === 'ok' ? (readValue ?? null) : null;
    this.#done[handle] = { ...open, value, complete: this.#now(), status };
  }
}

// ---------------------------------------------------------------------------
// Internals

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function validateOp(op: Op): void {
  if (op.kind !== 'put' && op.kind !== 'get' && op.kind !== 'delete') {
    throw new TypeError(`unknown op kind ${String(op.kind)}`);
  }
  if (op.status !== 'ok' && op.status !== 'fail' && op.status !== 'info') {
    throw new TypeError(`unknown op status ${String(op.status)}`);
  }
  if (op.kind === 'put' && typeof op.value !== 'string') {
    throw new TypeError(`put on key ${JSON.stringify(op.key)} by process ${op.process} has no value`);
  }
  if (!Number.isFinite(op.invoke)) throw new RangeError(`op invoke time must be finite: ${describeOp(op)}`);
  if (op.status !== 'info' && !(Number.isFinite(op.complete) && op.complete >= op.invoke)) {
    throw new RangeError(`op must complete at or after its invoke: ${describeOp(op)}`);
  }
}

function formatValue(v: string | null): string {
  return v === null ? 'absent' : JSON.stringify(v);
}

function formatTime(t: number): string {
  return Number.isInteger(t) ? String(t) : t.toFixed(3);
}

function describeOp(op: Op): string {
  let what: string;
  if (op.kind === 'put') what = `put ${formatValue(op.value)}`;
  else if (op.kind === 'get') what = op.status === 'ok' ? `get -> ${formatValue(op.value)}` : 'get';
  else what = 'delete';
  const complete = op.status === 'info' ? '?' : formatTime(op.complete);
  return `p${op.process} ${what} [invoke ${formatTime(op.invoke)}, complete ${complete}] ${op.status}`;
}

/** murmur3 finaliser: a cheap, well-mixed 32-bit hash. */
function fmix32(x: number): number {
  let h = x | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}

/**
 * Set of explored (linearized set, state) configurations: an open-addressing
 * hash table over a flat pool, so that adding an entry allocates nothing in the
 * common case. A pool record is [state, low, sliceLen, okWords[low..low+sliceLen),
 * infoWords...]; the table holds record offset + 1 (0 = empty slot).
 */
class ConfigCache {
  #pool = new Uint32Array(1 << 12);
  #poolLen = 0;
  #slots = new Int32Array(1 << 10);
  #hashes = new Int32Array(1 << 10);
  #count = 0;

  /** Adds the configuration; returns false if it was already present. */
  add(h: number, s: number, okWords: Uint32Array, low: number, sliceLen: number, infoWords: Uint32Array): boolean {
    const nInfo = infoWords.length;
    const pool = this.#pool;
    let mask = this.#slots.length - 1;
    let idx = h & mask;
    for (let slot = this.#slots[idx]!; slot !== 0; idx = (idx + 1) & mask, slot = this.#slots[idx]!) {
      if (this.#hashes[idx] !== h) continue;
      let o = slot - 1;
      if (pool[o] !== s || pool[o + 1] !== low || pool[o + 2] !== sliceLen) continue;
      o += 3;
      let same = true;
      for (let j = 0; j < sliceLen && same; j++) same = pool[o + j] === okWords[low + j];
      o += sliceLen;
      for (let j = 0; j < nInfo && same; j++) same = pool[o + j] === infoWords[j];
      if (same) return false;
    }

    const need = 3 + sliceLen + nInfo;
    if (this.#poolLen + need > this.#pool.length) {
      let size = this.#pool.length * 2;
      while (size < this.#poolLen + need) size *= 2;
      const grown = new Uint32Array(size);
      grown.set(this.#pool.subarray(0, this.#poolLen));
      this.#pool = grown;
    }
    const o = this.#poolLen;
    const out = this.#pool;
    out[o] = s;
    out[o + 1] = low;
    out[o + 2] = sliceLen;
    for (let j = 0; j < sliceLen; j++) out[o + 3 + j] = okWords[low + j]!;
    for (let j = 0; j < nInfo; j++) out[o + 3 + sliceLen + j] = infoWords[j]!;
    this.#poolLen += need;

    if (++this.#count * 2 > this.#slots.length) {
      this.#rehash();
      mask = this.#slots.length - 1;
      idx = h & mask;
      while (this.#slots[idx] !== 0) idx = (idx + 1) & mask;
    }
    this.#slots[idx] = o + 1;
    this.#hashes[idx] = h;
    return true;
  }

  #rehash(): void {
    const oldSlots = this.#slots;
    const oldHashes = this.#hashes;
    const size = oldSlots.length * 2;
    const mask = size - 1;
    this.#slots = new Int32Array(size);
    this.#hashes = new Int32Array(size);
    for (let i = 0; i < oldSlots.length; i++) {
      const slot = oldSlots[i]!;
      if (slot === 0) continue;
      const h = oldHashes[i]!;
      let idx = h & mask;
      while (this.#slots[idx] !== 0) idx = (idx + 1) & mask;
      this.#slots[idx] = slot;
      this.#hashes[idx] = h;
    }
  }
}

function checkKey(key: string, keyOps: readonly Op[], maxSteps: number): KeyResult {
  const total = keyOps.length;
  const keyName = JSON.stringify(key);

  // Values read by ok gets (null included): info writes whose result nobody
  // ever observes can be left out (see the file comment).
  const readValues = new Set<string | null>();
  for (const op of keyOps) if (op.kind === 'get' && op.status === 'ok') readValues.add(op.value);

  const hist: Op[] = [];
  for (const op of keyOps) {
    if (op.status === 'fail') continue;
    if (op.status === 'info') {
      if (op.kind === 'get') continue;
      if (!readValues.has(op.kind === 'put' ? op.value : null)) continue;
    }
    hist.push(op);
  }
  const n = hist.length;
  if (n === 0) return { key, ok: true, unknown: false, ops: total };

  // Intern values: 0 = absent, 1 = UNREAD, 2.. = distinct values read by some get.
  const valueIds = new Map<string, number>();
  // UNREAD stands for every value that no ok get returns: such values are
  // indistinguishable to the model, and merging them shrinks the search.
  const valueNames: (string | null)[] = [null, null];
  const intern = (v: string): number => {
    let id = valueIds.get(v);
    if (id === undefined) {
      id = valueNames.length;
      valueIds.set(v, id);
      valueNames.push(v);
    }
    return id;
  };

  const kind = new Uint8Array(n);
  const val = new Int32Array(n);
  const isInfo = new Uint8Array(n);
  const bit = new Int32Array(n);
  const zob = new Int32Array(n);
  const written = new Set<string>();
  let nOk = 0;
  let nInfo = 0;
  for (let i = 0; i < n; i++) {
    const op = hist[i]!;
    if (op.kind === 'put') {
      kind[i] = KIND_PUT;
      val[i] = readValues.has(op.value) ? intern(op.value as string) : UNREAD;
      written.add(op.value as string);
    } else if (op.kind === 'get') {
      kind[i] = KIND_GET;
      val[i] = op.value === null ? ABSENT : intern(op.value);
    } else {
      kind[i] = KIND_DELETE;
      val[i] = ABSENT;
    }
    if (op.status === 'info') {
      isInfo[i] = 1;
      bit[i] = nInfo++;
    } else {
      bit[i] = nOk++;
    }
    zob[i] = fmix32(Math.imul(i + 1, 0x9e3779b9) ^ 0x5bd1e995);
  }

  // A read of a value that no (non-failed) put ever wrote can never be
  // linearized: report it directly, with a clearer message than the search's.
  for (let i = 0; i < n; i++) {
    const op = hist[i]!;
    if (op.kind !== 'get' || op.value === null || written.has(op.value)) continue;
    const failedWriter = keyOps.find((o) => o.kind === 'put' && o.value === op.value);
    const why = failedWriter !== undefined
      ? `only a failed put wrote it (${describeOp(failedWriter)})`
      : 'no put on this key ever wrote it';
    const detail: ViolationDetail = {
      linearizedCount: 0, lastLinearized: [], stateAfterPrefix: null, blockedOp: op, pending: [],
    };
    return {
      key, ok: false, unknown: false, ops: total, detail,
      message: `key ${keyName} is not linearizable: ${describeOp(op)} read ${formatValue(op.value)}, but ${why}.`,
    };
  }

  // Entries in time order. The call entry of op i is node 2i+1 and its return
  // entry node 2i+2. On equal times calls sort before returns (touching ops are
  // concurrent). Info ops have no return entry (it would be at +Infinity).
  const times = new Float64Array(2 * n + 1);
  const order: number[] = [];
  for (let i = 0; i < n; i++) {
    const op = hist[i]!;
    times[2 * i + 1] = op.invoke;
    order.push(2 * i + 1);
    if (isInfo[i] === 0) {
      times[2 * i + 2] = op.complete;
      order.push(2 * i + 2);
    }
  }
  order.sort((a, b) => {
    const ta = times[a]!;
    const tb = times[b]!;
    if (ta < tb) return -1;
    if (ta > tb) return 1;
    const ca = a & 1;
    const cb = b & 1;
    if (ca !== cb) return cb - ca; // calls (odd nodes) before returns
    return a - b;
  });
  const pos = new Int32Array(2 * n + 1);
  for (let j = 0; j < order.length; j++) pos[order[j]!] = j;

  // Doubly linked list of the entries of ok ops; node 0 is the head sentinel,
  // -1 is nil. Info ops are not in the list: an info write is only ever
  // linearized fused with an ok get that observes it (see the file comment),
  // looked up through infoWriters.
  const next = new Int32Array(2 * n + 1);
  const prev = new Int32Array(2 * n + 1);
  let last = 0;
  for (const node of order) {
    if (isInfo[(node - 1) >> 1] === 1) continue;
    next[last] = node;
    prev[node] = last;
    last = node;
  }
  next[last] = -1;

  /** Per value id: the info ops writing it, in call order. */
  const infoWriters = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    if (isInfo[i] === 0) continue;
    const v = kind[i] === KIND_PUT ? val[i]! : ABSENT;
    let list = infoWriters.get(v);
    if (list === undefined) {
      list = [];
      infoWriters.set(v, list);
    }
    list.push(i);
  }

  const lift = (i: number): void => {
    const c = 2 * i + 1;
    const r = c + 1;
    let nx = next[c]!;
    next[prev[c]!] = nx;
    if (nx >= 0) prev[nx] = prev[c]!;
    nx = next[r]!;
    next[prev[r]!] = nx;
    if (nx >= 0) prev[nx] = prev[r]!;
  };
  // Exact inverse of lift (dancing links): restore in reverse order.
  const unlift = (i: number): void => {
    const c = 2 * i + 1;
    const r = c + 1;
    let nx = next[r]!;
    if (nx >= 0) prev[nx] = r;
    next[prev[r]!] = r;
    nx = next[c]!;
    if (nx >= 0) prev[nx] = c;
    next[prev[c]!] = c;
  };

  // Linearized set: a bitset over ok ops (indexed in invoke order) plus one
  // over info ops. Ok ops are linearized roughly in order, so the ok bitset is
  // "all ones below word low, all zeros above word high"; cache entries store
  // only the window [low, high] (plus the info words) and stay small even for
  // 100k-op keys. hash is an incremental (Zobrist) XOR hash of the set.
  const okWords = new Uint32Array((nOk + 31) >>> 5);
  const infoWords = new Uint32Array((nInfo + 31) >>> 5);
  const nOkWords = okWords.length;
  let low = 0;
  let high = -1;
  let hash = 0;

  const setBit = (i: number): void => {
    const b = bit[i]!;
    const w = b >>> 5;
    if (isInfo[i] === 1) {
      infoWords[w] = infoWords[w]! | (1 << (b & 31));
    } else {
      okWords[w] = okWords[w]! | (1 << (b & 31));
      if (w > high) high = w;
      while (low < nOkWords && okWords[low] === 0xffffffff) low++;
    }
    hash ^= zob[i]!;
  };
  const clearBit = (i: number): void => {
    const b = bit[i]!;
    const w = b >>> 5;
    if (isInfo[i] === 1) {
      infoWords[w] = infoWords[w]! & ~(1 << (b & 31));
    } else {
      okWords[w] = okWords[w]! & ~(1 << (b & 31));
      if (w < low) low = w;
      while (high >= 0 && okWords[high] === 0) high--;
    }
    hash ^= zob[i]!;
  };
  const isSet = (i: number): boolean => {
    const b = bit[i]!;
    const words = isInfo[i] === 1 ? infoWords : okWords;
    return (words[b >>> 5]! & (1 << (b & 31))) !== 0;
  };

  const cache = new ConfigCache();
  /** Adds (current linearized set, state s) to the cache; false if it was already there. */
  const cacheAdd = (s: number): boolean =>
    cache.add((hash ^ fmix32(s + 0x632be5ab)) | 0, s, okWords, low, high >= low ? high - low + 1 : 0, infoWords);

  // Search state. Each stack frame is one ok op, optionally preceded by the
  // info write it observes.
  const stackOp = new Int32Array(nOk);
  const stackInfo = new Int32Array(nOk);
  const stackState = new Int32Array(nOk);
  /** 1 if the frame's op was the forced choice of its node (see below). */
  const stackForced = new Uint8Array(nOk);
  let depth = 0;
  let state = ABSENT;
  let linearized = 0; // ops on the stack, info writes included
  /** Position of the first return entry in the list, -1 = not computed since the list last changed. */
  let firstReturnPos = -1;

  /**
   * The info write to fuse with ok get g (which reads value v, v != state):
   * an unlinearized info write of v invoked before the first pending return.
   * Which one does not matter: they all write v and, never returning, stay
   * eligible from now on, so a linearization using one of them here can swap
   * it with any other. (The latest-invoked one is taken.)
   */
  const findInfoWriter = (g: number, v: number): number => {
    const writers = infoWriters.get(v);
    if (writers === undefined) return -1;
    if (firstReturnPos < 0) {
      let e = 2 * g + 1;
      while ((e & 1) === 1) e = next[e]!; // a return always follows: g's own
      firstReturnPos = pos[e]!;
    }
    // Last writer whose call precedes the first return...
    let lo = 0;
    let hi = writers.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pos[2 * writers[mid]! + 1]! < firstReturnPos) lo = mid + 1;
      else hi = mid;
    }
    // ...that is not linearized yet.
    for (let j = lo - 1; j >= 0; j--) {
      const x = writers[j]!;
      if (!isSet(x)) return x;
    }
    return -1;
  };

  // Diagnostics: the deepest linearization found and where it got stuck.
  let bestDepth = 0;
  let bestCount = 0;
  let bestTail: number[] = [];
  let bestState: string | null = null;
  let blocked = -1;
  let pending: number[] = [];
  const recordBest = (): void => {
    bestDepth = depth;
    bestCount = linearized;
    const tail: number[] = [];
    for (let d = depth - 1; d >= 0 && tail.length < TAIL_OPS; d--) {
      tail.push(stackOp[d]!);
      const x = stackInfo[d]!;
      if (x >= 0 && tail.length < TAIL_OPS) tail.push(x);
    }
    bestTail = tail.reverse();
    // An UNREAD state was just written by the ok put on top of the stack.
    bestState = state === UNREAD ? hist[stackOp[depth - 1]!]!.value : (valueNames[state] ?? null);
    blocked = -1;
    pending = [];
  };
  const recordBlocked = (returnEntry: number): void => {
    blocked = (returnEntry - 2) >> 1;
    const cands: number[] = [];
    for (let e = next[0]!; e !== returnEntry && e >= 0 && cands.length < PENDING_OPS; e = next[e]!) {
      if ((e & 1) === 1 && (e - 1) >> 1 !== blocked) cands.push((e - 1) >> 1);
    }
    pending = cands;
  };
  const detail = (): ViolationDetail => ({
    linearizedCount: bestCount,
    lastLinearized: bestTail.map((i) => hist[i]!),
    stateAfterPrefix: bestState,
    blockedOp: blocked >= 0 ? hist[blocked]! : null,
    pending: pending.map((i) => hist[i]!),
  });

  const unknownResult = (): KeyResult => {
    const d = detail();
    return {
      key, ok: false, unknown: true, ops: total, detail: d,
      message: `key ${keyName}: linearizability unknown, search budget of ${maxSteps} steps exhausted (${total} ops)\n${describeDetail(d, n)}`,
    };
  };

  // The main loop. A "node" is the configuration (linearized set, state) at
  // the top of the stack. Steps (for the budget) are attempts to extend the
  // linearization plus backtracks; skipping an illegal candidate is free.
  //
  // Forced reads: if some candidate get is legal in the current state, it is
  // the only choice explored at that node. That is complete: in any valid
  // completion of the node the get can be moved to the front (it is minimal in
  // real time, it reads the current state and changes nothing). So if it
  // fails, the whole node fails.
  let steps = 0;
  let entry = -1;
  let fresh = true; // the top node has not been scanned yet
  let failing = false; // the top node has no valid completion: backtrack
  const push = (i: number, x: number, ns: number, forced: number): void => {
    stackOp[depth] = i;
    stackInfo[depth] = x;
    stackState[depth] = state;
    stackForced[depth] = forced;
    depth++;
    linearized += x >= 0 ? 2 : 1;
    state = ns;
    lift(i);
    firstReturnPos = -1;
    if (depth > bestDepth) recordBest();
    fresh = true;
  };

  while (true) {
    if (failing) {
      if (depth === 0) {
        const d = detail();
        return {
          key, ok: false, unknown: false, ops: total, detail: d,
          message: `key ${keyName} is not linearizable (${total} ops)\n${describeDetail(d, n)}`,
        };
      }
      if (++steps > maxSteps) return unknownResult();
      depth--;
      const i = stackOp[depth]!;
      const x = stackInfo[depth]!;
      state = stackState[depth]!;
      linearized -= x >= 0 ? 2 : 1;
      clearBit(i);
      if (x >= 0) clearBit(x);
      unlift(i);
      firstReturnPos = -1;
      if (stackForced[depth] === 0) {
        // Resume the parent's scan after the op just undone.
        failing = false;
        entry = next[2 * i + 1]!;
      }
      continue;
    }

    if (depth === nOk) return { key, ok: true, unknown: false, ops: total };

    if (fresh) {
      fresh = false;
      let g = -1;
      let e = next[0]!;
      for (; (e & 1) === 1; e = next[e]!) {
        const i = (e - 1) >> 1;
        if (kind[i] === KIND_GET && val[i] === state) {
          g = i;
          break;
        }
      }
      if (g < 0) {
        // e is the first return entry (one exists: an ok op is pending).
        firstReturnPos = pos[e]!;
        entry = next[0]!;
      } else {
        if (++steps > maxSteps) return unknownResult();
        setBit(g);
        if (cacheAdd(state)) {
          push(g, -1, state, 1);
        } else {
          clearBit(g);
          failing = true;
        }
        continue;
      }
    }

    if ((entry & 1) === 1) {
      // Call entry: try to linearize ok op i now. (Gets legal in the current
      // state do not occur here: they are forced.)
      const i = (entry - 1) >> 1;
      const k = kind[i]!;
      let ns: number;
      let x = -1;
      if (k === KIND_GET) {
        ns = val[i]!;
        x = ns !== state ? findInfoWriter(i, ns) : -1;
        if (x < 0) {
          entry = next[entry]!;
          continue;
        }
        setBit(x);
      } else {
        ns = k === KIND_PUT ? val[i]! : ABSENT;
      }
      if (++steps > maxSteps) return unknownResult();
      setBit(i);
      if (cacheAdd(ns)) {
        push(i, x, ns, 0);
      } else {
        clearBit(i);
        if (x >= 0) clearBit(x);
        entry = next[entry]!;
      }
    } else if (entry >= 0) {
      // Return entry: op (entry-2)/2 had to be linearized by now, and no
      // candidate before it led to a valid completion.
      if (depth === bestDepth && blocked < 0) recordBlocked(entry);
      failing = true;
    } else {
      throw new Error('linearizability: internal error, ran off the end of the entry list');
    }
  }
}

function describeDetail(d: ViolationDetail, checked: number): string {
  const lines: string[] = [];
  const state = d.stateAfterPrefix === null ? 'absent' : `holds ${formatValue(d.stateAfterPrefix)}`;
  lines.push(`  longest linearizable prefix: ${d.linearizedCount} of ${checked} ops checked; register then ${state}`);
  if (d.lastLinearized.length > 0) {
    const skipped = d.linearizedCount - d.lastLinearized.length;
    lines.push(`  last linearized ops${skipped > 0 ? ` (after ${skipped} earlier ones)` : ''}:`);
    for (const op of d.lastLinearized) lines.push(`    ${describeOp(op)}`);
  }
  if (d.blockedOp !== null) {
    lines.push(`  could not linearize: ${describeOp(d.blockedOp)}`);
    lines.push('    (it completed, but no order of the ops concurrent with it makes it legal)');
  }
  if (d.pending.length > 0) {
    lines.push('  other candidate ops at that point:');
    for (const op of d.pending) lines.push(`    ${describeOp(op)}`);
  }
  return lines.join('\n');
}
