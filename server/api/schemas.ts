/**
 * The REST API's contract (docs/api.md): one zod schema per request part and per response. The
 * router validates with them and the OpenAPI document at /api/v1/openapi.json is generated from
 * the same objects, so the two cannot differ.
 */
import { z } from 'zod';
import 'zod-openapi';
import { commandFields, commandViewSchema, deviceViewSchema, withParamsRule } from '../contract/schemas';
import { DEVICE_ID_RE } from '../devices/messages';
import { ROLES } from '../storage';
import { parseTime } from './time';

export const LIMITS = {
  /** Readings per telemetry request: default and most. */
  telemetryDefault: 1000,
  telemetryMax: 100_000,
  commandsDefault: 20,
  commandsMax: 100,
  /** Seconds `GET /commands/{id}?wait=` may hold the answer. */
  waitMaxS: 30,
  /** Columns of a CSV export besides `time`. */
  csvMaxKeys: 1000,
};

const unixMs = z.number().int().meta({ description: 'Unix time in milliseconds', example: 1714557600000 });
const role = z.enum(ROLES as [typeof ROLES[number], ...typeof ROLES[number][]]).meta({ id: 'Role', description: 'viewer < operator < admin' });

// ---- parameters ----

/** An existing device's id in a path (anonymous devices may carry other printable text). */
const deviceRef = z.string().min(1).max(300).meta({ description: 'Device id', example: 'greenhouse-1' });

export const DeviceParams = z.object({ id: deviceRef });
export const CommandParams = z.object({ id: z.string().min(1).max(64).meta({ description: 'Command id', example: '4f7c2b9e-1d2a-4a53-9a0e-7d1f2c3b4a5d' }) });
export const KeyParams = z.object({ id: z.string().min(1).max(64).meta({ description: 'API key id (not the key itself)', example: '3f9a1c0b7d2e' }) });

const time = z
  .string()
  .max(64)
  .transform((s, ctx) => {
    const t = parseTime(s);
    if (t === null) {
      ctx.addIssue({ code: 'custom', message: 'must be unix milliseconds or ISO 8601 with a time zone, like 2024-05-01T10:00:00Z or 2024-05-01' });
      return z.NEVER;
    }
    return t;
  });

export const TelemetryQuery = z.object({
  from: time.optional().meta({ description: 'Start, inclusive: unix ms or ISO 8601 (`2024-05-01`, `2024-05-01T10:00:00Z`, `…+02:00`). Default: the first reading.', example: '2024-05-01T00:00:00Z' }),
  to: time.optional().meta({ description: 'End, inclusive: unix ms or ISO 8601. Default: now.', example: '1714600000000' }),
  limit: z.coerce
    .number({ error: 'must be a whole number' })
    .int('must be a whole number')
    .min(1, 'must be at least 1')
    .max(LIMITS.telemetryMax, `must be at most ${LIMITS.telemetryMax}`)
    .default(LIMITS.telemetryDefault)
    .meta({ description: `Most readings to return (oldest first): default ${LIMITS.telemetryDefault}, at most ${LIMITS.telemetryMax}` }),
  format: z
    .enum(['json', 'csv'], { error: 'must be json or csv' })
    .default('json')
    .meta({ description: '`csv`: a `time` column (ISO 8601) and one column per key' }),
});

export const CommandListQuery = z.object({
  limit: z.coerce
    .number({ error: 'must be a whole number' })
    .int('must be a whole number')
    .min(1, 'must be at least 1')
    .max(LIMITS.commandsMax, `must be at most ${LIMITS.commandsMax}`)
    .default(LIMITS.commandsDefault)
    .meta({ description: `Most commands to return (newest first): default ${LIMITS.commandsDefault}, at most ${LIMITS.commandsMax}` }),
});

export const CommandWaitQuery = z.object({
  wait: z.coerce
    .number({ error: 'must be a number of seconds' })
    .min(0, 'must not be negative')
    .max(LIMITS.waitMaxS, `must be at most ${LIMITS.waitMaxS} seconds`)
    .optional()
    .meta({ description: `Seconds (at most ${LIMITS.waitMaxS}) to wait for the command to become final (acked, failed, timeout, expired)`, example: 10 }),
});

// ---- request bodies ----

