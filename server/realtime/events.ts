import type { Command, CommandStatus, Device, Role, TelemetryPoint } from '../storage';

/** The shapes of docs/realtime.md. */
export interface DeviceView {
  id: string;
  name: string;
  online: boolean;
  lastSeen: number | null;
  latest: Record<string, unknown> | null;
  latestAt: number | null;
  firmware: string | null;
}

export interface CommandView {
  id: string;
  deviceId: string;
  action: string;
  params: Record<string, unknown> | null;
  status: CommandStatus;
  result: unknown;
  error: string | null;
  createdAt: number;
  updatedAt: number;
  sentBy: string | null;
}

export interface LogEntry {
  ts: number;
  level: 'info' | 'warn' | 'error';
  text: string;
}

export type Ack<T> = (res: ({ ok: true } & T) | { ok: false; error: string }) => void;

export interface ClientToServerEvents {
  'fleet:list': (payload: unknown, ack: Ack<{ devices: DeviceView[] }>) => void;
  'device:watch': (payload: unknown, ack: Ack<{ device: DeviceView; commands: CommandView[]; log: LogEntry[] }>) => void;
  'device:unwatch': (payload: unknown, ack: Ack<object>) => void;
  'telemetry:history': (payload: unknown, ack: Ack<{ points: TelemetryPoint[] }>) => void;
  'command:send': (payload: unknown, ack: Ack<{ command: CommandView }>) => void;
}

/** One reading as the fleet sees it. */
export type FleetReading = TelemetryPoint & { deviceId: string };

export interface ServerToClientEvents {
  'device:status': (p: { deviceId: string; online: boolean; lastSeen: number | null; firmware?: string | null }) => void;
  /** One reading, to `fleet` sockets that did not ask for batches (docs/realtime.md). */
  'device:telemetry': (p: FleetReading) => void;
  /** The readings of one event-loop turn (at most 1,000, oldest first), to sockets that asked for batches. */
  'fleet:telemetry': (p: FleetReading[]) => void;
  'device:log': (p: LogEntry & { deviceId: string }) => void;
  'command:status': (p: CommandView) => void;
  'session:ended': (p: { reason: 'logout' | 'expired' }) => void;
}

export interface InterServerEvents {
  ping: () => void;
  /** One tick's live readings, from the instance that received them to the others (oldest first). */
  'fleet:readings': (readings: FleetReading[]) => void;
}

export interface SocketData {
  userId: number;
  username: string;
  role: Role;
  sid: string;
}

export function commandView(c: Command): CommandView {
  return {
    id: c.id,
    deviceId: c.deviceId,
    action: c.action,
    params: c.params,
    status: c.status,
    result: c.result,
    error: c.error,
    createdAt: c.createdAt,
    updatedAt: c.updatedAt,
    sentBy: c.sentBy,
  };
}

export function deviceView(d: Device, presence: { online: boolean; lastSeen: number | null } | undefined): DeviceView {
  const lastSeen = Math.max(d.lastSeen ?? 0, presence?.lastSeen ?? 0) || null;
  return {
    id: d.id,
    name: d.name,
    online: presence?.online ?? false,
    lastSeen,
    latest: d.latest,
    latestAt: d.latestAt,
    firmware: d.firmware,
  };
}

/**
 * Handshake `auth` of a client that wants the fleet's readings batched (`fleet:telemetry`) instead
 * of one `device:telemetry` each: `{ telemetry: "batch" }`.
 */
export function wantsBatchedTelemetry(auth: unknown): boolean {
  return typeof auth === 'object' && auth !== null && (auth as { telemetry?: unknown }).telemetry === 'batch';
}

/** Room names, in one place (docs/realtime.md). */
export const rooms = {
  fleet: 'fleet',
  fleetBatch: 'fleet:batch',
  /** Local to each instance: batched sockets that fell behind and get conflated batches (broadcast.ts). */
  fleetLagging: 'fleet:lagging',
  user: (id: number) => `user:${id}`,
  session: (sid: string) => `session:${sid}`,
  device: (id: string) => `device:${id}`,
};
