import type { Socket } from 'socket.io';
import type { z } from 'zod';
import { roleAtLeast } from '../auth/session';
import type { Fabric } from '../cluster/fabric';
import { CommandService, NotFoundError } from '../commands/service';
import { clientEvents, ClientEventName, ReplyOf } from '../contract/realtime';
import type { Storage, User } from '../storage';
import { fleetViews } from '../devices/views';
import type { Broadcaster } from './broadcast';
import { commandView } from '../commands/view';
import { ClientToServerEvents, InterServerEvents, rooms, ServerToClientEvents, SocketData } from './events';

export type AppSocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;

/** The role is too low for this event. */
export class Forbidden extends Error {}

/** A handler gets the validated payload and the user read afresh; what it returns is the ack. */
export type Handler<E extends ClientEventName> = (
  payload: z.output<(typeof clientEvents)[E]['payload']>,
  ctx: { user: User; socket: AppSocket },
) => Promise<ReplyOf<E>>;

export type Handlers = { [E in ClientEventName]: Handler<E> };

export interface HandlerDeps {
  storage: Storage;
  fabric: Fabric;
  commands: CommandService;
  broadcast: Broadcaster;
}

/** The socket already waits for an answer of this kind: answered `rate_limited`. */
export class Busy extends Error {}

/** The client events of docs/realtime.md, one handler each. */
export function createHandlers({ storage, fabric, commands, broadcast }: HandlerDeps): Handlers {
  const historyInFlight = new WeakSet<AppSocket>();
  return {
    'fleet:list': async () => ({ devices: await fleetViews(storage, fabric) }),

    'device:watch': async ({ deviceId }, { socket }) => {
      const [device] = await fleetViews(storage, fabric, [deviceId]);
      if (!device) throw new NotFoundError();
      await socket.join(rooms.device(deviceId));
      const recent = await commands.recent(deviceId);
      return { device, commands: recent.map(commandView), log: broadcast.recentLog(deviceId) };
    },

    'device:unwatch': async ({ deviceId }, { socket }) => {
      await socket.leave(rooms.device(deviceId));
      return {};
    },

    'telemetry:history': async ({ deviceId, limit }, { socket }) => {
      // One at a time per socket: each answer may be up to a megabyte (kysely-storage.ts).
      if (historyInFlight.has(socket)) throw new Busy();
      historyInFlight.add(socket);
      try {
        return { points: await storage.telemetryHistory(deviceId, limit ?? 500) };
      } finally {
        historyInFlight.delete(socket);
      }
    },

    'command:send': async ({ deviceId, action, params }, { user }) => {
      if (!roleAtLeast(user.role, 'operator')) throw new Forbidden();
      const cmd = await commands.send({ deviceId, action, params: params ?? null, user });
      return { command: commandView(cmd) };
    },
  };
}
