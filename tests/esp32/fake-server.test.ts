/**
 * The ESP32 firmware's core (host build) against a fake server written from the protocol alone
 * (docs/protocol.md, TCP lines), with an ESP32-sized stack (`ulimit -s`): what the device does
 * with each error code, a deeply nested line, out-of-range numbers, failed connects, its reboot
 * timeout and its relay's power-on state. Issue 16's defects, one test or more each.
 *
 * Skips itself when the host program is not built (`make -C esp32 host`), unless
 * ESP32_HOST_REQUIRED=1, in which case a missing program is a failure.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { blackhole, built, closedPort, FakeConn, FakeServer, HostDevice, HOST_BIN, Msg, required, sleep, SMALL_STACK_KIB } from './host-device';

if (!built && required) {
  test('the ESP32 host program is built (ESP32_HOST_REQUIRED=1)', () => {
    throw new Error(`${HOST_BIN} is missing: run \`make -C esp32 host\` first`);
  });
}

// No storage is involved: a second run in the PostgreSQL project would prove nothing.
const runIt = built && !process.env.SOCKPIT_TEST_DATABASE_URL;

(runIt ? describe : describe.skip)(`ESP32 firmware core (host build, ${SMALL_STACK_KIB} KiB stack) against a fake server`, () => {
  const servers: FakeServer[] = [];
  const devices: HostDevice[] = [];

  afterEach(async () => {
    await Promise.all(devices.splice(0).map((d) => d.stop()));
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  async function fakeServer(onMessage: (conn: FakeConn, msg: Msg, index: number) => void): Promise<FakeServer> {
    const s: FakeServer = new FakeServer((conn, msg) => onMessage(conn, msg, s.conns.indexOf(conn)));
    await s.listen();
    servers.push(s);
    return s;
  }

  function device(port: number, extra: string[] = [], host = '127.0.0.1'): HostDevice {
    const d = new HostDevice(
      ['--host', host, '--port', String(port), '--id', 'dev-1', '--token', 'tok-1', '--interval-ms', '1000', ...extra],
      { stackKib: SMALL_STACK_KIB },
    );
    devices.push(d);
    return d;
  }

  const welcome = (conn: FakeConn, msg: Msg) => {
    if (msg.type === 'hello') conn.send({ type: 'welcome', device: msg.device, time: Date.now() });
  };

  /** Resolves with the device's ack for command id. */
  const ackOf = (server: FakeServer, id: string) =>
    server
      .until(`the ack of ${id}`, () => server.conns.some((c) => c.messages.some((m) => m.type === 'ack' && m.id === id)))
      .then(() => server.conns.flatMap((c) => c.messages).find((m) => m.type === 'ack' && m.id === id)!);

  /** p, or a failure naming how the device ended if it ends first (a crash, say). */
  const orEnd = <T>(dev: HostDevice, p: Promise<T>): Promise<T> =>
    Promise.race([
      p,
      dev.exited.then((e) => {
        throw new Error(`the device ended first (${JSON.stringify(e)}); its log:\n${dev.log}`);
      }),
    ]);

  test('the small stack is really in force for the device', () => {
    const out = execFileSync('bash', ['-c', 'ulimit -s "$0" && ulimit -s', String(SMALL_STACK_KIB)]).toString().trim();
    expect(out).toBe(String(SMALL_STACK_KIB));
  });

  test('a 16 KiB line nested 16,000 deep (plain or base64) is refused before parsing, and the device stays up', async () => {
    const server = await fakeServer((conn, msg) => {
      welcome(conn, msg);
      if (msg.type !== 'hello') return;
      // The longest lines the device takes in: 16 KiB of "[" plain, and 12 KiB of it in base64.
      conn.sendLine('{"a":' + '['.repeat(16 * 1024 - 5));
      conn.sendLine(Buffer.from('{"a":' + '['.repeat(12 * 1024 - 5)).toString('base64'));
      conn.send({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: 'after-deep' });
    });
    const dev = device(server.port);
    const ack = await orEnd(dev, ackOf(server, 'after-deep'));
    expect(ack).toMatchObject({ ok: true, result: { relay: true } });
    // The log comes down a pipe of its own: wait for it rather than race the socket.
    await dev.waitFor(/Ignoring a message from the server: nested deeper than 32 levels, refused unparsed/, 10_000, 2);
    expect(dev.running).toBe(true);
    // A message nested as deep as the server itself allows (level 32) is still read.
    server.conns[0]!.sendLine(
      JSON.stringify({ type: 'fromservertonode', action: 'changesetting', id: 'deep-ok', params: { relay: false } }).replace(
        '"params"',
        `"x":${'['.repeat(32)}${']'.repeat(32)},"params"`,
      ),
    );
    expect(await ackOf(server, 'deep-ok')).toMatchObject({ ok: true, result: { relay: false } });
  });

  test('a changesetting with a number out of any integer range is refused with a reason, and nothing changes', async () => {
    const server = await fakeServer((conn, msg) => {
      welcome(conn, msg);
      if (msg.type === 'hello') {
        conn.sendLine('{"type":"fromservertonode","action":"changesetting","id":"huge","params":{"interval_ms":1e300}}');
        conn.send({ type: 'fromservertonode', action: 'changesetting', id: 'inf', params: { interval_ms: '1e400' } });
        conn.send({ type: 'fromservertonode', action: 'changesetting', id: 'nan', params: { interval_ms: 'nan' } });
      }
    });
    device(server.port);
    for (const id of ['huge', 'inf', 'nan']) {
      expect(await ackOf(server, id)).toMatchObject({ ok: false, result: { error: 'interval_ms must be a whole number from 500 to 86400000' } });
    }
  });

  test('when the server answers the hello with unavailable, the device retries with its normal backoff, not the long pause', async () => {
    const server = await fakeServer((conn, msg, i) => {
      if (msg.type !== 'hello') return;
      if (i < 2) conn.refuse('unavailable', 'server could not check the token; try again');
      else welcome(conn, msg);
    });
    const dev = device(server.port);
    await dev.waitFor(/The server welcomed us: online/, 15_000);
    expect(server.conns).toHaveLength(3);
    expect(dev.count(/could not check our id and token just now \(unavailable - server could not check the token; try again\); that is not a wrong token\. Reconnecting in \d+\.\d s\./)).toBe(2);
    const gaps = [server.connectedAt[1]! - server.connectedAt[0]!, server.connectedAt[2]! - server.connectedAt[1]!];
    expect(gaps[0]).toBeGreaterThanOrEqual(400); // a pause, then a growing one
    expect(gaps[1]).toBeGreaterThanOrEqual(900);
    expect(Math.max(...gaps)).toBeLessThan(5_000); // seconds, not minutes (with room for a busy machine)
    expect(dev.log).not.toMatch(/refused this device|Not trying again/);
  });

  test('when the server says unauthorized, each device rests 15 to 22.5 minutes, not in step (the host build reports it and exits 2)', async () => {
    const server = await fakeServer((conn, msg) => {
      if (msg.type === 'hello') conn.refuse('unauthorized', 'unknown device or wrong token');
    });
    const fleet = [device(server.port), device(server.port), device(server.port)];
    const exits = await Promise.all(fleet.map((d) => d.exited));
    expect(exits.map((e) => e.code)).toEqual([2, 2, 2]);
    const pauses = fleet.map((d) => {
      expect(d.log).toMatch(/The server refused this device: unauthorized - unknown device or wrong token\. It knows no device "dev-1"/);
      return Number(d.find(/Not trying again for (\d+\.\d) min/)![1]);
    });
    for (const p of pauses) {
      expect(p).toBeGreaterThanOrEqual(15);
      expect(p).toBeLessThanOrEqual(22.5);
    }
    expect(new Set(pauses).size).toBeGreaterThan(1);
  });

  test('after unauthorized, a device that waits (as the board does) makes no new try before its pause is over, and one after', async () => {
    const server = await fakeServer((conn, msg, i) => {
      if (msg.type !== 'hello') return;
      if (i === 0) conn.refuse('unauthorized');
      else welcome(conn, msg);
    });
    const refusedAt = Date.now();
    const dev = device(server.port, ['--on-reject', 'wait', '--unauthorized-pause-ms', '1500']);
    await dev.waitFor(/The server welcomed us: online/, 6_000);
    const pause = Number(dev.find(/Not trying again for (\d+\.\d) s/)![1]) * 1000;
    expect(pause).toBeGreaterThanOrEqual(1500);
    expect(pause).toBeLessThanOrEqual(2250);
    expect(server.connectedAt[1]! - refusedAt).toBeGreaterThanOrEqual(1500);
    expect(dev.log).toMatch(/The pause is over; trying the server again/);
  });

  test('when the server says going_away and closes, the device reconnects after a pause', async () => {
    const server = await fakeServer((conn, msg, i) => {
      welcome(conn, msg);
      if (msg.type === 'hello' && i === 0) setTimeout(() => conn.refuse('going_away', 'server is shutting down'), 200);
    });
    const dev = device(server.port);
    await server.until('a second connection', () => server.conns.length === 2, 10_000);
    const gap = server.connectedAt[1]! - server.connectedAt[0]!;
    expect(gap).toBeGreaterThanOrEqual(200 + 400);
    expect(gap).toBeLessThan(5_000);
    await dev.waitFor(/The server is closing this connection \(going_away - server is shutting down\): it is restarting, or a newer connection with our id replaced this one\. Reconnecting in/, 10_000);
    await dev.waitFor(/The server welcomed us: online/, 10_000, 2);
  });

  test('when the server says its hello came too late (protocol), the device retries with its normal backoff', async () => {
    const server = await fakeServer((conn, msg, i) => {
      if (msg.type !== 'hello') return;
      if (i === 0) conn.refuse('protocol', 'no hello within 10 s');
      else welcome(conn, msg);
    });
    const dev = device(server.port);
    await dev.waitFor(/The server welcomed us: online/, 10_000);
    // The first retry waits half to all of the 1 s base (esp32 backoff.cpp): 0.5 … 1.0 s as logged.
    expect(dev.log).toMatch(/The server did not take our hello \(protocol - no hello within 10 s\)\. Reconnecting in (?:0\.[5-9]|1\.0) s\./);
    expect(server.connectedAt[1]! - server.connectedAt[0]!).toBeLessThan(5_000);
  });

  test('a refused connection, a failed name lookup and a connect timeout are each called by their name', async () => {
    const refused = device(await closedPort());
    await refused.waitFor(/refused the connection: nothing listens on that port\. Is sockpit running there, and is this its device port\? Next try in/, 10_000);

    const dns = device(7000, [], 'no-such-host.invalid');
    await dns.waitFor(/Could not look up the server's name "no-such-host\.invalid" \(.+\): is the name right, and does this network have a DNS server\? Next try in/, 15_000);

    const hole = await blackhole();
    try {
      const slow = device(hole.port, ['--connect-timeout-ms', '700']);
      await slow.waitFor(new RegExp(`No answer from 127\\.0\\.0\\.1:${hole.port} within 0\\.7 s: wrong address, machine switched off, or a firewall dropping the port\\? Next try in`), 10_000);
    } finally {
      hole.stop();
    }
    for (const d of devices) expect(d.log).not.toMatch(/Server unreachable/);
  });

  test('after the reboot timeout without the server, the device restarts (the host build exits 3)', async () => {
    const dev = device(await closedPort(), ['--reboot-timeout-ms', '2000']);
    const exit = await dev.exited;
    expect(exit.code).toBe(3);
    expect(dev.log).toMatch(/No connection to the server for 2\.0 s: restarting the board as a last resort/);
  });

  test('POWER_ON_STATE last: the relay comes back as it was, and on is on from the start', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-esp32-'));
    const stateFile = path.join(dir, 'relay');
    try {
      const server = await fakeServer((conn, msg) => {
        welcome(conn, msg);
        if (msg.type === 'hello') conn.send({ type: 'fromservertonode', action: 'togglerele', id: 't1' });
      });
      const first = device(server.port, ['--power-on', 'last', '--state-file', stateFile]);
      await first.waitFor(/starting .* relay off \(power-on state: last; none kept yet\)\./, 10_000);
      expect(await ackOf(server, 't1')).toMatchObject({ ok: true, result: { relay: true } });
      await first.stop();
      expect(fs.readFileSync(stateFile, 'utf8').trim()).toBe('1');

      const again = device(await closedPort(), ['--power-on', 'last', '--state-file', stateFile]);
      await again.waitFor(/starting .* relay on \(power-on state: as before the restart\)\./, 10_000);
      const on = device(await closedPort(), ['--power-on', 'on']);
      await on.waitFor(/starting .* relay on \(power-on state: on\)\./, 10_000);
      await sleep(100);
      expect(on.log).toMatch(/\(simulated relay clicks ON\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
