import net from 'node:net';
import type { Logger } from 'pino';
import type { Storage } from '../storage';
import type { TelemetryWriter } from '../telemetry/writer';
import { hashToken, tokenMatches } from './tokens';
import { ConnectionHost, ConnectionLimits, DeviceConnection } from './connection';

const REVALIDATE_MS = 30_000;

/**
 * How long `stored` replies are held so that each device gets its replies in one write: with many
 * devices sending a reading or two at a time, one write system call per reply cost the event loop
 * more than anything else (bench/README.md). Firmware keeps unanswered readings for resending, so
 * a reply 100 ms later costs it nothing.
 */
export const REPLY_FLUSH_MS = 100;
/** Connections whose held replies are written per turn of the event loop. */
export const REPLY_FLUSH_CHUNK = 64;

/** What the hub tells the rest of the app; wired in app.ts. */
export interface HubEvents {
  online(deviceId: string, firmware: string | null): Promise<void>;
  offline(deviceId: string, lastSeen: number): void;
  telemetry(deviceId: string, ts: number, data: Record<string, unknown>): void;
  ack(deviceId: string, commandId: string, ok: boolean, result: unknown): Promise<'ok' | 'unknown'>;
  log(deviceId: string, level: 'info' | 'warn' | 'error', text: string): void;
}

export interface HubOptions {
  limits: ConnectionLimits;
  allowAnonymous: boolean;
  maxPerIp: number;
  maxConnections: number;
}

/**
 * The TCP device listener (SPEC §3) and the registry of devices connected to this instance.
 * A second connection with the same device id replaces the first.
 */
export class DeviceHub implements ConnectionHost {
  readonly server: net.Server;
  readonly limits: ConnectionLimits;
  readonly allowAnonymous: boolean;
  private readonly conns = new Set<DeviceConnection>();
  private readonly byDevice = new Map<string, DeviceConnection>();
  private readonly perIp = new Map<string, number>();
  private readonly pausedConns = new Set<DeviceConnection>();
  /** Connections holding `stored` replies, and the timer that writes them. */
  private toFlush = new Set<DeviceConnection>();
  private flushTimer: NodeJS.Timeout | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private revalidator: NodeJS.Timeout | null = null;
  /** The token hash each online device proved at its hello, to notice rotation or removal. */
  private readonly credentials = new Map<string, string>();
  events: HubEvents | null = null;
  /** Counters for /metrics. */
  readonly counters = { lines: 0, refused: 0 };

  constructor(
    private readonly storage: Storage,
    private readonly writer: TelemetryWriter,
    private readonly logger: Logger,
    private readonly opts: HubOptions,
  ) {
    this.limits = opts.limits;
    this.allowAnonymous = opts.allowAnonymous;
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.maxConnections = opts.maxConnections;
    this.server.on('error', (err) => this.logger.error({ err }, 'device listener error'));
    writer.on('drain', () => this.resumePaused());
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        this.ticker = setInterval(() => this.tick(), 1000);
        this.ticker.unref();
        this.revalidator = setInterval(() => void this.revalidate(), REVALIDATE_MS);
        this.revalidator.unref();
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  get onlineCount(): number {
    return this.byDevice.size;
  }

  /** The ready connection of a device on this instance. */
  get(deviceId: string): DeviceConnection | undefined {
    return this.byDevice.get(deviceId);
  }

  onlineIds(): string[] {
    return [...this.byDevice.keys()];
  }

  /** Closes the connection of a device (e.g. its token was rotated or it was removed). */
  kick(deviceId: string, code: 'unauthorized' | 'going_away', detail: string): boolean {
    const c = this.byDevice.get(deviceId);
    if (!c) return false;
    c.error(code, detail, true);
    return true;
  }

  /** Stops accepting, says goodbye to every device and waits (briefly) for the sockets to close. */
  async close(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker);
    if (this.revalidator) clearInterval(this.revalidator);
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushReplies(true);
    for (const c of this.conns) c.error('going_away', 'server is shutting down', true);
    const deadline = Date.now() + 3000;
    while (this.conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.conns) c.destroy('shutdown');
    await closed;
  }

  // ---- ConnectionHost ----

  get saturated(): boolean {
    return this.writer.full;
  }

  async authenticate(deviceId: string, token: string): Promise<boolean> {
    const device = await this.storage.getDevice(deviceId);
    if (device === null || !tokenMatches(token, device.tokenHash)) return false;
    this.credentials.set(deviceId, device.tokenHash);
    return true;
  }

  async admitAnonymous(deviceId: string): Promise<boolean> {
    const existing = await this.storage.getDevice(deviceId);
    // The token hash of an anonymous device matches no token, so a hello can never claim it.
    const tokenHash = existing?.tokenHash ?? `anonymous:${hashToken(deviceId)}`;
    if (!existing) await this.storage.createDevice({ id: deviceId, name: deviceId, tokenHash }).catch(() => {});
    this.credentials.set(deviceId, tokenHash);
    return true;
  }

