import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Storage, TelemetryRow } from '../storage';

/**
 * A reading queued for storage and who waits for its commit. `done` is called as a method (a
 * class can be its own Pending, with no closure per reading: the device core's readings are).
 */
export interface Pending {
  readonly row: TelemetryRow;
  done?(err: Error | null): void;
}

export interface TelemetryWriterOptions {
  maxRows: number;
  maxDelayMs: number;
  /** Readings held in memory while storage is slow or down; past this, devices are paused. */
  highWater?: number;
  /** Paused devices are resumed (`drain`) once fewer readings than this are held; default half of highWater. */
  lowWater?: number;
  retryMs?: number;
  /** Batches being written at once (default 8): the next one is ready when the previous commits. */
  maxInFlight?: number;
}

/**
 * Default high-water mark: a few batches. Past it devices are paused; a small backlog keeps the
 * device→stored latency and each resume burst small (50,000 gave second-long stalls at overload).
 */
export const DEFAULT_HIGH_WATER = 5_000;

/**
 * Batches telemetry writes: one transaction per batch, bounded by rows and time, so a burst from
 * many devices does not cost one commit per line. Readings are held (in a bounded buffer) and
 * retried while storage is unreachable; `full` tells callers to stop reading from devices, and
 * `drain` (at the low-water mark) to start again.
 *
 * While a full batch or more is queued, batches are written back to back, one per turn of the
 * event loop (`setImmediate` between them), so sockets keep being served between commits; up to
 * `maxInFlight` batches are with storage at once, so the next is ready when one commits.
 */
export interface TelemetryWriterEvents {
  /** Fewer readings are held than the low-water mark: paused devices may send again. */
  drain: [];
  /** A write failed; readings are held and retried. */
  unhealthy: [];
}

export class TelemetryWriter extends EventEmitter<TelemetryWriterEvents> {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly maxInFlight: number;
  private failing = false;
  private closed = false;
  private readonly highWater: number;
  private readonly lowWater: number | undefined;
  private readonly retryMs: number;
  stored = 0;

  constructor(
    private readonly storage: Storage,
    private readonly log: Logger,
    private readonly opts: TelemetryWriterOptions,
  ) {
    super();
    this.highWater = opts.highWater ?? DEFAULT_HIGH_WATER;
    this.lowWater = opts.lowWater;
    this.retryMs = opts.retryMs ?? 500;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 8);
  }

  /** True while more readings are held than the high-water mark. */
  get full(): boolean {
    return this.queue.length >= this.highWater;
  }

  /** True while the last write failed (storage unreachable). */
  get unhealthy(): boolean {
    return this.failing;
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Queues a reading; its `done`, if it has one, is called once it is committed (or refused). */
  enqueue(p: Pending): void {
    if (this.closed) {
      p.done?.(new Error('telemetry writer is closed'));
      return;
    }
    this.queue.push(p);
    // Every batch that completes schedules the next; so does a free writing slot now.
    if (this.inFlight.size >= this.maxInFlight || (this.failing && this.inFlight.size > 0)) return;
    // While storage is failing, new readings wait for the next retry instead of hammering it.
    if (this.failing) this.flushSoon(this.retryMs);
    else if (this.queue.length >= this.opts.maxRows) this.flushSoon(0);
    else this.flushSoon(this.opts.maxDelayMs);
  }

  /** Where paused devices are resumed; read each time, so a changed highWater applies at once. */
  private get resumeBelow(): number {
    return this.lowWater ?? this.highWater / 2;
  }

  /** Schedules a flush: `0` = at the end of this turn of the event loop (a full batch is waiting). */
  private flushSoon(delay: number): void {
    if (this.immediate) return;
    if (delay <= 0) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.immediate = setImmediate(() => {
        this.immediate = null;
        void this.flush();
      });
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, delay);
  }

  /**
   * Writes the next batch (waiting for a free slot first); resolves when it is committed (or
   * failed). With nothing queued it waits for the batches in flight.
   */
  async flush(): Promise<void> {
    while (this.inFlight.size >= this.maxInFlight) await Promise.race(this.inFlight);
    if (this.queue.length === 0) {
      await Promise.all(this.inFlight);
      return;
    }
    // Behind (several batches queued): take up to four batches at once, so storage gets fewer,
    // larger writes instead of waiting for this thread between them.
    const batch = this.queue.splice(0, this.queue.length >= 2 * this.opts.maxRows ? 4 * this.opts.maxRows : this.opts.maxRows);
    const writing: Promise<void> = this.writeBatch(batch).finally(() => {
      this.inFlight.delete(writing);
      if (this.queue.length > 0) {
        this.flushSoon(this.failing ? this.retryMs : this.queue.length >= this.opts.maxRows ? 0 : this.opts.maxDelayMs);
      }
    });
    this.inFlight.add(writing);
    // A full batch more is waiting and a slot is free: start it in this turn too.
    if (!this.failing && this.queue.length >= this.opts.maxRows && this.inFlight.size < this.maxInFlight) this.flushSoon(0);
    await writing;
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    try {
      await this.storage.insertTelemetry(batch.map((p) => p.row));
    } catch (err) {
      if (!this.failing) this.log.error({ err }, 'telemetry write failed; holding readings and retrying');
      this.failing = true;
      // Put the batch back in front, in order; it is retried after retryMs.
      this.queue.unshift(...batch);
      this.emit('unhealthy');
      return;
    }
    if (this.failing) this.log.info('telemetry writes recovered');
    this.failing = false;
    this.stored += batch.length;
    for (const p of batch) p.done?.(null);
    if (this.queue.length < this.resumeBelow) this.emit('drain');
  }

  /** Writes what is queued and refuses new readings. Gives up after `timeoutMs` if storage is down. */
  async close(timeoutMs = 10_000): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = null;
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length > 0 || this.inFlight.size > 0) {
      await this.flush();
      if (this.failing) {
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, this.retryMs));
      }
    }
    const lost = this.queue.splice(0);
    if (lost.length > 0) this.log.error({ lost: lost.length }, 'storage unreachable at shutdown; readings not stored');
    for (const p of lost) p.done?.(new Error('not stored: storage unreachable at shutdown'));
  }
}
