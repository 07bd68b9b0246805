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
import { DuplicateError, TelemetryRow } from '../../server/storage';

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
