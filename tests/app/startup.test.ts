/**
 * Start-up failures of the operator's making (docs/deploying.md): one clear line naming what to
 * change, never a stack trace, and a second server on the same SQLite data stops before it
 * touches anything.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PID_FILE } from '../../server/storage/data-dir-lock';
import { childEnv, ensureBuilt, killChildren, ROOT, startChild } from '../support/child';

const MAIN = path.join(ROOT, 'dist', 'main.js');

/** A SQLite server's environment (also in the PostgreSQL project). */
function sqliteEnv(more: Record<string, string> = {}): Record<string, string> {
  const env = childEnv(more);
  delete env.DATABASE_URL;
  return env;
}

/** Runs the server until it exits (for settings that stop it); its exit code and stderr. */
function startFails(env: Record<string, string>): { status: number | null; stderr: string } {
  const base = { ...process.env };
  delete base.DATABASE_URL;
  const res = spawnSync(process.execPath, [MAIN], { env: { ...base, ...env }, encoding: 'utf8', timeout: 20_000 });
  return { status: res.status, stderr: res.stderr };
}

beforeAll(ensureBuilt);
afterEach(killChildren);

describe('start-up', () => {
  test('when a second server starts on the DATA_DIR a running one uses, then it stops with one line naming that process, and the first goes on', async () => {
    const env = sqliteEnv();
    const first = await startChild(env);
    expect(fs.readFileSync(path.join(env.DATA_DIR!, PID_FILE), 'utf8').trim()).toBe(String(first.pid));
    // Other ports, the same data.
    const second = startFails({ ...env, PORT: '0', DEVICE_PORT: '0' });
    expect(second.status).toBe(1);
    expect(second.stderr.trim().split('\n')).toEqual([`sockpit: another sockpit server (pid ${first.pid}) is using DATA_DIR ${env.DATA_DIR}; stop it first (if none is running, delete ${path.join(env.DATA_DIR!, PID_FILE)})`]);
    expect((await fetch(first.baseUrl + '/healthz')).status).toBe(200);
    // A clean stop gives the data back.
    first.proc.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(fs.existsSync(path.join(env.DATA_DIR!, PID_FILE))).toBe(false);
  });

  test('when the pid file is left by a process that is gone (SIGKILL), then the next server takes the data over', async () => {
    const env = sqliteEnv();
    const first = await startChild(env);
    first.proc.kill('SIGKILL');
    await first.exited;
    const again = await startChild(env);
    expect(fs.readFileSync(path.join(env.DATA_DIR!, PID_FILE), 'utf8').trim()).toBe(String(again.pid));
  });

  test.each([
    ['DATA_DIR is a file', () => ({ DATA_DIR: '/etc/passwd' }), /^sockpit: DATA_DIR: cannot create \/etc\/passwd: /],
    ['HOST is not an address of this machine', () => ({ HOST: '10.255.255.1' }), /^sockpit: HOST: cannot listen on 10\.255\.255\.1 /],
    ['two listeners share a port', () => ({ DEVICE_PORT: '23999', MQTT_PORT: '23999' }), /^sockpit: bad setting MQTT_PORT: is 23999, the same port as DEVICE_PORT/],
  ])('when %s, then start-up stops with one line naming the setting', (_what, more, line) => {
    const r = startFails(sqliteEnv(more()));
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(line);
  });

  const pg = process.env.TEST_DATABASE_URL;
  (pg ? test : test.skip)('when DATABASE_URL names a user the database does not know, then start-up stops with one line naming DATABASE_URL', () => {
    const url = new URL(pg!);
    url.username = 'nobody_here';
    const r = startFails({ ...sqliteEnv(), DATABASE_URL: url.toString() });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^sockpit: DATABASE_URL: cannot use the database at /);
  });
});
