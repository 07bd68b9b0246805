#!/usr/bin/env node
// The checks of .ci/topology, against real processes: node tests/cluster/topology.mjs TOPOLOGY.json
// (the file .ci/topology writes: ports, pids, tokens, CA files). Devices speak docs/protocol.md over
// each transport (raw TCP lines, the `ws` client at /device, the `mqtt` client, and both over TLS
// with the CA `sockpit tls ca` printed) and a socket.io-client logs in like the page does; they
// come through nginx. Prints one PASS/FAIL line per check and exits non-zero when any failed.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import tls from 'node:tls';
import { io } from 'socket.io-client';

const require = createRequire(import.meta.url);
const pg = require('pg');
const { WebSocket } = require('ws');
const mqtt = require('mqtt');

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

// ---- devices: what each received, whatever the transport ----

class Inbox {
  /** Every message received, in order. */
  log = [];
  /** Messages received that no next() has taken yet. */
  received = [];
  closed = false;
  #waiters = [];
  #onClose = [];

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

  /** A message arrived (JSON text, or base64 of it, as docs/protocol.md allows). */
  deliver(text) {
    let msg;
    try {
      msg = JSON.parse(text.startsWith('{') ? text : Buffer.from(text, 'base64').toString('utf8'));
    } catch {
      return;
    }
    this.log.push(msg);
    const w = this.#waiters.findIndex((x) => x.match(msg));
    if (w >= 0) this.#waiters.splice(w, 1)[0].resolve(msg);
    else this.received.push(msg);
  }

  ended() {
    this.closed = true;
    for (const f of this.#onClose) f();
  }

  /** The first message must be `welcome` (after a hello, or at once after handshake authentication). */
  async welcomed() {
    const first = await this.next(() => true);
    assert(first.type === 'welcome', `the device was answered ${JSON.stringify(first)}`);
    return this;
  }
}

/** TCP lines, base64 JSON (docs/protocol.md); `socket` may be a TLS socket. */
class Device extends Inbox {
  #buf = '';

  constructor(socket) {
    super();
    this.socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (d) => this.#data(d));
    socket.on('error', () => {});
    socket.on('close', () => this.ended());
    cleanups.push(() => socket.destroy());
  }

  static connect(port) {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new Device(s)));
      s.once('error', reject);
    });
  }

  /** Over TLS, trusting only `ca`, checking that the certificate names 127.0.0.1. */
  static connectTls(port, ca) {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca }, () => resolve(new Device(s)));
      s.once('error', reject);
    });
  }

  static async hello(port, creds) {
    return (await Device.connect(port)).hello(creds);
  }

  hello({ id, token }) {
    this.send({ type: 'hello', device: id, token, firmware: 'topology/1' });
    return this.welcomed();
  }

  send(msg) {
    this.socket.write(Buffer.from(JSON.stringify(msg)).toString('base64') + '\n');
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
      if (line) this.deliver(line);
    }
  }
}

/** A WebSocket device at /device: one JSON text frame per message (docs/protocol.md, "WebSocket"). */
class WsDevice extends Inbox {
  constructor(ws) {
    super();
    this.ws = ws;
    ws.on('message', (data, isBinary) => {
      if (!isBinary) this.deliver(data.toString('utf8'));
    });
    ws.on('close', () => this.ended());
    cleanups.push(() => ws.terminate());
  }

  /** Handshake authentication: `?device=ID` and `Authorization: Bearer TOKEN`; `welcome` comes at once. */
  static open(url, { id, token }, { headers = {}, localAddress } = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${url}/device?device=${encodeURIComponent(id)}`, {
        headers: { authorization: `Bearer ${token}`, ...headers },
        localAddress,
        handshakeTimeout: 8000,
      });
      const device = new WsDevice(ws);
      ws.once('open', () => resolve(device.welcomed()));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`the handshake was answered HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  close() {
    this.ws.terminate();
  }
}

/** An MQTT 3.1.1 device (docs/protocol.md, "MQTT"): commands arrive on its commands topic, acks and readings go to theirs. */
class MqttDevice extends Inbox {
  constructor(client, id) {
    super();
    this.client = client;
    this.id = id;
    client.on('message', (topic, payload) => {
      if (topic === `sockpit/${id}/commands`) this.deliver(payload.toString('utf8'));
    });
    client.on('close', () => this.ended());
    client.on('error', () => {});
    cleanups.push(() => client.end(true));
  }