  async ready(conn: DeviceConnection, firmware: string | null): Promise<void> {
    const id = conn.deviceId!;
    const previous = this.byDevice.get(id);
    this.byDevice.set(id, conn);
    if (previous && previous !== conn) {
      this.log(previous, 'warn', 'replaced by a new connection of the same device');
      previous.error('going_away', 'replaced by a newer connection of this device', true);
    }
    this.logger.info({ device: id, remote: conn.remoteAddress }, 'device online');
    this.log(conn, 'info', `connected from ${conn.remoteAddress}${firmware ? ` (firmware ${firmware})` : ''}`);
    await this.events?.online(id, firmware);
  }

  closed(conn: DeviceConnection, reason: string): void {
    this.conns.delete(conn);
    this.pausedConns.delete(conn);
    const ip = conn.remoteAddress;
    const n = (this.perIp.get(ip) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(ip);
    else this.perIp.set(ip, n);
    const id = conn.deviceId;
    if (id !== null && this.byDevice.get(id) === conn) {
      this.byDevice.delete(id);
      this.credentials.delete(id);
      this.logger.info({ device: id, reason }, 'device offline');
      this.log(conn, 'info', `disconnected: ${reason}`);
      this.events?.offline(id, conn.lastLineAt);
    }
  }

  telemetry(conn: DeviceConnection, msgId: string | null, data: Record<string, unknown>): void {
    const deviceId = conn.deviceId!;
    const ts = Date.now();
    this.counters.lines++;
    if (msgId === null) {
      this.writer.add({ deviceId, msgId, ts, data });
    } else {
      this.writer.add({ deviceId, msgId, ts, data }, (err) => {
        if (!err) conn.sendLater({ type: 'stored', id: msgId });
      });
    }
    this.events?.telemetry(deviceId, ts, data);
  }

  ack(conn: DeviceConnection, commandId: string, ok: boolean, result: unknown): void {
    const deviceId = conn.deviceId!;
    void this.events
      ?.ack(deviceId, commandId, ok, result)
      .then((r) => {
        if (r === 'unknown') conn.error('protocol', `no command "${commandId}" is waiting for an ack`);
      })
      .catch((err: Error) => this.logger.error({ err, device: deviceId }, 'could not record an ack'));
  }

  pausedForStorage(conn: DeviceConnection): void {
    this.pausedConns.add(conn);
  }

  flushSoon(conn: DeviceConnection): void {
    this.toFlush.add(conn);
    if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flushReplies(), REPLY_FLUSH_MS);
  }

  /**
   * Writes every connection's held replies (`stored`), one write per connection, at most
   * REPLY_FLUSH_CHUNK connections per turn of the event loop: a thousand devices' replies in one go
   * held up reading every socket for 20–40 ms. `all`: everything now (shutdown).
   */
  private flushReplies(all = false): void {
    this.flushTimer = null;
    const conns = this.toFlush.values();
    this.toFlush = new Set();
    const step = () => {
      let n = 0;
      for (let c = conns.next(); !c.done; c = conns.next()) {
        c.value.flushLater();
        if (!all && ++n >= REPLY_FLUSH_CHUNK) {
          setImmediate(step);
          return;
        }
      }
    };
    step();
  }

  log(conn: DeviceConnection, level: 'info' | 'warn' | 'error', text: string): void {
    if (conn.deviceId !== null) this.events?.log(conn.deviceId, level, text);
    else if (level !== 'info') this.logger.info({ remote: conn.remoteAddress }, text);
  }

  // ----

  private accept(socket: net.Socket): void {
    const ip = (socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
    const n = this.perIp.get(ip) ?? 0;
    if (n >= this.opts.maxPerIp) {
      this.counters.refused++;
      socket.on('error', () => {});
      socket.end(`${Buffer.from(JSON.stringify({ type: 'error', error: 'rate_limited', detail: 'too many connections from this address' })).toString('base64')}\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    this.perIp.set(ip, n + 1);
    this.conns.add(new DeviceConnection(socket, this));
  }

  /**
   * Tokens can be rotated and devices removed from another process (the CLI) or instance; every
   * REVALIDATE_MS the devices connected here are checked against storage in one query.
   */
  async revalidate(): Promise<void> {
    if (this.byDevice.size === 0) return;
    let devices;
    try {
      devices = new Map((await this.storage.listDevices()).map((d) => [d.id, d.tokenHash]));
    } catch {
      return; // Storage unreachable: keep devices connected; /readyz reports the outage.
    }
    for (const id of this.byDevice.keys()) {
      const hash = devices.get(id);
      if (hash === undefined) this.kick(id, 'unauthorized', 'device removed');
      else if (hash !== this.credentials.get(id)) this.kick(id, 'unauthorized', 'token changed');
    }
  }

  private tick(): void {
    const now = Date.now();
    for (const c of this.conns) c.tick(now);
  }

  private resumePaused(): void {
    for (const c of this.pausedConns) c.resume();
    this.pausedConns.clear();
  }
}
