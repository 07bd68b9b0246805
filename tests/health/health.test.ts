/** /healthz, /readyz and /metrics (server/health/routes.ts). Storage and Redis outages: tests/app/outage.test.ts, tests/cluster/outage.test.ts. */
import { closeAllServers, startServer } from '../support/server';

afterEach(closeAllServers);

describe('health', () => {
  test('when storage is up, then /healthz and /readyz are ok and /metrics has the gauges', async () => {
    const server = await startServer();
    expect((await fetch(server.baseUrl + '/healthz')).status).toBe(200);
    const ready = await fetch(server.baseUrl + '/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', storage: 'ok' });
    const metrics = await (await fetch(server.baseUrl + '/metrics')).text();
    expect(metrics).toContain('sockpit_devices_online');
    expect(metrics).toContain('sockpit_sockets_connected');
    expect(metrics).toContain('sockpit_device_messages_total');
    expect(metrics).toContain('sockpit_commands_total');
  });

});
