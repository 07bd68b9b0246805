import type { Socket } from 'node:net';
import { decodeLine, encodeLine, Encoding, LineSplitter, MAX_LINE_BYTES } from './codec';
import { ANON_ID_RE, DeviceMessage, parseDeviceMessage } from './messages';

export type ErrorCode = 'unauthorized' | 'bad_base64' | 'bad_json' | 'line_too_long' | 'rate_limited' | 'protocol' | 'going_away' | 'unavailable';

/** Limits of one device connection (SPEC §3), with their defaults. */
export interface ConnectionLimits {
  helloTimeoutMs: number;
  idleTimeoutMs: number;
  maxLinesPerS: number;
  /** Bad lines in a row after which the connection is closed. */
  maxBadLines: number;
  /** Bytes queued for a device that is not reading, beyond the socket's own buffer. */
  maxOutQueueBytes: number;
  /** How long a device may leave its receive window full before it is dropped. */
  drainTimeoutMs: number;
}

/** How long after a resume the backlog's rate-limit credit lasts. */
const CREDIT_TTL_MS = 10_000;

/** Bytes read and thrown away after the server decided to close, before it stops reading. */
const DISCARD_AFTER_CLOSE_BYTES = 64 * 1024;

export const DEFAULT_LIMITS: ConnectionLimits = {
  helloTimeoutMs: 10_000,
  idleTimeoutMs: 120_000,
  maxLinesPerS: 200,
  maxBadLines: 10,
  maxOutQueueBytes: 64 * 1024,
  drainTimeoutMs: 30_000,
};

/** What a connection needs from the rest of the app; implemented by DeviceHub. */
export interface ConnectionHost {
  readonly limits: ConnectionLimits;
  readonly allowAnonymous: boolean;
  /** Checks a hello's device id and token. */
  authenticate(deviceId: string, token: string): Promise<boolean>;
  /** Makes sure an anonymous device exists; returns false to refuse it. */
  admitAnonymous(deviceId: string): Promise<boolean>;
  ready(conn: DeviceConnection, firmware: string | null): Promise<void>;
  closed(conn: DeviceConnection, reason: string): void;
  telemetry(conn: DeviceConnection, msgId: string | null, data: Record<string, unknown>): void;
  ack(conn: DeviceConnection, commandId: string, ok: boolean, result: unknown): void;
  /** True while telemetry storage cannot keep up; the connection stops reading until resumed. */
  readonly saturated: boolean;
  pausedForStorage(conn: DeviceConnection): void;
  /** The connection has replies waiting (sendLater): call its flushLater() soon. */
  flushSoon(conn: DeviceConnection): void;
  log(conn: DeviceConnection, level: 'info' | 'warn' | 'error', text: string): void;
}

type State = 'hello' | 'authenticating' | 'ready' | 'closed';

/**
 * One device's TCP connection: framing, decoding, the hello handshake, limits and backpressure.
 * What the messages mean is the host's business.
 */
export class DeviceConnection {
  deviceId: string | null = null;
  encoding: Encoding = 'base64';
  readonly remoteAddress: string;
  readonly connectedAt = Date.now();
  lastLineAt = Date.now();
  private state: State = 'hello';
  private readonly splitter = new LineSplitter(MAX_LINE_BYTES);
  private inbox: Buffer[] = [];
  private badLines = 0;
  private tokens: number;
  private lastRefill = Date.now();
  private rateLimitedAt = 0;
  private outQueue: Buffer[] = [];
  private outBytes = 0;
  private blockedSince = 0;
  private closeReason: string | null = null;
  private discarded = 0;
  /** When the server paused reading for storage backpressure (0: not paused). */
  private pausedAt = 0;
  /** Lines of the backlog built up while paused that are not rate-limited (see resume). */
  private credit = 0;
  private creditUntil = 0;
  /** Replies held for the next flush (see sendLater). */
  private later: object[] = [];

