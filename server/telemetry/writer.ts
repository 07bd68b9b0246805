import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Storage, TelemetryRow } from '../storage';

interface Pending {
  row: TelemetryRow;
  done?: (err: Error | null) => void;
}

export interface TelemetryWriterOptions {
  maxRows: number;
  maxDelayMs: number;
  /** Readings held in memory while storage is slow or down; past this, devices are paused. */
  highWater?: number;
  retryMs?: number;
}

/**
 * Batches telemetry writes: one transaction per batch, bounded by rows and time, so a burst from
 * many devices does not cost one commit per line. Readings are held (in a bounded buffer) and
 * retried while storage is unreachable; `full` tells callers to stop reading from devices.
 */
export class TelemetryWriter extends EventEmitter {
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;
  private failing = false;
  private closed = false;
  private readonly highWater: number;
  private readonly retryMs: number;
  stored = 0;

  constructor(
    private readonly storage: Storage,
    private readonly log: Logger,
    private readonly opts: TelemetryWriterOptions,
  ) {
    super();
    this.highWater = opts.highWater ?? 50_000;
    this.retryMs = opts.retryMs ?? 500;
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

  /** Queues a reading; resolves once it is committed. */
  write(row: TelemetryRow): Promise<void> {
    return new Promise((resolve, reject) => {
      this.add(row, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Queues a reading whose commit nobody waits for. */
  add(row: TelemetryRow, done?: (err: Error | null) => void): void {
    if (this.closed) {
      done?.(new Error('telemetry writer is closed'));
      return;
    }
    this.queue.push({ row, done });
    if (this.writing) return;
    if (this.queue.length >= this.opts.maxRows) this.flushSoon(0);
    else this.flushSoon(this.opts.maxDelayMs);
  }

  private flushSoon(delay: number): void {
    if (this.timer && delay > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, delay);
  }

  /** Writes everything queued now; resolves when it is committed (or failed for good at close). */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
    if (this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.opts.maxRows);
    this.writing = this.writeBatch(batch);
    try {
      await this.writing;
    } finally {
      this.writing = null;
    }
    if (this.queue.length > 0) {
      this.flushSoon(this.failing ? this.retryMs : this.queue.length >= this.opts.maxRows ? 0 : this.opts.maxDelayMs);
    }
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
    if (this.queue.length < this.highWater / 2) this.emit('drain');
  }

  /** Writes what is queued and refuses new readings. Gives up after `timeoutMs` if storage is down. */
  async close(timeoutMs = 10_000): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length > 0 || this.writing) {
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
