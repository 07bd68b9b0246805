/** The Broadcaster (server/realtime/broadcast.ts) against a stand-in for the Socket.IO server: batching, clustering, conflation. */
import { Broadcaster, FLEET_BATCH_MAX, IO } from '../../server/realtime/broadcast';

const tick = () => new Promise((r) => setImmediate(r));

/** Just enough of a Socket.IO server for the Broadcaster: records what it emits and to whom. */
function fakeIo() {
  const emits: { rooms: string[]; except: string[]; local: boolean; event: string; payload: unknown }[] = [];
  const handlers = new Map<string, (...args: any[]) => void>();
  const operator = (local: boolean, rooms: string[] = [], except: string[] = []): any => ({
    to: (room: string) => operator(local, [...rooms, room], except),
    except: (room: string) => operator(local, rooms, [...except, room]),
    emit: (event: string, payload: unknown) => emits.push({ rooms, except, local, event, payload }),
  });
  const io = {
    on: (ev: string, fn: (...args: any[]) => void) => handlers.set(ev, fn),
    to: (room: string) => operator(false, [room]),
    local: operator(true),
    serverSideEmit: jest.fn(),
  };
  let n = 0;
  function connect(auth: object) {
    let onDisconnect = () => {};
    const socket = {
      id: `s${++n}`,
      handshake: { auth },
      data: { username: 'u' },
      rooms: new Set<string>(),
      emitted: [] as unknown[][],
      dropped: false,
      conn: {
        writeBuffer: [] as { data: string }[],
        transport: { writable: true },
        close: () => {
          socket.dropped = true;
          onDisconnect();
        },
      },
      join: (room: string) => void socket.rooms.add(room),
      leave: (room: string) => void socket.rooms.delete(room),
      emit: (...args: unknown[]) => socket.emitted.push(args),
      once: (_ev: string, fn: () => void) => (onDisconnect = fn),
      disconnect: () => onDisconnect(),
    };
    handlers.get('connection')!(socket);
    return socket;
  }
  return { io: io as unknown as IO & { serverSideEmit: jest.Mock }, emits, connect, fromOtherInstance: (readings: unknown[]) => handlers.get('fleet:readings')!(readings) };
}


