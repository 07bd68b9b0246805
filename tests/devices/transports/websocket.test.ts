/**
 * WebSocket devices (docs/protocol.md, "WebSocket"): `ws://HOST:PORT/device` on the HTTP port, with
 * the `ws` client and with Debian's python3-websockets, a client nobody here wrote. The bad-input
 * cases are in bad-input.test.ts; replacement across transports in cross-transport.test.ts.
 */
import path from 'node:path';
import { GOING_AWAY } from '../../../server/devices/outbound';
import { sleep, until } from '../../support/child';
import { killPython, runPython } from '../../support/python';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, nextEvent, startServer, TestServer, type ClientSocket } from '../../support/server';
import { WsDevice } from '../../support/ws';

afterEach(async () => {
  killPython();
  await closeAllServers();
});

const WS_DEVICE_PY = path.resolve(__dirname, '../../support/python/ws_device.py');

/** A server and a logged-in dashboard socket. */
async function withDashboard(overrides: Parameters<typeof startServer>[0] = {}): Promise<{ server: TestServer; socket: ClientSocket }> {
  const server = await startServer(overrides);
  const socket = await connectSocket(server, await createUserAndLogin(server));
  return { server, socket };
}

async function metricsText(server: TestServer): Promise<string> {
  return (await fetch(server.baseUrl + '/metrics')).text();
}

