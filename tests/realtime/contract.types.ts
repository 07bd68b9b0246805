/**
 * Compile-time tests of the realtime contract (docs/realtime.md), checked by `npm run typecheck`:
 * a payload or ack shape that drifts, on the server or in the client, stops the build.
 */
import type { AppSocket as ClientSocket } from '../../client/lib/socket';
import { request } from '../../client/lib/socket';
import type { AckOf, PayloadOf, ServerPayload } from '../../server/contract/realtime';
import type { CommandView, DeviceView, LogEntry, TelemetryPoint } from '../../server/contract/schemas';
import type { Handler } from '../../server/realtime/handlers';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): void {}

type Refused = { ok: false; error: 'rate_limited' | 'bad_request' | 'forbidden' | 'not_found' | 'server_error' };

// Payloads a browser sends.
expectType<Equal<PayloadOf<'fleet:list'>, Record<string, never>>>();
expectType<Equal<PayloadOf<'device:watch'>, { deviceId: string }>>();
expectType<Equal<PayloadOf<'device:unwatch'>, { deviceId: string }>>();
expectType<Equal<PayloadOf<'telemetry:history'>, { deviceId: string; limit?: number }>>();
expectType<Equal<PayloadOf<'command:send'>, { deviceId: string; action: 'togglerele' | 'changesetting'; params?: Record<string, string | number | boolean> }>>();

// Their acknowledgements.
expectType<Equal<AckOf<'fleet:list'>, ({ ok: true } & { devices: DeviceView[] }) | Refused>>();
expectType<Equal<AckOf<'device:watch'>, ({ ok: true } & { device: DeviceView; commands: CommandView[]; log: LogEntry[] }) | Refused>>();
expectType<Equal<AckOf<'telemetry:history'>, ({ ok: true } & { points: TelemetryPoint[] }) | Refused>>();
expectType<Equal<AckOf<'command:send'>, ({ ok: true } & { command: CommandView }) | Refused>>();

// The shapes themselves.
expectType<
  Equal<
    DeviceView,
    {
      id: string;
      name: string;
      online: boolean;
      lastSeen: number | null;
      latest: Record<string, unknown> | null;
      latestAt: number | null;
      firmware: string | null;
      transport: 'tcp' | 'websocket' | 'mqtt' | null;
    }
  >
>();
expectType<Equal<CommandView['status'], 'queued' | 'sent' | 'acked' | 'failed' | 'timeout' | 'expired'>>();

// Server events.
expectType<
  Equal<
    ServerPayload<'device:status'>,
    { deviceId: string; online: boolean; lastSeen: number | null; firmware?: string | null | undefined; transport?: 'tcp' | 'websocket' | 'mqtt' | null | undefined }
  >
>();
expectType<Equal<ServerPayload<'fleet:telemetry'>, { ts: number; data: Record<string, unknown>; deviceId: string }[]>>();
expectType<Equal<ServerPayload<'session:ended'>, { reason: 'logout' | 'expired' }>>();

// A server handler must return its event's reply.
export const goodHandler: Handler<'device:unwatch'> = async () => ({});
// @ts-expect-error a reply of the wrong shape does not compile
export const badHandler: Handler<'command:send'> = async () => ({ commands: [] });

// The client's request() is typed by event name.
export async function clientCalls(socket: ClientSocket): Promise<void> {
  const res = await request(socket, 'command:send', { deviceId: 'esp', action: 'togglerele' });
  if (res.ok) expectType<Equal<typeof res.command, CommandView>>();
  else expectType<Equal<typeof res.error, Refused['error'] | 'disconnected' | 'timeout' | 'bad_response'>>();
  // @ts-expect-error an unknown action does not compile
  await request(socket, 'command:send', { deviceId: 'esp', action: 'reboot' });
  // @ts-expect-error a payload missing its device does not compile
  await request(socket, 'device:watch', {});
  // @ts-expect-error an unknown event does not compile
  await request(socket, 'device:reboot', {});
}
