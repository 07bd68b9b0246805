/**
 * Case 17 of docs/security.md: a duplicate device id replaces the first connection cleanly, and a
 * rotated token (or a removed device) kicks the live connection. (tests/devices/protocol.test.ts
 * covers changes made outside the process; tests/cli/cli.test.ts the CLI.)
 */
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, metric, postForm, startServer } from '../support/server';
import { sleep, until } from '../support/child';
import { jarWith } from '../support/web';

afterEach(closeAllServers);

const OWNER = { username: 'owner', password: 'correct horse', role: 'admin' as const };

describe('17. duplicate device id and token rotation', () => {
  test('when a second connection uses the same id, then the first is told why and closed, the device never shows offline, and commands and readings follow the new one', async () => {
    const server = await startServer();
    const socket = await connectSocket(server, await createUserAndLogin(server, OWNER));
    const { token } = await addDevice(server, 'esp-1');
    const statuses: { online: boolean }[] = [];
    socket.on('device:status', (s: { deviceId: string; online: boolean }) => s.deviceId === 'esp-1' && statuses.push(s));
    const first = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const second = await RawDevice.hello(server.devicePort, 'esp-1', token);
    expect(await first.next((m) => m.type === 'error')).toEqual({ type: 'error', error: 'going_away', detail: 'replaced by a newer connection of this device' });
    await first.waitClosed();
    await sleep(200);
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.every((s) => s.online)).toBe(true);
    expect((await emitAck(socket, 'fleet:list', {})).devices.find((d: { id: string }) => d.id === 'esp-1').online).toBe(true);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    const cmd = await second.next((m) => m.type === 'fromservertonode');
    expect(cmd.id).toBe(res.command.id);
    second.send({ type: 'ack', id: cmd.id, ok: true });
    second.send({ type: 'telemetry', id: 'r-1', data: { v: 1 } });
    await second.next((m) => m.type === 'stored');
    await until(async () => (await db(server).getCommand(res.command.id))!.status === 'acked', 3000, 'the ack');
    expect(first.received.filter((m) => m.type === 'fromservertonode')).toEqual([]);
    socket.close();
    second.close();
  });

  test('when two connections of one device keep reconnecting over each other, then exactly one stays and the server keeps a single entry', async () => {
    const server = await startServer();
    const { token } = await addDevice(server, 'flappy');
    const conns = await Promise.all(Array.from({ length: 10 }, () => RawDevice.hello(server.devicePort, 'flappy', token).catch(() => null)));
    await sleep(300);
    const open = conns.filter((c) => c && !c.closed);
    expect(open.length).toBe(1);
    expect(await metric(server, 'sockpit_devices_online')).toBe(1);
    open[0]!.send({ type: 'ping' });
    await open[0]!.next((m) => m.type === 'pong');
    for (const c of conns) c?.close();
    await until(async () => (await metric(server, 'sockpit_devices_online')) === 0, 2000, 'the device to go offline');
  });

  test('when an admin rotates a device’s token in the page, then the live connection is kicked, the old token is refused and the new one works', async () => {
    const server = await startServer();
    const jar = jarWith(await createUserAndLogin(server, OWNER));
    const { token } = await addDevice(server, 'esp-rot');
    const live = await RawDevice.hello(server.devicePort, 'esp-rot', token);
    const res = await postForm(server.baseUrl, '/admin/devices', '/admin/devices/esp-rot/token', {}, jar);
    expect(res.status).toBe(200);
    const html = await res.text();
    const fresh = /--token[= ]([A-Za-z0-9_-]+)/.exec(html)![1]!;
    expect(await live.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized', detail: 'token rotated' });
    await live.waitClosed();
    const old = await RawDevice.connect(server.devicePort);
    old.send({ type: 'hello', device: 'esp-rot', token });
    expect(await old.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized' });
    await old.waitClosed();
    const next = await RawDevice.hello(server.devicePort, 'esp-rot', fresh);
    next.close();
  });

  test('when an admin removes a connected device in the page, then its connection is kicked and it cannot come back', async () => {
    const server = await startServer();
    const jar = jarWith(await createUserAndLogin(server, OWNER));
    const { token } = await addDevice(server, 'esp-rm');
    const live = await RawDevice.hello(server.devicePort, 'esp-rm', token);
    expect((await postForm(server.baseUrl, '/admin/devices', '/admin/devices/esp-rm/remove', {}, jar)).status).toBe(303);
    expect(await live.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized', detail: 'device removed' });
    await live.waitClosed();
    const again = await RawDevice.connect(server.devicePort);
    again.send({ type: 'hello', device: 'esp-rm', token });
    expect(await again.next((m) => m.type === 'error')).toMatchObject({ error: 'unauthorized' });
  });
});
