/**
 * The real entry point (`node dist/main.js`) as a child process, for the cases that need a process
 * of its own: RSS measured from /proc, kill -9, SIGTERM.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testDatabaseUrl } from './server';

export const ROOT = path.resolve(__dirname, '..', '..');
const MAIN = path.join(ROOT, 'dist', 'main.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** Builds dist/ when it is missing or older than server/ (`npm ci` builds it; edits may not have). */
export function ensureBuilt(): void {
  const built = fs.existsSync(MAIN) ? fs.statSync(MAIN).mtimeMs : 0;
  if (built >= newestMtime(path.join(ROOT, 'server'))) return;
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs')], { cwd: ROOT, stdio: 'ignore' });
}

/** Environment of a child server: a fresh DATA_DIR, ephemeral ports, and the test database when there is one. */
export function childEnv(more: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-sec-')),
    HOST: '127.0.0.1',
    PORT: '0',
    DEVICE_PORT: '0',
    // Its own MQTT port (the machine's broker has 1883); TLS listeners only where a test asks.
    MQTT_PORT: '0',
    DEVICE_TLS_PORT: 'off',
    MQTT_TLS_PORT: 'off',
    LOG_LEVEL: 'info',
    BCRYPT_ROUNDS: '4',
  };
  const db = testDatabaseUrl();
  if (db) env.DATABASE_URL = db;
  return { ...env, ...more };
}

/** Runs the CLI against the same data (e.g. `device add ID --json`). */
export function cliSync(env: Record<string, string>, args: string[], input?: string): string {
  return execFileSync(process.execPath, [path.join(ROOT, 'bin', 'sockpit.js'), ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    input,
  });
}

export function addDeviceCli(env: Record<string, string>, id: string): string {
  return JSON.parse(cliSync(env, ['device', 'add', id, '--json']).trim().split('\n').pop()!).token;
}

export interface Child {
  proc: ChildProcess;
  pid: number;
  httpPort: number;
  devicePort: number;
  baseUrl: string;
  /** Log lines (parsed JSON) printed so far. */
  logs: Record<string, unknown>[];
  /** Resident set size now, in bytes (VmRSS). */
  rss(): number;
  exited: Promise<number | null>;
}

const children = new Set<ChildProcess>();

/** Starts `node dist/main.js` and resolves once it logs `sockpit listening`. */
export function startChild(env: Record<string, string>, devicePort?: number): Promise<Child> {
  const proc = spawn(process.execPath, [MAIN], {
    env: { ...process.env, ...env, ...(devicePort ? { DEVICE_PORT: String(devicePort) } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  const logs: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    let buf = '';
    let started = false;
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let j: Record<string, unknown>;
        try {
          j = JSON.parse(line);
        } catch {
          continue;
        }
        logs.push(j);
        if (!started && j.msg === 'sockpit listening') {
          started = true;
          const httpPort = j.httpPort as number;
          resolve({
            proc,
            pid: proc.pid!,
            httpPort,
            devicePort: j.devicePort as number,
            baseUrl: `http://127.0.0.1:${httpPort}`,
            logs,
            rss: () => rssOf(proc.pid!),
            exited,
          });
        }
      }
    });
    void exited.then((code) => {
      if (!started) reject(new Error(`server exited early (${code}): ${stderr}`));
    });
  });
}

export function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status);
  return kb ? Number(kb[1]) * 1024 : 0;
}

/** SIGKILLs every child still running; call in afterEach/afterAll. */
export function killChildren(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `fn` is true or the time is up. */
export async function until(fn: () => boolean | Promise<boolean>, timeoutMs: number, what: string, stepMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(stepMs);
  }
}
