import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { io as ioClient, Socket as ClientSocket } from 'socket.io-client';
import { App, createApp } from '../../server/app';
import type { ListenerStatus } from '../../server/devices/listeners';
import { addUser } from '../../server/auth/users';
import { Config, loadConfig } from '../../server/config';
import { addDevice as addDeviceToStorage } from '../../server/devices/admin';
import { openStorage, type Role, type Storage } from '../../server/storage';

export type { ClientSocket };

export interface TestServer {
  app: App;
  config: Config;
  baseUrl: string;
  devicePort: number;
  /** `ws://…/device`, where WebSocket devices connect. */
  wsUrl: string;
  /** The MQTT listener's port (tests get one of their own; the machine's broker has 1883). */
  mqttPort: number;
  /** The TLS listeners' ports, 0 when off (ask for them with deviceTlsPort/mqttTlsPort/httpsPort: 0). */
  tlsPorts: { tcp: number; mqtt: number; https: number };
  dataDir: string;
  close(): Promise<void>;
  /** Closes this server and starts a new one on the same data (and the same device port). */
  restart(overrides?: Partial<Config>): Promise<TestServer>;
}

const open = new Set<TestServer>();

/**
 * Database engine for this run: PostgreSQL when TEST_DATABASE_URL is set, a fresh database for
 * each test (see tests/support/pg.ts); null on SQLite. A server restarted on the same data dir
 * keeps the database it started with.
 */
export function testDatabaseUrl(): string | null {
  return process.env.SOCKPIT_TEST_DATABASE_URL ?? null;
}

/** On PostgreSQL a data dir keeps the database it started with, as on SQLite it keeps its file. */
const databaseOf = new Map<string, string | null>();

/**
 * A test server's settings: every listener on an ephemeral port (TLS ones off), its own data dir,
 * quiet logs and cheap bcrypt. A test that builds the app itself uses this too, so that no default
 * port (7443, 8883, …) is taken by two test files at once.
 */
export function testConfig(overrides: Partial<Config> = {}): Config {
  const dataDir = overrides.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-test-'));
  const config: Config = {
    ...loadConfig({}),
    host: '127.0.0.1',
    port: 0,
    devicePort: 0,
    mqttPort: 0,
    // TLS listeners only where a test asks for them (each makes a CA and a certificate).
    deviceTlsPort: null,
    mqttTlsPort: null,
    httpsPort: null,
    dataDir,
    databaseUrl: databaseOf.get(dataDir) ?? testDatabaseUrl(),
    logLevel: process.env.TEST_LOG_LEVEL ? (process.env.TEST_LOG_LEVEL as Config['logLevel']) : 'silent',
    bcryptRounds: 4,
    ...overrides,
  };
  databaseOf.set(dataDir, config.databaseUrl);
  return config;
}

/** A real server on ephemeral ports with its own data dir; quiet logs and cheap bcrypt. */
export async function startServer(overrides: Partial<Config> = {}): Promise<TestServer> {
  const config = testConfig(overrides);
  const dataDir = config.dataDir;
  const app = await createApp(config);
  const { httpPort, httpsPort, devices } = await app.listen();
  const port = (l: ListenerStatus) => (l.state === 'listening' ? l.port : 0);
  const devicePort = port(devices.tcp);
  const mqttPort = port(devices.mqtt);
  const server: TestServer = {
    app,
    config,
    baseUrl: `http://127.0.0.1:${httpPort}`,
    devicePort,
    wsUrl: `ws://127.0.0.1:${httpPort}${devices.wsPath}`,
    mqttPort,
    tlsPorts: { tcp: port(devices.tcpTls), mqtt: port(devices.mqttTls), https: httpsPort ?? 0 },
    dataDir,
    async close() {
      open.delete(server);
      await app.close();
    },
    async restart(more = {}) {
      await server.close();
      const tls = server.tlsPorts;
      return startServer({
        ...overrides,
        dataDir,
        devicePort,
        ...(mqttPort ? { mqttPort } : {}),
        ...(tls.tcp ? { deviceTlsPort: tls.tcp } : {}),
        ...(tls.mqtt ? { mqttTlsPort: tls.mqtt } : {}),
        ...(tls.https ? { httpsPort: tls.https } : {}),
        ...more,
      });
    },
  };
  open.add(server);
  return server;
}

export async function closeAllServers(): Promise<void> {
  await Promise.all([...open].map((s) => s.close()));
  const opened = [...storages.values()];
  storages.clear();
  await Promise.all(opened.map(async (s) => (await s).close()));
}

/** Storage opened by the tests, per data: one connection of their own beside the server's. */
const storages = new Map<string, Promise<Storage>>();

/**
 * The server's data as a test reads and writes it: storage opened on the same data (its SQLite
 * file, or its PostgreSQL database) through its own connection, not the server's object, as the
 * CLI does. Methods return promises as Storage's do; the connection opens on first use and
 * closes with closeAllServers().
 */
