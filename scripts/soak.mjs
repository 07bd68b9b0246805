#!/usr/bin/env node
// Soak test (docs/security.md, case 21): many simulated devices and dashboards against one real
// server process for a long time; reports RSS at start and end, errors and lost readings. Then,
// under the same load, the server is killed with SIGKILL and started again on the same data; the
// devices reconnect and resend what was not answered, and every reading answered `stored` must be a
// row exactly once (issue 15, "Nothing lost"; bench/README.md).
//
//   npm run soak                                 2,000 devices × 10 readings/s, 50 dashboards, 10 min
//   node scripts/soak.mjs --duration 60          the CI size: 200 devices, 10 dashboards, 60 s
//   node scripts/soak.mjs --duration 120 --devices 500 --rate 5 --dashboards 20
//
// Flags: --duration S, --devices N, --rate R (readings/s per device), --dashboards D,
//        --workers W (device threads), --database-url URL (PostgreSQL instead of SQLite),
//        --no-kill (skip the SIGKILL phase), --keep.
// A run shorter than 10 minutes uses the CI sizes unless sizes are given.
// Exit code 0 only when no reading was lost or stored twice, every reading was answered `stored`,
// nothing reported an error (outside the SIGKILL phase, where disconnects are the point), the
// server restarted after SIGKILL, exited cleanly at the end, and its memory stayed flat.
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
    if (k === 'keep' || k === 'help' || k === 'no-kill') flags[k] = true;
    else flags[k] = inline ?? argv[++i];
  }
  if (flags.help) {
    console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 20).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
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
    kill: !flags['no-kill'],
    keep: !!flags.keep,
  };
}

const rssOf = (pid) => (procSample(pid)?.rssKib ?? 0) * 1024;

const mb = (b) => `${(b / 1024 / 1024).toFixed(1)} MB`;

/**
 * Dashboards: logged-in Socket.IO clients on the fleet room, one device watched, history now and
 * then. While `phase.killing` (the server is killed and restarted) their disconnects, failed
 * reconnects and unanswered queries are expected: counted in stats.tolerated, not as errors. They
 * reconnect on their own (the session is in storage) and watch their device again.
 */
async function startDashboards(base, cookies, deviceIds, stats, phase) {
  const { io } = require('socket.io-client');
  const sockets = [];
  let stopping = false;
  const error = (msg) => {
    if (phase.killing) stats.tolerated++;
    else stats.errors.push(msg);
  };
  const watchIt = async (s, i, watch) => {
    try {
      const r = await s.timeout(10_000).emitWithAck('device:watch', { deviceId: watch });
      if (!r.ok) error(`dashboard ${i}: device:watch ${r.error}`);
    } catch (err) {
      error(`dashboard ${i}: device:watch ${err.message}`);
    }
  };
  for (const [i, cookie] of cookies.entries()) {
    // Like the web page: live telemetry batched per tick (docs/realtime.md, "Live telemetry").
    const s = io(base, { transports: ['websocket'], extraHeaders: { cookie }, auth: { telemetry: 'batch' }, reconnection: true, reconnectionDelay: 1000 });
    const watch = deviceIds[(i * 37) % deviceIds.length];
    s.on('fleet:telemetry', (batch) => (stats.events += batch.length));
    s.on('connect_error', (err) => error(`dashboard ${i}: connect_error ${err.message}`));
    s.on('disconnect', (why) => {
      if (!stopping) error(`dashboard ${i}: disconnected (${why})`);
    });
    await new Promise((resolve, reject) => {
      s.once('connect', resolve);
      s.once('connect_error', reject);
    });
    await watchIt(s, i, watch);
    s.io.on('reconnect', () => {
      stats.reconnects++;
      watchIt(s, i, watch);
    });
    sockets.push({ s, watch });
  }
  const history = setInterval(async () => {
    for (const { s, watch } of sockets) {
      if (!s.connected) continue;
      try {
        const r = await s.timeout(10_000).emitWithAck('telemetry:history', { deviceId: watch, limit: 100 });
        if (r.ok) stats.history++;
        else error(`dashboard: telemetry:history ${r.error}`);
      } catch (err) {
        error(`dashboard: telemetry:history ${err.message}`);
      }
    }
  }, 10_000);
  return {
    connected: () => sockets.filter(({ s }) => s.connected).length,
    stop: () => {
      stopping = true;
      clearInterval(history);
      for (const { s } of sockets) s.close();
    },
  };
}

/**
 * Rows per soak device in storage (SQLite file or PostgreSQL), read after the server stopped: rows,
 * distinct reading ids, and the (device, reading id) pairs stored more than once.
 */
