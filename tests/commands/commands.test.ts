/** Commands from the dashboard to a device: docs/protocol.md ("Commands"). */
import type { CommandPatch, CommandStatus } from '../../server/storage';
import { until } from '../support/child';
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, nextEvent, startServer } from '../support/server';

afterEach(closeAllServers);

async function setup(overrides = {}) {
  const server = await startServer(overrides);
  const cookie = await createUserAndLogin(server);
  const socket = await connectSocket(server, cookie);
  const { token } = await addDevice(server, 'esp-1');
  return { server, cookie, socket, token };
}

describe('Send Action to Node', () => {
  test('when an operator clicks, then the device gets the exact base64 line and its ack shows acked on the socket', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    await emitAck(socket, 'device:watch', { deviceId: 'esp-1' });
    const acked = nextEvent(socket, 'command:status', (c) => c.status === 'acked');
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    expect(res.ok).toBe(true);
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    expect(cmd).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: res.command.id });
    const raw = device.rawLines.find((l) => Buffer.from(l, 'base64').toString().includes('fromservertonode'))!;
    expect(Buffer.from(raw, 'base64').toString('base64')).toBe(raw);
    device.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    const status = await acked;
    expect(status).toMatchObject({ id: res.command.id, status: 'acked', result: { relay: true } });
    // The page hears the ack first; the row follows within moments (see 'the ack leaves at once').
    await until(async () => (await db(server).getCommand(res.command.id))!.status === 'acked', 3000, 'the stored ack');
    socket.close();
    device.close();
  });

  test('when changesetting is sent, then the device receives its params', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'changesetting', params: { interval_ms: 1000 } });
    expect(res.ok).toBe(true);
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    expect(cmd).toMatchObject({ action: 'changesetting', params: { interval_ms: 1000 } });
    const failed = nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'failed');
    device.send({ type: 'ack', id: cmd.id, ok: false, result: { error: 'unknown setting' } });
    await failed;
    socket.close();
    device.close();
  });

  test('when the device is offline, then the command waits queued and is delivered on reconnect', async () => {
    const { server, socket, token } = await setup();
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    expect(res.command.status).toBe('queued');
    const sent = nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'sent');
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    expect(cmd.id).toBe(res.command.id);
    await sent;
    socket.close();
    device.close();
  });

  test('when a queued command outlives its time to live, then it becomes expired and is never delivered', async () => {
    const { server, socket, token } = await setup({ commandTtlS: 1 });
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    await nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'expired', 5000);
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    await new Promise((r) => setTimeout(r, 300));
    expect(device.received.find((m) => m.type === 'fromservertonode')).toBeUndefined();
    socket.close();
    device.close();
  });

  test('when the device never acks, then the command becomes timeout', async () => {
    const { server, socket, token } = await setup({ commandTimeoutS: 1 });
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    await device.next((m) => m.type === 'fromservertonode');
    await nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'timeout', 5000);
    socket.close();
    device.close();
  });

  test('when the server is closed and created again on the same DATA_DIR, then no command is left sent', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    await device.next((m) => m.type === 'fromservertonode');
    expect((await db(server).getCommand(res.command.id))!.status).toBe('sent');
    socket.close();
    const again = await server.restart();
    const cmd = await db(again).getCommand(res.command.id);
    expect(cmd!.status).toBe('timeout');
    device.close();
  });

  test('when a viewer tries an action, then it is refused and nothing reaches the device', async () => {
    const server = await startServer();
    await createUserAndLogin(server);
    const viewerCookie = await createUserAndLogin(server, { username: 'watcher', password: 'just looking', role: 'viewer' });
    const { token } = await addDevice(server, 'esp-1');
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const socket = await connectSocket(server, viewerCookie);
    expect(await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' })).toEqual({ ok: false, error: 'forbidden' });
    await new Promise((r) => setTimeout(r, 200));
    expect(device.received.find((m) => m.type === 'fromservertonode')).toBeUndefined();
    socket.close();
    device.close();
  });

  test('when a payload is malformed, then the ack says bad_request', async () => {
    const { socket } = await setup();
    expect(await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'selfdestruct' })).toEqual({ ok: false, error: 'bad_request' });
    expect(await emitAck(socket, 'command:send', 'nonsense')).toEqual({ ok: false, error: 'bad_request' });
    expect(await emitAck(socket, 'command:send', { deviceId: 'nope', action: 'togglerele' })).toEqual({ ok: false, error: 'not_found' });
    expect(await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'changesetting' })).toEqual({ ok: false, error: 'bad_request' });
    socket.close();
  });
});

