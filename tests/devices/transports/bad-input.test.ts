/**
 * Bad input on WebSocket and MQTT: every case that has a TCP test (docs/security.md, cases 13–17)
 * where it applies, plus an MQTT device's topics. Each gets a clear error or refusal, the process
 * stays up, and well-behaved devices on every transport (tests/support/bystanders.ts) keep storing
 * their readings, none lost and none added. 1,000 silent connections: silent.test.ts; a second
 * connection on another transport: cross-transport.test.ts.
 */
import { addUser } from '../../../server/auth/users';
import { MAX_LINE_BYTES } from '../../../server/devices/codec';
import { DEFAULT_LIMITS, type DeviceLink } from '../../../server/devices/session';
import { sleep, until } from '../../support/child';
import { bystanders, expectUntouched } from '../../support/bystanders';
import { RawDevice } from '../../support/device';
import { mqttClosed, mqttDevice, RawMqtt, topics } from '../../support/mqtt';
import { addDevice, closeAllServers, db, startServer, TestServer } from '../../support/server';
import { WsDevice } from '../../support/ws';

afterEach(closeAllServers);

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** Readings stored for these devices, to show the bad ones added none. */
async function counts(server: TestServer, ids: string[]): Promise<number[]> {
  return Promise.all(ids.map((id) => db(server).countTelemetry(id)));
}

describe('bad tokens on WebSocket and MQTT', () => {
  test('when a WebSocket handshake, a WebSocket hello or an MQTT CONNECT carries a wrong token, then each is refused (401, unauthorized, CONNACK 5) and devices on every transport are untouched', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'victim');
    const good = await bystanders(server);
    for (let i = 0; i < 20; i++) {
      expect((await WsDevice.refusal(server.wsUrl, { query: { device: 'victim' }, headers: { authorization: 'Bearer guess-' + i } })).status).toBe(401);
      expect((await WsDevice.refusal(server.wsUrl, { query: { device: 'victim', token: 'guess-' + i } })).status).toBe(401);
      const hello = await WsDevice.open(server.wsUrl);
      hello.send({ type: 'hello', device: 'victim', token: 'guess-' + i });
      expect(await hello.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
      expect((await hello.waitClosed()).code).toBe(1008);
      const { raw, returnCode } = await RawMqtt.connect(server.mqttPort, { id: 'victim', token: 'guess-' + i });
      expect(returnCode).toBe(5);
      await raw.waitClosed();
    }
    expectUntouched(await good.stop());
    // The real token still works on both.
    (await WsDevice.bearer(server.wsUrl, 'victim', token)).close();
    (await mqttDevice(server, 'victim', token)).end(true);
    expect(await db(server).countTelemetry('victim')).toBe(0);
  });
});

describe('14. no hello within 10 s, on WebSocket and MQTT', () => {
  test('when a WebSocket says nothing after the upgrade, or a connection to the MQTT port sends no CONNECT (or only part of one), then each is closed after 10 s', async () => {
    expect(DEFAULT_LIMITS.helloTimeoutMs).toBe(10_000);
    const server = await startServer();
    const good = await bystanders(server, 200);
    const t0 = Date.now();
    const closedAt = (p: Promise<unknown>) => p.then(() => Date.now() - t0);
    const ws = await WsDevice.open(server.wsUrl);
    const silent = await RawMqtt.open(server.mqttPort);
    const trickle = await RawMqtt.open(server.mqttPort);
    // A CONNECT a byte at a time, never finished.
    const connect = Buffer.from([0x10, 0x30, 0x00, 0x04, ...Buffer.from('MQTT'), 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, ...Buffer.from('abcd')]);
    let i = 0;
    const drip = setInterval(() => {
      if (!trickle.closed && i < connect.length) trickle.write(connect.subarray(i, ++i));
    }, 500);
    try {
      const times = await Promise.all([closedAt(ws.waitClosed(15_000)), closedAt(silent.waitClosed(15_000)), closedAt(trickle.waitClosed(15_000))]);
      for (const ms of times) {
        expect(ms).toBeGreaterThanOrEqual(9_500);
        expect(ms).toBeLessThan(12_500);
      }
    } finally {
      clearInterval(drip);
    }
    expect(ws.received).toEqual([{ type: 'error', error: 'protocol', detail: 'no hello within 10 s' }]);
    expect(ws.closeCode).toBe(1008);
    expect(silent.packets).toEqual([]); // MQTT has no reply before a CONNECT
    expectUntouched(await good.stop());
    await until(() => server.app.core.connectionCount === 0, 2000, 'the server to forget the connections');
  }, 30_000);
});

