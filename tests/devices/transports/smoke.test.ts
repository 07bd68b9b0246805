import mqtt from 'mqtt';
import WebSocket from 'ws';
import { addDevice, closeAllServers, connectSocket, createUserAndLogin, emitAck, nextEvent, startServer } from '../../support/server';

afterAll(closeAllServers);

test('smoke: ws and mqtt devices', async () => {
  const server = await startServer();
  const cookie = await createUserAndLogin(server);
  const socket = await connectSocket(server, cookie, { auth: { telemetry: 'batch' } });
  const { token } = await addDevice(server, 'ws-1');
  const ws = new WebSocket(`${server.wsUrl}?device=ws-1`, { headers: { authorization: `Bearer ${token}` } });
  const got: any[] = [];
  ws.on('message', (d) => got.push(JSON.parse(String(d).startsWith('{') ? String(d) : Buffer.from(String(d), 'base64').toString())));
  await new Promise((r) => ws.once('open', r));
  await new Promise((r) => setTimeout(r, 200));
  expect(got[0]).toMatchObject({ type: 'welcome', device: 'ws-1' });
  const status = nextEvent(socket, 'device:status', (s: any) => s.deviceId === 'mq-1' && s.online);
  const { token: t2 } = await addDevice(server, 'mq-1');
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${server.mqttPort}`, { username: 'mq-1', password: t2, clientId: 'c1', reconnectPeriod: 0 });
  expect((await status).transport).toBe('mqtt');
  await client.subscribeAsync('sockpit/mq-1/commands', { qos: 1 });
  const cmdP = new Promise<any>((r) => client.on('message', (t, p) => r(JSON.parse(String(p)))));
  const res = await emitAck(socket, 'command:send', { deviceId: 'mq-1', action: 'togglerele' });
  const cmd = await cmdP;
  expect(cmd.id).toBe(res.command.id);
  const acked = nextEvent(socket, 'command:status', (c: any) => c.id === cmd.id && c.status === 'acked');
  await client.publishAsync('sockpit/mq-1/ack', JSON.stringify({ id: cmd.id, ok: true }), { qos: 1 });
  await acked;
  await client.publishAsync('sockpit/mq-1/telemetry', JSON.stringify({ type: 'telemetry', id: 'r1', data: { t: 1 } }), { qos: 1 });
  expect(await server.app.storage.countTelemetry('mq-1')).toBe(1);
  ws.send(JSON.stringify({ type: 'telemetry', id: 'w1', data: { t: 2 } }));
  await new Promise((r) => setTimeout(r, 300));
  expect(got.some((m) => m.type === 'stored' && m.id === 'w1')).toBe(true);
  await client.endAsync();
  ws.close();
  socket.close();
});
