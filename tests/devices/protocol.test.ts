/** The device line protocol (docs/protocol.md) on a real connection: hello, replies in the device's encoding, limits, reliable telemetry. */
import { RawDevice, encode } from '../support/device';
import { addDevice, closeAllServers, db, holdStorageCalls, metric, startServer, TestServer } from '../support/server';
import { REPLY_FLUSH_CHUNK } from '../../server/devices/core';

let server: TestServer;
afterEach(closeAllServers);

describe('device line protocol', () => {
  beforeEach(async () => {
    server = await startServer();
  });

  test('when a device says hello with its token, then it is welcomed in base64 and shows online', async () => {
    const { token } = await addDevice(server, 'esp-1');
    const d = await RawDevice.connect(server.devicePort);
    d.send({ type: 'hello', device: 'esp-1', token });
    const welcome = await d.next((m) => m.type === 'welcome');
    expect(welcome).toMatchObject({ type: 'welcome', device: 'esp-1' });
    expect(typeof welcome.time).toBe('number');
    expect(d.rawLines[0]).toMatch(/^[A-Za-z0-9+/=]+$/);
    expect(await metric(server, 'sockpit_devices_online')).toBe(1);
    d.close();
  });

  test('when a device speaks plain JSON, then the server answers in plain JSON', async () => {
    const { token } = await addDevice(server, 'esp-j');
    const d = await RawDevice.hello(server.devicePort, 'esp-j', token, 'json');
    d.send({ type: 'ping' }, 'json');
    await d.next((m) => m.type === 'pong');
    expect(d.rawLines.every((l) => l.startsWith('{'))).toBe(true);
    d.close();
  });

  test('when the token is wrong, then the device gets unauthorized and is closed', async () => {
    await addDevice(server, 'esp-2');
    const d = await RawDevice.connect(server.devicePort);
    d.send({ type: 'hello', device: 'esp-2', token: 'nope' });
    expect(await d.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
    await d.waitClosed();
  });

  test('when the first line is not a hello and anonymous devices are off, then it is refused', async () => {
    const d = await RawDevice.connect(server.devicePort);
    d.write('eyJzZW5zb3IiOiJncHMiLCJ0aW1lIjoxMzUxODI0MTIwfQ==\r\n');
    expect(await d.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
    await d.waitClosed();
  });

  test('when a line is longer than 16 KiB, then the device gets line_too_long and is closed', async () => {
    const { token } = await addDevice(server, 'esp-3');
    const d = await RawDevice.hello(server.devicePort, 'esp-3', token);
    d.write(Buffer.alloc(17 * 1024, 0x41));
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ error: 'line_too_long' });
    await d.waitClosed();
  });

  test('when a line is exactly 16 KiB, then it is accepted', async () => {
    const { token } = await addDevice(server, 'esp-16k');
    const d = await RawDevice.hello(server.devicePort, 'esp-16k', token, 'json');
    const base = JSON.stringify({ pad: '' });
    const line = JSON.stringify({ pad: 'x'.repeat(16 * 1024 - base.length) });
    expect(Buffer.byteLength(line)).toBe(16 * 1024);
    d.write(line + '\r\n');
    d.send({ type: 'ping' }, 'json');
    await d.next((m) => m.type === 'pong');
    expect(d.received.find((m) => m.type === 'error')).toBeUndefined();
    d.close();
  });

  test('when telemetry carries an id, then it is answered stored once committed and a resend is not stored twice', async () => {
    const { token } = await addDevice(server, 'esp-4');
    const d = await RawDevice.hello(server.devicePort, 'esp-4', token);
    d.send({ type: 'telemetry', id: 'b1-1', data: { t: 21.5 } });
    expect(await d.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'b1-1' });
    expect(await db(server).countTelemetry('esp-4')).toBe(1);
    d.send({ type: 'telemetry', id: 'b1-1', data: { t: 21.5 } });
    expect(await d.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'b1-1' });
    expect(await db(server).countTelemetry('esp-4')).toBe(1);
    d.close();
  });

  test('when more devices than one reply flush takes send readings at once, then every device gets every stored reply, in order', async () => {
    const n = REPLY_FLUSH_CHUNK * 2 + 5;
    server = await startServer({ deviceMaxPerIp: n });
    const devices = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const { token } = await addDevice(server, `esp-f${i}`);
        return RawDevice.hello(server.devicePort, `esp-f${i}`, token);
      }),
    );
    for (const d of devices) {
      d.send({ type: 'telemetry', id: 'a', data: { t: 1 } });
      d.send({ type: 'telemetry', id: 'b', data: { t: 2 } });
    }
    for (const d of devices) {
      expect(await d.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'a' });
      expect(await d.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'b' });
      d.close();
    }
  });

  test('when a bad line arrives, then the device gets an error reply and stays connected', async () => {
    const { token } = await addDevice(server, 'esp-5');
    const d = await RawDevice.hello(server.devicePort, 'esp-5', token);
    d.write('not*base64\n');
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ error: 'bad_base64' });
    d.write(Buffer.from('{not json').toString('base64') + '\n');
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ error: 'bad_json' });
    d.write('WzEsMl0=\n'); // [1,2]
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ error: 'protocol' });
    d.send({ type: 'hello', device: 'esp-5', token });
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ error: 'protocol' });
    d.send({ type: 'ping' });
    await d.next((m) => m.type === 'pong');
    d.close();
  });

  test('when bad lines keep coming, then the connection is closed', async () => {
    const { token } = await addDevice(server, 'esp-6');
    const d = await RawDevice.hello(server.devicePort, 'esp-6', token);
    d.write('!!!\n'.repeat(20));
    await d.waitClosed();
  });

  test('when the thesis firmware sends its exact bytes in anonymous mode, then the reading is stored', async () => {
    await server.close();
    server = await startServer({ allowAnonymousDevices: true });
    const d = await RawDevice.connect(server.devicePort);
    d.write('eyJzZW5zb3IiOiJncHMiLCJ0aW1lIjoxMzUxODI0MTIwfQ==\r\n');
    await d.next((m) => m.type === 'welcome');
    const id = 'anon-127.0.0.1';
    let history: { data: unknown }[] = [];
    for (let i = 0; i < 50 && history.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      history = await db(server).telemetryHistory(id, 10);
    }
    expect(history.map((p) => p.data)).toEqual([{ sensor: 'gps', time: 1351824120 }]);
    d.close();
  });

  test('when a device id is only dots, then it is refused: adding it, its hello, and as an anonymous name (it gets anon-<address>)', async () => {
    const { addDevice: add } = await import('../../server/devices/admin');
    await expect(add(db(server), '..')).rejects.toThrow(/not only dots/);
    const d = await RawDevice.connect(server.devicePort);
    d.send({ type: 'hello', device: '.', token: 'x' });
    expect(await d.next()).toMatchObject({ type: 'error', error: 'unauthorized', detail: expect.stringContaining('not only dots') });
    d.close();
    await server.close();
    server = await startServer({ allowAnonymousDevices: true });
    const anon = await RawDevice.connect(server.devicePort);
    anon.send({ type: 'telemetry', device: '..', id: 'r-1', data: { v: 1 } });
    expect(await anon.next((m) => m.type === 'welcome')).toMatchObject({ device: 'anon-127.0.0.1' });
    anon.close();
  });

  test('when an anonymous device presents a token, then it is refused until an admin gives it one, and then it needs that token', async () => {
    await server.close();
    server = await startServer({ allowAnonymousDevices: true });
    const first = await RawDevice.connect(server.devicePort);
    // Its first line is a reading, not a hello: it is admitted as the device it names.
    first.send({ type: 'telemetry', device: 'shed-1', id: 'r-1', data: { v: 1 } });
    await first.next((m) => m.type === 'stored');
    first.close();
    await first.waitClosed();
    // A hello cannot claim the device with a token of its own.
    const claim = await RawDevice.connect(server.devicePort);
    claim.send({ type: 'hello', device: 'shed-1', token: 'made-up' });
    expect(await claim.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
    await claim.waitClosed();
    // `npx sockpit device token shed-1` gives it one; from then on it is like any added device.
    const { rotateDeviceToken } = await import('../../server/devices/admin');
    const token = await rotateDeviceToken(db(server), 'shed-1');
    const anon = await RawDevice.connect(server.devicePort);
    anon.send({ type: 'telemetry', device: 'shed-1', id: 'r-2', data: { v: 2 } });
    expect(await anon.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
    await anon.waitClosed();
    const d = await RawDevice.hello(server.devicePort, 'shed-1', token);
    expect((await db(server).telemetryHistory('shed-1', 10)).map((p) => p.data)).toEqual([{ v: 1 }]);
    d.close();
  });

  test('when lines arrive while the device is being welcomed, then they are handled in the order they came', async () => {
    const { token } = await addDevice(server, 'esp-order');
    // Hold the welcome's own storage write, so that lines keep coming while it waits.
    const { release } = holdStorageCalls(server, 'markDeviceSeen');
    const d = await RawDevice.connect(server.devicePort);
    const badJson = Buffer.from('{nope').toString('base64') + '\n';
    d.write(encode({ type: 'hello', device: 'esp-order', token }) + encode({ type: 'telemetry', id: 'o-1', data: { n: 1 } }) + badJson);
    await d.next((m) => m.type === 'welcome');
    d.send({ type: 'telemetry', id: 'o-2', data: { n: 2 } });
    d.write('!!!\n');
    await new Promise((r) => setTimeout(r, 100));
    release();
    const errors = [await d.next((m) => m.type === 'error'), await d.next((m) => m.type === 'error')];
    expect(errors.map((m) => m.error)).toEqual(['bad_json', 'bad_base64']);
    const stored = [await d.next((m) => m.type === 'stored'), await d.next((m) => m.type === 'stored')];
    expect(stored.map((m) => m.id)).toEqual(['o-1', 'o-2']);
    const history = await db(server).telemetryHistory('esp-order', 10);
    // The later reading has the later (or the same) time.
    const ts = (n: number) => history.find((p) => (p.data as { n: number }).n === n)!.ts;
    expect(history).toHaveLength(2);
    expect(ts(2)).toBeGreaterThanOrEqual(ts(1));
    d.close();
  });

  test('when many lines arrive in one chunk or one byte at a time, then each is answered', async () => {
    const { token } = await addDevice(server, 'esp-8');
    const d = await RawDevice.hello(server.devicePort, 'esp-8', token);
    d.write(encode({ type: 'ping' }).repeat(5));
    for (let i = 0; i < 5; i++) await d.next((m) => m.type === 'pong');
    const bytes = Buffer.from(encode({ type: 'ping' }));
    for (const b of bytes) {
      d.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    await d.next((m) => m.type === 'pong');
    d.close();
  });
});

describe('token changes made elsewhere', () => {
  test('when the token is rotated or the device removed outside this process, then the connection is closed at the next check', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'rot-1');
    const { token: t2 } = await addDevice(server, 'rot-2');
    const a = await RawDevice.hello(server.devicePort, 'rot-1', token);
    const b = await RawDevice.hello(server.devicePort, 'rot-2', t2);
    const { rotateDeviceToken, removeDevice } = await import('../../server/devices/admin');
    await rotateDeviceToken(db(server), 'rot-1');
    await removeDevice(db(server), 'rot-2');
    await server.app.core.revalidate();
    expect(await a.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized', detail: 'token changed' });
    expect(await b.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized', detail: 'device removed' });
    await a.waitClosed();
    await b.waitClosed();
  });
});
