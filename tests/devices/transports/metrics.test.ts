/**
 * /metrics with devices on every transport (docs/deploying.md, "Operating"): connections and online
 * devices per transport, and readings counted whatever carried them. Scraping it after readings
 * once aborted the process (a timer cleared as an immediate corrupted Node's count of immediates,
 * which prom-client's default metrics read through process.getActiveResourcesInfo()).
 */
import { RawDevice } from '../../support/device';
import { mqttDevice, topics } from '../../support/mqtt';
import { addDevice, closeAllServers, startServer } from '../../support/server';
import { WsDevice } from '../../support/ws';

afterEach(closeAllServers);

test('when readings arrive over TCP, WebSocket and MQTT and /metrics is scraped again and again, then it answers with the counts per transport and the process stays up', async () => {
  const server = await startServer();
  const [t, w, m] = await Promise.all(['m-tcp', 'm-ws', 'm-mqtt'].map((id) => addDevice(server, id)));
  const tcp = await RawDevice.hello(server.devicePort, t!.id, t!.token);
  const ws = await WsDevice.bearer(server.wsUrl, w!.id, w!.token);
  const mq = await mqttDevice(server, m!.id, m!.token);
  for (let round = 0; round < 5; round++) {
    tcp.send({ type: 'telemetry', id: `t${round}`, data: { round } });
    ws.send({ type: 'telemetry', id: `w${round}`, data: { round } });
    await mq.publishAsync(topics.telemetry(m!.id), JSON.stringify({ type: 'telemetry', id: `m${round}`, data: { round } }), { qos: 1 });
    await tcp.next((x) => x.type === 'stored' && x.id === `t${round}`);
    await ws.next((x) => x.type === 'stored' && x.id === `w${round}`);
    await new Promise((r) => setTimeout(r, 60)); // past the fleet's live-reading flush
    const res = await fetch(server.baseUrl + '/metrics');
    expect(res.status).toBe(200);
    const text = await res.text();
    for (const transport of ['tcp', 'websocket', 'mqtt']) {
      expect(text).toMatch(new RegExp(`^sockpit_device_connections_by_transport\\{transport="${transport}"\\} 1$`, 'm'));
      expect(text).toMatch(new RegExp(`^sockpit_devices_online_by_transport\\{transport="${transport}"\\} 1$`, 'm'));
    }
    expect(text).toMatch(new RegExp(`^sockpit_device_messages_total ${3 * (round + 1)}$`, 'm'));
  }
  expect((await fetch(server.baseUrl + '/healthz')).status).toBe(200);
  tcp.close();
  ws.close();
  await mq.endAsync();
});
