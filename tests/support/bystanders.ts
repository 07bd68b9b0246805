/**
 * Well-behaved devices, one per transport (TCP lines, WebSocket, MQTT), that keep storing readings
 * while a test misbehaves beside them: "nobody else's data is touched" is checked on each of them.
 */
import { RawDevice } from './device';
import { mqttDevice, topics } from './mqtt';
import { addDevice, db, TestServer } from './server';
import { WsDevice } from './ws';

export interface BystanderReport {
  /** Readings sent and answered (`stored`, or the PUBACK), per transport. */
  stored: { tcp: number; websocket: number; mqtt: number };
  /** Anything that went wrong: an error reply, an answer that did not come, a closed connection. */
  problems: string[];
  /** The slowest answer, in ms. */
  slowestMs: number;
}

let serial = 0;

/**
 * Starts the three devices; each sends a reliable reading every `everyMs` and waits for its answer.
 * `stop()` ends them and checks that storage holds exactly the readings each was told were stored.
 */
export async function bystanders(server: TestServer, everyMs = 50): Promise<{ ids: string[]; stop(): Promise<BystanderReport> }> {
  const n = ++serial;
  const ids = { tcp: `good-tcp-${n}`, websocket: `good-ws-${n}`, mqtt: `good-mqtt-${n}` };
  const [t, w, m] = await Promise.all([addDevice(server, ids.tcp), addDevice(server, ids.websocket), addDevice(server, ids.mqtt)]);
  const tcp = await RawDevice.hello(server.devicePort, t.id, t.token);
  const ws = await WsDevice.bearer(server.wsUrl, w.id, w.token);
  const mq = await mqttDevice(server, m.id, m.token);
  const report: BystanderReport = { stored: { tcp: 0, websocket: 0, mqtt: 0 }, problems: [], slowestMs: 0 };
  let stopped = false;

  async function loop(name: keyof BystanderReport['stored'], once: (i: number) => Promise<void>): Promise<void> {
    for (let i = 0; !stopped; i++) {
      const t0 = performance.now();
      try {
        await once(i);
        report.stored[name]++;
        report.slowestMs = Math.max(report.slowestMs, performance.now() - t0);
      } catch (err) {
        report.problems.push(`${name}: ${(err as Error).message}`);
        return;
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }

  const loops = [
    loop('tcp', async (i) => {
      tcp.send({ type: 'telemetry', id: `r${i}`, data: { i } });
      await tcp.next((x) => x.type === 'stored' && x.id === `r${i}`, 5000);
    }),
    loop('websocket', async (i) => {
      ws.send({ type: 'telemetry', id: `r${i}`, data: { i } });
      await ws.next((x) => x.type === 'stored' && x.id === `r${i}`, 5000);
    }),
    loop('mqtt', async (i) => {
      const acked = mq.publishAsync(topics.telemetry(ids.mqtt), JSON.stringify({ type: 'telemetry', id: `r${i}`, data: { i } }), { qos: 1 });
      await Promise.race([acked, new Promise((_, reject) => setTimeout(() => reject(new Error('no PUBACK within 5 s')), 5000))]);
    }),
  ];

  return {
    ids: Object.values(ids),
    async stop() {
      stopped = true;
      await Promise.all(loops);
      for (const x of [...tcp.received, ...ws.received]) if (x.type === 'error') report.problems.push(`error reply: ${JSON.stringify(x)}`);
      if (tcp.closed) report.problems.push('tcp: connection closed');
      if (ws.closed) report.problems.push(`websocket: connection closed (${ws.closeCode})`);
      if (!mq.connected) report.problems.push('mqtt: connection closed');
      for (const [name, id] of Object.entries(ids) as [keyof BystanderReport['stored'], string][]) {
        const count = await db(server).countTelemetry(id);
        if (count !== report.stored[name]) report.problems.push(`${name}: ${report.stored[name]} readings answered, ${count} stored`);
      }
      tcp.close();
      ws.close();
      await mq.endAsync().catch(() => {});
      return report;
    },
  };
}

/** The bystanders kept working: each stored readings, nothing went wrong, none waited long. */
export function expectUntouched(report: BystanderReport, slowestMs = 3000): void {
  expect(report.problems).toEqual([]);
  expect(report.stored.tcp).toBeGreaterThan(0);
  expect(report.stored.websocket).toBeGreaterThan(0);
  expect(report.stored.mqtt).toBeGreaterThan(0);
  expect(report.slowestMs).toBeLessThan(slowestMs);
}
