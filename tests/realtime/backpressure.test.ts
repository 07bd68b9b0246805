/**
 * Case 16 of docs/security.md, browsers: a per-reading dashboard that stops reading is dropped at
 * the 4 MiB cap; a batched one is slowed down (conflated) first, and dropped only if it drains
 * nothing. (Devices that stop reading: tests/devices/backpressure.test.ts.)
 */
import { DEFAULT_CONFLATION } from '../../server/realtime/broadcast';
import { MAX_QUEUED_BYTES } from '../../server/realtime/io';
import { pendingBytes, queuedBytes } from '../../server/realtime/queue';
import { RawDevice } from '../support/device';
import { addDevice, ClientSocket, closeAllServers, connectSocket, createUserAndLogin, startServer, TestServer } from '../support/server';
import { sleep, until } from '../support/child';

afterEach(closeAllServers);

describe('16. backpressure, browsers', () => {
  /** Bytes the server holds for a socket in engine.io's queue (what cannot be written yet). */
  function engineQueued(server: TestServer, socketId: string): number | null {
    const s = server.app.io.of('/').sockets.get(socketId);
    return s ? queuedBytes(s) : null;
  }

  /** Everything the server holds for a socket (engine.io's queue and the WebSocket's buffer), or null once it is gone. */
  function heldBytes(server: TestServer, socketId: string): number | null {
    const s = server.app.io.of('/').sockets.get(socketId);
    return s ? pendingBytes(s) : null;
  }

  /**
   * Waits until `bytes` reports the socket gone (null) and returns the most it held meanwhile;
   * fails with `what` after `timeoutMs`.
   */
  async function peakUntilGone(bytes: () => number | null, timeoutMs: number, what: string): Promise<number> {
    let peak = 0;
    await until(
      () => {
        const b = bytes();
        if (b === null) return true;
        peak = Math.max(peak, b);
        return false;
      },
      timeoutMs,
      what,
      20,
    );
    return peak;
  }

  /** The TCP socket under a socket.io-client connection (websocket transport). */
  function tcpOf(socket: ClientSocket): { pause(): void; resume(): void } {
    return (socket.io.engine.transport as unknown as { ws: { _socket: { pause(): void; resume(): void } } }).ws._socket;
  }

  /** Devices that each send 3 readings of ~8 KB every 20 ms, numbered `seq` across the fleet. */
  async function streamFleet(server: TestServer, ids: string[]) {
    const devs = await Promise.all(ids.map((id) => addDevice(server, id)));
    const conns = await Promise.all(devs.map((d) => RawDevice.hello(server.devicePort, d.id, d.token)));
    const pad = 'x'.repeat(8000);
    const last = new Map<string, number>();
    let seq = 0;
    let sent = 0;
    const send = (i: number, extra: object = {}) => {
      conns[i]!.send({ sensor: 'big', seq: ++seq, pad, ...extra });
      last.set(ids[i]!, seq);
      sent++;
      return seq;
    };
    const timer = setInterval(() => {
      for (let i = 0; i < conns.length; i++) for (let k = 0; k < 3; k++) send(i);
    }, 20);
    return {
      /** The last `seq` each device sent. */
      last,
      get sent() {
        return sent;
      },
      /** One more reading from device i (small); returns its seq. */
      one: (i: number) => {
        conns[i]!.send({ sensor: 'small', seq: ++seq });
        last.set(ids[i]!, seq);
        sent++;
        return seq;
      },
      stop: () => clearInterval(timer),
      close: () => {
        clearInterval(timer);
        for (const c of conns) c.close();
      },
    };
  }

  type Reading = { deviceId: string; data: { seq: number } };

  test(`when a per-reading dashboard stops reading while the fleet streams, then the server queues at most about ${MAX_QUEUED_BYTES / 1024 / 1024} MiB for it and drops it, while another dashboard keeps up`, async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, { username: 'owner', password: 'correct horse', role: 'admin' });
    const slow = await connectSocket(server, cookie);
    const fast = await connectSocket(server, cookie);
    let fastEvents = 0;
    fast.on('device:telemetry', () => fastEvents++);
    // The slow dashboard's TCP socket stops reading (a tab frozen, a hostile client).
    tcpOf(slow).pause();
    const devs = await Promise.all(['s1', 's2', 's3'].map((id) => addDevice(server, id)));
    const conns = await Promise.all(devs.map((d) => RawDevice.hello(server.devicePort, d.id, d.token)));
    const pad = 'x'.repeat(8000);
    let seq = 0;
    const stream = setInterval(() => {
      for (const c of conns) for (let i = 0; i < 3; i++) c.send({ sensor: 'big', seq: ++seq, pad });
    }, 20);
    const t0 = Date.now();
    try {
      const maxQueued = await peakUntilGone(() => engineQueued(server, slow.id!), 15_000, 'the slow dashboard to be disconnected');
      // Without the cap, the heartbeat would drop it only after ~40 s, holding ~130 MB here.
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(maxQueued).toBeLessThan(3 * MAX_QUEUED_BYTES);
      const before = fastEvents;
      await until(() => fastEvents > before + 50, 5000, 'the other dashboard to keep getting events');
    } finally {
      clearInterval(stream);
    }
    expect(fast.connected).toBe(true);
    for (const c of conns) c.close();
    fast.close();
    slow.close();
  }, 30_000);
  test('when a batched dashboard stops reading for a while and then reads again, then it stays connected, gets one conflated batch with the newest reading of each device, then the full feed again', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, { username: 'owner', password: 'correct horse', role: 'admin' });
    const slow = await connectSocket(server, cookie, { auth: { telemetry: 'batch' } });
    const got: Reading[][] = [];
    slow.on('fleet:telemetry', (b: Reading[]) => got.push(b));
    tcpOf(slow).pause();
    const ids = ['c1', 'c2', 'c3'];
    const fleet = await streamFleet(server, ids);
    const bc = server.app.broadcast;
    let maxHeld = 0;
    try {
      await until(() => bc.isLagging(slow.id!), 15_000, 'the paused dashboard to lag', 20);
      // Behind for a while: what is held for it stays bounded, far below the hard cap.
      const end = Date.now() + 1500;
      await until(() => {
        maxHeld = Math.max(maxHeld, heldBytes(server, slow.id!) ?? Infinity);
        return Date.now() > end;
      }, 5000, 'a while', 20);
    } finally {
      fleet.stop();
    }
    expect(maxHeld).toBeLessThan(MAX_QUEUED_BYTES / 2);
    await sleep(300); // the last readings reach the server
    expect(bc.isLagging(slow.id!)).toBe(true);
    const last = new Map(fleet.last);
    tcpOf(slow).resume();
    await until(() => !bc.isLagging(slow.id!), 10_000, 'the dashboard to catch up');
    const seen = () => got.flat();
    await until(() => [...last].every(([id, seq]) => seen().some((p) => p.deviceId === id && p.data.seq === seq)), 10_000, 'the newest readings to arrive');
    // After what it had been sent before it lagged: one batch, the newest reading of each device.
    const conflated = got.find((b) => b.some((p) => p.data.seq === last.get('c1')))!;
    expect(conflated.map((p) => [p.deviceId, p.data.seq]).sort()).toEqual([...last].sort());
    expect(got.indexOf(conflated)).toBe(got.length - 1);
    expect(seen().length).toBeLessThan(fleet.sent);
    for (const id of ids) {
      const seqs = seen().filter((p) => p.deviceId === id).map((p) => p.data.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b)); // in order, each at most once
      expect(new Set(seqs).size).toBe(seqs.length);
    }
    // Caught up: every reading again.
    const more: number[] = [];
    for (let k = 0; k < 5; k++) {
      more.push(fleet.one(k % 3));
      await sleep(30);
    }
    await until(() => more.every((seq) => seen().some((p) => p.data.seq === seq)), 5000, 'the full feed again');
    expect(seen().filter((p) => p.data.seq > Math.max(...last.values())).map((p) => p.data.seq)).toEqual(more);
    expect(slow.connected).toBe(true);
    expect(bc.counters.lagged).toBe(1);
    expect(bc.counters.conflated).toBeGreaterThan(0);
    fleet.close();
    slow.close();
  }, 40_000);

  test(`when a batched dashboard stops reading for good, then it is slowed down first and dropped once it has drained nothing for ${DEFAULT_CONFLATION.stuckMs / 1000} s, while another dashboard keeps up`, async () => {
    expect(DEFAULT_CONFLATION.stuckMs).toBe(30_000);
    const server = await startServer();
    const bc = server.app.broadcast;
    bc.limits.stuckMs = 1500; // the rule at test speed; the default is checked above
    const cookie = await createUserAndLogin(server, { username: 'owner', password: 'correct horse', role: 'admin' });
    const slow = await connectSocket(server, cookie, { auth: { telemetry: 'batch' } });
    const fast = await connectSocket(server, cookie, { auth: { telemetry: 'batch' } });
    let fastReadings = 0;
    fast.on('fleet:telemetry', (b: unknown[]) => (fastReadings += b.length));
    tcpOf(slow).pause();
    const fleet = await streamFleet(server, ['b1', 'b2', 'b3']);
    try {
      await until(() => bc.isLagging(slow.id!), 15_000, 'the frozen dashboard to lag', 20);
      const laggingAt = Date.now();
      const maxHeld = await peakUntilGone(() => heldBytes(server, slow.id!), 10_000, 'the frozen dashboard to be disconnected');
      const after = Date.now() - laggingAt;
      expect(after).toBeGreaterThanOrEqual(1400);
      expect(after).toBeLessThan(5000);
      expect(maxHeld).toBeLessThan(MAX_QUEUED_BYTES / 2);
      const before = fastReadings;
      await until(() => fastReadings > before + 50, 5000, 'the other dashboard to keep getting readings');
    } finally {
      fleet.stop();
    }
    expect(fast.connected).toBe(true);
    expect(bc.counters.droppedStuck).toBe(1);
    expect(bc.counters.droppedQueueFull).toBe(0);
    fleet.close();
    fast.close();
    slow.close();
  }, 30_000);
});
