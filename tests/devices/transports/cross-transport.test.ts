/**
 * Case 17 of docs/security.md across transports: a new connection of a device replaces its older
 * one, whatever the transports (docs/protocol.md). The old one is told `going_away` where its
 * transport can carry it (a TCP line, a WebSocket frame and close code 1001; MQTT 3.1.1 has no
 * server goodbye, so its connection is just closed); the device never shows offline, and commands
 * and readings follow the new connection.
 */
import { GOING_AWAY } from '../../../server/devices/outbound';
import { sleep, until } from '../../support/child';
import { bystanders, expectUntouched } from '../../support/bystanders';
import { RawDevice } from '../../support/device';
import { mqttClosed, mqttDevice, topics, type MqttClient } from '../../support/mqtt';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, nextEvent, startServer, TestServer, type ClientSocket } from '../../support/server';
import { WsDevice } from '../../support/ws';

afterEach(closeAllServers);

type Transport = 'tcp' | 'websocket' | 'mqtt';
const GOODBYE = { type: 'error', error: 'going_away', detail: GOING_AWAY.replaced };

/** One connection of a device, whatever its transport, as the test needs it. */
interface Conn {
  transport: Transport;
  /** The next command it receives. */
  command(): Promise<{ id: string; action: string }>;
  ack(id: string): void;
  reading(id: string): Promise<void>;
  /** Resolves with what the device was told before the connection closed (null: nothing, MQTT). */
  closedWith(): Promise<Record<string, unknown> | null>;
  close(): void;
}

async function connect(server: TestServer, transport: Transport, id: string, token: string): Promise<Conn> {
  if (transport === 'tcp') {
    const d = await RawDevice.hello(server.devicePort, id, token);
    return {
      transport,
      command: async () => (await d.next((m) => m.type === 'fromservertonode')) as { id: string; action: string },
      ack: (cid) => d.send({ type: 'ack', id: cid, ok: true, result: { via: transport } }),
      reading: async (rid) => {
        d.send({ type: 'telemetry', id: rid, data: { via: transport } });
        await d.next((m) => m.type === 'stored' && m.id === rid);
      },
      closedWith: async () => {
        const goodbye = await d.next((m) => m.type === 'error');
        await d.waitClosed();
        return goodbye;
      },
      close: () => d.close(),
    };
  }
  if (transport === 'websocket') {
    const d = await WsDevice.bearer(server.wsUrl, id, token);
    return {
      transport,
      command: async () => (await d.next((m) => m.type === 'fromservertonode')) as { id: string; action: string },
      ack: (cid) => d.send({ type: 'ack', id: cid, ok: true, result: { via: transport } }),
      reading: async (rid) => {
        d.send({ type: 'telemetry', id: rid, data: { via: transport } });
        await d.next((m) => m.type === 'stored' && m.id === rid);
      },
      closedWith: async () => {
        const goodbye = await d.next((m) => m.type === 'error');
        expect((await d.waitClosed()).code).toBe(1001);
        return goodbye;
      },
      close: () => d.close(),
    };
  }
  const c: MqttClient = await mqttDevice(server, id, token);
  await c.subscribeAsync(topics.commands(id), { qos: 1 });
  const commands: { id: string; action: string }[] = [];
  const waiting: ((m: { id: string; action: string }) => void)[] = [];
  c.on('message', (_t, payload) => {
    const m = JSON.parse(payload.toString()) as { id: string; action: string };
    const w = waiting.shift();
    if (w) w(m);
    else commands.push(m);
  });
  return {
    transport,
    command: () => (commands.length ? Promise.resolve(commands.shift()!) : new Promise((r) => waiting.push(r))),
    ack: (cid) => void c.publish(topics.ack(id), JSON.stringify({ id: cid, ok: true, result: { via: transport } }), { qos: 1 }),
    reading: async (rid) => {
      await c.publishAsync(topics.telemetry(id), JSON.stringify({ type: 'telemetry', id: rid, data: { via: transport } }), { qos: 1 });
    },
    closedWith: async () => {
      await mqttClosed(c);
      return null;
    },
    close: () => c.end(true),
  };
}

