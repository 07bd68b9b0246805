#!/usr/bin/env node
// The checks of .ci/topology, against real processes: node tests/cluster/topology.mjs TOPOLOGY.json
// (the file .ci/topology writes: ports, pids, tokens). A raw TCP device speaks docs/protocol.md and a
// socket.io-client logs in like the page does; both come through nginx. Prints one PASS/FAIL line
// per check and exits non-zero when any failed.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { io } from 'socket.io-client';

const require = createRequire(import.meta.url);
const pg = require('pg');

const topo = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const nginxHttp = `http://127.0.0.1:${topo.nginx.http}`;
const direct = (name) => `http://127.0.0.1:${topo.apps[name].http}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cleanups = [];
let failures = 0;

// ---- harness ----

/** Runs one check; a thrown error (or the time limit) is a FAIL with its message. */
async function check(name, fn, limitMs = 30_000) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result within ${limitMs / 1000} s`)), limitMs);
  });
  const started = Date.now();
  try {
    const note = await Promise.race([fn(), limit]);
    console.log(`PASS ${name}${note ? ` (${note})` : ''} [${((Date.now() - started) / 1000).toFixed(1)} s]`);
    return true;
  } catch (err) {
    failures++;
    console.log(`FAIL ${name}: ${err.message}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function waitFor(what, probe, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}

// ---- a device: raw TCP, base64 JSON lines (docs/protocol.md) ----

class Device {
  /** Every message received, in order. */
  log = [];
  /** Messages received that no next() has taken yet. */
  received = [];
  closed = false;
  #buf = '';
  #waiters = [];
  #onClose = [];

  constructor(socket) {
    this.socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (d) => this.#data(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const f of this.#onClose) f();
    });
    cleanups.push(() => socket.destroy());
  }

  static connect(port) {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new Device(s)));
      s.once('error', reject);
    });
  }

  static async hello(port, { id, token }) {
    const d = await Device.connect(port);
    d.send({ type: 'hello', device: id, token, firmware: 'topology/1' });
    const first = await d.next(() => true);
    assert(first.type === 'welcome', `hello answered ${JSON.stringify(first)}`);
    return d;
  }

  send(msg) {
    this.socket.write(Buffer.from(JSON.stringify(msg)).toString('base64') + '\n');
  }

  /** The next message matching, already received or still to come. */
  next(match, timeoutMs = 10_000) {
    const i = this.received.findIndex(match);
    if (i >= 0) return Promise.resolve(this.received.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const w = { match, resolve };
      this.#waiters.push(w);
      setTimeout(() => {
        const j = this.#waiters.indexOf(w);
        if (j < 0) return;
        this.#waiters.splice(j, 1);
        reject(new Error(`device got no matching message within ${timeoutMs / 1000} s`));
      }, timeoutMs);
    });
  }

  waitClosed(timeoutMs = 10_000) {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('device connection still open')), timeoutMs);
      this.#onClose.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  close() {
    this.socket.destroy();
  }

  #data(chunk) {
    this.#buf += chunk;
    let nl;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).replace(/\r$/, '');
      this.#buf = this.#buf.slice(nl + 1);
      let msg;
      try {
        msg = JSON.parse(line.startsWith('{') ? line : Buffer.from(line, 'base64').toString('utf8'));
      } catch {
        continue;
      }
      this.log.push(msg);
      const w = this.#waiters.findIndex((x) => x.match(msg));
      if (w >= 0) this.#waiters.splice(w, 1)[0].resolve(msg);
      else this.received.push(msg);
    }
  }
}

// ---- a browser: form login with CSRF, then Socket.IO with the session cookie ----

async function login(baseUrl, { username, password }) {
  const cookies = new Map();
  const keep = (res) => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  };
  const header = () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  const page = await fetch(`${baseUrl}/login`, { redirect: 'manual' });
  keep(page);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())?.[1];
  assert(csrf, `no CSRF token on ${baseUrl}/login (status ${page.status})`);
  const res = await fetch(`${baseUrl}/login`, {
    method: 'POST',
    headers: { cookie: header(), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password, _csrf: csrf }).toString(),
    redirect: 'manual',
  });
  keep(res);
  assert(res.status === 303, `login at ${baseUrl} answered ${res.status}`);
  return header();
}

function connectSocket(baseUrl, cookie, { localAddress, transports = ['websocket', 'polling'] } = {}) {
  const socket = io(baseUrl, {
    transports,
    extraHeaders: { cookie, origin: baseUrl },
    localAddress,
    reconnection: false,
    forceNew: true,
  });
  cleanups.push(() => socket.close());
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.close();
      reject(new Error(`socket at ${baseUrl} refused: ${err.message}`));
    });
  });
}

async function emitAck(socket, event, payload) {
  return socket.timeout(8000).emitWithAck(event, payload);
}

function nextEvent(socket, event, match, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no matching ${event} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const on = (p) => {
      if (!match(p)) return;
      clearTimeout(t);
      socket.off(event, on);
      resolve(p);
    };
    socket.on(event, on);
  });
}

/** Clicks Send Action to Node and follows it to `acked` on the clicking socket. */
async function roundTrip(socket, device, deviceId) {
  const res = await emitAck(socket, 'command:send', { deviceId, action: 'togglerele' });
  assert(res.ok, `command:send answered ${JSON.stringify(res)}`);
  const acked = nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'acked');
  const line = await device.next((m) => m.type === 'fromservertonode' && m.id === res.command.id);
  assert(line.msg === 'action' && line.action === 'togglerele', `device got ${JSON.stringify(line)}`);
  device.send({ type: 'ack', id: line.id, ok: true, result: { relay: true } });
  await acked;
  return res.command;
}

// ---- looking at the instances ----

async function metric(app, name) {
  const text = await (await fetch(`${direct(app)}/metrics`)).text();
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** The instance (of app1, app2) where a metric reads `n`, once the other reads 0. */
async function whichHas(name, apps = ['app1', 'app2']) {
  return waitFor(`one instance with ${name}`, async () => {
    const values = await Promise.all(apps.map((a) => metric(a, name)));
    const nonZero = apps.filter((_, i) => values[i] > 0);
    return nonZero.length === 1 ? nonZero[0] : null;
  });
}

async function readyz(app) {
  const res = await fetch(`${direct(app)}/readyz`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.json() };
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function sql(text, params = []) {
  const c = new pg.Client({ connectionString: topo.databaseUrl });
  await c.connect();
  try {
    return (await c.query(text, params)).rows;
  } finally {
    await c.end();
  }
}

// ---- the checks ----

const user = topo.user;
const tokens = topo.devices;
const other = (app) => (app === 'app1' ? 'app2' : 'app1');
const state = {};

await check('round trip: a device through nginx lands on one instance, a logged-in socket through nginx on the other', async () => {
  state.d1 = await Device.hello(topo.nginx.device, tokens.d1);
  state.holder = await whichHas('sockpit_devices_online');
  state.survivor = other(state.holder);
  state.cookie = await login(nginxHttp, user);
  // nginx hashes the client address for Socket.IO; find a loopback address that it sends to the
  // instance without the device.
  for (let i = 1; i < 64 && !state.s1; i++) {
    const socket = await connectSocket(nginxHttp, state.cookie, { localAddress: `127.0.0.${i}` });
    const on = await whichHas('sockpit_sockets_connected');
    if (on === state.survivor) state.s1 = socket;
    else {
      socket.close();
      await waitFor('the socket to leave', async () => (await metric(on, 'sockpit_sockets_connected')) === 0);
    }
  }
  assert(state.s1, 'no client address reached the other instance');
  return `device on ${state.holder}, socket on ${state.survivor}`;
});

await check('round trip: a session made on one instance is valid on the other (page and socket)', async () => {
  const cookie = await login(direct('app1'), user);
  const page = await fetch(`${direct('app2')}/`, { headers: { cookie }, redirect: 'manual' });
  assert(page.status === 200, `app2 answered ${page.status} to app1's session`);
  const socket = await connectSocket(direct('app2'), cookie);
  const list = await emitAck(socket, 'fleet:list', {});
  assert(list.ok, 'fleet:list refused');
  socket.close();
});

