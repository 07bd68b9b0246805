/** Redis goes away and comes back, under instances that keep serving (a private redis-server). */
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, emitAck, nextEvent } from '../support/server';
import { clusterAvailable, PrivateRedis, startInstances, waitFor } from '../support/cluster';

const describeCluster = clusterAvailable ? describe : describe.skip;
let redis: PrivateRedis | null = null;

afterEach(async () => {
  await closeAllServers();
  await redis?.down();
  redis = null;
});

const readyz = async (baseUrl: string) => (await fetch(baseUrl + '/readyz')).status;

describeCluster('when Redis is unreachable', () => {
  test('then /readyz is 503, the instance serves its own devices and sockets, and it recovers when Redis returns', async () => {
    redis = await PrivateRedis.start();
    const [a, b] = await startInstances(2, redis.url);
    const cookie = await createUserAndLogin(a!);
    const socket = await connectSocket(a!, cookie);
    const remote = await connectSocket(b!, cookie);
    const { token } = await addDevice(a!, 'esp-o');
    const device = await RawDevice.hello(a!.devicePort, 'esp-o', token);
    expect(await readyz(a!.baseUrl)).toBe(200);

    await redis.down();
    await waitFor('/readyz 503', async () => (await readyz(a!.baseUrl)) === 503);
    expect(await (await fetch(a!.baseUrl + '/readyz')).json()).toMatchObject({ redis: 'unreachable', storage: 'ok' });

    // Local round trip: the device and the socket are both on A.
    const acked = nextEvent(socket, 'command:status', (c) => c.status === 'acked');
    const res = await emitAck(socket, 'command:send', { deviceId: 'esp-o', action: 'togglerele' });
    expect(res.ok).toBe(true);
    const cmd = await device.next((m) => m.type === 'fromservertonode');
    device.send({ type: 'ack', id: cmd.id, ok: true });
    await acked;
    const telemetry = nextEvent(socket, 'device:telemetry', (t) => t.deviceId === 'esp-o');
    device.send({ sensor: 'gps', time: 1 });
    await telemetry;
    // B cannot reach the device without Redis: its command waits, queued.
    const queued = await emitAck(remote, 'command:send', { deviceId: 'esp-o', action: 'togglerele' });
    expect(queued.command.status).toBe('queued');

    await redis.up();
    await waitFor('/readyz 200 on both', async () => (await readyz(a!.baseUrl)) === 200 && (await readyz(b!.baseUrl)) === 200, 15_000);
    // What B could only queue during the outage is delivered once A is back on Redis.
    const late = await device.next((m) => m.type === 'fromservertonode' && m.id === queued.command.id, 10_000);
    device.send({ type: 'ack', id: late.id, ok: true });
    // And routing across instances works again.
    const remoteAck = nextEvent(remote, 'command:status', (c) => c.status === 'acked' && c.id !== queued.command.id);
    const again = await emitAck(remote, 'command:send', { deviceId: 'esp-o', action: 'togglerele' });
    const next = await device.next((m) => m.type === 'fromservertonode' && m.id === again.command.id);
    device.send({ type: 'ack', id: next.id, ok: true });
    await remoteAck;
    socket.close();
    remote.close();
    device.close();
  });
});
