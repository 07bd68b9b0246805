/**
 * The CLI as a user runs it: `node bin/sockpit.js …` as a child process on the same data as a
 * running test server (DATA_DIR, and DATABASE_URL when the suite runs on PostgreSQL).
 */
import { ChildProcess, spawn, SpawnOptions } from 'node:child_process';
import path from 'node:path';
import { testDatabaseUrl, TestServer } from './server';

export const ROOT = path.resolve(__dirname, '..', '..');
export const BIN = path.join(ROOT, 'bin', 'sockpit.js');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A stack trace line, which no CLI output may contain. */
export const NO_STACK = /^\s+at .+\(.*\)$|^\s+at \S+:\d+:\d+$|\n\s+at /m;

/** The environment a user would give the CLI: the server's data, cheap bcrypt, nothing inherited. */
export function cliEnv(server: TestServer, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
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

/** Starts `sockpit ARGS` and leaves it running (killed by killCliChildren). */
export function spawnCli(server: TestServer, args: string[], opts: SpawnOptions & { extraEnv?: Record<string, string> } = {}): ChildProcess {
  const { extraEnv, ...rest } = opts;
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: cliEnv(server, extraEnv), ...rest });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Runs `sockpit ARGS` to its end; `input` is piped to stdin (stdin is never a TTY here). */
export function cli(server: TestServer, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(server, args, { extraEnv: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin!.on('error', () => {}); // the CLI may exit before reading stdin
    child.stdin!.end(opts.input ?? '');
  });
}

/** `cli` that must succeed, with nothing on stderr; returns its stdout. */
export async function ok(server: TestServer, args: string[], opts: { input?: string } = {}): Promise<string> {
  const r = await cli(server, args, opts);
  if (r.code !== 0) throw new Error(`sockpit ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  expect(r.stderr).toBe('');
  return r.stdout;
}

/** SIGKILLs every CLI process still running; call in afterEach. */
export function killCliChildren(): void {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
}
