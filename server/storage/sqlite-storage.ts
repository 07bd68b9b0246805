import fs from 'node:fs';
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
} from 'kysely';
import { DB, KyselyStorage } from './kysely-storage';
import { SqliteThread, SqliteThreadOptions } from './sqlite-thread';
import { TelemetryRow } from './types';

/** The embedded default: one SQLite file in DATA_DIR, on better-sqlite3, on its own thread. */
export class SqliteStorage extends KyselyStorage {
  readonly kind = 'sqlite' as const;

  private constructor(private readonly thread: SqliteThread) {
    super(new Kysely<DB>({ dialect: new ThreadDialect(thread) }));
  }

  /** Opens (creating if needed) `<dataDir>/sockpit.db` and runs the migrations. */
  static async open(dataDir: string, file = 'sockpit.db', threadOptions?: SqliteThreadOptions): Promise<SqliteStorage> {
    fs.mkdirSync(dataDir, { recursive: true });
    const thread = new SqliteThread(path.join(dataDir, file), threadOptions);
    const storage = new SqliteStorage(thread);
    try {
      await storage.migrate();
    } catch (err) {
      await storage.close();
      throw err;
    }
    return storage;
  }

  /** The hot path bypasses the query builder: the thread writes the batch with prepared statements. */
  async insertTelemetry(rows: TelemetryRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.thread.insertTelemetry(rows);
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

/** One connection (SQLite has one writer), handed out one holder at a time, like Kysely's own driver. */
class ThreadDriver implements Driver {
  private readonly connection: ThreadConnection;
  private held: Promise<void> | null = null;
  private release: (() => void) | null = null;

  constructor(private readonly thread: SqliteThread) {
    this.connection = new ThreadConnection(thread);
  }
  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    while (this.held) await this.held;
    this.held = new Promise((r) => (this.release = r));
    return this.connection;
  }
  async beginTransaction(c: DatabaseConnection): Promise<void> {
    await c.executeQuery(CompiledQuery.raw('begin'));
  }
  async commitTransaction(c: DatabaseConnection): Promise<void> {
    await c.executeQuery(CompiledQuery.raw('commit'));
  }
  async rollbackTransaction(c: DatabaseConnection): Promise<void> {
    await c.executeQuery(CompiledQuery.raw('rollback'));
  }
  async releaseConnection(): Promise<void> {
    const release = this.release;
    this.held = null;
    this.release = null;
    release?.();
  }
  async destroy(): Promise<void> {
    await this.thread.close();
  }
}

class ThreadConnection implements DatabaseConnection {
  constructor(private readonly thread: SqliteThread) {}
  async executeQuery<R>(q: CompiledQuery): Promise<QueryResult<R>> {
    const r = await this.thread.run(q.sql, q.parameters);
    if (r.changes === undefined) return { rows: r.rows as R[] };
    return {
      rows: [],
      numAffectedRows: BigInt(r.changes),
      insertId: r.lastInsertRowid === undefined ? undefined : BigInt(r.lastInsertRowid),
    };
  }
  async *streamQuery<R>(q: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    const r = await this.thread.run(q.sql, q.parameters);
    for (const row of r.rows) yield { rows: [row as R] };
  }
}
