/**
 * MQTT devices (docs/protocol.md, "MQTT"): the embedded listener on MQTT_PORT (each test server has
 * its own port; the machine's Mosquitto holds 1883), with the `mqtt` npm client, raw packets, Debian's
 * mosquitto_pub / mosquitto_sub and python3-paho-mqtt. The bad-input cases are in
 * bad-input.test.ts; replacement across transports in cross-transport.test.ts.
 */
import { spawn } from 'node:child_process';
import * as mqttPacket from 'mqtt-packet';
import path from 'node:path';
import type { TelemetryRow } from '../../../server/storage';
import { sleep, until } from '../../support/child';
import { RawDevice } from '../../support/device';
import { mqttClosed, mqttDevice, RawMqtt, topics, type MqttClient } from '../../support/mqtt';
import { killPython, runPython } from '../../support/python';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, holdStorageCalls, nextEvent, startServer, TestServer, type ClientSocket } from '../../support/server';

afterEach(async () => {
  killPython();
  await closeAllServers();
});

const MQTT_DEVICE_PY = path.resolve(__dirname, '../../support/python/mqtt_device.py');
const OWNER = { username: 'owner', password: 'correct horse', role: 'admin' as const };

async function withDashboard(overrides: Parameters<typeof startServer>[0] = {}): Promise<{ server: TestServer; socket: ClientSocket; cookie: string }> {
  const server = await startServer(overrides);
  const cookie = await createUserAndLogin(server, OWNER);
  const socket = await connectSocket(server, cookie);
  return { server, socket, cookie };
}

async function metricsText(server: TestServer): Promise<string> {
  return (await fetch(server.baseUrl + '/metrics')).text();
}

type Status = { deviceId: string; online: boolean; transport?: string | null };
const statusOf = (id: string, online: boolean) => (s: Status) => s.deviceId === id && s.online === online;

/** Holds the server's telemetry commits until `release()`; `committed()` counts the rows committed since. */
function holdCommits(server: TestServer): { release: () => void; committed: () => number } {
  const storage = server.app.storage;
  const insert = storage.insertTelemetry.bind(storage);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let committed = 0;
  storage.insertTelemetry = async (rows: TelemetryRow[]) => {
    await gate;
    await insert(rows);
    committed += rows.length;
  };
  return { release, committed: () => committed };
}