export function db(server: Pick<TestServer, 'config'>): Storage {
  const { dataDir, databaseUrl } = server.config;
  const key = `${databaseUrl ?? 'sqlite'} ${dataDir}`;
  const storage = () => {
    let s = storages.get(key);
    if (!s) storages.set(key, (s = openStorage({ dataDir, databaseUrl })));
    return s;
  };
  return new Proxy({} as Storage, {
    get(_, name) {
      if (name === 'kind') return databaseUrl ? 'postgres' : 'sqlite';
      if (name === 'then' || typeof name !== 'string') return undefined; // not a promise itself
      return async (...args: unknown[]) => {
        const s = await storage();
        return (s[name as keyof Storage] as (...a: unknown[]) => unknown).apply(s, args);
      };
    },
  });
}

/** A value of the server's /metrics (the first sample of that name), as the monitoring would read it. */
export async function metric(server: TestServer, name: string): Promise<number> {
  const text = await (await fetch(server.baseUrl + '/metrics')).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
}

/** Cookie jar of one browser-like client: keeps the latest value of each cookie. */
export class CookieJar {
  private cookies = new Map<string, string>();
  store(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair!.indexOf('=');
      this.cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
    }
  }
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

/** Fetches a form page and returns the CSRF token it carries. */
export async function csrfFrom(baseUrl: string, pagePath: string, jar: CookieJar): Promise<string> {
  const res = await fetch(baseUrl + pagePath, { headers: { cookie: jar.header() }, redirect: 'manual' });
  jar.store(res);
  const html = await res.text();
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  if (!m) throw new Error(`no CSRF token on ${pagePath} (status ${res.status})`);
  return m[1]!;
}

/** Posts a form like a browser does (CSRF token included); returns the raw response. */
export async function postForm(baseUrl: string, pagePath: string, formPath: string, fields: Record<string, string>, jar: CookieJar): Promise<Response> {
  const token = await csrfFrom(baseUrl, pagePath, jar);
  const res = await fetch(baseUrl + formPath, {
    method: 'POST',
    headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ ...fields, _csrf: token }).toString(),
    redirect: 'manual',
  });
  jar.store(res);
  return res;
}

/** Logs in through the real form; returns the session cookie header. */
export async function login(server: TestServer, username: string, password: string): Promise<string> {
  const jar = new CookieJar();
  const res = await postForm(server.baseUrl, '/login', '/login', { username, password }, jar);
  if (res.status !== 303) throw new Error(`login failed with status ${res.status}`);
  // The response's last bytes wait for the session to be saved (express-session): read them, so a
  // test that then edits the session through its own connection is not overwritten by that save.
  await res.arrayBuffer();
  return jar.header();
}

export async function createUserAndLogin(
  server: TestServer,
  u: { username: string; password: string; role: Role } = { username: 'owner', password: 'correct horse', role: 'admin' },
): Promise<string> {
  await addUser(db(server), u.username, u.password, u.role, 4);
  return login(server, u.username, u.password);
}

/** A logged-in socket.io-client (it joins `fleet` on connect). */
export function connectSocket(
  server: TestServer,
  cookie: string,
  opts: { origin?: string; auth?: Record<string, unknown> } = {},
): Promise<ClientSocket> {
  const socket = ioClient(server.baseUrl, {
    transports: ['websocket'],
    extraHeaders: { cookie, ...(opts.origin ? { origin: opts.origin } : {}) },
    ...(opts.auth ? { auth: opts.auth } : {}),
    reconnection: false,
    forceNew: true,
  });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.close();
      reject(err);
    });
  });
}

/** Emits an event and resolves with its acknowledgement. */
export function emitAck<T = any>(socket: ClientSocket, event: string, payload: unknown): Promise<T> {
  return socket.timeout(5000).emitWithAck(event, payload) as Promise<T>;
}

/** Resolves with the next event of that name matching the predicate. */
export function nextEvent<T = any>(socket: ClientSocket, event: string, match: (p: T) => boolean = () => true, timeoutMs = 8000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no ${event} within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (p: T) => {
      if (!match(p)) return;
      clearTimeout(timer);
      socket.off(event, on);
      resolve(p);
    };
    socket.on(event, on);
  });
}

export async function addDevice(server: TestServer, id: string, name?: string): Promise<{ id: string; token: string }> {
  const { token } = await addDeviceToStorage(db(server), id, name);
  return { id, token };
}

/**
 * Holds every call of one of the server's storage methods until `release()` (then they run as
 * usual): a test keeps the server in the middle of something (a welcome, a history answer).
 */
export function holdStorageCalls<K extends 'markDeviceSeen' | 'telemetryHistory'>(server: TestServer, method: K): { release: () => void } {
  const storage = server.app.storage;
  const real = (storage[method] as (...a: unknown[]) => Promise<unknown>).bind(storage);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  (storage as unknown as Record<K, (...a: unknown[]) => Promise<unknown>>)[method] = async (...args: unknown[]) => {
    await gate;
    return real(...args);
  };
  return { release };
}
