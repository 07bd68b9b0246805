/**
 * `npx sockpit apikey add / list / revoke` (docs/api.md, "API keys"), as a child process on the
 * data of a running server: a key made in the terminal works against the API at once.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { addDevice, closeAllServers, startServer, TestServer } from '../support/server';
import { api, expectProblem, user } from './support';

const BIN = path.resolve(__dirname, '..', '..', 'bin', 'sockpit.js');

let server: TestServer;

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await closeAllServers();
});

function sockpit(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, DATA_DIR: server.dataDir, LOG_LEVEL: 'silent' };
  // The server's own database (on PostgreSQL each test gets a fresh one, and this server is the file's).
  if (server.config.databaseUrl) env.DATABASE_URL = server.config.databaseUrl;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('when `apikey add NAME --user USER --role ROLE --json` runs, then it prints {"id","key"} once and the key works as that user at once; list shows it without the key; revoke stops it', async () => {
  const u = await user(server, 'operator', 'cli-ops');
  const { id: deviceId } = await addDevice(server, 'cli-device');
  const add = await sockpit(['apikey', 'add', 'nightly relay', '--user', u.username, '--role', 'operator', '--json']);
  expect(add).toMatchObject({ code: 0, stderr: '' });
  const lines = add.stdout.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  const made = JSON.parse(lines[0]!) as { id: string; key: string };
  expect(Object.keys(made).sort()).toEqual(['id', 'key']);
  expect(made.key).toMatch(/^spk_[A-Za-z0-9_-]{43}$/);

  const sent = await api(server, `/api/v1/devices/${deviceId}/commands`, { key: made.key, body: { action: 'togglerele' } });
  expect(sent.status).toBe(202);
  expect(sent.json.sentBy).toBe('cli-ops');

  const list = await sockpit(['apikey', 'list']);
  expect(list.code).toBe(0);
  expect(list.stdout).toMatch(new RegExp(`${made.id}\\s+nightly relay\\s+cli-ops\\s+operator`));
  expect(list.stdout).not.toContain(made.key);

  const revoke = await sockpit(['apikey', 'revoke', made.id]);
  expect(revoke).toMatchObject({ code: 0 });
  expectProblem(await api(server, '/api/v1/devices', { key: made.key }), 401);
  expect((await sockpit(['apikey', 'revoke', made.id])).code).toBe(1);
}, 60_000);

test('when the CLI is asked for a key above the user\'s role, for an unknown user, or without --role, then it says so in one line, no stack trace', async () => {
  await user(server, 'viewer', 'cli-viewer');
  const high = await sockpit(['apikey', 'add', 'x', '--user', 'cli-viewer', '--role', 'admin']);
  expect(high.code).toBe(1);
  expect(high.stderr).toMatch(/at most the role of its user/);
  const nobody = await sockpit(['apikey', 'add', 'x', '--user', 'nobody', '--role', 'viewer']);
  expect(nobody.code).toBe(1);
  expect(nobody.stderr).toMatch(/No user "nobody"/);
  const usage = await sockpit(['apikey', 'add', 'x', '--user', 'cli-viewer']);
  expect(usage.code).toBe(2);
  expect(usage.stderr).toMatch(/--role/);
  for (const r of [high, nobody, usage]) expect(r.stderr).not.toMatch(/\n\s+at /);
}, 60_000);
