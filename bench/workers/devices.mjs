// Load generator: many devices in one process. Speaks SPEC §3 (sockpit and the bare relay) or
// MQTT 3.1.1 QoS 0 (Mosquitto). Driven by bench/run.mjs over IPC (see serveWorker).
//
// config: { target: 'sockpit'|'relay'|'mqtt', port, devices: [{id, token}], localAddresses, tag }
import net from 'node:net';
import { connectPacket, publishPacket, PacketReader } from '../lib/mqtt.mjs';
import { serveWorker, workerConfig, sleep } from '../lib/proc.mjs';
import { nowMs } from '../lib/stats.mjs';

const cfg = workerConfig();
const TICK_MS = 5;
const VISIT_EVERY = 4; // each device writes at most every TICK_MS * VISIT_EVERY = 20 ms
const HIGH_WATER = 64 * 1024; // open loop: readings due while this much is unsent are dropped
const MAX_BATCH = 32; // closed loop ("max"): lines per write while the socket takes them
const MAX_BUFFERED_MAX = 16 * 1024;
// Closed loop against sockpit: at most this many readings per device not yet answered `stored`,
// as firmware with a resend buffer behaves. Without it the kernel's socket buffers of 1,000
// paused connections hold minutes of readings, and that backlog spills into the next steps.
const MAX_UNACKED = 128;

const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
const STORED_PREFIX = b64('{"type":"stored","id":"').slice(0, 28); // 21 bytes → 28 fixed chars

const counters = { sent: 0, dropped: 0, stored: 0, commands: 0, closed: 0, errors: {} };
const totals = { sent: 0, stored: 0 }; // never reset: for the end-of-run storage check
const devices = cfg.devices.map((d, i) => ({
  ...d,
  i,
  sock: null,
  ready: false,
  seq: 0,
  sentPhase: 0,
  unacked: 0,
  lastWrite: 0,
  topic: `d/${d.id}/t`,
  localAddress: d.localAddress ?? (cfg.localAddresses?.length ? cfg.localAddresses[i % cfg.localAddresses.length] : undefined),
}));

function message(dev) {
  const seq = ++dev.seq;
  return `{"type":"telemetry","id":"${cfg.tag}-${seq}","data":{"t":${nowMs().toFixed(3)},"seq":${seq},"temp":21.5,"hum":40.25}}`;
}

/** `n` readings of one device as one string for socket.write(…, 'latin1'). */
function batch(dev, n) {
  let out = '';
  if (cfg.target === 'mqtt') for (let k = 0; k < n; k++) out += publishPacket(dev.topic, message(dev));
  else for (let k = 0; k < n; k++) out += b64(message(dev)) + '\n';
  return out;
}

function lineFrom(text) {
  if (text[0] === '{') return JSON.parse(text);
  return JSON.parse(Buffer.from(text, 'base64').toString('utf8'));
}

function sendLine(dev, obj) {
  dev.sock.write(b64(JSON.stringify(obj)) + '\n', 'latin1');
}

/** Opens one device's connection; resolves once it is ready (welcome, CONNACK or just connected). */
function connectOne(dev) {
  return new Promise((resolve) => {
    const t0 = nowMs();
    let done = false;
    const finish = (ok, why) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ok, ms: nowMs() - t0, why });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), 30_000);
    const sock = net.connect({ host: '127.0.0.1', port: cfg.port, localAddress: dev.localAddress, noDelay: true });
    dev.sock = sock;
    sock.on('error', (err) => finish(false, err.code ?? err.message));
    sock.on('close', () => {
      if (dev.ready) counters.closed++;
      dev.ready = false;
      finish(false, 'closed');
    });
    if (cfg.target === 'mqtt') {
      const reader = new PacketReader((type, _flags, body) => {
        if (type === 2) {
          if (body[1] === 0) {
            dev.ready = true;
            finish(true);
          } else finish(false, `connack ${body[1]}`);
        }
      });
      sock.on('data', (c) => reader.push(c));
      sock.on('connect', () => sock.write(connectPacket(`${cfg.tag}-${dev.id}`), 'latin1'));
      return;
    }
    if (cfg.target === 'relay') {
      sock.on('connect', () => {
        dev.ready = true;
        sendLine(dev, { type: 'hello', device: dev.id, token: dev.token ?? 'x' });
        finish(true);
      });
      sock.on('data', () => {});
      return;
    }
    // sockpit
    let rest = '';
    sock.on('connect', () => sendLine(dev, { type: 'hello', device: dev.id, token: dev.token, firmware: 'bench' }));
    sock.on('data', (chunk) => {
      const text = rest + chunk.toString('latin1');
      let start = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        const line = text.slice(start, nl);
        start = nl + 1;
        if (line.startsWith(STORED_PREFIX)) {
          counters.stored++;
          totals.stored++;
          dev.unacked--;
          continue;
        }
        let m;
        try {
          m = lineFrom(line);
        } catch {
          continue;
        }
        if (m.type === 'welcome') {
          dev.ready = true;
          finish(true);
        } else if (m.type === 'stored') {
          counters.stored++;
          totals.stored++;
          dev.unacked--;
        }
        else if (m.type === 'fromservertonode') {
          counters.commands++;
          sendLine(dev, { type: 'ack', id: m.id, ok: true, result: { relay: true } });
        } else if (m.type === 'error') {
          counters.errors[m.error] = (counters.errors[m.error] ?? 0) + 1;
          if (!dev.ready) finish(false, `error ${m.error}`);
        }
      }
      rest = text.slice(start);
    });
  });
}

