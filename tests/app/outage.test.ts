/**
 * Case 20 of docs/security.md: storage outages under load. Readings are held (bounded) or devices
 * slowed, none is silently dropped, /readyz reports the outage, and everything resumes.
 *
 * - With PostgreSQL (the `postgres` jest project, TEST_DATABASE_URL set): a real 10 s outage made
 *   by a TCP proxy between the server and PostgreSQL that the test cuts and restores.
 * - Without it (the `sqlite` project): the same flow with write failures injected into storage.
 * The Redis outage belongs to the scale-out topology (see docs/security.md).
 */
import net from 'node:net';
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, db, startServer, testDatabaseUrl, TestServer } from '../support/server';
import { sleep, until } from '../support/child';
import { ReliableDevice } from '../support/firmware';

afterEach(closeAllServers);

/** A TCP proxy the test can cut (every connection dropped, new ones refused) and restore. */
class CuttableProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private up = true;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((client) => {
      client.on('error', () => {});
      if (!this.up) return void client.destroy();
      const upstream = net.connect(this.target);
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve) =>
      this.server.listen(0, '127.0.0.1', () => {
        this.port = (this.server.address() as net.AddressInfo).port;
        resolve();
      }),
    );
  }

  cut(): void {
    this.up = false;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.up = true;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

async function readyz(server: TestServer): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(server.baseUrl + '/readyz');
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/**
 * The shared scenario: devices stream, storage goes away for `outageMs`, comes back; then every
 * reading sent must be stored exactly once, and every `stored` answer must be true.
 */
async function outageUnderLoad(server: TestServer, outage: { start(): void; end(): void }, outageMs: number, highWater: number): Promise<void> {
  // A small buffer so that the outage also exercises backpressure (devices' sockets paused). The
  // backlog each device builds up meanwhile (more than the rate limit's burst) must not be dropped.
  (server.app.writer as unknown as { highWater: number }).highWater = highWater;
  const ids = ['out-1', 'out-2', 'out-3', 'out-4', 'out-5'];
  const devices: ReliableDevice[] = [];
  for (const id of ids) devices.push(new ReliableDevice(id, (await addDevice(server, id)).token));
  await Promise.all(devices.map((d) => d.connect(server.devicePort)));
  for (const d of devices) d.startStreaming(100);
  await sleep(1000);
  expect((await readyz(server)).status).toBe(200);

  outage.start();
  const storedAtCut = devices.map((d) => d.stored.size);
  await until(async () => (await readyz(server)).status === 503, 5000, '/readyz to report the outage', 200);
  expect((await readyz(server)).body).toMatchObject({ status: 'unavailable', storage: 'unreachable' });
  let paused = false;
  const deadline = Date.now() + outageMs - 1500;
  while (Date.now() < deadline) {
    paused ||= server.app.writer.full;
    expect(server.app.writer.pending).toBeLessThanOrEqual(highWater + 5 * 400); // the bound, plus one burst per device
    await sleep(100);
  }
  // Nothing new was answered `stored` while storage was away (a little slack for commits in flight at the cut).
  devices.forEach((d, i) => expect(d.stored.size - storedAtCut[i]!).toBeLessThanOrEqual(100));
  expect(paused).toBe(true);
  outage.end();

  await until(async () => (await readyz(server)).status === 200, 10_000, '/readyz to recover', 200);
  await sleep(1000);
  await Promise.all(devices.map((d) => d.stopStreaming()));
  // Devices whose connection survived get their answers; any that was dropped reconnects and
  // resends (the client does at the welcome).
  for (const d of devices) {
    if (d.closed) await d.connect(server.devicePort);
  }
  await until(() => devices.every((d) => d.unanswered === 0), 20_000, 'every reading to be answered after recovery', 100);
  await server.app.writer.flush();
  for (const d of devices) {
    const points = await db(server).telemetryHistory(d.id, 100_000);
    const inDb = new Set(points.map((p) => `${p.data.boot}-${p.data.seq}`));
    expect([d.id, d.sent.filter((id) => !inDb.has(id))]).toEqual([d.id, []]);
    expect([d.id, points.length]).toEqual([d.id, d.sent.length]);
    expect(d.received.filter((m) => m.type === 'error')).toEqual([]);
    d.close();
  }
  // Devices were not dropped for it: all five still counted, none refused.
  expect(devices.every((d) => d.sent.length > 500)).toBe(true);
}

const pgUrl = testDatabaseUrl();

(pgUrl ? describe : describe.skip)('20. PostgreSQL outage (postgres project)', () => {
  test('when PostgreSQL is unreachable for 10 s under load, then readings are held or devices slowed, /readyz says so, and afterwards every reading is stored once', async () => {
    const target = new URL(pgUrl!);
    const proxy = new CuttableProxy({ host: target.hostname, port: Number(target.port || 5432) });
    await proxy.listen();
    const viaProxy = new URL(pgUrl!);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    try {
      const server = await startServer({ databaseUrl: viaProxy.toString() });
      await outageUnderLoad(server, { start: () => proxy.cut(), end: () => proxy.restore() }, 10_000, 1000);
      // A device that connects during an outage is refused politely, not crashed on; after it, it works.
      const { token } = await addDevice(server, 'late');
      proxy.cut();
      const refused = await RawDevice.connect(server.devicePort);
      refused.send({ type: 'hello', device: 'late', token });
      expect(await refused.next()).toEqual({ type: 'error', error: 'unavailable', detail: 'server could not check the token; try again' });
      await refused.waitClosed();
      proxy.restore();
      (await RawDevice.hello(server.devicePort, 'late', token)).close();
    } finally {
      await closeAllServers();
      await proxy.close();
    }
  }, 60_000);
});

(pgUrl ? describe.skip : describe)('20. storage outage, injected (sqlite project)', () => {
  test('when storage writes fail for 8 s under load, then readings are held or devices slowed, /readyz says so, and afterwards every reading is stored once', async () => {
    const server = await startServer();
    const storage = server.app.storage;
    const real = { insertTelemetry: storage.insertTelemetry.bind(storage), ping: storage.ping.bind(storage) };
    const down = () => Promise.reject(new Error('SQLITE_IOERR: disk I/O error'));
    await outageUnderLoad(
      server,
      {
        start: () => Object.assign(storage, { insertTelemetry: down, ping: down }),
        end: () => Object.assign(storage, real),
      },
      8000,
      1000,
    );
  }, 40_000);

  test('when a device connects while storage cannot be read, then it is refused with unauthorized and a retry hint, and can connect once storage is back', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'late');
    const storage = server.app.storage;
    const real = storage.getDevice.bind(storage);
    storage.getDevice = () => Promise.reject(new Error('SQLITE_IOERR'));
    const refused = await RawDevice.connect(server.devicePort);
    refused.send({ type: 'hello', device: 'late', token });
    expect(await refused.next()).toEqual({ type: 'error', error: 'unavailable', detail: 'server could not check the token; try again' });
    await refused.waitClosed();
    storage.getDevice = real;
    (await RawDevice.hello(server.devicePort, 'late', token)).close();
  });
});
