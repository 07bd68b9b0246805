// Receiving end: sockpit dashboards (logged-in socket.io clients), an MQTT subscriber on
// d/+/t, or a subscriber of the bare relay. Records device→receiver latency from the `t`
// timestamp the device put in each reading. Driven by bench/run.mjs over IPC.
//
// config: { target, port, baseUrl?, users?: [{username,password}], watch?: deviceId }
import net from 'node:net';
import { io as ioClient } from 'socket.io-client';
import { connectPacket, PacketReader, parsePublish, subscribePacket } from '../lib/mqtt.mjs';
import { serveWorker, sleep, workerConfig } from '../lib/proc.mjs';
import { login } from '../lib/sockpit.mjs';
import { Histogram, nowMs } from '../lib/stats.mjs';

const cfg = workerConfig();
const hist = new Histogram();
let received = 0;
let statusEvents = 0;
const sockets = [];
const acked = new Map(); // command id → time its `acked` status arrived (or a failure word)
const waiters = new Map(); // command id → resolve, for statuses still to come
let totalReceived = 0; // never reset: a step's readings are the difference

// Open-loop clicks (bench/run.mjs, open loop): a Send Action to Node every `everyMs`, whatever the
// answers; click→acked per click. Clicks belong to the epoch current when they were sent, so the
// bench counts only those sent in its window and still collects their late answers after it.
let clickTimer = null;
let clickEpoch = 0;
const clickEpochs = new Map(); // epoch → { sent, acked, failures, hist }
const clickPending = new Map(); // command id → { epoch, t0 }
const clickEarly = new Map(); // command id → status that came before the answer to command:send
let clicksUnanswered = 0; // command:send emitted, its answer (with the command id) not yet here

function epochStats(epoch) {
  let e = clickEpochs.get(epoch);
  if (!e) clickEpochs.set(epoch, (e = { sent: 0, acked: 0, failures: {}, hist: new Histogram() }));
  return e;
}

function clickFailed(epoch, why) {
  const f = epochStats(epoch).failures;
  f[why] = (f[why] ?? 0) + 1;
}

/** A status for a click: `v` is the time `acked` arrived, or the failure word. */
function clickSettled(id, v) {
  const p = clickPending.get(id);
  clickPending.delete(id);
  if (typeof v === 'number') {
    const e = epochStats(p.epoch);
    e.acked++;
    e.hist.record(v - p.t0);
  } else clickFailed(p.epoch, v);
}

function click(deviceId) {
  const epoch = clickEpoch;
  epochStats(epoch).sent++;
  const t0 = nowMs();
  clicksUnanswered++;
  sockets[0]
    .timeout(30_000)
    .emitWithAck('command:send', { deviceId, action: 'togglerele' })
    .finally(() => clicksUnanswered--)
    .then(
      (res) => {
        if (!res?.ok) return clickFailed(epoch, res?.error ?? 'error');
        const id = res.command.id;
        clickPending.set(id, { epoch, t0 });
        if (clickEarly.has(id)) {
          const v = clickEarly.get(id);
          clickEarly.delete(id);
          clickSettled(id, v);
        }
      },
      () => clickFailed(epoch, 'no_answer_to_command_send'),
    );
}

function onReading(t) {
  received++;
  totalReceived++;
  if (typeof t === 'number') hist.record(nowMs() - t);
}

function connectSockpit(cookie) {
  return new Promise((resolve, reject) => {
    // Like the browser client: the fleet's readings batched per server tick (docs/realtime.md).
    const socket = ioClient(cfg.baseUrl, {
      transports: ['websocket'],
      extraHeaders: { cookie },
      auth: { telemetry: 'batch' },
      reconnection: false,
      forceNew: true,
      timeout: 20_000,
    });
    socket.on('fleet:telemetry', (batch) => {
      if (Array.isArray(batch)) for (const p of batch) onReading(p?.data?.t);
    });
    socket.on('device:status', () => statusEvents++);
    socket.on('command:status', (c) => {
      let v;
      if (c.status === 'acked') v = nowMs();
      else if (c.status !== 'queued' && c.status !== 'sent') v = c.status;
      else return;
      if (clickPending.has(c.id)) return clickSettled(c.id, v);
      if (clicksUnanswered > 0 && !waiters.has(c.id)) {
        // Maybe a click whose command:send answer is still on its way.
        clickEarly.set(c.id, v);
        if (clickEarly.size > 10_000) clickEarly.delete(clickEarly.keys().next().value);
        return;
      }
      const w = waiters.get(c.id);
      if (w) w(v);
      else acked.set(c.id, v);
    });
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.close();
      reject(err);
    });
  });
}

function connectMqtt() {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port: cfg.port, noDelay: true });
    const reader = new PacketReader((type, flags, body) => {
      if (type === 3) {
        const { payload } = parsePublish(flags, body);
        let m;
        try {
          m = JSON.parse(payload.toString('utf8'));
        } catch {
          return;
        }
        onReading(m?.data?.t);
      } else if (type === 2) sock.write(subscribePacket('d/+/t'), 'latin1');
      else if (type === 9) resolve(sock);
    });
    sock.on('data', (c) => reader.push(c));
    sock.on('error', reject);
    sock.on('connect', () => sock.write(connectPacket(`bench-sub-${process.pid}`), 'latin1'));
  });
}

