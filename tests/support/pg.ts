/**
 * PostgreSQL for the `postgres` jest project (jest.config.js), as its test environment.
 *
 * Each test gets a fresh database on the server TEST_DATABASE_URL names, as on SQLite each server
 * gets a fresh file: testDatabaseUrl() (support/server.ts) returns it, and every server and CLI
 * run the test starts uses it, so a test's instances share their data. Hooks that run before the
 * first test (beforeAll) get the test file's own database. All of them are dropped when the file
 * is done.
 *
 * Databases rather than schemas on search_path: Kysely's migrator looks for its migration table in
 * every schema of the database, so a schema per test would see another test's table.
 */
import crypto from 'node:crypto';
import type { EnvironmentContext, JestEnvironmentConfig } from '@jest/environment';
import type { Circus } from '@jest/types';
import { TestEnvironment } from 'jest-environment-node';
import pg from 'pg';

/** The variable test code reads (see testDatabaseUrl in support/server.ts). */
export const DATABASE_URL_VAR = 'SOCKPIT_TEST_DATABASE_URL';

async function withAdmin<T>(base: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: base, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates an empty database on the server `base` names; returns its URL. */
export async function createTestDatabase(base: string, name: string): Promise<string> {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`not a test database name: ${name}`);
  // template0 never has connections, so parallel workers cannot trip over each other copying it.
  await withAdmin(base, (c) => c.query(`CREATE DATABASE ${name} TEMPLATE template0`));
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops every database whose name starts with `prefix`, ending connections a test left open. */
export async function dropTestDatabases(base: string, prefix: string): Promise<void> {
  if (!/^[a-z0-9_]+$/.test(prefix)) throw new Error(`not a test database prefix: ${prefix}`);
  await withAdmin(base, async (c) => {
    const { rows } = await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE $1`, [`${prefix}%`]);
    for (const { datname } of rows) await c.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
  });
}

/** Jest environment of the `postgres` project: a fresh database per test file, then per test. */
export default class PostgresTestEnvironment extends TestEnvironment {
  private readonly base: string;
  private readonly prefix = `sockpit_test_${crypto.randomBytes(5).toString('hex')}`;
  private count = 0;

  constructor(config: JestEnvironmentConfig, context: EnvironmentContext) {
    super(config, context);
    const base = process.env.TEST_DATABASE_URL;
    if (!base) throw new Error('the postgres test project needs TEST_DATABASE_URL');
    this.base = base;
  }

  private async fresh(): Promise<void> {
    this.global.process.env[DATABASE_URL_VAR] = await createTestDatabase(this.base, `${this.prefix}_${this.count++}`);
  }

  override async setup(): Promise<void> {
    await super.setup();
    await this.fresh();
  }

  async handleTestEvent(event: Circus.Event): Promise<void> {
    if (event.name === 'test_start') await this.fresh();
  }

  override async teardown(): Promise<void> {
    await dropTestDatabases(this.base, this.prefix).catch((err: Error) => console.error(`could not drop ${this.prefix}_*: ${err.message}`));
    await super.teardown();
  }
}
