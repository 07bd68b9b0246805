/**
 * examples/thesis/: the thesis's `client.py` (Python `websockets`), changed only in its URL, against
 * a real sockpit in anonymous mode (examples/thesis/README.md): it connects and shows online over
 * WebSocket, a command from the dashboard reaches it (it prints), and what it sends back reaches
 * the dashboard and storage.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { until } from '../support/child';
import { killPython, runPython, type PythonProcess } from '../support/python';
import { closeAllServers, connectSocket, createUserAndLogin, db, emitAck, nextEvent, startServer, TestServer, type ClientSocket } from '../support/server';

const CLIENT = path.resolve(__dirname, '../../examples/thesis/client.py');
/** The URL in the example, as the README tells people to run it. */
const EXAMPLE_URL = 'ws://localhost:3000/device?device=thesis-node';

afterEach(async () => {
  killPython();
  await closeAllServers();
});

/** The example with the test server's address in place of its URL: the one change the README describes. */
function clientFor(url: string): string {
  const source = fs.readFileSync(CLIENT, 'utf8');
  expect(source.split(EXAMPLE_URL).length).toBe(2);
  // The URL is the only address in it.
  expect(source.match(/wss?:\/\/[^"]*/g)).toEqual([EXAMPLE_URL]);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'thesis-')), 'client.py');
  fs.writeFileSync(file, source.replace(EXAMPLE_URL, url));
  return file;
}

type Status = { deviceId: string; online: boolean; transport?: string | null };

async function start(): Promise<{ server: TestServer; socket: ClientSocket }> {
  const server = await startServer({ allowAnonymousDevices: true });
  const socket = await connectSocket(server, await createUserAndLogin(server));
  return { server, socket };
}

describe("the thesis's client.py on sockpit (anonymous mode)", () => {
  test('when client.py connects to /device?device=thesis-node, then it shows online over websocket; Send Action to Node makes it print and send its values, which reach the dashboard and storage', async () => {
    const { server, socket } = await start();
    const online = nextEvent(socket, 'device:status', (s: Status) => s.deviceId === 'thesis-node' && s.online);
    const py: PythonProcess = runPython(['websockets'], [clientFor(server.wsUrl + '?device=thesis-node')]);
    expect(await online).toMatchObject({ transport: 'websocket' });
    const { devices } = await emitAck(socket, 'fleet:list', {});
    expect(devices.find((d: { id: string }) => d.id === 'thesis-node')).toMatchObject({ online: true, transport: 'websocket' });

    // The dashboard's button: togglerele.
    const values = nextEvent(socket, 'device:telemetry', (p: { deviceId: string }) => p.deviceId === 'thesis-node');
    const res = await emitAck(socket, 'command:send', { deviceId: 'thesis-node', action: 'togglerele' });
    expect(res.ok).toBe(true);
    await py.line('Toggle a Rele');
    await py.line('Send measurements to Server');
    expect(await values).toMatchObject({ deviceId: 'thesis-node', data: { type: 'node', msg: 'values' } });
    await until(async () => (await db(server).countTelemetry('thesis-node')) === 1, 3000, 'the values to be stored');
    expect((await db(server).telemetryHistory('thesis-node', 5)).map((p) => p.data)).toEqual([{ type: 'node', msg: 'values' }]);
    // The thesis's node does not ack: the command was written to it and waits (then times out).
    expect((await db(server).getCommand(res.command.id))!.status).toBe('sent');

    // The other action it knows.
    await emitAck(socket, 'command:send', { deviceId: 'thesis-node', action: 'changesetting', params: { interval_ms: 5000 } });
    await py.line('changesetting');
    expect(py.stderr).toBe('');

    // It stops: the device goes offline.
    const offline = nextEvent(socket, 'device:status', (s: Status) => s.deviceId === 'thesis-node' && !s.online);
    py.kill();
    await offline;
    socket.close();
  });

  test('when client.py connects to /device without ?device=, then it is the anonymous device anon-<address> and works the same', async () => {
    const { server, socket } = await start();
    const online = nextEvent(socket, 'device:status', (s: Status) => s.deviceId === 'anon-127.0.0.1' && s.online);
    const py = runPython(['websockets'], [clientFor(server.wsUrl)]);
    expect(await online).toMatchObject({ transport: 'websocket' });
    await emitAck(socket, 'command:send', { deviceId: 'anon-127.0.0.1', action: 'togglerele' });
    await py.line('Toggle a Rele');
    await until(async () => (await db(server).countTelemetry('anon-127.0.0.1')) === 1, 3000, 'the values to be stored');
    socket.close();
  });

  test('when anonymous devices are off, then client.py (no token, no hello) is not admitted and stores nothing', async () => {
    const server = await startServer({ allowAnonymousDevices: false });
    const py = runPython(['websockets'], [clientFor(server.wsUrl + '?device=thesis-node')]);
    // It connects and waits; the server asks for a hello within 10 s, and client.py never sends one.
    expect(await py.exited).not.toBe(0);
    expect(py.stderr).toMatch(/ConnectionClosed|1008/);
    expect(await db(server).getDevice('thesis-node')).toBeNull();
  }, 20_000);
});
