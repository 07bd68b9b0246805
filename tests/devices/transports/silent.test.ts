/**
 * 1,000 silent connections per transport (docs/security.md, cases 13 and 14, on WebSocket and MQTT):
 * they are closed after 10 s, or refused at once beyond the per-address cap; the server's memory
 * stays bounded and it keeps serving everyone else. The memory figures need a process of their own
 * (`node dist/main.js`, RSS from /proc), as in tests/devices/endless-lines.test.ts.
 */
import { RawDevice } from '../../support/device';
import { addDeviceCli, Child, childEnv, ensureBuilt, killChildren, sleep, startChild, until } from '../../support/child';
import { bystanders, expectUntouched } from '../../support/bystanders';
import { mqttDevice, RawMqtt, topics, type MqttClient } from '../../support/mqtt';
import { closeAllServers, startServer, testDatabaseUrl } from '../../support/server';
import { HandshakeRefused, WsDevice } from '../../support/ws';

const MB = 1024 * 1024;
const N = 1000;

/** Engine-free: skipped in the postgres project, where it would only repeat itself. */
const describeEngineFree = testDatabaseUrl() ? describe.skip : describe;

/** Opens `n` connections, 100 at a time; each resolves to what `open` made of it, or null if refused. */
async function openMany<T>(n: number, open: () => Promise<T>): Promise<(T | null)[]> {
  const out: (T | null)[] = [];
  for (let i = 0; i < n; i += 100) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => open().catch(() => null)))));
  }
  return out;
}

describeEngineFree('14. 1,000 silent connections per transport (own process)', () => {
  let child: Child;
  let env: Record<string, string>;
  let mqttPort = 0;
  let wsUrl = '';
  const good: { tcp?: RawDevice; ws?: WsDevice; mqtt?: MqttClient } = {};

  beforeAll(async () => {
    ensureBuilt();
    env = childEnv({ DEVICE_MAX_PER_IP: '5000', LOG_LEVEL: 'warn' });
    const tokens = { tcp: addDeviceCli(env, 'good-tcp'), ws: addDeviceCli(env, 'good-ws'), mqtt: addDeviceCli(env, 'good-mqtt') };
    child = await startChild({ ...env, LOG_LEVEL: 'info' }); // it says where it listens at info
    mqttPort = child.logs.find((l) => l.msg === 'sockpit listening')!.mqttPort as number;
    wsUrl = `ws://127.0.0.1:${child.httpPort}/device`;
    good.tcp = await RawDevice.hello(child.devicePort, 'good-tcp', tokens.tcp);
    good.ws = await WsDevice.bearer(wsUrl, 'good-ws', tokens.ws);
    good.mqtt = await mqttDevice({ mqttPort }, 'good-mqtt', tokens.mqtt);
  }, 120_000); // a build of dist/ first, when server/ is newer

  afterAll(() => {
    good.tcp?.close();
    good.ws?.close();
    good.mqtt?.end(true);
    killChildren();
  });

  let serial = 0;
  /** The good devices, one per transport, each get an answer within 5 s. */
  async function othersAnswer(): Promise<void> {
    const i = ++serial;
    good.tcp!.send({ type: 'ping' });
    good.ws!.send({ type: 'telemetry', id: `w${i}`, data: { i } });
    await Promise.all([
      good.tcp!.next((m) => m.type === 'pong', 5000),
      good.ws!.next((m) => m.type === 'stored' && m.id === `w${i}`, 5000),
      good.mqtt!.publishAsync(topics.telemetry('good-mqtt'), JSON.stringify({ type: 'telemetry', id: `m${i}`, data: { i } }), { qos: 1 }),
    ]);
  }

  /** Samples VmRSS every 20 ms while `work` runs; the peak growth over the baseline. */
  async function peakGrowth<T>(work: () => Promise<T>): Promise<{ result: T; growth: number; baseline: number }> {
    await sleep(200);
    const baseline = child.rss();
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, child.rss())), 20);
    try {
      const result = await work();
      peak = Math.max(peak, child.rss());
      return { result, growth: peak - baseline, baseline };
    } finally {
      clearInterval(sampler);
    }
  }

  async function connectionsGone(): Promise<void> {
    await until(async () => /^sockpit_device_connections 3$/m.test(await (await fetch(`${child.baseUrl}/metrics`)).text()), 5000, 'the silent connections to be gone');
  }

  test('when 1,000 WebSockets open and say nothing, then each is told protocol and closed after 10 s, the server stays up (/healthz, a good device on each transport) and its RSS growth stays bounded', async () => {
    const t0 = Date.now();
    let midHealth = 0;
    const { result, growth, baseline } = await peakGrowth(async () => {
      const conns = await openMany(N, () => WsDevice.open(wsUrl));
      expect(conns.filter((c) => c === null)).toEqual([]);
      // While they are open: the server answers HTTP and everyone else.
      midHealth = (await fetch(`${child.baseUrl}/healthz`)).status;
      await othersAnswer();
      return Promise.all(conns.map(async (c) => ({ closed: await c!.waitClosed(20_000), at: Date.now() - t0, said: c!.received })));
    });
    expect(midHealth).toBe(200);
    for (const r of result) {
      expect(r.closed.code).toBe(1008);
      expect(r.said).toEqual([{ type: 'error', error: 'protocol', detail: 'no hello within 10 s' }]);
    }
    const times = result.map((r) => r.at).sort((a, b) => a - b);
    expect(times[0]).toBeGreaterThanOrEqual(9_500);
    expect(times.at(-1)).toBeLessThan(20_000);
    expect(growth).toBeLessThan(64 * MB); // about 25 MB seen for WebSocket, 6 MB for MQTT
    await othersAnswer();
    await connectionsGone();
    process.stdout.write(`1,000 silent WebSockets: baseline RSS ${(baseline / MB).toFixed(1)} MB, peak growth ${(growth / MB).toFixed(1)} MB\n`);
  }, 60_000);

  test('when 1,000 connections to the MQTT port send no CONNECT, then each is closed after 10 s, the server stays up (/healthz, a good device on each transport) and its RSS growth stays bounded', async () => {
    const t0 = Date.now();
    let midHealth = 0;
    const { result, growth, baseline } = await peakGrowth(async () => {
      const conns = await openMany(N, () => RawMqtt.open(mqttPort));
      expect(conns.filter((c) => c === null)).toEqual([]);
      midHealth = (await fetch(`${child.baseUrl}/healthz`)).status;
      await othersAnswer();
      return Promise.all(conns.map(async (c) => ({ closed: await c!.waitClosed(20_000), at: Date.now() - t0, packets: c!.packets })));
    });
    expect(midHealth).toBe(200);
    expect(result.every((r) => r.packets.length === 0)).toBe(true);
    const times = result.map((r) => r.at).sort((a, b) => a - b);
    expect(times[0]).toBeGreaterThanOrEqual(9_500);
    expect(times.at(-1)).toBeLessThan(20_000);
    expect(growth).toBeLessThan(64 * MB); // about 25 MB seen for WebSocket, 6 MB for MQTT
    await othersAnswer();
    await connectionsGone();
    process.stdout.write(`1,000 silent MQTT connections: baseline RSS ${(baseline / MB).toFixed(1)} MB, peak growth ${(growth / MB).toFixed(1)} MB\n`);
  }, 60_000);
});

