// Latency histogram with 1 % relative resolution (log buckets), mergeable across processes.
// Values are milliseconds; anything below 0.01 ms goes into the first bucket.

const MIN = 0.01;
const GROWTH = Math.log(1.01);
const BUCKETS = 2000; // 0.01 ms * 1.01^2000 ≈ 4.4e6 ms: more than any bench window

export class Histogram {
  constructor() {
    this.counts = new Uint32Array(BUCKETS);
    this.n = 0;
    this.max = 0;
    this.sum = 0;
  }

  record(ms) {
    if (!(ms >= 0)) ms = 0; // NaN or negative clock skew: count it as 0
    const i = ms <= MIN ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / MIN) / GROWTH));
    this.counts[i]++;
    this.n++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }

  reset() {
    this.counts.fill(0);
    this.n = 0;
    this.max = 0;
    this.sum = 0;
  }

  /** Compact form for IPC: only the non-empty buckets. */
  toJSON() {
    const b = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i] !== 0) b.push(i, this.counts[i]);
    return { n: this.n, max: this.max, sum: this.sum, b };
  }

  static from(json) {
    const h = new Histogram();
    if (json) h.merge(json);
    return h;
  }

  merge(json) {
    const { b } = json;
    for (let k = 0; k < b.length; k += 2) this.counts[b[k]] += b[k + 1];
    this.n += json.n;
    this.sum += json.sum;
    if (json.max > this.max) this.max = json.max;
    return this;
  }

  /** Upper edge of the bucket holding quantile q (never above the exact max). */
  quantile(q) {
    if (this.n === 0) return null;
    const rank = Math.max(1, Math.ceil(q * this.n));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(this.max, MIN * Math.exp(i * GROWTH));
    }
    return this.max;
  }

  summary() {
    return {
      n: this.n,
      p50_ms: round(this.quantile(0.5)),
      p99_ms: round(this.quantile(0.99)),
      max_ms: this.n ? round(this.max) : null,
      mean_ms: this.n ? round(this.sum / this.n) : null,
    };
  }
}

export function round(x, digits = 2) {
  if (x === null || x === undefined || !Number.isFinite(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * Milliseconds on the machine's monotonic clock (CLOCK_MONOTONIC, as the C generator reads it),
 * with sub-millisecond resolution, comparable across local processes. Not the wall clock: it was
 * stepped during a run on a VM, and `performance.timeOrigin + performance.now()` (the wall clock
 * at process start, then monotonic) then disagreed with the generator's wall-clock stamps by the
 * step, which made every later latency of that run negative (counted as 0) or too long.
 */
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
