import type { CommandStatus } from '../contract/schemas';

export type { CommandStatus };
export type Role = 'admin' | 'operator' | 'viewer';
export const ROLES: readonly Role[] = ['admin', 'operator', 'viewer'];


export interface User {
  id: number;
  username: string;
  passwordHash: string;
  role: Role;
  createdAt: number;
}

export interface Device {
  id: string;
  name: string;
  tokenHash: string;
  createdAt: number;
  lastSeen: number | null;
  firmware: string | null;
  latest: Record<string, unknown> | null;
  latestAt: number | null;
}

export interface TelemetryRow {
  deviceId: string;
  /** The device's own message id, or null for telemetry that carries none. */
  msgId: string | null;
  ts: number;
  data: Record<string, unknown>;
  /** `data` as JSON text, when the caller already made it (else storage makes it). */
  json?: string;
}

export interface TelemetryPoint {
  ts: number;
  data: Record<string, unknown>;
}

export interface Command {
  id: string;
  deviceId: string;
  action: string;
  params: Record<string, unknown> | null;
  status: CommandStatus;
  result: unknown;
  error: string | null;
  createdAt: number;
  updatedAt: number;
  expiresAt: number;
  sentAt: number | null;
  sentBy: string | null;
  sentByUserId: number | null;
}

/** An API key as stored: only the hash of the key itself is kept (docs/api.md). */
export interface ApiKey {
  id: string;
  userId: number;
  /** The owner's name, or null when that user was removed (the key then no longer works). */
  username: string | null;
  name: string;
  role: Role;
  createdAt: number;
  lastUsedAt: number | null;
}

/** Readings of one device with `from` ≤ ts ≤ `to` (unix ms), oldest first, at most `limit`. */
export interface TelemetryRange {
  from: number;
  to: number;
  limit: number;
}

export type CommandPatch = Partial<Pick<Command, 'status' | 'result' | 'error' | 'sentAt'>> & { updatedAt: number };

/** A role change or removal that would leave no admin, refused (`keepAnAdmin`). */
export class LastAdminError extends Error {
  constructor() {
    super('sockpit needs at least one admin');
    this.name = 'LastAdminError';
  }
}

export class DuplicateError extends Error {
  constructor(what: string) {
    super(`${what} already exists`);
    this.name = 'DuplicateError';
  }
}

/**
 * Everything sockpit keeps. One interface, two engines: SQLite (embedded default) and PostgreSQL.
 * Times are unix milliseconds.
 */
export interface Storage {
  readonly kind: 'sqlite' | 'postgres';
  ping(): Promise<void>;
  close(): Promise<void>;

  getSetting(key: string): Promise<string | null>;
  /** Sets the value only if the key has none yet; returns the value now stored. */
  initSetting(key: string, value: string): Promise<string>;

  countUsers(): Promise<number>;
  /** Creates the user; with `onlyIfNoUsers` it creates nothing (returns null) once any user exists. */
  createUser(u: { username: string; passwordHash: string; role: Role }, onlyIfNoUsers?: boolean): Promise<User | null>;
  getUserByName(username: string): Promise<User | null>;
  getUserById(id: number): Promise<User | null>;
  listUsers(): Promise<User[]>;
  /**
   * False when there is no such user. With `keepAnAdmin`, a change that would leave no admin
   * throws LastAdminError; the check and the change are one step, so two admins demoting each
   * other at once leave one admin.
   */
  setUserRole(id: number, role: Role, keepAnAdmin?: boolean): Promise<boolean>;
  setUserPassword(id: number, passwordHash: string): Promise<boolean>;
  /** As setUserRole: false when there is no such user; with `keepAnAdmin`, LastAdminError for the last admin. */
  deleteUser(id: number, keepAnAdmin?: boolean): Promise<boolean>;
  countAdmins(): Promise<number>;

  createDevice(d: { id: string; name: string; tokenHash: string }): Promise<Device>;
  getDevice(id: string): Promise<Device | null>;
  listDevices(): Promise<Device[]>;
  setDeviceToken(id: string, tokenHash: string): Promise<boolean>;
  deleteDevice(id: string): Promise<boolean>;
  markDeviceSeen(id: string, lastSeen: number, firmware?: string | null): Promise<void>;

  /**
   * Stores a batch; a (deviceId, msgId) already stored is skipped, so a retried batch is stored
   * once. Also moves each device's latest reading and last-seen time. Resolves once every row is
   * committed (PostgreSQL: one transaction; SQLite: slices of a few ms, see sqlite-thread.ts).
   */
  insertTelemetry(rows: TelemetryRow[]): Promise<void>;
  /** The newest `limit` readings, oldest first, within `maxChars` characters of data (at least one; default kysely-storage.ts HISTORY_MAX_CHARS). */
  telemetryHistory(deviceId: string, limit: number, maxChars?: number): Promise<TelemetryPoint[]>;
  countTelemetry(deviceId?: string): Promise<number>;
  /**
   * The readings of a range in pages of at most `pageSize`, read with keyset pagination on
   * (ts, id), so a large range never sits in memory at once. Stopping the iteration early (a
   * client that went away) stops the reading.
   */
  telemetryRange(deviceId: string, range: TelemetryRange, pageSize?: number): AsyncIterable<TelemetryPoint[]>;
  /** The distinct top-level keys of the readings of a range, sorted; null when there are more than `maxKeys`. */
  telemetryKeys(deviceId: string, range: TelemetryRange, maxKeys: number): Promise<string[] | null>;

  /**
   * Stores a new command; false (and nothing stored) when its device does not exist, also when it
   * is removed at the same moment: a command never outlives its device's removal.
   */
  insertCommand(c: Command): Promise<boolean>;
  getCommand(id: string): Promise<Command | null>;
  /** Applies `patch` if the command is in one of `from` (and belongs to `deviceId`, when given); null otherwise. */
  updateCommand(id: string, from: readonly CommandStatus[], patch: CommandPatch, deviceId?: string): Promise<Command | null>;
  listCommands(deviceId: string, limit: number): Promise<Command[]>;
  /** Queued commands of a device that have not expired, oldest first. */
  queuedCommands(deviceId: string, now: number): Promise<Command[]>;
  /** Moves every queued command past its expiry to `expired`; returns them. */
  expireQueued(now: number): Promise<Command[]>;
  /** Moves every sent command sent before `sentBefore` to `timeout`; returns them. */
  timeoutSent(sentBefore: number, now: number): Promise<Command[]>;

  createApiKey(k: { id: string; userId: number; name: string; role: Role; keyHash: string }): Promise<ApiKey>;
  getApiKey(id: string): Promise<ApiKey | null>;
  getApiKeyByHash(keyHash: string): Promise<ApiKey | null>;
  /** Every key (oldest first), or those of one user. */
  listApiKeys(userId?: number): Promise<ApiKey[]>;
  deleteApiKey(id: string): Promise<boolean>;
  touchApiKey(id: string, lastUsedAt: number): Promise<void>;

  getSession(sid: string, now: number): Promise<string | null>;
  setSession(sid: string, data: string, expiresAt: number): Promise<void>;
  touchSession(sid: string, expiresAt: number): Promise<void>;
  destroySession(sid: string): Promise<void>;
  pruneSessions(now: number): Promise<number>;
}
