import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import express, { ErrorRequestHandler } from 'express';
import type session from 'express-session';
import helmet from 'helmet';
import type { Logger } from 'pino';
import { authRoutes } from './auth/routes';
import { createSessionMiddleware, csrfToken, loadUser, verifyCsrf } from './auth/session';
import { StorageSessionStore } from './auth/session-store';
import { createLoginThrottle, LoginThrottle } from './auth/throttle';
import { Fabric, LocalFabric } from './cluster/fabric';
import { CommandService } from './commands/service';
import type { Config } from './config';
import { DEFAULT_LIMITS } from './devices/connection';
import { DeviceHub } from './devices/hub';
import { healthRoutes } from './health/routes';
import { createLogger } from './logger';
import { Broadcaster, IO } from './realtime/broadcast';
import { createIO, endSession, registerRealtime } from './realtime/io';
import { openStorage, Storage } from './storage';
import { TelemetryWriter } from './telemetry/writer';
import { pageRoutes } from './web/pages';

const ROOT = path.resolve(__dirname, '..');

export interface App {
  readonly config: Config;
  readonly log: Logger;
  readonly storage: Storage;
  readonly hub: DeviceHub;
  readonly io: IO;
  readonly broadcast: Broadcaster;
  readonly commands: CommandService;
  readonly writer: TelemetryWriter;
  readonly fabric: Fabric;
  readonly httpServer: http.Server;
  /** Starts the HTTP and device listeners; resolves with the ports actually bound. */
  listen(): Promise<{ httpPort: number; devicePort: number }>;
  /** Stops accepting, says goodbye to devices and browsers, flushes telemetry and closes storage. */
  close(): Promise<void>;
}

/** Multi-instance parts (Redis); loaded only when REDIS_URL is set. */
export interface ClusterParts {
  fabric: Fabric;
  sessionStore: session.Store;
  throttle: LoginThrottle;
  attachAdapter(io: IO): Promise<void>;
  close(): Promise<void>;
}