/**
 * Holds the server's ack updates (the storage call that records `acked` or `failed`) until
 * released; with `failures`, the first that many are refused as if storage were unreachable.
 * Everything else goes to the real storage.
 */
function gateAckUpdates(server: Awaited<ReturnType<typeof startServer>>, failures = 0) {
  const storage = server.app.storage;
  const real = storage.updateCommand.bind(storage);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let calls = 0;
  storage.updateCommand = async (id: string, from: readonly CommandStatus[], patch: CommandPatch, deviceId?: string) => {
    if (patch.status !== 'acked' && patch.status !== 'failed') return real(id, from, patch, deviceId);
    calls++;
    if (calls <= failures) throw new Error('storage unreachable (test)');
    await gate;
    return real(id, from, patch, deviceId);
  };
  return { release, calls: () => calls };
}

/** A click whose ack the page has seen, while storage refuses the ack's first `failures` updates. */
async function clickAckedWhileStorageRefuses(failures: number) {
  const { server, socket, token } = await setup();
  const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
  const gate = gateAckUpdates(server, failures);
  gate.release();
  const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
  const acked = nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'acked');
  const cmd = await device.next((m) => m.type === 'fromservertonode');
  device.send({ type: 'ack', id: cmd.id, ok: true });
  await acked;
  return { server, socket, device, gate, res };
}

describe('the ack leaves at once', () => {
  test('when the device acks, then the page sees acked before the ack is stored, and the row says acked right after', async () => {
    const { server, socket, token } = await setup();
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const gate = gateAckUpdates(server);
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    const acked = nextEvent(socket, 'command:status', (c) => c.id === res.command.id && c.status === 'acked');
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    device.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    expect(await acked).toMatchObject({ status: 'acked', result: { relay: true } });
    expect((await db(server).getCommand(res.command.id))!.status).toBe('sent');
    gate.release();
    await until(async () => (await db(server).getCommand(res.command.id))!.status === 'acked', 3000, 'the stored ack');
    expect(await db(server).getCommand(res.command.id)).toMatchObject({ status: 'acked', result: { relay: true }, error: null });
    // The device was told nothing but the command: no error for its ack.
    await new Promise((r) => setTimeout(r, 100));
    expect(device.received.filter((m) => m.type === 'error')).toEqual([]);
    socket.close();
    device.close();
  });

  test('when the timeout sweep reaches the command while its ack is being stored, then the page never shows timeout and the row ends as the device said', async () => {
    const { server, socket, token } = await setup({ commandTimeoutS: 1 });
    const device = await RawDevice.hello(server.devicePort, 'esp-1', token);
    const gate = gateAckUpdates(server);
    const seen: string[] = [];
    socket.on('command:status', (c: { status: string }) => seen.push(c.status));
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-1', action: 'togglerele' });
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    device.send({ type: 'ack', id: cmd.id, ok: false, result: { error: 'relay stuck' } });
    await until(() => seen.includes('failed'), 3000, 'the failed status');
    // The sweep times the command out in storage (its ack is not stored yet) and must not say so.
    await until(async () => (await db(server).getCommand(res.command.id))!.status === 'timeout', 5000, 'the sweep');
    await new Promise((r) => setTimeout(r, 300));
    gate.release();
    await until(async () => (await db(server).getCommand(res.command.id))!.status === 'failed', 3000, 'the stored ack');
    expect(await db(server).getCommand(res.command.id)).toMatchObject({ status: 'failed', error: 'relay stuck' });
    await new Promise((r) => setTimeout(r, 1200));
    expect(seen.filter((s) => s !== 'queued' && s !== 'sent')).toEqual(['failed']);
    socket.close();
    device.close();
  });

  test('when the server stops while a shown ack waits for its retry, then the ack is stored before storage closes', async () => {
    const { server, socket, device, gate, res } = await clickAckedWhileStorageRefuses(1);
    await until(() => gate.calls() === 1, 2000, 'the first, refused, attempt');
    socket.close();
    device.close();
    // The retry is a second away; the restart's close makes it now.
    const again = await server.restart();
    expect(gate.calls()).toBe(2);
    expect((await db(again).getCommand(res.command.id))!.status).toBe('acked');
  });

  test('when storage refuses the ack at first, then it is stored once storage answers again', async () => {
    const { server, socket, device, gate, res } = await clickAckedWhileStorageRefuses(2);
    await until(async () => (await db(server).getCommand(res.command.id))!.status === 'acked', 6000, 'the ack stored on the third try');
    expect(gate.calls()).toBe(3);
    socket.close();
    device.close();
  });
});
