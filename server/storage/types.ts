export type Role = 'admin' | 'operator' | 'viewer';
export const ROLES: readonly Role[] = ['admin', 'operator', 'viewer'];

export type CommandStatus = 'queued' | 'sent' | 'acked' | 'failed' | 'timeout' | 'expired';
export const FINAL_STATUSES: readonly CommandStatus[] = ['acked', 'failed', 'timeout', 'expired'];

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

export type CommandPatch = Partial<Pick<Command, 'status' | 'result' | 'error' | 'sentAt'>> & { updatedAt: number };

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
  setUserRole(id: number, role: Role): Promise<boolean>;
  setUserPassword(id: number, passwordHash: string): Promise<boolean>;
  deleteUser(id: number): Promise<boolean>;
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
  telemetryHistory(deviceId: string, limit: number): Promise<TelemetryPoint[]>;
  countTelemetry(deviceId?: string): Promise<number>;

  insertCommand(c: Command): Promise<void>;
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

  getSession(sid: string, now: number): Promise<string | null>;
  setSession(sid: string, data: string, expiresAt: number): Promise<void>;
  touchSession(sid: string, expiresAt: number): Promise<void>;
  destroySession(sid: string): Promise<void>;
  pruneSessions(now: number): Promise<number>;
}
