/**
 * Cases 9-10 of docs/security.md: cross-site WebSocket hijacking and socket events.
 * (tests/realtime/auth.test.ts covers a foreign Origin with a valid cookie; tests/commands/commands.test.ts
 * a viewer's command and one malformed payload.)
 */
import { io as ioClient } from 'socket.io-client';
import { MAX_EVENT_BYTES } from '../../server/realtime/io';
import { RawDevice } from '../support/device';
import { addDevice, ClientSocket, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, holdStorageCalls, startServer, TestServer } from '../support/server';

afterEach(closeAllServers);

const OWNER = { username: 'owner', password: 'correct horse', role: 'admin' as const };

function pollingHandshake(server: TestServer, cookie: string, origin: string): Promise<string> {
  const socket = ioClient(server.baseUrl, { transports: ['polling'], extraHeaders: { cookie, origin }, reconnection: false, forceNew: true });
  return new Promise((resolve) => {
    socket.on('connect', () => {
      socket.close();
      resolve('connected');
    });
    socket.on('connect_error', (err) => {
      socket.close();
      resolve(`refused: ${err.message}`);
    });
  });
}

describe('9. cross-site WebSocket hijacking', () => {
  test('when PUBLIC_ORIGIN is set, then only that exact origin may open a socket with the cookie (websocket and polling)', async () => {
    const server = await startServer({ publicOrigin: 'http://iot.example.com' });
    const cookie = await createUserAndLogin(server, OWNER);
    for (const origin of [server.baseUrl, 'http://evil.example', 'https://iot.example.com', 'http://iot.example.com.evil.example', 'null']) {
      await expect(connectSocket(server, cookie, { origin })).rejects.toThrow();
      expect(await pollingHandshake(server, cookie, origin)).toMatch(/^refused/);
    }
    (await connectSocket(server, cookie, { origin: 'http://iot.example.com' })).close();
    expect(await pollingHandshake(server, cookie, 'http://iot.example.com')).toBe('connected');
  });

  test('when PUBLIC_ORIGIN is not set, then a foreign or opaque origin is refused over polling too, and the server’s own origin works', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, OWNER);
    for (const origin of ['http://evil.example', 'null', `http://127.0.0.1:${new URL(server.baseUrl).port}.evil.example`]) {
      expect(await pollingHandshake(server, cookie, origin)).toMatch(/^refused/);
    }
    expect(await pollingHandshake(server, cookie, server.baseUrl)).toBe('connected');
  });
});

