/**
 * The shapes sockpit shows to browsers and scripts, written once as zod schemas: the Socket.IO
 * events (realtime.ts, docs/realtime.md) and the REST API take their types from here, and the
 * client imports the inferred types. Keep this module free of server-only imports: the browser
 * bundle imports its types.
 */
import { z } from 'zod';

export const COMMAND_STATUSES = ['queued', 'sent', 'acked', 'failed', 'timeout', 'expired'] as const;
export const TRANSPORT_NAMES = ['tcp', 'websocket', 'mqtt'] as const;
export const ACTIONS = ['togglerele', 'changesetting'] as const;

export const deviceIdSchema = z.string().min(1).max(64);
export const commandStatusSchema = z.enum(COMMAND_STATUSES);
export const transportSchema = z.enum(TRANSPORT_NAMES);

/** A device as the dashboard sees it. */
export const deviceViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  online: z.boolean(),
  lastSeen: z.number().nullable(),
  latest: z.record(z.string(), z.unknown()).nullable(),
  latestAt: z.number().nullable(),
  firmware: z.string().nullable(),
  /** How it is connected while online: tcp, websocket or mqtt. */
  transport: transportSchema.nullable(),
});

export const commandViewSchema = z.object({
  id: z.string(),
  deviceId: z.string(),
  action: z.string(),
  params: z.record(z.string(), z.unknown()).nullable(),
  status: commandStatusSchema,
  result: z.unknown(),
  error: z.string().nullable(),
  createdAt: z.number(),
  updatedAt: z.number(),
  sentBy: z.string().nullable(),
});

export const logEntrySchema = z.object({
  ts: z.number(),
  level: z.enum(['info', 'warn', 'error']),
  text: z.string(),
});

export const telemetryPointSchema = z.object({
  ts: z.number(),
  data: z.record(z.string(), z.unknown()),
});

/** A `changesetting` value: short text, a finite number or a boolean. */
export const settingValueSchema = z.union([z.string().max(256), z.number().finite(), z.boolean()]);

/** The fields of a command a person (or a script) sends a device. */
export const commandFields = {
  action: z.enum(ACTIONS),
  params: z
    .record(z.string().min(1).max(64), settingValueSchema)
    .refine((p) => Object.keys(p).length <= 16, 'at most 16 settings')
    .optional(),
};

/** `changesetting` says what to change. */
export function withParamsRule<T extends z.ZodType<{ action: string; params?: Record<string, unknown> }>>(schema: T) {
  return schema.refine((c) => c.action !== 'changesetting' || (c.params !== undefined && Object.keys(c.params).length > 0), 'changesetting needs params');
}

export const commandRequestSchema = withParamsRule(z.object(commandFields).strict());

export type Transport = z.infer<typeof transportSchema>;
export type CommandStatus = z.infer<typeof commandStatusSchema>;
export type Action = (typeof ACTIONS)[number];
export type DeviceView = z.infer<typeof deviceViewSchema>;
export type CommandView = z.infer<typeof commandViewSchema>;
export type LogEntry = z.infer<typeof logEntrySchema>;
export type TelemetryPoint = z.infer<typeof telemetryPointSchema>;
export type SettingValue = z.infer<typeof settingValueSchema>;
export type CommandRequest = z.infer<typeof commandRequestSchema>;
