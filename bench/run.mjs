#!/usr/bin/env node
// sockpit benchmark: sockpit beside Mosquitto and a bare Node relay, measured in one run.
// Usage: node bench/run.mjs [--quick] [--only=open,ingest,connections,dashboards,multi]
//                           [--rates=10000,25000] [--transports=tcp,ws,mqtt] [--profile] [--keep]
// (`npm run bench` builds first.) See bench/README.md for what is measured and how.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { buildDeviceClient, buildOpengen, ROOT } from './lib/build.mjs';
import { freePort, logTail, ProcWatch, procSample, sleep, startProcess, stopProcess, waitForPort, Worker, killAll } from './lib/proc.mjs';
import { Histogram, round } from './lib/stats.mjs';
import { provision as provisionIn, startSockpit as startServer } from './lib/sockpit.mjs';

const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const PROFILE = args.includes('--profile');
const KEEP = args.includes('--keep');
const ONLY = (args.find((a) => a.startsWith('--only='))?.slice(7).split(',') ?? null);
const wants = (s) => ONLY === null || ONLY.includes(s);
// Development knobs (not for reference runs): --rates=10000,20000 (open loop)  --peers=none  --no-max
//   --transports=tcp,ws,mqtt (open loop: sockpit's device transports)  --no-tls (connections)
const RATES = args.find((a) => a.startsWith('--rates='))?.slice(8).split(',').map(Number) ?? null;
const TRANSPORTS = args.find((a) => a.startsWith('--transports='))?.slice(13).split(',') ?? ['tcp', 'ws', 'mqtt'];
for (const tr of TRANSPORTS) if (!['tcp', 'ws', 'mqtt'].includes(tr)) throw new Error(`--transports: unknown transport ${tr} (tcp, ws, mqtt)`);
const NO_TLS = args.includes('--no-tls');
const PEERS = args.includes('--peers=none') ? false : true;
const NO_MAX = args.includes('--no-max');
const NO_COMMANDS = args.includes('--no-commands');
/** `--generator=node`: the open loop's TCP targets get the Node generator instead of the C one. */
const NODE_GENERATOR = args.includes('--generator=node');
/** Whether the C generator is built and used (set at the start of the run). */
let OPENGEN = false;
const SERVER_ENV = Object.fromEntries(args.filter((a) => a.startsWith('--server-env=')).map((a) => a.slice(13).split('=')));

const MOSQUITTO = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto';
const REDIS_SERVER = process.env.REDIS_SERVER_BIN ?? '/usr/bin/redis-server';
const PASSWORD = 'bench-password-1';

/** Sizes and durations. See bench/README.md for how long a full and a --quick run take. */
const P = QUICK
  ? {
      openDevices: 100,
      openAddresses: 2,
      openRates: [2_000, 5_000],
      openWarmupMs: 700,
      openWindowMs: 2_000,
      clickEveryMs: 100,
      clickWaitMs: 3_000,
      devices: 100,
      genWorkers: 2,
      rates: [],
      commandLevels: [0],
      halfLoad: 0,
      warmupMs: 700,
      windowMs: 1_500,
      drainMs: 5_000,
      commands: 20,
      connections: 500,
      connWorkers: 2,
      tlsConnections: 300,
      idleSettleS: 3,
      dashboards: 50,
      dashWorkers: 2,
      dashWindowMs: 2_000,
    }
  : {
      // Open loop (issue 15): fixed offered rates, one reading per write, a click every 100 ms.
      openDevices: 1_000,
      openAddresses: 10, // source addresses 127.0.0.2 … (TCP devices)
      // 5,000 apart up to 40,000: with 25,000 and 35,000 next to each other, a ratio could only be
      // 0.71 or 1 when Mosquitto sustains 35,000 (bench/README.md, "Sustained rate").
      openRates: [10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000, 50_000, 60_000, 70_000],
      openWarmupMs: 2_000,
      openWindowMs: 10_000, // 100 clicks per step: p99 is the 99th of 100
      clickEveryMs: 100,
      clickWaitMs: 5_000, // after the drain, for the answers to the window's last clicks
      // Closed loop: the maximum (and fixed-rate steps of its own only when --set=rates=… asks).
      devices: 1_000,
      genWorkers: 2,
      rates: [],
      commandLevels: [0], // command round trip one at a time, at these % of the closed-loop maximum
      halfLoad: 0, // 1: also a step at half of sockpit's closed-loop maximum
      warmupMs: 2_000,
      windowMs: 6_000,
      // After the closed-loop step the kernel's socket buffers hold a backlog of readings; the
      // next step starts only once it is through (else its latency is the previous step's).
      drainMs: 180_000,
      commands: 200,
      connections: 19_000,
      connWorkers: 5,
      tlsConnections: 5_000, // idle TLS devices (issue 13)
      // Seconds the connections stay idle before RSS is taken (see connectionsScenario).
      // V8's memory reducer collects the handshake burst's garbage once allocation has been quiet
      // for a while: 10-15 s after it in earlier runs, 25-35 s on the machine of the 2026-12-01 runs.
      idleSettleS: 45,
      dashboards: 1_000,
      dashWorkers: 4,
      dashWindowMs: 10_000,
    };

// --set=key=value overrides one of the sizes above (development and the independent re-check).
for (const a of args.filter((x) => x.startsWith('--set='))) {
  const [k, v] = a.slice(6).split('=');
  if (!(k in P)) throw new Error(`--set: unknown parameter ${k} (one of ${Object.keys(P).join(', ')})`);
  P[k] = Array.isArray(P[k]) ? (v === '' ? [] : v.split(',').map(Number)) : Number(v);
}
if (RATES) P.openRates = RATES;

/** Issue 15's targets, and the earlier idle-memory and dashboards ones. */
const TARGETS = {
  sustained_vs_mosquitto: 0.8,
  at_offered_per_s: 25_000,
  dashboard_p99_ms: 50,
  click_acked_p99_ms: 50,
  cpu_us_per_reading: 35,
  rss_per_conn_kib: 10,
  rss_per_tls_conn_kib: 40,
  dashboards_p99_ms: 50,
};
/** A step counts toward the sustained rate when these hold (bench/README.md, "Sustained rate"). */
const SUSTAINED = { p99_ms: 50, click_p99_ms: 50, min_sent_fraction: 0.97 };

const startedAt = new Date();
const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-bench-'));
const logDir = path.join(runDir, 'logs');
fs.mkdirSync(logDir);
const results = {
  schema: 1,
  quick: QUICK,
  started_at: startedAt.toISOString(),
  machine: machine(),
  git: git(),
  params: P,
  targets: TARGETS,
};

const log = (...a) => console.error('[bench]', ...a);

// ---------------------------------------------------------------------------------------------
// Machine and helpers

function machine() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  let mosq = null;
  try {
    mosq = execFileSync(MOSQUITTO, ['-h'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().split('\n')[0];
  } catch (err) {
    mosq = err.stdout?.toString().split('\n')[0] || null;
  }
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpu_model: model,
    ram_gib: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    loadavg_at_start: os.loadavg().map((x) => round(x, 2)),
    open_files_limit: Number(execFileSync('sh', ['-c', 'ulimit -n']).toString().trim()) || null,
    mosquitto: mosq,
  };
}

function git() {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT }).toString().trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT }).toString().trim() !== '';
    return { commit, dirty };
  } catch {
    return null;
  }
}

/** Creates devices and users in a data dir with the project's own functions (bench/lib/sockpit.mjs). */
function provision(env, spec) {
  return provisionIn(env, spec, runDir);
}

