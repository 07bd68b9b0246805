/**
 * The SQLite thread's body (see sqlite-thread.ts for the why): the only connection that writes
 * the file. Queries come one at a time; telemetry is written in slices of at most `sliceMs`.
 * Built as its own entry file (scripts/build.mjs) and started by SqliteThread.
 */
import { parentPort as port, receiveMessageOnPort, Worker, workerData as data } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointerData, CheckpointerSays, Reply, Request, SqliteRunResult, ThreadTelemetryBatch, WorkerData } from './sqlite-protocol';

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
  /** The readings (sqlite-protocol.ts). */
  rows: ThreadTelemetryBatch;
  /** Readings in it, the next one to insert, and where its data starts in `rows.text`. */
  count: number;
  pos: number;
  offset: number;
  arrivedAt: number;
}
const jobs: Job[] = [];
/** Rows in `jobs` not yet inserted, and when the oldest of those jobs arrived. */
let waitingRows = 0;
let oldestWaitingAt = 0;
let groupTimer: NodeJS.Timeout | null = null;
let mergeTimer: NodeJS.Timeout | null = null;
/** Jobs whose rows are committed, waiting for the `latest` updates still pending. */
let finished: Job[] = [];
/** deviceId → newest row inserted but not yet written to devices.latest. */
const pendingLatest = new Map<string, { ts: number; data: string }>();
let scheduled = false;

// Two stages (sqlite-thread.ts): a reading is committed into `telemetry_recent`, which has no
// index, and moved into `telemetry` later in bulk, a device's rows together. The thread is the
// only writer of both, so it keeps in memory what `telemetry_recent` holds that `telemetry` does
// not yet (`unmerged`), and the message ids it holds (to store a resent reading once). The rest of
// a row (time, data) is read back from the table when it is moved. Only ids and message ids are
// kept, no object per row: a round holds up to 40,000 rows for seconds, and each object would be
// copied by the garbage collector until it is promoted.
class DeviceRound {
  /** Ids of its rows not yet in `telemetry`, oldest first. */
  unmerged: number[] = [];
  /** Message id → row id, for its rows of this round (merged or not). */
  keys: Map<string, number> | null = null;
}
class Round {
  /** deviceId → its rows in this round. */
  readonly devices = new Map<string, DeviceRound>();
  /** Rows not yet in `telemetry`. */
  count = 0;
  startedAt = 0;
  /** The device's part of the round, made on first use. */
  of(deviceId: string): DeviceRound {
    let part = this.devices.get(deviceId);
    if (!part) this.devices.set(deviceId, (part = new DeviceRound()));
    return part;
  }
  /** The id of this round's row with that message id, if any. */
  staged(deviceId: string, msgId: string): number | undefined {
    return this.devices.get(deviceId)?.keys?.get(msgId);
  }
  add(part: DeviceRound, id: number, msgId: string | null): void {
    if (this.count === 0) this.startedAt = performance.now();
    part.unmerged.push(id);
    this.count++;
    if (msgId !== null) (part.keys ??= new Map()).set(msgId, id);
  }
  /** Takes a device's unmerged rows out of the round (their message ids stay). */
  take(deviceId: string): number[] {
    const part = this.devices.get(deviceId);
    if (!part || part.unmerged.length === 0) return [];
    const ids = part.unmerged;
    part.unmerged = [];
    this.count -= ids.length;
    return ids;
  }
}
/** Null until the first use; false when `telemetry_recent` is missing (a database not migrated yet). */
let stage: boolean | null = null;
let nextId = 1;
/** Rows staged since the last merge round began. */
let current = new Round();
/** The round being merged (its rows are moved a slice at a time), and the highest id it covers. */
let merging: Round | null = null;
let mergingUpTo = 0;
const mergeMs: number = workerData.mergeMs;
/** A merge slice is short: new readings wait for it. */
const MERGE_SLICE_MS = 20;
const mergeRows: number = workerData.mergeRows;