describe('10. socket events', () => {
  async function loggedIn(role: 'admin' | 'operator' | 'viewer' = 'admin') {
    const server = await startServer();
    const owner = await createUserAndLogin(server, OWNER);
    const cookie = role === 'admin' ? owner : await createUserAndLogin(server, { username: role, password: `${role} password`, role });
    const socket = await connectSocket(server, cookie);
    return { server, cookie, socket };
  }

  test('when payloads break the schema of any event, then each is answered bad_request and the socket stays usable', async () => {
    const { server, socket } = await loggedIn();
    await addDevice(server, 'esp-1');
    const bad: [string, unknown][] = [
      ['fleet:list', { extra: 1 }],
      ['fleet:list', 'text'],
      ['fleet:list', [1, 2]],
      ['device:watch', {}],
      ['device:watch', { deviceId: 42 }],
      ['device:watch', { deviceId: 'x'.repeat(65) }],
      ['device:watch', JSON.parse('{"deviceId":"esp-1","__proto__":{"polluted":true}}')],
      ['device:unwatch', { deviceId: '' }],
      ['telemetry:history', { deviceId: 'esp-1', limit: 2001 }],
      ['telemetry:history', { deviceId: 'esp-1', limit: 1.5 }],
      ['telemetry:history', { deviceId: 'esp-1', limit: '10' }],
      ['command:send', { deviceId: 'esp-1', action: 'reboot' }],
      ['command:send', { deviceId: 'esp-1', action: 'changesetting' }],
      ['command:send', { deviceId: 'esp-1', action: 'changesetting', params: { a: { nested: 1 } } }],
      ['command:send', { deviceId: 'esp-1', action: 'changesetting', params: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])) }],
      ['command:send', { deviceId: 'esp-1', action: 'changesetting', params: { k: 'v'.repeat(257) } }],
      ['command:send', { deviceId: 'esp-1', action: 'togglerele', sentBy: 'someone-else' }],
    ];
    for (const [event, payload] of bad) {
      expect([event, payload, await emitAck(socket, event, payload)]).toEqual([event, payload, { ok: false, error: 'bad_request' }]);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(await db(server).listCommands('esp-1', 10)).toEqual([]);
    // An event without an ack callback, and an unknown event, are ignored without harm.
    socket.emit('command:send', { deviceId: 'esp-1', action: 'togglerele' });
    socket.emit('admin:everything', { please: true });
    expect((await emitAck(socket, 'fleet:list', {})).ok).toBe(true);
    // An unknown event that asks for an answer gets one; so does an event sent with only its callback.
    expect(await socket.timeout(3000).emitWithAck('admin:everything', { please: true })).toEqual({ ok: false, error: 'bad_request' });
    expect(await socket.timeout(3000).emitWithAck('__proto__')).toEqual({ ok: false, error: 'bad_request' });
    expect((await socket.timeout(3000).emitWithAck('fleet:list')).ok).toBe(true);
    expect(await socket.timeout(3000).emitWithAck('device:watch')).toEqual({ ok: false, error: 'bad_request' });
    socket.close();
  });

  test('when a socket asks for history while its previous history request is still being answered, then the second is rate_limited', async () => {
    const { server, socket } = await loggedIn('viewer');
    await addDevice(server, 'esp-h');
    const { release } = holdStorageCalls(server, 'telemetryHistory');
    const first = emitAck(socket, 'telemetry:history', { deviceId: 'esp-h' });
    await new Promise((r) => setTimeout(r, 200));
    expect(await emitAck(socket, 'telemetry:history', { deviceId: 'esp-h' })).toEqual({ ok: false, error: 'rate_limited' });
    release();
    expect(await first).toEqual({ ok: true, points: [] });
    expect(await emitAck(socket, 'telemetry:history', { deviceId: 'esp-h' })).toEqual({ ok: true, points: [] });
    socket.close();
  });

  test(`when a socket sends an event larger than ${MAX_EVENT_BYTES} bytes, then the server closes that socket`, async () => {
    const { socket } = await loggedIn();
    expect(MAX_EVENT_BYTES).toBeLessThanOrEqual(16 * 1024);
    const reason = new Promise<string>((r) => socket.once('disconnect', (why) => r(why)));
    socket.emit('fleet:list', { pad: 'x'.repeat(MAX_EVENT_BYTES * 2) }, () => {});
    expect(await reason).toMatch(/transport (close|error)/);
  });

  test('when one user floods events from two sockets, then the per-user limit answers rate_limited, and later events work again', async () => {
    const { socket, server, cookie } = await loggedIn();
    const second = await connectSocket(server, cookie);
    const burst = (s: ClientSocket) => Array.from({ length: 60 }, () => s.timeout(10_000).emitWithAck('fleet:list', {}));
    const replies = await Promise.all([...burst(socket), ...burst(second)]);
    const limited = replies.filter((r) => r.ok === false && r.error === 'rate_limited').length;
    expect(limited).toBeGreaterThan(0);
    expect(replies.length - limited).toBeLessThanOrEqual(100);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await emitAck(socket, 'fleet:list', {})).ok).toBe(true);
    // Another user has a budget of their own.
    const other = await connectSocket(server, await createUserAndLogin(server, { username: 'zed', password: 'zed password', role: 'viewer' }));
    expect((await emitAck(other, 'fleet:list', {})).ok).toBe(true);
    for (const s of [socket, second, other]) s.close();
  });

  test('when an operator is demoted while connected, then the next command:send is forbidden and nothing reaches the device; promoted again, it works', async () => {
    const { server, socket } = await loggedIn('operator');
    const { token } = await addDevice(server, 'esp-1');
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const op = (await db(server).getUserByName('operator'))!;
    expect((await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' })).ok).toBe(true);
    await device.next((m) => m.type === 'fromservertonode');
    await db(server).setUserRole(op.id, 'viewer');
    expect(await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' })).toEqual({ ok: false, error: 'forbidden' });
    // A viewer still watches.
    expect((await emitAck(socket, 'device:watch', { deviceId: 'esp-1' })).ok).toBe(true);
    await db(server).setUserRole(op.id, 'operator');
    expect((await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' })).ok).toBe(true);
    await device.next((m) => m.type === 'fromservertonode');
    expect(device.received.filter((m) => m.type === 'fromservertonode')).toEqual([]);
    expect((await db(server).listCommands('esp-1', 10)).length).toBe(2);
    socket.close();
    device.close();
  });
});