/** The server as its own process (bench/lib/sockpit.mjs), with the bench's limits raised. */
function startSockpit(label, { dataDir, extraEnv = {} } = {}) {
  return startServer(label, {
    dataDir,
    logDir,
    env: { DEVICE_MAX_PER_IP: '20000', DEVICE_MAX_LINES_PER_S: '100000', ...SERVER_ENV, ...extraEnv },
    nodeFlags: PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.join(runDir, 'profiles')}`] : [],
  });
}

/** A read-only view of the SQLite file, to count what was stored. */
function openDb(dataDir) {
  const Database = require('better-sqlite3');
  const db = new Database(path.join(dataDir, 'sockpit.db'), { readonly: true, fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  // Readings are committed to telemetry_recent first and moved into telemetry in bulk (a moved row
  // stays in telemetry_recent, under the same id, until its whole round is moved).
  const maxId = db.prepare('SELECT max(coalesce((SELECT max(id) FROM telemetry), 0), coalesce((SELECT max(id) FROM telemetry_recent), 0)) AS n');
  const count = db.prepare(
    'SELECT (SELECT count(*) FROM telemetry) + (SELECT count(*) FROM telemetry_recent r WHERE NOT EXISTS (SELECT 1 FROM telemetry t WHERE t.id = r.id)) AS n',
  );
  return { maxId: () => maxId.get().n, count: () => count.get().n, close: () => db.close() };
}

async function startMosquitto() {
  if (!fs.existsSync(MOSQUITTO)) return { error: `${MOSQUITTO} is missing (apt-get install -y mosquitto)` };
  const port = await freePort();
  const conf = path.join(runDir, 'mosquitto.conf');
  fs.writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'set_tcp_nodelay true',
      'max_keepalive 65535',
      '',
    ].join('\n'),
  );
  fs.chmodSync(runDir, 0o755);
  fs.chmodSync(conf, 0o644);
  const child = startProcess('mosquitto', MOSQUITTO, ['-c', conf], { logDir });
  try {
    await waitForPort(port, { child, timeoutMs: 10_000 });
  } catch (err) {
    return { error: `${err.message}: ${logTail(child)}` };
  }
  return { child, pid: child.pid, port };
}

async function startRelay() {
  const devicePort = await freePort();
  const subPort = await freePort();
  const child = startProcess('relay', process.execPath, [path.join(ROOT, 'bench/peers/relay.mjs')], {
    env: { RELAY_DEVICE_PORT: String(devicePort), RELAY_SUB_PORT: String(subPort) },
    logDir,
  });
  await waitForPort(devicePort, { child });
  await waitForPort(subPort, { child });
  return { child, pid: child.pid, devicePort, subPort };
}

function split(list, parts) {
  const out = Array.from({ length: parts }, () => []);
  list.forEach((x, i) => out[i % parts].push(x));
  return out.filter((p) => p.length > 0);
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/**
 * Load generator processes for one target, connected and ready. `extra` goes into each worker's
 * config (bench/workers/devices.mjs: transport, wsUrl, tls).
 */
async function startGenerators(label, target, port, devices, workers, extra = {}, { c = false } = {}) {
  const tag = `b${Date.now().toString(36)}`;
  const script = path.join(ROOT, 'bench/workers', c ? 'cgen.mjs' : 'devices.mjs');
  const gens = split(devices, workers).map((ds, i) => new Worker(`${label}-gen${i}`, script, { target, port, devices: ds, tag, localAddresses: [], ...extra }, { logDir }));
  const r = await Promise.all(gens.map((g) => g.call('connect', {}, 180_000)));
  // The C generator's own process, for its CPU (cgen.mjs only relays requests to it).
  r.forEach((x, i) => (gens[i].extraPids = x.pids ?? []));
  const ready = sum(r.map((x) => x.ready));
  if (ready < devices.length) throw new Error(`${label}: only ${ready}/${devices.length} devices connected: ${JSON.stringify(r.map((x) => x.failures))}`);
  return gens;
}

async function genLoad(gens, load) {
  const perWorker = load.rate ? load.rate / gens.length : 0;
  await Promise.all(gens.map((g) => g.call('load', { ...load, rate: perWorker })));
}

async function genStats(gens, reset = false) {
  const all = await Promise.all(gens.map((g) => g.call('stats', { reset })));
  const errors = {};
  for (const s of all) for (const [k, v] of Object.entries(s.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    sent: sum(all.map((s) => s.sent)),
    // Each generator's rate by its own clock, summed.
    sent_per_s: sum(all.map((s) => (s.since_ms > 0 ? (s.sent * 1000) / s.since_ms : 0))),
    dropped: sum(all.map((s) => s.dropped)),
    lagged: sum(all.map((s) => s.lagged)),
    stored: sum(all.map((s) => s.stored)),
    closed: sum(all.map((s) => s.closed)),
    ready: sum(all.map((s) => s.ready)),
    total_sent: sum(all.map((s) => s.total_sent)),
    total_stored: sum(all.map((s) => s.total_stored)),
    errors,
  };
}

async function sinkWindow(sinks, reset) {
  const all = await Promise.all(sinks.map((s) => s.call('window', { reset })));
  const h = new Histogram();
  for (const w of all) h.merge(w.hist);
  return { received: sum(all.map((w) => w.received)), total_received: sum(all.map((w) => w.total_received)), hist: h };
}

// ---------------------------------------------------------------------------------------------
// Open loop (issue 15): fixed offered rates, one reading per write, a click every 100 ms

const OPEN_NAMES = { tcp: 'sockpit', ws: 'sockpit_websocket', mqtt: 'sockpit_mqtt' };

/**
 * One open-loop step for one target: load at `rate` (and, for sockpit, a Send Action to Node every
 * P.clickEveryMs), warm up, count for P.openWindowMs, stop, drain, then collect the window's clicks.
 * `t` is { name, gens, sinks, pid, db?, clickIds? }.
 */
async function measureOpen(t, rate) {
  const clicker = t.clickIds ? t.sinks[0] : null;
  const before = await genStats(t.gens, true);
  const sinkBefore = await sinkWindow(t.sinks, true);
  const rowsBefore = t.db?.maxId();
  if (clicker) await clicker.call('clicksStart', { deviceIds: t.clickIds, everyMs: P.clickEveryMs });
  await genLoad(t.gens, { rate });
  await sleep(P.openWarmupMs);
  await Promise.all([genStats(t.gens, true), sinkWindow(t.sinks, true)]);
  const epoch = clicker ? await clicker.call('clicksStart', { deviceIds: t.clickIds, everyMs: P.clickEveryMs }) : null;
  const rows0 = t.db?.maxId();
  const watch = new ProcWatch([t.pid]);
  const genWatch = new ProcWatch(t.gens.flatMap((g) => [g.pid, ...(g.extraPids ?? [])]));
  const sinkWatch = new ProcWatch(t.sinks.map((s) => s.pid));
  const t0 = performance.now();
  await sleep(P.openWindowMs);
  const [g, w] = await Promise.all([genStats(t.gens, true), sinkWindow(t.sinks, true)]);
  const secs = (performance.now() - t0) / 1000;
  const rows1 = t.db?.maxId();
  const usage = watch.stop();
  const genUsage = genWatch.stop();
  const sinkUsage = sinkWatch.stop();
  if (clicker) await clicker.call('clicksStop');
  await genLoad(t.gens, { rate: 0 });
  const drained = await drain(t);
  let clicks = null;
  if (clicker) {
    const until = Date.now() + P.clickWaitMs;
    for (;;) {
      clicks = await clicker.call('clicksResult', { epoch });
      if (clicks.pending === 0 || Date.now() > until) break;
      await sleep(100);
    }
  }
  const after = await genStats(t.gens, false);
  const sinkAfter = await sinkWindow(t.sinks, false);
  const rowsAfter = t.db?.maxId();
  // Whole step (warm-up, window, drain): what was sent, answered, stored and received.
  const total = {
    sent: after.total_sent - before.total_sent,
    received: sinkAfter.total_received - sinkBefore.total_received,
    ...(t.db ? { stored_acks: after.total_stored - before.total_stored, rows: rowsAfter - rowsBefore } : {}),
  };
  const lat = w.hist.summary();
  const readings = t.db ? rows1 - rows0 : w.received;
  const r = {
    offered_per_s: rate,
    sent_per_s: Math.round(g.sent_per_s),
    dropped_by_generator: g.dropped,
    lagged_by_generator: g.lagged,
    received_per_s: Math.round(w.received / secs),
    ...(t.db ? { stored_per_s: Math.round((rows1 - rows0) / secs), stored_acks_per_s: Math.round(g.stored / secs) } : {}),
    p50_ms: lat.p50_ms,
    p99_ms: lat.p99_ms,
    max_ms: lat.max_ms,
    ...(clicks ? { click: clickSummary(clicks) } : {}),
    step_totals: total,
    all_delivered: total.received === total.sent,
    ...(t.db ? { all_stored: total.stored_acks === total.sent && total.rows === total.sent } : {}),
    server_cpu_pct: usage.cpu_pct,
    cpu_us_per_reading: readings > 0 ? round((usage.cpu_s * 1e6) / readings, 1) : null,
    server_rss_mib: usage.rss_mib,
    server_peak_rss_mib: usage.peak_rss_mib,
    generators_cpu_pct: genUsage.cpu_pct,
    receiver_cpu_pct: sinkUsage.cpu_pct,
    drained_ms: drained,
    closed_by_server: after.closed - before.closed || undefined,
    device_errors: Object.keys(g.errors).length ? g.errors : undefined,
  };
  r.failed = judge(t, r);
  r.ok = r.failed.length === 0;
  return r;
}

function clickSummary(c) {
  const h = Histogram.from(c.hist).summary();
  return { sent: c.sent, acked: c.acked, failed: c.failed, unanswered: c.pending, failures: Object.keys(c.failures).length ? c.failures : undefined, p50_ms: h.p50_ms, p99_ms: h.p99_ms, max_ms: h.max_ms };
}

/** Why a step does not count toward the sustained rate (empty: it counts). */
function judge(t, r) {
  const why = [];
  if (r.sent_per_s < SUSTAINED.min_sent_fraction * r.offered_per_s || r.lagged_by_generator > 0) why.push(`generator sent ${r.sent_per_s}/s of ${r.offered_per_s}/s`);
  if (r.dropped_by_generator > 0) why.push(`${r.dropped_by_generator} readings not sent (socket backed up)`);
  if (r.drained_ms === null) why.push('not drained');
  if (t.db && !r.all_stored) why.push(`stored ${r.step_totals.rows} rows and ${r.step_totals.stored_acks} answers of ${r.step_totals.sent}`);
  if (!r.all_delivered) why.push(`receiver got ${r.step_totals.received} of ${r.step_totals.sent}`);
  if (r.p99_ms === null || r.p99_ms > SUSTAINED.p99_ms) why.push(`p99 ${r.p99_ms} ms`);
  if (r.click) {
    if (r.click.sent === 0 || r.click.acked < r.click.sent) why.push(`clicks acked ${r.click.acked} of ${r.click.sent}`);
    if (r.click.p99_ms === null || r.click.p99_ms > SUSTAINED.click_p99_ms) why.push(`click p99 ${r.click.p99_ms} ms`);
  }
  return why;
}

/** The highest offered rate whose step counts; also the lowest that does not. */
function sustainedOf(steps, name) {
  let perS = 0;
  let firstFailure = null;
  let measured = 0;
  for (const s of steps) {
    const r = s[name];
    if (!r) continue;
    if (r.skipped) {
      firstFailure ??= s.offered_per_s;
      continue;
    }
    measured++;
    if (r.ok) perS = Math.max(perS, s.offered_per_s);
    else firstFailure ??= s.offered_per_s;
  }
  if (measured === 0) return null;
  const top = Math.max(...steps.map((s) => s.offered_per_s));
  return {
    per_s: perS,
    first_failure_per_s: firstFailure,
    // Passed every step offered: it sustains at least this much (a ratio against it is an upper bound).
    at_least: perS === top && firstFailure === null,
    monotone: firstFailure === null || perS < firstFailure,
  };
}

/** The step nearest to `rate` at which `name` was measured. */
function nearestStep(steps, name, rate) {
  let best = null;
  for (const s of steps) {
    if (!s[name] || s[name].skipped) continue;
    if (!best || Math.abs(s.offered_per_s - rate) < Math.abs(best.offered_per_s - rate)) best = s;
  }
  return best ? { offered_per_s: best.offered_per_s, ...best[name] } : null;
}

async function openLoopScenario() {
  const n = P.openDevices;
  log(`open loop: ${n} devices per target (${TRANSPORTS.join(', ')}), one reading per write, offered ${P.openRates.join(', ')}/s; sockpit, mosquitto and the bare relay; ${OPENGEN ? 'C' : 'Node'} generator for TCP`);
  const dataDir = path.join(runDir, 'open-data');
  const sets = {};
  let users = null;
  for (const tr of TRANSPORTS) {
    const prov = await provision({ DATA_DIR: dataDir, BCRYPT_ROUNDS: '4' }, {
      devices: { prefix: `${tr}-`, count: n },
      ...(users ? {} : { users: { prefix: 'bench', count: 1, password: PASSWORD, role: 'operator' } }),
    });
    users ??= prov.users;
    sets[tr] = prov.devices;
  }
  // TCP devices (sockpit's, and the same list for the peers) come from P.openAddresses source
  // addresses, as a fleet behind several routers would; WebSocket and MQTT devices from 127.0.0.1
  // (their client transports take no source address).
  const tcpSet = sets.tcp ?? (await provision({ DATA_DIR: dataDir, BCRYPT_ROUNDS: '4' }, { devices: { prefix: 'tcp-', count: n } })).devices;
  tcpSet.forEach((d, i) => (d.localAddress = `127.0.0.${2 + (i % P.openAddresses)}`));

  const server = await startSockpit('sockpit-open', { dataDir });
  const db = openDb(dataDir);
  const dashboard = new Worker('open-dashboard', path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'sockpit', baseUrl: server.baseUrl, users }, { logDir });
  const c = await dashboard.call('connect');
  if (c.connected !== 1) throw new Error(`dashboard could not connect: ${JSON.stringify(c)}`);
  const all = []; // workers
  const children = []; // peer processes
  try {
    const ours = {};
    for (const tr of TRANSPORTS) {
      const name = OPEN_NAMES[tr];
      const extra = tr === 'ws' ? { transport: 'ws', wsUrl: server.wsUrl } : { transport: tr };
      const port = tr === 'mqtt' ? server.mqttPort : server.devicePort;
      const gens = await startGenerators(`open-${name}`, 'sockpit', port, sets[tr], P.genWorkers, extra, { c: tr === 'tcp' && OPENGEN });
      all.push(...gens);
      ours[tr] = { name, pid: server.pid, db, sinks: [dashboard], gens, clickIds: sets[tr].map((d) => d.id) };
    }
    const peers = {};
    const mosq = PEERS ? await startMosquitto() : { error: 'skipped (--peers=none)' };
    let mosquitto = null;
    if (mosq.error) peers.mosquitto = { not_run: mosq.error };
    else {
      children.push(mosq.child);
      mosquitto = { name: 'mosquitto', pid: mosq.pid };
      mosquitto.sinks = [new Worker('open-mosquitto-subscriber', path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'mqtt', port: mosq.port }, { logDir })];
      all.push(...mosquitto.sinks);
      await mosquitto.sinks[0].call('connect');
      mosquitto.gens = await startGenerators('open-mosquitto', 'mqtt', mosq.port, tcpSet, P.genWorkers, {}, { c: OPENGEN });
      all.push(...mosquitto.gens);
    }
    const relay = PEERS ? await startRelay() : null;
    let bare = null;
    if (relay) {
      children.push(relay.child);
      bare = { name: 'bare_relay', pid: relay.pid };
      bare.sinks = [new Worker('open-relay-subscriber', path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'relay', port: relay.subPort }, { logDir })];
      all.push(...bare.sinks);
      await bare.sinks[0].call('connect');
      bare.gens = await startGenerators('open-relay', 'relay', relay.devicePort, tcpSet, P.genWorkers, {}, { c: OPENGEN });
      all.push(...bare.gens);
    } else peers.bare_relay = { not_run: 'skipped (--peers=none)' };
    const targets = [ours.tcp, mosquitto, bare, ours.ws, ours.mqtt].filter(Boolean);

    // Steps interleaved per rate (every target at 10 k, then every target at 15 k, …) so that drift
    // on a shared machine hits all alike.
    const steps = [];
    const stop = {}; // target → why its higher steps are skipped
    const fails = {}; // target → failed steps in a row
    for (const rate of P.openRates) {
      const step = { offered_per_s: rate };
      for (const t of targets) {
        // Past what a target sustains it is not loaded harder (a pass above two failures in a row
        // would be luck, and a backlog takes minutes to drain), except up to the rate the targets
        // are stated at (25,000/s), which is always measured. A target that did not drain stops.
        const s0 = stop[t.name];
        if (s0 && (s0.hard || rate > TARGETS.at_offered_per_s)) {
          step[t.name] = { skipped: s0.why };
          continue;
        }
        const r = await measureOpen(t, rate);
        step[t.name] = r;
        log(`  ${String(rate).padStart(7)} ${t.name.padEnd(17)} sent ${r.sent_per_s}/s p50/p99/max ${r.p50_ms}/${r.p99_ms}/${r.max_ms} ms${r.click ? ` click ${r.click.p50_ms}/${r.click.p99_ms}/${r.click.max_ms} ms (${r.click.acked}/${r.click.sent})` : ''} ${r.cpu_us_per_reading} µs/reading ${r.ok ? 'ok' : `— ${r.failed.join('; ')}`}`);
        fails[t.name] = r.ok ? 0 : (fails[t.name] ?? 0) + 1;
        const got = r.stored_per_s ?? r.received_per_s;
        if (r.drained_ms === null) stop[t.name] = { hard: true, why: `not drained after ${rate}/s` };
        else if (!stop[t.name] && got < 0.8 * rate) stop[t.name] = { why: `fell behind at ${rate}/s (${got}/s)` };
        else if (!stop[t.name] && fails[t.name] >= 2) stop[t.name] = { why: `failed at two steps in a row (up to ${rate}/s)` };
      }
      steps.push(step);
    }

    const conditions = `open loop: ${n} devices per target, ${P.genWorkers} generator processes (${OPENGEN ? 'TCP targets: the C generator, bench/gen/opengen.c; WebSocket and MQTT devices: the Node one' : 'the Node generator, bench/workers/devices.mjs'}), each device writing one reading per write (a line, a WebSocket text frame or an MQTT PUBLISH) whenever its reading is due (device k of N at k/rate + j·N/rate), every reading {"type":"telemetry","id","data":{t,seq,temp,hum}} (~100 B JSON; base64 on lines and frames), TCP devices from ${P.openAddresses} source addresses 127.0.0.2…; sockpit: reliable telemetry counted by its stored answers (MQTT: QoS 1, PUBACK) and rows, one logged-in dashboard with batched fleet telemetry, and a Send Action to Node (command:send togglerele) every ${P.clickEveryMs} ms to the loaded devices in turn, click→acked = command:send emitted → command:status "acked" on the same socket; Mosquitto: QoS 0 to d/<id>/t, one subscriber on d/+/t, no clicks; bare relay: lines to one subscriber. Per step ${P.openWarmupMs / 1000} s warm-up, ${P.openWindowMs / 1000} s window (rates, latency, CPU), then the load stops and everything sent in the step must arrive (and for sockpit be stored and answered) before the next; CPU per reading = server process CPU (all threads, /proc) in the window ÷ rows stored in it (peers: readings delivered)`;
    const sustained = { conditions: `highest offered rate at which every reading sent in the step reached the receiver (sockpit: the dashboard, and it was stored as a row and answered stored; over MQTT PUBACKed), the generator sent ≥ ${SUSTAINED.min_sent_fraction * 100} % of the offered rate and skipped none, the receiver's p99 ≤ ${SUSTAINED.p99_ms} ms and, for sockpit, every click of the window was acked with click→acked p99 ≤ ${SUSTAINED.click_p99_ms} ms; steps ${P.openRates.join(', ')}/s. ${conditions}` };
    for (const t of targets) sustained[t.name] = sustainedOf(steps, t.name);
    for (const [k, v] of Object.entries(peers)) sustained[k] ??= v;
    const sp = sustained.sockpit?.per_s;
    const mq = sustained.mosquitto?.per_s;
    sustained.ratio_vs_mosquitto = sp != null && mq ? round(sp / mq, 3) : null;
    if (sustained.ratio_vs_mosquitto !== null && sustained.mosquitto.at_least) sustained.ratio_note = `Mosquitto passed every step offered (${mq}/s): the ratio is an upper bound`;
    const at = nearestStep(steps, 'sockpit', TARGETS.at_offered_per_s);
    const atPeer = (name) => nearestStep(steps, name, TARGETS.at_offered_per_s)?.cpu_us_per_reading ?? null;
    results.open_loop = { conditions, generator: OPENGEN ? 'c' : 'node', steps };
    results.sustained = sustained;
    results.cpu_us_per_reading = at?.cpu_us_per_reading ?? null;
    results.cpu_per_reading = {
      sockpit_us: at?.cpu_us_per_reading ?? null,
      at_offered_per_s: at?.offered_per_s ?? null,
      mosquitto_us: atPeer('mosquitto'),
      bare_relay_us: atPeer('bare_relay'),
      sockpit_websocket_us: atPeer('sockpit_websocket'),
      sockpit_mqtt_us: atPeer('sockpit_mqtt'),
      conditions: `server process CPU (user + system, all threads, from /proc) over the ${P.openWindowMs / 1000} s window of the open-loop step nearest to ${TARGETS.at_offered_per_s}/s offered, ÷ rows stored in that window (peers: readings their subscriber received)`,
    };
    if (at) results.at_25k = {
      offered_per_s: at.offered_per_s,
      dashboard_p50_ms: at.p50_ms,
      dashboard_p99_ms: at.p99_ms,
      dashboard_max_ms: at.max_ms,
      click_p50_ms: at.click?.p50_ms ?? null,
      click_p99_ms: at.click?.p99_ms ?? null,
      click_max_ms: at.click?.max_ms ?? null,
      all_stored: at.all_stored,
      conditions: `sockpit (TCP devices) at the open-loop step nearest to ${TARGETS.at_offered_per_s}/s offered`,
    };
    log(`  sustained: ${targets.map((t) => `${t.name} ${sustained[t.name]?.per_s ?? '-'}/s`).join(', ')}; sockpit ÷ Mosquitto ${sustained.ratio_vs_mosquitto ?? '-'}`);
  } finally {
    await Promise.all([...all, dashboard].map((x) => x.stop()));
    for (const child of children) await stopProcess(child);
    db.close();
    await stopProcess(server.child);
  }
}

