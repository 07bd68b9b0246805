import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Reply, RequestBody, SqliteRunResult, ThreadTelemetryBatch, ThreadTelemetryRow, WorkerData } from './sqlite-protocol';

export type { SqliteRunResult, ThreadTelemetryRow };

/**
 * SQLite on its own thread. better-sqlite3 is synchronous: on the main thread a 500-row telemetry
 * commit blocked the event loop for 15–30 ms, and that was directly the p99 of everything else
 * (dashboard latency, command round trips). Here one worker thread owns the only writing connection to the
 * file; the main thread sends it queries and telemetry batches as messages and never waits on disk
 * (except for one primary-key read of a user, on a read-only connection: sqlite-storage.ts).
 *
 * Inside the worker, telemetry is written in slices: one transaction of up to {@link SLICE_MS} ms
 * over as many queued batches as fit, and a transaction waits up to {@link GROUP_MS} ms for more
 * rows to share it (group commit: with many devices each commit rewrites index and `devices`
 * pages all over the file, and each checkpoint copies them again; bench/README.md has the
 * figures). Every 8 rows a slice looks at its messages: a query that only reads runs at once,
 * inside the transaction; one that writes (a command, a session) runs inside it too and ends the
 * slice, answered with its commit, so it waits for a few rows and one commit, not for the group.
 * A batch is answered once its rows and the devices' `latest` they imply are committed, so
 * `stored` still means committed. While a query-builder transaction is open (`begin` … `commit`
 * from the main thread) no slice runs, so the two never mix.
 *
 * Readings are committed in two stages. A slice inserts them into `telemetry_recent`, a table
 * without indexes: with a thousand devices, inserting into `telemetry`'s two indexes (both keyed
 * by device first) dirtied about one index page per reading per commit, and each commit wrote all
 * of them to the WAL and each checkpoint copied them again. The thread moves the staged rows into
 * `telemetry` in rounds ({@link MERGE_MS} after the first, or at {@link MERGE_ROWS} rows), a
 * device's rows together, in short slices between the telemetry ones, so a hot index page is
 * written once for many readings. When more than twice MERGE_ROWS wait to be moved (readings never
 * leave a gap), every slice moves some before it inserts, so the staged rows stay bounded. A
 * reader of `telemetry` (history, the API's range and CSV, counts) first has the device's staged
 * rows moved (`flushTelemetry`). The thread, the only writer, keeps which rows are staged, and
 * their message ids, in memory (a reading resent while its first copy is staged is not staged
 * again) and reads them back from the table at start, so rows a killed process left staged are
 * moved then; a row already moved keeps its id, so moving it twice is a no-op, and a resent
 * reading whose first copy was moved already is skipped when moved, by `telemetry`'s unique
 * (device_id, msg_id) index. bench/README.md has the figures (`node bench/storage-rate.mjs`).
 *
 * WAL checkpoints run on a second thread with its own connection, once telemetry has been
 * written. With SQLite's automatic checkpoints the commit that crosses the threshold also copies
 * the WAL into the database file: 50–100 ms, during which every query waits (that was the p99 of
 * the command round trip under load). A passive checkpoint on another connection copies pages
 * while this thread goes on committing. The WAL file is only rewound when a checkpoint has copied
 * all of it before the next write, which a steady stream of commits prevents; so once the WAL
 * holds more than {@link WAL_RESET_FRAMES} frames the checkpointer asks this thread to hold
 * telemetry (queries go on), copies the rest (a few ms), and releases it. If the checkpointer
 * thread fails, this connection goes back to automatic checkpoints.
 */

export const SLICE_MS = 50;
/** Group commit (sqlite-worker.ts): telemetry waits up to this long for more rows to share its commit… */
export const GROUP_MS = 100;
/** …or until this many are waiting. */
export const GROUP_ROWS = 5000;
/** Staged readings are moved into `telemetry` at most this long after the first of them… */
export const MERGE_MS = 2000;
/** The most characters of readings' data one telemetry message carries (V8's longest string is about 2^29). */
export const MAX_BATCH_TEXT = 1 << 26;
/** …or once this many are staged. */
export const MERGE_ROWS = 40_000;
/** How often the checkpointer copies the WAL into the file (a page changed many times meanwhile is copied once). */
export const CHECKPOINT_EVERY_MS = 250;
/** WAL frames (pages of 4 KiB) past which telemetry is held for a moment so the WAL can be rewound: ~80 MB. */
export const WAL_RESET_FRAMES = 20_000;