async function dashboard(server: TestServer): Promise<ClientSocket> {
  return connectSocket(server, await createUserAndLogin(server));
}

const pairs: [Transport, Transport][] = [
  ['tcp', 'websocket'],
  ['websocket', 'mqtt'],
  ['mqtt', 'tcp'],
  ['websocket', 'tcp'],
  ['mqtt', 'websocket'],
  ['tcp', 'mqtt'],
  ['websocket', 'websocket'],
  ['mqtt', 'mqtt'],
];

describe('17. a second connection of the same device on another transport', () => {
  test.each(pairs.map(([from, to]) => ({ from, to })))(
    'when a device on $from connects again over $to, then the $from connection is told why (where it can be) and closed, the device never shows offline, and commands and readings follow the $to one',
    async ({ from, to }) => {
      const server = await startServer();
      const socket = await dashboard(server);
      const good = await bystanders(server, 200);
      const { token } = await addDevice(server, 'roamer');
      const statuses: { online: boolean; transport?: string | null }[] = [];
      socket.on('device:status', (s: { deviceId: string; online: boolean; transport?: string | null }) => s.deviceId === 'roamer' && statuses.push(s));

      const first = await connect(server, from, 'roamer', token);
      await first.reading('r-1');
      await until(() => statuses.some((s) => s.transport === from), 3000, `roamer online over ${from}`);
      const second = await connect(server, to, 'roamer', token);
      const told = await first.closedWith();
      if (from === 'mqtt') expect(told).toBeNull();
      else expect(told).toEqual(GOODBYE);

      await until(() => statuses.at(-1)?.transport === to, 3000, `roamer online over ${to}`);
      await sleep(200);
      expect(statuses.every((s) => s.online)).toBe(true);
      const { devices } = await emitAck(socket, 'fleet:list', {});
      expect(devices.find((d: { id: string }) => d.id === 'roamer')).toMatchObject({ online: true, transport: to });
      // Its bystander and the roamer.
      expect(await (await fetch(server.baseUrl + '/metrics')).text()).toMatch(new RegExp(`^sockpit_devices_online_by_transport\\{transport="${to}"\\} 2$`, 'm'));

      const res = await emitAck(socket, 'command:send', { deviceId: 'roamer', action: 'togglerele' });
      const cmd = await second.command();
      expect(cmd).toMatchObject({ id: res.command.id, action: 'togglerele' });
      const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === cmd.id && c.status === 'acked');
      second.ack(cmd.id);
      expect(await acked).toMatchObject({ result: { via: to } });
      await second.reading('r-2');
      expect((await db(server).telemetryHistory('roamer', 5)).map((p) => p.data)).toEqual(expect.arrayContaining([{ via: from }, { via: to }]));
      expect(await db(server).countTelemetry('roamer')).toBe(2);

      second.close();
      expectUntouched(await good.stop());
      socket.close();
    },
  );

  test('when a device keeps reconnecting over all three transports at once, then exactly one connection stays and it is online once', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'flappy');
    const order: Transport[] = ['tcp', 'websocket', 'mqtt', 'tcp', 'websocket', 'mqtt', 'tcp', 'websocket', 'mqtt'];
    const conns = await Promise.all(order.map((t) => connect(server, t, 'flappy', token).catch(() => null)));
    await sleep(500);
    expect(server.app.core.connectionCount).toBe(1);
    const metrics = await (await fetch(server.baseUrl + '/metrics')).text();
    expect(metrics).toMatch(/^sockpit_devices_online 1$/m);
    // The one left gets commands.
    const socket = await dashboard(server);
    const res = await emitAck(socket, 'command:send', { deviceId: 'flappy', action: 'togglerele' });
    const { devices } = await emitAck(socket, 'fleet:list', {});
    const live = conns.find((c) => c && c.transport === devices.find((d: { id: string }) => d.id === 'flappy').transport);
    expect(live).toBeDefined();
    const got = await Promise.race(conns.filter((c): c is Conn => c !== null).map((c) => c.command().then((m) => ({ c, m }))));
    expect(got.m.id).toBe(res.command.id);
    for (const c of conns) c?.close();
    socket.close();
  });
});
