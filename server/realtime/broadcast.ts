import type { Server } from 'socket.io';
import type { Command } from '../storage';
import { ClientToServerEvents, commandView, InterServerEvents, LogEntry, rooms, ServerToClientEvents, SocketData } from './events';

export type IO = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;

const LOG_KEEP = 100;

/**
 * Everything the server tells browsers, in one place. Emits go through the Socket.IO adapter, so
 * with Redis they reach browsers on every instance.
 */
export class Broadcaster {
  private readonly logs = new Map<string, LogEntry[]>();
  /** Counter for /metrics. */
  emitted = 0;

  constructor(private readonly io: IO) {}

  deviceStatus(deviceId: string, online: boolean, lastSeen: number | null, firmware?: string | null): void {
    this.emitted++;
    this.io.to(rooms.fleet).emit('device:status', firmware === undefined ? { deviceId, online, lastSeen } : { deviceId, online, lastSeen, firmware });
  }

  telemetry(deviceId: string, ts: number, data: Record<string, unknown>): void {
    this.emitted++;
    this.io.to(rooms.fleet).emit('device:telemetry', { deviceId, ts, data });
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
