import type { Logger } from 'pino';
import type { CommandService } from '../commands/service';
import type { Broadcaster } from '../realtime/broadcast';
import { DuplicateError, type Storage, type TelemetryRow } from '../storage';
import type { Pending, TelemetryWriter } from '../telemetry/writer';
import { GOING_AWAY, stored } from './outbound';
import type { Presence } from './presence';
import type { DeviceRegistry } from './registry';
import { DeviceLink, DeviceSession, Done, SessionLimits, SessionServices, Transport, TRANSPORTS } from './session';
import { hashToken, tokenMatches } from './tokens';

/** What the stored token hash of a device admitted in anonymous mode starts with. */
const ANONYMOUS_PREFIX = 'anonymous:';

/** How often the devices connected here are checked against storage (rotated tokens, removed devices). */
const REVALIDATE_MS = 30_000;

/**
 * How long `stored` replies are held so that each device gets its replies in one write: with many
 * devices sending a reading or two at a time, one write system call per reply cost the event loop
 * more than anything else (bench/README.md). Firmware keeps unanswered readings for resending, so
 * a reply 200 ms later costs it nothing.
 */
export const REPLY_FLUSH_MS = 200;
/** Sessions whose held replies are written per turn of the event loop. */
export const REPLY_FLUSH_CHUNK = 64;
/** Sessions paused for storage that are resumed per turn of the event loop once it drains. */
export const RESUME_CHUNK = 64;

/** How long shutdown waits for devices to take their goodbye and close. */
const GOODBYE_WAIT_MS = 3000;

/**
 * A reading on its way to storage, and what happens once it is committed: a transport-confirmed
 * message is confirmed (MQTT's PUBACK), a reading with an id is answered `stored`. Its data is kept
 * only as the JSON text storage writes, and the reading is its own writer entry (no closure):
 * readings wait 100–200 ms for their commit, and thousands of parsed objects and callbacks alive
 * that long were copied by every young-generation GC (bench/README.md). `data` parses the text
 * again if anything asks.
 */
class PendingReading implements TelemetryRow, Pending {
  constructor(
    readonly deviceId: string,
    readonly msgId: string | null,
    readonly ts: number,
    readonly json: string,
    private readonly session: DeviceSession,
    private readonly confirm: Done | undefined,
  ) {}

  get row(): TelemetryRow {
    return this;
  }

  get data(): Record<string, unknown> {
    return JSON.parse(this.json) as Record<string, unknown>;
  }

  done(err: Error | null): void {
    if (this.confirm) this.confirm(err);
    else if (!err && this.msgId !== null) this.session.sendLater(stored(this.msgId));
  }
}

/** One connection's place in the per-address and total caps (DeviceCore.admit). */
export interface Admission {
  readonly remoteAddress: string;
  /** Gives the place back; once only (a session does it when it closes). */
  release(): void;
}

/** What the pages and the API tell the live connections when an admin changes a device. */
export interface LiveDevices {
  removed(deviceId: string): void;
  tokenRotated(deviceId: string): void;
}

export interface DeviceCoreOptions {
  limits: SessionLimits;
  allowAnonymous: boolean;
  /** Device connections allowed from one address, all transports together. */
  maxPerIp: number;
  /** Device connections allowed in total, all transports together. */
  maxConnections: number;
}

export interface DeviceCoreDeps {
  storage: Storage;
  writer: TelemetryWriter;
  registry: DeviceRegistry;
  presence: Presence;
  commands: CommandService;
  broadcast: Broadcaster;
  log: Logger;
}

/**
 * The protocol core every transport shares (docs/protocol.md): it opens a session per link,
 * checks tokens, caps connections per address, stores telemetry with the `stored` guarantee,
 * records acks, replaces an older connection of the same device, pauses reading while storage
 * cannot keep up, and says goodbye at shutdown.
 */
export class DeviceCore implements SessionServices, LiveDevices {
  readonly limits: SessionLimits;
  readonly allowAnonymous: boolean;
  private readonly sessions = new Set<DeviceSession>();
  private readonly perIp = new Map<string, number>();
  /** Connections admitted and not yet gone: sessions, and handshakes still under way. */
  private admitted = 0;
  private readonly admissions = new Map<DeviceSession, Admission>();
  private readonly paused = new Set<DeviceSession>();
  /** Sessions taken out of `paused` at a drain and not resumed yet (resumePaused), oldest first. */
  private resuming: DeviceSession[] = [];
  private resumeQueued: NodeJS.Immediate | null = null;
  /** Sessions holding `stored` replies, and the timer that writes them. */
  private toFlush = new Set<DeviceSession>();
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly ticker: NodeJS.Timeout;
  private readonly revalidator: NodeJS.Timeout;
  private closing = false;
  /** Counters for /metrics. */
  readonly counters = { lines: 0, refused: 0 };

  constructor(
    private readonly deps: DeviceCoreDeps,
    private readonly opts: DeviceCoreOptions,
  ) {
    this.limits = opts.limits;
    this.allowAnonymous = opts.allowAnonymous;
    deps.writer.on('drain', () => this.resumePaused());
    this.ticker = setInterval(() => this.tick(), 1000);
    this.ticker.unref();
    this.revalidator = setInterval(() => void this.revalidate(), REVALIDATE_MS);
    this.revalidator.unref();
  }