describe('WebSocket devices, with the ws client', () => {
  test('when a device opens /device and says hello first, then it is welcomed in the encoding it used and shows online over websocket', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'ws-hello');
    const online = nextEvent(socket, 'device:status', (s: { deviceId: string; online: boolean }) => s.deviceId === 'ws-hello' && s.online);

    const d = await WsDevice.open(server.wsUrl);
    await sleep(200);
    expect(d.frames).toEqual([]); // nothing before the hello
    d.send({ type: 'hello', device: 'ws-hello', token, firmware: 'py/1' }, 'base64');
    const welcome = await d.next((m) => m.type === 'welcome');
    expect(welcome).toMatchObject({ type: 'welcome', device: 'ws-hello', time: expect.any(Number) });
    expect(d.frames[0]).toMatch(/^[A-Za-z0-9+/]+=*$/); // base64, as the hello was

    expect(await online).toMatchObject({ deviceId: 'ws-hello', online: true, transport: 'websocket', firmware: 'py/1' });
    const { devices } = await emitAck(socket, 'fleet:list', {});
    expect(devices.find((x: { id: string }) => x.id === 'ws-hello')).toMatchObject({ online: true, transport: 'websocket' });
    const metrics = await metricsText(server);
    expect(metrics).toMatch(/^sockpit_device_connections_by_transport\{transport="websocket"\} 1$/m);
    expect(metrics).toMatch(/^sockpit_devices_online_by_transport\{transport="websocket"\} 1$/m);

    d.send({ type: 'ping' }, 'json');
    await d.next((m) => m.type === 'pong');
    expect(d.frames.at(-1)).toBe('{"type":"pong"}'); // and now in plain JSON, as the ping was
    d.close();
    await nextEvent(socket, 'device:status', (s: { deviceId: string; online: boolean }) => s.deviceId === 'ws-hello' && !s.online);
    socket.close();
  });

  test('when the handshake carries ?device= and Authorization: Bearer, then the welcome comes at once, before the device sends anything', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'ws-bearer');
    const d = await WsDevice.open(server.wsUrl, { query: { device: 'ws-bearer', firmware: 'fw-2' }, headers: { authorization: `Bearer ${token}` } });
    expect(await d.next((m) => m.type === 'welcome')).toMatchObject({ type: 'welcome', device: 'ws-bearer' });
    expect(d.frames[0]!.startsWith('{')).toBe(true); // nothing said yet: plain JSON, the WebSocket default
    // The welcome goes out first; the firmware is stored with the device's last-seen time just after.
    await until(async () => (await db(server).getDevice('ws-bearer'))?.firmware === 'fw-2', 5000, 'the firmware from ?firmware= stored');
    d.send({ type: 'ping' });
    await d.next((m) => m.type === 'pong');
    d.close();
  });

  test('when the handshake carries ?device= and ?token= (a client that cannot set headers), then the welcome comes at once, and the token shows in no device log', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'ws-query');
    const d = await WsDevice.open(server.wsUrl, { query: { device: 'ws-query', token } });
    expect(await d.next((m) => m.type === 'welcome')).toMatchObject({ device: 'ws-query' });
    const logText = async () => JSON.stringify((await emitAck(socket, 'device:watch', { deviceId: 'ws-query' })).log);
    await until(async () => (await logText()).includes('over websocket'), 3000, 'the device log to say how it connected');
    expect(await logText()).not.toContain(token);
    expect(await metricsText(server)).not.toContain(token);
    d.close();
    socket.close();
  });

  test('when the handshake token is wrong or names an unknown device, then it is refused with HTTP 401 before the upgrade; a token without ?device= is a 400', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'ws-401');
    expect((await WsDevice.refusal(server.wsUrl, { query: { device: 'ws-401' }, headers: { authorization: 'Bearer wrong-token' } })).status).toBe(401);
    expect((await WsDevice.refusal(server.wsUrl, { query: { device: 'ws-401', token: 'wrong-token' } })).status).toBe(401);
    expect((await WsDevice.refusal(server.wsUrl, { query: { device: 'nobody', token } })).status).toBe(401);
    const noId = await WsDevice.refusal(server.wsUrl, { headers: { authorization: `Bearer ${token}` } });
    expect(noId.status).toBe(400);
    expect(noId.body).toContain('?device=');
    expect((await WsDevice.refusal(server.wsUrl.replace('/device', '/devices'))).status).toBe(404);
    expect(server.app.core.connectionCount).toBe(0);
    // The right pair still gets in.
    const d = await WsDevice.bearer(server.wsUrl, 'ws-401', token);
    d.close();
  });

  test('when the first message is a hello with a wrong token, then the device gets unauthorized and the connection is closed (1008)', async () => {
    const server = await startServer();
    await addDevice(server, 'ws-bad-hello');
    const d = await WsDevice.open(server.wsUrl);
    d.send({ type: 'hello', device: 'ws-bad-hello', token: 'nope' });
    expect(await d.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
    expect((await d.waitClosed()).code).toBe(1008);
  });

  test('when the first message is not a hello and anonymous devices are off, then it is refused with unauthorized', async () => {
    const server = await startServer();
    const d = await WsDevice.open(server.wsUrl);
    d.send({ type: 'node', msg: 'values' });
    expect(await d.next()).toMatchObject({ type: 'error', error: 'unauthorized' });
    expect((await d.waitClosed()).code).toBe(1008);
    expect(await db(server).getDevice('anon-127.0.0.1')).toBeNull();
  });

  test('with ALLOW_ANONYMOUS_DEVICES, a handshake without a token is accepted at once, as ?device=ID or else anon-<address>, and greeted in plain JSON', async () => {
    const { server, socket } = await withDashboard({ allowAnonymousDevices: true });
    const named = await WsDevice.open(server.wsUrl, { query: { device: 'thesis-node' } });
    expect(await named.next()).toMatchObject({ type: 'welcome', device: 'thesis-node' });
    expect(named.frames[0]!.startsWith('{')).toBe(true);
    const unnamed = await WsDevice.open(server.wsUrl);
    expect(await unnamed.next()).toMatchObject({ type: 'welcome', device: 'anon-127.0.0.1' });

    // The thesis client's message, then a command for it.
    named.send({ type: 'node', msg: 'values' });
    await until(async () => (await db(server).countTelemetry('thesis-node')) === 1, 3000, 'the reading to be stored');
    const res = await emitAck(socket, 'command:send', { deviceId: 'thesis-node', action: 'togglerele' });
    expect(await named.next((m) => m.type === 'fromservertonode')).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: res.command.id });
    named.close();
    unnamed.close();
    socket.close();
  });

  test('with ALLOW_ANONYMOUS_DEVICES, a ?device= that is not valid percent-encoded UTF-8 is refused with 400; a valid non-ASCII one is the device id', async () => {
    const server = await startServer({ allowAnonymousDevices: true });
    const bad = await WsDevice.refusal(`${server.wsUrl}?device=%E0%80%80`);
    expect(bad.status).toBe(400);
    expect((await db(server).listDevices()).map((d) => d.id)).toEqual([]);
    const ok = await WsDevice.open(`${server.wsUrl}?device=%C3%A9t%C3%A9`);
    expect(await ok.next()).toMatchObject({ type: 'welcome', device: 'été' });
    ok.close();
  });

  test('when a device sends base64 frames, then its replies are base64; when it switches to plain JSON, so do they', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'ws-enc');
    const d = await WsDevice.bearer(server.wsUrl, 'ws-enc', token);
    d.send({ type: 'ping' }, 'base64');
    await d.next((m) => m.type === 'pong');
    expect(d.frames.at(-1)).toBe(Buffer.from('{"type":"pong"}').toString('base64'));
    d.send({ type: 'telemetry', id: 'e-1', data: { v: 1 } }, 'base64');
    expect(await d.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'e-1' });
    expect(d.frames.at(-1)).toBe(Buffer.from('{"type":"stored","id":"e-1"}').toString('base64'));
    d.send({ type: 'ping' }, 'json');
    await d.next((m) => m.type === 'pong');
    expect(d.frames.at(-1)).toBe('{"type":"pong"}');
    d.close();
  });

  test('when a device sends a binary frame, then it gets a protocol error and stays connected', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'ws-bin');
    const d = await WsDevice.bearer(server.wsUrl, 'ws-bin', token);
    d.sendBinary(Buffer.from('{"type":"ping"}'));
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ error: 'protocol', detail: expect.stringContaining('binary') });
    d.send({ type: 'ping' });
    await d.next((m) => m.type === 'pong');
    expect(d.closed).toBe(false);
    d.close();
  });

  test('when a connection sends pings and never reads the pongs, then it is cut at the bounded send queue, before any hello', async () => {
    const server = await startServer();
    const d = await WsDevice.open(server.wsUrl);
    const raw = (d.ws as unknown as { _socket: import('node:net').Socket })._socket;
    raw.pause();
    // Far more pongs than the kernel's buffers on both ends hold (about 25 MB of them).
    const payload = Buffer.alloc(125, 0x61);
    for (let i = 0; i < 200_000 && !d.closed; i++) {
      d.ws.ping(payload);
      if (i % 5000 === 0) await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 300));
    raw.resume();
    // Well before the 10 s hello timeout and the 30 s drain timeout.
    await d.waitClosed(4000);
    expect(d.closed).toBe(true);
  });

  test('when a frame is over 16 KiB, then the connection is closed with 1009; a frame of exactly 16 KiB is accepted', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'ws-big');
    const ok = await WsDevice.bearer(server.wsUrl, 'ws-big', token);
    const base = JSON.stringify({ pad: '' });
    const exact = JSON.stringify({ pad: 'x'.repeat(16 * 1024 - base.length) });
    expect(Buffer.byteLength(exact)).toBe(16 * 1024);
    ok.sendText(exact);
    ok.send({ type: 'ping' });
    await ok.next((m) => m.type === 'pong');
    expect(ok.received.find((m) => m.type === 'error')).toBeUndefined();
    await until(async () => (await db(server).countTelemetry('ws-big')) === 1, 3000, 'the 16 KiB reading');

    const big = JSON.stringify({ pad: 'x'.repeat(16 * 1024 - base.length + 1) });
    ok.sendText(big);
    expect((await ok.waitClosed()).code).toBe(1009);
    await server.app.writer.flush();
    expect(await db(server).countTelemetry('ws-big')).toBe(1);
  });

  test('when telemetry carries an id, then it is answered stored once committed, and a resend is stored once', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'ws-rel');
    const d = await WsDevice.bearer(server.wsUrl, 'ws-rel', token);
    d.send({ type: 'telemetry', id: 'b1-1', data: { t: 21.5 } });
    expect(await d.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'b1-1' });
    expect(await db(server).countTelemetry('ws-rel')).toBe(1);
    d.close();
    await d.waitClosed();
    // After a reconnect the device resends what it is not sure of.
    const again = await WsDevice.hello(server.wsUrl, 'ws-rel', token);
    again.send({ type: 'telemetry', id: 'b1-1', data: { t: 21.5 } });
    expect(await again.next((m) => m.type === 'stored')).toEqual({ type: 'stored', id: 'b1-1' });
    expect(await db(server).countTelemetry('ws-rel')).toBe(1);
    const history = await db(server).telemetryHistory('ws-rel', 10);
    expect(history.map((p: { data: unknown }) => p.data)).toEqual([{ t: 21.5 }]);
    again.close();
  });

  test('when the dashboard sends a command, then the device gets it and its ack makes it acked (ok:false: failed)', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'ws-cmd');
    const d = await WsDevice.bearer(server.wsUrl, 'ws-cmd', token);

    const res = await emitAck(socket, 'command:send', { deviceId: 'ws-cmd', action: 'togglerele' });
    expect(res.ok).toBe(true);
    const cmd = await d.next((m) => m.type === 'fromservertonode');
    expect(cmd).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: res.command.id });
    const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === cmd.id && c.status === 'acked');
    d.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    expect(await acked).toMatchObject({ status: 'acked', result: { relay: true } });

    const res2 = await emitAck(socket, 'command:send', { deviceId: 'ws-cmd', action: 'changesetting', params: { interval_ms: 5000 } });
    const cmd2 = await d.next((m) => m.type === 'fromservertonode');
    expect(cmd2).toEqual({ type: 'fromservertonode', msg: 'action', action: 'changesetting', id: res2.command.id, params: { interval_ms: 5000 } });
    const failed = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === cmd2.id && c.status === 'failed');
    d.send({ type: 'ack', id: cmd2.id, ok: false, result: { error: 'read-only' } });
    await failed;
    d.close();
    socket.close();
  });

  test('when a command is queued while the device is away, then it is delivered when the device connects over WebSocket', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'ws-queue');
    const res = await emitAck(socket, 'command:send', { deviceId: 'ws-queue', action: 'togglerele' });
    expect(res.command.status).toBe('queued');
    const d = await WsDevice.bearer(server.wsUrl, 'ws-queue', token);
    expect((await d.next((m) => m.type === 'fromservertonode')).id).toBe(res.command.id);
    d.close();
    socket.close();
  });

  test('when the server pings every 30 s, then a device that only listens answers and is not closed as idle, while one that does not answer is', async () => {
    const server = await startServer();
    const idle = 35_000; // just over the 30 s ping interval, so that only the pong keeps a listener
    server.app.core.limits.idleTimeoutMs = idle;
    const a = await addDevice(server, 'ws-listener');
    const b = await addDevice(server, 'ws-deaf');
    const t0 = Date.now();
    const listener = await WsDevice.bearer(server.wsUrl, a.id, a.token);
    const deaf = await WsDevice.bearer(server.wsUrl, b.id, b.token, { autoPong: false });
    const closed = await deaf.waitClosed(idle + 5000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(idle - 500);
    expect(closed.code).toBe(1000);
    expect(deaf.pings).toBeGreaterThan(0); // it was pinged, and did not answer
    await sleep(1500);
    expect(listener.pings).toBeGreaterThan(0);
    expect(listener.closed).toBe(false);
    expect(await metricsText(server)).toMatch(/^sockpit_devices_online_by_transport\{transport="websocket"\} 1$/m);
    // It got its welcome and nothing else, and never sent a message of its own.
    expect(listener.frames.length).toBe(1);
    listener.close();
  }, 60_000);

  test('when the server shuts down, then every WebSocket device gets going_away and the close code 1001', async () => {
    const server = await startServer();
    const devices = await Promise.all(
      ['ws-s1', 'ws-s2'].map(async (id, i) => {
        const { token } = await addDevice(server, id);
        return i === 0 ? WsDevice.bearer(server.wsUrl, id, token) : WsDevice.hello(server.wsUrl, id, token, 'base64');
      }),
    );
    const closing = server.close();
    for (const d of devices) {
      expect(await d.next((m) => m.type === 'error')).toEqual({ type: 'error', error: 'going_away', detail: GOING_AWAY.shutdown });
      expect((await d.waitClosed()).code).toBe(1001);
    }
    await closing;
  });
});

