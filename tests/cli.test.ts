/**
 * The CLI (SPEC §2): `node bin/sockpit.js …` as a child process on the same data as a running
 * server (DATA_DIR, and DATABASE_URL when the suite runs on PostgreSQL).
 */
import { ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { RawDevice } from './support/device';
import {
  closeAllServers,
  connectSocket,
  createUserAndLogin,
  emitAck,
  login,
  nextEvent,
  startServer,
  testDatabaseUrl,
  TestServer,
} from './support/server';

const ROOT = path.resolve(__dirname, '..');
const BIN = path.join(ROOT, 'bin', 'sockpit.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment a user would give the CLI: the server's data, cheap bcrypt, nothing inherited. */
function cliEnv(server: TestServer, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DATA_DIR: server.dataDir,
    BCRYPT_ROUNDS: '4',
    LOG_LEVEL: 'silent',
    ...extra,
  };
  const db = testDatabaseUrl();
  if (db) env.DATABASE_URL = db;
  return env;
}

const children = new Set<ChildProcess>();

/** Runs `sockpit ARGS`; `input` is piped to stdin (stdin is never a TTY here). */
function cli(server: TestServer, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: cliEnv(server, opts.env), stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => {}); // the CLI may exit before reading stdin
    child.stdin.end(opts.input ?? '');
  });
}