// ---------------------------------------------------------------------------------------------
// Closed loop: ingest maximum, the peers under the same load, command round trip

/**
 * One measured window for one target at one load: warm up, count for windowMs, stop, drain.
 * `t` is { name, gens, sinks, pid, db? }.
 */
async function measure(t, load) {
  await genLoad(t.gens, load);
  await sleep(P.warmupMs);
  await Promise.all([genStats(t.gens, true), sinkWindow(t.sinks, true)]);
  const rows0 = t.db?.maxId();
  const watch = new ProcWatch([t.pid]);
  const genWatch = new ProcWatch(t.gens.flatMap((g) => [g.pid, ...(g.extraPids ?? [])]));
  const sinkWatch = new ProcWatch(t.sinks.map((s) => s.pid));
  const t0 = performance.now();
  await sleep(P.windowMs);
  const [g, w] = await Promise.all([genStats(t.gens, true), sinkWindow(t.sinks, true)]);
  const secs = (performance.now() - t0) / 1000;
  const rows1 = t.db?.maxId();
  const usage = watch.stop();
  const genUsage = genWatch.stop();
  const sinkUsage = sinkWatch.stop();
  await genLoad(t.gens, { rate: 0 });
  const drained = await drain(t);
  const lat = w.hist.summary();
  const received = Math.round(w.received / secs);
  const stored = t.db ? Math.round((rows1 - rows0) / secs) : null;
  return {
    offered_per_s: load.max ? 'max' : load.rate,
    sent_per_s: Math.round(g.sent / secs),
    dropped_by_generator: g.dropped,
    // sockpit: the lower of "reached the dashboard" and "stored" in the same window; the peers
    // store nothing, so it is what their subscriber received.
    delivered_per_s: stored === null ? received : Math.min(received, stored),
    ...(t.db ? { dashboard_per_s: received, stored_per_s: stored, stored_acks_per_s: Math.round(g.stored / secs) } : {}),
    p50_ms: lat.p50_ms,
    p99_ms: lat.p99_ms,
    max_ms: lat.max_ms,
    server_cpu_pct: usage.cpu_pct,
    server_rss_mib: usage.rss_mib,
    server_peak_rss_mib: usage.peak_rss_mib,
    generators_cpu_pct: genUsage.cpu_pct,
    receiver_cpu_pct: sinkUsage.cpu_pct,
    drained_ms: drained,
    closed_by_server: g.closed || undefined,
    device_errors: Object.keys(g.errors).length ? g.errors : undefined,
  };
}

