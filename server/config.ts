import net from 'node:net';
import path from 'node:path';

/** Every setting sockpit reads, parsed once at start (README, "Settings"; .env.example). Nothing else reads process.env. */
export interface Config {
  port: number;
  host: string;
  devicePort: number;
  /** The embedded MQTT listener's port; null when MQTT_PORT=off. */
  mqttPort: number | null;
  /** TCP lines over TLS (DEVICE_TLS_PORT); null when off. */
  deviceTlsPort: number | null;
  /** MQTT over TLS (MQTT_TLS_PORT); null when off. */
  mqttTlsPort: number | null;
  /** HTTPS for the pages and wss:// devices (HTTPS_PORT); null (the default) when off. */
  httpsPort: number | null;
  /** The certificate and key the TLS listeners present (TLS_CERT, TLS_KEY); null: sockpit's own CA in DATA_DIR/tls/. */
  tlsCert: string | null;
  tlsKey: string | null;
  /** Accept devices on the plain ports (DEVICE_PLAINTEXT); false refuses them. */
  devicePlaintext: boolean;
  dataDir: string;
  databaseUrl: string | null;
  redisUrl: string | null;
  sessionSecret: string | null;
  publicOrigin: string | null;
  trustProxy: boolean;
  allowAnonymousDevices: boolean;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** `pretty`: readable lines and a start banner for a person at a terminal; `json`: pino JSON for machines. */
  logFormat: 'pretty' | 'json';
  /** The address devices dial (a host name or IP, no port), shown in the firmware snippet; null: worked out per request. */
  devicePublicHost: string | null;
  /** Seconds a queued command waits for its device before it is `expired`. */
  commandTtlS: number;
  /** Seconds a sent command waits for its ack before it is `timeout`. */
  commandTimeoutS: number;
  /** Idle session timeout, minutes. */
  sessionIdleMin: number;
  /** Absolute session lifetime, hours. */
  sessionMaxH: number;
  /** Device connections allowed from one IP address. */
  deviceMaxPerIp: number;
  /** Device connections allowed in total (net.Server.maxConnections). */
  deviceMaxConnections: number;
  /** Lines per second a device may send before it is `rate_limited`. */
  deviceMaxLinesPerS: number;
  /** Login attempts per username+IP in a 15-minute window before 429. */
  loginMaxAttempts: number;
  /** Bcrypt cost factor. */
  bcryptRounds: number;
  /** Lease, in seconds, of a device's presence in multi-instance mode. */
  presenceTtlS: number;
  /** Telemetry batching bounds. */
  telemetryBatchRows: number;
  telemetryBatchMs: number;
  /** How often sockets' sessions are re-checked, in ms (default 30 s). Not an env setting: tests shorten it. */
  sessionRecheckMs?: number;
}