async function countRows(dataDir, databaseUrl) {
  // On SQLite a reading may still be in telemetry_recent, where it is committed first (a row moved
  // into telemetry keeps its id there until its whole round is moved).
  const rowsOf = databaseUrl
    ? 'telemetry'
    : '(SELECT device_id, msg_id FROM telemetry UNION ALL SELECT device_id, msg_id FROM telemetry_recent r WHERE NOT EXISTS (SELECT 1 FROM telemetry t WHERE t.id = r.id))';
  const perDevice = `SELECT device_id AS id, count(*) AS rows, count(DISTINCT msg_id) AS ids FROM ${rowsOf} WHERE device_id LIKE 'soak-%' GROUP BY device_id`;
  const twice = `SELECT device_id AS id, msg_id AS msg, count(*) AS n FROM ${rowsOf} WHERE device_id LIKE 'soak-%' GROUP BY device_id, msg_id HAVING count(*) > 1`;
  const byDevice = new Map();
  let repeated = [];
  if (databaseUrl) {
    const pg = require('pg');
    const c = new pg.Client({ connectionString: databaseUrl });
    await c.connect();
    try {
      for (const r of (await c.query(perDevice)).rows) byDevice.set(r.id, { rows: Number(r.rows), ids: Number(r.ids) });
      repeated = (await c.query(twice)).rows.map((r) => ({ ...r, n: Number(r.n) }));
    } finally {
      await c.end();
    }
  } else {
    const Database = require('better-sqlite3');
    const db = new Database(path.join(dataDir, 'sockpit.db'), { readonly: true });
    try {
      for (const r of db.prepare(perDevice).all()) byDevice.set(r.id, { rows: r.rows, ids: r.ids });
      repeated = db.prepare(twice).all();
    } finally {
      db.close();
    }
  }
  return { byDevice, repeated };
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
  let dashboards = null;
  let server = null;
  const phase = { killing: false };
  const serverLogs = [];
  try {
    server = await startSockpit('sockpit-soak', { dataDir, logDir: runDir, env });
    serverLogs.push(server.logFile);
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
    const dash = { events: 0, history: 0, errors: [], tolerated: 0, reconnects: 0 };
    dashboards = await startDashboards(base, cookies, devices.map((d) => d.id), dash, phase);

    // Devices, split over worker threads.
    const statusWaiters = new Map();
    let statusId = 0;
    /** Devices welcomed and readings not yet answered, over every worker. */
    const deviceStatus = async () => {
      const all = await Promise.all(
        workers.map(
          (w) =>
            new Promise((resolve) => {
              const id = ++statusId;
              statusWaiters.set(id, (m) => {
                statusWaiters.delete(id);
                resolve(m);
              });
              w.postMessage({ type: 'status', id });
            }),
        ),
      );
      return { ready: all.reduce((a, m) => a + m.ready, 0), pending: all.reduce((a, m) => a + m.pending, 0) };
    };
    const perWorker = Math.ceil(nDevices / nWorkers);
    const reports = [];
    const started = [];
    for (let w = 0; w < nWorkers; w++) {
      const slice = devices.slice(w * perWorker, (w + 1) * perWorker);
      if (slice.length === 0) continue;
      const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { port: devicePort, devices: slice, rate } });
      workers.push(worker);
      started.push(new Promise((resolve) => worker.once('message', resolve)));
      worker.on('message', (m) => m.type === 'status' && statusWaiters.get(m.id)?.(m));
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

    // Start and end are medians over a window (10 % of the run, at least 10 s), which smooths out
    // the garbage collector's saw-tooth: the start window follows the warm-up, the end window closes the run.
    const windowMs = Math.max(10_000, duration * 100);
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
    const inWindow = (from, to) => samples.filter((x) => x.t >= from && x.t <= to).map((x) => x.rss);
    const afterRun = { t: warmupMs, rss: median(inWindow(warmupMs, warmupMs + windowMs)) || samples[0].rss };
    const end = { rss: median(inWindow(duration * 1000 - windowMs, Infinity)) || samples.at(-1).rss };
    const peak = Math.max(...samples.map((s) => s.rss));

    // SIGKILL in the middle of the load: the devices go on producing readings (kept until answered,
    // as firmware does), the server starts again on the same data and ports, the devices reconnect
    // with backoff and resend every reading not answered `stored`; the check at the end covers them.
    let kill = null;
    if (opts.kill) {
      phase.killing = true;
      for (const w of workers) w.postMessage({ type: 'kill-phase', on: true });
      await sleep(3000);
      const before = await deviceStatus();
      const k0 = Date.now();
      server.child.kill('SIGKILL');
      const killed = await server.exited;
      console.log(`soak: server killed (${killed.signal ?? killed.code}) with ${before.pending} readings unanswered; restarting on the same data`);
      const ports = { PORT: String(server.port), DEVICE_PORT: String(server.devicePort), MQTT_PORT: String(server.mqttPort) };
      server = await startSockpit('sockpit-soak-restarted', { dataDir, logDir: runDir, env: { ...env, ...ports } });
      serverLogs.push(server.logFile);
      const upMs = Date.now() - k0;
      // Every device welcomed again (bounded), then the load goes on for a while.
      let st = await deviceStatus();
      while (st.ready < nDevices && Date.now() - k0 < 60_000) {
        await sleep(250);
        st = await deviceStatus();
      }
      const backMs = Date.now() - k0;
      while (dashboards.connected() < nDash && Date.now() - k0 < 60_000) await sleep(250);
      if (st.ready < nDevices) verdict.errors.push(`after the restart only ${st.ready} of ${nDevices} devices came back within 60 s`);
      if (dashboards.connected() < nDash) verdict.errors.push(`after the restart only ${dashboards.connected()} of ${nDash} dashboards came back within 60 s`);
      await sleep(5000);
      phase.killing = false;
      for (const w of workers) w.postMessage({ type: 'kill-phase', on: false });
      kill = { unansweredAtKill: before.pending, restartMs: upMs, devicesBackMs: backMs, devicesBack: st.ready, dashboardsBack: dashboards.connected() };
      console.log(`soak: server up again after ${(upMs / 1000).toFixed(1)} s, ${st.ready}/${nDevices} devices back after ${(backMs / 1000).toFixed(1)} s`);
    }

    // Stop sending; wait for every reading to be answered; collect the workers' reports.
    for (const w of workers) w.postMessage({ type: 'stop' });
    const results = await Promise.all(reports);
    dashboards.stop();
    await sleep(500);

    server.child.kill('SIGTERM');
    const exit = await server.exited;
    const logs = serverLogs.map(logSummary);
    const serverLog = { errors: logs.flatMap((l) => l.errors), warnings: logs.reduce((a, l) => a + l.warnings, 0) };
    if (exit.code !== 0) verdict.errors.push(`server exited with ${exit.code ?? exit.signal}`);

    const sentBy = new Map();
    let tolerated = dash.tolerated;
    let sent = 0;
    let answered = 0;
    for (const r of results) {
      for (const [id, n] of r.sentBy) sentBy.set(id, n);
      sent += r.sent;
      answered += r.answered;
      verdict.unanswered += r.unanswered;
      verdict.errors.push(...r.errors);
      tolerated += r.tolerated;
    }
    // Reading ids are <boot>-1 … <boot>-n per device, so n distinct ids is every reading, and
    // rows = ids with no (device, id) pair twice is each exactly once.
    const { byDevice: rows, repeated } = await countRows(dataDir, databaseUrl);
    let stored = 0;
    for (const [id, n] of sentBy) {
      const got = rows.get(id) ?? { rows: 0, ids: 0 };
      stored += got.rows;
      if (got.ids < n) verdict.lost += n - got.ids;
      verdict.duplicates += got.rows - got.ids;
    }
    for (const r of repeated.slice(0, 5)) verdict.errors.push(`reading ${r.msg} of ${r.id} stored ${r.n} times`);
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
      sigkill: kill,
      toleratedDuringKill: tolerated,
    };
    console.log(`soak: RSS at start ${mb(afterRun.rss)} (median after ${Math.round(afterRun.t / 1000)} s), at end ${mb(end.rss)} (median of the last ${Math.round(windowMs / 1000)} s), peak ${mb(peak)}: ${flat ? 'flat' : 'GREW'}`);
    console.log(`soak: readings sent ${sent}, answered stored ${answered}, rows in storage ${stored}`);
    if (kill) console.log(`soak: SIGKILL with ${kill.unansweredAtKill} readings unanswered; server restarted in ${(kill.restartMs / 1000).toFixed(1)} s; ${tolerated} disconnects and retries while it was down (expected)`);
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
    dashboards?.stop();
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
  // While the server is killed and restarted, disconnects and refused reconnects are the point.
  let killing = false;
  let tolerated = 0;
  const error = (msg) => {
    if (killing) tolerated++;
    else errors.push(msg);
  };

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
        bootId: 'soak', // reading ids soak-1, soak-2, … (the check at the end counts them)
        maxUnacked: Infinity, // every reading is accounted for at the end
        handlers: {
          stored: () => this.answered++,
          serverError: (code, detail) => {
            if (!(stopping && code === 'going_away')) error(`${id}: error ${code}${detail ? ` (${detail})` : ''}`);
          },
          undecodable: () => errors.push(`${id}: unreadable line from the server`),
          disconnected: ({ wasReady }) => {
            if (!stopping) error(`${id}: connection closed${wasReady ? '' : ' before welcome'}`);
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
      // Open loop: while the server is down the reading is kept and sent at the next welcome.
      if (!this.client.ready && !killing) return;
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

  await new Promise((resolve) =>
    parentPort.on('message', (m) => {
      if (m.type === 'stop') resolve();
      else if (m.type === 'kill-phase') killing = m.on;
      else if (m.type === 'status') parentPort.postMessage({ type: 'status', id: m.id, ready: list.filter((d) => d.client.ready).length, pending: list.reduce((a, d) => a + d.pending, 0) });
    }),
  );
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
    tolerated,
  });
}

if (isMainThread) await main();
else await deviceWorker(workerData);
