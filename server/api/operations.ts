import type { Response } from 'express';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Fabric } from '../cluster/fabric';
import { CommandService, NotFoundError } from '../commands/service';
import { addDevice, InputError, removeDevice, rotateDeviceToken } from '../devices/admin';
import { commandView } from '../commands/view';
import type { DeviceView } from '../contract/schemas';
import type { Command as StoredCommand, Storage } from '../storage';
import type { LiveDevices } from '../devices/core';
import { fleetViews } from '../devices/views';
import { createApiKey, revokeApiKey, RoleTooHighError, visibleKeys } from './keys';
import { operation, Operation } from './operation';
import { notFound, ProblemError } from './problem';
import * as s from './schemas';
import { streamTelemetry } from './telemetry';

export interface OperationDeps {
  storage: Storage;
  fabric: Fabric;
  /** The dashboard's command service: a command sent here shows live on the page. */
  commands: Pick<CommandService, 'send' | 'onChanged'>;
  /** Disconnects a device whose token was rotated or which was removed. */
  /** Closes the connection of a device whose token was rotated or which was removed. */
  devices: LiveDevices;
  log: Logger;
}

/** A device view in the API's shape: exactly the contract's fields, nothing a later view may add. */
export function deviceOut(v: DeviceView): z.infer<typeof s.Device> {
  return {
    id: v.id,
    name: v.name,
    online: v.online,
    lastSeen: v.lastSeen,
    latest: v.latest,
    latestAt: v.latestAt,
    firmware: v.firmware,
    transport: v.transport ?? null,
  };
}

const json = (schema: z.ZodType) => ({ 'application/json': schema });

