import os from 'node:os';
import { App, createApp, Listening } from './app';
import { bannerText, BannerInfo, BannerLine } from './banner';
import { Config, ConfigError, loadConfig } from './config';
import { claimDataDir, StartError } from './storage/data-dir-lock';
import { TlsSetupError } from './tls/material';
import type { ListenerStatus } from './devices/listeners';
import { chooseDeviceHost, isLoopbackHost } from './web/device-host';

/** What the start banner says, from the settings and the ports actually bound. */
async function bannerInfo(app: App, config: Config, ports: Listening): Promise<BannerInfo> {
  const bindAll = config.host === '0.0.0.0' || config.host === '::' || config.host === '[::]';
  const loopbackOnly = !bindAll && isLoopbackHost(config.host);
  const local = bindAll || loopbackOnly ? 'localhost' : config.host.includes(':') && !config.host.startsWith('[') ? `[${config.host}]` : config.host;
  const httpUrl = config.publicOrigin ?? `http://${local}:${ports.httpPort}`;
  let deviceHost: string | null = null;
  if (!loopbackOnly) {
    const choice = chooseDeviceHost({ configured: config.devicePublicHost, browserHost: bindAll ? null : config.host, interfaces: os.networkInterfaces() });
    deviceHost = choice.source === 'placeholder' ? null : choice.host;
  }
  const setupPending = (await app.storage.countUsers().catch(() => 1)) === 0;
  const d = ports.devices;
  const where = deviceHost ?? local;
  const state = (l: ListenerStatus, setting: string) =>
    l.state === 'listening' ? `port ${l.port}` : l.state === 'off' ? `off (${setting}=off)` : `off: port ${l.port} is in use (another broker?); set ${setting}`;
  const extra: BannerLine[] = [];
  if (d.wsPlain) extra.push({ label: 'WebSocket', value: `ws://${where}:${ports.httpPort}${d.wsPath}` });
  if (ports.httpsPort !== null) extra.push({ label: 'WebSocket', value: `wss://${where}:${ports.httpsPort}${d.wsPath}  (HTTPS pages: https://${local}:${ports.httpsPort})` });
  if (d.mqtt.state !== 'off' || config.devicePlaintext) extra.push({ label: 'MQTT', value: state(d.mqtt, 'MQTT_PORT') });
  if (d.tcpTls.state === 'listening') extra.push({ label: 'TLS', value: `lines on port ${d.tcpTls.port}, MQTT ${state(d.mqttTls, 'MQTT_TLS_PORT')}` });
  if (app.tls?.ca) extra.push({ label: 'CA', value: `SHA-256 ${app.tls.ca.sha256}  (npx sockpit tls ca prints it)` });
  const devicePort = d.tcp.state === 'listening' ? d.tcp.port : null;
  return { httpUrl, setupPending, devicePort, deviceHost, loopbackOnly, extra };
}

/** Entry point: parse settings, listen, handle signals. Everything else lives in createApp. */
/** The settings, once read (for the start-up failure's one line). */
let config: Config | null = null;

async function main(): Promise<void> {
  try {
    config = loadConfig(process.env, { stdoutIsTTY: process.stdout.isTTY === true });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sockpit: bad setting ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // SQLite without Redis is one server process's: a second one on the same DATA_DIR stops here,
  // before it touches anything. (With REDIS_URL, instances share the data and know of each other.)
  const release = config.databaseUrl === null && config.redisUrl === null ? claimDataDir(config.dataDir) : () => {};
  process.on('exit', release);
  const app = await createApp(config);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, 'signal received');
    const force = setTimeout(() => {
      app.log.error('shutdown took too long; exiting');
      process.exit(1);
    }, 20_000);
    force.unref();
    app.close().then(
      () => process.exit(0),
      (err) => {
        app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // The handlers come before listening: a signal sent as soon as the ports answer (a supervisor's
  // reload or stop) must not meet the default action, which ends the process on the spot.
  // SIGHUP: read TLS_CERT/TLS_KEY again (or renew the own certificate if due); devices stay connected.
  process.on('SIGHUP', () => void app.reloadTls());
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  const ports = await app.listen();
  const info = await bannerInfo(app, config, ports);
  // A person at a terminal gets the banner; machines (LOG_FORMAT=json) already have the
  // `sockpit listening` line, plus one line when the owner account is still to be made.
  if (config.logFormat === 'pretty') process.stdout.write(bannerText(info));
  else if (info.setupPending) app.log.info({ url: `${info.httpUrl}/setup` }, 'no user yet: open /setup to create the owner account');
}

/** The settings that name a port, for a port that could not be bound. */
function portSetting(port: number | undefined): string {
  if (config === null || port === undefined) return 'PORT, DEVICE_PORT, MQTT_PORT, DEVICE_TLS_PORT, MQTT_TLS_PORT or HTTPS_PORT';
  const c = config;
  const named = ([['PORT', c.port], ['DEVICE_PORT', c.devicePort], ['MQTT_PORT', c.mqttPort], ['DEVICE_TLS_PORT', c.deviceTlsPort], ['MQTT_TLS_PORT', c.mqttTlsPort], ['HTTPS_PORT', c.httpsPort]] as const)
    .filter(([, p]) => p === port)
    .map(([name]) => name);
  return named.length > 0 ? named.join(' or ') : 'the port settings';
}

/** One line for a failure of the operator's making (a setting, a port, the data), or null for a bug. */
function startFailure(err: Error & { code?: string; syscall?: string; port?: number; hostname?: string; severity?: string }): string | null {
  if (err instanceof StartError) return err.message;
  if (err.code === 'EADDRINUSE') return `port ${err.port} is already in use; set ${portSetting(err.port)}`;
  if ((err.code === 'EACCES' || err.code === 'EPERM') && err.syscall === 'listen') return `not allowed to listen on port ${err.port}; set ${portSetting(err.port)}`;
  if (err.code === 'EADDRNOTAVAIL' || (err.code === 'ENOTFOUND' && config?.databaseUrl === null)) return `HOST: cannot listen on ${config?.host ?? 'it'} (${err.code}: not an address of this machine)`;
  const databaseUrl = config?.databaseUrl;
  if (databaseUrl) {
    const where = new URL(databaseUrl).host;
    // The driver's errors: a server that cannot be reached, or one that refuses the user or database.
    if (err.severity !== undefined || ['ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET'].includes(err.code ?? '')) return `DATABASE_URL: cannot use the database at ${where}: ${err.message}`;
  }
  if (err.code === 'ECONNREFUSED' || /connect|database|migration|SQLITE/i.test(err.message)) {
    return `cannot start: ${err.message}${databaseUrl ? '' : ` (DATA_DIR ${config?.dataDir ?? ''})`}`;
  }
  return null;
}

main().catch((err: Error) => {
  if (err instanceof TlsSetupError) {
    process.stderr.write(`sockpit: bad setting ${err.message}\n`);
    process.exit(2);
  }
  // Operational start-up failures get one clear line; anything else is a bug worth its stack.
  const line = startFailure(err);
  process.stderr.write(line !== null ? `sockpit: ${line}\n` : `sockpit: failed to start: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
