/**
 * The ESP32 firmware's portable core (esp32/sockpit-device/src/core), built for Linux as
 * esp32/build/sockpit-device-host and run with an ESP32-sized stack, against the real server:
 * hello with a CLI-made token, online in the dashboard's socket, readings, togglerele, a server
 * restart (going_away, backoff, resend), and a wrong token (unauthorized, a long pause).
 *
 * Skips itself when the host program is not built (`make -C esp32 host`), unless
 * ESP32_HOST_REQUIRED=1, in which case a missing program is a failure.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { addDevice, ClientSocket, connectSocket, createUserAndLogin, emitAck, startServer, TestServer } from '../support/server';
import { built, HostDevice, HOST_BIN, required, ROOT, SMALL_STACK_KIB } from './host-device';

const CLI = path.join(ROOT, 'bin', 'sockpit.js');

// Readings every second: enough to see them flow, few enough that an outage of several backoff
// rounds stays well inside the 32-reading resend buffer.
const INTERVAL_MS = 1000;

/** Creates the device with the CLI, as a maker would (`npx sockpit device add ID --json`). */
async function deviceAddWithCli(server: TestServer, id: string): Promise<{ id: string; token: string }> {
  if (!fs.existsSync(CLI)) return addDevice(server, id);
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI, 'device', 'add', id, '--json'],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          DATA_DIR: server.dataDir,
          ...(server.config.databaseUrl ? { DATABASE_URL: server.config.databaseUrl } : {}),
          LOG_LEVEL: 'silent',
        },
        timeout: 20_000,
      },
      (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out)),
    );
  });
  const created = JSON.parse(stdout.trim().split('\n').pop()!) as { id: string; token: string };
  expect(created.id).toBe(id);
  expect(typeof created.token).toBe('string');
  return created;
}

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

if (!built && required) {
  test('the ESP32 host program is built (ESP32_HOST_REQUIRED=1)', () => {
    throw new Error(`${HOST_BIN} is missing: run \`make -C esp32 host\` first`);
  });
}

