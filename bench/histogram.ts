/**
 * A small HdrHistogram-like latency histogram: values in microseconds (integers), kept in
 * log-linear buckets with 64 sub-buckets per power of two above 128 µs (exact below 128 µs),
 * so any recorded value is reported within 1/64 (1.6%) of its true value. Fixed memory
 * (about 1,700 counters up to 2^31 µs), O(1) record, no allocation per record.
 */
const SUB_BITS = 6; // 64 sub-buckets per power of two
const SUB = 1 << SUB_BITS;
const LINEAR = SUB * 2; // values below 128 are exact
const MAX_VALUE = 2 ** 31 - 1;
const BUCKETS = SUB * (31 - SUB_BITS + 2);

function indexOf(v: number): number {
  if (v < LINEAR) return v;
  const bits = 31 - Math.clz32(v); // position of the highest set bit, >= 7
  const shift = bits - SUB_BITS;
  return SUB * shift + (v >>> shift);
}

/** Midpoint of a bucket's value range (the value reported for anything in it). */
function valueOf(index: number): number {
  if (index < LINEAR) return index;
  const shift = Math.floor(index / SUB) - 1;
  const m = index - SUB * shift;
  const lo = m * 2 ** shift;
  const hi = (m + 1) * 2 ** shift - 1;
  return (lo + hi) / 2;
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  count = 0;
  private sum = 0;
  min = Infinity;
  max = 0;

  /** Records one latency in microseconds (fractions are rounded; clamped to [0, 2^31)). */
  record(us: number): void {
    const v = Math.min(MAX_VALUE, Math.max(0, Math.round(us)));
    this.counts[indexOf(v)]! += 1;
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }

  /** Records a latency given in milliseconds (as from performance.now()). */
  recordMs(ms: number): void {
    this.record(ms * 1000);
  }

  merge(other: Histogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    this.count += other.count;
    this.sum += other.sum;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
  }

  /** The value at quantile q (0..1) in microseconds; NaN when empty. */
  quantileUs(q: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, valueOf(i)));
    }
    return this.max;
  }

  quantileMs(q: number): number {
    return this.quantileUs(q) / 1000;
  }

  meanMs(): number {
    return this.count === 0 ? NaN : this.sum / this.count / 1000;
  }
}