/** The next message on a topic the client subscribed to, with its QoS. */
function nextMessage(client: MqttClient, topic: string, timeoutMs = 8000): Promise<{ payload: Record<string, unknown>; qos: number }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no message on ${topic} within ${timeoutMs} ms`)), timeoutMs);
    const on = (tp: string, payload: Buffer, packet: { qos: number }) => {
      if (tp !== topic) return;
      clearTimeout(t);
      client.off('message', on);
      resolve({ payload: JSON.parse(payload.toString()) as Record<string, unknown>, qos: packet.qos });
    };
    client.on('message', on);
  });
}

/** Runs one of Debian's mosquitto clients; resolves with its exit code and output. */
function mosquitto(tool: 'mosquitto_pub' | 'mosquitto_sub', args: string[]): { done: Promise<{ code: number | null; stdout: string; stderr: string }>; kill(): void } {
  const proc = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => proc.on('exit', (code) => resolve({ code, stdout, stderr })));
  return { done, kill: () => proc.exitCode === null && proc.kill('SIGKILL') };
}

describe('MQTT devices, with the mqtt client', () => {
  test('when a device CONNECTs with its id as username and its token as password, then it is accepted and shows online over mqtt, on the page and in /metrics', async () => {
    const { server, socket, cookie } = await withDashboard();
    const { token } = await addDevice(server, 'mq-1', 'Kitchen relay');
    const online = nextEvent(socket, 'device:status', statusOf('mq-1', true));
    const client = await mqttDevice(server, 'mq-1', token);
    expect(await online).toMatchObject({ deviceId: 'mq-1', online: true, transport: 'mqtt' });

    const { devices } = await emitAck(socket, 'fleet:list', {});
    expect(devices.find((d: { id: string }) => d.id === 'mq-1')).toMatchObject({ online: true, transport: 'mqtt' });
    const metrics = await metricsText(server);
    expect(metrics).toMatch(/^sockpit_device_connections_by_transport\{transport="mqtt"\} 1$/m);
    expect(metrics).toMatch(/^sockpit_devices_online_by_transport\{transport="mqtt"\} 1$/m);
    expect(metrics).toMatch(/^sockpit_device_connections_by_transport\{transport="tcp"\} 0$/m);
    expect(metrics).not.toContain(token);

    // The dashboard and the device page, as the server renders them.
    const page = async (p: string) => (await fetch(server.baseUrl + p, { headers: { cookie } })).text();
    expect(await page('/')).toContain('<span class="visually-hidden">connected over </span><span data-field="transport-name">mqtt</span>');
    expect(await page('/devices/mq-1')).toMatch(/<dt>Connected over<\/dt><dd id="device-transport"[^>]*>mqtt<\/dd>/);

    const offline = nextEvent(socket, 'device:status', statusOf('mq-1', false));
    await client.endAsync();
    expect(await offline).toMatchObject({ online: false });
    expect(await metricsText(server)).toMatch(/^sockpit_device_connections_by_transport\{transport="mqtt"\} 0$/m);
    socket.close();
  });

  test('when the id/token pair is wrong (a wrong token, an unknown device, no password), then CONNACK says not authorized (5) and the connection is closed', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'mq-auth');
    for (const c of [{ id: 'mq-auth', token: 'wrong' }, { id: 'nobody', token }, { id: 'mq-auth' }, { id: 'mq-auth', token: '' }]) {
      const { raw, returnCode } = await RawMqtt.connect(server.mqttPort, c);
      expect(returnCode).toBe(5);
      await raw.waitClosed();
    }
    await expect(mqttDevice(server, 'mq-auth', 'wrong')).rejects.toMatchObject({ code: 5 });
    expect(server.app.core.connectionCount).toBe(0);
    // The right pair gets in.
    const { raw, returnCode } = await RawMqtt.connect(server.mqttPort, { id: 'mq-auth', token });
    expect(returnCode).toBe(0);
    raw.close();
  });

  test('with ALLOW_ANONYMOUS_DEVICES, a CONNECT without a password is accepted: the device id is the username, else the client id', async () => {
    const { server, socket } = await withDashboard({ allowAnonymousDevices: true });
    const named = await RawMqtt.connect(server.mqttPort, { id: 'tasmota-1', clientId: 'DVES_1A2B3C' });
    expect(named.returnCode).toBe(0);
    const unnamed = await RawMqtt.open(server.mqttPort);
    unnamed.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: 'esp-anon-7' });
    expect(await unnamed.next((p) => p.cmd === 'connack')).toMatchObject({ returnCode: 0 });
    await until(async () => {
      const { devices } = await emitAck(socket, 'fleet:list', {});
      return ['tasmota-1', 'esp-anon-7'].every((id) => devices.some((d: { id: string; online: boolean; transport: string }) => d.id === id && d.online && d.transport === 'mqtt'));
    }, 3000, 'both anonymous devices online over mqtt');
    named.raw.publish(topics.telemetry('tasmota-1'), '{"POWER":"ON"}', 1);
    await named.raw.next((p) => p.cmd === 'puback');
    expect((await db(server).telemetryHistory('tasmota-1', 5)).map((p) => p.data)).toEqual([{ POWER: 'ON' }]);
    // A wrong token for a device with a token is still refused.
    const { token } = await addDevice(server, 'mq-owned');
    expect((await RawMqtt.connect(server.mqttPort, { id: 'mq-owned', token: token + 'x' })).returnCode).toBe(5);
    named.raw.close();
    unnamed.close();
    socket.close();
  });

  test('when a QoS 1 reading arrives, then its PUBACK comes only once the row is committed', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'mq-qos1');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'mq-qos1', token });
    const { release, committed } = holdCommits(server);
    const mid = raw.publish(topics.telemetry('mq-qos1'), JSON.stringify({ type: 'telemetry', id: 'q1-1', data: { t: 22.5 } }), 1);
    await sleep(800);
    expect(raw.packets.filter((p) => p.cmd === 'puback')).toEqual([]);
    expect(await db(server).countTelemetry('mq-qos1')).toBe(0);
    release();
    await raw.puback(mid);
    // At the PUBACK the row is in storage.
    expect(committed()).toBe(1);
    expect(await db(server).countTelemetry('mq-qos1')).toBe(1);
    raw.close();
  });

  test('when QoS 1 readings come while the earlier ones wait for their commit, then the device is read on, the page sees them live, and the PUBACKs come after the commit in the order of the PUBLISHes, an ack among them included', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'mq-order');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'mq-order', token });
    const { release } = holdCommits(server);
    const live: number[] = [];
    socket.on('device:telemetry', (r: { deviceId: string; data: { n: number } }) => {
      if (r.deviceId === 'mq-order') live.push(r.data.n);
    });
    try {
    const first = raw.publish(topics.telemetry('mq-order'), JSON.stringify({ type: 'telemetry', id: 'o-1', data: { n: 1 } }), 1);
    await until(() => live.length === 1, 3000, 'the first reading on the page');
    // The first is not committed yet; the next PUBLISHes are still read and shown at once.
    const second = raw.publish(topics.telemetry('mq-order'), JSON.stringify({ type: 'telemetry', id: 'o-2', data: { n: 2 } }), 1);
    const ack = raw.publish(topics.ack('mq-order'), JSON.stringify({ id: 'no-such-command', ok: true }), 1);
    await until(() => live.length === 2, 3000, 'the second reading on the page while the first waits for its commit');
    await sleep(300);
    expect(raw.packets.filter((p) => p.cmd === 'puback')).toEqual([]);
    release();
    await until(() => raw.packets.filter((p) => p.cmd === 'puback').length === 3, 5000, 'three PUBACKs');
    expect(raw.packets.filter((p) => p.cmd === 'puback').map((p) => p.messageId)).toEqual([first, second, ack]);
    expect(await db(server).countTelemetry('mq-order')).toBe(2);
    expect(raw.closed).toBe(false);
    } finally {
      release(); // also when it failed: the server's close waits for the held commit
      raw.close();
    }
  });

  test('when storage holds the device back (paused) in the middle of a read of several PUBLISHes, then after the drain the device is read again and everything is PUBACKed', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'mq-pause');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'mq-pause', token });
    // Two readings waiting for their commit make the writer full: the link pauses.
    (server.app.writer as unknown as { highWater: number }).highWater = 2;
    const { release } = holdCommits(server);
    try {
      const ids = [1, 2, 3, 4, 5];
      const burst = Buffer.concat(
        ids.map((n) =>
          mqttPacket.generate({ cmd: 'publish', topic: topics.telemetry('mq-pause'), payload: Buffer.from(JSON.stringify({ type: 'telemetry', id: `p-${n}`, data: { n } })), qos: 1, messageId: 1000 + n, retain: false, dup: false }),
        ),
      );
      raw.write(burst); // one write: one read on the server, five packets
      await sleep(300);
      release();
      for (const n of ids) await raw.puback(1000 + n, 5000);
      // Read again: a later reading is taken and answered.
      const later = raw.publish(topics.telemetry('mq-pause'), JSON.stringify({ type: 'telemetry', id: 'p-later', data: { n: 6 } }), 1);
      await raw.puback(later, 5000);
      expect(await db(server).countTelemetry('mq-pause')).toBe(6);
    } finally {
      release();
      raw.close();
    }
  });

  test('when readings come with QoS 0, then they are stored as they came, like plain lines', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'mq-qos0');
    const client = await mqttDevice(server, 'mq-qos0', token);
    await client.publishAsync(topics.telemetry('mq-qos0'), '{"sensor":"gps","time":1351824120}', { qos: 0 });
    await client.publishAsync(topics.telemetry('mq-qos0'), '{"type":"node","msg":"values"}', { qos: 0 });
    // Base64, as a line may carry it, is accepted too.
    await client.publishAsync(topics.telemetry('mq-qos0'), Buffer.from('{"v":3}').toString('base64'), { qos: 0 });
    await until(async () => (await db(server).countTelemetry('mq-qos0')) === 3, 3000, 'three readings');
    const data = (await db(server).telemetryHistory('mq-qos0', 10)).map((p) => p.data);
    expect(data).toEqual(expect.arrayContaining([{ sensor: 'gps', time: 1351824120 }, { type: 'node', msg: 'values' }, { v: 3 }]));
    await client.endAsync();
  });

  test('when a QoS 2 reading is resent with DUP before its PUBREL, then it is stored once and the exchange completes', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'mq-qos2');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'mq-qos2', token });
    const publish = (dup: boolean) => raw.send({ cmd: 'publish', topic: topics.telemetry('mq-qos2'), payload: Buffer.from('{"qos2":"once"}'), qos: 2, messageId: 11, retain: false, dup });
    publish(false);
    await raw.next((p) => p.cmd === 'pubrec' && p.messageId === 11);
    publish(true);
    await raw.next((p) => p.cmd === 'pubrec' && p.messageId === 11);
    raw.send({ cmd: 'pubrel', messageId: 11 });
    await raw.next((p) => p.cmd === 'pubcomp' && p.messageId === 11);
    // The packet id again, without DUP: a new message.
    raw.send({ cmd: 'publish', topic: topics.telemetry('mq-qos2'), payload: Buffer.from('{"qos2":"twice"}'), qos: 2, messageId: 11, retain: false, dup: false });
    await raw.next((p) => p.cmd === 'pubrec' && p.messageId === 11);
    raw.send({ cmd: 'pubrel', messageId: 11 });
    await raw.next((p) => p.cmd === 'pubcomp' && p.messageId === 11);
    await until(async () => (await db(server).telemetryHistory('mq-qos2', 10)).length === 2, 3000, 'two readings stored');
    await sleep(200);
    expect((await db(server).telemetryHistory('mq-qos2', 10)).map((p) => p.data)).toEqual([{ qos2: 'once' }, { qos2: 'twice' }]);
    raw.close();
  });

  test('when a reliable reading (same id) is resent, also after a reconnect, then it is PUBACKed each time and stored once', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'mq-rel');
    const reading = JSON.stringify({ type: 'telemetry', id: 'boot3-17', data: { t: 21 } });
    const first = await mqttDevice(server, 'mq-rel', token);
    await first.publishAsync(topics.telemetry('mq-rel'), reading, { qos: 1 });
    await first.publishAsync(topics.telemetry('mq-rel'), reading, { qos: 1 });
    await first.endAsync();
    const again = await mqttDevice(server, 'mq-rel', token);
    await again.publishAsync(topics.telemetry('mq-rel'), reading, { qos: 1, dup: true });
    expect(await db(server).countTelemetry('mq-rel')).toBe(1);
    expect((await db(server).telemetryHistory('mq-rel', 5)).map((p) => p.data)).toEqual([{ t: 21 }]);
    await again.endAsync();
  });

  test('when the dashboard sends a command, then it is published with QoS 1 to sockpit/ID/commands, and the ack on sockpit/ID/ack makes it acked (ok:false: failed)', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'mq-cmd');
    const client = await mqttDevice(server, 'mq-cmd', token);
    expect((await client.subscribeAsync(topics.commands('mq-cmd'), { qos: 1 }))[0]).toMatchObject({ topic: topics.commands('mq-cmd'), qos: 1 });

    const arriving = nextMessage(client, topics.commands('mq-cmd'));
    const res = await emitAck(socket, 'command:send', { deviceId: 'mq-cmd', action: 'togglerele' });
    const { payload, qos } = await arriving;
    expect(qos).toBe(1);
    expect(payload).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: res.command.id });
    const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === res.command.id && c.status === 'acked');
    await client.publishAsync(topics.ack('mq-cmd'), JSON.stringify({ id: res.command.id, ok: true, result: { relay: 'on' } }), { qos: 1 });
    expect(await acked).toMatchObject({ result: { relay: 'on' } });

    const arriving2 = nextMessage(client, topics.commands('mq-cmd'));
    const res2 = await emitAck(socket, 'command:send', { deviceId: 'mq-cmd', action: 'changesetting', params: { interval_ms: 5000 } });
    expect((await arriving2).payload).toEqual({ type: 'fromservertonode', msg: 'action', action: 'changesetting', id: res2.command.id, params: { interval_ms: 5000 } });
    const failed = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === res2.command.id && c.status === 'failed');
    // An ack's topic says what it is: {"type":"ack"} may be left out.
    await client.publishAsync(topics.ack('mq-cmd'), JSON.stringify({ id: res2.command.id, ok: false, result: { error: 'read-only' } }), { qos: 1 });
    await failed;
    await client.endAsync();
    socket.close();
  });

  test('when commands were queued while the device was away, then they go out when it subscribes to its commands topic, not before', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'mq-queue');
    const sent = [await emitAck(socket, 'command:send', { deviceId: 'mq-queue', action: 'togglerele' }), await emitAck(socket, 'command:send', { deviceId: 'mq-queue', action: 'togglerele' })];
    expect(sent.map((r) => r.command.status)).toEqual(['queued', 'queued']);
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'mq-queue', token });
    await sleep(600);
    expect(raw.packets.filter((p) => p.cmd === 'publish')).toEqual([]);
    raw.subscribe(topics.commands('mq-queue'));
    expect(await raw.next((p) => p.cmd === 'suback')).toMatchObject({ granted: [1] });
    const got = [await raw.next((p) => p.cmd === 'publish'), await raw.next((p) => p.cmd === 'publish')];
    const ids = got.map((p) => (p.cmd === 'publish' ? JSON.parse(p.payload.toString()).id : null));
    expect(ids).toEqual(sent.map((r) => r.command.id));
    for (const p of got) {
      expect(p).toMatchObject({ topic: topics.commands('mq-queue'), qos: 1 });
      raw.send({ cmd: 'puback', messageId: p.messageId! });
    }
    const mid = raw.publish(topics.ack('mq-queue'), JSON.stringify({ id: ids[0] }), 1);
    await raw.puback(mid);
    await until(async () => (await db(server).getCommand(ids[0]))!.status === 'acked', 3000, 'the ack');
    raw.close();
    socket.close();
  });

  test('when a command is sent while the device is connected but not subscribed, then it stays queued until the device subscribes, or reaches the device\'s next connection on another transport', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'mq-unsub');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'mq-unsub', token });
    const first = await emitAck(socket, 'command:send', { deviceId: 'mq-unsub', action: 'togglerele' });
    const second = await emitAck(socket, 'command:send', { deviceId: 'mq-unsub', action: 'togglerele' });
    await sleep(300);
    // Not `sent`: nothing was written to the device.
    expect((await db(server).getCommand(first.command.id))!.status).toBe('queued');
    raw.subscribe(topics.commands('mq-unsub'));
    const got = [await raw.next((p) => p.cmd === 'publish'), await raw.next((p) => p.cmd === 'publish')];
    expect(got.map((p) => JSON.parse((p as { payload: Buffer }).payload.toString()).id)).toEqual([first.command.id, second.command.id]);
    expect((await db(server).getCommand(first.command.id))!.status).toBe('sent');
    // It unsubscribes: the next command waits, and goes to its next connection, over TCP lines.
    raw.send({ cmd: 'unsubscribe', messageId: 77, unsubscriptions: [topics.commands('mq-unsub')] });
    await raw.next((p) => p.cmd === 'unsuback');
    const third = await emitAck(socket, 'command:send', { deviceId: 'mq-unsub', action: 'togglerele' });
    await sleep(300);
    expect((await db(server).getCommand(third.command.id))!.status).toBe('queued');
    raw.close();
    const d = await RawDevice.hello(server.devicePort, 'mq-unsub', token);
    expect(await d.next((m) => m.type === 'fromservertonode')).toMatchObject({ id: third.command.id, action: 'togglerele' });
    d.close();
    socket.close();
  });

  test('when an ack arrives while the device\'s new connection is being welcomed, then it is taken as an ack once the welcome is done', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'mq-ackw');
    const first = await RawMqtt.connect(server.mqttPort, { id: 'mq-ackw', token });
    first.raw.subscribe(topics.commands('mq-ackw'));
    await first.raw.next((p) => p.cmd === 'suback');
    const res = await emitAck(socket, 'command:send', { deviceId: 'mq-ackw', action: 'togglerele' });
    await first.raw.next((p) => p.cmd === 'publish');
    // Hold the next welcome's storage write; the device reconnects and acks at once.
    const { release } = holdStorageCalls(server, 'markDeviceSeen');
    const again = await RawMqtt.connect(server.mqttPort, { id: 'mq-ackw', token });
    const mid = again.raw.publish(topics.ack('mq-ackw'), JSON.stringify({ id: res.command.id, ok: true }), 1);
    await sleep(200);
    release();
    await again.raw.puback(mid);
    await until(async () => (await db(server).getCommand(res.command.id))!.status === 'acked', 3000, 'the ack');
    expect(await db(server).countTelemetry('mq-ackw')).toBe(0);
    first.raw.close();
    again.raw.close();
    socket.close();
  });

  test('when a device with a persistent session (clean session off) reconnects, then its subscription holds and queued commands reach it without a new SUBSCRIBE', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'mq-keep');
    const first = await RawMqtt.connect(server.mqttPort, { id: 'mq-keep', token, clientId: 'keep-1', clean: false });
    first.raw.subscribe(topics.commands('mq-keep'));
    expect(await first.raw.next((p) => p.cmd === 'suback')).toMatchObject({ granted: [1] });
    first.raw.send({ cmd: 'disconnect' });
    await first.raw.waitClosed();
    const res = await emitAck(socket, 'command:send', { deviceId: 'mq-keep', action: 'togglerele' });
    expect(res.command.status).toBe('queued');
    const again = await RawMqtt.open(server.mqttPort);
    again.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 60, clientId: 'keep-1', username: 'mq-keep', password: Buffer.from(token) });
    expect(await again.next((p) => p.cmd === 'connack')).toMatchObject({ returnCode: 0, sessionPresent: true });
    const got = await again.next((p) => p.cmd === 'publish');
    expect(got).toMatchObject({ topic: topics.commands('mq-keep'), qos: 1 });
    expect(JSON.parse((got as { payload: Buffer }).payload.toString()).id).toBe(res.command.id);
    again.close();
    socket.close();
  });

  test('when two devices use the same client id, then neither pushes the other off, and neither gets the other\'s persistent session or commands', async () => {
    const { server, socket } = await withDashboard();
    const { token: ta } = await addDevice(server, 'mq-same-a');
    const { token: tb } = await addDevice(server, 'mq-same-b');
    // Firmware examples often hard-code one client id for every board.
    const a = await RawMqtt.connect(server.mqttPort, { id: 'mq-same-a', token: ta, clientId: 'ESP8266Client', clean: false });
    a.raw.subscribe(topics.commands('mq-same-a'));
    expect(await a.raw.next((p) => p.cmd === 'suback')).toMatchObject({ granted: [1] });
    const b = await RawMqtt.connect(server.mqttPort, { id: 'mq-same-b', token: tb, clientId: 'ESP8266Client', clean: false });
    expect(b.returnCode).toBe(0);
    await sleep(300);
    expect(a.raw.closed).toBe(false);
    const { devices } = await emitAck(socket, 'fleet:list', {});
    expect(devices.filter((d: { id: string; online: boolean }) => d.id.startsWith('mq-same-') && d.online).map((d: { id: string }) => d.id).sort()).toEqual(['mq-same-a', 'mq-same-b']);
    // A command for A reaches A only; A drops without its PUBACK, so its session keeps the command.
    const res = await emitAck(socket, 'command:send', { deviceId: 'mq-same-a', action: 'changesetting', params: { secret: 'for-a' } });
    expect(await a.raw.next((p) => p.cmd === 'publish')).toMatchObject({ topic: topics.commands('mq-same-a') });
    a.raw.close();
    b.raw.close();
    await b.raw.waitClosed();
    // B comes back with the same client id and a persistent session: it finds nothing of A's.
    const b2 = await RawMqtt.open(server.mqttPort);
    b2.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 60, clientId: 'ESP8266Client', username: 'mq-same-b', password: Buffer.from(tb) });
    expect(await b2.next((p) => p.cmd === 'connack')).toMatchObject({ returnCode: 0, sessionPresent: false });
    await sleep(500);
    expect(b2.packets.filter((p) => p.cmd === 'publish')).toEqual([]);
    // A's own session still holds its command.
    const a2 = await RawMqtt.open(server.mqttPort);
    a2.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 60, clientId: 'ESP8266Client', username: 'mq-same-a', password: Buffer.from(ta) });
    expect(await a2.next((p) => p.cmd === 'connack')).toMatchObject({ returnCode: 0, sessionPresent: true });
    const again = await a2.next((p) => p.cmd === 'publish');
    expect(JSON.parse((again as { payload: Buffer }).payload.toString()).id).toBe(res.command.id);
    a2.close();
    b2.close();
    socket.close();
  });

  test('with ALLOW_ANONYMOUS_DEVICES, a CONNECT with neither a username nor a client id is refused: identifier rejected (2)', async () => {
    const { server, socket } = await withDashboard({ allowAnonymousDevices: true });
    const raw = await RawMqtt.open(server.mqttPort);
    raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: '' });
    expect(await raw.next((p) => p.cmd === 'connack')).toMatchObject({ returnCode: 2 });
    await raw.waitClosed();
    expect((await db(server).listDevices()).map((d) => d.id)).toEqual([]);
    socket.close();
  });

  test('when a device stays connected, then it is online from CONNECT to the end of the connection; a missed keepalive ends it, PINGREQs keep it', async () => {
    const { server, socket } = await withDashboard();
    server.app.core.limits.idleTimeoutMs = 1000; // MQTT's own keepalive decides, not the lines' idle timeout
    const quiet = await addDevice(server, 'mq-quiet');
    const pinger = await addDevice(server, 'mq-pinger');
    const onlineQuiet = nextEvent(socket, 'device:status', statusOf('mq-quiet', true));
    const a = await RawMqtt.connect(server.mqttPort, { id: quiet.id, token: quiet.token, keepalive: 1 });
    const b = await RawMqtt.connect(server.mqttPort, { id: pinger.id, token: pinger.token, keepalive: 1 });
    await onlineQuiet;
    const t0 = Date.now();
    const pings = setInterval(() => b.raw.send({ cmd: 'pingreq' }), 400);
    try {
      const offline = await nextEvent(socket, 'device:status', statusOf('mq-quiet', false), 5000);
      expect(offline.online).toBe(false);
      // MQTT 3.1.1: one and a half keepalives without a packet.
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
      await a.raw.waitClosed(1000);
      await sleep(1500);
      expect(b.raw.closed).toBe(false);
      expect(b.raw.packets.some((p) => p.cmd === 'pingresp')).toBe(true);
      const { devices } = await emitAck(socket, 'fleet:list', {});
      expect(devices.find((d: { id: string }) => d.id === 'mq-pinger')).toMatchObject({ online: true, transport: 'mqtt' });
    } finally {
      clearInterval(pings);
    }
    // A DISCONNECT ends it at once.
    b.raw.send({ cmd: 'disconnect' });
    expect(await nextEvent(socket, 'device:status', statusOf('mq-pinger', false))).toMatchObject({ online: false });
    socket.close();
  });

  test('when the server shuts down, then MQTT devices are disconnected and the listener is gone', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'mq-bye');
    const client = await mqttDevice(server, 'mq-bye', token);
    const closed = mqttClosed(client);
    await server.close();
    await closed;
    await expect(RawMqtt.open(server.mqttPort)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    client.end(true);
  });
});

describe("MQTT devices, with Debian's mosquitto_pub and mosquitto_sub", () => {
  test('when mosquitto_sub waits on the commands topic, then a command from the dashboard reaches it; mosquitto_pub acks it and publishes a reading; a wrong password is refused', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'mosq-1');
    const conn = ['-h', '127.0.0.1', '-p', String(server.mqttPort), '-u', 'mosq-1', '-P', token, '-V', 'mqttv311'];
    const online = nextEvent(socket, 'device:status', statusOf('mosq-1', true));
    const sub = mosquitto('mosquitto_sub', [...conn, '-i', 'mosq-sub', '-t', topics.commands('mosq-1'), '-q', '1', '-C', '1', '-v']);
    try {
      expect(await online).toMatchObject({ transport: 'mqtt' });
      await sleep(300); // its SUBSCRIBE follows the CONNECT
      const res = await emitAck(socket, 'command:send', { deviceId: 'mosq-1', action: 'togglerele' });
      const out = await sub.done;
      expect(out.code).toBe(0);
      const [topic, ...rest] = out.stdout.trim().split(' ');
      expect(topic).toBe(topics.commands('mosq-1'));
      expect(JSON.parse(rest.join(' '))).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: res.command.id });

      const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === res.command.id && c.status === 'acked');
      const ack = await mosquitto('mosquitto_pub', [...conn, '-t', topics.ack('mosq-1'), '-q', '1', '-m', JSON.stringify({ id: res.command.id, ok: true })]).done;
      expect(ack.code).toBe(0);
      await acked;

      const pub = await mosquitto('mosquitto_pub', [...conn, '-t', topics.telemetry('mosq-1'), '-q', '1', '-m', '{"type":"telemetry","id":"m-1","data":{"t":23.5}}']).done;
      expect(pub.code).toBe(0); // it exits after the PUBACK: the reading is stored by then
      expect(await db(server).countTelemetry('mosq-1')).toBe(1);

      const bad = await mosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(server.mqttPort), '-u', 'mosq-1', '-P', 'wrong', '-V', 'mqttv311', '-t', topics.telemetry('mosq-1'), '-m', '{}']).done;
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/not authori[sz]ed/i);
      expect(await db(server).countTelemetry('mosq-1')).toBe(1);
    } finally {
      sub.kill();
      socket.close();
    }
  });
});

describe('MQTT devices, with python3-paho-mqtt', () => {
  test('when a paho device connects, then its QoS 1 reading is stored before its PUBACK, and a command from the dashboard reaches it and comes back acked', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'paho-1');
    const online = nextEvent(socket, 'device:status', statusOf('paho-1', true));
    const py = runPython(['paho.mqtt.client'], [MQTT_DEVICE_PY], { PORT: String(server.mqttPort), DEVICE: 'paho-1', TOKEN: token });
    expect(await py.line(/^connack /)).toBe('connack 0');
    expect(await online).toMatchObject({ transport: 'mqtt' });
    expect(await py.line(/^suback /)).toBe('suback 1');
    const mid = (await py.line(/^published /)).split(' ')[1];
    await py.line(`puback ${mid}`);
    expect(await db(server).countTelemetry('paho-1')).toBe(1);

    const res = await emitAck(socket, 'command:send', { deviceId: 'paho-1', action: 'togglerele' });
    const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === res.command.id && c.status === 'acked');
    const line = await py.line(/^command /);
    expect(line.split(' ')[1]).toBe('1'); // QoS 1
    expect(JSON.parse(line.split(' ').slice(2).join(' '))).toMatchObject({ action: 'togglerele', id: res.command.id });
    expect(await acked).toMatchObject({ result: { by: 'paho' } });
    socket.close();
  });

  test('when a paho device has a wrong token, then its CONNACK is 5 (not authorized)', async () => {
    const server = await startServer();
    await addDevice(server, 'paho-2');
    const py = runPython(['paho.mqtt.client'], [MQTT_DEVICE_PY], { PORT: String(server.mqttPort), DEVICE: 'paho-2', TOKEN: 'wrong' });
    expect(await py.line(/^connack /)).toBe('connack 5');
    expect(await db(server).countTelemetry('paho-2')).toBe(0);
  });
});
