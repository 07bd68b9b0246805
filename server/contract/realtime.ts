/**
 * The Socket.IO contract (docs/realtime.md), once: each client event's payload schema (checked by
 * the server) and reply schema, and each server event's payload. Server and client take their
 * event maps from here; tests/realtime/contract.types.ts fails to compile when a shape drifts.
 */
import { z } from 'zod';
import {
  commandFields,
  commandViewSchema,
  deviceIdSchema,
  deviceViewSchema,
  logEntrySchema,
  telemetryPointSchema,
  transportSchema,
  withParamsRule,
} from './schemas';

const deviceRef = z.object({ deviceId: deviceIdSchema }).strict();

/** Events a browser sends, each answered through its acknowledgement. */
export const clientEvents = {
  'fleet:list': {
    payload: z.object({}).strict(),
    reply: z.object({ devices: z.array(deviceViewSchema) }),
  },
  'device:watch': {
    payload: deviceRef,
    reply: z.object({ device: deviceViewSchema, commands: z.array(commandViewSchema), log: z.array(logEntrySchema) }),
  },
  'device:unwatch': {
    payload: deviceRef,
    reply: z.object({}),
  },
  'telemetry:history': {
    payload: z.object({ deviceId: deviceIdSchema, limit: z.number().int().min(1).max(2000).optional() }).strict(),
    reply: z.object({ points: z.array(telemetryPointSchema) }),
  },
  'command:send': {
    payload: withParamsRule(z.object({ deviceId: deviceIdSchema, ...commandFields }).strict()),
    reply: z.object({ command: commandViewSchema }),
  },
} as const;

/** Why the server refused an event (docs/realtime.md). */
export const REALTIME_ERRORS = ['rate_limited', 'bad_request', 'forbidden', 'not_found', 'server_error'] as const;
export type RealtimeError = (typeof REALTIME_ERRORS)[number];

export type ClientEventName = keyof typeof clientEvents;
export type PayloadOf<E extends ClientEventName> = z.input<(typeof clientEvents)[E]['payload']>;
export type ReplyOf<E extends ClientEventName> = z.infer<(typeof clientEvents)[E]['reply']>;
export type Fail<Code extends string = RealtimeError> = { ok: false; error: Code };
export type AckOf<E extends ClientEventName> = ({ ok: true } & ReplyOf<E>) | Fail;

export type ClientToServerEvents = {
  [E in ClientEventName]: (payload: PayloadOf<E>, ack: (res: AckOf<E>) => void) => void;
};

export const fleetReadingSchema = telemetryPointSchema.extend({ deviceId: z.string() });

/** Events the server sends. */
export const serverEvents = {
  'device:status': z.object({
    deviceId: z.string(),
    online: z.boolean(),
    lastSeen: z.number().nullable(),
    firmware: z.string().nullable().optional(),
    transport: transportSchema.nullable().optional(),
  }),
  /** One reading, to `fleet` sockets that did not ask for batches. */
  'device:telemetry': fleetReadingSchema,
  /** The readings of one flush (at most 1,000, oldest first), to sockets that asked for batches. */
  'fleet:telemetry': z.array(fleetReadingSchema),
  'device:log': logEntrySchema.extend({ deviceId: z.string() }),
  'command:status': commandViewSchema,
  'session:ended': z.object({ reason: z.enum(['logout', 'expired']) }),
} as const;

export type ServerEventName = keyof typeof serverEvents;
export type ServerPayload<E extends ServerEventName> = z.infer<(typeof serverEvents)[E]>;
export type ServerToClientEvents = {
  [E in ServerEventName]: (payload: ServerPayload<E>) => void;
};

export type DeviceStatus = ServerPayload<'device:status'>;
export type FleetReading = ServerPayload<'device:telemetry'>;