describe('13. oversized frames and packets, on WebSocket and MQTT', () => {
  test('when a WebSocket frame is over 16 KiB (by one byte, or by 10 MB), then the connection is closed with 1009 without the server buffering it', async () => {
    const server = await startServer();
    const good = await bystanders(server);
    const { token } = await addDevice(server, 'big-ws');
    const base = JSON.stringify({ pad: '' });
    for (const size of [MAX_LINE_BYTES + 1, 10 * 1024 * 1024]) {
      const d = await WsDevice.bearer(server.wsUrl, 'big-ws', token);
      const t0 = Date.now();
      d.sendText(JSON.stringify({ pad: 'x'.repeat(size - base.length) }));
      expect((await d.waitClosed()).code).toBe(1009);
      expect(Date.now() - t0).toBeLessThan(3000);
    }
    expect(await db(server).countTelemetry('big-ws')).toBe(0);
    expectUntouched(await good.stop());
  });

  test('when an MQTT PUBLISH carries more than 16 KiB, then the connection is closed and nothing is stored; exactly 16 KiB is accepted', async () => {
    const server = await startServer();
    const good = await bystanders(server);
    const { token } = await addDevice(server, 'big-mq');
    const base = JSON.stringify({ pad: '' });
    const { raw: ok } = await RawMqtt.connect(server.mqttPort, { id: 'big-mq', token });
    const exact = ok.publish(topics.telemetry('big-mq'), JSON.stringify({ pad: 'x'.repeat(MAX_LINE_BYTES - base.length) }), 1);
    await ok.puback(exact);
    expect(await db(server).countTelemetry('big-mq')).toBe(1);
    ok.publish(topics.telemetry('big-mq'), JSON.stringify({ pad: 'x'.repeat(MAX_LINE_BYTES + 1 - base.length) }), 1);
    await ok.waitClosed();
    expect(ok.packets.filter((p) => p.cmd === 'puback')).toEqual([]);
    expect(await db(server).countTelemetry('big-mq')).toBe(1);
    expectUntouched(await good.stop());
  });

  test('when an MQTT packet announces 10 MB, then the connection is cut once its header is read, not after the server buffered it', async () => {
    const server = await startServer();
    const good = await bystanders(server);
    const { token } = await addDevice(server, 'huge-mq');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'huge-mq', token });
    // A PUBLISH header announcing 10 MB (remaining length as a variable-length integer), then the body as fast as the socket takes it.
    const len = 10 * 1024 * 1024;
    const header = [0x30];
    for (let x = len; ; ) {
      let b = x % 128;
      x = Math.floor(x / 128);
      if (x > 0) b |= 0x80;
      header.push(b);
      if (x === 0) break;
    }
    raw.write(Buffer.from(header));
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    while (!raw.closed && raw.written < len) {
      if (!raw.write(chunk)) await new Promise((r) => raw.socket.once('drain', r).once('close', r));
    }
    await raw.waitClosed();
    // The server closed it long before 10 MB went through (what it read, it did not keep).
    expect(raw.written).toBeLessThan(len / 2);
    expect(await db(server).countTelemetry('huge-mq')).toBe(0);
    expectUntouched(await good.stop());
  });
});

