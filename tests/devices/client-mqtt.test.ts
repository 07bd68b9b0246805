/**
 * The device client over MQTT (server/devices/client.ts) against a bare MQTT server whose packets
 * the test writes itself: what a real server may do in one write, the client must take in order.
 */
import net from 'node:net';
import * as mqttPacket from 'mqtt-packet';
import { DeviceClient, mqttTransport } from '../../server/devices/client';

const servers: net.Server[] = [];
const clients: DeviceClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.stop();
  for (const s of servers.splice(0)) s.close();
});

/** A server that answers CONNECT and, in the same write as the SUBACK, publishes `command`; `published` gets what the device publishes. */
async function serverSendingWithSuback(command: object): Promise<{ port: number; published: mqttPacket.IPublishPacket[] }> {
  const published: mqttPacket.IPublishPacket[] = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p: mqttPacket.Packet) => {
      if (p.cmd === 'connect') socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }));
      else if (p.cmd === 'subscribe') {
        const suback = mqttPacket.generate({ cmd: 'suback', messageId: p.messageId!, granted: [1] });
        const publish = mqttPacket.generate({
          cmd: 'publish',
          topic: p.subscriptions[0]!.topic,
          payload: Buffer.from(JSON.stringify(command)),
          qos: 1,
          messageId: 7,
          retain: false,
          dup: false,
        });
        socket.write(Buffer.concat([suback, publish]));
      } else if (p.cmd === 'publish') {
        published.push(p);
        if (p.qos === 1) socket.write(mqttPacket.generate({ cmd: 'puback', messageId: p.messageId! }));
      } else if (p.cmd === 'pingreq') socket.write(mqttPacket.generate({ cmd: 'pingresp' }));
    });
    socket.on('data', (chunk) => parser.parse(chunk));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, published };
}

describe('the device client over MQTT', () => {
  test('when a command arrives in the same read as the SUBACK (the server held it until the device subscribed), then it is run after the welcome and acked', async () => {
    const { port, published } = await serverSendingWithSuback({ type: 'fromservertonode', id: 'cmd-1', action: 'togglerele' });
    const ran: string[] = [];
    const client = new DeviceClient({
      id: 'esp-early',
      token: 't',
      transport: mqttTransport({ port, id: 'esp-early', token: 't' }),
      reconnect: false,
      keepaliveMs: 0,
      handlers: {
        welcome: () => {
          ran.push('welcome');
        },
        command: (c) => {
          ran.push(c.id);
          return { ok: true, result: { relay: true } };
        },
      },
    });
    clients.push(client);
    await client.start();
    const end = Date.now() + 5000;
    while (!published.some((p) => p.topic === 'sockpit/esp-early/ack') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    // As on the other transports, the welcome comes first.
    expect(ran).toEqual(['welcome', 'cmd-1']);
    const ack = published.find((p) => p.topic === 'sockpit/esp-early/ack');
    expect(ack && JSON.parse(ack.payload.toString())).toEqual({ id: 'cmd-1', ok: true, result: { relay: true } });
  });
});
