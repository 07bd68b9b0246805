/**
 * Graceful shutdown (SIGTERM) of the real entry point, `node dist/main.js`, as a child process;
 * case 19 of docs/security.md. docs/deploying.md says what SIGTERM does.
 */
import { loadConfig } from '../../server/config';
import { openStorage } from '../../server/storage';
import { RawDevice } from '../support/device';
import { addDeviceCli, childEnv, cliSync, ensureBuilt, killChildren, startChild } from '../support/child';
import { ReliableDevice } from '../support/firmware';
import { connectSocket, emitAck, login, TestServer } from '../support/server';

afterEach(killChildren);
beforeAll(ensureBuilt, 60_000);

describe('graceful shutdown (SIGTERM)', () => {
  test('when SIGTERM arrives under load, then every reading received is stored, devices hear goodbye and the exit code is 0', async () => {
    const env = childEnv({ TELEMETRY_BATCH_MS: '200' });
    const token = addDeviceCli(env, 'term-1');
    const child = await startChild(env);
    const device = await RawDevice.hello(child.devicePort, 'term-1', token);
    const N = 150;
    for (let i = 0; i < N; i++) device.send({ type: 'telemetry', id: `1-${i}`, data: { i } });
    device.send({ type: 'ping' });
    await device.next((m) => m.type === 'pong');
    child.proc.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    expect(await device.next((m) => m.type === 'error')).toMatchObject({ error: 'going_away', detail: 'server is shutting down' });
    await device.waitClosed();
    const storage = await openStorage(loadConfig(env));
    try {
      expect(await storage.countTelemetry('term-1')).toBe(N);
    } finally {
      await storage.close();
    }
  });
});

describe('19. graceful shutdown under load', () => {
  test('when SIGTERM arrives while devices stream and a command waits for its ack, then every reading received is stored, the command is not left sent, and the exit code is 0', async () => {
    const env = childEnv({ TELEMETRY_BATCH_MS: '200' });
    const ids = ['term-1', 'term-2', 'term-3', 'term-4', 'term-5'];
    const devices = ids.map((id) => new ReliableDevice(id, addDeviceCli(env, id)));
    cliSync(env, ['user', 'add', 'owner', '--role', 'operator'], 'correct horse\n');
    const child = await startChild(env);
    await Promise.all(devices.map((d) => d.connect(child.devicePort)));

    const server = { baseUrl: child.baseUrl } as TestServer;
    const socket = await connectSocket(server, await login(server, 'owner', 'correct horse'));
    const inFlight = await emitAck(socket, 'command:send', { deviceId: 'term-1', action: 'togglerele' });
    await devices[0]!.next((m) => m.type === 'fromservertonode');
    socket.close();

    for (const d of devices) d.startStreaming(150);
    await new Promise((r) => setTimeout(r, 700));
    // Every line before an answered ping was read by the server: those readings must be stored.
    await Promise.all(devices.map((d) => d.barrier()));
    const received = devices.map((d) => [...d.sent]);
    const exited = child.exited;
    child.proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    await Promise.all(devices.map((d) => d.stopStreaming()));
    for (const d of devices) {
      expect(d.received.some((m) => m.type === 'error' && m.detail === 'server is shutting down')).toBe(true);
      d.close();
    }

    const storage = await openStorage(loadConfig(env));
    try {
      for (const [i, d] of devices.entries()) {
        const points = await storage.telemetryHistory(d.id, 100_000);
        const inDb = new Set(points.map((p) => `${p.data.boot}-${p.data.seq}`));
        expect([d.id, received[i]!.filter((id) => !inDb.has(id))]).toEqual([d.id, []]);
        expect([d.id, [...d.stored].filter((id) => !inDb.has(id))]).toEqual([d.id, []]);
        expect(points.length).toBe(inDb.size);
      }
      const cmd = (await storage.getCommand(inFlight.command.id))!;
      expect(cmd.status).toBe('timeout');
      expect(cmd.error).toMatch(/stopped/);
    } finally {
      await storage.close();
    }
  }, 40_000);
});