/**
 * Waits until the receiver stops receiving and, for sockpit, every reading sent is answered
 * `stored`, or the answers stopped coming for 5 s (a reading sent on a connection the server
 * closed is never answered: the bench's devices do not resend).
 */
async function drain(t) {
  const t0 = Date.now();
  let last = -1;
  let lastStored = -1;
  let storedSince = Date.now();
  while (Date.now() - t0 < P.drainMs) {
    await sleep(200);
    const w = await sinkWindow(t.sinks, false);
    let storedAll = true;
    if (t.db) {
      const g = await genStats(t.gens, false);
      if (g.total_stored !== lastStored) storedSince = Date.now();
      lastStored = g.total_stored;
      storedAll = g.total_stored >= g.total_sent || Date.now() - storedSince > 5_000;
    }
    if (w.received === last && storedAll) return Date.now() - t0;
    last = w.received;
  }
  return null; // not drained within drainMs
}

async function ingestScenario() {
  log(`closed loop: ${P.devices} devices; sockpit, mosquitto and the bare relay`);
  const dataDir = path.join(runDir, 'ingest-data');
  const prov = await provision({ DATA_DIR: dataDir, BCRYPT_ROUNDS: '4' }, {
    devices: { prefix: 'dev-', count: P.devices },
    users: { prefix: 'bench', count: 1, password: PASSWORD, role: 'operator' },
  });
  const server = await startSockpit('sockpit-ingest', { dataDir });
  const db = openDb(dataDir);
  const targets = [];
  const sockpit = { name: 'sockpit', pid: server.pid, db };
  sockpit.sinks = [new Worker('sockpit-dashboard', path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'sockpit', baseUrl: server.baseUrl, users: prov.users }, { logDir })];
  const c = await sockpit.sinks[0].call('connect');
  if (c.connected !== 1) throw new Error(`dashboard could not connect: ${JSON.stringify(c)}`);
  sockpit.gens = await startGenerators('sockpit', 'sockpit', server.devicePort, prov.devices, P.genWorkers);
  targets.push(sockpit);

  const peers = {};
  const mosq = PEERS ? await startMosquitto() : { error: 'skipped (--peers=none)' };
  if (mosq.error) peers.mosquitto = { not_run: mosq.error };
  else {
    const t = { name: 'mosquitto', pid: mosq.pid, child: mosq.child };
    t.sinks = [new Worker('mosquitto-subscriber', path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'mqtt', port: mosq.port }, { logDir })];
    await t.sinks[0].call('connect');
    t.gens = await startGenerators('mosquitto', 'mqtt', mosq.port, prov.devices, P.genWorkers);
    targets.push(t);
  }
  const relay = PEERS ? await startRelay() : null;
  if (relay) {
    const t = { name: 'bare_relay', pid: relay.pid, child: relay.child };
    t.sinks = [new Worker('relay-subscriber', path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'relay', port: relay.subPort }, { logDir })];
    await t.sinks[0].call('connect');
    t.gens = await startGenerators('relay', 'relay', relay.devicePort, prov.devices, P.genWorkers);
    targets.push(t);
  }

  // Steps, interleaved per load so that drift on a shared machine hits all three alike.
  const steps = [];
  const saturatedAt = {};
  for (const load of [...P.rates.map((rate) => ({ rate })), ...(NO_MAX ? [] : [{ max: true }])]) {
    const step = { offered_per_s: load.max ? 'max' : load.rate };
    for (const t of targets) {
      // A target that fell behind at a lower offered rate is not loaded harder at a fixed rate:
      // it would only build a backlog that spills into the next measurements. Its max step says
      // what it sustains.
      if (!load.max && saturatedAt[t.name]) {
        step[t.name] = { offered_per_s: load.rate, skipped: `fell behind at ${saturatedAt[t.name]}/s offered` };
        continue;
      }
      step[t.name] = await measure(t, load);
      if (!load.max && step[t.name].delivered_per_s < 0.8 * load.rate) saturatedAt[t.name] = load.rate;
      log(`  ${String(step.offered_per_s).padStart(7)} ${t.name.padEnd(10)} delivered ${step[t.name].delivered_per_s}/s p99 ${step[t.name].p99_ms} ms`);
    }
    steps.push(step);
  }
  const best = (name) => {
    let top = null;
    for (const s of steps) if (s[name] && !s[name].skipped && (!top || s[name].delivered_per_s > top.delivered_per_s)) top = s[name];
    return top;
  };
  const sockpitMax = best('sockpit');
  if (!sockpitMax) throw new Error('no closed-loop step was measured (--no-max and no --set=rates=…)');
  const maxRate = sockpitMax.delivered_per_s;

  // Half of sockpit's maximum (only with --set=halfLoad=1; the open loop measures latency now).
  const half = Math.round(maxRate / 2);
  let halfStep = null;
  if (P.halfLoad) {
    halfStep = { offered_per_s: half, note: "half of sockpit's highest delivered rate" };
    for (const t of targets) {
      halfStep[t.name] = await measure(t, { rate: half });
      log(`  half ${half}/s ${t.name.padEnd(10)} p99 ${halfStep[t.name].p99_ms} ms`);
    }
  }

  // Every reading sockpit accepted is in the database (and was acknowledged as stored).
  const g = await genStats(sockpit.gens, false);
  let rows = db.count();
  for (let i = 0; i < 50 && rows < g.total_sent; i++) {
    await sleep(200);
    rows = db.count();
  }
  const gAfter = await genStats(sockpit.gens, false);
  const verification = { readings_sent: gAfter.total_sent, rows_in_database: rows, stored_acks: gAfter.total_stored, all_stored: rows === gAfter.total_sent && gAfter.total_stored === gAfter.total_sent };

  // Command round trip, one at a time, with background telemetry at P.commandLevels % of the maximum.
  log(`command round trip: ${P.commands} commands at ${P.commandLevels.join('/')} % of ${maxRate}/s`);
  const cmdDevices = prov.devices.filter((_, i) => i % Math.max(1, Math.floor(prov.devices.length / 50)) === 0).map((d) => d.id);
  const levels = [];
  for (const pct of NO_COMMANDS ? [] : P.commandLevels) {
    const rate = Math.round((maxRate * pct) / 100);
    await genLoad(sockpit.gens, { rate });
    await sleep(P.warmupMs);
    const watch = new ProcWatch([server.pid]);
    const r = await sockpit.sinks[0].call('commands', { n: P.commands, deviceIds: cmdDevices, gapMs: 25 }, 10 * 60_000);
    const usage = watch.stop();
    await genLoad(sockpit.gens, { rate: 0 });
    levels.push({ load_pct: pct, background_per_s: rate, ...r, server_cpu_pct: usage.cpu_pct });
    log(`  ${pct}% (${rate}/s): p50 ${r.p50_ms} p99 ${r.p99_ms} max ${r.max_ms} ms ${JSON.stringify(r.failures)}`);
    await drain(sockpit);
  }

  for (const t of targets) {
    await Promise.all([...t.gens, ...t.sinks].map((w) => w.stop()));
  }
  db.close();
  await stopProcess(server.child);
  if (mosq.child) await stopProcess(mosq.child);
  if (relay) await stopProcess(relay.child);

  const conditions = `closed loop: ${P.devices} devices (raw TCP, ${P.genWorkers} generator processes) → one receiver, each device writing 32 readings per write whenever its socket has less than 16 KiB unsent (sockpit: and fewer than 128 readings unanswered); each reading ~100 B JSON ({"type":"telemetry","id",data:{t,seq,temp,hum}}), base64 lines for sockpit and the relay, QoS 0 PUBLISH to d/<id>/t for Mosquitto; ${P.windowMs / 1000} s window after ${P.warmupMs / 1000} s warm-up per step; loopback, all processes on one ${results.machine.nproc}-core machine`;
  const summary = (name, s) =>
    s && {
      delivered_per_s: s.delivered_per_s,
      p99_ms: s.p99_ms,
      p50_ms: s.p50_ms,
      max_ms: s.max_ms,
      at_offered_per_s: s.offered_per_s,
      ...(name === 'sockpit' ? { stored_per_s: s.stored_per_s, all_readings_stored: verification.all_stored } : {}),
      server_cpu_pct: s.server_cpu_pct,
      server_rss_mib: s.server_rss_mib,
      conditions: `highest delivered rate over the steps (${steps.map((x) => x.offered_per_s).join(', ')} msg/s offered); p50/p99/max device→receiver latency in that same step. ${conditions}`,
    };
  const ingest = {
    conditions,
    sockpit: summary('sockpit', sockpitMax),
    mosquitto: peers.mosquitto ?? summary('mosquitto', best('mosquitto')),
    bare_relay: relay ? summary('bare_relay', best('bare_relay')) : { not_run: 'skipped (--peers=none)' },
    storage_check: verification,
    steps,
    ...(halfStep ? { half_load_step: halfStep } : {}),
  };
  ingest.ratios = {};
  for (const peer of ['mosquitto', 'bare_relay']) {
    const p = ingest[peer];
    if (!p || p.not_run) continue;
    ingest.ratios[`sockpit_vs_${peer}`] = {
      delivered: round(ingest.sockpit.delivered_per_s / p.delivered_per_s, 3),
      p99_at_max: p.p99_ms ? round(ingest.sockpit.p99_ms / p.p99_ms, 2) : null,
      ...(halfStep ? { p99_at_half_load: halfStep[peer]?.p99_ms ? round(halfStep.sockpit.p99_ms / halfStep[peer].p99_ms, 2) : null } : {}),
      note: 'delivered: sockpit ÷ peer (higher is better for sockpit); p99: sockpit ÷ peer (lower is better)',
    };
  }
  results.ingest = ingest;
  if (halfStep) results.latency_at_half_load = {
    offered_per_s: half,
    delivered_per_s: halfStep.sockpit.delivered_per_s,
    p50_ms: halfStep.sockpit.p50_ms,
    p99_ms: halfStep.sockpit.p99_ms,
    max_ms: halfStep.sockpit.max_ms,
    conditions: `sockpit at half of its highest delivered rate (${maxRate}/s), device→dashboard, one dashboard in the fleet room. ${conditions}`,
  };
  const head = levels.find((l) => l.load_pct === 50) ?? levels[0];
  if (head) results.command_rtt = {
    p50_ms: head.p50_ms,
    p99_ms: head.p99_ms,
    max_ms: head.max_ms,
    n: head.n,
    load_pct: head.load_pct,
    levels,
    conditions: `dashboard emits command:send (togglerele) → device receives fromservertonode and acks → dashboard gets command:status "acked"; ${P.commands} commands one at a time, 25 ms apart, over ${cmdDevices.length} devices; headline at ${head.load_pct} % of the closed-loop maximum as background telemetry (${head.background_per_s}/s from ${P.devices} devices, one reading per write); under the open loop's fixed rates see open_loop (a click every 100 ms)`,
  };
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: idle connections

