#!/usr/bin/env node
// Soak test (docs/security.md, case 21): many simulated devices and dashboards against one real
// server process for a long time; reports RSS at start and end, errors and lost readings.
//
//   npm run soak                                 2,000 devices × 10 readings/s, 50 dashboards, 10 min
//   node scripts/soak.mjs --duration 60          the CI size: 200 devices, 10 dashboards, 60 s
//   node scripts/soak.mjs --duration 120 --devices 500 --rate 5 --dashboards 20
//
// Flags: --duration S, --devices N, --rate R (readings/s per device), --dashboards D,
//        --workers W (device threads), --database-url URL (PostgreSQL instead of SQLite), --keep.
// A run shorter than 10 minutes uses the CI sizes unless sizes are given.
// Exit code 0 only when no reading was lost or stored twice, every reading was answered `stored`,
// nothing reported an error, the server exited cleanly and its memory stayed flat.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
// The bench's library: building, process control, provisioning, the cookie jar, /proc sampling.
import { buildDeviceClient, DEVICE_CLIENT_JS, ensureBuilt } from '../bench/lib/build.mjs';
import { procSample } from '../bench/lib/proc.mjs';
import { CookieJar, login, logSummary, postForm, provision, startSockpit } from '../bench/lib/sockpit.mjs';

const require = createRequire(import.meta.url);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Main thread: the server, provisioning, dashboards, sampling and the verdict.

function parseArgs(argv) {
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument: ${a}`);
    const [k, inline] = a.slice(2).split('=', 2);
    if (k === 'keep' || k === 'help') flags[k] = true;
    else flags[k] = inline ?? argv[++i];
  }
  if (flags.help) {
    console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 14).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
    process.exit(0);
  }
  const num = (k, def) => {
    if (flags[k] === undefined) return def;
    const n = Number(flags[k]);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${k} must be a positive number`);
    return n;
  };
  const duration = num('duration', 600);
  const full = duration >= 600;
  const devices = Math.floor(num('devices', full ? 2000 : 200));
  return {
    duration,
    devices,
    rate: num('rate', 10),
    dashboards: Math.floor(num('dashboards', full ? 50 : 10)),
    workers: Math.floor(num('workers', devices > 500 ? 2 : 1)),
    databaseUrl: flags['database-url'] ?? null,
    keep: !!flags.keep,
  };
}

const rssOf = (pid) => (procSample(pid)?.rssKib ?? 0) * 1024;

const mb = (b) => `${(b / 1024 / 1024).toFixed(1)} MB`;

/** Dashboards: logged-in Socket.IO clients on the fleet room, one device watched, history now and then. */
async function startDashboards(base, cookies, deviceIds, stats) {
  const { io } = require('socket.io-client');
  const sockets = [];
  let stopping = false;
  for (const [i, cookie] of cookies.entries()) {
    // Like the web page: live telemetry batched per tick (docs/realtime.md, "Live telemetry").
    const s = io(base, { transports: ['websocket'], extraHeaders: { cookie }, auth: { telemetry: 'batch' }, reconnection: true, reconnectionDelay: 1000 });
    s.on('fleet:telemetry', (batch) => (stats.events += batch.length));
    s.on('connect_error', (err) => stats.errors.push(`dashboard ${i}: connect_error ${err.message}`));
    s.on('disconnect', (why) => {
      if (!stopping) stats.errors.push(`dashboard ${i}: disconnected (${why})`);
    });
    await new Promise((resolve, reject) => {
      s.once('connect', resolve);
      s.once('connect_error', reject);
    });
    const watch = deviceIds[(i * 37) % deviceIds.length];
    const r = await s.timeout(10_000).emitWithAck('device:watch', { deviceId: watch });
    if (!r.ok) stats.errors.push(`dashboard ${i}: device:watch ${r.error}`);
    sockets.push({ s, watch });
  }
  const history = setInterval(async () => {
    for (const { s, watch } of sockets) {
      if (!s.connected) continue;
      try {
        const r = await s.timeout(10_000).emitWithAck('telemetry:history', { deviceId: watch, limit: 100 });
        if (r.ok) stats.history++;
        else stats.errors.push(`dashboard: telemetry:history ${r.error}`);
      } catch (err) {
        stats.errors.push(`dashboard: telemetry:history ${err.message}`);
      }
    }
  }, 10_000);
  return () => {
    stopping = true;
    clearInterval(history);
    for (const { s } of sockets) s.close();
  };
}

