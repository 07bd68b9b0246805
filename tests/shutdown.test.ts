import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../server/config';
import { openStorage } from '../server/storage';
import { RawDevice } from './support/device';
import { testDatabaseUrl } from './support/server';

const ROOT = path.resolve(__dirname, '..');

function startMain(env: Record<string, string>): Promise<{ proc: ChildProcess; httpPort: number; devicePort: number }> {
  const proc = spawn(process.execPath, [path.join(ROOT, 'dist', 'main.js')], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', DEVICE_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      for (const line of out.split('\n')) {
        if (!line.includes('sockpit listening')) continue;
        const j = JSON.parse(line);
        proc.stdout!.removeAllListeners('data');
        proc.stdout!.resume();
        resolve({ proc, httpPort: j.httpPort, devicePort: j.devicePort });
      }
    });
    proc.on('exit', (code) => reject(new Error(`server exited early (${code})`)));
  });
}

const children = new Set<ChildProcess>();
afterEach(() => {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
});

describe('graceful shutdown (SIGTERM)', () => {
  test('when SIGTERM arrives under load, then every reading received is stored, devices hear goodbye and the exit code is 0', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-term-'));
    const env: Record<string, string> = { DATA_DIR: dataDir, LOG_LEVEL: 'info', TELEMETRY_BATCH_MS: '200' };
    const db = testDatabaseUrl();
    if (db) env.DATABASE_URL = db;
    const out = execFileSync(process.execPath, [path.join(ROOT, 'bin', 'sockpit.js'), 'device', 'add', 'term-1', '--json'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const { token } = JSON.parse(out.trim().split('\n').pop()!);
    const { proc, devicePort } = await startMain(env);
    const device = await RawDevice.hello(devicePort, 'term-1', token);
    const N = 150;
    for (let i = 0; i < N; i++) device.send({ type: 'telemetry', id: `1-${i}`, data: { i } });
    device.send({ type: 'ping' });
    await device.next((m) => m.type === 'pong');
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
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