/** The composition root: builds storage, the device listener, HTTP and Socket.IO. No I/O at import. */
export async function createApp(config: Config, opts: { logger?: Logger } = {}): Promise<App> {
  const log = opts.logger ?? createLogger(config);
  const storage = await openStorage(config);
  const secret = config.sessionSecret ?? (await storage.initSetting('session_secret', crypto.randomBytes(32).toString('base64url')));

  let cluster: ClusterParts | null = null;
  if (config.redisUrl) {
    const { createCluster } = await import('./cluster/redis');
    cluster = await createCluster(config, storage, log);
  }
  const sessionTtlMs = config.sessionIdleMin * 60_000;
  const sessionStore = cluster?.sessionStore ?? new StorageSessionStore(storage, sessionTtlMs);
  const fabric = cluster?.fabric ?? new LocalFabric();
  const throttle = cluster?.throttle ?? createLoginThrottle(config.loginMaxAttempts);

  const writer = new TelemetryWriter(storage, log, { maxRows: config.telemetryBatchRows, maxDelayMs: config.telemetryBatchMs });
  const hub = new DeviceHub(storage, writer, log, {
    limits: { ...DEFAULT_LIMITS, maxLinesPerS: config.deviceMaxLinesPerS },
    allowAnonymous: config.allowAnonymousDevices,
    maxPerIp: config.deviceMaxPerIp,
    maxConnections: config.deviceMaxConnections,
  });

  const web = express();
  const httpServer = http.createServer(web);
  const sessionMiddleware = createSessionMiddleware(config, secret, sessionStore);

  const io = createIO(httpServer, config);
  if (cluster) await cluster.attachAdapter(io);
  const bc = new Broadcaster(io, { clustered: cluster !== null, log: log.child({ component: 'realtime' }) });
  const commands = new CommandService(storage, hub, fabric, bc, log, {
    ttlMs: config.commandTtlS * 1000,
    timeoutMs: config.commandTimeoutS * 1000,
    soleInstance: cluster === null,
  });
  const realtime = registerRealtime(io, { config, storage, fabric, commands, broadcast: bc, sessionMiddleware, sessionStore, log });

  fabric.onReplaced((deviceId, at) => {
    // Only a connection older than the one that replaced it (a device may flap back here).
    if ((hub.get(deviceId)?.connectedAt ?? Infinity) < at) hub.kick(deviceId, 'going_away', 'replaced by a newer connection of this device');
  });
  hub.events = {
    async online(deviceId, firmware) {
      const now = Date.now();
      // Both at once: until the claim is in Redis, other instances still route to the old holder.
      await Promise.all([
        storage.markDeviceSeen(deviceId, now, firmware).catch((err) => log.warn({ err }, 'could not record last seen')),
        fabric.deviceOnline(deviceId).catch((err) => log.warn({ err }, 'could not publish presence')),
      ]);
      bc.deviceStatus(deviceId, true, now, firmware);
      await commands.deliverQueued(deviceId).catch((err) => log.warn({ err, device: deviceId }, 'could not deliver queued commands'));
    },
    offline(deviceId, lastSeen) {
      void storage.markDeviceSeen(deviceId, lastSeen).catch(() => {});
      void fabric.deviceOffline(deviceId, lastSeen).catch(() => {});
      bc.deviceStatus(deviceId, false, lastSeen);
    },
    telemetry: (deviceId, ts, data) => bc.telemetry(deviceId, ts, data),
    ack: (deviceId, id, ok, result) => commands.ack(deviceId, id, ok, result),
    log: (deviceId, level, text) => bc.log(deviceId, level, text),
  };

  web.disable('x-powered-by');
  web.set('trust proxy', config.trustProxy);
  web.set('views', path.join(ROOT, 'views'));
  web.set('view engine', 'ejs');
  const https = config.publicOrigin?.startsWith('https:') ?? false;
  web.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          connectSrc: ["'self'"],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          upgradeInsecureRequests: https ? [] : null,
        },
      },
      strictTransportSecurity: https,
    }),
  );
  web.use(express.static(path.join(ROOT, 'public'), { maxAge: '1h', index: false }));
  web.use(healthRoutes({ storage, fabric, hub, writer, commands, broadcast: bc, io: () => io }));
  web.use(express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 50 }));
  web.use(express.json({ limit: '16kb' }));
  web.use(sessionMiddleware);
  web.use(loadUser(storage, config));
  web.use(async (req, res, next) => {
    // First run: every page leads to /setup until the owner exists.
    if (req.path === '/setup' || req.user) return next();
    if ((await storage.countUsers()) === 0) return res.redirect(303, '/setup');
    next();
  });
  web.use(verifyCsrf);
  web.use(authRoutes({ config, storage, throttle, log, endSession: (sid, reason) => endSession(io, sid, reason) }));
  web.use(
    pageRoutes({
      config,
      storage,
      fabric,
      kickDevice: (id, detail) => {
        hub.kick(id, 'unauthorized', detail);
      },
    }),
  );
  web.use((req, res) => {
    res.status(404).render('error', { title: 'Not found', status: 404, message: 'There is nothing here.', user: req.user ?? null, csrfToken: req.session ? csrfToken(req) : '' });
  });
  const onError: ErrorRequestHandler = (err, req, res, _next) => {
    const status = typeof err?.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : 500;
    if (status === 500) log.error({ err, url: req.originalUrl }, 'request failed');
    const message = status === 413 ? 'That request is too large.' : status === 500 ? 'Something went wrong on our side.' : 'That request could not be understood.';
    if (res.headersSent) return;
    res.status(status).render('error', { title: 'Error', status, message, user: req.user ?? null, csrfToken: '' }, (renderErr, html) => {
      if (renderErr) res.type('text').send(message);
      else res.send(html);
    });
  };
  web.use(onError);

  await commands.start();
  let closing: Promise<void> | null = null;

  return {
    config,
    log,
    storage,
    hub,
    io,
    broadcast: bc,
    commands,
    writer,
    fabric,
    httpServer,
    async listen() {
      const devicePort = await hub.listen(config.devicePort, config.host);
      await new Promise<void>((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(config.port, config.host, () => {
          httpServer.off('error', reject);
          resolve();
        });
      });
      const httpPort = (httpServer.address() as AddressInfo).port;
      log.info({ httpPort, devicePort, storage: storage.kind, cluster: fabric.kind }, 'sockpit listening');
      return { httpPort, devicePort };
    },
    close() {
      closing ??= (async () => {
        log.info('shutting down');
        httpServer.close();
        // Idle keep-alive connections would hold io.close() (which waits for the HTTP server) open.
        httpServer.closeIdleConnections();
        await hub.close();
        await writer.close();
        await commands.close();
        realtime.close();
        bc.close();
        io.disconnectSockets(true);
        await new Promise<void>((resolve) => io.close(() => resolve()));
        httpServer.closeAllConnections();
        if (sessionStore instanceof StorageSessionStore) sessionStore.close();
        await cluster?.close();
        await fabric.close();
        await storage.close();
        log.info('stopped');
      })();
      return closing;
    },
  };
}