/** Rows per soak device in storage (SQLite file or PostgreSQL), read after the server stopped. */
async function countRows(dataDir, databaseUrl) {
  const sqlText = `SELECT device_id AS id, count(*) AS rows, count(DISTINCT msg_id) AS ids FROM telemetry WHERE device_id LIKE 'soak-%' GROUP BY device_id`;
  const byDevice = new Map();
  if (databaseUrl) {
    const pg = require('pg');
    const c = new pg.Client({ connectionString: databaseUrl });
    await c.connect();
    try {
      for (const r of (await c.query(sqlText)).rows) byDevice.set(r.id, { rows: Number(r.rows), ids: Number(r.ids) });
    } finally {
      await c.end();
    }
  } else {
    const Database = require('better-sqlite3');
    const db = new Database(path.join(dataDir, 'sockpit.db'), { readonly: true });
    try {
      for (const r of db.prepare(sqlText).all()) byDevice.set(r.id, { rows: r.rows, ids: r.ids });
    } finally {
      db.close();
    }
  }
  return byDevice;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`soak: ${err.message}`);
    process.exit(2);
  }
  const { duration, devices: nDevices, rate, dashboards: nDash, workers: nWorkers, databaseUrl } = opts;
  console.log(`soak: ${nDevices} devices × ${rate} readings/s, ${nDash} dashboards, ${duration} s, ${databaseUrl ? 'PostgreSQL' : 'SQLite'}`);

  ensureBuilt();
  await buildDeviceClient(); // for the device threads
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-soak-'));
  const dataDir = path.join(runDir, 'data');
  fs.mkdirSync(dataDir);
  const env = {
    LOG_LEVEL: 'info',
    DEVICE_MAX_PER_IP: String(nDevices + 100),
    LOGIN_MAX_ATTEMPTS: '1000',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
  };
  // Whatever happens (bench/lib/proc.mjs ends the server on exit), the run's files go unless --keep.
  process.on('exit', () => {
    if (!opts.keep) fs.rmSync(runDir, { recursive: true, force: true });
  });
  const t0 = Date.now();
  const { devices } = await provision({ DATA_DIR: dataDir, BCRYPT_ROUNDS: '4', ...env }, { devices: { prefix: 'soak-', count: nDevices } }, runDir);
  console.log(`soak: ${nDevices} devices added in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const verdict = { errors: [], lost: 0, duplicates: 0, unanswered: 0 };
  let workers = [];
  let stopDashboards = () => {};
  let server = null;
  try {
    server = await startSockpit('sockpit-soak', { dataDir, logDir: runDir, env });
    const { baseUrl: base, devicePort, pid } = server;
    if (opts.keep) console.log(`soak: server log in ${server.logFile}`);

    // The owner account through the setup form, as a person would.
    const setup = await postForm(base, '/setup', '/setup', { username: 'owner', password: 'soak password', password2: 'soak password' }, new CookieJar());
    if (setup.status !== 303) throw new Error(`setup failed (${setup.status})`);

    // Dashboards log in like browsers (one session each).
    const cookies = [];
    for (let i = 0; i < nDash; i++) {
      cookies.push(await login(base, 'owner', 'soak password'));
    }
    const dash = { events: 0, history: 0, errors: [] };
    stopDashboards = await startDashboards(base, cookies, devices.map((d) => d.id), dash);

    // Devices, split over worker threads.
    const perWorker = Math.ceil(nDevices / nWorkers);
    const reports = [];
    const started = [];
    for (let w = 0; w < nWorkers; w++) {
      const slice = devices.slice(w * perWorker, (w + 1) * perWorker);
      if (slice.length === 0) continue;
      const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { port: devicePort, devices: slice, rate } });
      workers.push(worker);
      started.push(new Promise((resolve) => worker.once('message', resolve)));
      reports.push(
        new Promise((resolve, reject) => {
          worker.on('message', (m) => m.type === 'report' && resolve(m));
          worker.on('error', reject);
        }),
      );
    }
    await Promise.all(started);
    console.log(`soak: all devices connected; running for ${duration} s`);

    // Memory: the first sample after a warm-up (10% of the run, at least 10 s) is the start.
    const samples = [];
    const warmupMs = Math.max(10_000, duration * 100);
    const runStart = Date.now();
    const sampler = setInterval(() => samples.push({ t: Date.now() - runStart, rss: rssOf(pid) }), 2000);
    let lastLog = Date.now();
    while (Date.now() - runStart < duration * 1000) {
      await sleep(1000);
      if (server.child.exitCode !== null || server.child.signalCode !== null) throw new Error(`the server died: ${logSummary(server.logFile).errors.slice(-3).join('; ')}`);
      if (Date.now() - lastLog >= 30_000) {
        lastLog = Date.now();
        const s = samples.at(-1);
        console.log(`soak: ${Math.round((Date.now() - runStart) / 1000)} s, RSS ${mb(s?.rss ?? 0)}, dashboard events ${dash.events}`);
      }
    }
    clearInterval(sampler);
    samples.push({ t: Date.now() - runStart, rss: rssOf(pid) });

    // Stop sending; wait for every reading to be answered; collect the workers' reports.
    for (const w of workers) w.postMessage({ type: 'stop' });
    const results = await Promise.all(reports);
    stopDashboards();
    await sleep(500);

    // Start and end are medians over a window (10 % of the run, at least 10 s), which smooths out
    // the garbage collector's saw-tooth: the start window follows the warm-up, the end window closes the run.
    const windowMs = Math.max(10_000, duration * 100);
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
    const inWindow = (from, to) => samples.filter((x) => x.t >= from && x.t <= to).map((x) => x.rss);
    const afterRun = { t: warmupMs, rss: median(inWindow(warmupMs, warmupMs + windowMs)) || samples[0].rss };
    const end = { rss: median(inWindow(duration * 1000 - windowMs, Infinity)) || samples.at(-1).rss };
    const peak = Math.max(...samples.map((s) => s.rss));

    server.child.kill('SIGTERM');
    const exit = await server.exited;
    const serverLog = logSummary(server.logFile);
    if (exit.code !== 0) verdict.errors.push(`server exited with ${exit.code ?? exit.signal}`);

    const sentBy = new Map();
    let sent = 0;
    let answered = 0;
    for (const r of results) {
      for (const [id, n] of r.sentBy) sentBy.set(id, n);
      sent += r.sent;
      answered += r.answered;
      verdict.unanswered += r.unanswered;
      verdict.errors.push(...r.errors);
    }
    const rows = await countRows(dataDir, databaseUrl);
    let stored = 0;
    for (const [id, n] of sentBy) {
      const got = rows.get(id) ?? { rows: 0, ids: 0 };
      stored += got.rows;
      if (got.ids < n) verdict.lost += n - got.ids;
      verdict.duplicates += got.rows - got.ids;
    }
    verdict.errors.push(...dash.errors, ...serverLog.errors.map((e) => `server: ${e}`));

    const growth = end.rss - afterRun.rss;
    const flat = growth < Math.max(64 * 1024 * 1024, afterRun.rss * 0.25);
    const summary = {
      devices: nDevices,
      rate,
      dashboards: nDash,
      durationS: duration,
      storage: databaseUrl ? 'postgres' : 'sqlite',
      rssStart: afterRun.rss,
      rssEnd: end.rss,
      rssPeak: peak,
      memoryFlat: flat,
      readingsSent: sent,
      readingsAnswered: answered,
      rowsStored: stored,
      lost: verdict.lost,
      duplicates: verdict.duplicates,
      unanswered: verdict.unanswered,
      errors: verdict.errors.length,
      serverWarnings: serverLog.warnings,
      dashboardEvents: dash.events,
      historyQueries: dash.history,
    };
    console.log(`soak: RSS at start ${mb(afterRun.rss)} (median after ${Math.round(afterRun.t / 1000)} s), at end ${mb(end.rss)} (median of the last ${Math.round(windowMs / 1000)} s), peak ${mb(peak)}: ${flat ? 'flat' : 'GREW'}`);
    console.log(`soak: readings sent ${sent}, answered stored ${answered}, rows in storage ${stored}`);
    console.log(`soak: lost ${verdict.lost}, stored twice ${verdict.duplicates}, never answered ${verdict.unanswered}, errors ${verdict.errors.length}`);
    for (const e of [...new Set(verdict.errors)].slice(0, 20)) console.log(`soak:   error: ${e}`);
    console.log(JSON.stringify({ soak: summary }));
    const ok = verdict.lost === 0 && verdict.duplicates === 0 && verdict.unanswered === 0 && verdict.errors.length === 0 && flat && sent > 0;
    console.log(ok ? 'soak: PASS' : 'soak: FAIL');
    process.exitCode = ok ? 0 : 1;
  } catch (err) {
    console.error(`soak: FAIL: ${err.message}`);
    process.exitCode = 1;
  } finally {
    stopDashboards();
    for (const w of workers) await w.terminate();
    if (server && server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------
// Device worker: firmware-like devices, each the project's device client (server/devices/client.ts):
// readings numbered and kept until `stored`, the unanswered ones resent after a reconnect (with
// backoff), pings when idle.

async function deviceWorker({ port, devices, rate }) {
  const { DeviceClient, tcpTransport } = require(DEVICE_CLIENT_JS);
  const errors = [];
  let stopping = false;

  class Device {
    constructor(id, token) {
      this.id = id;
      this.sent = 0;
      this.answered = 0;
      this.client = new DeviceClient({
        id,
        token,
        firmware: 'soak/1',
        transport: tcpTransport({ port }),
        maxUnacked: Infinity, // every reading is accounted for at the end
        handlers: {
          stored: () => this.answered++,
          serverError: (code, detail) => {
            if (!(stopping && code === 'going_away')) errors.push(`${id}: error ${code}${detail ? ` (${detail})` : ''}`);
          },
          undecodable: () => errors.push(`${id}: unreadable line from the server`),
          disconnected: ({ wasReady }) => {
            if (!stopping) errors.push(`${id}: connection closed${wasReady ? '' : ' before welcome'}`);
          },
        },
      });
    }

    connect() {
      return this.client.start();
    }

    get pending() {
      return this.client.unackedCount;
    }

    reading() {
      if (!this.client.ready) return;
      this.sent++;
      this.client.reading((seq) => ({ seq, t: Math.round(Math.random() * 1000) / 10 }));
    }
  }

  const list = devices.map((d) => new Device(d.id, d.token));
  // Connect at up to 200 a second, so that start-up is not an attack of its own.
  for (let i = 0; i < list.length; i += 20) {
    await Promise.all(list.slice(i, i + 20).map((d) => d.connect()));
    await sleep(100);
  }
  parentPort.postMessage({ type: 'connected' });

  // Every device sends `rate` readings a second, in turn, spread evenly over ticks of 10 ms; the
  // number due is computed from the clock, so a late timer does not lower the rate.
  const perMs = (list.length * rate) / 1000;
  const start = performance.now();
  let due = 0;
  let cursor = 0;
  const timer = setInterval(() => {
    const target = Math.floor((performance.now() - start) * perMs);
    for (; due < target; due++) {
      list[cursor].reading();
      cursor = (cursor + 1) % list.length;
    }
  }, 10);

  await new Promise((resolve) => parentPort.on('message', (m) => m.type === 'stop' && resolve()));
  clearInterval(timer);
  const deadline = Date.now() + 60_000;
  while (list.some((d) => d.pending > 0) && Date.now() < deadline) await sleep(100);
  stopping = true;
  for (const d of list) d.client.stop();
  parentPort.postMessage({
    type: 'report',
    sent: list.reduce((a, d) => a + d.sent, 0),
    answered: list.reduce((a, d) => a + d.answered, 0),
    unanswered: list.reduce((a, d) => a + d.pending, 0),
    sentBy: list.map((d) => [d.id, d.sent]),
    errors,
  });
}

if (isMainThread) await main();
else await deviceWorker(workerData);