  /** CONNECT with username = device id and password = token; `url` is mqtt:// or mqtts://. */
  static connect(url, { id, token }, extra = {}) {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(url, {
        username: id,
        password: token,
        clientId: `${id}-topology`,
        protocolVersion: 4,
        reconnectPeriod: 0,
        connectTimeout: 8000,
        ...extra,
      });
      client.once('connect', () => resolve(new MqttDevice(client, id)));
      client.once('error', (err) => {
        client.end(true);
        reject(err);
      });
    });
  }

  /** Subscribes to its commands topic (QoS 1); queued commands are sent from then on. */
  async listen() {
    const granted = await this.client.subscribeAsync(`sockpit/${this.id}/commands`, { qos: 1 });
    assert(granted[0]?.qos === 1, `SUBACK granted ${JSON.stringify(granted)}`);
  }

  /** Acks go to the ack topic, anything else is a reading; resolves on PUBACK (callers that do not wait see failures in the checks that follow). */
  send(msg) {
    const { id, ok, result } = msg;
    const sent = msg.type === 'ack'
      ? this.client.publishAsync(`sockpit/${this.id}/ack`, JSON.stringify({ id, ok, result }), { qos: 1 })
      : this.client.publishAsync(`sockpit/${this.id}/telemetry`, JSON.stringify(msg), { qos: 1 });
    sent.catch(() => {});
    return sent;
  }

  close() {
    this.client.end(true);
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

/** Device connections an instance holds on one transport (tcp counts TLS lines too; mqtt, MQTT over TLS). */
async function connections(app, transport) {
  const text = await (await fetch(`${direct(app)}/metrics`)).text();
  const m = new RegExp(`^sockpit_device_connections_by_transport\\{transport="${transport}"\\} (\\d+)`, 'm').exec(text);
  assert(m, `${app}'s /metrics has no sockpit_device_connections_by_transport{transport="${transport}"}`);
  return Number(m[1]);
}

/** Opens a device with `open` and finds the instance (of app1, app2) whose count of `transport` connections grew by one. */
async function placed(transport, open) {
  const apps = ['app1', 'app2'];
  const before = await Promise.all(apps.map((a) => connections(a, transport)));
  const device = await open();
  const holder = await waitFor(`one instance counting the ${transport} connection`, async () => {
    const now = await Promise.all(apps.map((a) => connections(a, transport)));
    const grew = apps.filter((_, i) => now[i] === before[i] + 1);
    return grew.length === 1 && apps.every((_, i) => now[i] - before[i] === (apps[i] === grew[0] ? 1 : 0)) ? grew[0] : null;
  });
  return { device, holder };
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

/** A logged-in socket on one instance, reached directly. */
async function socketOn(app) {
  state.cookie ??= await login(nginxHttp, user);
  return connectSocket(direct(app), state.cookie);
}

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

// ---- every device transport through nginx (app1, app2; they share one TLS CA) ----

const tx = {};
const ca = fs.readFileSync(topo.caFiles.app1);

await check('websocket: a device (?device= and Authorization: Bearer) through nginx\'s /device lands on one instance, a socket on the other; Send Action reaches it and comes back acked', async () => {
  // From its own loopback address, with a forged X-Forwarded-For that nginx must not pass on.
  const { device, holder } = await placed('websocket', () =>
    WsDevice.open(`ws://127.0.0.1:${topo.nginx.http}`, tokens.w1, { localAddress: '127.0.0.7', headers: { 'x-forwarded-for': '203.0.113.9' } }),
  );
  tx.ws = { device, holder, transport: 'websocket' };
  const socket = await socketOn(other(holder));
  const cmd = await roundTrip(socket, device, 'topo-w1');
  assert(cmd.status === 'sent', `the click's ack says ${cmd.status}, not sent`);
  socket.close();
  return `device on ${holder}, socket on ${other(holder)}`;
});

await check('websocket: the instance sees the device\'s own address (X-Forwarded-For from nginx), not nginx\'s nor one the device forged', async () => {
  assert(tx.ws, 'no WebSocket device');
  const line = await waitFor('the "device online" log line of topo-w1', async () =>
    fs.readFileSync(topo.apps[tx.ws.holder].log, 'utf8').split('\n').map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return null;
      }
    }).find((l) => l?.msg === 'device online' && l.device === 'topo-w1'),
  );
  assert(line.remote === '127.0.0.7', `the instance logged the device from ${line.remote}`);
  return `remote ${line.remote}`;
});

await check('mqtt: a device through nginx\'s stream port is online on one instance; a command from a socket on the other comes back acked', async () => {
  const { device, holder } = await placed('mqtt', () => MqttDevice.connect(`mqtt://127.0.0.1:${topo.nginx.mqtt}`, tokens.m1));
  tx.mqtt = { device, holder, transport: 'mqtt' };
  await device.listen();
  const socket = await socketOn(other(holder));
  const list = await emitAck(socket, 'fleet:list', {});
  const seen = list.devices.find((d) => d.id === 'topo-m1');
  assert(seen?.online, `the other instance's fleet:list shows ${JSON.stringify(seen)}`);
  const cmd = await roundTrip(socket, device, 'topo-m1');
  assert(cmd.status === 'sent', `the click's ack says ${cmd.status}, not sent`);
  socket.close();
  return `device on ${holder}, socket on ${other(holder)}`;
});

