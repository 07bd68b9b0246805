/**
 * `npx sockpit simulate --transport tcp|ws|mqtt [--tls]`: the simulator reaches the server over
 * each transport, with and without TLS, and answers Send Action to Node from the dashboard.
 */
import { killCliChildren, ok, spawnCli } from '../support/cli';
import { closeAllServers, connectSocket, createUserAndLogin, emitAck, nextEvent, startServer, TestServer } from '../support/server';

let n = 0;
const uniq = (base: string) => `${base}-${++n}`;

afterEach(async () => {
  killCliChildren();
  await closeAllServers();
});

const cases: { args: string[]; transport: 'tcp' | 'websocket' | 'mqtt'; port: (s: TestServer) => number }[] = [
  { args: ['--transport', 'tcp'], transport: 'tcp', port: (s) => s.devicePort },
  { args: ['--transport', 'ws'], transport: 'websocket', port: (s) => Number(new URL(s.baseUrl).port) },
  { args: ['--transport', 'mqtt'], transport: 'mqtt', port: (s) => s.mqttPort },
  { args: ['--transport', 'tcp', '--tls'], transport: 'tcp', port: (s) => s.tlsPorts.tcp },
  { args: ['--transport', 'ws', '--tls'], transport: 'websocket', port: (s) => s.tlsPorts.https },
  { args: ['--transport', 'mqtt', '--tls'], transport: 'mqtt', port: (s) => s.tlsPorts.mqtt },
];

describe('sockpit simulate on every transport', () => {
  test.each(cases)('when the simulator runs with $args, then it shows online over $transport and togglerele from the dashboard is acked', async ({ args, transport, port }) => {
    const server = await startServer({ deviceTlsPort: 0, mqttTlsPort: 0, httpsPort: 0 });
    const id = uniq('sim');
    const { token } = JSON.parse(await ok(server, ['device', 'add', id, '--json'])) as { token: string };
    const cookie = await createUserAndLogin(server, { username: uniq('op'), password: 'operator pass 1', role: 'operator' });
    const socket = await connectSocket(server, cookie);
    const online = nextEvent(socket, 'device:status', (s) => s.deviceId === id && s.online === true, 30_000);
    // --token= keeps a token that starts with "-" from reading as an option. Over TLS the
    // simulator trusts the server's own CA from DATA_DIR (the CLI runs with the server's settings).
    const sim = spawnCli(server, ['simulate', '--id', id, `--token=${token}`, '--host', '127.0.0.1', '--port', String(port(server)), '--interval-ms', '300', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    sim.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    sim.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const status = await online.catch((err: Error) => {
      throw new Error(`${err.message}; simulator said: ${JSON.stringify(out)}`);
    });
    expect(status.transport).toBe(transport);
    const acked = nextEvent(socket, 'command:status', (c) => c.deviceId === id && c.status === 'acked', 15_000);
    expect(await emitAck(socket, 'command:send', { deviceId: id, action: 'togglerele' })).toMatchObject({ ok: true });
    expect((await acked).result).toEqual({ relay: true });
    expect(out).toMatch(/welcome: online as/);
    socket.close();
  });
});
