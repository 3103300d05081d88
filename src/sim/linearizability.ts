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
 * Two sound reductions keep 'info' writes from blowing up the search (with k
 * pending info writes there are 2^k subsets of them that could have applied):
 * a linearization in which an info write is not immediately followed by a get
 * can be turned into an equally valid one without that write (the next write
 * overwrites it unobserved, or nothing follows), and the same holds for an
 * info write that does not change the state. So the search only linearizes an
 * info write when it changes the state, and then requires the very next
 * linearized op to be a get (the "obligation" flag, part of the cache key).
 * Info writes whose value no 'ok' get ever returns are dropped up front.
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
const PENDING_SCAN_LIMIT = 10_000;

const KIND_PUT = 0;
const KIND_GET = 1;
const KIND_DELETE = 2;

/** Absent state / null value id. */
const ABSENT = 0;

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

interface CacheEntry {
  /** Encoded state: value id * 2 + obligation flag. */
  s: number;
  /** Index of the first ok-op bitset word that is not full. */
  low: number;
  /** okWords[low..high] followed by all info words. */
  w: Uint32Array;
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

  // Intern values: 0 = absent, 1.. = distinct strings.
  const valueIds = new Map<string, number>();
  const valueNames: (string | null)[] = [null];
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
      val[i] = intern(op.value as string);
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

