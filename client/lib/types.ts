// The Socket.IO contract with the server (docs/realtime.md), from the server's one schema module.
// Type-only imports: nothing of the server (nor zod) reaches the bundle.
import type { AckOf, ClientEventName, ClientToServerEvents, Fail, PayloadOf, ServerToClientEvents } from '../../server/contract/realtime';
import type { CommandStatus, CommandView, DeviceView, LogEntry, SettingValue, TelemetryPoint, Transport } from '../../server/contract/schemas';

export type { AckOf, ClientEventName, ClientToServerEvents, PayloadOf, ServerToClientEvents };
export type { CommandStatus, CommandView, DeviceView, LogEntry, SettingValue, TelemetryPoint, Transport };

export const COMMAND_STATUSES: readonly CommandStatus[] = ['queued', 'sent', 'acked', 'failed', 'timeout', 'expired'];

/** Why a request got no answer from the server, decided on this side. */
export type LocalError = 'disconnected' | 'timeout' | 'bad_response';

/** What `request()` resolves to: the server's answer or a local failure. */
export type Answer<E extends ClientEventName> = AckOf<E> | Fail<LocalError>;

/** A failed answer. */
export type { Fail };