await check('round trip: Send Action from the socket reaches the device on the other instance and comes back acked', async () => {
  assert(state.s1 && state.d1, 'no device and socket from the first check');
  const cmd = await roundTrip(state.s1, state.d1, 'topo-d1');
  assert(cmd.status === 'sent', `the click's ack says ${cmd.status}, not sent`);
});

await check('round trip: the other way, device on the second instance and socket on the first', async () => {
  assert(state.holder, 'placement unknown');
  const d2 = await Device.hello(topo.apps[state.survivor].device, tokens.d2);
  const s2 = await connectSocket(direct(state.holder), state.cookie);
  await roundTrip(s2, d2, 'topo-d2');
  s2.close();
  d2.close();
});

await check('round trip: Socket.IO long-polling through nginx stays on one instance', async () => {
  const s = await connectSocket(nginxHttp, state.cookie, { transports: ['polling'] });
  for (let i = 0; i < 5; i++) assert((await emitAck(s, 'fleet:list', {})).ok, 'fleet:list over polling failed');
  s.close();
});

// ---- instance loss ----

const loss = {};
await check('instance loss: kill -9 the instance holding the device; the device reconnects through nginx to the survivor', async () => {
  assert(state.s1 && state.d1, 'no device and socket from the round trip');
  const { s1, d1 } = state;
  loss.statuses = [];
  s1.on('device:status', (s) => {
    if (s.deviceId === 'topo-d1') loss.statuses.push(s.online ? 'online' : 'offline');
  });
  // A command the device receives but never acknowledges: its instance dies holding it `sent`.
  const unacked = await emitAck(s1, 'command:send', { deviceId: 'topo-d1', action: 'togglerele' });
  await d1.next((m) => m.type === 'fromservertonode' && m.id === unacked.command.id);
  loss.unacked = unacked.command.id;

  const offline = nextEvent(s1, 'device:status', (s) => s.deviceId === 'topo-d1' && !s.online, 20_000);
  process.kill(topo.apps[state.holder].pid, 'SIGKILL');
  loss.killedAt = Date.now();
  await d1.waitClosed();
  // Clicks while the device is away wait, queued, whatever the presence still says.
  const early = await emitAck(s1, 'command:send', { deviceId: 'topo-d1', action: 'togglerele' });
  assert(early.ok && early.command.status === 'queued', `click during the loss: ${JSON.stringify(early)}`);
  await offline;
  loss.offlineAfterMs = Date.now() - loss.killedAt;
  const late = await emitAck(s1, 'command:send', { deviceId: 'topo-d1', action: 'changesetting', params: { interval_ms: 500 } });
  assert(late.ok && late.command.status === 'queued', `click after offline: ${JSON.stringify(late)}`);
  loss.queued = [early.command.id, late.command.id];

  const online = nextEvent(s1, 'device:status', (s) => s.deviceId === 'topo-d1' && s.online);
  loss.d1 = await Device.hello(topo.nginx.device, tokens.d1);
  await online;
  assert((await metric(state.survivor, 'sockpit_devices_online')) === 1, 'the device is not on the survivor');
  return `offline announced ${(loss.offlineAfterMs / 1000).toFixed(1)} s after the kill (bound: PRESENCE_TTL_S 5 s + reaper 1 s)`;
}, 45_000);

