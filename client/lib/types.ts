// Shapes from docs/realtime.md (the Socket.IO contract with the server).

export type DeviceView = {
  id: string;
  name: string;
  online: boolean;
  lastSeen: number | null;
  latest: Record<string, unknown> | null;
  latestAt: number | null;
  firmware: string | null;
};

export type TelemetryPoint = { ts: number; data: Record<string, unknown> };

export const COMMAND_STATUSES = ['queued', 'sent', 'acked', 'failed', 'timeout', 'expired'] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

export type CommandView = {
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
};

export type LogEntry = { ts: number; level: 'info' | 'warn' | 'error'; text: string };

export type Fail = { ok: false; error: string };
export type Ack<T> = ({ ok: true } & T) | Fail;

export type SettingValue = string | number | boolean;

export interface ServerToClientEvents {
  'device:status': (p: { deviceId: string; online: boolean; lastSeen: number | null }) => void;
  'device:telemetry': (p: TelemetryPoint & { deviceId: string }) => void;
  'device:log': (p: LogEntry & { deviceId: string }) => void;
  'command:status': (p: CommandView) => void;
  'session:ended': (p: { reason: 'logout' | 'expired' }) => void;
}

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
