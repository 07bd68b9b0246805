/**
 * The SQLite thread (server/storage/sqlite-thread.ts): queries and telemetry run off the main
 * thread, a query does not wait for a whole telemetry batch, a query-builder transaction never
 * mixes with telemetry, and errors keep their SQLite codes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { SqliteStorage } from '../../server/storage/sqlite-storage';
import { DuplicateError, TelemetryPoint, TelemetryRow } from '../../server/storage';

let dir: string;
let storage: SqliteStorage;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-thread-'));
  storage = await SqliteStorage.open(dir);
  await storage.createDevice({ id: 'd1', name: 'd1', tokenHash: 'x' });
});

afterEach(async () => {
  await storage.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const rows = (n: number, from = 0): TelemetryRow[] =>
  Array.from({ length: n }, (_, i) => ({ deviceId: 'd1', msgId: `m${from + i}`, ts: 1_000 + from + i, data: { seq: from + i, pad: 'x'.repeat(50) } }));

describe('SQLite thread', () => {
  test('when sockpit.db is deleted under the running server, then ping fails and telemetry is refused (not answered stored into a deleted file)', async () => {
    await storage.insertTelemetry(rows(3));
    await storage.ping();
    fs.rmSync(path.join(dir, 'sockpit.db'));
    await expect(storage.ping()).rejects.toThrow(/was removed or replaced/);
    await expect(storage.insertTelemetry(rows(3, 3))).rejects.toThrow(/was removed or replaced/);
  });

  test('when several processes change admins at once (the CLI beside the server), then none fails with "database is locked" and an admin is kept', async () => {
    const admins = [];
    for (let i = 0; i < 8; i++) admins.push((await storage.createUser({ username: `boss${i}`, passwordHash: 'h', role: 'admin' }))!);
    // One connection each, as separate processes have: their transactions contend for the file's write lock.
    const others = await Promise.all(admins.map(() => SqliteStorage.open(dir)));
    try {
      const results = await Promise.allSettled(admins.map((a, i) => others[i]!.deleteUser(a.id, true)));
      const failures = results.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message)] : []));
      // All but one go; the last is refused for being the last admin, never for a lock.
      expect(failures).toHaveLength(1);
      expect(failures[0]).not.toMatch(/locked|busy/i);
      expect(await storage.countAdmins()).toBe(1);
    } finally {
      await Promise.all(others.map((o) => o.close()));
    }
  });

  test('when a large telemetry batch is being written, then a query sent after it is answered before the batch finishes, and every row is stored', async () => {
    const order: string[] = [];
    const batch = storage.insertTelemetry(rows(30_000)).then(() => order.push('batch'));
    // Let the thread start on the batch, then ask something small.
    await new Promise((r) => setImmediate(r));
    const device = await storage.getDevice('d1');
    order.push('query');
    await batch;
    expect(device?.id).toBe('d1');
    expect(order).toEqual(['query', 'batch']);
    expect(await storage.countTelemetry('d1')).toBe(30_000);
    const d = await storage.getDevice('d1');
    expect(d?.latest).toMatchObject({ seq: 29_999 });
    expect(d?.latestAt).toBe(1_000 + 29_999);
  });

  test('when a batch mixes readings with and without message ids, empty, long and non-ASCII data, then each reading is stored as it was', async () => {
    await storage.createDevice({ id: 'd2', name: 'd2', tokenHash: 'y' });
    const batch: TelemetryRow[] = [
      { deviceId: 'd1', msgId: null, ts: 1, data: {} },
      { deviceId: 'd2', msgId: 'ü-1', ts: 2, data: { name: 'Θερμοκρασία', emoji: '🌡️', quote: 'a "b" \\ c' } },
      { deviceId: 'd1', msgId: 'm-2', ts: 3, data: { long: 'y'.repeat(5_000), n: 1.5e-7 } },
      { deviceId: 'd2', msgId: null, ts: 4, data: { nested: { a: [1, 2, { b: null }] } } },
      { deviceId: 'd1', msgId: 'm-3', ts: 5, data: { last: true } },
    ];
    await storage.insertTelemetry(batch);
    const history = async (id: string) => (await storage.telemetryHistory(id, 10)).sort((a, b) => a.ts - b.ts);
    expect(await history('d1')).toEqual(batch.filter((r) => r.deviceId === 'd1').map((r) => ({ ts: r.ts, data: r.data })));
    expect(await history('d2')).toEqual(batch.filter((r) => r.deviceId === 'd2').map((r) => ({ ts: r.ts, data: r.data })));
  });

  test('when a batch carries more data than one message to the thread takes (MAX_BATCH_TEXT), then it crosses in parts and every reading is stored as it was', async () => {
    const { MAX_BATCH_TEXT } = await import('../../server/storage/sqlite-thread');
    const pad = 'x'.repeat(14_000);
    const n = Math.ceil(MAX_BATCH_TEXT / pad.length) + 200;
    const batch: TelemetryRow[] = Array.from({ length: n }, (_, i) => ({ deviceId: 'd1', msgId: i % 2 ? `big-${i}` : null, ts: 10_000 + i, data: { i, pad } }));
    await storage.insertTelemetry(batch);
    expect(await storage.countTelemetry('d1')).toBe(n);
    const newest = await storage.telemetryHistory('d1', 3);
    expect(newest.map((p) => p.data.i).sort()).toEqual([n - 3, n - 2, n - 1].sort());
    expect(newest.every((p) => p.data.pad === pad)).toBe(true);
  }, 60_000);

  test('when a batch is resent, then its rows are stored once', async () => {
    await storage.insertTelemetry(rows(100));
    await storage.insertTelemetry(rows(150));
    expect(await storage.countTelemetry('d1')).toBe(150);
  });

  test('when a query-builder transaction is rolled back while telemetry arrives, then the telemetry is still stored and the transaction left nothing', async () => {
    const db = (storage as unknown as { db: import('kysely').Kysely<any> }).db;
    let telemetry: Promise<void> | null = null;
    await expect(
      db.transaction().execute(async (tx) => {
        await sql`insert into settings (key, value) values ('probe', 'x')`.execute(tx);
        telemetry = storage.insertTelemetry(rows(2_000));
        // Give the thread time to run slices if it (wrongly) would inside this transaction.
        await new Promise((r) => setTimeout(r, 50));
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    await telemetry;
    expect(await storage.getSetting('probe')).toBeNull();
    expect(await storage.countTelemetry('d1')).toBe(2_000);
  });

  test('when a statement is sent while a query-builder transaction is open, then it runs after the transaction, not inside it (a rollback leaves its write)', async () => {
    const db = (storage as unknown as { db: import('kysely').Kysely<any> }).db;
    let outside: Promise<void> | null = null;
    let outsideDone = false;
    await expect(
      db.transaction().execute(async (tx) => {
        await sql`insert into settings (key, value) values ('inside', 'x')`.execute(tx);
        outside = storage.initSetting('outside', 'y').then(() => void (outsideDone = true));
        await new Promise((r) => setTimeout(r, 50));
        expect(outsideDone).toBe(false); // it waits for the transaction to end
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    await outside;
    expect(await storage.getSetting('inside')).toBeNull();
    expect(await storage.getSetting('outside')).toBe('y');
  });

  test('when statements are in flight as a transaction begins, then they run before it, and all of them and it take effect', async () => {
    const db = (storage as unknown as { db: import('kysely').Kysely<any> }).db;
    const before = Array.from({ length: 200 }, (_, i) => storage.initSetting(`k${i}`, String(i)));
    const tx = db.transaction().execute(async (t) => {
      const r = await sql<{ n: number }>`select count(*) as n from settings where key like 'k%'`.execute(t);
      await sql`insert into settings (key, value) values ('counted', ${String(r.rows[0]!.n)})`.execute(t);
    });
    const after = storage.initSetting('after', 'z');
    await Promise.all([...before, tx, after]);
    expect(await storage.getSetting('counted')).toBe('200'); // every statement sent before it had run
    expect(await storage.getSetting('after')).toBe('z');
  });

  test('when a unique key is violated, then the error keeps its SQLite code (so storage reports a duplicate)', async () => {
    await expect(storage.createDevice({ id: 'd1', name: 'again', tokenHash: 'y' })).rejects.toBeInstanceOf(DuplicateError);
    await expect(sql`select * from no_such_table`.execute((storage as unknown as { db: import('kysely').Kysely<any> }).db)).rejects.toThrow(
      /no such table/,
    );
  });

  test('when storage is closed with telemetry still queued, then that telemetry is written first', async () => {
    const pending = storage.insertTelemetry(rows(5_000));
    await storage.close();
    await pending;
    storage = await SqliteStorage.open(dir);
    expect(await storage.countTelemetry('d1')).toBe(5_000);
  });

  test('when the storage is closed, then later calls fail with a clear error instead of hanging', async () => {
    await storage.close();
    await expect(storage.getDevice('d1')).rejects.toThrow();
    storage = await SqliteStorage.open(dir);
  });

  test('when a user is read (the click path), then it does not wait for a telemetry batch, sees what another process (the CLI) changed at once, and fails once closed', async () => {
    const u = (await storage.createUser({ username: 'ann', passwordHash: 'h', role: 'operator' }))!;
    const order: string[] = [];
    const batch = storage.insertTelemetry(rows(30_000)).then(() => order.push('batch'));
    await new Promise((r) => setImmediate(r));
    expect((await storage.getUserById(u.id))?.role).toBe('operator');
    order.push('user');
    const other = await SqliteStorage.open(dir);
    try {
      await other.setUserRole(u.id, 'viewer');
      expect((await storage.getUserById(u.id))?.role).toBe('viewer');
      await other.deleteUser(u.id);
      expect(await storage.getUserById(u.id)).toBeNull();
    } finally {
      await other.close();
    }
    await batch;
    expect(order[0]).toBe('user');
    await storage.close();
    await expect(storage.getUserById(u.id)).rejects.toThrow();
    storage = await SqliteStorage.open(dir);
  });

  test('when telemetry keeps coming, then the checkpointer copies the WAL into the database file and has it rewound, so the WAL stays small', async () => {
    await storage.close();
    // Small thresholds, so a few MB of telemetry go through several hold-and-rewind rounds.
    storage = await SqliteStorage.open(dir, 'sockpit.db', { checkpointEveryMs: 5, walResetFrames: 200 });
    const devices = Array.from({ length: 50 }, (_, i) => `w${i}`);
    for (const id of devices) await storage.createDevice({ id, name: id, tokenHash: 'x' });
    const file = path.join(dir, 'sockpit.db');
    const dbBefore = fs.statSync(file).size;
    let walMax = 0;
    for (let round = 0; round < 40; round++) {
      const batch: TelemetryRow[] = [];
      for (let k = 0; k < 20; k++) {
        for (const deviceId of devices) batch.push({ deviceId, msgId: `r${round}-${k}`, ts: round * 100 + k, data: { pad: 'y'.repeat(60) } });
      }
      await storage.insertTelemetry(batch);
      walMax = Math.max(walMax, fs.statSync(`${file}-wal`).size);
    }
    let total = 0;
    for (const id of devices) total += await storage.countTelemetry(id);
    expect(total).toBe(40 * 20 * 50);
    // ~40 commits of ~150 pages each: without checkpoints the WAL would pass 20 MB.
    expect(walMax).toBeLessThan(8 * 1024 * 1024);
    expect(fs.statSync(file).size).toBeGreaterThan(dbBefore + 2 * 1024 * 1024);
  });
});

/** What the file itself holds, read on a connection of its own (as another process would). */
function inFile(dir: string): { telemetry: number; recent: number } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Database = require('better-sqlite3') as typeof import('better-sqlite3');
  const db = new Database(path.join(dir, 'sockpit.db'), { readonly: true });
  try {
    const n = (t: string) => (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
    return { telemetry: n('telemetry'), recent: n('telemetry_recent') };
  } finally {
    db.close();
  }
}