describe('15. malformed messages, on WebSocket and MQTT', () => {
  const cases: [string, string, string][] = [
    ['bad base64', 'not*base64', 'bad_base64'],
    ['base64 without its padding', b64('{"type":"pong!"}').replace(/=+$/, ''), 'bad_base64'],
    ['base64 of text that is not JSON', b64('hello world'), 'bad_json'],
    ['plain JSON cut short', '{"type":"ping"', 'bad_json'],
    ['a JSON array', b64('[1,2]'), 'protocol'],
    ['a __proto__ key', '{"__proto__":{"polluted":1}}', 'protocol'],
    ['a number too large for a double', '{"v":1e400}', 'protocol'],
    ['telemetry whose data is not an object', '{"type":"telemetry","id":"1","data":[1]}', 'protocol'],
  ];

  test.each(cases.map(([what, text, code]) => ({ what, text, code })))('when a WebSocket device sends $what, then it gets $code and stays connected', async ({ text, code }) => {
    const server = await startServer();
    const good = await bystanders(server);
    const { token } = await addDevice(server, 'bad-ws');
    const d = await WsDevice.bearer(server.wsUrl, 'bad-ws', token);
    d.sendText(text);
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ type: 'error', error: code });
    d.send({ type: 'ping' });
    await d.next((m) => m.type === 'pong');
    expect(d.closed).toBe(false);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(await db(server).countTelemetry('bad-ws')).toBe(0);
    expectUntouched(await good.stop());
    d.close();
  });

  test.each(cases.map(([what, text]) => ({ what, text })))('when an MQTT device publishes $what, then it gets no PUBACK and is disconnected (MQTT has no error reply), and can connect again', async ({ text }) => {
    const server = await startServer();
    const good = await bystanders(server);
    const { token } = await addDevice(server, 'bad-mq');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'bad-mq', token });
    raw.publish(topics.telemetry('bad-mq'), text, 1);
    await raw.waitClosed();
    expect(raw.packets.filter((p) => p.cmd === 'puback')).toEqual([]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const again = await mqttDevice(server, 'bad-mq', token);
    await again.publishAsync(topics.telemetry('bad-mq'), '{"ok":1}', { qos: 1 });
    expect((await db(server).telemetryHistory('bad-mq', 5)).map((p) => p.data)).toEqual([{ ok: 1 }]);
    await again.endAsync();
    expectUntouched(await good.stop());
  });

  test('when bad frames keep coming on a WebSocket, then the connection is closed after 10 in a row; nine and a good one keep it', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'bad-ws');
    const d = await WsDevice.bearer(server.wsUrl, 'bad-ws', token);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 9; i++) d.sendText('!!');
      d.send({ type: 'ping' });
      await d.next((m) => m.type === 'pong');
    }
    expect(d.closed).toBe(false);
    for (let i = 0; i < 10; i++) d.sendText('!!');
    expect((await d.waitClosed()).code).toBe(1008);
    expect(d.received.filter((m) => m.type === 'error').at(-1)).toMatchObject({ error: 'bad_base64', detail: expect.stringContaining('too many bad lines') });
  });

  test('when an MQTT device acks a command the server does not know, then the ack is PUBACKed and ignored, and the connection stays', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'ack-mq');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'ack-mq', token });
    await raw.puback(raw.publish(topics.ack('ack-mq'), '{"id":"no-such-command"}', 1));
    await raw.puback(raw.publish(topics.telemetry('ack-mq'), '{"v":1}', 1));
    expect(raw.closed).toBe(false);
    raw.close();
  });
});

