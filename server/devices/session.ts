import { decodeLine, Encoding } from './codec';
import { ANON_ID_RE, DeviceMessage, parseDeviceMessage } from './messages';
import { error as errorMessage, ErrorCode, PONG, ServerMessage, welcome } from './outbound';

export type Transport = 'tcp' | 'websocket' | 'mqtt';
export const TRANSPORTS: readonly Transport[] = ['tcp', 'websocket', 'mqtt'];

/**
 * One device connection as a transport carries it: a TCP socket, a WebSocket or an MQTT client.
 * A transport turns bytes into messages (DeviceSession.receive) and messages into bytes (send);
 * it reports backpressure and closes. What the messages mean is the session's business.
 */
export interface DeviceLink {
  readonly transport: Transport;
  readonly remoteAddress: string;
  /** Writes one message in the given encoding. 'overflow': the device is not reading and the link's send queue is full. */
  send(message: ServerMessage, encoding: Encoding): 'ok' | 'closed' | 'overflow';
  /** Writes several messages together (one write where the transport allows it). */
  sendBatch(messages: ServerMessage[], encoding: Encoding): void;
  /** Since when the device has left written data unread (0: it reads). */
  readonly stalledSince: number;
  /** Bytes written to the device and not yet taken by the network. */
  readonly bufferedOut: number;
  /** The transport ends silent connections itself (MQTT's keepalive), so the session's idle timeout does not apply. */
  readonly ownKeepalive?: boolean;
  /**
   * False while a command written now would not reach the device (MQTT: until it subscribes to its
   * commands topic); commands then stay queued. Absent: always true.
   */
  readonly acceptsCommands?: boolean;
  /** Stops reading from the device until resume(). */
  pause(): void;
  resume(): void;
  /**
   * Closes once what was written has left (a device that never reads is cut after a grace period).
   * `reason`: the session's close reason (an error code, `idle`, …) for transports that can say it.
   */
  end(reason: string): void;
  /** Closes at once. */
  destroy(): void;
}

/** Limits of one device connection (docs/protocol.md, "Errors and limits"), with their defaults. */
export interface SessionLimits {
  helloTimeoutMs: number;
  idleTimeoutMs: number;
  maxLinesPerS: number;
  /** Bad messages in a row after which the connection is closed. */
  maxBadLines: number;
  /** Bytes queued for a device that is not reading, beyond the socket's own buffer. */
  maxOutQueueBytes: number;
  /** How long a device may leave its receive window full before it is dropped. */
  drainTimeoutMs: number;
}

export const DEFAULT_LIMITS: SessionLimits = {
  helloTimeoutMs: 10_000,
  idleTimeoutMs: 120_000,
  maxLinesPerS: 200,
  maxBadLines: 10,
  maxOutQueueBytes: 64 * 1024,
  drainTimeoutMs: 30_000,
};

/** How long after a resume the backlog's rate-limit credit lasts. */
const CREDIT_TTL_MS = 10_000;

const EMPTY = Buffer.alloc(0);

/** Messages held while the hello is being checked; past this the link stops reading. */
const INBOX_PAUSE_AT = 16;

/**
 * For transports that confirm each message themselves (MQTT's PUBACK): called once per message,
 * with null when it was handled (a reading: once it is committed), or with the reason it was
 * refused (the transport then closes the connection: it has no way to answer an error).
 */
export type Done = (err: Error | null) => void;

/** A message a transport-confirmed session could not use. */
export class RefusedMessage extends Error {
  constructor(
    readonly code: ErrorCode,
    detail: string,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'RefusedMessage';
  }
}

/** What a session needs from the rest of the app; implemented by DeviceCore (core.ts). */
export interface SessionServices {
  readonly limits: SessionLimits;
  readonly allowAnonymous: boolean;
  /** Checks a device id and token: the token hash it proved, or null. Rejects when storage could not be asked. */
  authenticate(deviceId: string, token: string): Promise<string | null>;
  /** Makes sure an anonymous device exists: its credential, or null to refuse it. */
  admitAnonymous(deviceId: string): Promise<string | null>;
  ready(session: DeviceSession, firmware: string | null): Promise<void>;
  /** The device can take commands now (an MQTT device subscribed to its commands topic): deliver those queued. */
  commandsWanted(session: DeviceSession): void;
  closed(session: DeviceSession, reason: string): void;
  telemetry(session: DeviceSession, msgId: string | null, data: Record<string, unknown>, done?: Done): void;
  ack(session: DeviceSession, commandId: string, ok: boolean, result: unknown): void;
  /** True while telemetry storage cannot keep up; the session stops reading until resumed. */
  readonly saturated: boolean;
  pausedForStorage(session: DeviceSession): void;
  /** The session holds replies (sendLater): call its flushLater() soon. */
  flushSoon(session: DeviceSession): void;
  log(session: DeviceSession, level: 'info' | 'warn' | 'error', text: string): void;
}

