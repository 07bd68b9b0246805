import { Router } from 'express';
import client from 'prom-client';
import type { Fabric } from '../cluster/fabric';
import type { CommandService } from '../commands/service';
import type { DeviceCore } from '../devices/core';
import type { DeviceRegistry } from '../devices/registry';
import type { DevicePorts, ListenerStatus } from '../devices/listeners';
import type { Broadcaster, IO } from '../realtime/broadcast';
import type { Storage } from '../storage';
import type { TelemetryWriter } from '../telemetry/writer';

export interface HealthDeps {
  storage: Storage;
  fabric: Fabric;
  core: DeviceCore;
  registry: DeviceRegistry;
  writer: TelemetryWriter;
  commands: CommandService;
  broadcast?: Broadcaster;
  io: () => IO;
  /** The device listeners' state, for /readyz. */
  devicePorts?: () => DevicePorts;
}

/** A counter whose value is read from a running total kept by the component itself. */
function total(registry: client.Registry, name: string, help: string, read: () => number, labels?: { name: string; read: () => Record<string, number> }) {
  new client.Counter({
    name,
    help,
    labelNames: labels ? [labels.name] : [],
    registers: [registry],
    collect() {
      this.reset();
      if (labels) for (const [k, v] of Object.entries(labels.read())) this.inc({ [labels.name]: k }, v);
      else this.inc(read());
    },
  });
}

function gauge(registry: client.Registry, name: string, help: string, read: () => number) {
  new client.Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
}

function byLabel(registry: client.Registry, name: string, help: string, label: string, read: () => Record<string, number>) {
  new client.Gauge({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      for (const [k, v] of Object.entries(read())) this.set({ [label]: k }, v);
    },
  });
}

/** /healthz (alive), /readyz (storage and Redis reachable) and /metrics (Prometheus). */
export function healthRoutes(deps: HealthDeps): Router {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  gauge(registry, 'sockpit_device_connections', 'Open device connections on this instance, all transports', () => deps.core.connectionCount);
  gauge(registry, 'sockpit_devices_online', 'Devices connected and authenticated on this instance', () => deps.registry.onlineCount);
  byLabel(registry, 'sockpit_device_connections_by_transport', 'Open device connections on this instance per transport', 'transport', () => deps.core.connectionsByTransport());
  byLabel(registry, 'sockpit_devices_online_by_transport', 'Devices online on this instance per transport', 'transport', () => deps.registry.onlineByTransport());
  gauge(registry, 'sockpit_sockets_connected', 'Socket.IO clients connected to this instance', () => deps.io().of('/').sockets.size);
  gauge(registry, 'sockpit_telemetry_pending', 'Readings waiting to be written', () => deps.writer.pending);
  total(registry, 'sockpit_device_messages_total', 'Telemetry messages received from devices', () => deps.core.counters.lines);
  total(registry, 'sockpit_telemetry_stored_total', 'Readings committed to storage', () => deps.writer.stored);
  total(registry, 'sockpit_device_connections_refused_total', 'Device connections refused by the per-address cap', () => deps.core.counters.refused);
  const bc = deps.broadcast;
  if (bc) {
    gauge(registry, 'sockpit_dashboards_lagging', 'Batched dashboards on this instance that fell behind and get conflated telemetry', () => bc.laggingCount);
    total(registry, 'sockpit_dashboard_lag_total', 'Times a batched dashboard fell behind and was switched to conflated telemetry', () => bc.counters.lagged);
    total(registry, 'sockpit_telemetry_conflated_total', 'Live readings a lagging dashboard skipped because its catch-up batch held a newer reading of the same device', () => bc.counters.conflated);
    total(registry, 'sockpit_sockets_dropped_total', 'Socket.IO clients disconnected for not reading', () => 0, {
      name: 'reason',
      read: () => ({ queue_full: bc.counters.droppedQueueFull, not_draining: bc.counters.droppedStuck }),
    });
  }
  total(registry, 'sockpit_commands_total', 'Command status changes made by this instance', () => 0, {
    name: 'status',
    read: () => ({ ...deps.commands.counters }),
  });

  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  r.get('/readyz', async (_req, res) => {
    const timeout = <T>(p: Promise<T>) => Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('timeout')), 2000))]);
    const storage = await timeout(deps.storage.ping()).then(() => true, () => false);
    const redis = deps.fabric.kind === 'redis' ? await timeout(deps.fabric.healthy()).catch(() => false) : null;
    const ok = storage && !deps.writer.unhealthy && redis !== false;
    const ports = deps.devicePorts?.();
    const state = (l: ListenerStatus) => (l.state === 'listening' ? 'ok' : l.state === 'off' ? 'off' : `off: port ${l.port} is in use`);
    res.status(ok ? 200 : 503).json({
      status: ok ? 'ready' : 'unavailable',
      storage: storage && !deps.writer.unhealthy ? 'ok' : 'unreachable',
      ...(redis === null ? {} : { redis: redis ? 'ok' : 'unreachable' }),
      // Not part of readiness: without its port sockpit still serves every other transport.
      ...(ports ? { mqtt: state(ports.mqtt), mqttTls: state(ports.mqttTls) } : {}),
    });
  });
  r.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  return r;
}
