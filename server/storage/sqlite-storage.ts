import fs from 'node:fs';
import Database from 'better-sqlite3';
import path from 'node:path';
import {
  CompiledQuery,
  DatabaseConnection,
  DatabaseIntrospector,
  Dialect,
  Driver,
  Kysely,
  QueryCompiler,
  QueryResult,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  sql,
} from 'kysely';
import { DB, KyselyStorage, toUser } from './kysely-storage';
import { SqliteThread, SqliteThreadOptions } from './sqlite-thread';
import { TelemetryPoint, TelemetryRange, TelemetryRow, User } from './types';

/** The embedded default: one SQLite file in DATA_DIR, on better-sqlite3, on its own thread. */
export class SqliteStorage extends KyselyStorage {
  readonly kind = 'sqlite' as const;

  /**
   * A read-only connection on the main thread, for the one read on the click's path: the user,
   * read afresh on every socket event and request. Through the thread it waited behind telemetry
   * slices and commits (p99 about 12 ms at 25,000 readings/s, bench/README.md); here it is a
   * primary-key lookup of a few microseconds. In WAL mode a reader waits for no writer, and it
   * sees every committed write, also the CLI's from another process. Null until migrated.
   */
  private reader: { db: Database.Database; user: Database.Statement<[number]> } | null = null;
  /** The database file's identity when opened (device and inode); see checkFile. */
  private fileId: string | null = null;

  private constructor(
    private readonly thread: SqliteThread,
    private readonly file: string,
  ) {
    super(new Kysely<DB>({ dialect: new ThreadDialect(thread) }));
  }

  /** Opens (creating if needed) `<dataDir>/sockpit.db` and runs the migrations. */
  static async open(dataDir: string, file = 'sockpit.db', threadOptions?: SqliteThreadOptions): Promise<SqliteStorage> {
    fs.mkdirSync(dataDir, { recursive: true });
    const dbFile = path.join(dataDir, file);
    const storage = new SqliteStorage(new SqliteThread(dbFile, threadOptions), dbFile);
    try {
      await storage.migrate();
    } catch (err) {
      await storage.close();
      throw err;
    }
    storage.openReader();
    storage.fileId = fileIdOf(dbFile);
    return storage;
  }

  /**
   * Throws when `sockpit.db` was deleted or replaced under the running server: SQLite would go on
   * writing to the deleted file, and every reading answered `stored` would be gone at the next start.
   * So /readyz says storage is down, and telemetry is held and retried (devices get no `stored`)
   * until the server is restarted on a good file (docs/deploying.md).
   */
  private checkFile(): void {
    if (this.fileId !== null && fileIdOf(this.file) !== this.fileId) {
      throw new Error(`the database file ${this.file} was removed or replaced while the server was running; restart the server`);
    }
  }

  override async ping(): Promise<void> {
    this.checkFile();
    await super.ping();
  }

  private openReader(): void {
    // A short busy timeout: the main thread never sleeps long on a lock (a reader meets one only
    // while the file is being recovered); past it the read goes through the thread.
    const db = new Database(this.file, { readonly: true, fileMustExist: true, timeout: 20 });
    this.reader = { db, user: db.prepare<[number]>('SELECT * FROM users WHERE id = ?') };
  }

  override async getUserById(id: number): Promise<User | null> {
    if (this.reader) {
      try {
        const r = this.reader.user.get(id) as Parameters<typeof toUser>[0] | undefined;
        return r ? toUser(r) : null;
      } catch {
        // (SQLITE_BUSY past the timeout, say: this once, through the thread.)
      }
    }
    return super.getUserById(id);
  }

  override async close(): Promise<void> {
    this.reader?.db.close();
    this.reader = null;
    await super.close();
  }

  /** The hot path bypasses the query builder: the thread writes the batch with prepared statements. */
  async insertTelemetry(rows: TelemetryRow[]): Promise<void> {
    if (rows.length === 0) return;
    this.checkFile();
    await this.thread.insertTelemetry(rows);
  }

  // Readings are committed to `telemetry_recent` first and moved into `telemetry` in bulk
  // (sqlite-thread.ts); whoever reads `telemetry` has the device's staged rows moved first.

  override async telemetryHistory(deviceId: string, limit: number, maxChars?: number): Promise<TelemetryPoint[]> {
    await this.thread.flushTelemetry(deviceId);
    return super.telemetryHistory(deviceId, limit, maxChars);
  }

  override async countTelemetry(deviceId?: string): Promise<number> {
    await this.thread.flushTelemetry(deviceId);
    return super.countTelemetry(deviceId);
  }

  override async *telemetryRange(deviceId: string, range: TelemetryRange, pageSize?: number): AsyncGenerator<TelemetryPoint[]> {
    await this.thread.flushTelemetry(deviceId);
    yield* super.telemetryRange(deviceId, range, pageSize);
  }

