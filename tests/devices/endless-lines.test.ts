/**
 * Case 13 of docs/security.md: endless lines. The server runs as its own process (`node
 * dist/main.js`) so that its resident memory can be read from /proc.
 */
import net from 'node:net';
import { LineSplitter, MAX_LINE_BYTES } from '../../server/devices/codec';
import { RawDevice } from '../support/device';
import { testDatabaseUrl } from '../support/server';
import { addDeviceCli, Child, childEnv, ensureBuilt, killChildren, sleep, startChild, until } from '../support/child';

const MB = 1024 * 1024;
// The same 64 KiB of 'A's (no newline) is written again and again; the client holds no more than that.
const JUNK = Buffer.alloc(64 * 1024, 0x41);

/** Engine-free: skipped in the postgres project, where it would only repeat itself. */
const describeEngineFree = testDatabaseUrl() ? describe.skip : describe;

/**
 * Opens a connection and writes up to `total` bytes without a newline, honouring backpressure, until
 * the server closes it. Resolves with what happened.
 */
function endlessLine(port: number, total: number): Promise<{ written: number; reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let written = 0;
    let reply = '';
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      s.destroy();
      resolve({ written, reply, closed: true });
    };
    s.on('data', (d) => (reply += d.toString('latin1')));
    s.on('error', finish);
    s.on('close', finish);
    s.on('end', finish);
    const pump = () => {
      while (!s.destroyed && written < total) {
        written += JUNK.length;
        if (!s.write(JUNK)) return void s.once('drain', pump);
      }
    };
    s.on('connect', pump);
  });
}

function errorCode(reply: string): string | null {
  const line = reply.split('\n')[0];
  if (!line) return null;
  try {
    return JSON.parse(Buffer.from(line, 'base64').toString()).error;
  } catch {
    return null;
  }
}

describe('13. endless lines (the line splitter)', () => {
  test('when a line arrives one byte per packet, then the splitter keeps its own compact copy, not the packets', () => {
    const splitter = new LineSplitter();
    const lines: string[] = [];
    const packets = [...Buffer.from('{"type":"ping"}')].map((b) => Buffer.alloc(1, b));
    for (const p of packets) splitter.push(p, (l) => lines.push(l.toString()));
    expect(splitter.buffered).toBe(packets.length);
    // Were the packets kept (each pinning its own memory), this would change the line.
    for (const p of packets) p.fill(0x58);
    splitter.push(Buffer.from('\r\n'), (l) => lines.push(l.toString()));
    expect(lines).toEqual(['{"type":"ping"}']);
    expect(splitter.buffered).toBe(0);
  });

  test('when 10 MB without a newline arrive in chunks, then the splitter overflows once and never holds more than 16 KiB + 1', () => {
    const splitter = new LineSplitter();
    let held = 0;
    let ok = true;
    for (let sent = 0; sent < 10 * MB && ok; sent += JUNK.length) {
      ok = splitter.push(JUNK.subarray(0, 1000 + (sent % 7)), () => {});
      held = Math.max(held, splitter.buffered);
    }
    expect(ok).toBe(false);
    expect(held).toBeLessThanOrEqual(MAX_LINE_BYTES + 1);
  });
});

describeEngineFree('13. endless lines', () => {
  let child: Child;
  let good: RawDevice;

  beforeAll(async () => {
    ensureBuilt();
    const env = childEnv({ DEVICE_MAX_PER_IP: '2000', LOG_LEVEL: 'warn' });
    const token = addDeviceCli(env, 'good');
    child = await startChild({ ...env, LOG_LEVEL: 'info' });
    good = await RawDevice.hello(child.devicePort, 'good', token);
  }, 30_000);

  afterAll(() => {
    good?.close();
    killChildren();
  });

  async function goodDeviceAnswers(): Promise<void> {
    good.send({ type: 'ping' });
    await good.next((m) => m.type === 'pong', 5000);
  }

  /** Samples VmRSS every 20 ms while `work` runs; returns the peak growth over the baseline. */
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

  test('when a device sends 10 MB without a newline, then it gets line_too_long, is closed, and the server’s RSS grows by less than 16 MB', async () => {
    const { result, growth } = await peakGrowth(() => endlessLine(child.devicePort, 10 * MB));
    expect(errorCode(result.reply)).toBe('line_too_long');
    expect(result.closed).toBe(true);
    expect(growth).toBeLessThan(16 * MB);
    await goodDeviceAnswers();
  });

  test('when 1,000 connections send endless lines at once, then each is refused, the server stays up (/healthz, a good device) and its RSS growth stays bounded', async () => {
    const N = 1000;
    let midHealth = 0;
    let midPong = false;
    const { result, growth, baseline } = await peakGrowth(async () => {
      const attacks: Promise<{ written: number; reply: string; closed: boolean }>[] = [];
      for (let i = 0; i < N; i += 100) {
        for (let j = 0; j < 100; j++) attacks.push(endlessLine(child.devicePort, 10 * MB));
        await sleep(10);
      }
      // While they are running: the server still answers HTTP and the good device.
      const [health] = await Promise.all([
        fetch(`${child.baseUrl}/healthz`).then((r) => r.status),
        goodDeviceAnswers().then(() => (midPong = true)),
      ]);
      midHealth = health;
      return Promise.all(attacks);
    });
    expect(midHealth).toBe(200);
    expect(midPong).toBe(true);
    const codes = result.map((r) => errorCode(r.reply));
    expect(codes.filter((c) => c === 'line_too_long').length).toBeGreaterThanOrEqual(N * 0.99);
    expect(result.every((r) => r.closed)).toBe(true);
    // ~1,000 sockets plus at most 16 KiB of line each; far below what 10 MB each would be.
    expect(growth).toBeLessThan(96 * MB);
    expect((await fetch(`${child.baseUrl}/healthz`)).status).toBe(200);
    await goodDeviceAnswers();
    await until(async () => /sockpit_device_connections 1\b/.test(await (await fetch(`${child.baseUrl}/metrics`)).text()), 5000, 'attack connections to be gone');
    process.stdout.write(`endless lines: baseline RSS ${(baseline / MB).toFixed(1)} MB, peak growth ${(growth / MB).toFixed(1)} MB\n`);
  }, 60_000);
});
