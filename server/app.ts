import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Logger } from 'pino';
import { apiRoutes } from './api/router';
import { createSessionMiddleware, loadUser } from './auth/session';
import { StorageSessionStore } from './auth/session-store';
import { createLoginThrottle } from './auth/throttle';
import { Fabric, LocalFabric } from './cluster/fabric';
import type { ClusterParts } from './cluster/redis';
import { CommandDelivery } from './commands/delivery';
import { CommandService } from './commands/service';
import type { Config } from './config';
import { DeviceCore } from './devices/core';
import { Presence } from './devices/presence';
import { DeviceRegistry } from './devices/registry';
import { DEFAULT_LIMITS } from './devices/session';
import { MqttStatus, MqttTransport } from './devices/transports/mqtt';
import { TcpTransport } from './devices/transports/tcp';
import { DEVICE_WS_PATH, WebSocketTransport } from './devices/transports/websocket';
import { healthRoutes } from './health/routes';
import { Lifecycle } from './lifecycle';
import { createLogger } from './logger';
import { Broadcaster, IO } from './realtime/broadcast';
import { createHandlers } from './realtime/handlers';
import { createIO, endSession, registerRealtime } from './realtime/io';
import { openStorage, Storage } from './storage';
import { TelemetryWriter } from './telemetry/writer';
import { mountWeb } from './web/http';

export interface App {
  readonly config: Config;
  readonly log: Logger;
  readonly storage: Storage;
  readonly registry: DeviceRegistry;
  readonly core: DeviceCore;
  readonly io: IO;
  readonly broadcast: Broadcaster;
  readonly commands: CommandService;
  readonly writer: TelemetryWriter;
  readonly fabric: Fabric;
  readonly httpServer: http.Server;
  /** The device listeners. */
  readonly transports: { readonly tcp: TcpTransport; readonly websocket: WebSocketTransport; readonly mqtt: MqttTransport | null };
  /** Starts the HTTP and device listeners; resolves with the ports actually bound. */
  listen(): Promise<Listening>;
  /** Stops accepting, says goodbye to devices and browsers, flushes telemetry and closes storage. */
  close(): Promise<void>;
}

/** Where the app listens once started. */
export interface Listening {
  httpPort: number;
  devicePort: number;
  /** The WebSocket path for devices on the HTTP port. */
  wsPath: string;
  /** The MQTT listener: its port, or why it is not running (`off`, or the port was taken). */
  mqtt: MqttStatus;
}

/**
 * The composition root: each part is created with what it needs and registers its own close
 * (parts close in reverse order of creation). No I/O at import; if start-up fails half-way, what
 * was opened is closed again.
 */
export async function createApp(config: Config, opts: { logger?: Logger } = {}): Promise<App> {
  const log = opts.logger ?? createLogger(config);
  const parts = new Lifecycle(log);
  try {
    return await compose(config, log, parts);
  } catch (err) {
    await parts.close();
    throw err;
  }
}

