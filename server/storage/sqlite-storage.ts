import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { DB, KyselyStorage, latestPerDevice } from './kysely-storage';
import { TelemetryRow } from './types';

/** The embedded default: one SQLite file in DATA_DIR, on better-sqlite3. */
export class SqliteStorage extends KyselyStorage {
  readonly kind = 'sqlite' as const;
  private writeBatch: ((rows: TelemetryRow[]) => void) | null = null;

  private constructor(private readonly sqlite: Database.Database) {
    super(new Kysely<DB>({ dialect: new SqliteDialect({ database: sqlite }) }));
  }

  /** Opens (creating if needed) `<dataDir>/sockpit.db` and runs the migrations. */
  static async open(dataDir: string, file = 'sockpit.db'): Promise<SqliteStorage> {
    fs.mkdirSync(dataDir, { recursive: true });
    const sqlite = new Database(path.join(dataDir, file));
    // WAL + NORMAL: a commit survives a crash of the process (kill -9); see docs/deploying.md.
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 5000');
    const storage = new SqliteStorage(sqlite);
    try {
      await storage.migrate();
    } catch (err) {
      sqlite.close();
      throw err;
    }
    storage.prepareBatch();
    return storage;
  }

  /** The hot path bypasses the query builder: two prepared statements in one transaction. */
  private prepareBatch(): void {
    const insertRow = this.sqlite.prepare(
      // Readings of a device removed meanwhile are dropped rather than left orphaned.
      'INSERT INTO telemetry (device_id, msg_id, ts, data) SELECT @deviceId, @msgId, @ts, @data WHERE EXISTS (SELECT 1 FROM devices WHERE id = @deviceId) ' +
        'ON CONFLICT (device_id, msg_id) DO NOTHING',
    );
    const updateLatest = this.sqlite.prepare(
      'UPDATE devices SET latest = ?, latest_at = ?, last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ?',
    );
    this.writeBatch = this.sqlite.transaction((rows: TelemetryRow[]) => {
      for (const r of rows) insertRow.run({ deviceId: r.deviceId, msgId: r.msgId, ts: r.ts, data: JSON.stringify(r.data) });
      for (const r of latestPerDevice(rows).values()) updateLatest.run(JSON.stringify(r.data), r.ts, r.ts, r.deviceId);
    });
  }

  async insertTelemetry(rows: TelemetryRow[]): Promise<void> {
    if (rows.length === 0 || !this.writeBatch) return;
    const write = this.writeBatch;
    // Hold Kysely's single connection so the batch never interleaves with one of its transactions.
    await this.db.connection().execute(async () => write(rows));
  }
}