  // Doubly linked list of entries. Node 0 is the head sentinel; the call
  // entry of op i is node 2i+1 and its return entry node 2i+2; -1 is nil.
  const m = 2 * n;
  const times = new Float64Array(m + 1);
  const order = new Int32Array(m);
  for (let i = 0; i < n; i++) {
    const op = hist[i]!;
    times[2 * i + 1] = op.invoke;
    times[2 * i + 2] = isInfo[i] === 1 ? Infinity : op.complete;
    order[2 * i] = 2 * i + 1;
    order[2 * i + 1] = 2 * i + 2;
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
  const next = new Int32Array(m + 1);
  const prev = new Int32Array(m + 1);
  let last = 0;
  for (let j = 0; j < m; j++) {
    const node = order[j]!;
    next[last] = node;
    prev[node] = last;
    last = node;
  }
  next[last] = -1;

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
  // "all ones below low, all zeros above high"; cache entries store only the
  // window [low, high] (plus the info words) and stay small even for 100k-op
  // keys. hash is an incremental (Zobrist) XOR hash of the linearized set.
  const okWords = new Uint32Array((nOk + 31) >>> 5);
  const infoWords = new Uint32Array((nInfo + 31) >>> 5);
  const nOkWords = okWords.length;
  const nInfoWords = infoWords.length;
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

  const cache = new Map<number, CacheEntry[]>();
  /** Adds (current linearized set, s) to the cache; false if it was already there. */
  const cacheAdd = (s: number): boolean => {
    const sliceLen = high >= low ? high - low + 1 : 0;
    const h = (hash ^ fmix32(s + 0x632be5ab)) | 0;
    let bucket = cache.get(h);
    if (bucket === undefined) {
      bucket = [];
      cache.set(h, bucket);
    } else {
      outer: for (const e of bucket) {
        if (e.s !== s || e.low !== low || e.w.length !== sliceLen + nInfoWords) continue;
        const w = e.w;
        for (let j = 0; j < sliceLen; j++) if (w[j] !== okWords[low + j]) continue outer;
        for (let j = 0; j < nInfoWords; j++) if (w[sliceLen + j] !== infoWords[j]) continue outer;
        return false;
      }
    }
    const w = new Uint32Array(sliceLen + nInfoWords);
    if (sliceLen > 0) w.set(okWords.subarray(low, low + sliceLen));
    if (nInfoWords > 0) w.set(infoWords, sliceLen);
    bucket.push({ s, low, w });
    return true;
  };

  // Search state.
  const stackOp = new Int32Array(n);
  const stackS = new Int32Array(n);
  let depth = 0;
  let state = ABSENT;
  let obligation = 0; // 1: the last linearized op is an info write; the next must be a get
  let remaining = nOk;

  // Diagnostics: the deepest linearization found and where it got stuck.
  let bestDepth = 0;
  let bestTail: number[] = [];
  let bestState = ABSENT;
  let blocked = -1;
  let pending: number[] = [];

  const detail = (): ViolationDetail => ({
    linearizedCount: bestDepth,
    lastLinearized: bestTail.map((i) => hist[i]!),
    stateAfterPrefix: valueNames[bestState] ?? null,
    blockedOp: blocked >= 0 ? hist[blocked]! : null,
    pending: pending.map((i) => hist[i]!),
  });
  const describeDetail = (d: ViolationDetail): string => {
    const lines: string[] = [];
    lines.push(`  longest linearizable prefix: ${d.linearizedCount} of ${n} ops checked; register then ${d.stateAfterPrefix === null ? 'absent' : `holds ${formatValue(d.stateAfterPrefix)}`}`);
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
  };

  let steps = 0;
  let entry = next[0]!;
  while (true) {
    if (remaining === 0) return { key, ok: true, unknown: false, ops: total };
    if (++steps > maxSteps) {
      const d = detail();
      return {
        key, ok: false, unknown: true, ops: total, detail: d,
        message: `key ${keyName}: linearizability unknown, search budget of ${maxSteps} steps exhausted (${total} ops)\n${describeDetail(d)}`,
      };
    }
    if (entry < 0) throw new Error('linearizability: internal error, ran off the end of the entry list');

    if ((entry & 1) === 1) {
      // Call entry: try to linearize op i now.
      const i = (entry - 1) >> 1;
      const k = kind[i]!;
      let ns: number;
      let nobl = 0;
      if (k === KIND_GET) {
        if (val[i] !== state) {
          entry = next[entry]!;
          continue;
        }
        ns = state;
      } else {
        ns = k === KIND_PUT ? val[i]! : ABSENT;
        if (isInfo[i] === 1) {
          // Info writes only when they change the state, and never right
          // after another info write (both would go unobserved).
          if (obligation === 1 || ns === state) {
            entry = next[entry]!;
            continue;
          }
          nobl = 1;
        } else if (obligation === 1) {
          entry = next[entry]!;
          continue;
        }
      }
      setBit(i);
      if (cacheAdd(ns * 2 + nobl)) {
        stackOp[depth] = i;
        stackS[depth] = state * 2 + obligation;
        depth++;
        state = ns;
        obligation = nobl;
        lift(i);
        if (isInfo[i] === 0) remaining--;
        if (nobl === 0 && depth > bestDepth) {
          bestDepth = depth;
          bestTail = Array.from(stackOp.subarray(Math.max(0, depth - TAIL_OPS), depth));
          bestState = state;
          blocked = -1;
          pending = [];
        }
        entry = next[0]!;
      } else {
        clearBit(i);
        entry = next[entry]!;
      }
    } else {
      // Return entry: op (entry-2)/2 must have been linearized by now. Backtrack.
      if (obligation === 0 && depth === bestDepth && blocked < 0) {
        blocked = (entry - 2) >> 1;
        const cands: number[] = [];
        let scanned = 0;
        for (let e = next[0]!; e !== entry && e >= 0 && cands.length < PENDING_OPS && scanned < PENDING_SCAN_LIMIT; e = next[e]!, scanned++) {
          if ((e & 1) === 1 && (e - 1) >> 1 !== blocked) cands.push((e - 1) >> 1);
        }
        pending = cands;
      }
      if (depth === 0) {
        const d = detail();
        return {
          key, ok: false, unknown: false, ops: total, detail: d,
          message: `key ${keyName} is not linearizable (${total} ops)\n${describeDetail(d)}`,
        };
      }
      depth--;
      const i = stackOp[depth]!;
      const s = stackS[depth]!;
      state = s >> 1;
      obligation = s & 1;
      clearBit(i);
      unlift(i);
      if (isInfo[i] === 0) remaining++;
      entry = next[2 * i + 1]!;
    }
  }
}
