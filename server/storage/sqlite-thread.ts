import { Worker } from 'node:worker_threads';

/**
 * SQLite on its own thread. better-sqlite3 is synchronous: on the main thread a 500-row telemetry
 * commit blocked the event loop for 15–30 ms, and that was directly the p99 of everything else
 * (dashboard latency, command round trips). Here one worker thread owns the only connection to the
 * file; the main thread sends it queries and telemetry batches as messages and never waits on disk.
 *
 * Inside the worker, telemetry is written in slices: one transaction of up to {@link SLICE_MS} ms
 * over as many queued batches as fit (few commits: with many devices each commit rewrites pages
 * all over the indexes). A slice ends early, after at most 8 more rows, as soon as a query from
 * the main thread is waiting, so a query (a command, a session) waits for a few rows and a
 * commit, not for a whole batch or slice. A batch is answered once its rows and the devices'
 * `latest` they imply are committed, so `stored` still means committed. While a query-builder transaction is open
 * (`begin` … `commit` from the main thread) no slice runs, so the two never mix.
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

export const SLICE_MS = 20;
/** How often the checkpointer looks at the WAL. */
export const CHECKPOINT_EVERY_MS = 100;
/** WAL frames (pages of 4 KiB) past which telemetry is held for a moment so the WAL can be rewound: ~80 MB. */
export const WAL_RESET_FRAMES = 20_000;

export interface SqliteRunResult {
  rows: Record<string, unknown>[];
  changes?: number;
  lastInsertRowid?: number | bigint;
}

/** Knobs for tests; the defaults are the constants above. */
export interface SqliteThreadOptions {
  checkpointEveryMs?: number;
  walResetFrames?: number;
}

/** A reading as the worker stores it. */
export interface ThreadTelemetryRow {
  deviceId: string;
  msgId: string | null;
  ts: number;
  data: Record<string, unknown>;
}

type Request =
  | { id: number; op: 'query'; sql: string; params: readonly unknown[] }
  | { id: number; op: 'telemetry'; rows: ThreadTelemetryRow[] }
  | { id: number; op: 'close' };

/** A request before it gets its id. */
type RequestBody = Request extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

type Reply = { id: number; result?: unknown; error?: { message: string; code?: string; name?: string } };

/**
 * The worker's body. It is sent to the thread as source text (`toString()`), so it must be
 * self-contained plain JavaScript: no imports from this file, only `require` of what
 * `workerData` names. This works the same from the TypeScript sources (tests) and from the bundle.
 */
function workerMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { parentPort, workerData, receiveMessageOnPort } = require('node:worker_threads');
  const Database = require(workerData.driverPath);
  const db = new Database(workerData.file);
  // WAL + NORMAL: a commit survives a crash of the process (kill -9); see docs/deploying.md.
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  // Until the checkpointer runs (and if it fails): checkpoint every ~40 MB instead of ~4 MB.
  // Telemetry from many devices dirties pages all over the indexes, and a page changed many times
  // between checkpoints is copied once.
  const AUTOCHECKPOINT = 'wal_autocheckpoint = 10000';
  db.pragma(AUTOCHECKPOINT);
  // 64 MiB of page cache (SQLite's default is 2 MiB): once the telemetry indexes outgrow the cache,
  // every insert from a thousand devices reads index pages back from the file.
  db.pragma('cache_size = -65536');
  const sliceMs: number = workerData.sliceMs;

  const cache = new Map<string, any>();
  const prepare = (sql: string) => {
    let stmt = cache.get(sql);
    if (!stmt) {
      stmt = db.prepare(sql);
      if (cache.size >= 256) cache.clear();
      cache.set(sql, stmt);
    }
    return stmt;
  };
  const reply = (id: number, result: unknown) => parentPort.postMessage({ id, result });
  const fail = (id: number, err: any) =>
    parentPort.postMessage({ id, error: { message: String(err?.message ?? err), code: err?.code, name: err?.name } });

  // Telemetry jobs, written in slices: one transaction takes rows from as many queued jobs as
  // fit, then moves each device's `latest` once (newest reading of the slice). A job is answered
  // once its rows and the `latest` they imply are committed.
  interface Job {
    id: number;
    rows: any[];
    pos: number;
  }
  const jobs: Job[] = [];
  /** Jobs whose rows are committed, waiting for the `latest` updates still pending. */
  let finished: Job[] = [];
  /** deviceId → newest row inserted but not yet written to devices.latest. */
  const pendingLatest = new Map<string, any>();
  let scheduled = false;
  let closing: number | null = null;

  // The checkpointer: another thread and connection, started with the first telemetry (a CLI run
  // never needs it). `held`: telemetry waits while it copies the last of the WAL.
  let checkpointer: any = null;
  let checkpointerFailed = false;
  let held = false;
  const checkpointerMain = () => {
    const { parentPort: port, workerData: data } = require('node:worker_threads');
    const Db = require(data.driverPath);
    const conn = new Db(data.file);
    let asked = false;
    const checkpoint = () => conn.pragma('wal_checkpoint(PASSIVE)')[0] as { busy: number; log: number; checkpointed: number };
    port.on('message', (m: string) => {
      if (m !== 'held') return;
      try {
        checkpoint();
      } finally {
        asked = false;
        port.postMessage('release');
      }
    });
    setInterval(() => {
      if (asked) return;
      // Copies what was committed since the last one, while the writer goes on.
      const r = checkpoint();
      if (r.log >= data.resetFrames) {
        asked = true;
        port.postMessage('hold');
      }
    }, data.everyMs);
  };
  const startCheckpointer = () => {
    if (checkpointer || checkpointerFailed || closing !== null || workerData.file === ':memory:') return;
    const { Worker } = require('node:worker_threads');
    checkpointer = new Worker(`(${checkpointerMain.toString()})()`, {
      eval: true,
      workerData: { file: workerData.file, driverPath: workerData.driverPath, everyMs: workerData.checkpointEveryMs, resetFrames: workerData.walResetFrames },
    });
    db.pragma('wal_autocheckpoint = 0');
    checkpointer.on('message', (m: string) => {
      // Between slices (a slice is synchronous): no new slice starts until 'release'.
      if (m === 'hold') {
        held = true;
        checkpointer.postMessage('held');
      } else if (m === 'release') {
        held = false;
        schedule();
      }
    });
    const lost = () => {
      // Back to SQLite's own checkpoints for good; telemetry is never left held.
      checkpointer = null;
      checkpointerFailed = true;
      held = false;
      if (db.open) db.pragma(AUTOCHECKPOINT);
      schedule();
    };
    checkpointer.on('error', lost);
    checkpointer.on('exit', lost);
  };

  const schedule = () => {
    if (scheduled || held || db.inTransaction || (jobs.length === 0 && pendingLatest.size === 0)) return;
    scheduled = true;
    setImmediate(runSlice);
  };

  const runSlice = () => {
    scheduled = false;
    // A transaction from the main thread is open: wait for its commit/rollback message.
    if (held || db.inTransaction || (jobs.length === 0 && pendingLatest.size === 0)) return;
    const insert = prepare(
      // Readings of a device removed meanwhile are dropped rather than left orphaned.
      'INSERT INTO telemetry (device_id, msg_id, ts, data) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?) ' +
        'ON CONFLICT (device_id, msg_id) DO NOTHING',
    );
    const update = prepare('UPDATE devices SET latest = ?, latest_at = ?, last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ?');
    const until = performance.now() + sliceMs;
    // Every 8 rows: more telemetry only joins the queue; a query (a command, a session) ends the
    // slice, and runs right after the commit instead of waiting out the slice.
    let polled: { message: any } | undefined;
    const yieldNow = (n: number) => {
      if ((n & 7) !== 0) return false;
      for (;;) {
        const m = receiveMessageOnPort(parentPort);
        if (m === undefined) return performance.now() > until;
        if (m.message.op !== 'telemetry') {
          polled = m;
          return true;
        }
        handle(m.message);
      }
    };
    const doneHere: Job[] = [];
    let n = 0;
    let stop = false;
    try {
      db.exec('BEGIN');
      try {
        while (!stop && jobs.length > 0) {
          const job = jobs[0] as Job;
          while (job.pos < job.rows.length) {
            const r = job.rows[job.pos++];
            insert.run(r.deviceId, r.msgId, r.ts, JSON.stringify(r.data), r.deviceId);
            const cur = pendingLatest.get(r.deviceId);
            if (!cur || r.ts >= cur.ts) pendingLatest.set(r.deviceId, r);
            if (yieldNow(++n)) {
              stop = true;
              break;
            }
          }
          if (job.pos >= job.rows.length) doneHere.push(jobs.shift() as Job);
        }
        if (!polled) {
          for (const [deviceId, r] of pendingLatest) {
            update.run(JSON.stringify(r.data), r.ts, r.ts, deviceId);
            pendingLatest.delete(deviceId);
            if (yieldNow(++n)) break;
          }
        }
        db.exec('COMMIT');
      } catch (err) {
        if (db.inTransaction) db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      // Everything this slice touched failed; the main thread retries those batches (inserts are
      // idempotent per msg_id). Jobs not yet started stay queued.
      const failed = new Set<Job>(doneHere);
      if (jobs[0] && jobs[0].pos > 0) failed.add(jobs.shift() as Job);
      for (const job of failed) fail(job.id, err);
      for (const job of finished) fail(job.id, err);
      finished = [];
      pendingLatest.clear();
      if (polled) handle(polled.message);
      return after();
    }
    finished.push(...doneHere);
    if (pendingLatest.size === 0) {
      for (const job of finished) reply(job.id, job.rows.length);
      finished = [];
    }
    if (polled) handle(polled.message);
    after();
  };

  const after = () => {
    if (jobs.length > 0 || pendingLatest.size > 0) schedule();
    else if (closing !== null) finish();
  };

  let finishing = false;
  const finish = () => {
    if (!db.open || finishing) return;
    finishing = true;
    const done = () => {
      db.close();
      reply(closing as number, null);
    };
    if (!checkpointer) return done();
    const ck = checkpointer;
    checkpointer = null;
    ck.removeAllListeners('exit');
    ck.terminate().then(done, done);
  };

  const handle = (m: any) => {
    if (m.op === 'query') {
      try {
        const stmt = prepare(m.sql);
        if (stmt.reader) reply(m.id, { rows: stmt.all(m.params) });
        else {
          const r = stmt.run(m.params);
          reply(m.id, { rows: [], changes: r.changes, lastInsertRowid: r.lastInsertRowid });
        }
      } catch (err) {
        fail(m.id, err);
      }
      schedule();
    } else if (m.op === 'telemetry') {
      if (!checkpointer) startCheckpointer();
      jobs.push({ id: m.id, rows: m.rows, pos: 0 });
      schedule();
    } else if (m.op === 'close') {
      closing = m.id;
      if (db.inTransaction) db.exec('ROLLBACK');
      after();
    }
  };
  parentPort.on('message', handle);
}

