import { Generated, Kysely, Migrator, RawBuilder, Selectable, sql } from 'kysely';
import { migrations } from './migrations';

/**
 * Most characters of readings' data one history answer carries (docs/realtime.md): the newest
 * readings that fit, at least one. A device sending large readings would otherwise make each
 * answer tens of megabytes, built in memory for anyone who may watch it.
 */
export const HISTORY_MAX_CHARS = 1 << 20;
import {
  ApiKey,
  Command,
  CommandPatch,
  CommandStatus,
  Device,
  DuplicateError,
  LastAdminError,
  Role,
  Storage,
  TelemetryPoint,
  TelemetryRange,
  TelemetryRow,
  User,
} from './types';

export interface DB {
  settings: { key: string; value: string };
  users: { id: Generated<number>; username: string; password_hash: string; role: string; created_at: number };
  devices: {
    id: string;
    name: string;
    token_hash: string;
    created_at: number;
    last_seen: number | null;
    firmware: string | null;
    latest: string | null;
    latest_at: number | null;
  };
  telemetry: { id: Generated<number>; device_id: string; msg_id: string | null; ts: number; data: string };
  commands: {
    id: string;
    device_id: string;
    action: string;
    params: string | null;
    status: string;
    result: string | null;
    error: string | null;
    created_at: number;
    updated_at: number;
    expires_at: number;
    sent_at: number | null;
    sent_by: string | null;
    sent_by_user_id: number | null;
  };
  sessions: { sid: string; data: string; expires_at: number };
  api_keys: {
    id: string;
    user_id: number;
    name: string;
    role: string;
    key_hash: string;
    created_at: number;
    last_used_at: number | null;
  };
}

/** Rows per query of a telemetry range (each reading is at most 16 KiB). */
const RANGE_PAGE_ROWS = 1000;
/** Rows per query of the key pass over a range (only the keys come back). */
const KEYS_PAGE_ROWS = 5000;

