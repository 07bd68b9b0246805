/**
 * Case 15 of docs/security.md: malformed lines get their error reply and leave other devices
 * unaffected; a fast-check fuzz feeds random byte streams to the parser and to a live server.
 * (tests/devices/protocol.test.ts covers not*base64, bad JSON, an array, a second hello, 1-byte
 * chunks, many lines per chunk and data before hello; tests/devices/codec.test.ts random chunking of
 * valid lines.)
 */
import net from 'node:net';
import fc from 'fast-check';
import { decodeLine, LineSplitter, MAX_LINE_BYTES } from '../../server/devices/codec';
import { parseDeviceMessage } from '../../server/devices/messages';
import { encode, RawDevice } from '../support/device';
import { addDevice, closeAllServers, db, metric, startServer, TestServer } from '../support/server';
import { sleep, until } from '../support/child';

afterAll(closeAllServers);

const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64');
const PING_B64 = b64('{"type":"ping"}'); // eyJ0eXBlIjoicGluZyJ9

/** A device that pings every 20 ms and records each round trip; any missing pong fails the test. */
let watchers = 0;
async function watcher(server: TestServer) {
  const id = `watcher-${++watchers}`;
  const { token } = await addDevice(server, id);
  const d = await RawDevice.hello(server.devicePort, id, token);
  const rtts: number[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      d.send({ type: 'ping' });
      await d.next((m) => m.type === 'pong', 3000);
      rtts.push(performance.now() - t0);
      await sleep(20);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      d.close();
      const sorted = [...rtts].sort((a, b) => a - b);
      return { count: rtts.length, p99: sorted[Math.floor(sorted.length * 0.99)] ?? 0, errors: d.received.filter((m) => m.type === 'error') };
    },
  };
}

describe('15. malformed lines', () => {
  let server: TestServer;
  let token: string;
  beforeAll(async () => {
    server = await startServer();
    ({ token } = await addDevice(server, 'esp-bad'));
  });

  const cases: [string, string | Buffer, string][] = [
    ['base64 with a space inside', `${PING_B64.slice(0, 8)} ${PING_B64.slice(8)}\n`, 'bad_base64'],
    ['base64 with a trailing tab', `${PING_B64}\t\n`, 'bad_base64'],
    ['base64 with a leading space', ` ${PING_B64}\n`, 'bad_base64'],
    ['base64 without its padding', `${b64('{"type":"pong!"}').replace(/=+$/, '')}\n`, 'bad_base64'],
    ['base64url characters', `${b64('{"a":"???>>>"}').replace(/\+/g, '-').replace(/\//g, '_')}\n`, 'bad_base64'],
    ['a NUL byte', Buffer.from([0x00, 0x0a]), 'bad_base64'],
    ['base64 of non-UTF-8 bytes', `${b64(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]))}\n`, 'bad_json'],
    ['plain JSON with non-UTF-8 bytes', Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]), 'bad_json'],
    ['an overlong UTF-8 encoding', `${b64(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d]))}\n`, 'bad_json'],
    ['base64 of text that is not JSON', `${b64('hello world')}\n`, 'bad_json'],
    ['plain JSON cut short', '{"type":"ping"\n', 'bad_json'],
    ['JSON null', `${b64('null')}\n`, 'protocol'],
    ['a JSON string', `${b64('"ping"')}\n`, 'protocol'],
    ['a JSON number', `${b64('42')}\n`, 'protocol'],
    ['a __proto__ key', `${b64('{"__proto__":{"polluted":1}}')}\n`, 'protocol'],
    ['a nested constructor key', '{"sensor":"x","v":{"constructor":{"prototype":{"polluted":1}}}}\n', 'protocol'],
    ['a number too large for a double', `${b64('{"sensor":"x","v":1e400}')}\n`, 'protocol'],
    ['a negative number too large', '{"sensor":"x","v":-1e99999}\n', 'protocol'],
    ['a 10,000-digit number', `{"sensor":"x","v":${'9'.repeat(10_000)}}\n`, 'protocol'],
    ['nesting 1,000 levels deep', `{"v":${'['.repeat(1000)}${']'.repeat(1000)}}\n`, 'protocol'],
    ['telemetry with an id that is not text', `${b64('{"type":"telemetry","id":5,"data":{}}')}\n`, 'protocol'],
    ['telemetry whose data is not an object', `${b64('{"type":"telemetry","id":"1","data":[1]}')}\n`, 'protocol'],
    ['an ack for an unknown command', `${b64('{"type":"ack","id":"no-such-command"}')}\n`, 'protocol'],
    ['a second hello', '', 'protocol'],
  ];

  test.each(cases.map(([what, line, code]) => ({ what, line, code })))(
    'when a device sends $what, then it gets $code and stays connected while another device is unaffected', async ({ what, line, code }) => {
    const w = await watcher(server);
    const d = await RawDevice.hello(server.devicePort, 'esp-bad', token);
    d.write(what === 'a second hello' ? encode({ type: 'hello', device: 'esp-bad', token }) : line);
    expect(await d.next((m) => m.type === 'error')).toMatchObject({ type: 'error', error: code });
    d.send({ type: 'ping' });
    await d.next((m) => m.type === 'pong');
    expect(d.closed).toBe(false);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const stats = await w.stop();
    expect(stats.errors).toEqual([]);
    expect(stats.count).toBeGreaterThan(0);
    d.close();
  },
  );

  test('when a device sends empty lines, bare CRs and CRLF endings, then they are not errors and each real line is answered', async () => {
    const d = await RawDevice.hello(server.devicePort, 'esp-bad', token);
    d.write(`\n\n\r\n${PING_B64}\r\n\n{"type":"ping"}\r\n`);
    await d.next((m) => m.type === 'pong');
    await d.next((m) => m.type === 'pong');
    d.send({ type: 'ping' });
    await d.next((m) => m.type === 'pong');
    expect(d.received.filter((m) => m.type === 'error')).toEqual([]);
    d.close();
  });

  test('when a device ends the connection in the middle of a line, then that partial line is dropped, not stored, and nothing breaks', async () => {
    const before = await db(server).countTelemetry('esp-bad');
    const d = await RawDevice.hello(server.devicePort, 'esp-bad', token);
    d.write(encode({ type: 'telemetry', id: 'cut-1', data: { v: 1 } }).slice(0, 30));
    d.socket.end();
    await d.waitClosed();
    await until(async () => (await metric(server, 'sockpit_devices_online')) === 0, 2000, 'the device to go offline');
    await server.app.writer.flush();
    expect(await db(server).countTelemetry('esp-bad')).toBe(before);
    const again = await RawDevice.hello(server.devicePort, 'esp-bad', token);
    again.send({ type: 'ping' });
    await again.next((m) => m.type === 'pong');
    again.close();
  });

  test('when nine bad lines are followed by a good one, then the bad-line count starts over and the connection stays', async () => {
    const d = await RawDevice.hello(server.devicePort, 'esp-bad', token);
    for (let round = 0; round < 3; round++) {
      d.write('!!\n'.repeat(9));
      d.send({ type: 'ping' });
      await d.next((m) => m.type === 'pong');
    }
    expect(d.closed).toBe(false);
    d.close();
  });
});

