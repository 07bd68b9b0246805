/**
 * Case 19 of docs/security.md: SIGTERM under load. (tests/shutdown.test.ts covers one device's
 * burst; this adds several devices still streaming at the signal, and commands in flight.)
 */
import { loadConfig } from '../../server/config';
import { openStorage } from '../../server/storage';
import { connectSocket, emitAck, login, TestServer } from '../support/server';
import { addDeviceCli, childEnv, cli, ensureBuilt, killChildren, startChild } from './support/child';
import { ReliableDevice } from './support/firmware';

afterEach(killChildren);
beforeAll(ensureBuilt, 60_000);

describe('19. graceful shutdown under load', () => {
  test('when SIGTERM arrives while devices stream and a command waits for its ack, then every reading received is stored, the command is not left sent, and the exit code is 0', async () => {
    const env = childEnv({ TELEMETRY_BATCH_MS: '200' });
    const ids = ['term-1', 'term-2', 'term-3', 'term-4', 'term-5'];
    const devices = ids.map((id) => new ReliableDevice(id, addDeviceCli(env, id)));
    cli(env, ['user', 'add', 'owner', '--role', 'operator'], 'correct horse\n');
    const child = await startChild(env);
    await Promise.all(devices.map((d) => d.connect(child.devicePort)));

    const server = { baseUrl: child.baseUrl } as TestServer;
    const socket = await connectSocket(server, await login(server, 'owner', 'correct horse'));
    const inFlight = await emitAck(socket, 'command:send', { deviceId: 'term-1', action: 'togglerele' });
    await devices[0]!.conn!.next((m) => m.type === 'fromservertonode');
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
      expect(d.conn!.received.some((m) => m.type === 'error' && m.detail === 'server is shutting down')).toBe(true);
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
