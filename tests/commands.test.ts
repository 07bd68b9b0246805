import { Broadcaster, FLEET_BATCH_MAX, IO } from '../server/realtime/broadcast';
import { RawDevice } from './support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, emitAck, nextEvent, startServer, TestServer } from './support/server';

afterEach(closeAllServers);

async function setup(overrides = {}) {
  const server = await startServer(overrides);
  const cookie = await createUserAndLogin(server);
  const socket = await connectSocket(server, cookie);
  const { token } = await addDevice(server, 'esp-1');
  return { server, cookie, socket, token };
}

describe('Send Action to Node (SPEC §4)', () => {
  test('when an operator clicks, then the device gets the exact base64 line and its ack shows acked on the socket', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    await emitAck(socket, 'device:watch', { deviceId: 'esp-1' });
    const acked = nextEvent(socket, 'command:status', (c) => c.status === 'acked');
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    expect(res.ok).toBe(true);
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    expect(cmd).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: res.command.id });
    const raw = device.rawLines.find((l) => Buffer.from(l, 'base64').toString().includes('fromservertonode'))!;
    expect(Buffer.from(raw, 'base64').toString('base64')).toBe(raw);
    device.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    const status = await acked;
    expect(status).toMatchObject({ id: res.command.id, status: 'acked', result: { relay: true } });
    expect((await server.app.storage.getCommand(res.command.id))!.status).toBe('acked');
    socket.close();
    device.close();
  });

  test('when changesetting is sent, then the device receives its params', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'changesetting', params: { interval_ms: 1000 } });
    expect(res.ok).toBe(true);
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    expect(cmd).toMatchObject({ action: 'changesetting', params: { interval_ms: 1000 } });
    const failed = nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'failed');
    device.send({ type: 'ack', id: cmd.id, ok: false, result: { error: 'unknown setting' } });
    await failed;
    socket.close();
    device.close();
  });

  test('when the device is offline, then the command waits queued and is delivered on reconnect', async () => {
    const { server, socket, token } = await setup();
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    expect(res.command.status).toBe('queued');
    const sent = nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'sent');
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    expect(cmd.id).toBe(res.command.id);
    await sent;
    socket.close();
    device.close();
  });

  test('when a queued command outlives its time to live, then it becomes expired and is never delivered', async () => {
    const { server, socket, token } = await setup({ commandTtlS: 1 });
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    await nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'expired', 5000);
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    await new Promise((r) => setTimeout(r, 300));
    expect(device.received.find((m) => m.type === 'fromservertonode')).toBeUndefined();
    socket.close();
    device.close();
  });

  test('when the device never acks, then the command becomes timeout', async () => {
    const { server, socket, token } = await setup({ commandTimeoutS: 1 });
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    await device.next((m) => m.type === 'fromservertonode');
    await nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'timeout', 5000);
    socket.close();
    device.close();
  });

  test('when the server is closed and created again on the same DATA_DIR, then no command is left sent', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    await device.next((m) => m.type === 'fromservertonode');
    expect((await server.app.storage.getCommand(res.command.id))!.status).toBe('sent');
    socket.close();
    const again = await server.restart();
    const cmd = await again.app.storage.getCommand(res.command.id);
    expect(cmd!.status).toBe('timeout');
    device.close();
  });

  test('when a viewer tries an action, then it is refused and nothing reaches the device', async () => {
    const server = await startServer();
    await createUserAndLogin(server);
    const viewerCookie = await createUserAndLogin(server, { username: 'watcher', password: 'just looking', role: 'viewer' });
    const { token } = await addDevice(server, 'esp-1');
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const socket = await connectSocket(server, viewerCookie);
    expect(await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' })).toEqual({ ok: false, error: 'forbidden' });
    await new Promise((r) => setTimeout(r, 200));
    expect(device.received.find((m) => m.type === 'fromservertonode')).toBeUndefined();
    socket.close();
    device.close();
  });

  test('when a payload is malformed, then the ack says bad_request', async () => {
    const { socket } = await setup();
    expect(await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'selfdestruct' })).toEqual({ ok: false, error: 'bad_request' });
    expect(await emitAck(socket, 'command:send', 'nonsense')).toEqual({ ok: false, error: 'bad_request' });
    expect(await emitAck(socket, 'command:send', { deviceId: 'nope', action: 'togglerele' })).toEqual({ ok: false, error: 'not_found' });
    expect(await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'changesetting' })).toEqual({ ok: false, error: 'bad_request' });
    socket.close();
  });
});