/** Every endpoint of docs/api.md. */
export function operations(deps: OperationDeps): Operation[] {
  const { storage, fabric } = deps;

  const mustHaveDevice = async (id: string) => {
    if (!(await storage.getDevice(id))) throw notFound(`No device "${id}".`);
  };

  return [
    operation({
      id: 'listDevices',
      method: 'get',
      path: '/devices',
      tag: 'devices',
      summary: 'Every device, as the dashboard sees it',
      role: 'viewer',
      responses: { 200: { description: 'The devices, by id', content: json(s.DeviceList) } },
      problems: [],
      async handle() {
        return { status: 200, body: { devices: (await fleetViews(storage, fabric)).map(deviceOut) } };
      },
    }),

    operation({
      id: 'getDevice',
      method: 'get',
      path: '/devices/{id}',
      tag: 'devices',
      summary: 'One device',
      description: 'Its presence, last-seen time and latest reading (handy for a Home Assistant RESTful sensor).',
      role: 'viewer',
      params: s.DeviceParams,
      responses: { 200: { description: 'The device', content: json(s.Device) } },
      problems: [404],
      async handle({ params }) {
        const [view] = await fleetViews(storage, fabric, [params.id]);
        if (!view) throw notFound(`No device "${params.id}".`);
        return { status: 200, body: deviceOut(view) };
      },
    }),

    operation({
      id: 'addDevice',
      method: 'post',
      path: '/devices',
      tag: 'devices',
      summary: 'Add a device',
      description: 'Answers with its token, shown only this once.',
      role: 'admin',
      body: s.CreateDeviceBody,
      responses: { 201: { description: 'Added', content: json(s.DeviceCreated) } },
      problems: [403, 409, 413, 415],
      async handle({ body }) {
        try {
          const { device, token } = await addDevice(storage, body.id, body.name);
          return { status: 201, body: { id: device.id, name: device.name, token }, headers: { Location: `/api/v1/devices/${encodeURIComponent(device.id)}` } };
        } catch (err) {
          if (!(err instanceof InputError)) throw err;
          if (await storage.getDevice(body.id)) throw new ProblemError(409, `A device "${body.id}" already exists.`);
          throw new ProblemError(400, err.message);
        }
      },
    }),

    operation({
      id: 'rotateDeviceToken',
      method: 'post',
      path: '/devices/{id}/token',
      tag: 'devices',
      summary: "Rotate a device's token",
      description: 'The old token stops working at once and a device connected with it is disconnected.',
      role: 'admin',
      params: s.DeviceParams,
      responses: { 200: { description: 'The new token, shown only this once', content: json(s.DeviceToken) } },
      problems: [403, 404],
      async handle({ params }) {
        let token: string;
        try {
          token = await rotateDeviceToken(storage, params.id);
        } catch (err) {
          if (err instanceof InputError) throw notFound(`No device "${params.id}".`);
          throw err;
        }
        deps.devices.tokenRotated(params.id);
        return { status: 200, body: { id: params.id, token } };
      },
    }),

    operation({
      id: 'removeDevice',
      method: 'delete',
      path: '/devices/{id}',
      tag: 'devices',
      summary: 'Remove a device',
      description: 'With its telemetry and commands; a connected device is disconnected.',
      role: 'admin',
      params: s.DeviceParams,
      responses: { 204: { description: 'Removed' } },
      problems: [403, 404],
      async handle({ params }) {
        try {
          await removeDevice(storage, params.id);
        } catch (err) {
          if (err instanceof InputError) throw notFound(`No device "${params.id}".`);
          throw err;
        }
        deps.devices.removed(params.id);
        return { status: 204 };
      },
    }),

    operation({
      id: 'getTelemetry',
      method: 'get',
      path: '/devices/{id}/telemetry',
      tag: 'telemetry',
      summary: 'Readings of a device between two times',
      description:
        'Oldest first, at most `limit`. Streamed as it is read from storage. `format=csv` gives a `time` column (ISO 8601) and one column per key; ' +
        'a response cut short by a server failure ends without its closing bracket (JSON) or mid-stream (CSV), never as complete-looking data.',
      role: 'viewer',
      params: s.DeviceParams,
      query: s.TelemetryQuery,
      responses: { 200: { description: 'The readings', content: { 'application/json': s.TelemetryJson, 'text/csv': s.TelemetryCsv } } },
      problems: [404],
      async handle({ params, query, req, res }) {
        const range = { from: query.from ?? 0, to: query.to ?? Date.now(), limit: query.limit };
        if (range.from > range.to) throw new ProblemError(400, `from (${new Date(range.from).toISOString()}) is after to (${new Date(range.to).toISOString()}).`);
        await mustHaveDevice(params.id);
        await streamTelemetry({ storage, log: deps.log, req, res }, params.id, range, query.format);
        return null;
      },
    }),

    operation({
      id: 'sendCommand',
      method: 'post',
      path: '/devices/{id}/commands',
      tag: 'commands',
      summary: 'Send a command to a device',
      description:
        "The same path as the dashboard's button: the command shows live on the page with the key's user as sender. " +
        'It is `sent` when the device is online, else `queued` until it connects (or `expired`). Follow it with `GET /commands/{id}?wait=`.',
      role: 'operator',
      params: s.DeviceParams,
      body: s.SendCommandBody,
      responses: { 202: { description: 'Accepted: the command, `queued` or `sent`', content: json(s.Command) } },
      problems: [403, 404, 413, 415],
      async handle({ params, body, caller }) {
        try {
          const cmd = await deps.commands.send({ deviceId: params.id, action: body.action, params: body.params ?? null, user: caller.user });
          return { status: 202, body: commandView(cmd), headers: { Location: `/api/v1/commands/${cmd.id}` } };
        } catch (err) {
          if (err instanceof NotFoundError) throw notFound(`No device "${params.id}".`);
          throw err;
        }
      },
    }),

    operation({
      id: 'listCommands',
      method: 'get',
      path: '/devices/{id}/commands',
      tag: 'commands',
      summary: 'Recent commands of a device, newest first',
      role: 'viewer',
      params: s.DeviceParams,
      query: s.CommandListQuery,
      responses: { 200: { description: 'The commands', content: json(s.CommandList) } },
      problems: [404],
      async handle({ params, query }) {
        await mustHaveDevice(params.id);
        return { status: 200, body: { commands: (await storage.listCommands(params.id, query.limit)).map(commandView) } };
      },
    }),

    operation({
      id: 'getCommand',
      method: 'get',
      path: '/commands/{id}',
      tag: 'commands',
      summary: 'One command; with `wait`, once it is final',
      description:
        'With `wait=S` (at most 30 seconds) the answer is held until the command is `acked`, `failed`, `timeout` or `expired`, or S seconds have passed; ' +
        'then it is 200 with the command as it is (check `status`). A command removed meanwhile (with its device) is 404, as without a wait.',
      role: 'viewer',
      params: s.CommandParams,
      query: s.CommandWaitQuery,
      responses: { 200: { description: 'The command', content: json(s.Command) } },
      problems: [404],
      async handle({ params, query, res }) {
        const cmd = await waitFinal(deps, params.id, query.wait ?? 0, res);
        if (!cmd) throw notFound(`No command "${params.id}".`);
        return { status: 200, body: commandView(cmd) };
      },
    }),

    operation({
      id: 'listApiKeys',
      method: 'get',
      path: '/keys',
      tag: 'keys',
      summary: 'Your API keys (an admin sees every key)',
      description: 'Needs a browser session: keys are managed in the page or with the CLI, not with another key.',
      role: 'viewer',
      sessionOnly: true,
      responses: { 200: { description: 'The keys (never the keys themselves)', content: json(s.ApiKeyList) } },
      problems: [403],
      async handle({ caller }) {
        return { status: 200, body: { keys: await visibleKeys(storage, caller.user, caller.role) } };
      },
    }),

    operation({
      id: 'createApiKey',
      method: 'post',
      path: '/keys',
      tag: 'keys',
      summary: 'Make an API key for yourself',
      description: 'The key is in the answer only this once. Its role is at most yours. Needs a browser session and its CSRF token.',
      role: 'viewer',
      sessionOnly: true,
      body: s.CreateKeyBody,
      responses: { 201: { description: 'Made', content: json(s.ApiKeyCreated) } },
      problems: [403, 413, 415],
      async handle({ body, caller }) {
        try {
          const { apiKey, key } = await createApiKey(storage, caller.user, body.name, body.role);
          deps.log.info({ user: caller.user.username, apiKeyId: apiKey.id, role: apiKey.role }, 'api key created');
          return { status: 201, body: { ...apiKey, key } };
        } catch (err) {
          if (err instanceof RoleTooHighError) throw new ProblemError(403, err.message);
          if (err instanceof InputError) throw new ProblemError(400, err.message);
          throw err;
        }
      },
    }),

    operation({
      id: 'revokeApiKey',
      method: 'delete',
      path: '/keys/{id}',
      tag: 'keys',
      summary: 'Revoke an API key',
      description: 'Your own, or any key for an admin. It stops working at once. Needs a browser session and its CSRF token.',
      role: 'viewer',
      sessionOnly: true,
      params: s.KeyParams,
      responses: { 204: { description: 'Revoked' } },
      problems: [403, 404],
      async handle({ params, caller }) {
        if (!(await revokeApiKey(storage, params.id, caller))) throw notFound(`No API key "${params.id}".`);
        deps.log.info({ user: caller.user.username, apiKeyId: params.id }, 'api key revoked');
        return { status: 204 };
      },
    }),
  ];
}