describe('a flood beyond the rate (DEVICE_MAX_LINES_PER_S), on WebSocket and MQTT', () => {
  test('when a WebSocket device sends far more than its rate, then the extra messages are dropped with one rate_limited a second and it stays connected', async () => {
    const server = await startServer({ deviceMaxLinesPerS: 5 });
    const good = await bystanders(server, 400); // 2.5 a second: within the rate
    const { token } = await addDevice(server, 'flood-ws');
    const d = await WsDevice.bearer(server.wsUrl, 'flood-ws', token);
    for (let i = 0; i < 100; i++) d.send({ type: 'telemetry', id: `f${i}`, data: { i } });
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ error: 'rate_limited' });
    await sleep(600);
    const storedIds = d.received.filter((m) => m.type === 'stored').length;
    // The bucket: the rate and as much again as a burst.
    expect(storedIds).toBeGreaterThan(0);
    expect(storedIds).toBeLessThanOrEqual(12);
    expect(d.received.filter((m) => m.type === 'error').length).toBe(0); // the one error was taken above
    expect(d.closed).toBe(false);
    await sleep(1000);
    d.send({ type: 'ping' });
    await d.next((m) => m.type === 'pong');
    expect(await db(server).countTelemetry('flood-ws')).toBe(storedIds);
    expectUntouched(await good.stop());
    d.close();
  });

  test('when an MQTT device publishes far more than its rate, then it is disconnected, only what was within the rate is stored, and it can connect again', async () => {
    const server = await startServer({ deviceMaxLinesPerS: 5 });
    const good = await bystanders(server, 400);
    const { token } = await addDevice(server, 'flood-mq');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'flood-mq', token });
    for (let i = 0; i < 100; i++) raw.publish(topics.telemetry('flood-mq'), JSON.stringify({ type: 'telemetry', id: `f${i}`, data: { i } }), 1);
    await raw.waitClosed();
    await sleep(300);
    await server.app.writer.flush();
    // Every reading PUBACKed is stored; some stored may not have been PUBACKed before the connection
    // closed (QoS 1 is at least once: the device resends them, and a reading with an id is stored once).
    const acked = raw.packets.filter((p) => p.cmd === 'puback').length;
    const stored = await db(server).countTelemetry('flood-mq');
    expect(stored).toBeGreaterThan(0);
    expect(stored).toBeGreaterThanOrEqual(acked);
    expect(stored).toBeLessThanOrEqual(12); // the bucket: the rate and as much again as a burst
    await sleep(1000);
    const again = await mqttDevice(server, 'flood-mq', token);
    await again.publishAsync(topics.telemetry('flood-mq'), '{"calm":true}', { qos: 1 });
    await again.endAsync();
    expectUntouched(await good.stop());
  });
});

/** The largest command a browser can send: changesetting with 16 settings of 256 characters. */
const BIG_PARAMS = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`setting_${i}`, String(i).repeat(256).slice(0, 256)]));