async function compose(config: Config, log: Logger, parts: Lifecycle): Promise<App> {
  const storage = parts.add('storage', await openStorage(config), (s) => s.close());
  const secret = config.sessionSecret ?? (await storage.initSetting('session_secret', crypto.randomBytes(32).toString('base64url')));
  let cluster: ClusterParts | null = null;
  if (config.redisUrl) cluster = parts.add('redis', await (await import('./cluster/redis')).connectCluster(config, log), (c) => c.close());
  const sessionStore = cluster?.sessionStore ?? parts.add('session store', new StorageSessionStore(storage, config.sessionIdleMin * 60_000), (s) => s.close());
  const sessionMiddleware = createSessionMiddleware(config, secret, sessionStore);

  const web = express();
  const httpServer = http.createServer(web);
  const io = createIO(httpServer, config, cluster?.adapter);
  parts.onClose('http and socket.io', async () => {
    io.disconnectSockets(true);
    await new Promise<void>((resolve) => io.close(() => resolve()));
    httpServer.closeAllConnections();
  });
  const broadcast = parts.add('broadcast', new Broadcaster(io, { clustered: cluster !== null, log: log.child({ component: 'realtime' }) }), (b) => b.close());
  const writer = parts.add('telemetry writer', new TelemetryWriter(storage, log, { maxRows: config.telemetryBatchRows, maxDelayMs: config.telemetryBatchMs }), (w) => w.close());
  const registry = new DeviceRegistry();
  const delivery = parts.add('command delivery', new CommandDelivery({ storage, registry, broadcast, log }), (d) => d.close());
  const fabric = parts.add('fabric', cluster?.createFabric({ io, storage, registry, delivery, broadcast }) ?? new LocalFabric(delivery), (f) => f.close());
  const commands = parts.add(
    'commands',
    new CommandService({ storage, registry, delivery, fabric, broadcast, log }, { ttlMs: config.commandTtlS * 1000, timeoutMs: config.commandTimeoutS * 1000, soleInstance: cluster === null }),
    (c) => c.close(),
  );
  const presence = new Presence({ storage, fabric, broadcast, delivery, log });
  const core = parts.add(
    'device core',
    new DeviceCore(
      { storage, writer, registry, presence, commands, broadcast, log },
      {
        limits: { ...DEFAULT_LIMITS, maxLinesPerS: config.deviceMaxLinesPerS },
        allowAnonymous: config.allowAnonymousDevices,
        maxPerIp: config.deviceMaxPerIp,
        maxConnections: config.deviceMaxConnections,
      },
    ),
    (c) => c.close(),
  );
  const tcp = parts.add('tcp listener', new TcpTransport(core, log, { maxConnections: config.deviceMaxConnections }), (t) => t.close());
  const websocket = parts.add('websocket listener', new WebSocketTransport(core, log, { trustProxy: config.trustProxy }), (w) => w.close());
  websocket.attach(httpServer);
  const mqtt =
    config.mqttPort === null
      ? null
      : parts.add('mqtt listener', await MqttTransport.create(core, log, { maxConnections: config.deviceMaxConnections, drainTimeoutMs: DEFAULT_LIMITS.drainTimeoutMs }), (m) => m.close());
  let mqttStatus: MqttStatus = { state: 'off' };
  const handlers = createHandlers({ storage, fabric, commands, broadcast });
  parts.add('realtime', registerRealtime(io, { config, storage, handlers, broadcast, sessionMiddleware, sessionStore, log }), (r) => r.close());

  // REST API (docs/api.md)
  const api = apiRoutes({
    storage,
    fabric,
    commands,
    sessionMiddleware,
    loadUser: loadUser(storage, config),
    devices: core,
    log: log.child({ component: 'api' }),
    makeLimiter: cluster?.limiter,
  });

  mountWeb(web, {
    config,
    storage,
    log,
    throttle: cluster?.throttle ?? createLoginThrottle(config.loginMaxAttempts),
    sessionMiddleware,
    health: healthRoutes({ storage, fabric, core, registry, writer, commands, broadcast, io: () => io, mqtt: () => mqttStatus }),
    fabric,
    devices: core,
    endSession: (sid, reason) => endSession(io, sid, reason),
    api,
  });
  await commands.start();

  return {
    config,
    log,
    storage,
    registry,
    core,
    io,
    broadcast,
    commands,
    writer,
    fabric,
    httpServer,
    transports: { tcp, websocket, mqtt },
    async listen() {
      const devicePort = await tcp.listen(config.devicePort, config.host);
      if (mqtt && config.mqttPort !== null) {
        try {
          mqttStatus = { state: 'listening', port: await mqtt.listen(config.mqttPort, config.host) };
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
          // Often another broker (Mosquitto, Home Assistant's) already has it: run without MQTT.
          mqttStatus = { state: 'port in use', port: config.mqttPort };
          log.warn({ port: config.mqttPort }, `MQTT port ${config.mqttPort} is already in use (another broker?); running without MQTT. Set MQTT_PORT to another port, or MQTT_PORT=off`);
        }
      }
      await new Promise<void>((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(config.port, config.host, () => {
          httpServer.off('error', reject);
          resolve();
        });
      });
      // Registered last, so it runs first at close: no new browsers or devices from here on.
      parts.onClose('stop accepting', () => {
        httpServer.close();
        // Idle keep-alive connections would hold io.close() (which waits for the HTTP server) open.
        httpServer.closeIdleConnections();
      });
      const httpPort = (httpServer.address() as AddressInfo).port;
      const mqttPort = mqttStatus.state === 'listening' ? mqttStatus.port : null;
      log.info({ httpPort, devicePort, wsPath: DEVICE_WS_PATH, mqttPort, storage: storage.kind, cluster: fabric.kind }, 'sockpit listening');
      return { httpPort, devicePort, wsPath: DEVICE_WS_PATH, mqtt: mqttStatus };
    },
    close: () => {
      log.info('shutting down');
      return parts.close().then(() => log.info('stopped'));
    },
  };
}
