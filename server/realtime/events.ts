import type { FleetReading } from '../contract/realtime';
import type { Role } from '../storage';

export type { ClientToServerEvents, ServerToClientEvents, FleetReading, DeviceStatus } from '../contract/realtime';
export type { CommandView, DeviceView, LogEntry } from '../contract/schemas';

/** Events between instances (multi-instance mode), through the Socket.IO adapter. */
export interface InterServerEvents {
  /** One flush's live readings, from the instance that received them to the others (oldest first). */
  'fleet:readings': (readings: FleetReading[]) => void;
  /** Asks the instance named `holder` to deliver a queued command to its device (cluster/redis/fabric.ts). */
  'fabric:deliver': (commandId: string, holder: string, ack: (delivered: boolean) => void) => void;
  /** A newer connection of the device was claimed at `at`; whoever holds an older one closes it. */
  'fabric:replaced': (deviceId: string, at: number) => void;
}

export interface SocketData {
  userId: number;
  username: string;
  role: Role;
  sid: string;
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