export class ConfigError extends Error {
  constructor(readonly setting: string, message: string) {
    super(`${setting}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const LOG_FORMATS = ['pretty', 'json'] as const;

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function int(env: Env, name: string, def: number, min: number, max: number): number {
  const v = str(env, name);
  if (v === undefined) return def;
  if (!/^\d+$/.test(v)) throw new ConfigError(name, `must be a whole number, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function port(env: Env, name: string, def: number): number {
  return int(env, name, def, 0, 65535);
}

/** A port, or null for `off`. */
function optionalPort(env: Env, name: string, def: number | null): number | null {
  const v = str(env, name);
  if (v !== undefined && ['off', 'false', 'no', 'none', 'disabled'].includes(v.toLowerCase())) return null;
  if (v === undefined) return def;
  if (!/^\d+$/.test(v) || Number(v) > 65535) throw new ConfigError(name, `must be a port number (0-65535) or off, got "${v}"`);
  return Number(v);
}

function bool(env: Env, name: string, def: boolean): boolean {
  const v = str(env, name);
  if (v === undefined) return def;
  const l = v.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(l)) return true;
  if (['0', 'false', 'no', 'off'].includes(l)) return false;
  throw new ConfigError(name, `must be true or false, got "${v}"`);
}

function url(env: Env, name: string, protocols: string[]): string | null {
  const v = str(env, name);
  if (v === undefined) return null;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError(name, `is not a valid URL`);
  }
  if (!protocols.includes(u.protocol)) {
    throw new ConfigError(name, `must start with ${protocols.map((p) => p + '//').join(' or ')}`);
  }
  return v;
}

const DNS_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DNS_NAME = new RegExp(`^(?=.{1,253}$)${DNS_LABEL}(?:\\.${DNS_LABEL})*\\.?$`);

/** A host name or IP address a device can dial: no scheme, no port, no path. IPv6 is kept without brackets. */
function hostName(env: Env, name: string): string | null {
  const v = str(env, name);
  if (v === undefined) return null;
  const bare = v.replace(/^\[(.*)\]$/, '$1');
  if (net.isIP(bare) !== 0) return bare;
  if (DNS_NAME.test(v) && !/^[\d.]+$/.test(v)) return v;
  const hint = /:\/\//.test(v) ? ' (no http:// or other scheme)' : /:\d+$/.test(v) ? ' (no port: devices use DEVICE_PORT)' : '';
  throw new ConfigError(name, `must be a host name or IP address, like 192.168.1.20 or sockpit.lan${hint}, got "${v}"`);
}

/**
 * Parses settings from an environment; throws ConfigError naming the first bad setting.
 * `stdoutIsTTY` picks LOG_FORMAT's default: readable lines for a person, JSON for everything else.
 */
export function loadConfig(env: Env = process.env, opts: { stdoutIsTTY?: boolean } = {}): Config {
  const logLevel = (str(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }
  const logFormat = (str(env, 'LOG_FORMAT') ?? (opts.stdoutIsTTY ? 'pretty' : 'json')).toLowerCase();
  if (!(LOG_FORMATS as readonly string[]).includes(logFormat)) {
    throw new ConfigError('LOG_FORMAT', `must be one of ${LOG_FORMATS.join(', ')}, got "${logFormat}"`);
  }
  const publicOrigin = url(env, 'PUBLIC_ORIGIN', ['http:', 'https:']);
  if (publicOrigin !== null && new URL(publicOrigin).origin !== publicOrigin.replace(/\/$/, '')) {
    throw new ConfigError('PUBLIC_ORIGIN', 'must be an origin only, like https://iot.example.com (no path)');
  }
  const sessionSecret = str(env, 'SESSION_SECRET') ?? null;
  if (sessionSecret !== null && sessionSecret.length < 16) {
    throw new ConfigError('SESSION_SECRET', 'must be at least 16 characters long');
  }
  const tlsCert = str(env, 'TLS_CERT') ?? null;
  const tlsKey = str(env, 'TLS_KEY') ?? null;
  if ((tlsCert === null) !== (tlsKey === null)) {
    throw new ConfigError(tlsCert === null ? 'TLS_CERT' : 'TLS_KEY', 'TLS_CERT and TLS_KEY go together: set both (PEM files), or neither to use sockpit\'s own certificate');
  }
  const host = str(env, 'HOST') ?? '0.0.0.0';
  if (!/^[A-Za-z0-9.:\-[\]]+$/.test(host)) throw new ConfigError('HOST', `is not a host name or address: "${host}"`);
  const ports = {
    PORT: port(env, 'PORT', 3000),
    DEVICE_PORT: port(env, 'DEVICE_PORT', 7000),
    MQTT_PORT: optionalPort(env, 'MQTT_PORT', 1883),
    DEVICE_TLS_PORT: optionalPort(env, 'DEVICE_TLS_PORT', 7443),
    MQTT_TLS_PORT: optionalPort(env, 'MQTT_TLS_PORT', 8883),
    HTTPS_PORT: optionalPort(env, 'HTTPS_PORT', null),
  };
  const devicePlaintext = bool(env, 'DEVICE_PLAINTEXT', true);
  // Two of sockpit's own listeners on one port: the second would find it taken (0 is any free port;
  // with DEVICE_PLAINTEXT=false the plain device ports do not listen).
  const seen = new Map<number, string>();
  for (const [name, p] of Object.entries(ports)) {
    if (p === null || p === 0) continue;
    if (!devicePlaintext && (name === 'DEVICE_PORT' || name === 'MQTT_PORT')) continue;
    const other = seen.get(p);
    if (other) throw new ConfigError(name, `is ${p}, the same port as ${other}: each listener needs its own`);
    seen.set(p, name);
  }
  return {
    port: ports.PORT,
    host,
    devicePort: ports.DEVICE_PORT,
    mqttPort: ports.MQTT_PORT,
    deviceTlsPort: ports.DEVICE_TLS_PORT,
    mqttTlsPort: ports.MQTT_TLS_PORT,
    httpsPort: ports.HTTPS_PORT,
    tlsCert: tlsCert === null ? null : path.resolve(tlsCert),
    tlsKey: tlsKey === null ? null : path.resolve(tlsKey),
    devicePlaintext,
    dataDir: path.resolve(str(env, 'DATA_DIR') ?? './data'),
    databaseUrl: url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']),
    redisUrl: url(env, 'REDIS_URL', ['redis:', 'rediss:']),
    sessionSecret,
    publicOrigin: publicOrigin === null ? null : new URL(publicOrigin).origin,
    trustProxy: bool(env, 'TRUST_PROXY', false),
    allowAnonymousDevices: bool(env, 'ALLOW_ANONYMOUS_DEVICES', false),
    logLevel: logLevel as Config['logLevel'],
    logFormat: logFormat as Config['logFormat'],
    devicePublicHost: hostName(env, 'DEVICE_PUBLIC_HOST'),
    commandTtlS: int(env, 'COMMAND_TTL_S', 60, 1, 86400),
    commandTimeoutS: int(env, 'COMMAND_TIMEOUT_S', 10, 1, 3600),
    sessionIdleMin: int(env, 'SESSION_IDLE_MIN', 30, 1, 7 * 24 * 60),
    sessionMaxH: int(env, 'SESSION_MAX_H', 8, 1, 24 * 30),
    deviceMaxPerIp: int(env, 'DEVICE_MAX_PER_IP', 100, 1, 100000),
    deviceMaxConnections: int(env, 'DEVICE_MAX_CONNECTIONS', 20000, 1, 1000000),
    deviceMaxLinesPerS: int(env, 'DEVICE_MAX_LINES_PER_S', 200, 1, 1000000),
    loginMaxAttempts: int(env, 'LOGIN_MAX_ATTEMPTS', 10, 1, 10000),
    bcryptRounds: int(env, 'BCRYPT_ROUNDS', 12, 4, 15),
    presenceTtlS: int(env, 'PRESENCE_TTL_S', 30, 5, 3600),
    telemetryBatchRows: int(env, 'TELEMETRY_BATCH_ROWS', 500, 1, 10000),
    telemetryBatchMs: int(env, 'TELEMETRY_BATCH_MS', 20, 0, 10000),
  };
}