function connectRelay() {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port: cfg.port, noDelay: true });
    let rest = '';
    sock.on('data', (chunk) => {
      const text = rest + chunk.toString('utf8');
      let start = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        const line = text.slice(start, nl);
        start = nl + 1;
        let m;
        try {
          m = JSON.parse(line);
        } catch {
          continue;
        }
        if (m.type === 'telemetry') onReading(m.data?.t);
      }
      rest = text.slice(start);
    });
    sock.on('error', reject);
    sock.on('connect', () => resolve(sock));
  });
}

async function runCommands({ n, deviceIds, gapMs = 25, timeoutMs = 5000 }) {
  const h = new Histogram();
  const failures = {};
  const socket = sockets[0];
  // At most two minutes per level: past its capacity the server may answer every command late.
  const deadline = Date.now() + Math.min(n * (gapMs + timeoutMs) + 5000, 120_000);
  for (let i = 0; i < n && Date.now() < deadline; i++) {
    const deviceId = deviceIds[i % deviceIds.length];
    const t0 = nowMs();
    let res;
    try {
      res = await socket.timeout(timeoutMs).emitWithAck('command:send', { deviceId, action: 'togglerele' });
    } catch {
      failures.no_ack = (failures.no_ack ?? 0) + 1;
      continue;
    }
    if (!res?.ok) {
      failures[res?.error ?? 'error'] = (failures[res?.error ?? 'error'] ?? 0) + 1;
      await sleep(gapMs);
      continue;
    }
    const id = res.command.id;
    let a = acked.get(id);
    acked.delete(id);
    if (a === undefined) {
      a = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(undefined), timeoutMs);
        waiters.set(id, (v) => {
          clearTimeout(timer);
          resolve(v);
        });
      });
      waiters.delete(id);
    }
    if (typeof a === 'number') h.record(a - t0);
    else failures[a ?? 'no_status'] = (failures[a ?? 'no_status'] ?? 0) + 1;
    await sleep(gapMs);
  }
  return { ...h.summary(), failures };
}

serveWorker({
  async connect({ concurrency = 25 } = {}) {
    const t0 = nowMs();
    if (cfg.target === 'mqtt') sockets.push(await connectMqtt());
    else if (cfg.target === 'relay') sockets.push(await connectRelay());
    else {
      const users = cfg.users;
      let next = 0;
      const errors = [];
      async function lane() {
        while (next < users.length) {
          const u = users[next++];
          try {
            const cookie = await login(cfg.baseUrl, u.username, u.password);
            const socket = await connectSockpit(cookie);
            if (cfg.watch) {
              const r = await socket.timeout(10_000).emitWithAck('device:watch', { deviceId: cfg.watch });
              if (!r?.ok) throw new Error(`device:watch: ${r?.error}`);
            }
            sockets.push(socket);
          } catch (err) {
            errors.push(err.message);
          }
        }
      }
      await Promise.all(Array.from({ length: Math.min(concurrency, users.length) }, lane));
      if (errors.length) return { connected: sockets.length, elapsed_ms: nowMs() - t0, errors: errors.slice(0, 3), error_count: errors.length };
    }
    return { connected: sockets.length, elapsed_ms: nowMs() - t0 };
  },
  window({ reset = false } = {}) {
    const r = { received, total_received: totalReceived, status_events: statusEvents, hist: hist.toJSON() };
    if (reset) {
      received = 0;
      statusEvents = 0;
      hist.reset();
    }
    return r;
  },
  commands: runCommands,
  /** Starts clicking (one device after another), or moves on to a new epoch; returns the epoch. */
  clicksStart({ deviceIds, everyMs = 100 }) {
    clickEpoch++;
    if (clickTimer === null) {
      let next = 0;
      clickTimer = setInterval(() => click(deviceIds[next++ % deviceIds.length]), everyMs);
    }
    return clickEpoch;
  },
  clicksStop() {
    if (clickTimer !== null) clearInterval(clickTimer);
    clickTimer = null;
    clickEpoch++;
    return true;
  },
  /** Clicks of one epoch: sent, acked, failures, still pending, click→acked latency. */
  clicksResult({ epoch }) {
    const e = epochStats(epoch);
    let pending = 0;
    for (const p of clickPending.values()) if (p.epoch === epoch) pending++;
    const failed = Object.values(e.failures).reduce((a, b) => a + b, 0);
    return { sent: e.sent, acked: e.acked, failed, pending: Math.max(pending, e.sent - e.acked - failed), failures: e.failures, hist: e.hist.toJSON() };
  },
  async fleet() {
    const r = await sockets[0].timeout(30_000).emitWithAck('fleet:list', {});
    if (!r?.ok) throw new Error(`fleet:list: ${r?.error}`);
    return { total: r.devices.length, online: r.devices.filter((d) => d.online).length };
  },
  async close() {
    for (const s of sockets) (s.close ?? s.destroy).call(s);
    return true;
  },
});
