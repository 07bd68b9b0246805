/**
 * The SQLite thread's body (see sqlite-thread.ts for the why): the only connection that writes
 * the file. Queries come one at a time; telemetry is written in slices of at most `sliceMs`.
 * Built as its own entry file (scripts/build.mjs) and started by SqliteThread.
 */
import { parentPort as port, receiveMessageOnPort, Worker, workerData as data } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointerData, CheckpointerSays, Reply, Request, SqliteRunResult, ThreadTelemetryRow, WorkerData } from './sqlite-protocol';

const workerData = data as WorkerData;
const parentPort = port!;
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
const groupMs: number = workerData.groupMs;
const groupRows: number = workerData.groupRows;

const cache = new Map<string, Database.Statement>();
const prepare = (sql: string) => {
  let stmt = cache.get(sql);
  if (!stmt) {
    stmt = db.prepare(sql);
    if (cache.size >= 256) cache.clear();
    cache.set(sql, stmt);
  }
  return stmt;
};
const reply = (id: number, result: unknown) => parentPort.postMessage({ id, result } satisfies Reply);
const fail = (id: number, err: unknown) => {
  const e = err as { message?: unknown; code?: string; name?: string } | undefined;
  const reply: Reply = { id, error: { message: String(e?.message ?? err), code: e?.code, name: e?.name } };
  parentPort.postMessage(reply);
};

// Telemetry jobs, written in slices: one transaction takes rows from as many queued jobs as
// fit, then moves each device's `latest` once (newest reading of the slice). A job is answered
// once its rows and the `latest` they imply are committed.
/** Statements that open or end a transaction: never run inside the telemetry one. */
const TRANSACTION_CONTROL = /^\s*(begin|commit|end|rollback|savepoint|release)\b/i;
const RETURNING = /\breturning\b/i;

interface Job {
  id: number;
  rows: ThreadTelemetryRow[];
  pos: number;
  arrivedAt: number;
}
const jobs: Job[] = [];
/** Rows in `jobs` not yet inserted, and when the oldest of those jobs arrived. */
let waitingRows = 0;
let oldestWaitingAt = 0;
let groupTimer: NodeJS.Timeout | null = null;
/** Jobs whose rows are committed, waiting for the `latest` updates still pending. */
let finished: Job[] = [];
/** deviceId → newest row inserted but not yet written to devices.latest. */
const pendingLatest = new Map<string, ThreadTelemetryRow>();
let scheduled = false;
let closing: number | null = null;