await check('instance loss: the dashboard saw the device offline, then online', async () => {
  assert(loss.statuses, 'no loss happened');
  const seq = loss.statuses.join(' → ');
  assert(seq === 'offline → online', `device:status sequence was "${seq}"`);
  const list = await emitAck(state.s1, 'fleet:list', {});
  assert(list.devices.find((d) => d.id === 'topo-d1')?.online === true, 'fleet:list does not show it online');
});

await check('instance loss: each command queued while the device was away arrives exactly once and is acked', async () => {
  assert(loss.d1 && loss.queued, 'the device did not come back');
  const acked = loss.queued.map((id) => nextEvent(state.s1, 'command:status', (c) => c.id === id && c.status === 'acked'));
  for (const id of loss.queued) {
    const line = await loss.d1.next((m) => m.type === 'fromservertonode' && m.id === id);
    loss.d1.send({ type: 'ack', id: line.id, ok: true });
  }
  await Promise.all(acked);
  await sleep(1500);
  const got = loss.d1.log.filter((m) => m.type === 'fromservertonode').map((m) => m.id);
  assert(got.length === loss.queued.length, `the device got ${got.length} commands: ${got.join(', ')}`);
  assert(!got.includes(loss.unacked), 'the command sent before the loss was delivered again');
});

await check('instance loss: no command stays sent (the one the dead instance held becomes timeout)', async () => {
  assert(loss.unacked, 'no loss happened');
  await waitFor('no sent commands', async () => (await sql(`SELECT count(*)::int AS n FROM commands WHERE status = 'sent'`))[0].n === 0, 15_000);
  const [row] = await sql('SELECT status FROM commands WHERE id = $1', [loss.unacked]);
  assert(row?.status === 'timeout', `the unacknowledged command is ${row?.status}`);
});

