/**
 * Case 16 of docs/security.md, devices: a device that never reads. What the server buffers for it
 * stays bounded, it is dropped (queue full, or after the drain timeout), and other devices keep
 * their latency. (Browsers that stop reading: tests/realtime/backpressure.test.ts.)
 */
import { addUser } from '../../server/auth/users';
import { DEFAULT_LIMITS } from '../../server/devices/session';
import type { TcpLink } from '../../server/devices/transports/tcp';
import { encodeLine } from '../../server/devices/codec';
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, db, metric, startServer, TestServer } from '../support/server';
import { sleep, until } from '../support/child';

afterEach(closeAllServers);

/** The largest command a browser can send: changesetting with 16 settings of 256 characters. */
const BIG_PARAMS = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`setting_${i}`, String(i).repeat(256).slice(0, 256)]));

async function setup(): Promise<{ server: TestServer; user: { id: number; username: string } }> {
  const server = await startServer();
  const u = await addUser(db(server), 'owner', 'correct horse', 'admin', 4);
  return { server, user: { id: u.id, username: u.username } };
}

/** A device that pings every 20 ms and records round trips. */
async function pinger(server: TestServer, id: string) {
  const { token } = await addDevice(server, id);
  const d = await RawDevice.hello(server.devicePort, id, token);
  let rtts: number[] = [];
  let stopped = false;
  const summary = (xs: number[]) => {
    const sorted = [...xs].sort((a, b) => a - b);
    return { count: xs.length, median: sorted[Math.floor(sorted.length / 2)] ?? 0, p99: sorted[Math.floor(sorted.length * 0.99)] ?? 0 };
  };
  const loop = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      d.send({ type: 'ping' });
      await d.next((m) => m.type === 'pong', 5000);
      rtts.push(performance.now() - t0);
      await sleep(20);
    }
  })();
  return {
    /** Round trips so far (the baseline), starting a new window. */
    mark() {
      const before = summary(rtts);
      rtts = [];
      return before;
    },
    async stop() {
      stopped = true;
      await loop;
      d.close();
      return summary(rtts);
    },
  };
}

/** Sends one big command; yields to I/O first, as commands from browsers would. */
async function command(server: TestServer, deviceId: string, user: { id: number; username: string }): Promise<string> {
  await new Promise((r) => setImmediate(r));
  return (await server.app.commands.send({ deviceId, action: 'changesetting', params: BIG_PARAMS, user })).id;
}

/**
 * The other device's round trips during the attack, against its own before: the typical one stays
 * close (this machine is shared, so the bounds are loose) and none stalls.
 */
function keptItsLatency(before: { median: number }, during: { median: number; p99: number }): void {
  expect(during.median).toBeLessThan(Math.max(5 * before.median, 50));
  expect(during.p99).toBeLessThan(1000);
}

/** Says hello, then never reads again. */
async function deaf(server: TestServer, id: string): Promise<RawDevice> {
  const { token } = await addDevice(server, id);
  const d = await RawDevice.hello(server.devicePort, id, token);
  d.socket.pause();
  return d;
}

describe('16. backpressure', () => {
  test('when a device that never reads is flooded with commands and its own pings’ pongs, then its buffer stays bounded, it is dropped, and another device keeps its latency', async () => {
    const { server, user } = await setup();
    const watch = await pinger(server, 'watcher');
    await sleep(500);
    const baseline = watch.mark();
    const sink = await deaf(server, 'sink');
    const conn = server.app.registry.get('sink')!.link as TcpLink;
    const line = encodeLine({ type: 'fromservertonode', msg: 'action', action: 'changesetting', id: crypto.randomUUID(), params: BIG_PARAMS }, 'base64').length;
    const bound = DEFAULT_LIMITS.maxOutQueueBytes + conn.socket.writableHighWaterMark + 2 * line;
    const pings = setInterval(() => sink.send({ type: 'ping' }), 5);
    let maxBuffered = 0;
    let sent = 0;
    try {
      while (server.app.registry.get('sink')?.link === conn && sent < 20_000) {
        await command(server, 'sink', user);
        sent++;
        maxBuffered = Math.max(maxBuffered, conn.bufferedOut);
      }
    } finally {
      clearInterval(pings);
    }
    expect(server.app.registry.get('sink')).toBeUndefined();
    expect(sent).toBeLessThan(20_000);
    expect(maxBuffered).toBeGreaterThan(0); // it really was blocked
    expect(maxBuffered).toBeLessThanOrEqual(bound);
    // Reading again, the device finds the connection closed by the server.
    sink.socket.resume();
    await sink.waitClosed(3000);
    const stats = await watch.stop();
    expect(stats.count).toBeGreaterThan(10);
    keptItsLatency(baseline, stats);
    await until(async () => (await metric(server, 'sockpit_device_connections')) === 0, 2000, 'every connection to be gone');
  });

  test('when a device stops reading with less than a full queue pending, then it is dropped after the drain timeout (30 s by default)', async () => {
    expect(DEFAULT_LIMITS.drainTimeoutMs).toBe(30_000);
    const { server, user } = await setup();
    server.app.core.limits.drainTimeoutMs = 1500; // the rule at test speed; the default is checked above
    const watch = await pinger(server, 'watcher');
    await sleep(500);
    const baseline = watch.mark();
    const slow = await deaf(server, 'slow');
    const conn = server.app.registry.get('slow')!.link as TcpLink;
    // Until the socket refuses more (its own buffer reaches the high-water mark): blocked from now on.
    while (conn.bufferedOut < conn.socket.writableHighWaterMark) await command(server, 'slow', user);
    const blockedAt = Date.now();
    expect(conn.bufferedOut).toBeLessThan(DEFAULT_LIMITS.maxOutQueueBytes);
    await until(() => server.app.registry.get('slow') === undefined, 5000, 'the slow device to be dropped');
    const after = Date.now() - blockedAt;
    expect(after).toBeGreaterThanOrEqual(1400);
    expect(after).toBeLessThan(4000);
    slow.socket.resume();
    await slow.waitClosed(3000);
    keptItsLatency(baseline, await watch.stop());
  });

  test('when a device reads slowly but keeps draining, then it is not dropped and gets every command in order', async () => {
    const { server, user } = await setup();
    server.app.core.limits.drainTimeoutMs = 1500;
    const reader = await deaf(server, 'reader');
    const conn = server.app.registry.get('reader')!.link as TcpLink;
    const ids: string[] = [];
    while (conn.bufferedOut < conn.socket.writableHighWaterMark) ids.push(await command(server, 'reader', user));
    // Read a little at a time, more often than the drain timeout.
    const drip = setInterval(() => {
      reader.socket.resume();
      setTimeout(() => reader.socket.pause(), 5);
    }, 200);
    try {
      await until(() => reader.received.filter((m) => m.type === 'fromservertonode').length === ids.length, 15_000, 'every command to arrive', 100);
    } finally {
      clearInterval(drip);
    }
    expect(reader.closed).toBe(false);
    expect(reader.received.filter((m) => m.type === 'fromservertonode').map((m) => m.id)).toEqual(ids);
    reader.close();
  });
});