describe('14. 1,000 silent connections from one address, with the default per-address cap', () => {
  afterEach(closeAllServers);

  test('when one address opens 1,000 silent WebSockets and 1,000 silent MQTT connections, then together they get at most DEVICE_MAX_PER_IP (100) places, the rest are refused at once (HTTP 429, or closed), and devices already connected keep working', async () => {
    const server = await startServer();
    expect(server.config.deviceMaxPerIp).toBe(100);
    const good = await bystanders(server, 200); // three places of the 100
    const t0 = Date.now();
    const [ws, mq] = await Promise.all([
      openMany(N, async () => {
        try {
          return await WsDevice.open(server.wsUrl);
        } catch (err) {
          if (err instanceof HandshakeRefused && err.status === 429) return 'refused' as const;
          throw err;
        }
      }),
      openMany(N, () => RawMqtt.open(server.mqttPort)),
    ]);
    const wsOpen = ws.filter((c): c is WsDevice => c instanceof WsDevice);
    expect(ws.filter((c) => c === 'refused').length + wsOpen.length).toBe(N);
    // Refused MQTT connections are closed at once; the others wait for their CONNECT.
    const mqOpen = () => mq.filter((c): c is RawMqtt => c !== null && !c.closed);
    await until(() => wsOpen.length + mqOpen().length <= 100 - 3, 5000, 'the refused MQTT connections to be closed');
    expect(wsOpen.length + mqOpen().length).toBe(100 - 3);
    expect(Date.now() - t0).toBeLessThan(9_000); // the refusals did not wait for the hello timeout
    // The ones that got in are closed after 10 s all the same; then the address has its places back.
    await Promise.all([...wsOpen.map((c) => c.waitClosed(15_000)), ...mqOpen().map((c) => c.waitClosed(15_000))]);
    const later = await WsDevice.open(server.wsUrl);
    later.close();
    expectUntouched(await good.stop());
    for (const c of mq) c?.close();
  }, 60_000);
});