const RECHECK_MS = 1000;
const FINAL = new Set(['acked', 'failed', 'timeout', 'expired']);
const isFinal = (c: StoredCommand) => FINAL.has(c.status);

/**
 * The command, once final or after `seconds`; null when it is gone (removed with its device), so
 * the answer is 404 as without a wait (docs/api.md, "Commands"). Changes made on this instance
 * arrive through the command service, at no cost. Only in multi-instance mode is storage re-read
 * every second, since the device may answer on another instance. A client that goes away ends
 * the wait.
 */
async function waitFinal(deps: OperationDeps, id: string, seconds: number, res: Response): Promise<StoredCommand | null> {
  const { storage, commands } = deps;
  const first = await storage.getCommand(id);
  if (!first || isFinal(first) || seconds <= 0) return first;
  const clustered = deps.fabric.kind !== 'local';
  return new Promise((resolve) => {
    let latest = first;
    let done = false;
    const finish = (c: StoredCommand | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (recheck) clearInterval(recheck);
      unsubscribe();
      res.off('close', gone);
      resolve(c);
    };
    // `last`: the wait is over, answer with what storage says now (or, if it cannot be read, with
    // the command as last seen).
    const reread = (last: boolean) =>
      storage.getCommand(id).then(
        (c) => {
          if (c) latest = c;
          if (last || !c || isFinal(c)) finish(c);
        },
        () => {
          if (last) finish(latest);
        },
      );
    const unsubscribe = commands.onChanged((c) => {
      if (c.id !== id) return;
      latest = c;
      if (isFinal(c)) finish(c);
    });
    const timer = setTimeout(() => void reread(true), seconds * 1000);
    const recheck = clustered ? setInterval(() => void reread(false), RECHECK_MS) : null;
    const gone = () => finish(latest);
    res.on('close', gone);
    // It may have become final between the first read and the subscription.
    void reread(false);
  });
}