/** Whether the database has `telemetry_recent` (a database not migrated yet has not). */
let hasRecent = false;
const recentExists = (): boolean =>
  hasRecent ||
  (hasRecent = (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'telemetry_recent'").get() as unknown) !== undefined);

/** Starts staging (with the first telemetry): reads back what `telemetry_recent` holds. */
const staging = (): boolean => {
  if (stage !== null) return stage;
  if (!recentExists()) return false; // looked at again next time: the migrations may not have run yet
  stage = true;
  const max = (sql: string) => Number((db.prepare(sql).get() as { n: number | null }).n ?? 0);
  nextId =
    Math.max(
      max('SELECT max(id) AS n FROM telemetry'),
      max('SELECT max(id) AS n FROM telemetry_recent'),
      max("SELECT max(seq) AS n FROM sqlite_sequence WHERE name = 'telemetry'"),
    ) + 1;
  // Rows a stopped or killed process left behind: merged again (a row already moved is skipped by its id).
  for (const r of db.prepare('SELECT id, device_id, msg_id FROM telemetry_recent ORDER BY id').iterate() as IterableIterator<{
    id: number;
    device_id: string;
    msg_id: string | null;
  }>) {
    current.add(current.of(r.device_id), Number(r.id), r.msg_id);
  }
  if (current.count > 0) current.startedAt = -Infinity;
  return true;
};

/** After a failed transaction: what is staged is read back from `telemetry_recent`. */
const resetStage = () => {
  stage = null;
  current = new Round();
  merging = null;
};

const mergeDue = () => merging !== null || (stage === true && current.count > 0 && (current.count >= mergeRows || performance.now() - current.startedAt >= mergeMs));

/**
 * Staged rows not yet merged are past twice `mergeRows`: readings keep coming faster than the gaps
 * between them allow merging, so each slice merges for a while before it inserts. Otherwise a fleet
 * that never lets up would grow `telemetry_recent`, and this thread's memory, without end.
 */
const mergeBehind = () => stage === true && closing === null && current.count + (merging?.count ?? 0) >= 2 * mergeRows;

/** Copies staged rows into `telemetry` (those already there are skipped by their id), but none of a removed device. */
const MOVE_STAGED =
  'INSERT OR IGNORE INTO telemetry (id, device_id, msg_id, ts, data) SELECT r.id, r.device_id, r.msg_id, r.ts, r.data ' +
  'FROM telemetry_recent r WHERE EXISTS (SELECT 1 FROM devices WHERE id = r.device_id)';

/**
 * Moves one staged row into `telemetry`, read from `telemetry_recent` by its id: so not if the row
 * left the table meanwhile (another process removed the device: the CLI).
 */
const mergeRow = (id: number) => prepare(`${MOVE_STAGED} AND r.id = ?`).run(id);

/** How many staged rows one statement moves (mergeRowsOf). */
const MERGE_CHUNK = 64;
const MOVE_CHUNK = `${MOVE_STAGED} AND r.id IN (${Array.from({ length: MERGE_CHUNK }, () => '?').join(',')})`;

/**
 * Moves staged rows (a device's, in id order) as mergeRow does, MERGE_CHUNK per statement: one
 * statement a row cost as much again in statement overhead as the rows' own inserts
 * (bench/README.md). A short last chunk repeats its last id (an IN list is a set).
 */
const mergeRowsOf = (ids: readonly number[]) => {
  const stmt = prepare(MOVE_CHUNK);
  const args = new Array<number>(MERGE_CHUNK);
  for (let i = 0; i < ids.length; i += MERGE_CHUNK) {
    const n = Math.min(MERGE_CHUNK, ids.length - i);
    if (n === 1) {
      mergeRow(ids[i]!);
      continue;
    }
    for (let k = 0; k < MERGE_CHUNK; k++) args[k] = ids[i + Math.min(k, n - 1)]!;
    stmt.run(args);
  }
};

/** Whether a staged row is still in `telemetry_recent` (another process may have removed its device). */
const stillStaged = (id: number) => prepare('SELECT 1 FROM telemetry_recent WHERE id = ?').get(id) !== undefined;

/** Ends a merge round once all its rows are in `telemetry`: they leave `telemetry_recent`. */
const endRoundIfDone = () => {
  if (!merging || merging.count > 0) return;
  prepare('DELETE FROM telemetry_recent WHERE id <= ?').run(mergingUpTo);
  merging = null;
};
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
  if (finishing) return;
  if (scheduled || held || db.inTransaction) return;
  const merge = jobs.length === 0 && closing === null && mergeDue();
  if (jobs.length === 0 && pendingLatest.size === 0 && !merge) {
    if (stage === true && current.count > 0 && !mergeTimer && closing === null) {
      mergeTimer = setTimeout(() => {
        mergeTimer = null;
        schedule();
      }, Math.max(0, current.startedAt + mergeMs - performance.now()));
    }
    return;
  }
  const started = jobs.length > 0 && jobs[0]!.pos > 0;
  const wait = merge || closing !== null || started || pendingLatest.size > 0 || waitingRows >= groupRows ? 0 : oldestWaitingAt + groupMs - performance.now();
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
  if (held || db.inTransaction) return;
  const merge = jobs.length === 0 && closing === null && mergeDue();
  if (jobs.length === 0 && pendingLatest.size === 0 && !merge) return;
  const staged = staging();
  const behind = mergeBehind();
  // Readings of a device removed meanwhile are dropped rather than left orphaned. A staged row is
  // not looked for in `telemetry` (a resend of a reading already moved there): the move skips it
  // by the (device_id, msg_id) index, which costs the lookup once per round instead of per row.
  const insert = staged
    ? prepare('INSERT INTO telemetry_recent (id, device_id, msg_id, ts, data) VALUES (?, ?, ?, ?, ?)')
    : prepare(
        'INSERT INTO telemetry (device_id, msg_id, ts, data) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?) ' +
          'ON CONFLICT (device_id, msg_id) DO NOTHING',
      );
  // A staged row joins the round at once; if the slice fails, the rounds are read back from the table.
  // Whether each device of the slice exists, looked up once per slice: no other connection writes
  // while it holds the write lock, and a query that writes ends the slice.
  const exists = prepare('SELECT 1 FROM devices WHERE id = ?');
  const known = new Map<string, boolean>();
  const stageRow = (deviceId: string, msgId: string | null, ts: number, data: string) => {
    let there = known.get(deviceId);
    if (there === undefined) known.set(deviceId, (there = exists.get(deviceId) !== undefined));
    if (!there) return;
    const part = current.of(deviceId);
    if (msgId !== null) {
      const copy = part.keys?.get(msgId) ?? merging?.staged(deviceId, msgId);
      if (copy !== undefined && stillStaged(copy)) return;
    }
    insert.run(nextId, deviceId, msgId, ts, data);
    current.add(part, nextId++, msgId);
  };
  // A device's latest reading never goes back to an older one (as in postgres-storage.ts).
  const update = prepare(
    'UPDATE devices SET latest = CASE WHEN latest_at IS NULL OR latest_at <= @ts THEN @data ELSE latest END, ' +
      'latest_at = max(coalesce(latest_at, @ts), @ts), last_seen = max(coalesce(last_seen, 0), @ts) WHERE id = @id',
  );
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
  /**
   * Moves staged rows into `telemetry`, a device at a time, for at most MERGE_SLICE_MS. `idle`: only
   * while nothing else waits (new readings end it). True when the slice must end (a query came).
   */
  const mergeSlice = (idle: boolean): boolean => {
    if (!merging) {
      merging = current;
      mergingUpTo = nextId - 1;
      current = new Round();
    }
    const mergeUntil = performance.now() + Math.min(sliceMs, MERGE_SLICE_MS);
    let yielded = false;
    for (const [deviceId, part] of merging.devices) {
      if (part.unmerged.length === 0) continue;
      mergeRowsOf(merging.take(deviceId));
      if (performance.now() > mergeUntil) break;
      if (yieldNow(0)) {
        yielded = true;
        break;
      }
      if (idle && jobs.length > 0) break;
    }
    endRoundIfDone();
    return yielded;
  };
  let n = 0;
  let stop = false;
  try {
    // IMMEDIATE: a slice may start with a read (is a resend's first copy still staged?), and a
    // read transaction that then writes fails at once if another connection wrote meanwhile.
    db.exec('BEGIN IMMEDIATE');
    try {
      if (behind && mergeSlice(false)) stop = true;
      while (!stop && jobs.length > 0) {
        const job = jobs[0] as Job;
        const { ids, numbers, text } = job.rows;
        while (job.pos < job.count) {
          const k = 2 * job.pos++;
          const deviceId = ids[k] as string;
          const msgId = ids[k + 1] as string | null;
          const ts = numbers[k]!;
          const data = text.slice(job.offset, (job.offset += numbers[k + 1]!));
          waitingRows--;
          if (staged) stageRow(deviceId, msgId, ts, data);
          else insert.run(deviceId, msgId, ts, data, deviceId);
          const cur = pendingLatest.get(deviceId);
          if (!cur) pendingLatest.set(deviceId, { ts, data });
          else if (ts >= cur.ts) {
            cur.ts = ts;
            cur.data = data;
          }
          if (yieldNow(++n)) {
            stop = true;
            break;
          }
        }
        if (job.pos >= job.count) {
          doneHere.push(jobs.shift() as Job);
          if (jobs.length > 0) oldestWaitingAt = jobs[0]!.arrivedAt;
        }
      }
      if (!polled && writes.length === 0) {
        for (const [deviceId, r] of pendingLatest) {
          update.run({ ts: r.ts, data: r.data, id: deviceId });
          pendingLatest.delete(deviceId);
          if (yieldNow(++n)) {
            stop = true;
            break;
          }
        }
      }
      // Nothing else waiting: move staged rows into `telemetry`, a device at a time, for a while.
      if (!stop && merge && !polled && writes.length === 0 && jobs.length === 0) mergeSlice(true);
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
      waitingRows -= partial.count - partial.pos;
      failed.add(partial);
    }
    if (jobs.length > 0) oldestWaitingAt = jobs[0]!.arrivedAt;
    for (const job of failed) fail(job.id, err);
    for (const job of finished) fail(job.id, err);
    finished = [];
    pendingLatest.clear();
    resetStage();
    answerWrites(err);
    if (polled) handle(polled.message);
    return after();
  }
  answerWrites(null);
  finished.push(...doneHere);
  if (pendingLatest.size === 0) {
    for (const job of finished) reply(job.id, job.count);
    finished = [];
  }
  if (polled) handle(polled.message);
  after();
};

const after = () => {
  if (closing !== null && jobs.length === 0 && pendingLatest.size === 0) finish();
  else schedule();
};

let finishing = false;
const finish = () => {
  if (!db.open || finishing) return;
  finishing = true;
  if (mergeTimer) clearTimeout(mergeTimer);
  if (groupTimer) clearTimeout(groupTimer);
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

/** Flushes and forgets that came during a transaction of the main thread's, run after its end. */
const deferred: Request[] = [];

/**
 * Moves a device's staged rows (or every device's) into `telemetry` now: a reader is about to look.
 * The thread that stages (the server's) knows them; another process's (the CLI's, a test's) reads
 * them from the table, and the server's own round later finds them moved.
 */
const flush = (deviceId: string | undefined) => {
  if (stage !== true) {
    prepare(MOVE_STAGED + (deviceId === undefined ? ' ORDER BY r.id' : ' AND r.device_id = ? ORDER BY r.id')).run(
      ...(deviceId === undefined ? [] : [deviceId]),
    );
    return;
  }
  if (deviceId !== undefined) {
    // The device's rows leave `telemetry_recent` now, and its message ids the rounds (`telemetry`
    // has them): a device read more often than rounds start would otherwise stay staged for ever.
    const unstage = prepare('DELETE FROM telemetry_recent WHERE id = ?');
    for (const round of [merging, current]) {
      for (const id of round?.take(deviceId) ?? []) {
        mergeRow(id);
        unstage.run(id);
      }
      round?.devices.delete(deviceId);
    }
    endRoundIfDone();
    return;
  }
  for (const round of [merging, current]) for (const deviceId of [...(round?.devices.keys() ?? [])]) mergeRowsOf(round!.take(deviceId));
  prepare('DELETE FROM telemetry_recent WHERE id < ?').run(nextId);
  merging = null;
  current = new Round();
};

/**
 * Drops a removed device's staged rows from memory. deleteDevice removed them from the table in its
 * own transaction; rows staged since then (the device added again at once) are kept.
 */
const forget = (deviceId: string) => {
  for (const round of [merging, current]) {
    const part = round?.devices.get(deviceId);
    if (!round || !part) continue;
    const kept = round.take(deviceId).filter(stillStaged);
    const msgIdOf = new Map<number, string>();
    for (const [msgId, id] of part.keys ?? []) msgIdOf.set(id, msgId);
    round.devices.delete(deviceId);
    const fresh = round.of(deviceId);
    for (const id of kept) round.add(fresh, id, msgIdOf.get(id) ?? null);
  }
  endRoundIfDone();
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
    if (!db.inTransaction && deferred.length > 0) for (const d of deferred.splice(0)) handle(d);
    schedule();
  } else if (m.op === 'telemetry') {
    if (!checkpointer) startCheckpointer();
    if (jobs.length === 0) oldestWaitingAt = performance.now();
    const count = m.rows.ids.length >> 1;
    jobs.push({ id: m.id, rows: m.rows, count, pos: 0, offset: 0, arrivedAt: performance.now() });
    waitingRows += count;
    schedule();
  } else if (m.op === 'flush' || m.op === 'forget') {
    // Not inside a transaction of the main thread's: it could roll this back.
    if (db.inTransaction) {
      deferred.push(m);
      return;
    }
    try {
      if (recentExists()) {
        db.exec('BEGIN');
        try {
          if (m.op === 'forget') forget(m.deviceId);
          else flush(m.deviceId);
          db.exec('COMMIT');
        } catch (err) {
          if (db.inTransaction) db.exec('ROLLBACK');
          resetStage();
          throw err;
        }
      }
      reply(m.id, null);
    } catch (err) {
      fail(m.id, err);
    }
    schedule();
  } else if (m.op === 'close') {
    closing = m.id;
    if (db.inTransaction) db.exec('ROLLBACK');
    after();
  }
};
parentPort.on('message', handle);
