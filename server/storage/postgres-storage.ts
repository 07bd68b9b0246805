import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { DB, KyselyStorage, latestPerDevice } from './kysely-storage';
import { TelemetryRow } from './types';

const INT8_OID = 20;

/** Storage on PostgreSQL (DATABASE_URL), for one or many instances. */
export class PostgresStorage extends KyselyStorage {
  readonly kind = 'postgres' as const;
  protected override readonly deviceKeyLock = 'FOR KEY SHARE';

  /** Connects and runs the migrations (serialised across instances by Kysely's migration lock). */
  static async open(databaseUrl: string): Promise<PostgresStorage> {
    const pool = new pg.Pool({
      connectionString: databaseUrl,
      max: 10,
      connectionTimeoutMillis: 5000,
      // Times are unix ms in bigint columns; they fit a JS number exactly.
      types: {
        getTypeParser: ((oid: number, format?: string) =>
          oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
      },
    });
    // A client losing its server must not crash the process; the next query reports it. The pool
    // only listens on idle clients, so one checked out (by Kysely) needs its own listener.
    pool.on('error', () => {});
    pool.on('connect', (client) => client.on('error', () => {}));
    const storage = new PostgresStorage(new Kysely<DB>({ dialect: new PostgresDialect({ pool }) }));
    try {
      // Kysely would otherwise look for its migration tables in every schema on the search path.
      const { rows } = await pool.query<{ schema: string }>('select current_schema() as schema');
      await storage.migrate(rows[0]?.schema ?? undefined);
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
    return storage;
  }

  /**
   * Under READ COMMITTED two transactions can both see no user and both insert one; this lock
   * conflicts with itself and with every insert, so the second waits and then sees the first's row.
   */
  protected override async lockUsersTable(tx: Kysely<DB>): Promise<void> {
    await sql`LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE`.execute(tx);
  }

  async insertTelemetry(rows: TelemetryRow[]): Promise<void> {
    if (rows.length === 0) return;
    const latest = [...latestPerDevice(rows).values()];
    const deviceIds = latest.map((r) => r.deviceId);
    await this.db.transaction().execute(async (tx) => {
      // The batch's devices first, with a lock only a delete conflicts with (other batches do
      // not wait): deleteDevice either waits for this batch and then removes what it stored, or
      // this waits for the delete and the insert below finds the device gone. So none of a
      // deleted device's readings is left behind.
      await sql`SELECT id FROM devices WHERE id = ANY(${deviceIds}::text[]) ORDER BY id FOR KEY SHARE`.execute(tx);
      await sql`
        INSERT INTO telemetry (device_id, msg_id, ts, data)
        SELECT v.* FROM unnest(${rows.map((r) => r.deviceId)}::text[], ${rows.map((r) => r.msgId)}::text[],
                               ${rows.map((r) => r.ts)}::bigint[], ${rows.map((r) => r.json ?? JSON.stringify(r.data))}::text[]) AS v(device_id, msg_id, ts, data)
        WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = v.device_id)
        ON CONFLICT (device_id, msg_id) DO NOTHING`.execute(tx);
      // The rows the update writes, locked in one order first: two batches of the same devices
      // cannot deadlock (the update's own order is the plan's).
      await sql`SELECT id FROM devices WHERE id = ANY(${deviceIds}::text[]) ORDER BY id FOR NO KEY UPDATE`.execute(tx);
      await sql`
        UPDATE devices d SET latest = CASE WHEN d.latest_at IS NULL OR d.latest_at <= v.ts THEN v.data ELSE d.latest END,
          latest_at = greatest(coalesce(d.latest_at, v.ts), v.ts), last_seen = greatest(coalesce(d.last_seen, 0), v.ts)
        FROM unnest(${latest.map((r) => r.deviceId)}::text[], ${latest.map((r) => r.ts)}::bigint[],
                    ${latest.map((r) => r.json ?? JSON.stringify(r.data))}::text[]) AS v(id, ts, data)
        WHERE d.id = v.id`.execute(tx);
    });
  }
}