async function connectionsScenario() {
  results.connections = await idleConnections({ n: P.connections, tls: false });
  if (!NO_TLS) results.connections_tls = await idleConnections({ n: P.tlsConnections, tls: true });
}

/**
 * Idle device connections (plain TCP lines, or TCP lines over TLS to DEVICE_TLS_PORT trusting the
 * CA the server made in DATA_DIR/tls/ca.pem): RSS per connection once they have idled.
 */
async function idleConnections({ n, tls }) {
  const kind = tls ? 'TLS' : 'plain';
  log(`connections: ${n} idle ${kind} device connections over ${P.connWorkers} processes`);
  const dataDir = path.join(runDir, tls ? 'conn-tls-data' : 'conn-data');
  const prov = await provision({ DATA_DIR: dataDir, BCRYPT_ROUNDS: '4' }, {
    devices: { prefix: 'idle-', count: n },
    users: { prefix: 'bench', count: 1, password: PASSWORD, role: 'admin' },
  });
  // 1,000 connections per source address 127.0.0.2, .3, …: ephemeral ports stay plentiful.
  prov.devices.forEach((d, i) => (d.localAddress = `127.0.0.${2 + Math.floor(i / 1000)}`));
  const server = await startSockpit(tls ? 'sockpit-connections-tls' : 'sockpit-connections', { dataDir, extraEnv: tls ? { DEVICE_TLS_PORT: String(await freePort()) } : {} });
  const port = tls ? server.tlsPort : server.devicePort;
  const extra = tls ? { tls: { ca: fs.readFileSync(path.join(dataDir, 'tls', 'ca.pem'), 'utf8') } } : {};
  const sink = new Worker(`connections-${kind}-dashboard`, path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'sockpit', baseUrl: server.baseUrl, users: prov.users }, { logDir });
  await sink.call('connect');
  await sleep(1000);
  const before = procSample(server.pid);
  const workers = split(prov.devices, P.connWorkers).map((ds, i) => new Worker(`idle-${kind}-gen${i}`, path.join(ROOT, 'bench/workers/devices.mjs'), { target: 'sockpit', port, devices: ds, tag: 'idle', ...extra }, { logDir }));
  await Promise.all(workers.map((w) => w.call('stats'))); // the workers have started before the clock does
  const t0 = performance.now();
  const r = await Promise.all(workers.map((w) => w.call('connect', { concurrency: 200, timeoutMs: 150_000 }, 200_000)));
  const acceptS = (performance.now() - t0) / 1000;
  const ready = sum(r.map((x) => x.ready));
  // Idle connections: RSS once the server has been idle for a while (V8's memory reducer collects
  // the garbage of the handshake burst ~8 s after it), sampled every second; the peak is reported too.
  const series = [];
  for (let s = 0; s < P.idleSettleS; s++) {
    await sleep(1000);
    series.push(procSample(server.pid).rssKib);
  }
  const after = procSample(server.pid);
  const fleet = await sink.call('fleet');
  const g = await genStats(workers);
  const failures = {};
  for (const x of r) for (const [k, v] of Object.entries(x.failures)) failures[k] = (failures[k] ?? 0) + v;
  const out = {
    n,
    transport: tls ? 'tcp+tls' : 'tcp',
    ready,
    online_in_dashboard: fleet.online,
    all_online: fleet.online === n && ready === n,
    accept_s: round(acceptS, 2),
    accepted_per_s: Math.round(ready / acceptS),
    rss_before_mib: round(before.rssKib / 1024, 1),
    rss_after_mib: round(after.rssKib / 1024, 1),
    rss_per_conn_kib: round((after.rssKib - before.rssKib) / Math.max(1, ready), 2),
    rss_peak_mib: round(Math.max(after.rssKib, ...series) / 1024, 1),
    rss_per_conn_kib_at_peak: round((Math.max(after.rssKib, ...series) - before.rssKib) / Math.max(1, ready), 2),
    rss_idle_series_mib: series.map((k) => round(k / 1024, 1)),
    // The figure earlier reference runs took (after 20 s idle), for comparison with them.
    rss_per_conn_kib_after_20s: series.length >= 20 ? round((series[19] - before.rssKib) / Math.max(1, ready), 2) : undefined,
    server_cpu_s_to_accept: round(after.cpu - before.cpu, 2),
    closed_by_server: g.closed,
    failures: Object.keys(failures).length ? failures : undefined,
    conditions: `${n} devices with real tokens, each a TCP connection${tls ? ' over TLS (DEVICE_TLS_PORT, the server\'s own certificate, the client trusting DATA_DIR/tls/ca.pem)' : ''} that says hello and then stays idle, opened by ${workers.length} client processes (200 handshakes in flight each) from ${Math.ceil(n / 1000)} source addresses 127.0.0.2…; RSS of the server process after all are online and ${P.idleSettleS} s idle minus before (sampled each second: rss_idle_series_mib; V8 collects the garbage of the handshake burst several seconds after it, so the figure right after the burst, rss_per_conn_kib_at_peak, is higher); "online" counted from fleet:list of a logged-in dashboard`,
  };
  log(`  ${ready}/${n} ready in ${acceptS.toFixed(1)} s, ${out.rss_per_conn_kib} KiB/conn, ${fleet.online} online`);
  await Promise.all([...workers, sink].map((w) => w.stop()));
  await stopProcess(server.child);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Scenario 5: many dashboards, one busy device