/** Stored JSON columns are only ever written by us, but a damaged value must not crash a page. */
function parseJson<T>(text: string | null): T | null {
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

export function toUser(r: Selectable<DB['users']>): User {
  return { id: Number(r.id), username: r.username, passwordHash: r.password_hash, role: r.role as Role, createdAt: Number(r.created_at) };
}

function toDevice(r: Selectable<DB['devices']>): Device {
  return {
    id: r.id,
    name: r.name,
    tokenHash: r.token_hash,
    createdAt: Number(r.created_at),
    lastSeen: r.last_seen === null ? null : Number(r.last_seen),
    firmware: r.firmware,
    latest: parseJson<Record<string, unknown>>(r.latest),
    latestAt: r.latest_at === null ? null : Number(r.latest_at),
  };
}

function toCommand(r: Selectable<DB['commands']>): Command {
  return {
    id: r.id,
    deviceId: r.device_id,
    action: r.action,
    params: parseJson<Record<string, unknown>>(r.params),
    status: r.status as CommandStatus,
    result: r.result === null ? null : parseJson<unknown>(r.result),
    error: r.error,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    expiresAt: Number(r.expires_at),
    sentAt: r.sent_at === null ? null : Number(r.sent_at),
    sentBy: r.sent_by,
    sentByUserId: r.sent_by_user_id === null ? null : Number(r.sent_by_user_id),
  };
}

function toApiKey(r: Selectable<DB['api_keys']> & { username: string | null }): ApiKey {
  return {
    id: r.id,
    userId: Number(r.user_id),
    username: r.username,
    name: r.name,
    role: r.role as Role,
    createdAt: Number(r.created_at),
    lastUsedAt: r.last_used_at === null ? null : Number(r.last_used_at),
  };
}

function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e.code === '23505' || e.code === 'SQLITE_CONSTRAINT_UNIQUE' || e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/**
 * The storage interface over Kysely. The engines differ only in how a telemetry batch is written
 * (the hot path), which each subclass implements with its fastest native statement.
 */
export abstract class KyselyStorage implements Storage {
  abstract readonly kind: 'sqlite' | 'postgres';

  constructor(protected readonly db: Kysely<DB>) {}

  /** Brings the schema up to date; `schema` pins Kysely's bookkeeping tables to the one in use. */
  async migrate(schema?: string): Promise<void> {
    const migrator = new Migrator({ db: this.db, provider: migrations(this.kind), ...(schema ? { migrationTableSchema: schema } : {}) });
    const { error, results } = await migrator.migrateToLatest();
    const failed = results?.find((r) => r.status === 'Error');
    if (error || failed) {
      throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${(error as Error)?.message ?? 'unknown error'}`);
    }
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.db);
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  async getSetting(key: string): Promise<string | null> {
    const r = await this.db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
    return r?.value ?? null;
  }

  async initSetting(key: string, value: string): Promise<string> {
    await this.db.insertInto('settings').values({ key, value }).onConflict((oc) => oc.column('key').doNothing()).execute();
    return (await this.getSetting(key)) ?? value;
  }

  async countUsers(): Promise<number> {
    const r = await this.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async countAdmins(): Promise<number> {
    const r = await this.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('role', '=', 'admin')
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /**
   * Makes a transaction the only writer of users until it ends. SQLite has one writing connection,
   * so its statements never interleave; a server engine overrides this.
   */
  protected async lockUsersTable(_tx: Kysely<DB>): Promise<void> {}

  async createUser(u: { username: string; passwordHash: string; role: Role }, onlyIfNoUsers = false): Promise<User | null> {
    const row = { username: u.username, password_hash: u.passwordHash, role: u.role, created_at: Date.now() };
    try {
      if (onlyIfNoUsers) {
        // Two racing first-run setups must not both create an owner: the check and the insert
        // are one statement, inside a transaction that first takes the engine's lock on users.
        return await this.db.transaction().execute(async (tx) => {
          await this.lockUsersTable(tx);
          const res = await sql<Selectable<DB['users']>>`
            insert into users (username, password_hash, role, created_at)
            select ${row.username}, ${row.password_hash}, ${row.role}, ${row.created_at}
            where not exists (select 1 from users)
            returning *`.execute(tx);
          const r = res.rows[0];
          return r ? toUser(r) : null;
        });
      }
      const r = await this.db.insertInto('users').values(row).returningAll().executeTakeFirstOrThrow();
      return toUser(r);
    } catch (err) {
      if (isUniqueViolation(err)) throw new DuplicateError(`user ${u.username}`);
      throw err;
    }
  }

  async getUserByName(username: string): Promise<User | null> {
    const r = await this.db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
    return r ? toUser(r) : null;
  }

  async getUserById(id: number): Promise<User | null> {
    const r = await this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toUser(r) : null;
  }

  async listUsers(): Promise<User[]> {
    return (await this.db.selectFrom('users').selectAll().orderBy('username').execute()).map(toUser);
  }

  async setUserRole(id: number, role: Role, keepAnAdmin = false): Promise<boolean> {
    const update = async (db: Kysely<DB>) => Number((await db.updateTable('users').set({ role }).where('id', '=', id).executeTakeFirst()).numUpdatedRows) > 0;
    return keepAnAdmin && role !== 'admin' ? this.withAdminKept(id, update) : update(this.db);
  }

  /**
   * Runs a change that takes user `id` out of the admins, unless it is the last admin
   * (LastAdminError). Under the users lock, so that two such changes cannot both pass the check.
   */
  private withAdminKept(id: number, change: (tx: Kysely<DB>) => Promise<boolean>): Promise<boolean> {
    return this.db.transaction().execute(async (tx) => {
      await this.lockUsersTable(tx);
      const user = await tx.selectFrom('users').select('role').where('id', '=', id).executeTakeFirst();
      if (!user) return false;
      if (user.role === 'admin') {
        const others = await tx
          .selectFrom('users')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('role', '=', 'admin')
          .where('id', '!=', id)
          .executeTakeFirstOrThrow();
        if (Number(others.n) === 0) throw new LastAdminError();
      }
      return change(tx);
    });
  }

  async setUserPassword(id: number, passwordHash: string): Promise<boolean> {
    const r = await this.db.updateTable('users').set({ password_hash: passwordHash }).where('id', '=', id).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async deleteUser(id: number, keepAnAdmin = false): Promise<boolean> {
    const remove = async (db: Kysely<DB>) => Number((await db.deleteFrom('users').where('id', '=', id).executeTakeFirst()).numDeletedRows) > 0;
    return keepAnAdmin ? this.withAdminKept(id, remove) : remove(this.db);
  }

  async createDevice(d: { id: string; name: string; tokenHash: string }): Promise<Device> {
    try {
      const r = await this.db
        .insertInto('devices')
        .values({ id: d.id, name: d.name, token_hash: d.tokenHash, created_at: Date.now() })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toDevice(r);
    } catch (err) {
      if (isUniqueViolation(err)) throw new DuplicateError(`device ${d.id}`);
      throw err;
    }
  }

  async getDevice(id: string): Promise<Device | null> {
    const r = await this.db.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toDevice(r) : null;
  }

  async listDevices(): Promise<Device[]> {
    return (await this.db.selectFrom('devices').selectAll().orderBy('id').execute()).map(toDevice);
  }

  async setDeviceToken(id: string, tokenHash: string): Promise<boolean> {
    const r = await this.db.updateTable('devices').set({ token_hash: tokenHash }).where('id', '=', id).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Statements of an engine's own that remove a device's data, inside deleteDevice's transaction. */
  protected async deleteDeviceData(_tx: Kysely<DB>, _id: string): Promise<void> {}

  async deleteDevice(id: string): Promise<boolean> {
    return this.db.transaction().execute(async (tx) => {
      // The device's row first. On PostgreSQL a telemetry batch storing its readings holds that row
      // locked (postgres-storage.ts), so this waits for the batch and the deletes below then see
      // what it stored; a batch that comes later waits for this one and finds the device gone.
      // (Deleting the readings first instead could deadlock with a batch resending one of them: its
      // unique check would wait for this delete, and this for its lock.)
      const r = await tx.deleteFrom('devices').where('id', '=', id).executeTakeFirst();
      await this.deleteDeviceData(tx, id);
      await tx.deleteFrom('telemetry').where('device_id', '=', id).execute();
      await tx.deleteFrom('commands').where('device_id', '=', id).execute();
      return Number(r.numDeletedRows) > 0;
    });
  }

  async markDeviceSeen(id: string, lastSeen: number, firmware?: string | null): Promise<void> {
    // Never back to an earlier time: an instance that saw the device go offline may report after
    // the one it reconnected to, and readings move last_seen forward too (insertTelemetry).
    const set: { last_seen: RawBuilder<number>; firmware?: string | null } = {
      last_seen: sql<number>`CASE WHEN last_seen IS NULL OR last_seen < ${lastSeen} THEN ${lastSeen} ELSE last_seen END`,
    };
    if (firmware !== undefined) set.firmware = firmware;
    await this.db.updateTable('devices').set(set).where('id', '=', id).execute();
  }

  abstract insertTelemetry(rows: TelemetryRow[]): Promise<void>;

  async telemetryHistory(deviceId: string, limit: number, maxChars = HISTORY_MAX_CHARS): Promise<TelemetryPoint[]> {
    // First only the sizes, so that a device whose readings are large costs at most maxChars.
    const sizes = await this.db
      .selectFrom('telemetry')
      .select(['id', sql<number>`length(data)`.as('n')])
      .where('device_id', '=', deviceId)
      .orderBy('ts', 'desc')
      .orderBy('id', 'desc')
      .limit(limit)
      .execute();
    const ids: number[] = [];
    let chars = 0;
    for (const r of sizes) {
      chars += Number(r.n);
      if (ids.length > 0 && chars > maxChars) break;
      ids.push(Number(r.id));
    }
    if (ids.length === 0) return [];
    const rows = await this.db.selectFrom('telemetry').select(['ts', 'data']).where('id', 'in', ids).orderBy('ts', 'asc').orderBy('id', 'asc').execute();
    return rows.map((r) => ({ ts: Number(r.ts), data: parseJson<Record<string, unknown>>(r.data) ?? {} }));
  }

  async countTelemetry(deviceId?: string): Promise<number> {
    let q = this.db.selectFrom('telemetry').select((eb) => eb.fn.countAll<number>().as('n'));
    if (deviceId !== undefined) q = q.where('device_id', '=', deviceId);
    return Number((await q.executeTakeFirstOrThrow()).n);
  }

  /** Telemetry of a device in a range, after the keyset cursor (ts, id) when given. */
  private rangeQuery(deviceId: string, range: TelemetryRange, after: { ts: number; id: number } | null) {
    const q = this.db.selectFrom('telemetry').where('device_id', '=', deviceId).where('ts', '<=', range.to);
    if (!after) return q.where('ts', '>=', range.from);
    return q
      .where('ts', '>=', Math.max(range.from, after.ts))
      .where((eb) => eb.or([eb('ts', '>', after.ts), eb('id', '>', after.id)]));
  }

  async *telemetryRange(deviceId: string, range: TelemetryRange, pageSize = RANGE_PAGE_ROWS): AsyncGenerator<TelemetryPoint[]> {
    let after: { ts: number; id: number } | null = null;
    let left = range.limit;
    while (left > 0) {
      const n = Math.min(pageSize, left);
      const rows: { id: number; ts: number; data: string }[] = await this.rangeQuery(deviceId, range, after)
        .select(['id', 'ts', 'data'])
        .orderBy('ts')
        .orderBy('id')
        .limit(n)
        .execute();
      if (rows.length === 0) return;
      left -= rows.length;
      const last = rows[rows.length - 1]!;
      after = { ts: Number(last.ts), id: Number(last.id) };
      yield rows.map((r) => ({ ts: Number(r.ts), data: parseJson<Record<string, unknown>>(r.data) ?? {} }));
      if (rows.length < n) return;
    }
  }

  async telemetryKeys(deviceId: string, range: TelemetryRange, maxKeys: number): Promise<string[] | null> {
    const keys = new Set<string>();
    let after: { ts: number; id: number } | null = null;
    let left = range.limit;
    // Page by page, so no single query holds the SQLite thread for long; only keys come back.
    while (left > 0) {
      const n = Math.min(KEYS_PAGE_ROWS, left);
      const end: { ts: number; id: number } | undefined = await this.rangeQuery(deviceId, range, after)
        .select(['ts', 'id'])
        .orderBy('ts')
        .orderBy('id')
        .limit(1)
        .offset(n - 1)
        .executeTakeFirst();
      const page = this.rangeQuery(deviceId, range, after).select('data').orderBy('ts').orderBy('id').limit(n);
      // At most maxKeys + 1 keys come back from a page: one more than allowed is enough to refuse.
      // (SQLite stops reading the page there; PostgreSQL still hashes the page's keys first.)
      const cap = maxKeys + 1;
      const res =
        this.kind === 'sqlite'
          ? await sql<{ key: string }>`select distinct j.key as key from (${page}) t, json_each(t.data) j where json_valid(t.data) and json_type(t.data) = 'object' limit ${cap}`.execute(this.db)
          : await sql<{ key: string }>`select distinct k as key from (${page}) t cross join lateral json_object_keys(case when json_typeof(t.data::json) = 'object' then t.data::json else '{}'::json end) k limit ${cap}`.execute(this.db);
      for (const r of res.rows) {
        keys.add(String(r.key));
        if (keys.size > maxKeys) return null;
      }
      if (!end) break;
      left -= n;
      after = { ts: Number(end.ts), id: Number(end.id) };
    }
    return [...keys].sort();
  }

  async createApiKey(k: { id: string; userId: number; name: string; role: Role; keyHash: string }): Promise<ApiKey> {
    const row = { id: k.id, user_id: k.userId, name: k.name, role: k.role, key_hash: k.keyHash, created_at: Date.now(), last_used_at: null };
    try {
      await this.db.insertInto('api_keys').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw new DuplicateError(`api key ${k.id}`);
      throw err;
    }
    return (await this.getApiKey(k.id))!;
  }

  private apiKeys() {
    return this.db
      .selectFrom('api_keys')
      .leftJoin('users', 'users.id', 'api_keys.user_id')
      .selectAll('api_keys')
      .select('users.username as username');
  }

  async getApiKey(id: string): Promise<ApiKey | null> {
    const r = await this.apiKeys().where('api_keys.id', '=', id).executeTakeFirst();
    return r ? toApiKey(r) : null;
  }

  async getApiKeyByHash(keyHash: string): Promise<ApiKey | null> {
    const r = await this.apiKeys().where('api_keys.key_hash', '=', keyHash).executeTakeFirst();
    return r ? toApiKey(r) : null;
  }

  async listApiKeys(userId?: number): Promise<ApiKey[]> {
    const rows = await this.apiKeys()
      .$if(userId !== undefined, (q) => q.where('api_keys.user_id', '=', userId!))
      .orderBy('api_keys.created_at')
      .orderBy('api_keys.id')
      .execute();
    return rows.map(toApiKey);
  }

  async deleteApiKey(id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('api_keys').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async touchApiKey(id: string, lastUsedAt: number): Promise<void> {
    await this.db.updateTable('api_keys').set({ last_used_at: lastUsedAt }).where('id', '=', id).execute();
  }

  /**
   * What the device check in insertCommand locks: on PostgreSQL the device's row, so that a
   * deleteDevice (which deletes that row first) waits for the command and then deletes it too.
   */
  protected readonly deviceKeyLock: string = '';

  async insertCommand(c: Command): Promise<boolean> {
    const res = await sql<{ id: string }>`
      INSERT INTO commands (id, device_id, action, params, status, result, error, created_at, updated_at, expires_at, sent_at, sent_by, sent_by_user_id)
      SELECT ${c.id}, ${c.deviceId}, ${c.action}, ${c.params === null ? null : JSON.stringify(c.params)}, ${c.status},
             ${c.result === null || c.result === undefined ? null : JSON.stringify(c.result)}, ${c.error}, ${c.createdAt}, ${c.updatedAt},
             ${c.expiresAt}, ${c.sentAt}, ${c.sentBy}, ${c.sentByUserId}
      WHERE EXISTS (SELECT 1 FROM devices WHERE id = ${c.deviceId} ${sql.raw(this.deviceKeyLock)})
      RETURNING id`.execute(this.db);
    return res.rows.length > 0;
  }

  async getCommand(id: string): Promise<Command | null> {
    const r = await this.db.selectFrom('commands').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? toCommand(r) : null;
  }

  async updateCommand(id: string, from: readonly CommandStatus[], patch: CommandPatch, deviceId?: string): Promise<Command | null> {
    const set: Partial<DB['commands']> = { updated_at: patch.updatedAt };
    if (patch.status !== undefined) set.status = patch.status;
    if (patch.error !== undefined) set.error = patch.error;
    if (patch.sentAt !== undefined) set.sent_at = patch.sentAt;
    if (patch.result !== undefined) set.result = patch.result === null ? null : JSON.stringify(patch.result);
    const r = await this.db
      .updateTable('commands')
      .set(set)
      .where('id', '=', id)
      .where('status', 'in', [...from])
      .$if(deviceId !== undefined, (q) => q.where('device_id', '=', deviceId!))
      .returningAll()
      .executeTakeFirst();
    return r ? toCommand(r) : null;
  }

  async listCommands(deviceId: string, limit: number): Promise<Command[]> {
    const rows = await this.db
      .selectFrom('commands')
      .selectAll()
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .limit(limit)
      .execute();
    return rows.map(toCommand);
  }

  async queuedCommands(deviceId: string, now: number): Promise<Command[]> {
    const rows = await this.db
      .selectFrom('commands')
      .selectAll()
      .where('device_id', '=', deviceId)
      .where('status', '=', 'queued')
      .where('expires_at', '>', now)
      .orderBy('created_at')
      .execute();
    return rows.map(toCommand);
  }

  async expireQueued(now: number): Promise<Command[]> {
    const rows = await this.db
      .updateTable('commands')
      .set({ status: 'expired', error: 'not delivered within its time to live', updated_at: now })
      .where('status', '=', 'queued')
      .where('expires_at', '<=', now)
      .returningAll()
      .execute();
    return rows.map(toCommand);
  }

  async timeoutSent(sentBefore: number, now: number): Promise<Command[]> {
    const rows = await this.db
      .updateTable('commands')
      .set({ status: 'timeout', error: 'no acknowledgement from the device', updated_at: now })
      .where('status', '=', 'sent')
      .where('sent_at', '<', sentBefore)
      .returningAll()
      .execute();
    return rows.map(toCommand);
  }

  async getSession(sid: string, now: number): Promise<string | null> {
    const r = await this.db
      .selectFrom('sessions')
      .select('data')
      .where('sid', '=', sid)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    return r?.data ?? null;
  }

  async setSession(sid: string, data: string, expiresAt: number): Promise<void> {
    await this.db
      .insertInto('sessions')
      .values({ sid, data, expires_at: expiresAt })
      .onConflict((oc) => oc.column('sid').doUpdateSet({ data, expires_at: expiresAt }))
      .execute();
  }

  async touchSession(sid: string, expiresAt: number): Promise<void> {
    await this.db.updateTable('sessions').set({ expires_at: expiresAt }).where('sid', '=', sid).execute();
  }

  async destroySession(sid: string): Promise<void> {
    await this.db.deleteFrom('sessions').where('sid', '=', sid).execute();
  }

  async pruneSessions(now: number): Promise<number> {
    const r = await this.db.deleteFrom('sessions').where('expires_at', '<=', now).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}

/** The newest reading of each device in a batch, for the devices table. */
export function latestPerDevice(rows: TelemetryRow[]): Map<string, TelemetryRow> {
  const latest = new Map<string, TelemetryRow>();
  for (const r of rows) {
    const cur = latest.get(r.deviceId);
    if (!cur || r.ts >= cur.ts) latest.set(r.deviceId, r);
  }
  return latest;
}