export const CreateDeviceBody = z
  .object({
    id: z
      .string()
      .regex(DEVICE_ID_RE, 'must be 1-64 characters: letters, digits, _ . : - (not only dots)')
      .meta({ description: '1-64 characters: letters, digits, `_ . : -`, not only dots', example: 'greenhouse-1' }),
    name: z.string().max(100, 'must be at most 100 characters').optional().meta({ description: 'Shown in the page; default: the id', example: 'Greenhouse sensor' }),
  })
  .strict()
  .meta({ id: 'CreateDevice' });

/** The command fields the dashboard sends too (server/contract/schemas.ts), with their documentation. */
export const SendCommandBody = withParamsRule(
  z
    .object({
      action: commandFields.action.meta({ description: '`togglerele` switches the relay; `changesetting` sends `params`' }),
      params: commandFields.params.meta({
        description: 'Settings for `changesetting`: up to 16 keys, each a string (≤ 256), number or boolean',
        example: { interval_ms: 5000 },
      }),
    })
    .strict(),
).meta({ id: 'SendCommand' });

export const CreateKeyBody = z
  .object({
    name: z.string().trim().min(1, 'must not be empty').max(100, 'must be at most 100 characters').meta({ example: 'home assistant' }),
    role: role.meta({ description: 'At most your own role' }),
  })
  .strict()
  .meta({ id: 'CreateApiKey' });

// ---- responses ----

export const Problem = z
  .object({
    type: z.string().meta({ example: 'about:blank' }),
    title: z.string().meta({ example: 'Bad Request' }),
    status: z.number().int().meta({ example: 400 }),
    detail: z.string().meta({ example: 'limit: must be at most 100000' }),
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional().meta({ description: 'Each invalid part of the request' }),
  })
  .meta({ id: 'Problem', description: 'RFC 9457 problem document (application/problem+json)' });

/** A device as the dashboard sees it (server/contract/schemas.ts). */
export const Device = deviceViewSchema.meta({ id: 'Device', description: 'A device as the dashboard sees it; `transport` (tcp, websocket, mqtt) is null while it is offline' });

export const DeviceList = z.object({ devices: z.array(Device) }).meta({ id: 'DeviceList' });

export const DeviceCreated = z
  .object({
    id: z.string(),
    name: z.string(),
    token: z.string().meta({ description: 'The device token, shown only this once' }),
  })
  .meta({ id: 'DeviceCreated' });

export const DeviceToken = z.object({ id: z.string(), token: z.string().meta({ description: 'The new token, shown only this once' }) }).meta({ id: 'DeviceToken' });

/** A command as the page shows it (server/contract/schemas.ts). */
export const Command = commandViewSchema.meta({ id: 'Command', description: 'queued → sent → acked | failed | timeout | expired' });

export const CommandList = z.object({ commands: z.array(Command) }).meta({ id: 'CommandList' });

export const Reading = z
  .object({
    ts: unixMs,
    time: z.string().meta({ description: 'The same instant, ISO 8601 UTC' }),
    data: z.record(z.string(), z.unknown()),
  })
  .meta({ id: 'Reading' });

export const TelemetryJson = z
  .object({
    deviceId: z.string(),
    from: unixMs,
    to: unixMs,
    readings: z.array(Reading).meta({ description: 'Oldest first' }),
    count: z.number().int(),
  })
  .meta({ id: 'Telemetry' });

export const TelemetryCsv = z.string().meta({
  description: 'Header `time` plus one column per key (sorted); `time` is ISO 8601 UTC; nested values are JSON text',
  example: 'time,humidity,temp\n2024-05-01T10:00:00.000Z,41,21.5\n',
});

export const ApiKey = z
  .object({
    id: z.string(),
    name: z.string(),
    role,
    userId: z.number().int(),
    username: z.string().nullable().meta({ description: 'The owner; null once that user is removed (the key no longer works)' }),
    createdAt: unixMs,
    lastUsedAt: unixMs.nullable(),
  })
  .meta({ id: 'ApiKey' });

export const ApiKeyList = z.object({ keys: z.array(ApiKey) }).meta({ id: 'ApiKeyList' });

export const ApiKeyCreated = ApiKey.extend({ key: z.string().meta({ description: 'The key, shown only this once' }) }).meta({ id: 'ApiKeyCreated' });