async function dashboardsScenario() {
  const n = P.dashboards;
  const rate = 100;
  log(`scenario 5: ${n} dashboards watching one device at ${rate} msg/s`);
  const dataDir = path.join(runDir, 'dash-data');
  const prov = await provision({ DATA_DIR: dataDir, BCRYPT_ROUNDS: '4' }, {
    devices: { prefix: 'busy-', count: 1 },
    users: { prefix: 'viewer', count: n, password: PASSWORD, role: 'viewer' },
  });
  const server = await startSockpit('sockpit-dashboards', { dataDir, extraEnv: { LOGIN_MAX_ATTEMPTS: '10000' } });
  const deviceId = prov.devices[0].id;
  const sinks = split(prov.users, P.dashWorkers).map((users, i) => new Worker(`dash${i}`, path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'sockpit', baseUrl: server.baseUrl, users, watch: deviceId }, { logDir }));
  const t0 = performance.now();
  const c = await Promise.all(sinks.map((s) => s.call('connect', { concurrency: 10 }, 300_000)));
  const connected = sum(c.map((x) => x.connected));
  const connectS = (performance.now() - t0) / 1000;
  if (connected < n) log(`  only ${connected}/${n} dashboards connected: ${JSON.stringify(c.find((x) => x.errors)?.errors)}`);
  const gens = await startGenerators('busy', 'sockpit', server.devicePort, prov.devices, 1);
  await genLoad(gens, { rate });
  await sleep(2000);
  await Promise.all([genStats(gens, true), sinkWindow(sinks, true)]);
  const watch = new ProcWatch([server.pid]);
  const w0 = performance.now();
  await sleep(P.dashWindowMs);
  const [g, w] = await Promise.all([genStats(gens, true), sinkWindow(sinks, true)]);
  const secs = (performance.now() - w0) / 1000;
  const usage = watch.stop();
  const lat = w.hist.summary();
  results.dashboards = {
    n,
    connected,
    login_and_connect_s: round(connectS, 1),
    device_rate_per_s: Math.round(g.sent / secs),
    delivered_per_s: Math.round(w.received / secs),
    expected_per_s: Math.round((g.sent / secs) * connected),
    per_dashboard_per_s: round(w.received / secs / Math.max(1, connected), 1),
    p50_ms: lat.p50_ms,
    p99_ms: lat.p99_ms,
    max_ms: lat.max_ms,
    server_cpu_pct: usage.cpu_pct,
    server_rss_mib: usage.rss_mib,
    conditions: `${n} users each logged in through the form and holding one socket.io client (websocket transport) that watches device ${deviceId}; ${P.dashWorkers} client processes; the device sends ${rate} readings/s; device→dashboard latency over a ${P.dashWindowMs / 1000} s window after 2 s warm-up`,
  };
  log(`  delivered ${results.dashboards.delivered_per_s}/s of ${results.dashboards.expected_per_s}/s, p99 ${lat.p99_ms} ms`);
  await Promise.all([...gens, ...sinks].map((x) => x.stop()));
  await stopProcess(server.child);
}

