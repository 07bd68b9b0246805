// Load generator: many devices in one process. Against sockpit each device is the project's device
// client (server/devices/client.ts, bundled to dist/device-client.js by bench/lib/build.mjs) on the
// transport the config names (TCP lines, TCP lines over TLS, WebSocket, MQTT); the bare relay gets
// a bare link of the same client (it answers nothing, not even a welcome); Mosquitto gets MQTT 3.1.1
// QoS 0. Driven by bench/run.mjs over IPC (see serveWorker).
//
// The hot loop stays as cheap as a hand-written client: readings are encoded here and written as
// they are (writeRaw; one line, frame or PUBLISH per reading at a fixed rate), and `stored`
// answers are counted on the client's fast path without decoding the whole line.
//
// config: { target: 'sockpit'|'relay'|'mqtt', transport?: 'tcp'|'ws'|'mqtt' (sockpit only),
//           port, wsUrl?, tls?: { ca }, devices: [{id, token, localAddress?}], localAddresses, tag }
import net from 'node:net';
import { createRequire } from 'node:module';
import { DEVICE_CLIENT_JS } from '../lib/build.mjs';
import { connectPacket, publishPacket, PacketReader } from '../lib/mqtt.mjs';
import { serveWorker, workerConfig, sleep } from '../lib/proc.mjs';
import { nowMs } from '../lib/stats.mjs';

const { DeviceClient, tcpTransport, websocketTransport, mqttTransport } = createRequire(import.meta.url)(DEVICE_CLIENT_JS);

const cfg = workerConfig();
const TRANSPORT = cfg.target === 'sockpit' ? (cfg.transport ?? 'tcp') : null;
// Closed loop ("max"): every device is visited every TICK_MS * VISIT_EVERY = 20 ms.
const TICK_MS = 5;
const VISIT_EVERY = 4;
// Open loop (a fixed rate): the clock says how many readings are due; they go out one per write,
// to the devices in turn, so each device writes one reading whenever its own is due (device k of
// N at k/rate, k/rate + N/rate, …). Checked every millisecond.
const OPEN_TICK_MS = 1;
// A generator that fell this far behind its clock (a stall, or no CPU) skips the rest instead of
// sending it in one burst; skipped readings are counted as `lagged_by_generator`.
const MAX_CATCHUP_MS = 100;
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

const counters = { sent: 0, dropped: 0, lagged: 0, stored: 0, commands: 0, closed: 0, errors: {} };
const totals = { sent: 0, stored: 0 }; // never reset: for the end-of-run storage check
const devices = cfg.devices.map((d, i) => ({
  ...d,
  i,
  /** What the hot loop writes to: a DeviceClient, a client link, or an MQTT socket (writeRaw, bufferedBytes). */
  out: null,
  ready: false,
  seq: 0,
  unacked: 0,
  topic: `d/${d.id}/t`,
  /** Sockpit over MQTT: the mqtt.js client of the link, its telemetry topic and PUBACK callback. */
  mqtt: null,
  mqttTopic: `sockpit/${d.id}/telemetry`,
  onPuback: null,
  localAddress: d.localAddress ?? (cfg.localAddresses?.length ? cfg.localAddresses[i % cfg.localAddresses.length] : undefined),
}));

function message(dev) {
  const seq = ++dev.seq;
  return `{"type":"telemetry","id":"${cfg.tag}-${seq}","data":{"t":${nowMs().toFixed(3)},"seq":${seq},"temp":21.5,"hum":40.25}}`;
}

/** `n` readings of one device as one string for writeRaw(…, 'latin1') (TCP lines or MQTT packets). */
function batch(dev, n) {
  if (TRANSPORT === 'ws' || TRANSPORT === 'mqtt') throw new Error(`the closed loop is for TCP devices, not ${TRANSPORT}`);
  let out = '';
  if (cfg.target === 'mqtt') for (let k = 0; k < n; k++) out += publishPacket(dev.topic, message(dev));
  else for (let k = 0; k < n; k++) out += b64(message(dev)) + '\n';
  return out;
}

/**
 * One reading, one write: a line (sockpit over TCP, the relay), a text frame (WebSocket, base64 as
 * on a line), a QoS 1 PUBLISH whose PUBACK is the `stored` answer (sockpit's MQTT), or a QoS 0
 * PUBLISH (Mosquitto).
 */
function sendOne(dev) {
  if (TRANSPORT === 'mqtt') dev.mqtt.publish(dev.mqttTopic, message(dev), { qos: 1 }, dev.onPuback);
  else if (TRANSPORT === 'ws') dev.out.writeRaw(b64(message(dev)));
  else if (cfg.target === 'mqtt') dev.out.writeRaw(publishPacket(dev.topic, message(dev)), 'latin1');
  else dev.out.writeRaw(b64(message(dev)) + '\n', 'latin1');
}

