import type { Server } from 'socket.io';
import type { Command } from '../storage';
import {
  ClientToServerEvents,
  commandView,
  FleetReading,
  InterServerEvents,
  LogEntry,
  rooms,
  ServerToClientEvents,
  SocketData,
  wantsBatchedTelemetry,
} from './events';

export type IO = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;

const LOG_KEEP = 100;

/** Most readings in one `fleet:telemetry` packet; a full batch leaves at once. */
export const FLEET_BATCH_MAX = 1000;

export interface BroadcasterOptions {
  /**
   * True when other instances share the Socket.IO adapter (Redis): sockets on other instances may
   * still want per-reading `device:telemetry`, so it is always emitted. Alone, it is emitted only
   * while this instance has such a socket.
   */
  clustered?: boolean;
}

/**
 * Everything the server tells browsers, in one place. Emits go through the Socket.IO adapter, so
 * with Redis they reach browsers on every instance.
 */
export class Broadcaster {
  private readonly logs = new Map<string, LogEntry[]>();
  /** Readings waiting for this tick's `fleet:telemetry` packet. */
  private batch: FleetReading[] = [];
  private flushQueued: NodeJS.Immediate | null = null;
  /** Sockets on this instance that did not ask for batches (they get one `device:telemetry` per reading). */
  private perReadingSockets = 0;
  private readonly clustered: boolean;
  /** Counter for /metrics. */
  emitted = 0;

  constructor(
    private readonly io: IO,
    opts: BroadcasterOptions = {},
  ) {
    this.clustered = opts.clustered ?? false;
    // Every socket is in `fleet` (io.ts); those that asked for batches in the handshake are in
    // `fleet:batch` too and get `fleet:telemetry` instead of `device:telemetry`.
    io.on('connection', (socket) => {
      if (wantsBatchedTelemetry(socket.handshake.auth)) {
        void socket.join(rooms.fleetBatch);
        return;
      }
      this.perReadingSockets++;
      socket.once('disconnect', () => this.perReadingSockets--);
    });
  }

  deviceStatus(deviceId: string, online: boolean, lastSeen: number | null, firmware?: string | null): void {
    this.emitted++;
    this.io.to(rooms.fleet).emit('device:status', firmware === undefined ? { deviceId, online, lastSeen } : { deviceId, online, lastSeen, firmware });
  }

  /**
   * A reading for the fleet. Batching sockets get it in the `fleet:telemetry` packet of this
   * event-loop turn (one WebSocket frame per socket per turn instead of one per reading); other
   * sockets get it as `device:telemetry` now.
   */
  telemetry(deviceId: string, ts: number, data: Record<string, unknown>): void {
    if (this.clustered || this.perReadingSockets > 0) {
      this.emitted++;
      this.io.to(rooms.fleet).except(rooms.fleetBatch).emit('device:telemetry', { deviceId, ts, data });
    }
    this.batch.push({ deviceId, ts, data });
    if (this.batch.length >= FLEET_BATCH_MAX) this.flushTelemetry();
    else if (!this.flushQueued) this.flushQueued = setImmediate(() => this.flushTelemetry());
  }

  /** Sends the readings collected so far as one `fleet:telemetry` packet. */
  flushTelemetry(): void {
    if (this.flushQueued) clearImmediate(this.flushQueued);
    this.flushQueued = null;
    if (this.batch.length === 0) return;
    const readings = this.batch;
    this.batch = [];
    this.emitted++;
    this.io.to(rooms.fleetBatch).emit('fleet:telemetry', readings);
  }

  command(c: Command): void {
    this.emitted++;
    const view = commandView(c);
    const to = this.io.to(rooms.device(c.deviceId));
    (c.sentByUserId !== null ? to.to(rooms.user(c.sentByUserId)) : to).emit('command:status', view);
  }

  log(deviceId: string, level: LogEntry['level'], text: string): void {
    const entry: LogEntry = { ts: Date.now(), level, text };
    let list = this.logs.get(deviceId);
    if (!list) this.logs.set(deviceId, (list = []));
    list.push(entry);
    if (list.length > LOG_KEEP) list.shift();
    this.emitted++;
    this.io.to(rooms.device(deviceId)).emit('device:log', { ...entry, deviceId });
  }

  /** This instance's recent log lines for a device, oldest first. */
  recentLog(deviceId: string): LogEntry[] {
    return this.logs.get(deviceId) ?? [];
  }

  forget(deviceId: string): void {
    this.logs.delete(deviceId);
  }
}
