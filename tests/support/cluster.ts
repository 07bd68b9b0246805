import { ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { createClient } from 'redis';
import { startServer, testDatabaseUrl, TestServer } from './server';

/** Cluster tests need Redis (TEST_REDIS_URL) and a shared PostgreSQL (the postgres jest project). */
export const clusterAvailable = Boolean(process.env.TEST_REDIS_URL && testDatabaseUrl());

/**
 * TEST_REDIS_URL with a database index of this file's own, emptied first. sockpit namespaces its
 * keys and channels by that index, so test files running side by side do not hear each other.
 */
export async function redisDb(index: number, base = process.env.TEST_REDIS_URL!): Promise<string> {
  const u = new URL(base);
  u.pathname = `/${index}`;
  await flushRedis(u.toString());
  return u.toString();
}

export async function flushRedis(url: string): Promise<void> {
  const c = createClient({ url });
  c.on('error', () => {});
  await c.connect();
  try {
    await c.flushDb();
  } finally {
    c.destroy();
  }
}

/** Instances sharing one database and one Redis; short presence leases keep the tests quick. */
export async function startInstances(n: number, redisUrl: string, overrides: Parameters<typeof startServer>[0] = {}): Promise<TestServer[]> {
  const first = await startServer({ redisUrl, presenceTtlS: 1, ...overrides });
  const rest: TestServer[] = [];
  for (let i = 1; i < n; i++) {
    rest.push(await startServer({ redisUrl, presenceTtlS: 1, databaseUrl: first.config.databaseUrl, ...overrides }));
  }
  return [first, ...rest];
}

export async function waitFor<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A throw-away redis-server of our own, so a test can take it away and bring it back. */
export class PrivateRedis {
  private proc: ChildProcess | null = null;
  private constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<PrivateRedis> {
    const r = new PrivateRedis(await freePort());
    await r.up();
    return r;
  }

  async up(): Promise<void> {
    this.proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitFor('redis-server to listen', () => canConnect(this.port));
  }

  async down(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}
