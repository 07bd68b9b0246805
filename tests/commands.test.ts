import { Broadcaster, FLEET_BATCH_MAX, IO } from '../server/realtime/broadcast';
import { RawDevice } from './support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, emitAck, nextEvent, startServer, TestServer } from './support/server';

afterEach(closeAllServers);

const tick = () => new Promise((r) => setImmediate(r));

/** Just enough of a Socket.IO server for the Broadcaster: records what it emits and to whom. */
function fakeIo() {
  const emits: { rooms: string[]; except: string[]; local: boolean; event: string; payload: unknown }[] = [];
  const handlers = new Map<string, (...args: any[]) => void>();
  const operator = (local: boolean, rooms: string[] = [], except: string[] = []): any => ({
    to: (room: string) => operator(local, [...rooms, room], except),
    except: (room: string) => operator(local, rooms, [...except, room]),
    emit: (event: string, payload: unknown) => emits.push({ rooms, except, local, event, payload }),
  });
  const io = {
    on: (ev: string, fn: (...args: any[]) => void) => handlers.set(ev, fn),
    to: (room: string) => operator(false, [room]),
    local: operator(true),
    serverSideEmit: jest.fn(),
  };
  let n = 0;
  function connect(auth: object) {
    let onDisconnect = () => {};
    const socket = {
      id: `s${++n}`,
      handshake: { auth },
      data: { username: 'u' },
      rooms: new Set<string>(),
      emitted: [] as unknown[][],
      dropped: false,
      conn: {
        writeBuffer: [] as { data: string }[],
        transport: { writable: true },
        close: () => {
          socket.dropped = true;
          onDisconnect();
        },
      },
      join: (room: string) => void socket.rooms.add(room),
      leave: (room: string) => void socket.rooms.delete(room),
      emit: (...args: unknown[]) => socket.emitted.push(args),
      once: (_ev: string, fn: () => void) => (onDisconnect = fn),
      disconnect: () => onDisconnect(),
    };
    handlers.get('connection')!(socket);
    return socket;
  }
  return { io: io as unknown as IO & { serverSideEmit: jest.Mock }, emits, connect, fromOtherInstance: (readings: unknown[]) => handlers.get('fleet:readings')!(readings) };
}

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
    const { io, emits, connect } = fakeIo();
    const bc = new Broadcaster(io);
    const batched = connect({ telemetry: 'batch' });
    for (let i = 0; i < 2500; i++) bc.telemetry(`d${i % 7}`, i, { i });
    // Two full packets left at once; the rest waits for the end of the tick.
    expect(emits.map((e) => [e.event, (e.payload as unknown[]).length])).toEqual([
      ['fleet:telemetry', FLEET_BATCH_MAX],
      ['fleet:telemetry', FLEET_BATCH_MAX],
    ]);
    await tick();
    expect(emits[2]).toMatchObject({ rooms: ['fleet:batch'], local: true, event: 'fleet:telemetry' });
    expect((emits[2]!.payload as unknown[]).length).toBe(500);
    expect(emits.flatMap((e) => (e.payload as { data: { i: number } }[]).map((p) => p.data.i))).toEqual(Array.from({ length: 2500 }, (_, i) => i));
    // Alone, nothing goes to other instances.
    expect(emits.every((e) => e.local)).toBe(true);
    expect(io.serverSideEmit).not.toHaveBeenCalled();
    // A socket that did not ask for batches: per-reading events again, until it leaves.
    const plain = connect({});
    emits.length = 0;
    bc.telemetry('d1', 1, { x: 1 });
    bc.telemetry('d2', 2, { x: 2 });
    await tick();
    expect(emits.map((e) => [e.event, e.rooms, e.except])).toEqual([
      ['device:telemetry', ['fleet'], ['fleet:batch']],
      ['device:telemetry', ['fleet'], ['fleet:batch']],
      ['fleet:telemetry', ['fleet:batch'], []],
    ]);
    plain.disconnect();
    batched.disconnect();
    emits.length = 0;
    bc.telemetry('d1', 3, { x: 3 });
    await tick();
    expect(emits).toEqual([]); // nobody here to send it to
    bc.close();
  });

  test('when instances share Redis, then each tick goes to the others once (fleet:readings) and every instance delivers locally, exactly once', async () => {
    const { io, emits, connect, fromOtherInstance } = fakeIo();
    const bc = new Broadcaster(io, { clustered: true });
    connect({ telemetry: 'batch' });
    connect({});
    for (let i = 1; i <= 3; i++) bc.telemetry('here', i, { i });
    await tick();
    // One publish for the tick, whatever the number of readings; local delivery besides.
    expect(io.serverSideEmit).toHaveBeenCalledTimes(1);
    expect(io.serverSideEmit.mock.calls[0]).toEqual(['fleet:readings', [1, 2, 3].map((i) => ({ deviceId: 'here', ts: i, data: { i } }))]);
    expect(emits.every((e) => e.local)).toBe(true);
    expect(emits.map((e) => e.event)).toEqual(['device:telemetry', 'device:telemetry', 'device:telemetry', 'fleet:telemetry']);
    // Readings of another instance: delivered here, not published again.
    emits.length = 0;
    fromOtherInstance([{ deviceId: 'there', ts: 5, data: { i: 5 } }]);
    expect(io.serverSideEmit).toHaveBeenCalledTimes(1);
    expect(emits.map((e) => [e.event, e.local, e.payload])).toEqual([
      ['device:telemetry', true, { deviceId: 'there', ts: 5, data: { i: 5 } }],
      ['fleet:telemetry', true, [{ deviceId: 'there', ts: 5, data: { i: 5 } }]],
    ]);
    bc.close();
  });

  test('when a batched socket lags, then it leaves the full feed, gets the newest reading of each device once it has drained, then the full feed again; if it drains nothing it is dropped', async () => {
    const { io, emits, connect, fromOtherInstance } = fakeIo();
    const bc = new Broadcaster(io, { clustered: true, conflation: { lagBytes: 1000, stuckMs: 5000, checkMs: 60_000 } });
    const s = connect({ telemetry: 'batch' });
    bc.checkBatched(0);
    expect(bc.isLagging(s.id)).toBe(false);
    // More than lagBytes queued: it lags, and the full feed skips it (`fleet:lagging`, local to this instance).
    s.conn.writeBuffer = [{ data: 'x'.repeat(1500) }];
    s.conn.transport.writable = false;
    bc.checkBatched(0);
    expect(bc.isLagging(s.id)).toBe(true);
    expect(s.rooms.has('fleet:lagging')).toBe(true);
    bc.telemetry('a', 1, { v: 1 });
    bc.telemetry('b', 2, { v: 2 });
    bc.telemetry('a', 3, { v: 3 });
    await tick();
    fromOtherInstance([{ deviceId: 'c', ts: 4, data: { v: 4 } }, { deviceId: 'b', ts: 5, data: { v: 5 } }]);
    expect(emits.filter((e) => e.event === 'fleet:telemetry').map((e) => e.except)).toEqual([['fleet:lagging'], ['fleet:lagging']]);
    // Still blocked but it read something: not stuck.
    s.conn.writeBuffer = [{ data: 'x'.repeat(1200) }];
    bc.checkBatched(4000);
    bc.checkBatched(8000);
    expect(s.emitted).toEqual([]);
    expect(s.dropped).toBe(false);
    // Drained: one batch, the newest reading of each device in delivery order, then the full feed again.
    s.conn.writeBuffer = [];
    s.conn.transport.writable = true;
    bc.checkBatched(8050);
    expect(s.emitted).toEqual([
      [
        'fleet:telemetry',
        [
          { deviceId: 'a', ts: 3, data: { v: 3 } },
          { deviceId: 'c', ts: 4, data: { v: 4 } },
          { deviceId: 'b', ts: 5, data: { v: 5 } },
        ],
      ],
    ]);
    expect(bc.isLagging(s.id)).toBe(false);
    expect(s.rooms.has('fleet:lagging')).toBe(false);
    expect(bc.counters).toMatchObject({ lagged: 1, conflated: 2 });
    emits.length = 0;
    bc.telemetry('a', 6, { v: 6 });
    await tick();
    expect(emits.filter((e) => e.event === 'fleet:telemetry').map((e) => e.except)).toEqual([[]]);
    // Lagging again and draining nothing for stuckMs: dropped.
    s.conn.writeBuffer = [{ data: 'x'.repeat(1500) }];
    s.conn.transport.writable = false;
    bc.checkBatched(10_000);
    expect(bc.isLagging(s.id)).toBe(true);
    bc.checkBatched(14_000);
    expect(s.dropped).toBe(false);
    bc.checkBatched(15_000);
    expect(s.dropped).toBe(true);
    expect(bc.counters.droppedStuck).toBe(1);
    expect(bc.isLagging(s.id)).toBe(false);
    bc.close();
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