/** Knobs for tests; the defaults are the constants above. */
export interface SqliteThreadOptions {
  checkpointEveryMs?: number;
  walResetFrames?: number;
  groupMs?: number;
  groupRows?: number;
  mergeMs?: number;
  mergeRows?: number;
}

/**
 * The built entry file of a thread. The bundle (dist/) has them beside itself (scripts/build.mjs);
 * running from the TypeScript sources (the tests), they are built on first use.
 */
function threadFile(entry: 'sqlite-worker' | 'sqlite-checkpointer'): string {
  if (!__filename.endsWith('.ts')) return path.join(__dirname, `${entry}.js`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { buildThreadEntry } = require('./dev-build') as typeof import('./dev-build');
  return buildThreadEntry(path.join(__dirname, `${entry}.ts`));
}

/** The main thread's handle on the worker: requests in, promises out. */
export class SqliteThread {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: never) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;

  constructor(file: string, opts: SqliteThreadOptions = {}) {
    const workerData: WorkerData = {
      file,
      sliceMs: SLICE_MS,
      groupMs: opts.groupMs ?? GROUP_MS,
      groupRows: opts.groupRows ?? GROUP_ROWS,
      mergeMs: opts.mergeMs ?? MERGE_MS,
      mergeRows: opts.mergeRows ?? MERGE_ROWS,
      checkpointEveryMs: opts.checkpointEveryMs ?? CHECKPOINT_EVERY_MS,
      walResetFrames: opts.walResetFrames ?? WAL_RESET_FRAMES,
      checkpointerFile: threadFile('sqlite-checkpointer'),
    };
    this.worker = new Worker(threadFile('sqlite-worker'), { workerData });
    this.worker.unref();
    this.worker.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) this.worker.unref();
      if (m.error) p.reject(Object.assign(new Error(m.error.message), { code: m.error.code, name: m.error.name ?? 'Error' }));
      else p.resolve(m.result as never);
    });
    const die = (err: Error) => {
      this.dead = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`SQLite thread exited (${code})`)));
  }

  private request<T>(msg: RequestBody): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      // Held while a request is in flight, so a CLI run cannot exit with a query unanswered.
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve: resolve as (v: never) => void, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  run(sql: string, params: readonly unknown[]): Promise<SqliteRunResult> {
    return this.request({ op: 'query', sql, params });
  }

  /** Resolves once every row is committed. */
  insertTelemetry(rows: ThreadTelemetryRow[]): Promise<void> {
    const parts: Promise<void>[] = [];
    let ids: (string | null)[] = new Array(rows.length * 2);
    let numbers = new Float64Array(rows.length * 2);
    let text = '';
    let k = 0;
    for (const r of rows) {
      const json = r.json ?? JSON.stringify(r.data);
      if (k > 0 && text.length + json.length > MAX_BATCH_TEXT) {
        // A string has a length limit: a batch of long readings crosses in parts, in order.
        parts.push(this.request({ op: 'telemetry', rows: { ids: ids.slice(0, k), numbers: numbers.slice(0, k), text } }));
        ids = new Array(ids.length - k);
        numbers = new Float64Array(numbers.length - k);
        text = '';
        k = 0;
      }
      ids[k] = r.deviceId;
      numbers[k++] = r.ts;
      ids[k] = r.msgId;
      numbers[k++] = json.length;
      text += json;
    }
    // (Each part's arrays are sized to the rows left, so the last part fills its own.)
    const batch: ThreadTelemetryBatch = { ids, numbers, text };
    parts.push(this.request({ op: 'telemetry', rows: batch }));
    return parts.length === 1 ? parts[0]! : Promise.all(parts).then(() => undefined);
  }

  /** Moves a device's staged readings (every device's without one) into `telemetry`: before reading it. */
  flushTelemetry(deviceId?: string): Promise<void> {
    return this.request(deviceId === undefined ? { op: 'flush' } : { op: 'flush', deviceId });
  }

  /** Drops the staged readings of a device that was removed. */
  forgetTelemetry(deviceId: string): Promise<void> {
    return this.request({ op: 'forget', deviceId });
  }

  /** Finishes queued telemetry, closes the database and ends the thread. */
  async close(): Promise<void> {
    if (!this.dead) await this.request({ op: 'close' }).catch(() => {});
    await this.worker.terminate();
  }
}
