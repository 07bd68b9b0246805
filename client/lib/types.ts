// Shapes from docs/realtime.md (the Socket.IO contract with the server).

// The shapes are the server's own (type-only imports: nothing of the server reaches the bundle).
import type { CommandStatus } from '../../server/storage/types';
import type { CommandView, DeviceView, LogEntry, ServerToClientEvents } from '../../server/realtime/events';
export type { CommandStatus, CommandView, DeviceView, LogEntry, ServerToClientEvents };
export type { TelemetryPoint } from '../../server/storage/types';
import type { TelemetryPoint } from '../../server/storage/types';

export const COMMAND_STATUSES: readonly CommandStatus[] = ['queued', 'sent', 'acked', 'failed', 'timeout', 'expired'];

export type Fail = { ok: false; error: string };
export type Ack<T> = ({ ok: true } & T) | Fail;

export type SettingValue = string | number | boolean;

export interface ClientToServerEvents {
  'fleet:list': (p: Record<string, never>, ack: (res: Ack<{ devices: DeviceView[] }>) => void) => void;
  'device:watch': (
    p: { deviceId: string },
    ack: (res: Ack<{ device: DeviceView; commands: CommandView[]; log: LogEntry[] }>) => void,
  ) => void;
  'device:unwatch': (p: { deviceId: string }, ack: (res: Ack<object>) => void) => void;
  'telemetry:history': (
    p: { deviceId: string; limit?: number },
    ack: (res: Ack<{ points: TelemetryPoint[] }>) => void,
  ) => void;
  'command:send': (
    p: { deviceId: string; action: 'togglerele' | 'changesetting'; params?: Record<string, SettingValue> },
    ack: (res: Ack<{ command: CommandView }>) => void,
  ) => void;
}
