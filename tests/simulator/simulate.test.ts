/**
 * `npx sockpit simulate`: the simulator (server/simulator/) run by the CLI against a test server,
 * seen from a logged-in dashboard socket.
 */
import { cli, killCliChildren, NO_STACK, ok, spawnCli } from '../support/cli';
import { closeAllServers, connectSocket, createUserAndLogin, db, emitAck, nextEvent, startServer } from '../support/server';

/** Every id and name is unique per test: on PostgreSQL the whole file shares one schema. */
let n = 0;
const uniq = (base: string) => `${base}-${++n}`;

afterEach(async () => {
  killCliChildren();
  await closeAllServers();
});

describe('sockpit simulate', () => {
  test('when the simulator runs with a CLI-made token, then it shows online, its telemetry is stored, and togglerele from the dashboard is acked with relay on', async () => {
    const server = await startServer();
    const id = uniq('sim');
    const { token } = JSON.parse(await ok(server, ['device', 'add', id, '--json'])) as { token: string };
    const cookie = await createUserAndLogin(server, { username: uniq('op'), password: 'operator pass 1', role: 'operator' });
    const socket = await connectSocket(server, cookie);

    // Generous: node starting the CLI on a loaded CI machine, plus the simulator's reconnect
    // backoff if its first attempt failed (which the output below then shows).
    const online = nextEvent(socket, 'device:status', (s) => s.deviceId === id && s.online === true, 30_000);
    const sim = spawnCli(server, ['simulate', '--id', id, '--token', token, '--host', '127.0.0.1', '--port', String(server.devicePort), '--interval-ms', '200'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let simOut = '';
    sim.stdout!.setEncoding('utf8').on('data', (d: string) => (simOut += d));
    sim.stderr!.setEncoding('utf8').on('data', (d: string) => (simOut += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => sim.on('exit', (code, signal) => resolve({ code, signal })));

    await online.catch((err: Error) => {
      throw new Error(`${err.message}; simulator said: ${JSON.stringify(simOut)}`);
    });
    if (/disconnected|error/.test(simOut)) console.warn(`simulator needed more than one attempt: ${simOut}`);
    const watched = await emitAck(socket, 'device:watch', { deviceId: id });
    expect(watched).toMatchObject({ ok: true, device: { id, online: true, firmware: expect.stringMatching(/simulator/) } });

    // Telemetry with ids, durably stored (every 200 ms, so a few within a couple of seconds).
    const deadline = Date.now() + 10_000;
    let points = await db(server).telemetryHistory(id, 100);
    while (points.length < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      points = await db(server).telemetryHistory(id, 100);
    }
    expect(points.length).toBeGreaterThanOrEqual(3);
    expect(points.at(-1)!.data).toMatchObject({ relay: false, rssi: expect.any(Number), temp_c: expect.any(Number) });
    // ESP32-like values (server/simulator/values.ts), not the host's free memory.
    expect(points.at(-1)!.data.free_heap as number).toBeGreaterThanOrEqual(150_000);
    expect(points.at(-1)!.data.free_heap as number).toBeLessThanOrEqual(300_000);

    // "Send Action to Node" from a logged-in socket.
    const acked = nextEvent(socket, 'command:status', (c) => c.deviceId === id && ['acked', 'failed', 'timeout', 'expired'].includes(c.status), 15_000);
    const sent = await emitAck(socket, 'command:send', { deviceId: id, action: 'togglerele' });
    expect(sent).toMatchObject({ ok: true, command: { deviceId: id, action: 'togglerele' } });
    const done = await acked;
    expect(done).toMatchObject({ id: sent.command.id, status: 'acked', result: { relay: true } });
    // The next readings report the relay on.
    const relayOn = nextEvent(socket, 'device:telemetry', (p) => p.deviceId === id && p.data?.relay === true, 5_000);
    await relayOn;

    // Stopping the simulator: it exits cleanly and the device goes offline.
    const offline = nextEvent(socket, 'device:status', (s) => s.deviceId === id && s.online === false, 10_000);
    sim.kill('SIGTERM');
    const exit = await exited;
    expect(exit.code === 0 || exit.signal === 'SIGTERM').toBe(true);
    await offline;
    expect(simOut).toMatch(/welcome: online as "sim-\d+"/);
    expect(simOut).toMatch(/togglerele: relay is now ON/);
    socket.close();
  }, 75_000);

  test('when the simulator has a wrong token, then it says so and exits non-zero instead of retrying', async () => {
    const server = await startServer();
    const id = uniq('sim-bad');
    await ok(server, ['device', 'add', id, '--json']);
    const r = await cli(server, ['simulate', '--id', id, '--token', 'wrong-token-0000000000', '--port', String(server.devicePort), '--interval-ms', '200']);
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/refused/);
    expect(r.stderr).not.toMatch(NO_STACK);
  }, 20_000);
});