/** The main thread's handle on the worker: requests in, promises out. */
export class SqliteThread {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;

  constructor(file: string, opts: SqliteThreadOptions = {}) {
    this.worker = new Worker(`(${workerMain.toString()})()`, {
      eval: true,
      workerData: {
        file,
        driverPath: require.resolve('better-sqlite3'),
        sliceMs: SLICE_MS,
        checkpointEveryMs: opts.checkpointEveryMs ?? CHECKPOINT_EVERY_MS,
        walResetFrames: opts.walResetFrames ?? WAL_RESET_FRAMES,
      },
    });
    this.worker.unref();
    this.worker.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) this.worker.unref();
      if (m.error) p.reject(Object.assign(new Error(m.error.message), { code: m.error.code, name: m.error.name ?? 'Error' }));
      else p.resolve(m.result);
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
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  run(sql: string, params: readonly unknown[]): Promise<SqliteRunResult> {
    return this.request({ op: 'query', sql, params });
  }

  /** Resolves once every row is committed. */
  insertTelemetry(rows: ThreadTelemetryRow[]): Promise<void> {
    return this.request({ op: 'telemetry', rows });
  }

  /** Finishes queued telemetry, closes the database and ends the thread. */
  async close(): Promise<void> {
    if (!this.dead) await this.request({ op: 'close' }).catch(() => {});
    await this.worker.terminate();
  }
}
