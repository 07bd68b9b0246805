/**
 * Case 14 of docs/security.md: slowloris and idle connections, the per-IP cap and
 * server.maxConnections.
 */
import net from 'node:net';
import { DEFAULT_LIMITS } from '../../server/devices/session';
import { encode, RawDevice } from '../support/device';
import { addDevice, closeAllServers, metric, startServer } from '../support/server';
import { sleep, until } from '../support/child';

afterEach(closeAllServers);

/** Resolves with the time (ms after `since`) at which the socket was closed by the server. */
function closedAfter(socket: net.Socket | RawDevice, since: number): Promise<number> {
  const s = socket instanceof RawDevice ? socket.socket : socket;
  return new Promise((resolve) => {
    if (s.destroyed) return resolve(Date.now() - since);
    s.once('close', () => resolve(Date.now() - since));
  });
}

describe('14. slowloris and idle connections', () => {
  test('when connections never finish a hello (silent, trickling a hello, trickling garbage), then each is closed after 10 s', async () => {
    expect(DEFAULT_LIMITS.helloTimeoutMs).toBe(10_000);
    const server = await startServer();
    const { token } = await addDevice(server, 'esp-1');
    const t0 = Date.now();
    const silent = await RawDevice.connect(server.devicePort);
    const trickleHello = await RawDevice.connect(server.devicePort);
    const trickleJunk = await RawDevice.connect(server.devicePort);
    const closes = [silent, trickleHello, trickleJunk].map((d) => closedAfter(d, t0));
    const hello = Buffer.from(encode({ type: 'hello', device: 'esp-1', token }));
    let i = 0;
    const trickle = setInterval(() => {
      if (!trickleHello.closed && i < hello.length - 1) trickleHello.write(hello.subarray(i, ++i)); // never the newline
      if (!trickleJunk.closed) trickleJunk.write('A');
    }, 200);
    try {
      const times = await Promise.all(closes);
      for (const ms of times) {
        expect(ms).toBeGreaterThanOrEqual(9_500);
        expect(ms).toBeLessThan(12_500);
      }
    } finally {
      clearInterval(trickle);
    }
    expect(await silent.next((m) => m.type === 'error', 100)).toMatchObject({ error: 'protocol', detail: 'no hello within 10 s' });
    await until(async () => (await metric(server, 'sockpit_device_connections')) === 0, 2000, 'the server to forget the connections');
  }, 20_000);

  test('when a device says nothing (or only part of a line) for the idle timeout, then it is closed, while one that pings stays', async () => {
    expect(DEFAULT_LIMITS.idleTimeoutMs).toBe(120_000);
    const server = await startServer();
    server.app.core.limits.idleTimeoutMs = 1500; // the rule at test speed; the default is checked above
    const devs = await Promise.all(['quiet', 'partial', 'pinger'].map((id) => addDevice(server, id)));
    const [quiet, partial, pinger] = await Promise.all(devs.map((d) => RawDevice.hello(server.devicePort, d.id, d.token)));
    const t0 = Date.now();
    const pings = setInterval(() => {
      pinger!.send({ type: 'ping' });
      partial!.write('e'); // bytes, but never a whole line
    }, 300);
    try {
      const [q, p] = await Promise.all([closedAfter(quiet!, t0), closedAfter(partial!, t0)]);
      expect(q).toBeLessThan(4000);
      expect(p).toBeLessThan(4000);
      await sleep(1000);
      expect(pinger!.closed).toBe(false);
      expect(await metric(server, 'sockpit_devices_online')).toBe(1); // the pinger
    } finally {
      clearInterval(pings);
      pinger!.close();
    }
  });

  test('when one address opens more than DEVICE_MAX_PER_IP connections, then the extra ones get rate_limited and are closed; other addresses are not affected', async () => {
    const server = await startServer({ deviceMaxPerIp: 5 });
    const { token } = await addDevice(server, 'esp-1');
    const held = await Promise.all(Array.from({ length: 5 }, () => RawDevice.connect(server.devicePort)));
    const extra = await RawDevice.connect(server.devicePort);
    expect(await extra.next((m) => m.type === 'error')).toMatchObject({ error: 'rate_limited' });
    await extra.waitClosed(3000);
    // Another source address (127.0.0.2 is loopback too) still gets in.
    const other = await RawDevice.connect(server.devicePort, '127.0.0.1', '127.0.0.2');
    other.send({ type: 'hello', device: 'esp-1', token });
    await other.next((m) => m.type === 'welcome');
    // Closing one frees a slot for the first address.
    held[0]!.close();
    await sleep(200);
    const again = await RawDevice.connect(server.devicePort);
    again.send({ type: 'ping' }); // not a hello: refused as unauthorized, not rate_limited
    expect(await again.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized' });
    for (const d of [...held, other, again]) d.close();
  });

  test('when more than DEVICE_MAX_CONNECTIONS connections are open, then new ones are dropped at once and the open ones keep working', async () => {
    const server = await startServer({ deviceMaxConnections: 4 });
    const devs = await Promise.all(['a', 'b', 'c', 'd'].map((id) => addDevice(server, id)));
    const conns = await Promise.all(devs.map((d) => RawDevice.hello(server.devicePort, d.id, d.token)));
    expect(server.app.transports.tcp!.server.maxConnections).toBe(4);
    const t0 = Date.now();
    const dropped = await RawDevice.connect(server.devicePort);
    expect(await closedAfter(dropped, t0)).toBeLessThan(1000);
    for (const c of conns) {
      c.send({ type: 'ping' });
      await c.next((m) => m.type === 'pong');
      c.close();
    }
  });
});
