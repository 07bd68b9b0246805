/**
 * Case 18 of docs/security.md: at-least-once telemetry across `kill -9` of the server process.
 */
import { loadConfig } from '../../server/config';
import { openStorage } from '../../server/storage';
import { connectSocket, emitAck, login, TestServer } from '../support/server';
import { addDeviceCli, Child, childEnv, cliSync, ensureBuilt, killChildren, sleep, startChild, until } from '../support/child';
import { ReliableDevice } from '../support/firmware';

afterEach(killChildren);
beforeAll(ensureBuilt, 60_000);

/** What storage holds for a device, as reading ids (`boot-seq`), with the number of rows. */
async function storedIds(env: Record<string, string>, deviceIds: string[]): Promise<Map<string, { ids: Set<string>; rows: number }>> {
  const storage = await openStorage(loadConfig(env));
  try {
    const out = new Map<string, { ids: Set<string>; rows: number }>();
    for (const id of deviceIds) {
      const points = await storage.telemetryHistory(id, 100_000);
      out.set(id, { ids: new Set(points.map((p) => `${p.data.boot}-${p.data.seq}`)), rows: await storage.countTelemetry(id) });
    }
    return out;
  } finally {
    await storage.close();
  }
}

describe('18. at-least-once telemetry', () => {
  test('when the server is killed with SIGKILL mid-stream, then every reading answered stored is in the database, and after a restart the resent ones are stored once', async () => {
    const env = childEnv({ TELEMETRY_BATCH_MS: '30' });
    const ids = ['crash-1', 'crash-2', 'crash-3', 'crash-4'];
    const devices = ids.map((id) => new ReliableDevice(id, addDeviceCli(env, id)));
    cliSync(env, ['user', 'add', 'owner', '--role', 'admin'], 'correct horse\n');
    let child: Child = await startChild(env);
    const devicePort = child.devicePort;
    await Promise.all(devices.map((d) => d.connect(devicePort)));

    // A command in flight when the process dies (the device never acks it).
    const server = { baseUrl: child.baseUrl } as TestServer;
    const socket = await connectSocket(server, await login(server, 'owner', 'correct horse'));
    const cmd = await emitAck(socket, 'command:send', { deviceId: 'crash-1', action: 'togglerele' });
    expect(cmd.ok).toBe(true);
    await devices[0]!.next((m) => m.type === 'fromservertonode');
    socket.close();

    for (const d of devices) d.startStreaming(150); // under the 200 lines/s limit
    await until(() => devices.every((d) => d.stored.size >= 100), 10_000, 'readings to be stored');
    child.proc.kill('SIGKILL');
    await child.exited;
    await Promise.all(devices.map((d) => d.stopStreaming()));
    const acked = devices.map((d) => new Set(d.stored));

    // Nothing answered `stored` was lost.
    const afterKill = await storedIds(env, ids);
    devices.forEach((d, i) => {
      const inDb = afterKill.get(d.id)!.ids;
      const missing = [...acked[i]!].filter((id) => !inDb.has(id));
      expect([d.id, missing]).toEqual([d.id, []]);
      expect(d.sent.length).toBeGreaterThan(acked[i]!.size); // some really were in flight
    });

    // Restart on the same data and port; devices reconnect and resend what was not answered (the
    // client does at the welcome, as firmware does), plus some that were (their answer might have
    // been lost).
    child = await startChild(env, devicePort);
    for (const d of devices) {
      d.close();
      await d.connect(devicePort);
      d.resendAnswered(50);
    }
    await until(() => devices.every((d) => d.unanswered === 0), 15_000, 'every reading to be answered after the restart');
    await Promise.all(devices.map((d) => d.barrier()));
    for (const d of devices) d.close();
    child.proc.kill('SIGTERM');
    expect(await child.exited).toBe(0);

    const final = await storedIds(env, ids);
    for (const d of devices) {
      const { ids: inDb, rows } = final.get(d.id)!;
      expect([d.id, rows]).toEqual([d.id, d.sent.length]); // each reading once, none twice
      expect(d.sent.every((id) => inDb.has(id))).toBe(true);
    }
    // And no command is left `sent` after the restart.
    const storage = await openStorage(loadConfig(env));
    try {
      expect((await storage.getCommand(cmd.command.id))!.status).toBe('timeout');
    } finally {
      await storage.close();
    }
  }, 60_000);
});