/** `cli` that must succeed. */
async function ok(server: TestServer, args: string[], opts: { input?: string } = {}): Promise<string> {
  const r = await cli(server, args, opts);
  if (r.code !== 0) throw new Error(`sockpit ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  expect(r.stderr).toBe('');
  return r.stdout;
}

/** A hello with that token: 'welcome' or 'unauthorized' (and then the connection is closed). */
async function helloResult(server: TestServer, id: string, token: string): Promise<'welcome' | 'unauthorized'> {
  const d = await RawDevice.connect(server.devicePort);
  try {
    d.send({ type: 'hello', device: id, token });
    const m = await d.next((x) => x.type === 'welcome' || x.type === 'error');
    if (m.type === 'welcome') return 'welcome';
    expect(m).toMatchObject({ type: 'error', error: 'unauthorized' });
    await d.waitClosed();
    return 'unauthorized';
  } finally {
    d.close();
  }
}

const NO_STACK = /^\s+at .+\(.*\)$|^\s+at \S+:\d+:\d+$|\n\s+at /m;

/** Every id and name is unique per test: on PostgreSQL the whole file shares one schema. */
let n = 0;
const uniq = (base: string) => `${base}-${++n}`;

afterEach(async () => {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  await closeAllServers();
});

describe('sockpit device …', () => {
  test('when `device add ID --json` runs, then it prints exactly one JSON line {id, token} and the token opens a hello on the running server', async () => {
    const server = await startServer();
    const id = uniq('esp-json');
    const out = await ok(server, ['device', 'add', id, '--json']);
    expect(out.endsWith('\n')).toBe(true);
    const lines = out.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(Object.keys(parsed).sort()).toEqual(['id', 'token']);
    expect(parsed.id).toBe(id);
    expect(parsed.token).toEqual(expect.stringMatching(/^\S{16,}$/));
    expect(await helloResult(server, id, parsed.token as string)).toBe('welcome');
    expect(await helloResult(server, id, 'not-the-token-' + String(parsed.token))).toBe('unauthorized');
  });

  test('when `device add` runs without --json, then it prints the token once and a ready simulate line', async () => {
    const server = await startServer();
    const id = uniq('esp-text');
    const out = await ok(server, ['device', 'add', id, '--name', 'Greenhouse sensor']);
    const sim = new RegExp(`npx sockpit simulate --id ${id} --token (\\S+)`).exec(out);
    expect(sim).not.toBeNull();
    const token = sim![1]!;
    // The token stands on its own line (to copy), and the simulate line repeats it.
    expect(out.split('\n').map((l) => l.trim())).toContain(token);
    expect(await helloResult(server, id, token)).toBe('welcome');
    expect((await server.app.storage.getDevice(id))!.name).toBe('Greenhouse sensor');
  });

  test('when `device list` runs, then it shows each device with its name, and a device that said hello with its firmware', async () => {
    const server = await startServer();
    const a = uniq('esp-list-a');
    const b = uniq('esp-list-b');
    const { token } = JSON.parse(await ok(server, ['device', 'add', a, '--json'])) as { token: string };
    await ok(server, ['device', 'add', b, '--name', 'Cellar', '--json']);
    const dev = await RawDevice.hello(server.devicePort, a, token); // firmware "test/1"
    dev.close();
    const out = await ok(server, ['device', 'list']);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+NAME\s+LAST SEEN\s+FIRMWARE$/);
    const rowA = lines.find((l) => l.startsWith(a + ' '));
    const rowB = lines.find((l) => l.startsWith(b + ' '));
    expect(rowA).toMatch(/test\/1$/);
    expect(rowA).toMatch(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
    expect(rowB).toContain('Cellar');
  });

  test('when `device token ID` rotates the token, then the old token is refused and the new one accepted', async () => {
    const server = await startServer();
    const id = uniq('esp-rot');
    const { token: oldToken } = JSON.parse(await ok(server, ['device', 'add', id, '--json'])) as { token: string };
    expect(await helloResult(server, id, oldToken)).toBe('welcome');

    const out = await ok(server, ['device', 'token', id]);
    const newToken = out.split('\n').map((l) => l.trim()).find((l) => /^\S{16,}$/.test(l));
    expect(newToken).toBeDefined();
    expect(newToken).not.toBe(oldToken);
    expect(await helloResult(server, id, oldToken)).toBe('unauthorized');
    expect(await helloResult(server, id, newToken!)).toBe('welcome');

    const missing = await cli(server, ['device', 'token', uniq('no-such-device')]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr.trim()).toMatch(/^sockpit: No device "no-such-device-\d+"\.$/);
  });

  test('when `device remove ID` runs, then the device is gone from the list and its token is refused', async () => {
    const server = await startServer();
    const id = uniq('esp-rm');
    const { token } = JSON.parse(await ok(server, ['device', 'add', id, '--json'])) as { token: string };
    const out = await ok(server, ['device', 'remove', id]);
    expect(out).toContain(id);
    expect(await ok(server, ['device', 'list'])).not.toContain(id);
    expect(await server.app.storage.getDevice(id)).toBeFalsy();
    expect(await helloResult(server, id, token)).toBe('unauthorized');

    const again = await cli(server, ['device', 'remove', id]);
    expect(again.code).not.toBe(0);
    expect(again.stderr.trim()).toBe(`sockpit: No device "${id}".`);
  });

  test('when the CLI rotates the token of a connected device or removes one, then the running server drops that connection at its next check', async () => {
    const server = await startServer();
    const rotated = uniq('esp-live-rot');
    const removed = uniq('esp-live-rm');
    const kept = uniq('esp-live-kept');
    const tokens: Record<string, string> = {};
    for (const id of [rotated, removed, kept]) tokens[id] = (JSON.parse(await ok(server, ['device', 'add', id, '--json'])) as { token: string }).token;
    const [a, b, c] = await Promise.all([rotated, removed, kept].map((id) => RawDevice.hello(server.devicePort, id, tokens[id]!)));

    await ok(server, ['device', 'token', rotated]);
    await ok(server, ['device', 'remove', removed]);
    // The CLI is another process: the server notices on its periodic check (every 30 s); run it now.
    await server.app.hub.revalidate();

    expect(await a!.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized' });
    expect(await b!.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized' });
    await Promise.all([a!.waitClosed(), b!.waitClosed()]);
    // The untouched device stays connected and still gets answers.
    c!.send({ type: 'ping' });
    expect(await c!.next((m) => m.type === 'pong')).toEqual({ type: 'pong' });
    expect(c!.closed).toBe(false);
    c!.close();
  });
});

describe('sockpit user …', () => {
  test('when a user is added, listed, given a new password and removed with piped passwords, then the login form follows each step', async () => {
    const server = await startServer();
    // An owner exists, as after setup (with no user at all, /login leads to /setup).
    await createUserAndLogin(server, { username: uniq('owner'), password: 'owner password 1', role: 'admin' });
    const name = uniq('alice');
    const first = 'first pass 123';
    const second = 'second pass 456';

    const added = await ok(server, ['user', 'add', name, '--role', 'operator'], { input: `${first}\n` });
    expect(added.trim()).toBe(`User ${name} added with role operator.`);
    expect((await server.app.storage.getUserByName(name))!.role).toBe('operator');
    expect(await login(server, name, first)).toMatch(/sockpit\.sid=/);

    const list = (await ok(server, ['user', 'list'])).trimEnd().split('\n');
    expect(list[0]).toMatch(/^NAME\s+ROLE\s+CREATED$/);
    expect(list.find((l) => l.startsWith(name + ' '))).toMatch(new RegExp(`^${name}\\s+operator\\s+\\d{4}-\\d\\d-\\d\\d`));

    const changed = await ok(server, ['user', 'passwd', name], { input: `${second}\n` });
    expect(changed.trim()).toBe(`Password of ${name} changed.`);
    await expect(login(server, name, first)).rejects.toThrow(/status 401/);
    expect(await login(server, name, second)).toMatch(/sockpit\.sid=/);

    const removed = await ok(server, ['user', 'remove', name]);
    expect(removed.trim()).toBe(`User ${name} removed.`);
    expect(await ok(server, ['user', 'list'])).not.toMatch(new RegExp(`^${name}\\s`, 'm'));
    await expect(login(server, name, second)).rejects.toThrow(/status 401/);
  });

  test('when the password is piped with a Windows line ending, then only the first line counts', async () => {
    const server = await startServer();
    const name = uniq('crlf');
    await ok(server, ['user', 'add', name, '--role', 'viewer'], { input: 'windows pass 1\r\nignored second line\r\n' });
    expect(await login(server, name, 'windows pass 1')).toMatch(/sockpit\.sid=/);
  });

  test('when the only admin would be removed, then the CLI refuses with one clear line', async () => {
    const server = await startServer();
    const name = uniq('boss');
    await ok(server, ['user', 'add', name, '--role', 'admin'], { input: 'boss password 1\n' });
    // On PostgreSQL earlier tests of this file may have left other admins; only check when alone.
    if ((await server.app.storage.countAdmins()) !== 1) return;
    const r = await cli(server, ['user', 'remove', name]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^sockpit: .*admin/);
    expect(await server.app.storage.getUserByName(name)).toBeTruthy();
  });
});

describe('bad usage', () => {
  const cases: Array<{ when: string; args: string[]; input?: string; env?: Record<string, string>; message: RegExp }> = [
    { when: 'an unknown command', args: ['frobnicate'], message: /^sockpit: unknown command "frobnicate"$/ },
    { when: 'an unknown device subcommand', args: ['device', 'explode'], message: /^sockpit: unknown device command "explode"$/ },
    { when: 'user add without --role', args: ['user', 'add', 'bob'], input: 'bob password 1\n', message: /^sockpit: user add needs --role admin\|operator\|viewer$/ },
    { when: 'user add with a role that does not exist', args: ['user', 'add', 'bob', '--role', 'superuser'], input: 'bob password 1\n', message: /^sockpit: Role must be one of admin, operator, viewer\.$/ },
    { when: 'an 80-byte password', args: ['user', 'add', 'bob', '--role', 'operator'], input: 'x'.repeat(80) + '\n', message: /^sockpit: Password must be at most 72 bytes\.$/ },
    { when: 'a too short password', args: ['user', 'add', 'bob', '--role', 'operator'], input: 'short\n', message: /^sockpit: Password must be at least 8 characters\.$/ },
    { when: 'no password on stdin', args: ['user', 'add', 'bob', '--role', 'operator'], input: '', message: /^sockpit: Password must be at least 8 characters\.$/ },
    { when: 'an option the command does not know', args: ['device', 'list', '--colour'], message: /^sockpit: .*--colour/ },
    { when: 'simulate without a token', args: ['simulate', '--id', 'x'], message: /^sockpit: simulate needs --id and --token$/ },
    { when: 'a bad setting in the environment', args: ['device', 'list'], env: { LOG_LEVEL: 'loud' }, message: /^sockpit: bad setting LOG_LEVEL: / },
  ];

  test.each(cases)('when the CLI gets $when, then it exits non-zero with one clear line on stderr and no stack trace', async ({ args, input, env, message }) => {
    const server = await startServer();
    const r = await cli(server, args, { input, env });
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBeNull();
    const [head, ...rest] = r.stderr.split('\n');
    expect(head).toMatch(message);
    // After the message the CLI may print its usage, separated by a blank line; nothing else.
    if (rest.join('').trim() !== '') {
      expect(rest[0]).toBe('');
      expect(rest[1]).toMatch(/^Usage: sockpit/);
    }
    expect(r.stderr).not.toMatch(NO_STACK);
    expect(r.stderr).not.toMatch(/Error:|node:internal/);
    expect(r.stdout).toBe('');
    expect(await server.app.storage.getUserByName('bob')).toBeFalsy();
  });
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
    const sim = spawn(
      process.execPath,
      [BIN, 'simulate', '--id', id, '--token', token, '--host', '127.0.0.1', '--port', String(server.devicePort), '--interval-ms', '200'],
      { cwd: ROOT, env: cliEnv(server), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.add(sim);
    let simOut = '';
    sim.stdout.setEncoding('utf8').on('data', (d: string) => (simOut += d));
    sim.stderr.setEncoding('utf8').on('data', (d: string) => (simOut += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => sim.on('exit', (code, signal) => resolve({ code, signal })));

    await online.catch((err: Error) => {
      throw new Error(`${err.message}; simulator said: ${JSON.stringify(simOut)}`);
    });
    if (/disconnected|error/.test(simOut)) console.warn(`simulator needed more than one attempt: ${simOut}`);
    const watched = await emitAck(socket, 'device:watch', { deviceId: id });
    expect(watched).toMatchObject({ ok: true, device: { id, online: true, firmware: expect.stringMatching(/simulator/) } });

    // Telemetry with ids, durably stored (every 200 ms, so a few within a couple of seconds).
    const deadline = Date.now() + 10_000;
    let points = await server.app.storage.telemetryHistory(id, 100);
    while (points.length < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      points = await server.app.storage.telemetryHistory(id, 100);
    }
    expect(points.length).toBeGreaterThanOrEqual(3);
    expect(points.at(-1)!.data).toMatchObject({ relay: false, rssi: expect.any(Number), temp_c: expect.any(Number) });

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
    children.delete(sim);
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