  constructor(
    readonly socket: Socket,
    private readonly host: ConnectionHost,
  ) {
    this.remoteAddress = (socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
    this.tokens = host.limits.maxLinesPerS;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', () => {});
    socket.on('close', () => this.onClose());
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** Bytes this connection holds for the device beyond the kernel's buffers. */
  get bufferedOut(): number {
    return this.outBytes + this.socket.writableLength;
  }

  /** Sends one message in the device's own encoding. Returns false if it could not be queued. */
  send(message: object): boolean {
    if (this.state === 'closed' || this.socket.destroyed) return false;
    const line = encodeLine(message, this.encoding);
    if (this.blockedSince !== 0) {
      if (this.outBytes + line.length > this.host.limits.maxOutQueueBytes) {
        this.host.log(this, 'warn', 'device is not reading; disconnected');
        this.destroy('not reading (send queue full)');
        return false;
      }
      this.outQueue.push(line);
      this.outBytes += line.length;
      return true;
    }
    if (!this.socket.write(line)) this.blockedSince = Date.now();
    return true;
  }

  /**
   * Like send, but held briefly: the host flushes every connection's held replies together, each
   * connection's in one write (the `stored` replies: with many devices sending a reading or two at
   * a time, one write per reply cost more than storing the reading).
   */
  sendLater(message: object): void {
    if (this.state === 'closed' || this.socket.destroyed) return;
    if (this.later.length === 0) this.host.flushSoon(this);
    this.later.push(message);
  }

  /** Writes the replies held by sendLater, in one write. */
  flushLater(): void {
    if (this.later.length === 0) return;
    const held = this.later;
    this.later = [];
    if (this.state === 'closed' || this.socket.destroyed) return;
    this.socket.cork();
    for (const m of held) this.send(m);
    this.socket.uncork();
  }

  /** Sends an error reply; with `close`, ends the connection once it is written. */
  error(code: ErrorCode, detail?: string, close = false): void {
    // Replies already due go first (a device told "stored" keeps no copy to resend).
    this.flushLater();
    this.send(detail ? { type: 'error', error: code, detail } : { type: 'error', error: code });
    if (close) this.end(code);
  }

  /** Called about once a second by the listener: enforces the hello, idle and drain timeouts. */
  tick(now: number): void {
    if (this.state === 'closed') return;
    const { helloTimeoutMs, idleTimeoutMs, drainTimeoutMs } = this.host.limits;
    if (this.state === 'hello' && now - this.connectedAt > helloTimeoutMs) {
      this.error('protocol', 'no hello within 10 s', true);
    } else if (this.pausedAt === 0 && now - this.lastLineAt > idleTimeoutMs) {
      // (While the server is not reading, the silence is not the device's.)
      this.host.log(this, 'info', 'no line for a long time; disconnected');
      this.end('idle');
    } else if (this.blockedSince !== 0 && now - this.blockedSince > drainTimeoutMs) {
      this.host.log(this, 'warn', 'device stopped reading; disconnected');
      this.destroy('drain timeout');
    }
  }

  /** Ends the connection politely (pending output is flushed first). */
  end(reason: string): void {
    if (this.state === 'closed') return;
    this.closeReason = reason;
    this.state = 'closed';
    this.socket.end();
    // A device that never reads would keep the socket half-open; give it a moment, then cut.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(reason: string): void {
    if (this.closeReason === null) this.closeReason = reason;
    this.state = 'closed';
    this.socket.destroy();
  }

  /** Resumes reading after the host paused it for storage. */
  resume(): void {
    if (this.state === 'closed') return;
    if (this.pausedAt !== 0) {
      // What the device sent while the server was not reading arrives all at once now; it was sent
      // at the device's own pace, so up to the rate limit for the time paused is not rate-limited.
      this.credit += ((Date.now() - this.pausedAt) * this.host.limits.maxLinesPerS) / 1000;
      this.creditUntil = Date.now() + CREDIT_TTL_MS;
      this.lastLineAt = Date.now();
      this.pausedAt = 0;
    }
    this.socket.resume();
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') {
      // What a closing connection still sends is discarded; past a little, the server stops reading
      // (an endless line is not read for the rest of the grace period; the goodbye still gets out).
      this.discarded += chunk.length;
      if (this.discarded > DISCARD_AFTER_CLOSE_BYTES) this.socket.pause();
      return;
    }
    const ok = this.splitter.push(chunk, (line) => this.onLine(line));
    if (!ok) {
      this.error('line_too_long', `lines are limited to ${MAX_LINE_BYTES} bytes`, true);
      return;
    }
    if (this.host.saturated && this.state === 'ready') {
      this.socket.pause();
      if (this.pausedAt === 0) this.pausedAt = Date.now();
      this.host.pausedForStorage(this);
    }
  }

  private onLine(line: Buffer): void {
    if (this.state === 'closed') return;
    this.lastLineAt = Date.now();
    if (this.state === 'authenticating') {
      this.inbox.push(line);
      if (this.inbox.length === 16) this.socket.pause();
      return;
    }
    if (!this.takeToken()) return;
    const decoded = decodeLine(line);
    this.encoding = decoded.encoding;
    if (!decoded.ok) return this.badLine(decoded.error, decoded.detail);
    const parsed = parseDeviceMessage(decoded.message);
    if (!parsed.ok) return this.badLine('protocol', parsed.detail);
    this.badLines = 0;
    const msg = parsed.msg;
    if (this.state === 'hello') return this.onFirstMessage(msg, decoded.message);
    this.onMessage(msg);
  }

  private onFirstMessage(msg: DeviceMessage, raw: Record<string, unknown>): void {
    if (msg.type === 'hello') {
      this.authenticateThen(this.host.authenticate(msg.device, msg.token), msg.device, msg.firmware, null);
      return;
    }
    if (!this.host.allowAnonymous) {
      this.error('unauthorized', 'the first message must be a hello', true);
      return;
    }
    const named = typeof raw.device === 'string' ? raw.device : msg.type !== 'telemetry' || raw.data === undefined ? raw.id : undefined;
    const id = typeof named === 'string' && ANON_ID_RE.test(named) ? named : `anon-${this.remoteAddress}`;
    this.authenticateThen(this.host.admitAnonymous(id), id, null, msg);
  }

  private authenticateThen(check: Promise<boolean>, deviceId: string, firmware: string | null, first: DeviceMessage | null): void {
    this.state = 'authenticating';
    check
      .then(async (ok) => {
        if (this.state === 'closed') return;
        if (!ok) {
          this.host.log(this, 'warn', `refused device "${deviceId}": unknown device or wrong token`);
          this.error('unauthorized', 'unknown device or wrong token', true);
          return;
        }
        this.deviceId = deviceId;
        this.state = 'ready';
        this.send({ type: 'welcome', device: deviceId, time: Date.now() });
        await this.host.ready(this, firmware);
        if (first) this.onMessage(first);
        const queued = this.inbox;
        this.inbox = [];
        for (const line of queued) this.onLine(line);
        if (!this.host.saturated) this.socket.resume();
      })
      .catch((err: Error) => {
        this.host.log(this, 'error', `could not check the device: ${err.message}`);
        this.error('unavailable', 'server could not check the token; try again', true);
      });
  }

  private onMessage(msg: DeviceMessage): void {
    switch (msg.type) {
      case 'hello':
        this.badLine('protocol', 'already said hello');
        return;
      case 'ping':
        this.send({ type: 'pong' });
        return;
      case 'ack':
        this.host.ack(this, msg.id, msg.ok, msg.result);
        return;
      case 'telemetry':
        this.host.telemetry(this, msg.id, msg.data);
        return;
    }
  }

  private badLine(code: ErrorCode, detail: string): void {
    this.badLines++;
    if (this.state === 'hello' && !this.host.allowAnonymous) {
      this.error('unauthorized', `the first message must be a hello (${detail})`, true);
      return;
    }
    if (this.badLines >= this.host.limits.maxBadLines) {
      this.error(code, `${detail}; too many bad lines in a row`, true);
      return;
    }
    this.error(code, detail);
  }

  /** Token bucket: maxLinesPerS sustained, the same again as a burst. */
  private takeToken(): boolean {
    const { maxLinesPerS } = this.host.limits;
    const now = Date.now();
    if (this.credit >= 1 && now < this.creditUntil) {
      this.credit -= 1;
      return true;
    }
    this.tokens = Math.min(maxLinesPerS * 2, this.tokens + ((now - this.lastRefill) * maxLinesPerS) / 1000);
    this.lastRefill = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    if (now - this.rateLimitedAt >= 1000) {
      this.rateLimitedAt = now;
      this.error('rate_limited', `more than ${maxLinesPerS} lines per second; lines are being dropped`);
    }
    return false;
  }

  private onDrain(): void {
    this.blockedSince = 0;
    while (this.outQueue.length > 0) {
      const line = this.outQueue.shift()!;
      this.outBytes -= line.length;
      if (!this.socket.write(line)) {
        this.blockedSince = Date.now();
        return;
      }
    }
  }

  private onClose(): void {
    const reason = this.closeReason ?? 'connection closed by the device';
    this.state = 'closed';
    this.outQueue = [];
    this.outBytes = 0;
    this.inbox = [];
    this.host.closed(this, reason);
  }
}