describe('live telemetry', () => {
  test('when a device sends a reading, then a watching socket gets it and it is stored', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const live = nextEvent(socket, 'device:telemetry', (p) => p.deviceId === 'esp-1');
    device.send({ sensor: 'gps', time: 1351824120 });
    expect((await live).data).toEqual({ sensor: 'gps', time: 1351824120 });
    await server.app.writer.flush();
    const history = await emitAck(socket, 'telemetry:history', { deviceId: 'esp-1' });
    expect(history.points.map((p: { data: unknown }) => p.data)).toEqual([{ sensor: 'gps', time: 1351824120 }]);
    const list = await emitAck(socket, 'fleet:list', {});
    expect(list.devices[0]).toMatchObject({ id: 'esp-1', online: true, latest: { sensor: 'gps', time: 1351824120 } });
    socket.close();
    device.close();
  });

  test('when a socket asks for batches, then it gets the readings as fleet:telemetry arrays in order, and a plain socket still gets device:telemetry', async () => {
    const { server, cookie, socket: plain, token } = await setup();
    const batched = await connectSocket(server, cookie, { auth: { telemetry: 'batch' } });
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const got: { deviceId: string; ts: number; data: { seq: number } }[][] = [];
    let batchedSingles = 0;
    let plainBatches = 0;
    const plainSingles: number[] = [];
    batched.on('fleet:telemetry', (b) => got.push(b));
    batched.on('device:telemetry', () => batchedSingles++);
    plain.on('fleet:telemetry', () => plainBatches++);
    plain.on('device:telemetry', (p: { data: { seq: number } }) => plainSingles.push(p.data.seq));
    for (let seq = 1; seq <= 20; seq++) device.send({ seq });
    const deadline = Date.now() + 8000;
    while ((got.flat().length < 20 || plainSingles.length < 20) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(got.flat().map((p) => p.data.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    for (const p of got.flat()) expect(p).toMatchObject({ deviceId: 'esp-1', ts: expect.any(Number) });
    expect(got.length).toBeLessThanOrEqual(20);
    expect(plainSingles).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(batchedSingles).toBe(0);
    expect(plainBatches).toBe(0);
    batched.close();
    plain.close();
    device.close();
  });

  test('when many readings arrive in one tick, then the Broadcaster sends one fleet:telemetry per tick, at most 1,000 readings each, and per-reading events only while someone wants them', async () => {
    const emits: { room: string; event: string; payload: unknown }[] = [];
    let onConnection: ((s: unknown) => void) | null = null;
    const fakeIo = {
      on: (_ev: string, fn: (s: unknown) => void) => (onConnection = fn),
      to: (room: string) => {
        const target = { except: () => target, emit: (event: string, payload: unknown) => emits.push({ room, event, payload }) };
        return target;
      },
    };
    const bc = new Broadcaster(fakeIo as unknown as IO);
    for (let i = 0; i < 2500; i++) bc.telemetry(`d${i % 7}`, i, { i });
    // Two full packets left at once; the rest waits for the end of the tick.
    expect(emits.map((e) => [e.event, (e.payload as unknown[]).length])).toEqual([
      ['fleet:telemetry', FLEET_BATCH_MAX],
      ['fleet:telemetry', FLEET_BATCH_MAX],
    ]);
    await new Promise((r) => setImmediate(r));
    expect(emits.map((e) => [e.room, e.event, (e.payload as unknown[]).length])[2]).toEqual(['fleet:batch', 'fleet:telemetry', 500]);
    expect(emits.flatMap((e) => (e.payload as { data: { i: number } }[]).map((p) => p.data.i))).toEqual(Array.from({ length: 2500 }, (_, i) => i));
    // A socket that did not ask for batches: per-reading events again, until it leaves.
    let leave: () => void = () => {};
    onConnection!({ handshake: { auth: {} }, once: (_: string, fn: () => void) => (leave = fn), join: () => {} });
    emits.length = 0;
    bc.telemetry('d1', 1, { x: 1 });
    await new Promise((r) => setImmediate(r));
    expect(emits.map((e) => e.event)).toEqual(['device:telemetry', 'fleet:telemetry']);
    leave();
    emits.length = 0;
    bc.telemetry('d1', 2, { x: 2 });
    await new Promise((r) => setImmediate(r));
    expect(emits.map((e) => e.event)).toEqual(['fleet:telemetry']);
  });

  test('when a device goes offline, then the socket sees device:status offline', async () => {
    const { server, socket, token } = await setup();
    const online = nextEvent(socket, 'device:status', (p) => p.deviceId === 'esp-1' && p.online);
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    await online;
    const offline = nextEvent(socket, 'device:status', (p) => p.deviceId === 'esp-1' && !p.online);
    device.close();
    expect((await offline).lastSeen).toEqual(expect.any(Number));
    socket.close();
  });
});