describe('16. a client that stops reading, on WebSocket and MQTT', () => {
  async function setup(): Promise<{ server: TestServer; command: (deviceId: string) => Promise<string> }> {
    const server = await startServer();
    const u = await addUser(db(server), 'owner', 'correct horse', 'admin', 4);
    const user = { id: u.id, username: u.username };
    return {
      server,
      // Yields to I/O first, as commands from browsers would.
      command: async (deviceId) => {
        await new Promise((r) => setImmediate(r));
        return (await server.app.commands.send({ deviceId, action: 'changesetting', params: BIG_PARAMS, user })).id;
      },
    };
  }

  /** Sends commands to a device that does not read until the server drops it; the most it held for it. */
  async function flood(server: TestServer, command: (id: string) => Promise<string>, id: string): Promise<{ sent: number; maxBuffered: number }> {
    const link = server.app.registry.get(id)!.link as DeviceLink;
    let sent = 0;
    let maxBuffered = 0;
    while (server.app.registry.get(id)?.link === link && sent < 20_000) {
      await command(id);
      sent++;
      maxBuffered = Math.max(maxBuffered, link.bufferedOut);
    }
    return { sent, maxBuffered };
  }

  // What one connection may hold: the queue, a socket's worth, and one command in flight.
  const bound = DEFAULT_LIMITS.maxOutQueueBytes + 16 * 1024 + 2 * 8 * 1024;

  test('when a WebSocket device never reads and is flooded with commands, then what the server holds for it stays bounded and it is dropped', async () => {
    const { server, command } = await setup();
    const good = await bystanders(server);
    const { token } = await addDevice(server, 'deaf-ws');
    const d = await WsDevice.bearer(server.wsUrl, 'deaf-ws', token);
    d.ws.pause();
    const { sent, maxBuffered } = await flood(server, command, 'deaf-ws');
    expect(server.app.registry.get('deaf-ws')).toBeUndefined();
    expect(sent).toBeLessThan(20_000);
    expect(maxBuffered).toBeGreaterThan(0);
    expect(maxBuffered).toBeLessThanOrEqual(bound);
    d.ws.resume();
    await d.waitClosed();
    expectUntouched(await good.stop());
  });

  test('when an MQTT device never reads and is flooded with commands, then what the server holds for it stays bounded and it is dropped', async () => {
    const { server, command } = await setup();
    const good = await bystanders(server);
    const { token } = await addDevice(server, 'deaf-mq');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: 'deaf-mq', token });
    raw.subscribe(topics.commands('deaf-mq'));
    await raw.next((p) => p.cmd === 'suback');
    raw.socket.pause();
    const { sent, maxBuffered } = await flood(server, command, 'deaf-mq');
    expect(server.app.registry.get('deaf-mq')).toBeUndefined();
    expect(sent).toBeLessThan(20_000);
    expect(maxBuffered).toBeGreaterThan(0);
    expect(maxBuffered).toBeLessThanOrEqual(bound);
    raw.socket.resume();
    await raw.waitClosed();
    expectUntouched(await good.stop());
  });

  test('when a WebSocket or MQTT device stops reading with less than a full queue pending, then it is dropped after the drain timeout (30 s by default)', async () => {
    expect(DEFAULT_LIMITS.drainTimeoutMs).toBe(30_000);
    const { server, command } = await setup();
    server.app.core.limits.drainTimeoutMs = 1500; // the rule at test speed; the default is checked above
    const good = await bystanders(server);
    const w = await addDevice(server, 'slow-ws');
    const m = await addDevice(server, 'slow-mq');
    const ws = await WsDevice.bearer(server.wsUrl, w.id, w.token);
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: m.id, token: m.token });
    raw.subscribe(topics.commands(m.id));
    await raw.next((p) => p.cmd === 'suback');
    ws.ws.pause();
    raw.socket.pause();
    const waits: Promise<number>[] = [];
    for (const id of [w.id, m.id]) {
      const link = server.app.registry.get(id)!.link as DeviceLink;
      // Until more than a socket's worth waits in the server (the kernel's buffers are full): blocked from now on.
      while (link.bufferedOut <= 16 * 1024) await command(id);
      const blockedAt = Date.now();
      expect(link.bufferedOut).toBeLessThan(DEFAULT_LIMITS.maxOutQueueBytes);
      waits.push(until(() => !server.app.registry.get(id), 8000, `${id} to be dropped`, 20).then(() => Date.now() - blockedAt));
    }
    for (const after of await Promise.all(waits)) {
      expect(after).toBeGreaterThanOrEqual(1400);
      expect(after).toBeLessThan(4000);
    }
    ws.ws.resume();
    raw.socket.resume();
    await ws.waitClosed();
    await raw.waitClosed();
    expectUntouched(await good.stop());
  });
});