await check('mqtt: a QoS 1 reading through nginx is PUBACKed, and is in PostgreSQL when the PUBACK arrives', async () => {
  assert(tx.mqtt, 'no MQTT device');
  const started = Date.now();
  await tx.mqtt.device.send({ type: 'telemetry', id: 'topology-mqtt-1', data: { t: 23.5 } });
  const ms = Date.now() - started;
  const rows = await sql('SELECT data FROM telemetry WHERE device_id = $1 AND msg_id = $2', ['topo-m1', 'topology-mqtt-1']);
  assert(rows.length === 1, `${rows.length} rows for the reading after its PUBACK`);
  assert(JSON.parse(rows[0].data).t === 23.5, `stored ${rows[0].data}`);
  return `PUBACK after ${ms} ms`;
});

await check('tls: `sockpit tls ca` prints the same CA from either instance\'s DATA_DIR', async () => {
  const a = fs.readFileSync(topo.caFiles.app1, 'utf8');
  const b = fs.readFileSync(topo.caFiles.app2, 'utf8');
  assert(a.includes('BEGIN CERTIFICATE'), `app1's DATA_DIR gave ${JSON.stringify(a.slice(0, 80))}`);
  assert(a === b, 'app1 and app2 print different CAs');
  return `SHA-256 ${new crypto.X509Certificate(a).fingerprint256.slice(0, 17)}…`;
});

await check('tls: a device through nginx\'s TLS pass-through trusts the CA, says hello, and a command from a socket on the other instance comes back acked', async () => {
  const { device, holder } = await placed('tcp', async () => (await Device.connectTls(topo.nginx.deviceTls, ca)).hello(tokens.t1));
  tx.tls = { device, holder, transport: 'tcp' };
  assert(device.socket.authorized, `the device did not trust the certificate: ${device.socket.authorizationError}`);
  const socket = await socketOn(other(holder));
  const cmd = await roundTrip(socket, device, 'topo-t1');
  assert(cmd.status === 'sent', `the click's ack says ${cmd.status}, not sent`);
  socket.close();
  return `device on ${holder}, socket on ${other(holder)}`;
});

await check('tls: each instance, reached directly on its TLS ports (lines and MQTT), presents a certificate the CA signed', async () => {
  const caKey = new crypto.X509Certificate(ca).publicKey;
  const seen = [];
  for (const app of ['app1', 'app2']) {
    for (const port of ['deviceTls', 'mqttTls']) {
      const cert = await new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: topo.apps[app][port], ca }, () => {
          const peer = s.getPeerCertificate();
          s.destroy();
          resolve(peer);
        });
        s.once('error', (err) => reject(new Error(`${app} ${port}: ${err.message}`)));
      });
      assert(new crypto.X509Certificate(cert.raw).verify(caKey), `${app}'s ${port} certificate is not signed by the CA`);
      seen.push(`${app} ${port} ${cert.fingerprint256.slice(0, 8)}`);
    }
  }
  return seen.join(', ');
});

await check('tls: an MQTT device through nginx\'s TLS pass-through (8883) trusts the CA and is online', async () => {
  const { device, holder } = await placed('mqtt', () => MqttDevice.connect(`mqtts://127.0.0.1:${topo.nginx.mqttTls}`, tokens.t2, { ca, rejectUnauthorized: true }));
  tx.mqttTls = { device, holder, transport: 'mqtt' };
  await device.listen();
  const socket = await socketOn(other(holder));
  await waitFor('topo-t2 online on the other instance', async () => (await emitAck(socket, 'fleet:list', {})).devices.find((d) => d.id === 'topo-t2')?.online);
  socket.close();
  return `device on ${holder}`;
});

await check('metrics: the holding instance counts each device connection under its transport, and stops when the device leaves', async () => {
  const held = Object.values(tx);
  assert(held.length === 4, `only ${held.length} of 4 transport devices connected`);
  const counts = async () => {
    const out = {};
    for (const app of ['app1', 'app2']) for (const t of ['tcp', 'websocket', 'mqtt']) out[`${app} ${t}`] = await connections(app, t);
    return out;
  };
  const during = await counts();
  for (const { holder, transport } of held) assert(during[`${holder} ${transport}`] >= 1, `${holder} counts ${during[`${holder} ${transport}`]} ${transport} connections`);
  assert(during[`${other(tx.ws.holder)} websocket`] === 0, `${other(tx.ws.holder)}, which holds no WebSocket device, counts one`);
  const expectAfter = { ...during };
  for (const { holder, transport, device } of held) {
    expectAfter[`${holder} ${transport}`]--;
    device.close();
  }
  await waitFor('the counts to drop', async () => {
    const now = await counts();
    return Object.keys(now).every((k) => now[k] === expectAfter[k]);
  });
  // Gone from presence too, so that the instance-loss checks below start from the round trip's state.
  await waitFor('the transport devices offline', async () => {
    const list = await emitAck(state.s1, 'fleet:list', {});
    return !list.devices.some((d) => ['topo-w1', 'topo-m1', 'topo-t1', 'topo-t2'].includes(d.id) && d.online);
  });
  return Object.entries(during).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
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