describe('WebSocket devices, with python3-websockets', () => {
  test('when a python device authenticates in the handshake, then its reading is stored, a command from the dashboard reaches it and its ack makes it acked', async () => {
    const { server, socket } = await withDashboard();
    const { token } = await addDevice(server, 'py-ws');
    const online = nextEvent(socket, 'device:status', (s: { deviceId: string; online: boolean }) => s.deviceId === 'py-ws' && s.online);
    const py = runPython(['websockets'], [WS_DEVICE_PY], { URL: `${server.wsUrl}?device=py-ws`, MODE: 'bearer', TOKEN: token });
    expect(JSON.parse((await py.line(/^recv .*"welcome"/)).slice(5))).toMatchObject({ type: 'welcome', device: 'py-ws' });
    expect(await online).toMatchObject({ transport: 'websocket' });
    expect(JSON.parse((await py.line(/^recv .*"stored"/)).slice(5))).toEqual({ type: 'stored', id: 'py-1' });
    expect(await db(server).countTelemetry('py-ws')).toBe(1);
    expect(py.lines.filter((l) => l.startsWith('frame ')).every((l) => l === 'frame json')).toBe(true);

    const res = await emitAck(socket, 'command:send', { deviceId: 'py-ws', action: 'togglerele' });
    const acked = nextEvent(socket, 'command:status', (c: { id: string; status: string }) => c.id === res.command.id && c.status === 'acked');
    expect(JSON.parse((await py.line(/^recv .*"fromservertonode"/)).slice(5))).toMatchObject({ action: 'togglerele', id: res.command.id });
    expect(await acked).toMatchObject({ result: { by: 'python' } });

    // Shutdown: the python client sees the goodbye and the close code.
    await server.close();
    expect(JSON.parse((await py.line(/^recv .*"going_away"/)).slice(5))).toEqual({ type: 'error', error: 'going_away', detail: GOING_AWAY.shutdown });
    expect(await py.line(/^closed /)).toBe('closed 1001');
    socket.close();
  });

  test('when a python device says a base64 hello first, then everything it gets back is base64', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'py-b64');
    const py = runPython(['websockets'], [WS_DEVICE_PY], { URL: server.wsUrl, MODE: 'hello', DEVICE: 'py-b64', TOKEN: token });
    await py.line(/^recv .*"welcome"/);
    await py.line(/^recv .*"stored"/);
    expect(py.lines.filter((l) => l.startsWith('frame '))).toEqual(['frame base64', 'frame base64']);
    expect(await db(server).countTelemetry('py-b64')).toBe(1);
  });

  test('when a python device has a wrong token, then its handshake is refused with 401', async () => {
    const server = await startServer();
    await addDevice(server, 'py-401');
    const py = runPython(['websockets'], [WS_DEVICE_PY], { URL: `${server.wsUrl}?device=py-401`, MODE: 'bearer', TOKEN: 'wrong' });
    expect(await py.line(/^refused/)).toBe('refused 401');
    expect(await py.exited).toBe(0);
  });
});