// ---------------------------------------------------------------------------------------------
// Scenario 6: two instances and Redis (only when REDIS_URL mode works)

async function multiScenario() {
  log('scenario 6: two instances and Redis');
  if (!fs.existsSync(REDIS_SERVER)) {
    results.multi_instance = { not_run: `${REDIS_SERVER} is missing` };
    return;
  }
  const redisPort = await freePort();
  const redis = startProcess('redis', REDIS_SERVER, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { logDir });
  try {
    await waitForPort(redisPort, { child: redis });
    const dataDir = path.join(runDir, 'multi-data');
    const n = Math.min(P.devices, 200);
    const prov = await provision({ DATA_DIR: dataDir, BCRYPT_ROUNDS: '4' }, {
      devices: { prefix: 'multi-', count: n },
      users: { prefix: 'bench', count: 1, password: PASSWORD, role: 'operator' },
    });
    const extraEnv = { REDIS_URL: `redis://127.0.0.1:${redisPort}`, SESSION_SECRET: 'bench-session-secret-0123456789' };
    let a;
    let b;
    try {
      a = await startSockpit('sockpit-multi-a', { dataDir, extraEnv });
      b = await startSockpit('sockpit-multi-b', { dataDir, extraEnv });
    } catch (err) {
      const child = (a ?? {}).child;
      const reason = (logTail(a?.child ?? { logFile: path.join(logDir, a ? 'sockpit-multi-b.log' : 'sockpit-multi-a.log') }, 2) || err.message).split('\n').pop();
      results.multi_instance = { not_run: `REDIS_URL mode did not start: ${reason}` };
      if (child) await stopProcess(child);
      return;
    }
    // Devices on instance B, the dashboard on instance A: telemetry and commands cross Redis.
    const sink = new Worker('multi-dashboard', path.join(ROOT, 'bench/workers/sink.mjs'), { target: 'sockpit', baseUrl: a.baseUrl, users: prov.users }, { logDir });
    await sink.call('connect');
    const gens = await startGenerators('multi', 'sockpit', b.devicePort, prov.devices, P.genWorkers);
    const db = openDb(dataDir);
    const t = { name: 'sockpit_multi', gens, sinks: [sink], pid: b.pid, db };
    const max = await measure(t, { max: true });
    const half = await measure(t, { rate: Math.round(max.delivered_per_s / 2) });
    await genLoad(gens, { rate: Math.round(max.delivered_per_s / 2) });
    await sleep(P.warmupMs);
    const cmd = await sink.call('commands', { n: P.commands, deviceIds: prov.devices.slice(0, 20).map((d) => d.id), gapMs: 25 }, 10 * 60_000);
    await genLoad(gens, { rate: 0 });
    results.multi_instance = {
      ingest_max: max,
      half_load: half,
      command_rtt_at_50: cmd,
      conditions: `two sockpit processes sharing Redis (own redis-server on loopback) and one SQLite file (WAL); ${n} devices on instance B, the dashboard on instance A; server CPU/RSS are instance B's`,
    };
    db.close();
    await Promise.all([...gens, sink].map((x) => x.stop()));
    await stopProcess(a.child);
    await stopProcess(b.child);
  } finally {
    await stopProcess(redis);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function verdicts() {
  const v = [];
  const r = results;
  const s = r.sustained;
  const ratio = s?.ratio_vs_mosquitto;
  v.push([`sustained open-loop rate ≥ ${TARGETS.sustained_vs_mosquitto}× Mosquitto's`, ratio != null ? `${ratio}× (${s.sockpit.per_s}/s vs ${s.mosquitto.per_s}/s${s.mosquitto.at_least ? ', Mosquitto passed every step' : ''})` : 'n/a', ratio != null ? ratio >= TARGETS.sustained_vs_mosquitto : null]);
  const a = r.at_25k;
  const at = a ? (a.offered_per_s === TARGETS.at_offered_per_s ? `${a.offered_per_s}/s` : `${a.offered_per_s}/s, the nearest step`) : '';
  v.push([`at ${TARGETS.at_offered_per_s}/s offered: dashboard p99 ≤ ${TARGETS.dashboard_p99_ms} ms`, a?.dashboard_p99_ms != null ? `${a.dashboard_p99_ms} ms (${at})` : 'n/a', a?.dashboard_p99_ms != null && a.offered_per_s === TARGETS.at_offered_per_s ? a.dashboard_p99_ms <= TARGETS.dashboard_p99_ms && a.all_stored : null]);
  v.push([`at ${TARGETS.at_offered_per_s}/s offered: click→acked p99 ≤ ${TARGETS.click_acked_p99_ms} ms`, a?.click_p99_ms != null ? `${a.click_p99_ms} ms (${at})` : 'n/a', a?.click_p99_ms != null && a.offered_per_s === TARGETS.at_offered_per_s ? a.click_p99_ms <= TARGETS.click_acked_p99_ms : null]);
  const cpu = r.cpu_per_reading;
  v.push([`CPU per stored reading ≤ ${TARGETS.cpu_us_per_reading} µs at ${TARGETS.at_offered_per_s}/s`, cpu?.sockpit_us != null ? `${cpu.sockpit_us} µs (${cpu.at_offered_per_s}/s${cpu.at_offered_per_s === TARGETS.at_offered_per_s ? '' : ', the nearest step'}; Mosquitto ${cpu.mosquitto_us ?? '-'} µs)` : 'n/a', cpu?.sockpit_us != null && cpu.at_offered_per_s === TARGETS.at_offered_per_s ? cpu.sockpit_us <= TARGETS.cpu_us_per_reading : null]);
  const kib = r.connections?.rss_per_conn_kib;
  v.push([`≤ ${TARGETS.rss_per_conn_kib} KiB RSS per idle device (${r.connections?.n ?? '?'})`, kib != null ? `${kib} KiB` : 'n/a', kib != null ? kib <= TARGETS.rss_per_conn_kib && r.connections.all_online : null]);
  const tkib = r.connections_tls?.rss_per_conn_kib;
  v.push([`≤ ${TARGETS.rss_per_tls_conn_kib} KiB RSS per idle TLS device (${r.connections_tls?.n ?? '?'})`, tkib != null ? `${tkib} KiB` : 'n/a', tkib != null ? tkib <= TARGETS.rss_per_tls_conn_kib && r.connections_tls.all_online : null]);
  const d = r.dashboards?.p99_ms;
  v.push([`${r.dashboards?.n ?? '?'} dashboards p99 ≤ ${TARGETS.dashboards_p99_ms} ms`, d != null ? `${d} ms` : 'n/a', d != null ? d <= TARGETS.dashboards_p99_ms && r.dashboards.delivered_per_s >= 0.99 * r.dashboards.expected_per_s : null]);
  return v;
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ')).join('\n');
}

const ms3 = (a, b, c) => (a == null ? '-' : `${a}/${b}/${c}`);

function report() {
  const out = [];
  const m = results.machine;
  out.push(`sockpit bench ${QUICK ? '(--quick) ' : ''}— ${m.nproc} × ${m.cpu_model}, ${m.ram_gib} GiB, Node ${m.node}, ${results.started_at}`);
  if (results.open_loop) {
    out.push('', `1. Open loop: ${P.openDevices} devices per target, one reading per write; sockpit: one dashboard, a click every ${P.clickEveryMs} ms (latency ms p50/p99/max; stored = rows and answers ÷ sent in the step)`);
    const rows = [['offered/s', 'target', 'sent/s', 'got/s', 'stored', 'received', 'p50/p99/max', 'click p50/p99/max', 'clicks', 'cpu %', 'µs/reading', 'ok']];
    for (const s of results.open_loop.steps) {
      for (const [name, r] of Object.entries(s)) {
        if (name === 'offered_per_s') continue;
        if (r.skipped) {
          rows.push([s.offered_per_s, name, '', '', '', '', '', '', '', '', '', `skipped: ${r.skipped}`]);
          continue;
        }
        const tt = r.step_totals;
        rows.push([
          s.offered_per_s,
          name,
          r.sent_per_s,
          r.stored_per_s ?? r.received_per_s,
          tt.rows != null ? (r.all_stored ? 'all' : `${tt.rows}/${tt.stored_acks}/${tt.sent}`) : '-',
          r.all_delivered ? 'all' : `${tt.received}/${tt.sent}`,
          ms3(r.p50_ms, r.p99_ms, r.max_ms),
          r.click ? ms3(r.click.p50_ms, r.click.p99_ms, r.click.max_ms) : '-',
          r.click ? `${r.click.acked}/${r.click.sent}` : '-',
          r.server_cpu_pct,
          r.cpu_us_per_reading,
          r.ok ? 'yes' : 'no',
        ]);
      }
    }
    out.push(table(rows));
    const sus = results.sustained;
    const names = Object.keys(sus).filter((k) => sus[k] && typeof sus[k] === 'object' && ('per_s' in sus[k] || 'not_run' in sus[k]));
    out.push(`  sustained: ${names.map((k) => `${k} ${sus[k].not_run ? 'not run' : `${sus[k].at_least ? '≥ ' : ''}${sus[k].per_s}/s`}`).join(', ')}`);
    out.push(`  sockpit ÷ Mosquitto: ${sus.ratio_vs_mosquitto ?? 'n/a'}${sus.ratio_note ? ` (${sus.ratio_note})` : ''}`);
    const failedSteps = [];
    for (const s of results.open_loop.steps) for (const [name, r] of Object.entries(s)) if (name !== 'offered_per_s' && r.failed?.length) failedSteps.push(`${s.offered_per_s} ${name}: ${r.failed.join('; ')}`);
    if (failedSteps.length) out.push('  why steps did not count:', ...failedSteps.map((x) => `    ${x}`));
  }
  if (results.ingest) {
    const i = results.ingest;
    out.push('', `2. Closed loop: ${P.devices} devices → 1 receiver, 32 readings per write (delivered/s; for sockpit the lower of dashboard/s and stored/s; latency p50/p99/max ms)`);
    const rows = [['offered/s', 'sockpit', 'dash/s', 'stored/s', 'p50', 'p99', 'max', 'cpu%', 'rss MiB', 'mosquitto', 'p99', 'relay', 'p99']];
    for (const s0 of [...i.steps, ...(i.half_load_step ? [{ ...i.half_load_step, offered_per_s: `${i.half_load_step.offered_per_s} (½)` }] : [])]) {
      const s = { ...s0 };
      for (const k of ['sockpit', 'mosquitto', 'bare_relay']) if (s[k]?.skipped) s[k] = { delivered_per_s: 'skip', p99_ms: '-' };
      const a = s.sockpit;
      rows.push([s.offered_per_s, a.delivered_per_s, a.dashboard_per_s, a.stored_per_s, a.p50_ms, a.p99_ms, a.max_ms, a.server_cpu_pct, a.server_peak_rss_mib, s.mosquitto?.delivered_per_s ?? '-', s.mosquitto?.p99_ms ?? '-', s.bare_relay?.delivered_per_s ?? '-', s.bare_relay?.p99_ms ?? '-']);
    }
    out.push(table(rows));
    for (const [k, r] of Object.entries(i.ratios)) out.push(`  ${k}: delivered ${r.delivered}×, p99 ${r.p99_at_max}× at max${r.p99_at_half_load !== undefined ? `, ${r.p99_at_half_load}× at sockpit's half load` : ''}`);
    const c = i.storage_check;
    out.push(`  storage check: ${c.readings_sent} readings sent, ${c.rows_in_database} rows, ${c.stored_acks} "stored" acks → ${c.all_stored ? 'all stored' : 'MISSING ROWS'}`);
  }
  if (results.command_rtt) {
    out.push('', '3. Command round trip, one at a time (ms)');
    out.push(table([['background', 'per s', 'n', 'p50', 'p99', 'max', 'failures'], ...results.command_rtt.levels.map((l) => [`${l.load_pct} %`, l.background_per_s, l.n, l.p50_ms, l.p99_ms, l.max_ms, JSON.stringify(l.failures)])]));
  }
  for (const c of [results.connections, results.connections_tls]) {
    if (!c) continue;
    out.push('', `4. Connections (${c.transport}): ${c.ready}/${c.n} ready in ${c.accept_s} s (${c.accepted_per_s}/s), ${c.online_in_dashboard} online in the dashboard, RSS ${c.rss_before_mib} → ${c.rss_after_mib} MiB = ${c.rss_per_conn_kib} KiB/connection (${c.rss_per_conn_kib_at_peak} right after the burst)`);
  }
  if (results.dashboards) {
    const d = results.dashboards;
    out.push('', `5. Dashboards: ${d.connected}/${d.n} watching one device at ${d.device_rate_per_s}/s: delivered ${d.delivered_per_s}/s of ${d.expected_per_s}/s, p50 ${d.p50_ms} p99 ${d.p99_ms} max ${d.max_ms} ms, server CPU ${d.server_cpu_pct} %`);
  }
  if (results.multi_instance) {
    const mi = results.multi_instance;
    out.push('', `6. Multi-instance: ${mi.not_run ? `not run: ${mi.not_run}` : `max ${mi.ingest_max.delivered_per_s}/s, p99 at half load ${mi.half_load.p99_ms} ms, command p99 ${mi.command_rtt_at_50.p99_ms} ms`}`);
  }
  out.push('', 'Targets');
  out.push(table([['target', 'measured', 'met'], ...verdicts().map(([a, b, c]) => [a, b, c === null ? '-' : c ? 'yes' : 'NO'])]));
  return out.join('\n');
}

async function main() {
  log(`run dir ${runDir}${QUICK ? ' (quick)' : ''}`);
  if (!fs.existsSync(path.join(ROOT, 'dist/main.js'))) throw new Error('dist/main.js is missing: run `npm run bench` (it builds first) or `npm run build`');
  await buildDeviceClient(); // for the device workers (bench/workers/devices.mjs)
  OPENGEN = NODE_GENERATOR ? false : Boolean(buildOpengen()); // the open loop's TCP generator (bench/workers/cgen.mjs)
  const scenarios = [
    ['open', openLoopScenario],
    ['ingest', ingestScenario],
    ['connections', connectionsScenario],
    ['dashboards', dashboardsScenario],
    ['multi', multiScenario],
  ];
  for (const [name, fn] of scenarios) {
    if (!wants(name)) continue;
    const t0 = Date.now();
    try {
      await fn();
    } catch (err) {
      log(`scenario ${name} failed: ${err.stack ?? err.message}`);
      results.errors = { ...(results.errors ?? {}), [name]: err.message };
    }
    log(`  (${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  results.duration_s = Math.round((Date.now() - startedAt.getTime()) / 1000);
  results.verdicts = verdicts().map(([target, measured, met]) => ({ target, measured, met }));
  const text = report();
  console.log(text);
  const dir = path.join(ROOT, 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  const json = JSON.stringify(results, null, 2) + '\n';
  fs.writeFileSync(path.join(dir, 'latest.json'), json);
  const stamp = startedAt.toISOString().replace(/[:]/g, '-').replace(/\..+/, '');
  fs.writeFileSync(path.join(dir, `${stamp}${QUICK ? '-quick' : ''}.json`), json);
  log(`wrote bench/results/latest.json and bench/results/${stamp}${QUICK ? '-quick' : ''}.json`);
  if (PROFILE) log(`server CPU profiles in ${path.join(runDir, 'profiles')}`);
  if (!KEEP && !PROFILE && !results.errors) fs.rmSync(runDir, { recursive: true, force: true });
  else log(`kept ${runDir}`);
  return results.errors ? 1 : 0;
}

const deadline = setTimeout(() => {
  log('the bench ran past its time limit; stopping');
  killAll();
  process.exit(2);
}, (QUICK ? 10 : 45) * 60_000);
deadline.unref();

main().then(
  (code) => {
    killAll();
    process.exit(code);
  },
  (err) => {
    log(err.stack ?? err.message);
    killAll();
    process.exit(1);
  },
);
