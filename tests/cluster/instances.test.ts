/**
 * Several instances on one PostgreSQL and one Redis (docs/deploying.md), in-process. The same
 * behaviours through nginx with real processes and kill -9 are in .ci/topology.
 */
import { createClient } from 'redis';
import { Leases } from '../../server/cluster/redis/leases';
import { createLogger } from '../../server/logger';
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, db, emitAck, login, metric, nextEvent } from '../support/server';
import { clusterAvailable, redisDb, startInstances, waitFor } from '../support/cluster';

const describeCluster = clusterAvailable ? describe : describe.skip;
let redisUrl: string;

beforeAll(async () => {
  if (clusterAvailable) redisUrl = await redisDb(11);
});
afterEach(closeAllServers);

describeCluster('several instances on Redis', () => {
  test('when the device is on instance A and an operator on instance B clicks, then the device gets it and B sees acked', async () => {
    const [a, b] = await startInstances(2, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const socket = await connectSocket(b!, cookie);
    const { token } = await addDevice(a!, 'esp-r');
    const device = await RawDevice.hello(a!.devicePort, 'esp-r', token);
    await waitFor('presence on B', async () => (await emitAck(socket, 'fleet:list', {})).devices.find((d: { id: string }) => d.id === 'esp-r')?.online);

    const acked = nextEvent(socket, 'command:status', (c) => c.status === 'acked');
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-r', action: 'togglerele' });
    expect(res).toMatchObject({ ok: true, command: { status: 'sent' } });
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    expect(cmd).toEqual({ type: 'fromservertonode', msg: 'action', action: 'togglerele', id: res.command.id });
    device.send({ type: 'ack', id: cmd.id, ok: true, result: { relay: true } });
    expect(await acked).toMatchObject({ id: res.command.id, status: 'acked', result: { relay: true } });
    socket.close();
    device.close();
  });

  test('when a device on instance A sends readings, then dashboards on instance B get them live, batched and per reading', async () => {
    const [a, b] = await startInstances(2, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const plain = await connectSocket(b!, cookie);
    const batched = await connectSocket(b!, cookie, { auth: { telemetry: 'batch' } });
    const { token } = await addDevice(a!, 'esp-t');
    const device = await RawDevice.hello(a!.devicePort, 'esp-t', token);
    const single = nextEvent(plain, 'device:telemetry', (p) => p.deviceId === 'esp-t');
    const batch = nextEvent(batched, 'fleet:telemetry', (list: { deviceId: string }[]) => list.some((p) => p.deviceId === 'esp-t'));
    device.send({ t: 21.5 });
    expect((await single).data).toEqual({ t: 21.5 });
    const got = (await batch) as { deviceId: string; data: unknown }[];
    expect(got.find((p) => p.deviceId === 'esp-t')?.data).toEqual({ t: 21.5 });
    plain.close();
    batched.close();
    device.close();
  });

  test('when a device sends readings, then every dashboard on every instance gets each exactly once, in order, batched or per reading', async () => {
    const [a, b] = await startInstances(2, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const dashboards = await Promise.all(
      [a!, b!].flatMap((server) => [connectSocket(server, cookie), connectSocket(server, cookie, { auth: { telemetry: 'batch' } })]),
    );
    const seen = dashboards.map(() => [] as number[]);
    dashboards.forEach((s, i) => {
      s.on('device:telemetry', (p: { deviceId: string; data: { seq: number } }) => p.deviceId === 'esp-x' && seen[i]!.push(p.data.seq));
      s.on('fleet:telemetry', (list: { deviceId: string; data: { seq: number } }[]) => {
        for (const p of list) if (p.deviceId === 'esp-x') seen[i]!.push(p.data.seq);
      });
    });
    const { token } = await addDevice(a!, 'esp-x');
    const device = await RawDevice.hello(a!.devicePort, 'esp-x', token);
    const all = Array.from({ length: 30 }, (_, i) => i + 1);
    for (const seq of all) {
      device.send({ seq });
      if (seq % 10 === 0) await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor('every dashboard to get every reading', async () => seen.every((s) => s.length >= all.length));
    await new Promise((r) => setTimeout(r, 300)); // a second copy would have arrived by now
    // [instance A plain, A batched, B plain, B batched]
    expect(seen).toEqual([all, all, all, all]);
    for (const s of dashboards) s.close();
    device.close();
  });

  test('when a session is made on one instance, then the other accepts its cookie for pages and sockets', async () => {
    const [a, b] = await startInstances(2, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const page = await fetch(b!.baseUrl + '/', { headers: { cookie }, redirect: 'manual' });
    expect(page.status).toBe(200);
    const socket = await connectSocket(b!, cookie);
    const list = await emitAck(socket, 'fleet:list', {});
    expect(list.ok).toBe(true);
    socket.close();
  });

  test('when a device is online on one instance, then the fleet list of the other shows it online, and offline once it leaves', async () => {
    const [a, b] = await startInstances(2, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const socket = await connectSocket(b!, cookie);
    const { token } = await addDevice(a!, 'esp-p');
    const online = nextEvent(socket, 'device:status', (s) => s.deviceId === 'esp-p' && s.online);
    const device = await RawDevice.hello(a!.devicePort, 'esp-p', token);
    await online;
    const list = await emitAck(socket, 'fleet:list', {});
    expect(list.devices.find((d: { id: string }) => d.id === 'esp-p')).toMatchObject({ online: true });
    const offline = nextEvent(socket, 'device:status', (s) => s.deviceId === 'esp-p' && !s.online);
    device.close();
    await offline;
    const after = await emitAck(socket, 'fleet:list', {});
    expect(after.devices.find((d: { id: string }) => d.id === 'esp-p')).toMatchObject({ online: false });
    socket.close();
  });

  test('when commands are queued while the device is away and it comes back to another instance, then each arrives once', async () => {
    const [a, b] = await startInstances(2, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const socket = await connectSocket(a!, cookie);
    const { token } = await addDevice(a!, 'esp-q');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await emitAck(socket, 'command:send', { deviceId: 'esp-q', action: 'togglerele' });
      expect(res.command.status).toBe('queued');
      ids.push(res.command.id);
    }
    const device = await RawDevice.hello(b!.devicePort, 'esp-q', token);
    for (let i = 0; i < 3; i++) {
      const cmd = await device.next((m) => m.type === 'fromservertonode');
      device.send({ type: 'ack', id: cmd.id, ok: true });
    }
    await new Promise((r) => setTimeout(r, 500));
    const got = device.rawLines.map((l) => JSON.parse(Buffer.from(l, 'base64').toString())).filter((m) => m.type === 'fromservertonode');
    expect(got.map((m) => m.id).sort()).toEqual([...ids].sort());
    for (const id of ids) await waitFor(`${id} acked`, async () => (await db(a!).getCommand(id))?.status === 'acked');
    socket.close();
    device.close();
  });

  test('when a queued command outlives its time to live, then it expires once, whichever instance sweeps it', async () => {
    const [a, b] = await startInstances(2, redisUrl, { commandTtlS: 1 });
    const cookie = await createUserAndLogin(a!);
    const socket = await connectSocket(b!, cookie);
    await addDevice(a!, 'esp-ttl');
    const expired: string[] = [];
    socket.on('command:status', (c: { id: string; status: string }) => {
      if (c.status === 'expired') expired.push(c.id);
    });
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-ttl', action: 'togglerele' });
    expect(res.command.status).toBe('queued');
    await waitFor('expired', async () => expired.includes(res.command.id), 5000);
    await new Promise((r) => setTimeout(r, 1500)); // both sweepers have run again by now
    expect(expired.filter((id) => id === res.command.id)).toHaveLength(1);
    expect((await db(a!).getCommand(res.command.id))!.status).toBe('expired');
    socket.close();
  });

  test('when the instance holding a device stops renewing its lease, then the others announce it offline within the lease bound', async () => {
    const [a] = await startInstances(1, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const socket = await connectSocket(a!, cookie);
    await addDevice(a!, 'esp-ghost');
    // A second instance that claims the device and then dies without a word.
    const cmd = createClient({ url: redisUrl });
    const sub = cmd.duplicate();
    await Promise.all([cmd.connect(), sub.connect()]);
    const ghost = new Leases({ cmd, ns: 'sockpit:11', instanceId: 'ghost', leaseMs: 1000 });
    await ghost.claim('esp-ghost', 'tcp');
    expect((await emitAck(socket, 'fleet:list', {})).devices.find((d: { id: string }) => d.id === 'esp-ghost')?.online).toBe(true);
    const diedAt = Date.now();
    cmd.destroy();
    sub.destroy();
    const offline = await nextEvent(socket, 'device:status', (s) => s.deviceId === 'esp-ghost' && !s.online, 5000);
    expect(offline.online).toBe(false);
    // Bound: the lease (1 s here, PRESENCE_TTL_S) plus one reaper period (at most 2 s).
    expect(Date.now() - diedAt).toBeLessThan(1000 + 2000 + 500);
    expect((await a!.app.fabric.presence(['esp-ghost'])).get('esp-ghost')).toBeUndefined();
    socket.close();
  });

  test('when a second connection of a device lands on another instance, then the first is closed, presence stays online and commands go to the new one', async () => {
    const [a, b] = await startInstances(2, redisUrl);
    const cookie = await createUserAndLogin(a!);
    const socket = await connectSocket(a!, cookie);
    const { token } = await addDevice(a!, 'esp-m');
    const first = await RawDevice.hello(a!.devicePort, 'esp-m', token);
    const second = await RawDevice.hello(b!.devicePort, 'esp-m', token);
    // B claims the device in Redis, then tells A to close its stale connection (the `replaced`
    // notice); the offline A announces is corrected at once.
    expect(await first.next((m) => m.type === 'error')).toMatchObject({ error: 'going_away', detail: 'replaced by a newer connection of this device' });
    await first.waitClosed();
    await waitFor('A to let go of it', async () => (await metric(a!, 'sockpit_devices_online')) === 0);
    // A command sent through A now goes to the new connection on B.
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-m', action: 'togglerele' });
    expect((await second.next((m) => m.type === 'fromservertonode')).id).toBe(res.command.id);
    const onB = await connectSocket(b!, cookie);
    await waitFor('presence online after the correction', async () => (await emitAck(onB, 'fleet:list', {})).devices.find((d: { id: string }) => d.id === 'esp-m')?.online);
    onB.close();
    second.close();
    socket.close();
  });

  test('when a login is refused too often on one instance, then the other throttles it too', async () => {
    const [a, b] = await startInstances(2, redisUrl, { loginMaxAttempts: 2 });
    await createUserAndLogin(a!, { username: 'thr', password: 'right password', role: 'viewer' });
    await expect(login(a!, 'thr', 'wrong')).rejects.toThrow('401');
    await expect(login(b!, 'thr', 'wrong')).rejects.toThrow('401');
    await expect(login(a!, 'thr', 'wrong')).rejects.toThrow('429');
    await expect(login(b!, 'thr', 'right password')).rejects.toThrow('429');
  });
});
