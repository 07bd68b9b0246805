import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
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
import { createDeviceListeners, DeviceListeners, DevicePorts, ListenerStatus } from './devices/listeners';
import { healthRoutes } from './health/routes';
import { Lifecycle } from './lifecycle';
import { createLogger } from './logger';
import { Broadcaster, FLEET_FLUSH_MS, IO } from './realtime/broadcast';
import { createHandlers } from './realtime/handlers';
import { createIO, endSession, endUser, registerRealtime } from './realtime/io';
import { openStorage, Storage } from './storage';
import { TlsMaterial } from './tls/material';
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
  readonly transports: DeviceListeners;
  /** The certificate of the TLS listeners (null when none is on). */
  readonly tls: TlsMaterial | null;
  /** Starts the HTTP and device listeners; resolves with the ports actually bound. */
  listen(): Promise<Listening>;
  /** Reads TLS_CERT/TLS_KEY again, or renews the own certificate if due (SIGHUP). */
  reloadTls(): Promise<void>;
  /** Stops accepting, says goodbye to devices and browsers, flushes telemetry and closes storage. */
  close(): Promise<void>;
}

/** Where the app listens once started. */
export interface Listening {
  httpPort: number;
  /** The HTTPS port (pages and wss:// devices), or null when HTTPS_PORT is off. */
  httpsPort: number | null;
  devices: DevicePorts;
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

  const tls = needsTls(config) ? parts.add('tls', await TlsMaterial.open({ dataDir: config.dataDir, certFile: config.tlsCert, keyFile: config.tlsKey, publicHost: config.devicePublicHost, log }), (t) => t.close()) : null;
  const web = express();
  const httpServer = http.createServer(web);
  const httpsServer = tls && config.httpsPort !== null ? secureHttp(web, tls) : null;
  const io = createIO(httpServer, config, cluster?.adapter);
  if (httpsServer) io.engine.attach(httpsServer, { path: `${io.path()}/`, destroyUpgrade: false });
  parts.onClose('http and socket.io', async () => {
    io.disconnectSockets(true);
    httpsServer?.close();
    await new Promise<void>((resolve) => io.close(() => resolve()));
    httpServer.closeAllConnections();
    httpsServer?.closeAllConnections();
  });
  const broadcast = parts.add('broadcast', new Broadcaster(io, { clustered: cluster !== null, flushMs: FLEET_FLUSH_MS, log: log.child({ component: 'realtime' }) }), (b) => b.close());
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
  const transports = await createDeviceListeners({ core, config, log, parts, tls, httpServer, httpsServer });
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
    health: healthRoutes({ storage, fabric, core, registry, writer, commands, broadcast, io: () => io, devicePorts: () => transports.ports }),
    fabric,
    devices: core,
    endpoints: () => {
      const { tcp, tcpTls } = transports.ports;
      return { tcp: tcp.state === 'listening' ? tcp.port : null, tcpTls: tcpTls.state === 'listening' ? tcpTls.port : null, ca: tls?.ca ?? null };
    },
    endSession: (sid, reason) => endSession(io, sid, reason),
    endUser: (userId) => endUser(io, userId),
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
    transports,
    tls,
    reloadTls: async () => tls?.reload(),
    async listen() {
      const devices = await transports.listen();
      const httpPort = await listenHttp(httpServer, config.port, config.host);
      const httpsPort = httpsServer ? await listenHttp(httpsServer, config.httpsPort!, config.host) : null;
      // Registered last, so it runs first at close: no new browsers or devices from here on.
      parts.onClose('stop accepting', () => {
        for (const server of [httpServer, httpsServer]) {
          server?.close();
          // Idle keep-alive connections would hold io.close() (which waits for the HTTP server) open.
          server?.closeIdleConnections();
        }
      });
      const port = (l: ListenerStatus) => (l.state === 'listening' ? l.port : null);
      log.info(
        {
          httpPort,
          httpsPort,
          devicePort: port(devices.tcp),
          deviceTlsPort: port(devices.tcpTls),
          wsPath: devices.wsPath,
          mqttPort: port(devices.mqtt),
          mqttTlsPort: port(devices.mqttTls),
          storage: storage.kind,
          cluster: fabric.kind,
        },
        'sockpit listening',
      );
      return { httpPort, httpsPort, devices };
    },
    close: () => {
      log.info('shutting down');
      return parts.close().then(() => log.info('stopped'));
    },
  };
}

/** Any TLS listener on: the own CA (or TLS_CERT) is needed. */
function needsTls(config: Config): boolean {
  return config.deviceTlsPort !== null || config.mqttTlsPort !== null || config.httpsPort !== null;
}

/** HTTPS for the pages, Socket.IO and wss:// devices, with the TLS listeners' certificate (renewals included). */
function secureHttp(web: express.Express, tls: TlsMaterial): https.Server {
  const server = https.createServer(tls.serverOptions(), web);
  tls.on('changed', () => server.setSecureContext(tls.secureContext()));
  return server;
}

function listenHttp(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