// The checkpointer: another thread and connection, started with the first telemetry (a CLI run
// never needs it). `held`: telemetry waits while it copies the last of the WAL.
let checkpointer: Worker | null = null;
let checkpointerFailed = false;
let held = false;
const startCheckpointer = () => {
  if (checkpointer || checkpointerFailed || closing !== null || workerData.file === ':memory:') return;
  const ckData: CheckpointerData = { file: workerData.file, everyMs: workerData.checkpointEveryMs, resetFrames: workerData.walResetFrames };
  const ck = new Worker(workerData.checkpointerFile, { workerData: ckData });
  checkpointer = ck;
  db.pragma('wal_autocheckpoint = 0');
  ck.on('message', (m: CheckpointerSays) => {
    // Between slices (a slice is synchronous): no new slice starts until 'release'.
    if (m === 'hold') {
      held = true;
      ck.postMessage('held');
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
  ck.on('error', lost);
  ck.on('exit', lost);
};

/**
 * Group commit: a transaction takes what arrived within `groupMs` of its oldest job (or
 * `groupRows` rows, whichever comes first). Rows of a thousand devices dirty index and `devices`
 * pages all over the file, and each commit writes every page it dirtied to the WAL; with more rows
 * per commit each page is written once for several of them (bench/README.md). A query never waits
 * for this: it ends a slice at once (yieldNow).
 */
const schedule = () => {
  if (scheduled || held || db.inTransaction || (jobs.length === 0 && pendingLatest.size === 0)) return;
  const started = jobs.length > 0 && jobs[0]!.pos > 0;
  const wait = closing !== null || started || pendingLatest.size > 0 || waitingRows >= groupRows ? 0 : oldestWaitingAt + groupMs - performance.now();
  if (wait <= 0) {
    if (groupTimer) clearTimeout(groupTimer);
    groupTimer = null;
    scheduled = true;
    setImmediate(runSlice);
  } else if (!groupTimer) {
    groupTimer = setTimeout(() => {
      groupTimer = null;
      schedule();
    }, wait);
  }
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
  // Every 8 rows the slice looks at its messages. More telemetry only joins the queue. A query that
  // only reads runs at once, inside this transaction, and the slice goes on. A query that writes (a
  // command, a session) runs inside it too and ends the slice: it is answered with the commit, so
  // it waits for a few rows and one commit, not for the group. Anything else (a transaction of the
  // main thread's, close) runs right after the commit.
  let polled: { message: Request } | undefined;
  const writes: { id: number; result: SqliteRunResult | null; error: unknown }[] = [];
  const yieldNow = (n: number) => {
    if ((n & 7) !== 0) return false;
    for (;;) {
      const m = receiveMessageOnPort(parentPort);
      if (m === undefined) return performance.now() > until;
      const msg = m.message as Request;
      if (msg.op === 'telemetry') {
        handle(msg);
        continue;
      }
      if (msg.op !== 'query' || TRANSACTION_CONTROL.test(msg.sql)) {
        polled = m;
        return true;
      }
      let stmt: Database.Statement;
      try {
        stmt = prepare(msg.sql);
      } catch (err) {
        fail(msg.id, err);
        continue;
      }
      // (An INSERT … RETURNING also returns rows, but it writes.)
      const writesToo = !stmt.reader || RETURNING.test(msg.sql);
      if (!writesToo) {
        try {
          reply(msg.id, { rows: stmt.all(msg.params) });
        } catch (err) {
          fail(msg.id, err);
        }
        continue;
      }
      try {
        if (stmt.reader) writes.push({ id: msg.id, result: { rows: stmt.all(msg.params) as Record<string, unknown>[] }, error: null });
        else {
          const r = stmt.run(msg.params);
          writes.push({ id: msg.id, result: { rows: [], changes: r.changes, lastInsertRowid: r.lastInsertRowid }, error: null });
        }
      } catch (err) {
        // The statement alone failed (SQLite undid just it); the telemetry goes on being committed.
        writes.push({ id: msg.id, result: null, error: err });
      }
      return true;
    }
  };
  const answerWrites = (rolledBack: unknown) => {
    for (const w of writes) {
      if (rolledBack !== null || w.error !== null) fail(w.id, rolledBack ?? w.error);
      else reply(w.id, w.result);
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
          const r = job.rows[job.pos++]!;
          waitingRows--;
          insert.run(r.deviceId, r.msgId, r.ts, JSON.stringify(r.data), r.deviceId);
          const cur = pendingLatest.get(r.deviceId);
          if (!cur || r.ts >= cur.ts) pendingLatest.set(r.deviceId, r);
          if (yieldNow(++n)) {
            stop = true;
            break;
          }
        }
        if (job.pos >= job.rows.length) {
          doneHere.push(jobs.shift() as Job);
          if (jobs.length > 0) oldestWaitingAt = jobs[0]!.arrivedAt;
        }
      }
      if (!polled && writes.length === 0) {
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
    if (jobs[0] && jobs[0].pos > 0) {
      const partial = jobs.shift() as Job;
      waitingRows -= partial.rows.length - partial.pos;
      failed.add(partial);
    }
    if (jobs.length > 0) oldestWaitingAt = jobs[0]!.arrivedAt;
    for (const job of failed) fail(job.id, err);
    for (const job of finished) fail(job.id, err);
    finished = [];
    pendingLatest.clear();
    answerWrites(err);
    if (polled) handle(polled.message);
    return after();
  }
  answerWrites(null);
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

const handle = (m: Request) => {
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
    if (jobs.length === 0) oldestWaitingAt = performance.now();
    jobs.push({ id: m.id, rows: m.rows, pos: 0, arrivedAt: performance.now() });
    waitingRows += m.rows.length;
    schedule();
  } else if (m.op === 'close') {
    closing = m.id;
    if (db.inTransaction) db.exec('ROLLBACK');
    after();
  }
};
parentPort.on('message', handle);