describe('15. fuzz', () => {
  /** Bytes that matter to the parser, plus anything at all. */
  const byte = fc.oneof(
    fc.constantFrom(0x0a, 0x0d, 0x7b, 0x7d, 0x22, 0x3d, 0x2b, 0x2f, 0x20, 0x00, 0xff, 0xc3),
    fc.integer({ min: 0x41, max: 0x5a }),
    fc.integer({ min: 0, max: 255 }),
  );
  const chunk = fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.array(byte, { maxLength: 200 }).map((a) => Uint8Array.from(a)),
    fc.jsonValue({ maxDepth: 3 }).map((v) => new TextEncoder().encode(JSON.stringify(v) + '\n')),
    fc.jsonValue({ maxDepth: 3 }).map((v) => new TextEncoder().encode(Buffer.from(JSON.stringify(v)).toString('base64') + '\n')),
    fc.constant(new TextEncoder().encode('{"type":"ping"}\n')),
  );
  const stream = fc.array(chunk, { maxLength: 30 });

  test('when random byte streams go through LineSplitter and decodeLine, then nothing throws and every result is a line or a known error', () => {
    const codes = new Set(['bad_base64', 'bad_json', 'protocol']);
    fc.assert(
      fc.property(stream, fc.integer({ min: 1, max: 64 }), (chunks, max) => {
        for (const limit of [MAX_LINE_BYTES, max]) {
          const splitter = new LineSplitter(limit);
          for (const c of chunks) {
            const ok = splitter.push(Buffer.from(c), (line) => {
              expect(line.length).toBeLessThanOrEqual(limit);
              expect(line.includes(0x0a)).toBe(false);
              const d = decodeLine(line);
              if (d.ok) parseDeviceMessage(d.message);
              else expect(codes.has(d.error)).toBe(true);
            });
            expect(splitter.buffered).toBeLessThanOrEqual(limit + 1);
            if (!ok) break;
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  test('when random byte streams hit a live server (before and after hello), then it stays up and another device keeps getting pongs', async () => {
    const server = await startServer({ allowAnonymousDevices: false });
    const { token } = await addDevice(server, 'fuzzed');
    const w = await watcher(server);
    const failures: unknown[] = [];
    const onError = (err: unknown) => failures.push(err);
    process.on('unhandledRejection', onError);
    try {
      await fc.assert(
        fc.asyncProperty(fc.boolean(), stream, async (sayHello, chunks) => {
          const s = net.connect(server.devicePort, '127.0.0.1');
          s.on('error', () => {});
          s.resume();
          await new Promise((r) => s.once('connect', r));
          if (sayHello) s.write(encode({ type: 'hello', device: 'fuzzed', token }));
          for (const c of chunks) {
            if (s.destroyed) break;
            s.write(c);
            if (c.length % 3 === 0) await new Promise((r) => setImmediate(r));
          }
          await sleep(5);
          s.destroy();
        }),
        { numRuns: 150 },
      );
      await until(async () => (await metric(server, 'sockpit_device_connections')) === 1, 5000, 'fuzz connections to close');
      const health = await fetch(server.baseUrl + '/healthz');
      expect(health.status).toBe(200);
    } finally {
      process.off('unhandledRejection', onError);
    }
    const stats = await w.stop();
    expect(failures).toEqual([]);
    expect(stats.errors).toEqual([]);
    expect(stats.count).toBeGreaterThan(5);
    expect(stats.p99).toBeLessThan(500);
  });
});
