/** Live telemetry from devices to logged-in sockets (docs/realtime.md, "Live telemetry"). */
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, emitAck, nextEvent, startServer } from '../support/server';

afterEach(closeAllServers);

async function setup(overrides = {}) {
  const server = await startServer(overrides);
  const cookie = await createUserAndLogin(server);
  const socket = await connectSocket(server, cookie);
  const { token } = await addDevice(server, 'esp-1');
  return { server, cookie, socket, token };
}

describe('live telemetry', () => {
  test('when a device sends a reading, then a watching socket gets it and it is stored', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const live = nextEvent(socket, 'device:telemetry', (p) => p.deviceId === 'esp-1');
    device.send({ sensor: 'gps', time: 1351824120 });
    expect((await live).data).toEqual({ sensor: 'gps', time: 1351824120 });
    // Stored once the writer's batch commits: ask until it is there.
    let history = await emitAck(socket, 'telemetry:history', { deviceId: 'esp-1' });
    for (let i = 0; i < 50 && history.points.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      history = await emitAck(socket, 'telemetry:history', { deviceId: 'esp-1' });
    }
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

  test('when readings go to several sockets, then each socket is written the whole WebSocket frame in one write, and every client reads it', async () => {
    const { server, cookie, socket: plain, token } = await setup();
    plain.close();
    const clients = await Promise.all([1, 2, 3].map(() => connectSocket(server, cookie, { auth: { telemetry: 'batch' } })));
    // What the server writes to each client's TCP socket (engine.io's websocket transport, under `ws`).
    const writes: number[] = [];
    for (const s of server.app.io.of('/').sockets.values()) {
      const tcp = (s.conn as unknown as { transport: { socket: { _socket: import('node:net').Socket } } }).transport.socket._socket;
      const write = tcp.write.bind(tcp);
      tcp.write = ((chunk: Buffer, ...rest: unknown[]) => {
        writes.push(chunk.length);
        return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
      }) as typeof tcp.write;
    }
    const got = clients.map(() => [] as number[]);
    clients.forEach((c, i) => c.on('fleet:telemetry', (b: { data: { seq: number } }[]) => got[i]!.push(...b.map((p) => p.data.seq))));
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    device.send({ seq: 1, pad: 'x'.repeat(200) });
    const deadline = Date.now() + 8000;
    while (got.some((g) => g.length < 1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual([[1], [1], [1]]);
    // One write per socket carrying header and payload (not a header write and a payload write).
    const frames = writes.filter((n) => n > 200);
    expect(frames).toHaveLength(3);
    expect(writes.filter((n) => n <= 10)).toEqual([]);
    for (const c of clients) c.close();
    device.close();
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
