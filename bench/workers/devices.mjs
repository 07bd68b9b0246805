// Load generator: many devices in one process. Against sockpit each device is the project's device
// client (server/devices/client.ts, bundled to dist/device-client.js by bench/lib/build.mjs); the
// bare relay gets a bare link of the same client (it answers nothing, not even a welcome);
// Mosquitto gets MQTT 3.1.1 QoS 0. Driven by bench/run.mjs over IPC (see serveWorker).
//
// The hot loop stays as cheap as a hand-written client: readings are encoded here into one string
// per device and tick and written as they are (writeRaw), and `stored` answers are counted on the
// client's fast path without decoding the whole line.
//
// config: { target: 'sockpit'|'relay'|'mqtt', port, devices: [{id, token}], localAddresses, tag }
import net from 'node:net';
import { createRequire } from 'node:module';
import { DEVICE_CLIENT_JS } from '../lib/build.mjs';
import { connectPacket, publishPacket, PacketReader } from '../lib/mqtt.mjs';
import { serveWorker, workerConfig, sleep } from '../lib/proc.mjs';
import { nowMs } from '../lib/stats.mjs';

const { DeviceClient, tcpTransport } = createRequire(import.meta.url)(DEVICE_CLIENT_JS);

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
// Keepalive, as firmware does (docs/protocol.md: no line for 120 s closes the connection): while
// the bench waits between steps (a drain can take minutes), a sockpit device that wrote nothing for
// 30 s pings (the client does it). The relay and Mosquitto (keepalive 0 in CONNECT) close no idle
// connection.
const KEEPALIVE_MS = 30_000;

const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');

const counters = { sent: 0, dropped: 0, stored: 0, commands: 0, closed: 0, errors: {} };
const totals = { sent: 0, stored: 0 }; // never reset: for the end-of-run storage check
const devices = cfg.devices.map((d, i) => ({
  ...d,
  i,
  /** What the hot loop writes to: a DeviceClient, a client link, or an MQTT socket (writeRaw, bufferedBytes). */
  out: null,
  ready: false,
  seq: 0,
  sentPhase: 0,
  unacked: 0,
  topic: `d/${d.id}/t`,
  localAddress: d.localAddress ?? (cfg.localAddresses?.length ? cfg.localAddresses[i % cfg.localAddresses.length] : undefined),
}));

function message(dev) {
  const seq = ++dev.seq;
  return `{"type":"telemetry","id":"${cfg.tag}-${seq}","data":{"t":${nowMs().toFixed(3)},"seq":${seq},"temp":21.5,"hum":40.25}}`;
}

/** `n` readings of one device as one string for writeRaw(…, 'latin1'). */
function batch(dev, n) {
  let out = '';
  if (cfg.target === 'mqtt') for (let k = 0; k < n; k++) out += publishPacket(dev.topic, message(dev));
  else for (let k = 0; k < n; k++) out += b64(message(dev)) + '\n';
  return out;
}

/** A sockpit device: the device client, welcomed; readings counted, commands acked. */
function connectSockpit(dev, finish) {
  let why = null;
  const client = new DeviceClient({
    id: dev.id,
    token: dev.token,
    firmware: 'bench',
    transport: tcpTransport({ port: cfg.port, localAddress: dev.localAddress }),
    reconnect: false,
    maxUnacked: 0, // the bench writes its readings itself and only counts the answers
    keepaliveMs: KEEPALIVE_MS,
    handlers: {
      stored: () => {
        counters.stored++;
        totals.stored++;
        dev.unacked--;
      },
      command: () => {
        counters.commands++;
        return { ok: true, result: { relay: true } };
      },
      serverError: (code) => {
        counters.errors[code] = (counters.errors[code] ?? 0) + 1;
        if (!dev.ready) why = `error ${code}`;
      },
      disconnected: ({ wasReady }) => {
        if (wasReady) counters.closed++;
        dev.ready = false;
      },
    },
  });
  dev.out = client;
  client.start().then(
    () => {
      dev.ready = true;
      finish(true);
    },
    (err) => finish(false, why ?? err.code ?? (/closed/.test(err.message) ? 'closed' : err.message)),
  );
  return () => client.stop();
}

/** A device of the bare relay: a link of the device client that says hello and is ready at once. */
function connectRelay(dev, finish) {
  tcpTransport({ port: cfg.port, localAddress: dev.localAddress })
    .open({
      message() {},
      close() {
        if (dev.ready) counters.closed++;
        dev.ready = false;
        finish(false, 'closed');
      },
    })
    .then(
      (link) => {
        dev.out = link;
        dev.ready = true;
        link.send({ type: 'hello', device: dev.id, token: dev.token ?? 'x' });
        finish(true);
      },
      (err) => finish(false, err.code ?? err.message),
    );
  return () => dev.out?.close();
}

/** A Mosquitto client: CONNECT, ready at CONNACK. */
function connectMqtt(dev, finish) {
  const sock = net.connect({ host: '127.0.0.1', port: cfg.port, localAddress: dev.localAddress, noDelay: true });
  dev.out = {
    writeRaw: (data, encoding) => sock.write(data, encoding),
    get bufferedBytes() {
      return sock.writableLength;
    },
    close: () => sock.destroy(),
  };
  sock.on('error', (err) => finish(false, err.code ?? err.message));
  sock.on('close', () => {
    if (dev.ready) counters.closed++;
    dev.ready = false;
    finish(false, 'closed');
  });
  const reader = new PacketReader((type, _flags, body) => {
    if (type !== 2) return;
    if (body[1] !== 0) return finish(false, `connack ${body[1]}`);
    dev.ready = true;
    finish(true);
  });
  sock.on('data', (c) => reader.push(c));
  sock.on('connect', () => sock.write(connectPacket(`${cfg.tag}-${dev.id}`), 'latin1'));
  return () => sock.destroy();
}

/** Opens one device's connection; resolves once it is ready (welcome, CONNACK or just connected). */
function connectOne(dev) {
  return new Promise((resolve) => {
    const t0 = nowMs();
    let done = false;
    let cancel = () => {};
    const finish = (ok, why) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ok, ms: nowMs() - t0, why });
    };
    const timer = setTimeout(() => {
      finish(false, 'timeout');
      cancel();
    }, 30_000);
    const connect = cfg.target === 'mqtt' ? connectMqtt : cfg.target === 'relay' ? connectRelay : connectSockpit;
    cancel = connect(dev, finish);
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
      if (dev.out.bufferedBytes > HIGH_WATER) {
        counters.dropped += due;
        continue;
      }
      const n = Math.min(due, 2000);
      counters.dropped += due - n;
      dev.out.writeRaw(batch(dev, n), 'latin1');
      dev.unacked += n;
      counters.sent += n;
      totals.sent += n;
    } else if (mode === 'max') {
      if (dev.out.bufferedBytes > MAX_BUFFERED_MAX) continue;
      if (cfg.target === 'sockpit' && dev.unacked >= MAX_UNACKED) continue;
      dev.out.writeRaw(batch(dev, MAX_BATCH), 'latin1');
      dev.unacked += MAX_BATCH;
      counters.sent += MAX_BATCH;
      totals.sent += MAX_BATCH;
    }
  }
}

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
    for (const d of devices) (d.out?.stop ?? d.out?.close)?.call(d.out);
    await sleep(50);
    return true;
  },
});