/** A device identity established by the transport's handshake (WebSocket headers, MQTT CONNECT). */
export interface HandshakeIdentity {
  deviceId: string;
  firmware: string | null;
}

type State = 'hello' | 'authenticating' | 'ready' | 'closed';

/** One handler per device → server message type, once the device is known. */
const HANDLERS: { [T in DeviceMessage['type']]: (s: DeviceSession, m: Extract<DeviceMessage, { type: T }>, done?: Done) => void } = {
  hello: (s, _m, done) => s.reject('protocol', 'already said hello', done),
  ping: (s, _m, done) => {
    s.send(PONG);
    done?.(null);
  },
  ack: (s, m, done) => {
    s.services.ack(s, m.id, m.ok, m.result);
    done?.(null);
  },
  telemetry: (s, m, done) => s.services.telemetry(s, m.id, m.data, done),
};

/**
 * The protocol of one device connection, whatever carries it (docs/protocol.md): the hello (or a
 * handshake identity), anonymous devices, the per-device rate, bad messages, the hello and idle
 * timeouts, a device that stops reading, replies held for batching, and pausing for storage.
 */
export class DeviceSession {
  deviceId: string | null = null;
  encoding: Encoding = 'base64';
  readonly connectedAt = Date.now();
  lastSeenAt = Date.now();
  /** The token hash the device proved, to notice a rotated token or a removed device. */
  credential: string | null = null;
  private state: State = 'hello';
  /** Messages that came while the device was being checked and welcomed (a frame it could not hand over: `invalid`). */
  private inbox: { body: Buffer; done?: Done; as?: 'ack'; invalid?: { code: ErrorCode; detail: string } }[] = [];
  private badLines = 0;
  private tokens: number;
  private lastRefill = Date.now();
  private rateLimitedAt = 0;
  private closeReason: string | null = null;
  /** When the server paused reading for storage backpressure (0: not paused). */
  private pausedAt = 0;
  /** Messages of the backlog built up while paused that are not rate-limited (see resume). */
  private credit = 0;
  private creditUntil = 0;
  /** Replies held for the next flush (see sendLater). */
  private later: ServerMessage[] = [];

  constructor(
    readonly link: DeviceLink,
    readonly services: SessionServices,
  ) {
    this.tokens = services.limits.maxLinesPerS;
  }

  get transport(): Transport {
    return this.link.transport;
  }

