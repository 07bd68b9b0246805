/**
 * The CLI (docs/deploying.md): `node bin/sockpit.js …` as a child process on the same data as a
 * running server (tests/support/cli.ts).
 */
import { RawDevice } from '../support/device';
import { cli, killCliChildren, NO_STACK, ok } from '../support/cli';
import { closeAllServers, createUserAndLogin, db, login, startServer, TestServer } from '../support/server';

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

/** Every id and name is unique per test: on PostgreSQL the whole file shares one schema. */
let n = 0;
const uniq = (base: string) => `${base}-${++n}`;

afterEach(async () => {
  killCliChildren();
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
    const sim = new RegExp(`npx sockpit simulate --id ${id} --token[= ](\\S+)`).exec(out);
    expect(sim).not.toBeNull();
    const token = sim![1]!;
    // The token stands on its own line (to copy), and the simulate line repeats it.
    expect(out.split('\n').map((l) => l.trim())).toContain(token);
    expect(await helloResult(server, id, token)).toBe('welcome');
    expect((await db(server).getDevice(id))!.name).toBe('Greenhouse sensor');
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
    expect(await db(server).getDevice(id)).toBeFalsy();
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
    await server.app.core.revalidate();

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
    expect((await db(server).getUserByName(name))!.role).toBe('operator');
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
    if ((await db(server).countAdmins()) !== 1) return;
    const r = await cli(server, ['user', 'remove', name]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^sockpit: .*admin/);
    expect(await db(server).getUserByName(name)).toBeTruthy();
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
    { when: 'device remove with two ids', args: ['device', 'remove', 'k1', 'k2'], message: /^sockpit: unexpected argument "k2" for device remove$/ },
    { when: 'device add with a name not given as --name', args: ['device', 'add', 'k1', 'Kitchen'], message: /^sockpit: unexpected argument "Kitchen" for device add \(a name goes in --name "TEXT"\)$/ },
    { when: 'user add with two names', args: ['user', 'add', 'bob', 'carol', '--role', 'viewer'], input: 'bob password 1\n', message: /^sockpit: unexpected argument "carol" for user add$/ },
    { when: 'tls ca with more words', args: ['tls', 'ca', 'extra'], message: /^sockpit: unexpected argument "extra" for tls ca$/ },
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
    expect(await db(server).getUserByName('bob')).toBeFalsy();
  });
});
