/**
 * Plain TCP connections read into one buffer shared by every connection (server/devices/transports/tcp.ts):
 * what one connection's line leaves behind must never be overwritten by another's read.
 */
import net from 'node:net';
import { RESUME_CHUNK } from '../../../server/devices/core';
import { readIntoSharedBuffer } from '../../../server/devices/transports/tcp';
import { RawDevice, encode } from '../../support/device';
import { addDevice, closeAllServers, db, startServer, TestServer } from '../../support/server';

afterEach(closeAllServers);

/** A plain server whose connections read through readIntoSharedBuffer; `chunks` gets a copy of each. */
async function sharedBufferServer(onSocket: (socket: net.Socket, chunks: Buffer[], used: boolean) => void): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((socket) => {
    const chunks: Buffer[] = [];
    const used = readIntoSharedBuffer(socket, (chunk) => chunks.push(Buffer.from(chunk)));
    onSocket(socket, chunks, used);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

const connect = (port: number) =>
  new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('the shared read buffer', () => {
  test('when a plain socket is accepted on this Node, then it reads through the shared buffer, pauses, resumes and ends', async () => {
    let socket!: net.Socket;
    let chunks!: Buffer[];
    let used = false;
    const ended: string[] = [];
    const { server, port } = await sharedBufferServer((s, c, u) => {
      socket = s;
      chunks = c;
      used = u;
      s.on('end', () => ended.push('end'));
      s.on('close', () => ended.push('close'));
    });
    const client = await connect(port);
    await until(() => socket !== undefined);
    expect(used).toBe(true);
    client.write('one\n');
    await until(() => Buffer.concat(chunks).toString() === 'one\n');
    socket.pause();
    client.write('two\n');
    await new Promise((r) => setTimeout(r, 200));
    expect(Buffer.concat(chunks).toString()).toBe('one\n');
    socket.resume();
    await until(() => Buffer.concat(chunks).toString() === 'one\ntwo\n');
    client.end();
    await until(() => ended.includes('close'));
    expect(ended).toEqual(['end', 'close']);
    server.close();
  });

  test('when it is asked twice for one socket, then the second time it declines', async () => {
    const answers: boolean[] = [];
    const { server, port } = await sharedBufferServer((s, _c, used) => {
      answers.push(used, readIntoSharedBuffer(s, () => {}));
      s.destroy();
    });
    const client = await connect(port);
    await until(() => answers.length === 2);
    expect(answers).toEqual([true, false]);
    client.destroy();
    server.close();
  });
});

describe('lines read through the shared buffer', () => {
  let server: TestServer;
  beforeEach(async () => {
    server = await startServer();
  });

  /**
   * Makes storage look saturated (so sessions pause reading) until the returned function is called.
   * `drainStillFull` resumes the paused sessions once while storage stays saturated, as when a
   * drain is followed at once by another backlog.
   */
  function saturate(s: TestServer): (() => void) & { drainStillFull(): void } {
    let full = true;
    const writer = s.app.writer;
    Object.defineProperty(writer, 'full', { get: () => full, configurable: true });
    // Commits still drain the queue; paused sessions stay paused until release.
    const core = s.app.core as unknown as { resumePaused(): void };
    const resumePaused = core.resumePaused;
    core.resumePaused = function (this: unknown) {
      if (!full) resumePaused.call(this);
    };
    const release = () => {
      full = false;
      writer.emit('drain');
    };
    return Object.assign(release, { drainStillFull: () => resumePaused.call(core) });
  }

  /** A connected device whose first reading (`<prefix>-0`, data { i: 0 }) was stored with storage saturated: its session is paused. */
  async function pausedDevice(id: string, prefix: string) {
    const { token } = await addDevice(server, id);
    const d = await RawDevice.hello(server.devicePort, id, token);
    const release = saturate(server);
    d.send({ type: 'telemetry', id: `${prefix}-0`, data: { i: 0 } });
    await d.next((m) => m.type === 'stored' && m.id === `${prefix}-0`);
    return { d, release };
  }

  test('when a device paused for storage closes its connection, then its session ends at once, as before the shared buffer', async () => {
    const { token } = await addDevice(server, 'esp-paused');
    const d = await RawDevice.hello(server.devicePort, 'esp-paused', token);
    const release = saturate(server);
    try {
      d.send({ type: 'telemetry', id: 'p-1', data: { a: 1 } });
      await d.next((m) => m.type === 'stored' && m.id === 'p-1');
      expect(server.app.core.connectionCount).toBe(1);
      d.close();
      const end = Date.now() + 1000;
      while (server.app.core.connectionCount > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(server.app.core.connectionCount).toBe(0);
    } finally {
      release();
    }
  });

  test('when a paused device keeps sending, then what it sent meanwhile is handled in order once storage catches up', async () => {
    const { d, release } = await pausedDevice('esp-held', 'h');
    for (let i = 1; i <= 30; i++) d.send({ type: 'telemetry', id: `h-${i}`, data: { i } });
    await new Promise((r) => setTimeout(r, 300));
    release();
    for (let i = 1; i <= 30; i++) await d.next((m) => m.type === 'stored' && m.id === `h-${i}`);
    const stored = await db(server).telemetryHistory('esp-held', 50);
    expect(stored.map((p) => p.data.i).sort((a, b) => (a as number) - (b as number))).toEqual(Array.from({ length: 31 }, (_, i) => i));
    d.close();
  });

  test('when a paused device is resumed and what it sent meanwhile fills storage again, then it is resumed with the others once storage catches up', async () => {
    const { d, release } = await pausedDevice('esp-again', 'a');
    for (let i = 1; i <= 5; i++) d.send({ type: 'telemetry', id: `a-${i}`, data: { i } });
    await new Promise((r) => setTimeout(r, 300));
    // Its held lines are handed over on resume; the first finds storage saturated and pauses it again.
    release.drainStillFull();
    await d.next((m) => m.type === 'stored' && m.id === 'a-1');
    d.send({ type: 'telemetry', id: 'a-6', data: { i: 6 } });
    await new Promise((r) => setTimeout(r, 300));
    release();
    for (let i = 2; i <= 6; i++) await d.next((m) => m.type === 'stored' && m.id === `a-${i}`);
    d.close();
  });

  test('when more devices are paused than are resumed per turn, then a drain resumes a chunk at once and the rest in the turns after, and every held reading is stored', async () => {
    const n = RESUME_CHUNK + 6;
    const devices = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const { token } = await addDevice(server, `esp-many-${i}`);
        return RawDevice.hello(server.devicePort, `esp-many-${i}`, token);
      }),
    );
    const release = saturate(server);
    try {
      // Each first reading is stored with storage saturated: every session pauses; the next two wait.
      await Promise.all(devices.map((d, i) => (d.send({ type: 'telemetry', id: `m-${i}-0`, data: { i, k: 0 } }), d.next((m) => m.type === 'stored' && m.id === `m-${i}-0`))));
      devices.forEach((d, i) => [1, 2].forEach((k) => d.send({ type: 'telemetry', id: `m-${i}-${k}`, data: { i, k } })));
      await new Promise((r) => setTimeout(r, 300));
      const core = server.app.core as unknown as { resuming: unknown[] };
      release();
      // In the same turn as the drain: one chunk resumed, the rest waiting for the next turns.
      expect(core.resuming).toHaveLength(n - RESUME_CHUNK);
      await Promise.all(devices.map((d, i) => Promise.all([1, 2].map((k) => d.next((m) => m.type === 'stored' && m.id === `m-${i}-${k}`)))));
      expect(core.resuming).toHaveLength(0);
      const stored = await db(server).telemetryHistory(`esp-many-${n - 1}`, 10);
      expect(stored.map((p) => p.data.k).sort()).toEqual([0, 1, 2]);
    } finally {
      release();
      for (const d of devices) d.close();
    }
  });

  test('when lines wait for the token check while other devices keep sending, then each is stored as it was sent', async () => {
    const { token } = await addDevice(server, 'esp-wait');
    const others = await Promise.all(
      [1, 2, 3].map(async (i) => {
        const { token: t } = await addDevice(server, `esp-busy-${i}`);
        return RawDevice.hello(server.devicePort, `esp-busy-${i}`, t);
      }),
    );
    // The others fill the shared buffer with their own bytes the whole time.
    let n = 0;
    const busy = setInterval(() => {
      for (const d of others) d.send({ type: 'telemetry', data: { noise: 'x'.repeat(200), n: n++ } });
    }, 1);
    try {
      const d = await RawDevice.connect(server.devicePort);
      const lines = [encode({ type: 'hello', device: 'esp-wait', token })];
      for (let i = 0; i < 20; i++) lines.push(encode({ type: 'telemetry', id: `w-${i}`, data: { i, label: `reading ${i}` } }));
      d.write(lines.join(''));
      for (let i = 0; i < 20; i++) await d.next((m) => m.type === 'stored' && m.id === `w-${i}`);
      expect(d.received.filter((m) => m.type === 'error')).toEqual([]);
      const stored = await db(server).telemetryHistory('esp-wait', 50);
      expect(stored.map((p) => p.data).sort((a, b) => (a.i as number) - (b.i as number))).toEqual(
        Array.from({ length: 20 }, (_, i) => ({ i, label: `reading ${i}` })),
      );
      d.close();
    } finally {
      clearInterval(busy);
      for (const o of others) o.close();
    }
  });
});