  /** Open device connections on this instance, ready or not, all transports. */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /** Open connections per transport (for /metrics). */
  connectionsByTransport(): Record<Transport, number> {
    const out = Object.fromEntries(TRANSPORTS.map((t) => [t, 0])) as Record<Transport, number>;
    for (const s of this.sessions) out[s.transport]++;
    return out;
  }

  /**
   * A place for one more connection from this address, taken when the connection arrives (before
   * any TLS or WebSocket handshake, so half-open handshakes count too) and given to its session;
   * null when the address, or the server, has its share (the transport refuses it its own way).
   */
  admit(remoteAddress: string): Admission | null {
    if (this.closing || (this.perIp.get(remoteAddress) ?? 0) >= this.opts.maxPerIp || this.admitted >= this.opts.maxConnections) {
      this.counters.refused++;
      return null;
    }
    this.perIp.set(remoteAddress, (this.perIp.get(remoteAddress) ?? 0) + 1);
    this.admitted++;
    let released = false;
    return {
      remoteAddress,
      release: () => {
        if (released) return;
        released = true;
        this.admitted--;
        const n = (this.perIp.get(remoteAddress) ?? 1) - 1;
        if (n <= 0) this.perIp.delete(remoteAddress);
        else this.perIp.set(remoteAddress, n);
      },
    };
  }

  /** A new connection: its session, which holds the admission until it closes. The transport then feeds it messages. */
  open(link: DeviceLink, admission: Admission): DeviceSession {
    const session = new DeviceSession(link, this);
    this.sessions.add(session);
    this.admissions.set(session, admission);
    return session;
  }

  /**
   * A new connection whose device the transport's handshake named. With a token it is checked
   * first: 'unauthorized' and 'unavailable' refuse it before any session exists (no session is
   * counted). Without one (anonymous mode) the device is admitted as for a first line that is not a hello.
   */
  async checkHandshake(deviceId: string, token: string | null): Promise<{ ok: true; credential: string } | { ok: false; code: 'unauthorized' | 'unavailable' }> {
    let credential: string | null;
    try {
      credential = token === null ? (this.allowAnonymous ? await this.admitAnonymous(deviceId) : null) : await this.authenticate(deviceId, token);
    } catch (err) {
      this.deps.log.error({ err, device: deviceId }, 'could not check a device');
      return { ok: false, code: 'unavailable' };
    }
    if (credential === null) {
      this.deps.log.info({ device: deviceId }, 'refused a device: unknown device or wrong token');
      return { ok: false, code: 'unauthorized' };
    }
    return { ok: true, credential };
  }