  override async telemetryKeys(deviceId: string, range: TelemetryRange, maxKeys: number): Promise<string[] | null> {
    await this.thread.flushTelemetry(deviceId);
    return super.telemetryKeys(deviceId, range, maxKeys);
  }

  /** Its staged readings go in the same transaction, so no crash can leave them to be moved later. */
  protected override async deleteDeviceData(tx: Kysely<DB>, id: string): Promise<void> {
    await sql`DELETE FROM telemetry_recent WHERE device_id = ${id}`.execute(tx);
  }

  override async deleteDevice(id: string): Promise<boolean> {
    const deleted = await super.deleteDevice(id);
    // This process's thread drops them from memory too. A server in another process keeps them in
    // memory, but moves no row that has left the table.
    await this.thread.forgetTelemetry(id);
    return deleted;
  }
}

/** A file's device and inode, or null when it does not exist. */
function fileIdOf(file: string): string | null {
  try {
    const st = fs.statSync(file);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** Kysely's SQLite dialect with the queries sent to the SQLite thread instead of run in place. */
class ThreadDialect implements Dialect {
  constructor(private readonly thread: SqliteThread) {}
  createDriver(): Driver {
    return new ThreadDriver(this.thread);
  }
  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }
  createAdapter() {
    return new SqliteAdapter();
  }
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}

/**
 * SQLite has one connection, on its thread, which runs what it is sent in order. A statement on
 * its own therefore needs no lock: many may be in flight at once, each one round trip, instead of
 * queueing one round trip after another (Kysely's own SQLite driver holds its connection per
 * statement; under load a click's two statements then waited behind every other caller's). A
 * transaction is the exception: it holds the thread alone from `begin` to its end, so nothing of
 * anyone else's runs inside it. Statements sent before its `begin` run before it (the thread takes
 * messages in order); statements that arrive while it is open wait for its end.
 */
class ThreadDriver implements Driver {
  /** The open transaction's connection, and a promise that settles when it ends. */
  private owner: ThreadConnection | null = null;
  private ended: Promise<void> | null = null;
  private end: (() => void) | null = null;

  constructor(private readonly thread: SqliteThread) {}
  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    return new ThreadConnection(this);
  }
  async beginTransaction(c: DatabaseConnection): Promise<void> {
    const conn = c as ThreadConnection;
    while (this.ended) await this.ended;
    this.owner = conn;
    this.ended = new Promise((r) => (this.end = r));
    // IMMEDIATE: it takes the write lock now. A deferred one that read and then wrote failed at once
    // (SQLITE_BUSY, no waiting) when another process (the CLI) had written meanwhile.
    await conn.executeQuery(CompiledQuery.raw('begin immediate'));
  }
  async commitTransaction(c: DatabaseConnection): Promise<void> {
    try {
      await c.executeQuery(CompiledQuery.raw('commit'));
    } finally {
      this.endTransaction(c as ThreadConnection);
    }
  }
  async rollbackTransaction(c: DatabaseConnection): Promise<void> {
    try {
      await c.executeQuery(CompiledQuery.raw('rollback'));
    } finally {
      this.endTransaction(c as ThreadConnection);
    }
  }
  async releaseConnection(c: DatabaseConnection): Promise<void> {
    // (A `begin` that failed is neither committed nor rolled back.)
    this.endTransaction(c as ThreadConnection);
  }
  async destroy(): Promise<void> {
    await this.thread.close();
  }

  /** Runs a statement: at once inside its own transaction, else once no transaction is open. */
  async run(conn: ThreadConnection, q: CompiledQuery) {
    if (this.owner === conn) return this.thread.run(q.sql, q.parameters);
    while (this.ended) await this.ended;
    return this.thread.run(q.sql, q.parameters);
  }

  private endTransaction(conn: ThreadConnection): void {
    if (this.owner !== conn) return;
    const end = this.end;
    this.owner = null;
    this.ended = null;
    this.end = null;
    end?.();
  }
}

class ThreadConnection implements DatabaseConnection {
  constructor(private readonly driver: ThreadDriver) {}
  async executeQuery<R>(q: CompiledQuery): Promise<QueryResult<R>> {
    const r = await this.driver.run(this, q);
    if (r.changes === undefined) return { rows: r.rows as R[] };
    return {
      rows: [],
      numAffectedRows: BigInt(r.changes),
      insertId: r.lastInsertRowid === undefined ? undefined : BigInt(r.lastInsertRowid),
    };
  }
  async *streamQuery<R>(q: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    const r = await this.driver.run(this, q);
    for (const row of r.rows) yield { rows: [row as R] };
  }
}
