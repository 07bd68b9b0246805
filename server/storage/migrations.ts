import { Kysely, Migration, MigrationProvider } from 'kysely';

type Engine = 'sqlite' | 'postgres';

/** Schema migrations, shared by both engines; run at start by openStorage. */
export function migrations(engine: Engine): MigrationProvider {
  const autoId = engine === 'postgres' ? 'bigserial' : 'integer';
  const all: Record<string, Migration> = {
    '0001_initial': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('settings')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('users')
          .addColumn('id', autoId, (c) => (engine === 'sqlite' ? c.primaryKey().autoIncrement() : c.primaryKey()))
          .addColumn('username', 'text', (c) => c.notNull().unique())
          .addColumn('password_hash', 'text', (c) => c.notNull())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('devices')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('token_hash', 'text', (c) => c.notNull())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('last_seen', 'bigint')
          .addColumn('firmware', 'text')
          .addColumn('latest', 'text')
          .addColumn('latest_at', 'bigint')
          .execute();
        await db.schema
          .createTable('telemetry')
          .addColumn('id', autoId, (c) => (engine === 'sqlite' ? c.primaryKey().autoIncrement() : c.primaryKey()))
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('msg_id', 'text')
          .addColumn('ts', 'bigint', (c) => c.notNull())
          .addColumn('data', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('telemetry_device_ts').on('telemetry').columns(['device_id', 'ts']).execute();
        await db.schema
          .createIndex('telemetry_device_msg')
          .on('telemetry')
          .columns(['device_id', 'msg_id'])
          .unique()
          .execute();
        await db.schema
          .createTable('commands')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('params', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('result', 'text')
          .addColumn('error', 'text')
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .addColumn('sent_at', 'bigint')
          .addColumn('sent_by', 'text')
          .addColumn('sent_by_user_id', 'bigint')
          .execute();
        await db.schema.createIndex('commands_device_created').on('commands').columns(['device_id', 'created_at']).execute();
        await db.schema.createIndex('commands_status').on('commands').columns(['status', 'expires_at']).execute();
        await db.schema
          .createTable('sessions')
          .addColumn('sid', 'text', (c) => c.primaryKey())
          .addColumn('data', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('sessions_expires').on('sessions').column('expires_at').execute();
      },
    },
    '0002_api_keys': {
      // API keys of docs/api.md: only a SHA-256 of each key is kept.
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('api_keys')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('user_id', 'bigint', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('key_hash', 'text', (c) => c.notNull().unique())
          .addColumn('created_at', 'bigint', (c) => c.notNull())
          .addColumn('last_used_at', 'bigint')
          .execute();
        await db.schema.createIndex('api_keys_user').on('api_keys').column('user_id').execute();
      },
    },
    '0003_telemetry_recent': {
      // SQLite only: readings are committed here first, without indexes, and moved into
      // `telemetry` in bulk by the SQLite thread (sqlite-thread.ts, docs/deploying.md).
      async up(db: Kysely<any>) {
        if (engine !== 'sqlite') return;
        await db.schema
          .createTable('telemetry_recent')
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('msg_id', 'text')
          .addColumn('ts', 'bigint', (c) => c.notNull())
          .addColumn('data', 'text', (c) => c.notNull())
          .execute();
      },
    },
  };
  return { getMigrations: async () => all };
}