  /** Stops accepting, says goodbye to every device and waits (briefly) for the connections to close. */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.ticker);
    clearInterval(this.revalidator);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.resumeQueued) clearImmediate(this.resumeQueued);
    this.flushReplies(true);
    for (const s of this.sessions) s.error('going_away', GOING_AWAY.shutdown, true);
    const deadline = Date.now() + GOODBYE_WAIT_MS;
    while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of this.sessions) s.destroy('shutdown');
  }

  // ---- SessionServices ----

  get saturated(): boolean {
    return this.deps.writer.full;
  }

  async authenticate(deviceId: string, token: string): Promise<string | null> {
    const device = await this.deps.storage.getDevice(deviceId);
    return device !== null && tokenMatches(token, device.tokenHash) ? device.tokenHash : null;
  }

  async admitAnonymous(deviceId: string): Promise<string | null> {
    const { storage } = this.deps;
    const existing = await storage.getDevice(deviceId);
    // A device added with a token is that token's: a connection without one may not take its place.
    if (existing && !existing.tokenHash.startsWith(ANONYMOUS_PREFIX)) return null;
    // The token hash of an anonymous device matches no token, so a hello can never claim it.
    const tokenHash = existing?.tokenHash ?? `${ANONYMOUS_PREFIX}${hashToken(deviceId)}`;
    if (existing) return tokenHash;
    try {
      await storage.createDevice({ id: deviceId, name: deviceId, tokenHash });
      return tokenHash;
    } catch (err) {
      if (!(err instanceof DuplicateError)) throw err;
      // Added meanwhile (another anonymous connection of it, or an admin with a token): looked at again.
      const now = await storage.getDevice(deviceId);
      return now && now.tokenHash.startsWith(ANONYMOUS_PREFIX) ? now.tokenHash : null;
    }
  }

  async ready(session: DeviceSession, firmware: string | null): Promise<void> {
    const id = session.deviceId!;
    const previous = this.deps.registry.claim(session);
    if (previous) {
      this.log(previous, 'warn', 'replaced by a new connection of the same device');
      previous.error('going_away', GOING_AWAY.replaced, true);
    }
    this.deps.log.info({ device: id, remote: session.remoteAddress, transport: session.transport }, 'device online');
    this.log(session, 'info', `connected from ${session.remoteAddress} over ${session.transport}${firmware ? ` (firmware ${firmware})` : ''}`);
    await this.deps.presence.online(id, firmware, session.transport);
  }

  commandsWanted(session: DeviceSession): void {
    void this.deps.presence.commandsWanted(session.deviceId!);
  }

  closed(session: DeviceSession, reason: string): void {
    if (!this.sessions.delete(session)) return;
    this.paused.delete(session);
    this.toFlush.delete(session);
    this.admissions.get(session)?.release();
    this.admissions.delete(session);
    if (this.deps.registry.release(session)) {
      const id = session.deviceId!;
      this.deps.log.info({ device: id, reason }, 'device offline');
      this.log(session, 'info', `disconnected: ${reason}`);
      this.deps.presence.offline(id, session.lastSeenAt);
    }
  }

  telemetry(session: DeviceSession, msgId: string | null, data: Record<string, unknown>, done?: Done): void {
    const deviceId = session.deviceId!;
    const ts = Date.now();
    this.counters.lines++;
    // Made once, for storage and for the dashboards' packet.
    const json = JSON.stringify(data);
    this.deps.writer.enqueue(new PendingReading(deviceId, msgId, ts, json, session, done));
    this.deps.broadcast.telemetry(deviceId, ts, data, json);
  }

  ack(session: DeviceSession, commandId: string, ok: boolean, result: unknown): void {
    const deviceId = session.deviceId!;
    void this.deps.commands
      .ack(deviceId, commandId, ok, result)
      .then((r) => {
        if (r === 'unknown') session.error('protocol', `no command "${commandId}" is waiting for an ack`);
      })
      .catch((err: Error) => this.deps.log.error({ err, device: deviceId }, 'could not record an ack'));
  }

  pausedForStorage(session: DeviceSession): void {
    this.paused.add(session);
  }

  flushSoon(session: DeviceSession): void {
    this.toFlush.add(session);
    if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flushReplies(), REPLY_FLUSH_MS);
  }

  log(session: DeviceSession, level: 'info' | 'warn' | 'error', text: string): void {
    if (session.deviceId !== null) this.deps.broadcast.log(session.deviceId, level, text);
    else if (level !== 'info') this.deps.log.info({ remote: session.remoteAddress, transport: session.transport }, text);
  }

  // ----

  /**
   * Writes every session's held replies (`stored`), one write per session, at most
   * REPLY_FLUSH_CHUNK sessions per turn of the event loop: a thousand devices' replies in one go
   * held up reading every socket for 20–40 ms. `all`: everything now (shutdown).
   */
  private flushReplies(all = false): void {
    this.flushTimer = null;
    const sessions = this.toFlush.values();
    this.toFlush = new Set();
    const step = () => {
      let n = 0;
      for (let s = sessions.next(); !s.done; s = sessions.next()) {
        s.value.flushLater();
        if (!all && ++n >= REPLY_FLUSH_CHUNK) {
          setImmediate(step);
          return;
        }
      }
    };
    step();
  }

  /**
   * Tokens can be rotated and devices removed from another process (the CLI) or instance; every
   * REVALIDATE_MS the devices connected here are checked against storage in one query.
   */
  async revalidate(): Promise<void> {
    const { registry, storage, broadcast } = this.deps;
    let devices;
    try {
      devices = new Map((await storage.listDevices()).map((d) => [d.id, d.tokenHash]));
    } catch {
      return; // Storage unreachable: keep devices connected; /readyz reports the outage.
    }
    for (const s of [...registry.sessions()]) {
      const hash = devices.get(s.deviceId!);
      if (hash === undefined) registry.kick(s.deviceId!, 'unauthorized', 'device removed');
      else if (hash !== s.credential) registry.kick(s.deviceId!, 'unauthorized', 'token changed');
    }
    broadcast.retainLogs(new Set(devices.keys()));
  }

  /** A device was removed here (page, API): its connection closes at once (LiveDevices). */
  removed(deviceId: string): void {
    this.deps.registry.kick(deviceId, 'unauthorized', 'device removed');
  }

  /** A device was given a new token here (page, API): the old connection closes at once. */
  tokenRotated(deviceId: string): void {
    this.deps.registry.kick(deviceId, 'unauthorized', 'token rotated');
  }

  private tick(): void {
    const now = Date.now();
    for (const s of this.sessions) s.tick(now);
  }

  /**
   * Resumes the sessions paused for storage, RESUME_CHUNK per turn of the event loop. Each hands over
   * what it held while paused as it resumes: a whole fleet's backlog in one loop held up the event
   * loop (the dashboards, the clicks' acks, storage's answers) for 120–150 ms at a time
   * (bench/README.md, "eighth round"). `paused` is emptied first: a session may find storage
   * saturated again and pause (joining `paused` anew) before it is done.
   */
  private resumePaused(): void {
    for (const s of this.paused) this.resuming.push(s);
    this.paused.clear();
    if (!this.resumeQueued) this.resumeSome();
  }

  private resumeSome(): void {
    this.resumeQueued = null;
    for (const s of this.resuming.splice(0, RESUME_CHUNK)) s.resume();
    if (this.resuming.length > 0 && !this.closing) this.resumeQueued = setImmediate(() => this.resumeSome());
  }
}