function countStored(dev) {
  counters.stored++;
  totals.stored++;
  dev.unacked--;
}

function transportOf(dev) {
  if (TRANSPORT === 'ws') return websocketTransport({ url: cfg.wsUrl });
  if (TRANSPORT === 'mqtt') return mqttTransport({ port: cfg.port, id: dev.id, token: dev.token });
  return tcpTransport({ port: cfg.port, localAddress: dev.localAddress, ...(cfg.tls ? { tls: cfg.tls } : {}) });
}

/** A sockpit device: the device client, welcomed; readings counted, commands acked. */
function connectSockpit(dev, finish) {
  let why = null;
  const client = new DeviceClient({
    id: dev.id,
    token: dev.token,
    firmware: 'bench',
    transport: transportOf(dev),
    reconnect: false,
    maxUnacked: 0, // the bench writes its readings itself and only counts the answers
    keepaliveMs: KEEPALIVE_MS,
    handlers: {
      stored: () => countStored(dev),
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
      if (TRANSPORT === 'mqtt') {
        // PUBACK is the `stored` answer (docs/protocol.md, MQTT); counted per PUBLISH from here.
        dev.mqtt = client.currentLink.client;
        // mqtt.js leaves Nagle on; the TCP and WebSocket devices write with it off, and a device
        // that sends one reading at a time wants each to leave at once (bench/README.md).
        dev.mqtt.stream?.setNoDelay?.(true);
        dev.onPuback = (err) => {
          if (!err) countStored(dev);
        };
      }
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
let rate = 0; // readings/s of this process (open loop)
let phaseStart = 0;
let issued = 0; // readings due since phaseStart, sent or not
let cursor = 0;
let tickNo = 0;
let ticker = null;
let active = devices;

/** Open loop: whatever the clock says is due goes out now, one reading per write, device after device. */
function openTick() {
  const target = Math.floor((rate * (nowMs() - phaseStart)) / 1000);
  let due = target - issued;
  if (due <= 0) return;
  const cap = Math.max(1, Math.ceil((rate * MAX_CATCHUP_MS) / 1000));
  if (due > cap) {
    counters.lagged += due - cap;
    issued += due - cap;
    due = cap;
  }
  const n = active.length;
  for (let k = 0; k < due; k++) {
    const dev = active[cursor];
    cursor = cursor + 1 === n ? 0 : cursor + 1;
    issued++;
    if (!dev.ready || dev.out.bufferedBytes > HIGH_WATER) {
      counters.dropped++;
      continue;
    }
    sendOne(dev);
    dev.unacked++;
    counters.sent++;
    totals.sent++;
  }
}

/** Closed loop: every device writes MAX_BATCH readings whenever its socket takes them. */
function maxTick() {
  const slot = tickNo++ % VISIT_EVERY;
  for (let k = slot; k < active.length; k += VISIT_EVERY) {
    const dev = active[k];
    if (!dev.ready) continue;
    if (dev.out.bufferedBytes > MAX_BUFFERED_MAX) continue;
    if (cfg.target === 'sockpit' && dev.unacked >= MAX_UNACKED) continue;
    dev.out.writeRaw(batch(dev, MAX_BATCH), 'latin1');
    dev.unacked += MAX_BATCH;
    counters.sent += MAX_BATCH;
    totals.sent += MAX_BATCH;
  }
}

function setLoad({ rate: r = 0, max = false, count = null }) {
  active = count === null ? devices : devices.slice(0, count);
  if (ticker) clearInterval(ticker);
  ticker = null;
  phaseStart = nowMs();
  issued = 0;
  cursor = 0;
  if (max) {
    mode = 'max';
    ticker = setInterval(maxTick, TICK_MS);
  } else if (r > 0 && active.length > 0) {
    mode = 'rate';
    rate = r;
    ticker = setInterval(openTick, OPEN_TICK_MS);
  } else mode = 'idle';
}

let countingSince = nowMs();

function snapshot(reset) {
  const now = nowMs();
  // since_ms: this process's own clock since the last reset, so that a rate does not depend on
  // when the orchestrator's request arrived.
  const s = { ...counters, errors: { ...counters.errors }, since_ms: now - countingSince, ready: devices.filter((d) => d.ready).length, total_sent: totals.sent, total_stored: totals.stored };
  if (reset) {
    countingSince = now;
    counters.sent = 0;
    counters.dropped = 0;
    counters.lagged = 0;
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