// ---- load ----

let mode = 'idle'; // 'idle' | 'rate' | 'max'
let ratePerDev = 0;
let phaseStart = 0;
let tickNo = 0;
let ticker = null;
let active = devices;

function tick() {
  const now = nowMs();
  const slot = tickNo++ % VISIT_EVERY;
  for (let k = slot; k < active.length; k += VISIT_EVERY) {
    const dev = active[k];
    if (!dev.ready) continue;
    if (mode === 'rate') {
      const due = Math.floor((ratePerDev * (now - phaseStart)) / 1000) - dev.sentPhase;
      if (due <= 0) continue;
      dev.sentPhase += due;
      if (dev.sock.writableLength > HIGH_WATER) {
        counters.dropped += due;
        continue;
      }
      const n = Math.min(due, 2000);
      counters.dropped += due - n;
      dev.sock.write(batch(dev, n), 'latin1');
      dev.lastWrite = now;
      dev.unacked += n;
      counters.sent += n;
      totals.sent += n;
    } else if (mode === 'max') {
      if (dev.sock.writableLength > MAX_BUFFERED_MAX) continue;
      if (cfg.target === 'sockpit' && dev.unacked >= MAX_UNACKED) continue;
      dev.sock.write(batch(dev, MAX_BATCH), 'latin1');
      dev.lastWrite = now;
      dev.unacked += MAX_BATCH;
      counters.sent += MAX_BATCH;
      totals.sent += MAX_BATCH;
    }
  }
}

// Keepalive, as firmware does (SPEC: no line for 120 s closes the connection): while the bench
// waits between steps (a drain can take minutes), every sockpit device that wrote nothing for 30 s
// sends a ping. The relay and Mosquitto (keepalive 0 in CONNECT) close no idle connection.
const KEEPALIVE_MS = 30_000;
setInterval(() => {
  if (cfg.target !== 'sockpit') return;
  const now = nowMs();
  for (const dev of devices) {
    if (!dev.ready || now - dev.lastWrite < KEEPALIVE_MS) continue;
    dev.lastWrite = now;
    sendLine(dev, { type: 'ping' });
  }
}, 5_000).unref();

function setLoad({ rate = 0, max = false, count = null }) {
  active = count === null ? devices : devices.slice(0, count);
  for (const d of devices) d.sentPhase = 0;
  phaseStart = nowMs();
  // Spread the devices' first writes over one visit period.
  if (max) mode = 'max';
  else if (rate > 0) {
    mode = 'rate';
    ratePerDev = rate / active.length;
  } else mode = 'idle';
  if (mode === 'idle') {
    if (ticker) clearInterval(ticker);
    ticker = null;
  } else if (!ticker) ticker = setInterval(tick, TICK_MS);
}

function snapshot(reset) {
  const s = { ...counters, errors: { ...counters.errors }, ready: devices.filter((d) => d.ready).length, total_sent: totals.sent, total_stored: totals.stored };
  if (reset) {
    counters.sent = 0;
    counters.dropped = 0;
    counters.stored = 0;
    counters.commands = 0;
  }
  return s;
}

serveWorker({
  async connect({ concurrency = 200, timeoutMs = 120_000 }) {
    const t0 = nowMs();
    const deadline = Date.now() + timeoutMs;
    const results = [];
    let next = 0;
    const failures = {};
    async function lane() {
      while (next < devices.length && Date.now() < deadline) {
        const dev = devices[next++];
        const r = await connectOne(dev);
        results.push(r.ms);
        if (!r.ok) failures[r.why] = (failures[r.why] ?? 0) + 1;
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, devices.length) }, lane));
    results.sort((a, b) => a - b);
    return {
      ready: devices.filter((d) => d.ready).length,
      elapsed_ms: nowMs() - t0,
      first_ready_at: t0,
      p99_connect_ms: results[Math.floor(results.length * 0.99)] ?? null,
      failures,
    };
  },
  load: (args) => {
    setLoad(args);
    return true;
  },
  stats: ({ reset = false } = {}) => snapshot(reset),
  async close() {
    setLoad({});
    for (const d of devices) d.sock?.destroy();
    await sleep(50);
    return true;
  },
});