describe('SQLite thread: readings staged in telemetry_recent, moved into telemetry in bulk', () => {
  const reopen = async (opts: { mergeMs?: number; mergeRows?: number }) => {
    await storage.close();
    storage = await SqliteStorage.open(dir, 'sockpit.db', opts);
  };

  test('when readings are stored, then they are committed to telemetry_recent first, and a reader of the device sees every one of them at once', async () => {
    await reopen({ mergeMs: 60_000 });
    await storage.insertTelemetry(rows(300));
    expect(inFile(dir)).toEqual({ telemetry: 0, recent: 300 });
    const history = await storage.telemetryHistory('d1', 1_000);
    expect(history.map((p) => p.data.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(inFile(dir).telemetry).toBe(300);
  });

  test('when the merge time has passed, then the staged readings are in telemetry and telemetry_recent is empty, without any reader asking', async () => {
    await reopen({ mergeMs: 100 });
    await storage.createDevice({ id: 'd2', name: 'd2', tokenHash: 'x' });
    // d1's rows are moved many to a statement (the last statement's short), d2's single one alone.
    await storage.insertTelemetry([...rows(500), { deviceId: 'd2', msgId: 'only', ts: 5_000, data: { seq: 0 } }]);
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && inFile(dir).recent > 0) await new Promise((r) => setTimeout(r, 50));
    expect(inFile(dir)).toEqual({ telemetry: 501, recent: 0 });
    expect((await storage.telemetryHistory('d1', 1_000)).map((p) => p.data.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect((await storage.telemetryHistory('d2', 10)).map((p) => p.data)).toEqual([{ seq: 0 }]);
  });

  test('when a reading is resent while the first copy is staged, after it was moved, and after a restart, then it is stored once', async () => {
    await reopen({ mergeMs: 60_000 });
    await storage.insertTelemetry(rows(100));
    await storage.insertTelemetry(rows(100)); // the first copies are still staged
    expect(inFile(dir).recent).toBe(100);
    await storage.telemetryHistory('d1', 1); // moves them
    await storage.insertTelemetry(rows(150)); // 100 already in telemetry, 50 new
    await reopen({ mergeMs: 60_000 }); // the 50 are still staged, and read back at start
    await storage.insertTelemetry(rows(200));
    expect(await storage.countTelemetry('d1')).toBe(200);
    const ids = (await storage.telemetryHistory('d1', 1_000)).map((p) => p.data.seq);
    expect(ids).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  test('when the process ends with readings staged (as after a kill), then the next start moves every one of them, once', async () => {
    await reopen({ mergeMs: 60_000 });
    await storage.insertTelemetry(rows(1_000));
    await storage.close();
    expect(inFile(dir)).toEqual({ telemetry: 0, recent: 1_000 });
    storage = await SqliteStorage.open(dir, 'sockpit.db', { mergeMs: 60_000 });
    // A reading after the restart gets an id after every staged one.
    await storage.insertTelemetry(rows(1, 1_000));
    const range: TelemetryPoint[] = [];
    for await (const page of storage.telemetryRange('d1', { from: 0, to: 10_000, limit: 5_000 })) range.push(...page);
    expect(range.map((p) => p.data.seq)).toEqual(Array.from({ length: 1_001 }, (_, i) => i));
    expect(inFile(dir).telemetry).toBe(1_001);
  });

  test('when a device is removed with readings staged, then none of them reach telemetry, also if a device of the same id is added again', async () => {
    await reopen({ mergeMs: 200 });
    await storage.createDevice({ id: 'd2', name: 'd2', tokenHash: 'x' });
    await storage.insertTelemetry([...rows(50), ...rows(50).map((r) => ({ ...r, deviceId: 'd2' }))]);
    expect(await storage.deleteDevice('d2')).toBe(true);
    await storage.createDevice({ id: 'd2', name: 'd2', tokenHash: 'x' });
    await new Promise((r) => setTimeout(r, 600)); // a merge round has run
    expect(await storage.countTelemetry('d2')).toBe(0);
    expect(await storage.countTelemetry('d1')).toBe(50);
    expect(inFile(dir)).toEqual({ telemetry: 50, recent: 0 });
  });

  test('when readings keep coming past the row threshold, then rounds are moved while more are staged, and each reading is stored once', async () => {
    await reopen({ mergeMs: 60_000, mergeRows: 700 });
    for (let i = 0; i < 20; i++) await storage.insertTelemetry(rows(250, i * 250));
    await storage.insertTelemetry(rows(5_000)); // all resent
    expect(inFile(dir).telemetry).toBeGreaterThan(0);
    expect(await storage.countTelemetry()).toBe(5_000);
    expect(inFile(dir)).toEqual({ telemetry: 5_000, recent: 0 });
  });

  test('when readings never let up (each batch queued before the last is stored), then staged rows are moved meanwhile, and each reading is stored once', async () => {
    await reopen({ mergeMs: 60_000, mergeRows: 500 });
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 80; i++) writes.push(storage.insertTelemetry(rows(250, i * 250)));
    await Promise.all(writes);
    // Moved while readings were still queued, not only once they stopped coming.
    const now = inFile(dir);
    expect(now.telemetry).toBeGreaterThan(0);
    expect(now.telemetry + now.recent).toBeGreaterThanOrEqual(20_000);
    expect(await storage.countTelemetry()).toBe(20_000);
    expect(inFile(dir)).toEqual({ telemetry: 20_000, recent: 0 });
  });

  test('when another process opens the same file (the CLI), then it reads the readings the server has staged, and they are still stored once', async () => {
    await reopen({ mergeMs: 60_000 });
    await storage.insertTelemetry(rows(100));
    const other = await SqliteStorage.open(dir);
    try {
      expect(await other.countTelemetry('d1')).toBe(100);
      expect((await other.telemetryHistory('d1', 1)).map((p) => p.data.seq)).toEqual([99]);
      await storage.insertTelemetry(rows(120));
      expect(await other.countTelemetry('d1')).toBe(120);
      expect(await storage.countTelemetry()).toBe(120);
      expect(inFile(dir)).toEqual({ telemetry: 120, recent: 0 });
    } finally {
      await other.close();
    }
  });

  test('when a device is read more often than merge rounds start, then what its reads moved leaves telemetry_recent, which stays empty', async () => {
    await reopen({ mergeMs: 300 });
    for (let i = 0; i < 20; i++) {
      await storage.insertTelemetry(rows(10, i * 10));
      await storage.telemetryHistory('d1', 1); // a poller, faster than rounds
      await new Promise((r) => setTimeout(r, 30));
    }
    await new Promise((r) => setTimeout(r, 1_000));
    expect(inFile(dir)).toEqual({ telemetry: 200, recent: 0 });
    // A resent reading is still stored once.
    await storage.insertTelemetry(rows(200));
    expect(await storage.countTelemetry('d1')).toBe(200);
  });

  test('when another process (the CLI) removes a device and adds it again while its readings are staged, then the old readings stay gone and new ones reusing their ids are stored', async () => {
    await reopen({ mergeMs: 60_000 });
    await storage.createDevice({ id: 'd2', name: 'd2', tokenHash: 'x' });
    const d2 = (n: number, seqFrom: number) => rows(n).map((r, i) => ({ ...r, deviceId: 'd2', data: { seq: seqFrom + i } }));
    await storage.insertTelemetry(d2(50, 0)); // m0…m49, staged
    const cli = await SqliteStorage.open(dir);
    try {
      expect(await cli.deleteDevice('d2')).toBe(true);
      expect(inFile(dir).recent).toBe(0);
      await cli.createDevice({ id: 'd2', name: 'd2', tokenHash: 'y' });
    } finally {
      await cli.close();
    }
    await storage.insertTelemetry(d2(10, 100)); // m0…m9 again, new readings of the new device
    const history = await storage.telemetryHistory('d2', 1_000);
    expect(history.map((p) => p.data.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 100 + i));
    expect(await storage.countTelemetry('d2')).toBe(10);
  });

  test('when a flush is asked inside a query-builder transaction, then it waits for the transaction and is not rolled back with it', async () => {
    await reopen({ mergeMs: 60_000 });
    await storage.insertTelemetry(rows(10));
    const db = (storage as unknown as { db: import('kysely').Kysely<any> }).db;
    let count: Promise<number> | null = null;
    await expect(
      db.transaction().execute(async (tx) => {
        await sql`insert into settings (key, value) values ('probe2', 'x')`.execute(tx);
        count = storage.countTelemetry('d1');
        await new Promise((r) => setTimeout(r, 50));
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await count!).toBe(10);
    expect(inFile(dir).telemetry).toBe(10);
  });
});