// ---- outages (app3 and app4 share a private Redis; app3 reaches PostgreSQL through a proxy) ----

const out = {};
await check('outage: /readyz is 503 while Redis is unreachable', async () => {
  assert((await readyz('app3')).status === 200, 'app3 not ready before the outage');
  out.cookie = await login(direct('app3'), user);
  out.s3 = await connectSocket(direct('app3'), out.cookie);
  out.s4 = await connectSocket(direct('app4'), out.cookie);
  out.d3 = await Device.hello(topo.apps.app3.device, tokens.d3);
  await waitFor('presence of topo-d3 on app4', async () => (await emitAck(out.s4, 'fleet:list', {})).devices.find((d) => d.id === 'topo-d3')?.online);
  process.kill(Number(fs.readFileSync(topo.privateRedis.pidFile, 'utf8')), 'SIGKILL');
  out.down = true;
  await waitFor('app3 /readyz 503', async () => (await readyz('app3')).status === 503);
  const { body } = await readyz('app3');
  assert(body.redis === 'unreachable' && body.storage === 'ok', `readyz said ${JSON.stringify(body)}`);
});

await check('outage: without Redis an instance keeps serving its own device and dashboard', async () => {
  assert(out.down, 'Redis was not taken away');
  await roundTrip(out.s3, out.d3, 'topo-d3');
  const live = nextEvent(out.s3, 'device:telemetry', (t) => t.deviceId === 'topo-d3' && t.data.t === 21.5);
  out.d3.send({ type: 'telemetry', id: 'outage-1', data: { t: 21.5 } });
  await out.d3.next((m) => m.type === 'stored' && m.id === 'outage-1');
  await live;
  // The other instance cannot reach the device meanwhile; its click waits, queued.
  const res = await emitAck(out.s4, 'command:send', { deviceId: 'topo-d3', action: 'togglerele' });
  assert(res.ok && res.command.status === 'queued', `app4's click: ${JSON.stringify(res)}`);
  out.queued = res.command.id;
  assert(alive(topo.apps.app3.pid) && alive(topo.apps.app4.pid), 'an instance died');
});

await check('outage: when Redis returns the instances recover: ready, queued command delivered, routing across instances', async () => {
  assert(out.down, 'Redis was not taken away');
  const [cmd, ...args] = topo.privateRedis.command;
  await new Promise((resolve, reject) => spawn(cmd, args, { stdio: 'ignore' }).on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`redis-server exited ${code}`)))));
  await waitFor('app3 and app4 ready again', async () => (await readyz('app3')).status === 200 && (await readyz('app4')).status === 200, 15_000);
  if (out.queued) {
    const acked = nextEvent(out.s4, 'command:status', (c) => c.id === out.queued && c.status === 'acked');
    const line = await out.d3.next((m) => m.type === 'fromservertonode' && m.id === out.queued);
    out.d3.send({ type: 'ack', id: line.id, ok: true });
    await acked;
  }
  const cmdView = await roundTrip(out.s4, out.d3, 'topo-d3');
  assert(cmdView.status === 'sent', `app4's click was ${cmdView.status}, not routed to app3`);
});

await check('outage: /readyz is 503 while PostgreSQL is unreachable, and 200 when it is back', async () => {
  process.kill(topo.pgProxyPid, 'SIGUSR1');
  try {
    await waitFor('app3 /readyz 503', async () => (await readyz('app3')).status === 503);
    const { body } = await readyz('app3');
    assert(body.storage === 'unreachable', `readyz said ${JSON.stringify(body)}`);
  } finally {
    process.kill(topo.pgProxyPid, 'SIGUSR2');
  }
  await waitFor('app3 /readyz 200', async () => (await readyz('app3')).status === 200, 15_000);
});

await check('outage: no instance crashed, and no unhandled rejection or uncaught exception was logged', async () => {
  const expected = ['app3', 'app4', state.survivor ?? 'app2'];
  for (const app of expected) assert(alive(topo.apps[app].pid), `${app} is not running`);
  for (const app of Object.keys(topo.apps)) {
    const text = fs.readFileSync(topo.apps[app].log, 'utf8');
    const bad = /unhandled|uncaught|UnhandledPromiseRejection/i.exec(text);
    assert(!bad, `${app}'s log mentions "${bad?.[0]}"`);
  }
});

for (const f of cleanups) {
  try {
    f();
  } catch {
    // Closing what is already closed.
  }
}
process.exit(failures > 0 ? 1 : 0);