  get remoteAddress(): string {
    return this.link.remoteAddress;
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  /** Whether a command written now reaches the device (docs/protocol.md, "Commands"). */
  get acceptsCommands(): boolean {
    return this.state !== 'closed' && this.link.acceptsCommands !== false;
  }

  /** The link can take commands now (see DeviceLink.acceptsCommands): the queued ones go out. */
  commandsWanted(): void {
    if (this.state !== 'closed' && this.deviceId !== null) this.services.commandsWanted(this);
  }

  /** Sends one message in the device's encoding. False if it could not be queued. */
  send(message: ServerMessage): boolean {
    if (this.state === 'closed') return false;
    const r = this.link.send(message, this.encoding);
    if (r === 'overflow') this.notReading();
    return r === 'ok';
  }

  /** The device does not read what it is sent and the bounded send queue is full: it is cut off. */
  notReading(): void {
    if (this.state === 'closed') return;
    this.services.log(this, 'warn', 'device is not reading; disconnected');
    this.destroy('not reading (send queue full)');
  }

  /**
   * Like send, but held briefly: the core flushes every session's held replies together, each
   * session's in one write (the `stored` replies: with many devices sending a reading or two at a
   * time, one write per reply cost more than storing the reading).
   */
  sendLater(message: ServerMessage): void {
    if (this.state === 'closed') return;
    if (this.later.length === 0) this.services.flushSoon(this);
    this.later.push(message);
  }

  /** Writes the replies held by sendLater, together. */
  flushLater(): void {
    if (this.later.length === 0) return;
    const held = this.later;
    this.later = [];
    if (this.state !== 'closed') this.link.sendBatch(held, this.encoding);
  }

  /** Sends an error; with `close`, ends the connection once it is written. */
  error(code: ErrorCode, detail?: string, close = false): void {
    // Replies already due go first (a device told "stored" keeps no copy to resend).
    this.flushLater();
    this.send(errorMessage(code, detail));
    if (close) this.end(code);
  }

  /** A sign of life that is not a message (a WebSocket pong, an MQTT PINGREQ). */
  alive(): void {
    this.lastSeenAt = Date.now();
  }

  /** Called about once a second by the core: the hello, idle and drain timeouts. */
  tick(now: number): void {
    if (this.state === 'closed') return;
    const { helloTimeoutMs, idleTimeoutMs, drainTimeoutMs } = this.services.limits;
    if (this.state === 'hello' && now - this.connectedAt > helloTimeoutMs) {
      this.error('protocol', 'no hello within 10 s', true);
    } else if (this.pausedAt === 0 && !this.link.ownKeepalive && now - this.lastSeenAt > idleTimeoutMs) {
      // (While the server is not reading, the silence is not the device's.)
      this.services.log(this, 'info', 'no message for a long time; disconnected');
      this.end('idle');
    } else if (this.link.stalledSince !== 0 && now - this.link.stalledSince > drainTimeoutMs) {
      this.services.log(this, 'warn', 'device stopped reading; disconnected');
      this.destroy('drain timeout');
    }
  }

  /** Ends the connection politely (pending output is flushed first). */
  end(reason: string): void {
    if (this.state === 'closed') return;
    this.closeReason = reason;
    this.state = 'closed';
    this.link.end(reason);
  }

  destroy(reason: string): void {
    if (this.closeReason === null) this.closeReason = reason;
    this.state = 'closed';
    this.link.destroy();
  }

  /** Resumes reading after the core paused it for storage. */
  resume(): void {
    if (this.state === 'closed') return;
    if (this.pausedAt !== 0) {
      // What the device sent while the server was not reading arrives all at once now; it was sent
      // at the device's own pace, so up to the rate limit for the time paused is not rate-limited.
      this.credit += ((Date.now() - this.pausedAt) * this.services.limits.maxLinesPerS) / 1000;
      this.creditUntil = Date.now() + CREDIT_TTL_MS;
      this.lastSeenAt = Date.now();
      this.pausedAt = 0;
    }
    this.link.resume();
  }

  /** The transport lost the connection (or finished closing it). */
  linkClosed(): void {
    const reason = this.closeReason ?? 'connection closed by the device';
    this.state = 'closed';
    for (const m of this.inbox) m.done?.(new RefusedMessage('protocol', 'connection closed'));
    this.inbox = [];
    this.later = [];
    this.services.closed(this, reason);
  }

  /**
   * Starts a session whose device the transport's handshake named (and, unless anonymous,
   * authenticated): the device is ready at once and gets its welcome.
   */
  async openAs(identity: HandshakeIdentity, credential: string): Promise<void> {
    this.credential = credential;
    await this.becomeReady(identity.deviceId, identity.firmware, null);
  }

  /**
   * One message from the device (a line, a text frame, an MQTT payload), valid only during the
   * call. With `done` (a transport that confirms messages itself), `done` is called exactly once for it.
   */
  receive(body: Buffer, done?: Done, as?: 'ack'): void {
    if (this.state === 'closed') return done?.(new RefusedMessage('protocol', 'connection closing'));
    this.lastSeenAt = Date.now();
    if (this.state === 'authenticating') {
      // A copy: the transport may reuse the bytes once this returns (TCP's shared read buffer).
      this.inbox.push({ body: Buffer.from(body), done, as });
      if (this.inbox.length === INBOX_PAUSE_AT) this.link.pause();
      return;
    }
    if (!this.takeToken(done)) return;
    const decoded = decodeLine(body);
    this.encoding = decoded.encoding;
    if (!decoded.ok) return this.reject(decoded.error, decoded.detail, done);
    // An MQTT ack's topic says what it is; its payload need not.
    if (as === 'ack') decoded.message.type = 'ack';
    this.handleDecoded(decoded.message, done);
  }

  /** A frame the transport could not hand over as a message (a binary WebSocket frame): counted and answered like a bad line. */
  receiveInvalid(code: ErrorCode, detail: string): void {
    if (this.state === 'closed') return;
    this.lastSeenAt = Date.now();
    if (this.state === 'authenticating') {
      this.inbox.push({ body: EMPTY, invalid: { code, detail } });
      if (this.inbox.length === INBOX_PAUSE_AT) this.link.pause();
      return;
    }
    if (this.takeToken()) this.badMessage(code, detail);
  }

  private handleDecoded(message: Record<string, unknown>, done?: Done): void {
    const parsed = parseDeviceMessage(message);
    if (!parsed.ok) return this.reject('protocol', parsed.detail, done);
    this.badLines = 0;
    if (this.state === 'hello') this.onFirstMessage(parsed.msg, message, done);
    else this.handle(parsed.msg, done);
    if (this.services.saturated && this.state === 'ready') {
      this.link.pause();
      if (this.pausedAt === 0) this.pausedAt = Date.now();
      this.services.pausedForStorage(this);
    }
  }

  /**
   * A message that could not be used. Where the transport confirms messages (`done`) it is refused
   * and the connection ends (MQTT has no error reply); otherwise it gets an error reply (badMessage).
   */
  reject(code: ErrorCode, detail: string, done?: Done): void {
    if (!done) return this.badMessage(code, detail);
    this.services.log(this, 'warn', `refused a message (${code}: ${detail}); disconnected`);
    if (this.closeReason === null) this.closeReason = `${code}: ${detail}`;
    done(new RefusedMessage(code, detail));
  }

  /** A message that could not be used: an error reply, and the connection closed if they keep coming. */
  badMessage(code: ErrorCode, detail: string): void {
    this.badLines++;
    if (this.state === 'hello' && !this.services.allowAnonymous) {
      this.error('unauthorized', `the first message must be a hello (${detail})`, true);
      return;
    }
    if (this.badLines >= this.services.limits.maxBadLines) {
      this.error(code, `${detail}; too many bad lines in a row`, true);
      return;
    }
    this.error(code, detail);
  }

  private handle(msg: DeviceMessage, done?: Done): void {
    (HANDLERS[msg.type] as (s: DeviceSession, m: DeviceMessage, done?: Done) => void)(this, msg, done);
  }

  private onFirstMessage(msg: DeviceMessage, raw: Record<string, unknown>, done?: Done): void {
    if (msg.type === 'hello') {
      this.authenticateThen(this.services.authenticate(msg.device, msg.token), msg.device, msg.firmware, null);
      done?.(null);
      return;
    }
    if (!this.services.allowAnonymous) {
      this.error('unauthorized', 'the first message must be a hello', true);
      done?.(new RefusedMessage('unauthorized', 'the first message must be a hello'));
      return;
    }
    const named = typeof raw.device === 'string' ? raw.device : msg.type !== 'telemetry' || raw.data === undefined ? raw.id : undefined;
    const id = typeof named === 'string' && ANON_ID_RE.test(named) ? named : `anon-${this.remoteAddress}`;
    this.authenticateThen(this.services.admitAnonymous(id), id, null, { msg, done });
  }

  private authenticateThen(
    check: Promise<string | null>,
    deviceId: string,
    firmware: string | null,
    first: { msg: DeviceMessage; done?: Done } | null,
  ): void {
    this.state = 'authenticating';
    check
      .then(async (credential) => {
        if (this.state === 'closed') return;
        if (credential === null) {
          this.services.log(this, 'warn', `refused device "${deviceId}": unknown device or wrong token`);
          this.error('unauthorized', 'unknown device or wrong token', true);
          first?.done?.(new RefusedMessage('unauthorized', 'unknown device or wrong token'));
          return;
        }
        this.credential = credential;
        await this.becomeReady(deviceId, firmware, first);
      })
      .catch((err: Error) => {
        this.services.log(this, 'error', `could not check the device: ${err.message}`);
        this.error('unavailable', 'server could not check the token; try again', true);
        first?.done?.(new RefusedMessage('unavailable', 'server could not check the token'));
      });
  }

  /**
   * Welcomes the device. Messages that come while the core makes it ready (presence, queued
   * commands) still wait in the inbox, behind those that came before, so that all are handled in
   * the order the device sent them.
   */
  private async becomeReady(deviceId: string, firmware: string | null, first: { msg: DeviceMessage; done?: Done } | null): Promise<void> {
    this.deviceId = deviceId;
    this.state = 'authenticating';
    this.send(welcome(deviceId));
    await this.services.ready(this, firmware);
    if (this.isClosed) {
      // (linkClosed refused what was in the inbox.)
      first?.done?.(new RefusedMessage('protocol', 'connection closed'));
      return;
    }
    this.state = 'ready';
    if (first) this.handle(first.msg, first.done);
    // Handled one by one; a message may close the session, which then refuses the rest.
    while (this.inbox.length > 0 && this.state === 'ready') {
      const m = this.inbox.shift()!;
      if (m.invalid) this.receiveInvalid(m.invalid.code, m.invalid.detail);
      else this.receive(m.body, m.done, m.as);
    }
    if (!this.services.saturated) this.link.resume();
  }

  /** Token bucket: maxLinesPerS sustained, the same again as a burst. */
  private takeToken(done?: Done): boolean {
    const { maxLinesPerS } = this.services.limits;
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
    if (done) {
      this.reject('rate_limited', `more than ${maxLinesPerS} messages per second`, done);
      return false;
    }
    if (now - this.rateLimitedAt >= 1000) {
      this.rateLimitedAt = now;
      this.error('rate_limited', `more than ${maxLinesPerS} lines per second; lines are being dropped`);
    }
    return false;
  }
}