// One device's life, step by step: the tests share it and run in order.
(built ? describe : describe.skip)('ESP32 firmware core (host build) against the real server', () => {
  const DEVICE_ID = 'esp32-host-1';
  let server: TestServer;
  let socket: ClientSocket;
  let device: HostDevice | null = null;
  const statuses: Array<{ deviceId: string; online: boolean }> = [];
  const telemetry: Array<{ deviceId: string; data: Record<string, unknown> }> = [];
  const commandUpdates: Array<{ id: string; status: string; result: unknown }> = [];

  beforeAll(async () => {
    server = await startServer();
  });

  afterAll(async () => {
    await device?.stop();
    socket?.close();
    await server?.close().catch(() => {});
  });

  test('connects with a token made by the CLI and shows online to a logged-in socket', async () => {
    const { token } = await deviceAddWithCli(server, DEVICE_ID);
    const cookie = await createUserAndLogin(server, { username: 'maker', password: 'a long enough password', role: 'operator' });
    socket = await connectSocket(server, cookie);
    socket.on('device:status', (s: { deviceId: string; online: boolean }) => statuses.push(s));
    socket.on('device:telemetry', (t: { deviceId: string; data: Record<string, unknown> }) => telemetry.push(t));
    socket.on('command:status', (c: { id: string; status: string; result: unknown }) => commandUpdates.push(c));

    device = new HostDevice(
      ['--host', '127.0.0.1', '--port', String(server.devicePort), '--id', DEVICE_ID, '--token', token, '--interval-ms', String(INTERVAL_MS)],
      { stackKib: SMALL_STACK_KIB },
    );
    await device.waitFor(/The server welcomed us: online/, 10_000);
    await until('device:status online', () => (statuses.some((s) => s.deviceId === DEVICE_ID && s.online) ? true : undefined));
  });

  test('its readings arrive', async () => {
    const first = await until('two readings', () => {
      const mine = telemetry.filter((t) => t.deviceId === DEVICE_ID);
      return mine.length >= 2 ? mine[0] : undefined;
    });
    expect(typeof first.data.uptime_ms).toBe('number');
    expect(first.data.relay).toBe(false);
  });

  test('togglerele sent from the socket is acked with the new relay state', async () => {
    const sent = await emitAck<{ ok: boolean; command?: { id: string }; error?: string }>(socket, 'command:send', {
      deviceId: DEVICE_ID,
      action: 'togglerele',
    });
    expect(sent).toMatchObject({ ok: true });
    const commandId = sent.command!.id;
    const done = await until('the command to finish', () =>
      commandUpdates.find((c) => c.id === commandId && c.status !== 'queued' && c.status !== 'sent'),
    );
    expect(done.status).toBe('acked');
    expect(done.result).toEqual({ relay: true });
    await device!.waitFor(/Command togglerele: relay switched ON/, 5_000);
    await until('a reading with the relay on', () =>
      telemetry.some((t) => t.deviceId === DEVICE_ID && t.data.relay === true) ? true : undefined,
    );
  });

  test('after a server restart it reconnects with backoff and resends, with no duplicates stored', async () => {
    const dev = device!;

    // Server down: the device keeps its readings and retries with growing pauses.
    const { dataDir, devicePort } = server;
    await server.close();
    await dev.waitFor(/The server is closing this connection \(going_away - server is shutting down\).*Reconnecting in/, 10_000);
    await dev.waitFor(/refused the connection: nothing listens on that port.*Next try in/, 15_000, 2);
    await dev.waitFor(/Offline: kept for later/, 10_000, 2);
    const keptOffline = dev.count(/Offline: kept for later/);
    // Each pause is drawn from [ceiling/2, ceiling] and the ceiling doubles, so they never shrink.
    const pauses = dev.lines
      .map((l) => /(?:Reconnecting|Next try) in (\d+\.\d) s/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]));
    expect(pauses.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < pauses.length; i++) expect(pauses[i]).toBeGreaterThanOrEqual(pauses[i - 1]!);
    expect(Math.max(...pauses)).toBeLessThanOrEqual(30);

    // Back on the same device port and data: the device comes back and resends.
    server = await startServer({ dataDir, devicePort });
    await dev.waitFor(/The server welcomed us: online\. Sending \d+ reading\(s\) it has not confirmed yet/, 40_000);
    const resent = Number(/Sending (\d+) reading/.exec(dev.lines.find((l) => /Sending \d+ reading/.test(l))!)![1]);
    expect(resent).toBeGreaterThanOrEqual(keptOffline);
    const onlineReading = /Reading \d+-\d+: .*relay on\.$/;
    await dev.waitFor(onlineReading, 5_000, dev.count(onlineReading) + 2);

    // Freeze the device: then every reading it took is stored, each exactly once.
    await dev.stop();
    const taken = dev.readingsTaken();
    const storage = server.app.storage;
    await until(`${taken} readings stored`, async () => ((await storage.countTelemetry(DEVICE_ID)) >= taken ? true : undefined));
    expect(await storage.countTelemetry(DEVICE_ID)).toBe(taken);
    const uptimes = (await storage.telemetryHistory(DEVICE_ID, 2000)).map((p) => p.data.uptime_ms);
    expect(uptimes).toHaveLength(taken);
    expect(new Set(uptimes).size).toBe(taken);
  }, 90_000);

  test('with a wrong token the server says unauthorized, and the device rests 15 to 22.5 minutes', async () => {
    const wrong = new HostDevice(
      ['--host', '127.0.0.1', '--port', String(server.devicePort), '--id', DEVICE_ID, '--token', 'not-the-token'],
      { stackKib: SMALL_STACK_KIB },
    );
    const exit = await wrong.exited;
    expect(exit.code).toBe(2);
    expect(wrong.log).toMatch(/The server refused this device: unauthorized/);
    const pause = Number(wrong.find(/Not trying again for (\d+\.\d) min/)![1]);
    expect(pause).toBeGreaterThanOrEqual(15);
    expect(pause).toBeLessThanOrEqual(22.5);
  });
});

/**
 * The firmware's TLS (mbedtls in the host build) against the server's own TLS port and CA: the
 * CA printed by `npx sockpit tls ca` is what the device trusts; by host name and by IP address
 * (the server certificate lists addresses as DNS names too, which mbedtls 2.x needs).
 */
(built ? describe : describe.skip)('ESP32 firmware core (host build) over TLS against the real server', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer({ deviceTlsPort: 0 });
  });

  afterAll(async () => {
    await server?.close();
  });

  test.each(['localhost', '127.0.0.1'])('with the CA from the server, the device connects to %s over TLS, is welcomed and its readings are stored', async (host) => {
    const id = `esp32-tls-${host.replace(/\W/g, '')}`;
    const { token } = await deviceAddWithCli(server, id);
    const caFile = path.join(server.dataDir, 'tls', 'ca.pem');
    expect(fs.existsSync(caFile)).toBe(true);
    const device = new HostDevice(['--host', host, '--port', String(server.tlsPorts.tcp), '--id', id, '--token', token, '--ca', caFile, '--interval-ms', String(INTERVAL_MS)], {
      stackKib: SMALL_STACK_KIB,
    });
    try {
      await device.waitFor(/Connected over TLS, the server's certificate checked/, 15_000);
      await device.waitFor(/The server welcomed us: online\./, 10_000);
      await until('a reading over TLS', async () => ((await server.app.storage.countTelemetry(id)) >= 1 ? true : undefined), 10_000);
    } finally {
      await device.stop();
    }
  }, 45_000);
});
