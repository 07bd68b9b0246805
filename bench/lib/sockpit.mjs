// A sockpit server for the bench and the soak (scripts/soak.mjs): started as `npm start` starts it,
// with devices and users provisioned by the project's own functions, and talked to like a browser
// does (the login form with its CSRF token).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildProvision, ROOT } from './build.mjs';
import { freePort, startProcess, waitForPort } from './proc.mjs';

/** Cookie jar of one browser-like client: keeps the latest value of each cookie. */
export class CookieJar {
  constructor() {
    this.cookies = new Map();
  }
  store(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  }
  header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

async function csrfFrom(baseUrl, pagePath, jar) {
  const res = await fetch(baseUrl + pagePath, { headers: { cookie: jar.header() }, redirect: 'manual' });
  jar.store(res);
  const html = await res.text();
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  if (!m) throw new Error(`no CSRF token on ${pagePath} (status ${res.status})`);
  return m[1];
}

/** Posts a form like a browser does (CSRF token included). */
export async function postForm(baseUrl, pagePath, formPath, fields, jar) {
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

/** Logs in through the real form; returns the cookie header of the session. */
export async function login(baseUrl, username, password) {
  const jar = new CookieJar();
  const res = await postForm(baseUrl, '/login', '/login', { username, password }, jar);
  if (res.status !== 303) throw new Error(`login of ${username} failed with status ${res.status}`);
  return jar.header();
}

/**
 * The Node flags `npm start` runs the server with (package.json), so that the bench and the soak
 * measure the server as users start it.
 */
export function serverNodeFlags(root) {
  const start = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).scripts.start;
  return start.split(/\s+/).filter((a) => a.startsWith('--'));
}

/**
 * Starts `node dist/main.js` with the flags of `npm start`, on loopback and free ports (or the ones
 * `env` names: PORT, DEVICE_PORT, MQTT_PORT, e.g. a restart on the same ports), its output in
 * `<logDir>/<label>.log`. Resolves once the HTTP and device ports (and DEVICE_TLS_PORT when `env`
 * turns it on) accept connections.
 */
export async function startSockpit(label, { dataDir, logDir, env = {}, nodeFlags = [] }) {
  const given = (k) => (env[k] && env[k] !== 'off' && Number(env[k]) > 0 ? Number(env[k]) : null);
  const port = given('PORT') ?? (await freePort());
  const devicePort = given('DEVICE_PORT') ?? (await freePort());
  const mqttPort = given('MQTT_PORT') ?? (await freePort());
  const tlsPort = given('DEVICE_TLS_PORT');
  const fullEnv = {
    HOST: '127.0.0.1',
    // TLS listeners only when asked (their defaults, 7443 and 8883, may be taken).
    DEVICE_TLS_PORT: 'off',
    MQTT_TLS_PORT: 'off',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    BCRYPT_ROUNDS: '4',
    ...env,
    PORT: String(port),
    DEVICE_PORT: String(devicePort),
    // Its own MQTT port (the machine's Mosquitto, also a bench peer, may have 1883).
    MQTT_PORT: env.MQTT_PORT === 'off' ? 'off' : String(mqttPort),
  };
  const child = startProcess(label, process.execPath, [...serverNodeFlags(ROOT), ...nodeFlags, path.join(ROOT, 'dist', 'main.js')], { env: fullEnv, logDir, cwd: ROOT });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  await waitForPort(port, { child, timeoutMs: 30_000 });
  await waitForPort(devicePort, { child });
  if (tlsPort !== null) await waitForPort(tlsPort, { child });
  return { child, pid: child.pid, port, devicePort, mqttPort, tlsPort, wsUrl: `ws://127.0.0.1:${port}/device`, baseUrl: `http://127.0.0.1:${port}`, env: fullEnv, logFile: child.logFile, exited };
}

/** The server's log lines at level error (50) and above, and how many warnings (40). */
export function logSummary(logFile) {
  const out = { errors: [], warnings: 0 };
  let text = '';
  try {
    text = fs.readFileSync(logFile, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let j;
    try {
      j = JSON.parse(line);
    } catch {
      continue;
    }
    if (j.level >= 50) out.errors.push(j.msg + (j.err?.message ? `: ${j.err.message}` : ''));
    else if (j.level >= 40) out.warnings++;
  }
  return out;
}

let provisionJs = null;
let provisions = 0;

/**
 * Creates devices and users in the storage `env` names (DATA_DIR, DATABASE_URL) with the functions
 * the CLI uses (provision.ts), in one process: 19,000 `sockpit device add` runs would take an hour.
 * spec: { devices?: { prefix, from?, count }, users?: { prefix, count, password, role } };
 * resolves with { devices: [{ id, token }], users: [{ username, password }] }.
 */
export async function provision(env, spec, workDir) {
  provisionJs ??= await buildProvision();
  const specFile = path.join(workDir, `provision-${process.pid}-${++provisions}.json`);
  const outFile = `${specFile}.out`;
  fs.writeFileSync(specFile, JSON.stringify(spec));
  try {
    execFileSync(process.execPath, [provisionJs, specFile, outFile], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit'] });
    return JSON.parse(fs.readFileSync(outFile, 'utf8'));
  } finally {
    fs.rmSync(specFile, { force: true });
    fs.rmSync(outFile, { force: true });
  }
}