describe('an MQTT device outside its own topics', () => {
  test('when a device publishes to a topic that is not its own, then it is disconnected and nothing is stored for anyone', async () => {
    const server = await startServer();
    const good = await bystanders(server);
    const me = await addDevice(server, 'mq-me');
    const other = await addDevice(server, 'mq-other');
    const watcher = await mqttDevice(server, other.id, other.token);
    await watcher.subscribeAsync(topics.commands(other.id), { qos: 1 });
    const seen: string[] = [];
    watcher.on('message', (t) => seen.push(t));
    for (const topic of [topics.telemetry(other.id), topics.ack(other.id), topics.commands(other.id), topics.commands(me.id), 'sockpit/mq-me/other', '$SYS/broker/clients', 'anything']) {
      const { raw } = await RawMqtt.connect(server.mqttPort, { id: me.id, token: me.token });
      raw.publish(topic, '{"type":"telemetry","id":"x","data":{"v":1}}', 1);
      await raw.waitClosed();
      expect(raw.packets.filter((p) => p.cmd === 'puback')).toEqual([]);
    }
    expect(await counts(server, [me.id, other.id])).toEqual([0, 0]);
    expect(seen).toEqual([]);
    expect(watcher.connected).toBe(true);
    await watcher.endAsync();
    expectUntouched(await good.stop());
  });

  test('when a device subscribes to a topic that is not its commands topic, then the SUBACK says failure (0x80) for it and the connection stays', async () => {
    const server = await startServer();
    const me = await addDevice(server, 'mq-me');
    const other = await addDevice(server, 'mq-other');
    const { raw } = await RawMqtt.connect(server.mqttPort, { id: me.id, token: me.token });
    raw.send({
      cmd: 'subscribe',
      messageId: 7,
      subscriptions: ['#', 'sockpit/#', 'sockpit/+/commands', topics.commands(other.id), topics.telemetry(me.id), topics.commands(me.id)].map((topic) => ({ topic, qos: 1 as const })),
    });
    expect(await raw.next((p) => p.cmd === 'suback')).toMatchObject({ messageId: 7, granted: [0x80, 0x80, 0x80, 0x80, 0x80, 1] });
    // The other device's readings and commands do not reach it; its own commands do.
    const o = await mqttDevice(server, other.id, other.token);
    await o.publishAsync(topics.telemetry(other.id), '{"v":1}', { qos: 1 });
    const u = await addUser(db(server), 'owner', 'correct horse', 'admin', 4);
    const user = { id: u.id, username: u.username };
    await server.app.commands.send({ deviceId: other.id, action: 'togglerele', params: null, user });
    const mine = await server.app.commands.send({ deviceId: me.id, action: 'togglerele', params: null, user });
    const got = await raw.next((p) => p.cmd === 'publish');
    expect(got).toMatchObject({ topic: topics.commands(me.id) });
    expect(JSON.parse((got as { payload: Buffer }).payload.toString()).id).toBe(mine.id);
    await sleep(300);
    expect(raw.packets.filter((p) => p.cmd === 'publish')).toEqual([]);
    expect(raw.closed).toBe(false);
    await o.endAsync();
    raw.close();
    await mqttClosed(o).catch(() => {});
  });
});

describe('anonymous mode and devices that have a token', () => {
  // A device added with a token is that token's, also in anonymous mode (core.ts, admitAnonymous).
  test('when anonymous devices are allowed and a connection without a token names a device that has a token, then it is refused on every transport and the real device keeps its connection', async () => {
    const server = await startServer({ allowAnonymousDevices: true });
    const { token } = await addDevice(server, 'kitchen');
    const real = await WsDevice.bearer(server.wsUrl, 'kitchen', token);
    expect((await WsDevice.refusal(server.wsUrl, { query: { device: 'kitchen' } })).status).toBe(401);
    expect((await RawMqtt.connect(server.mqttPort, { id: 'kitchen' })).returnCode).toBe(5);
    const tcp = await RawDevice.connect(server.devicePort);
    tcp.send({ device: 'kitchen', v: 1 });
    expect(await tcp.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
    await sleep(200);
    expect(real.closed).toBe(false);
    expect(await db(server).countTelemetry('kitchen')).toBe(0);
  });

  test('when a device is added with a token while a connection without one is being admitted under its name, then that connection is refused', async () => {
    const server = await startServer({ allowAnonymousDevices: true });
    const core = server.app.core as unknown as { admitAnonymous(id: string): Promise<string | null> };
    const storage = server.app.storage;
    const getDevice = storage.getDevice.bind(storage);
    // The interleaving: the connection looks the name up, then the admin's add commits, then the
    // connection's own add finds the name taken.
    let raced = false;
    storage.getDevice = async (id: string) => {
      const found = await getDevice(id);
      if (id === 'porch' && !raced) {
        raced = true;
        await addDevice(server, 'porch');
      }
      return found;
    };
    try {
      expect(await core.admitAnonymous('porch')).toBeNull();
      expect(raced).toBe(true);
      // Two connections without a token racing for a new name are both let in, onto one device.
      const [a, b] = await Promise.all([core.admitAnonymous('shed'), core.admitAnonymous('shed')]);
      expect(a).not.toBeNull();
      expect(b).toBe(a);
    } finally {
      storage.getDevice = getDevice;
    }
  });
});