describe('live telemetry', () => {
  test('when many readings arrive in one tick, then the Broadcaster sends one fleet:telemetry per tick, at most 1,000 readings each, and per-reading events only while someone wants them', async () => {
    const { io, emits, connect } = fakeIo();
    const bc = new Broadcaster(io);
    const batched = connect({ telemetry: 'batch' });
    for (let i = 0; i < 2500; i++) bc.telemetry(`d${i % 7}`, i, { i });
    // Two full packets left at once; the rest waits for the end of the tick.
    expect(emits.map((e) => [e.event, (e.payload as unknown[]).length])).toEqual([
      ['fleet:telemetry', FLEET_BATCH_MAX],
      ['fleet:telemetry', FLEET_BATCH_MAX],
    ]);
    await tick();
    expect(emits[2]).toMatchObject({ rooms: ['fleet:batch'], local: true, event: 'fleet:telemetry' });
    expect((emits[2]!.payload as unknown[]).length).toBe(500);
    expect(emits.flatMap((e) => (e.payload as { data: { i: number } }[]).map((p) => p.data.i))).toEqual(Array.from({ length: 2500 }, (_, i) => i));
    // Alone, nothing goes to other instances.
    expect(emits.every((e) => e.local)).toBe(true);
    expect(io.serverSideEmit).not.toHaveBeenCalled();
    // A socket that did not ask for batches: per-reading events again, until it leaves.
    const plain = connect({});
    emits.length = 0;
    bc.telemetry('d1', 1, { x: 1 });
    bc.telemetry('d2', 2, { x: 2 });
    await tick();
    expect(emits.map((e) => [e.event, e.rooms, e.except])).toEqual([
      ['device:telemetry', ['fleet'], ['fleet:batch']],
      ['device:telemetry', ['fleet'], ['fleet:batch']],
      ['fleet:telemetry', ['fleet:batch'], []],
    ]);
    plain.disconnect();
    batched.disconnect();
    emits.length = 0;
    bc.telemetry('d1', 3, { x: 3 });
    await tick();
    expect(emits).toEqual([]); // nobody here to send it to
    bc.close();
  });

  test('with a cadence, then a reading after a quiet spell leaves at the end of its tick, and readings that follow within the cadence leave together once it has passed', async () => {
    const { io, emits, connect } = fakeIo();
    const bc = new Broadcaster(io, { flushMs: 40 });
    connect({ telemetry: 'batch' });
    const sizes = () => emits.filter((e) => e.event === 'fleet:telemetry').map((e) => (e.payload as unknown[]).length);
    bc.telemetry('d1', 1, { n: 1 });
    await tick();
    expect(sizes()).toEqual([1]); // no wait for the cadence after a quiet spell
    bc.telemetry('d1', 2, { n: 2 });
    await tick();
    bc.telemetry('d2', 3, { n: 3 });
    await tick();
    expect(sizes()).toEqual([1]); // within the cadence: held
    await new Promise((r) => setTimeout(r, 60));
    expect(sizes()).toEqual([1, 2]); // then both in one packet
    await new Promise((r) => setTimeout(r, 60));
    bc.telemetry('d1', 4, { n: 4 });
    await tick();
    expect(sizes()).toEqual([1, 2, 1]); // quiet again: at once
    bc.close();
  });

  test('when instances share Redis, then each tick goes to the others once (fleet:readings) and every instance delivers locally, exactly once', async () => {
    const { io, emits, connect, fromOtherInstance } = fakeIo();
    const bc = new Broadcaster(io, { clustered: true });
    connect({ telemetry: 'batch' });
    connect({});
    for (let i = 1; i <= 3; i++) bc.telemetry('here', i, { i });
    await tick();
    // One publish for the tick, whatever the number of readings; local delivery besides.
    expect(io.serverSideEmit).toHaveBeenCalledTimes(1);
    expect(io.serverSideEmit.mock.calls[0]).toEqual(['fleet:readings', [1, 2, 3].map((i) => ({ deviceId: 'here', ts: i, data: { i } }))]);
    expect(emits.every((e) => e.local)).toBe(true);
    expect(emits.map((e) => e.event)).toEqual(['device:telemetry', 'device:telemetry', 'device:telemetry', 'fleet:telemetry']);
    // Readings of another instance: delivered here, not published again.
    emits.length = 0;
    fromOtherInstance([{ deviceId: 'there', ts: 5, data: { i: 5 } }]);
    expect(io.serverSideEmit).toHaveBeenCalledTimes(1);
    expect(emits.map((e) => [e.event, e.local, e.payload])).toEqual([
      ['device:telemetry', true, { deviceId: 'there', ts: 5, data: { i: 5 } }],
      ['fleet:telemetry', true, [{ deviceId: 'there', ts: 5, data: { i: 5 } }]],
    ]);
    bc.close();
  });

  test('when a batched socket lags, then it leaves the full feed, gets the newest reading of each device once it has drained, then the full feed again; if it drains nothing it is dropped', async () => {
    const { io, emits, connect, fromOtherInstance } = fakeIo();
    const bc = new Broadcaster(io, { clustered: true, conflation: { lagBytes: 1000, stuckMs: 5000, checkMs: 60_000 } });
    const s = connect({ telemetry: 'batch' });
    bc.checkBatched(0);
    expect(bc.isLagging(s.id)).toBe(false);
    // More than lagBytes queued: it lags, and the full feed skips it (`fleet:lagging`, local to this instance).
    s.conn.writeBuffer = [{ data: 'x'.repeat(1500) }];
    s.conn.transport.writable = false;
    bc.checkBatched(0);
    expect(bc.isLagging(s.id)).toBe(true);
    expect(s.rooms.has('fleet:lagging')).toBe(true);
    bc.telemetry('a', 1, { v: 1 });
    bc.telemetry('b', 2, { v: 2 });
    bc.telemetry('a', 3, { v: 3 });
    await tick();
    fromOtherInstance([{ deviceId: 'c', ts: 4, data: { v: 4 } }, { deviceId: 'b', ts: 5, data: { v: 5 } }]);
    expect(emits.filter((e) => e.event === 'fleet:telemetry').map((e) => e.except)).toEqual([['fleet:lagging'], ['fleet:lagging']]);
    // Still blocked but it read something: not stuck.
    s.conn.writeBuffer = [{ data: 'x'.repeat(1200) }];
    bc.checkBatched(4000);
    bc.checkBatched(8000);
    expect(s.emitted).toEqual([]);
    expect(s.dropped).toBe(false);
    // Drained: one batch, the newest reading of each device in delivery order, then the full feed again.
    s.conn.writeBuffer = [];
    s.conn.transport.writable = true;
    bc.checkBatched(8050);
    expect(s.emitted).toEqual([
      [
        'fleet:telemetry',
        [
          { deviceId: 'a', ts: 3, data: { v: 3 } },
          { deviceId: 'c', ts: 4, data: { v: 4 } },
          { deviceId: 'b', ts: 5, data: { v: 5 } },
        ],
      ],
    ]);
    expect(bc.isLagging(s.id)).toBe(false);
    expect(s.rooms.has('fleet:lagging')).toBe(false);
    expect(bc.counters).toMatchObject({ lagged: 1, conflated: 2 });
    emits.length = 0;
    bc.telemetry('a', 6, { v: 6 });
    await tick();
    expect(emits.filter((e) => e.event === 'fleet:telemetry').map((e) => e.except)).toEqual([[]]);
    // Lagging again and draining nothing for stuckMs: dropped.
    s.conn.writeBuffer = [{ data: 'x'.repeat(1500) }];
    s.conn.transport.writable = false;
    bc.checkBatched(10_000);
    expect(bc.isLagging(s.id)).toBe(true);
    bc.checkBatched(14_000);
    expect(s.dropped).toBe(false);
    bc.checkBatched(15_000);
    expect(s.dropped).toBe(true);
    expect(bc.counters.droppedStuck).toBe(1);
    expect(bc.isLagging(s.id)).toBe(false);
    bc.close();
  });

});
