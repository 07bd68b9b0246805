/**
 * The device side of the protocol (docs/protocol.md) in one module: the simulator (`npx sockpit
 * simulate`), the tests, the soak and the bench all talk to the server through it. The firmware in
 * esp32/ is the device's own code and stays apart.
 *
 * Two layers:
 * - A link carries messages: it connects, sends a message in an encoding, hands over each message
 *   it receives (decoded), reports backpressure, closes. A transport opens links; `tcpTransport`
 *   (one message per line over TCP) is the one there is today. Another transport (WebSocket,
 *   MQTT) is another `ClientTransport`; nothing above this layer changes.
 * - `DeviceClient` is the device logic on any link: hello and welcome, readings with ids kept
 *   until answered `stored` and resent after a reconnect, acks for commands, pings when idle,
 *   reconnects with backoff and jitter, and what each error code means.
 */
import net from 'node:net';
import tls from 'node:tls';
import mqtt from 'mqtt';
import WebSocket from 'ws';
import { decodeLine, DecodeError, encodeLine, encodeText, Encoding, LineSplitter, MAX_LINE_BYTES } from './codec';

export type { Encoding };
export type Message = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Links and transports

/** What a link tells its owner. Only `message` and `close` are required. */
export interface LinkHandlers {
  /** A message from the server, decoded. */
  message(msg: Message): void;
  /**
   * A line that starts as a `stored` answer does, handed over undecoded: the bench and the soak get
   * tens of thousands a second, and the bench does not even need the id (`storedIdOf` reads it).
   * Without this handler such answers arrive through `message`.
   */
  stored?(line: Buffer): void;
  /** Every line as it came, before decoding (tests look at the exact bytes). */
  line?(raw: Buffer): void;
  /** A line that is not a message (it was not decoded). */
  undecodable?(error: DecodeError | 'line_too_long', detail: string): void;
  /** The link takes writes again after `send` returned false. */
  drain?(): void;
  /** The link is gone (closed by either side, or failed). */
  close(): void;
}

/** An open connection to the server that carries messages. */
export interface ClientLink {
  readonly transport: string;
  /** Sends one message; false when the link is backed up (send more after `drain`) or closed. */
  send(msg: object, encoding?: Encoding): boolean;
  /**
   * Writes data as it is, not as a message: bytes a test makes up, or lines the bench encoded
   * ahead. What "as it is" means depends on the transport (TCP: bytes on the stream).
   */
  writeRaw(data: string | Buffer, encoding?: BufferEncoding): boolean;
  /** Bytes written but not yet taken by the network. */
  readonly bufferedBytes: number;
  readonly closed: boolean;
  /** Stops reading from the server (and resumes): the server's writes back up meanwhile. */
  pause(): void;
  resume(): void;
  /** Ends our side once everything written is out; the server then closes. */
  end(): void;
  /** Closes at once. */
  close(): void;
}

/** Opens links to one server address. */
export interface ClientTransport {
  readonly name: string;
  /** Where it connects, for logs (`host:port`). */
  readonly address: string;
  /** Resolves once the link is up; rejects when it cannot be opened. */
  open(handlers: LinkHandlers): Promise<ClientLink>;
}

export interface TcpTransportOptions {
  host?: string;
  port: number;
  /** Source address (tests and the bench use 127.0.0.x to get past the per-address limit). */
  localAddress?: string;
  /** Default encoding of `send`: base64 as the firmware speaks, or plain JSON. */
  encoding?: Encoding;
  /** Lines from the server longer than this close the link (default 64 KiB). */
  maxLineBytes?: number;
  /** Lines over TLS (DEVICE_TLS_PORT), trusting `ca` (PEM) when given, else the system's CAs. */
  tls?: ClientTlsOptions;
}

/** How a client checks the server over TLS (docs/security.md). */
export interface ClientTlsOptions {
  /** The CA to trust (PEM): sockpit's own, from `npx sockpit tls ca`. */
  ca?: string | Buffer;
  /** The name the certificate must carry (default: the host connected to). */
  servername?: string;
}

/** One message per line over TCP (docs/protocol.md, "Framing"). */
export function tcpTransport(options: TcpTransportOptions): ClientTransport {
  const host = options.host ?? '127.0.0.1';
  return {
    name: options.tls ? 'tcp+tls' : 'tcp',
    address: `${host}:${options.port}`,
    open: (handlers) => TcpClientLink.open({ ...options, host }, handlers),
  };
}

const STORED_PREFIX = '{"type":"stored","id":"';
const STORED_JSON = Buffer.from(STORED_PREFIX);
/** The first 28 base64 characters encode exactly the first 21 bytes of the prefix. */
const STORED_B64 = Buffer.from(Buffer.from(STORED_PREFIX).toString('base64').slice(0, 28), 'latin1');

function startsWith(line: Buffer, prefix: Buffer): boolean {
  return line.length > prefix.length && line.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/** Whether a line starts as the server's `stored` answer (`{"type":"stored","id"…`, base64 or plain JSON). */
export function isStoredLine(line: Buffer): boolean {
  return line[0] === 0x7b ? startsWith(line, STORED_JSON) : startsWith(line, STORED_B64);
}

/**
 * The id of a `stored` answer in the form the server writes it (`{"type":"stored","id":"…"}`, in
 * base64 or plain JSON), or null for any other line (which then goes through decodeLine).
 */
export function storedIdOf(line: Buffer): string | null {
  if (!isStoredLine(line)) return null;
  const text = line[0] === 0x7b ? line.toString('utf8') : Buffer.from(line.toString('latin1'), 'base64').toString('utf8');
  if (!text.startsWith(STORED_PREFIX) || !text.endsWith('"}')) return null;
  const id = text.slice(STORED_PREFIX.length, -2);
  return id.length > 0 && !id.includes('"') && !id.includes('\\') ? id : null;
}

/** A TCP link: lines out through encodeLine, lines in through LineSplitter and decodeLine. */
export class TcpClientLink implements ClientLink {
  readonly transport = 'tcp';
  private readonly splitter: LineSplitter;
  private readonly onLine = (line: Buffer): void => {
    const h = this.handlers;
    h.line?.(line);
    if (h.stored !== undefined && isStoredLine(line)) return h.stored(line);
    const d = decodeLine(line);
    if (d.ok) h.message(d.message);
    else h.undecodable?.(d.error, d.detail);
  };

  private constructor(
    readonly socket: net.Socket,
    private readonly handlers: LinkHandlers,
    private readonly encoding: Encoding,
    maxLineBytes: number,
  ) {
    this.splitter = new LineSplitter(maxLineBytes);
    socket.on('data', (chunk: Buffer) => {
      if (this.splitter.push(chunk, this.onLine)) return;
      handlers.undecodable?.('line_too_long', `a line from the server is longer than ${maxLineBytes} bytes`);
      socket.destroy();
    });
    socket.on('drain', () => handlers.drain?.());
    socket.on('close', () => handlers.close());
  }

  static open(o: TcpTransportOptions & { host: string }, handlers: LinkHandlers): Promise<TcpClientLink> {
    return new Promise((resolve, reject) => {
      const socket = o.tls
        ? // tls.connect hands localAddress on to net.connect; its option type just does not name it.
          tls.connect({ host: o.host, port: o.port, localAddress: o.localAddress, ca: o.tls.ca, servername: tlsServername(o.tls.servername ?? o.host) } as tls.ConnectionOptions).setNoDelay(true)
        : net.connect({ host: o.host, port: o.port, localAddress: o.localAddress, noDelay: true });
      const failed = (err: Error) => reject(err);
      socket.once('error', failed);
      socket.once(o.tls ? 'secureConnect' : 'connect', () => {
        socket.off('error', failed);
        socket.on('error', () => {}); // 'close' follows, which is what the owner hears
        resolve(new TcpClientLink(socket, handlers, o.encoding ?? 'base64', o.maxLineBytes ?? 4 * MAX_LINE_BYTES));
      });
    });
  }

  get closed(): boolean {
    return this.socket.destroyed;
  }

  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  send(msg: object, encoding: Encoding = this.encoding): boolean {
    if (this.socket.destroyed) return false;
    return this.socket.write(encodeLine(msg, encoding));
  }

  writeRaw(data: string | Buffer, encoding: BufferEncoding = 'utf8'): boolean {
    if (this.socket.destroyed) return false;
    return typeof data === 'string' ? this.socket.write(data, encoding) : this.socket.write(data);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    this.socket.end();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** TLS wants a host name for SNI, not an address; an address is checked against the certificate anyway. */
function tlsServername(host: string): string | undefined {
  return net.isIP(host) === 0 ? host : undefined;
}

export interface WebSocketTransportOptions {
  /** `ws://host:port/device` or `wss://…` (docs/protocol.md, "WebSocket"). */
  url: string;
  /** Default encoding of `send`: base64 or plain JSON text frames. */
  encoding?: Encoding;
  /** Handshake headers, e.g. `Authorization: Bearer TOKEN` (then the device says no hello). */
  headers?: Record<string, string>;
  /** For wss://: the CA to trust. */
  tls?: ClientTlsOptions;
  /** Source address (the bench spreads devices over 127.0.0.x). */
  localAddress?: string;
}

/** One message per text frame on a WebSocket to `/device`. */
export function websocketTransport(options: WebSocketTransportOptions): ClientTransport {
  return { name: 'websocket', address: options.url.replace(/[?#].*$/, ''), open: (handlers) => WebSocketClientLink.open(options, handlers) };
}

/** A WebSocket link: a message per text frame, in the device's encoding. */
export class WebSocketClientLink implements ClientLink {
  readonly transport = 'websocket';

  private constructor(
    readonly ws: WebSocket,
    private readonly handlers: LinkHandlers,
    private readonly encoding: Encoding,
  ) {
    ws.on('message', (data, isBinary) => {
      const frame = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary) return handlers.undecodable?.('protocol', 'the server sent a binary frame');
      handlers.line?.(frame);
      if (handlers.stored !== undefined && isStoredLine(frame)) return handlers.stored(frame);
      const d = decodeLine(frame);
      if (d.ok) handlers.message(d.message);
      else handlers.undecodable?.(d.error, d.detail);
    });
    ws.on('close', () => handlers.close());
    ws.on('error', () => {}); // 'close' follows
  }

  static open(o: WebSocketTransportOptions, handlers: LinkHandlers): Promise<WebSocketClientLink> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(o.url, { headers: o.headers, ca: o.tls?.ca, perMessageDeflate: false, localAddress: o.localAddress });
      const failed = (err: Error) => reject(err);
      ws.once('error', failed);
      ws.once('unexpected-response', (_req, res) => {
        ws.off('error', failed);
        reject(new Error(`the server refused the WebSocket: HTTP ${res.statusCode}`));
        ws.terminate();
      });
      ws.once('open', () => {
        ws.off('error', failed);
        resolve(new WebSocketClientLink(ws, handlers, o.encoding ?? 'base64'));
      });
    });
  }

  get closed(): boolean {
    return this.ws.readyState !== WebSocket.OPEN;
  }

  get bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  send(msg: object, encoding: Encoding = this.encoding): boolean {
    if (this.closed) return false;
    this.ws.send(encodeText(msg, encoding));
    return this.ws.bufferedAmount < 64 * 1024;
  }

  writeRaw(data: string | Buffer): boolean {
    if (this.closed) return false;
    this.ws.send(typeof data === 'string' ? data : data.toString('utf8'));
    return true;
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  end(): void {
    this.ws.close(1000);
  }

  close(): void {
    this.ws.terminate();
  }
}

export interface MqttTransportOptions {
  host?: string;
  port: number;
  /** The device id and token: MQTT carries them in CONNECT, not in a hello. */
  id: string;
  token: string;
  /** MQTT over TLS (MQTT_TLS_PORT). */
  tls?: ClientTlsOptions;
  /** MQTT keepalive, seconds (default 30). */
  keepaliveS?: number;
}

/** MQTT (docs/protocol.md, "MQTT"), seen by the device logic as the line protocol it already speaks. */
export function mqttTransport(options: MqttTransportOptions): ClientTransport {
  const host = options.host ?? '127.0.0.1';
  return {
    name: options.tls ? 'mqtt+tls' : 'mqtt',
    address: `${host}:${options.port}`,
    open: (handlers) => MqttClientLink.open({ ...options, host }, handlers),
  };
}

/**
 * An MQTT connection as a message link. The hello is CONNECT (sent before the link is handed
 * over), so the welcome is made up here; readings are QoS 1 PUBLISHes to the telemetry topic and
 * their PUBACK is the `stored` answer; acks go to the ack topic; commands come from the commands
 * topic; a ping is answered here (MQTT's own keepalive keeps the connection). A refused CONNECT
 * becomes the error the server would have sent on a line.
 */
export class MqttClientLink implements ClientLink {
  readonly transport = 'mqtt';
  private ended = false;
  /**
   * Commands that came before the welcome, held until it (null after it). The server holds
   * commands until the device subscribes and sends them right after the SUBACK, often in the same
   * read, which mqtt.js handles before the opener even has this link: a command answered then had
   * no link for its ack, and was lost. On the other transports the welcome comes first, so here too.
   */
  private early: [string, Buffer][] | null = [];

  private constructor(
    readonly client: mqtt.MqttClient,
    private readonly handlers: LinkHandlers,
    private readonly id: string,
  ) {
    client.on('message', (topic, payload) => (this.early ? this.early.push([topic, payload]) : this.deliver(topic, payload)));
    client.on('close', () => {
      if (this.ended) return;
      this.ended = true;
      handlers.close();
    });
  }

  private deliver(topic: string, payload: Buffer): void {
    if (topic !== `sockpit/${this.id}/commands`) return;
    this.handlers.line?.(payload);
    const d = decodeLine(payload);
    if (d.ok) this.handlers.message(d.message);
    else this.handlers.undecodable?.(d.error, d.detail);
  }

  static open(o: MqttTransportOptions & { host: string }, handlers: LinkHandlers): Promise<MqttClientLink> {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect({
        host: o.host,
        port: o.port,
        protocol: o.tls ? 'mqtts' : 'mqtt',
        ca: o.tls?.ca,
        servername: tlsServername(o.tls?.servername ?? o.host),
        username: o.id,
        password: o.token,
        clientId: `${o.id}-${Math.random().toString(36).slice(2, 8)}`,
        clean: true,
        keepalive: o.keepaliveS ?? 30,
        reconnectPeriod: 0,
        connectTimeout: 10_000,
      });
      let settled = false;
      // Listening from the start: a command may come in the same read as the SUBACK (`early`).
      const link = new MqttClientLink(client, handlers, o.id);
      client.once('connect', () => {
        // A device's messages are small and should leave at once (as on the other transports).
        (client.stream as net.Socket | undefined)?.setNoDelay?.(true);
        client.subscribe(`sockpit/${o.id}/commands`, { qos: 1 }, (err) => {
          if (settled) return;
          settled = true;
          if (err) {
            client.end(true);
            reject(err);
            return;
          }
          resolve(link);
        });
      });
      client.once('error', (err: Error & { code?: number | string }) => {
        if (settled) return;
        settled = true;
        // CONNACK 4/5: the pair is wrong; 3: the server could not check it. Said as a line would say it.
        const code = err.code === 4 || err.code === 5 ? 'unauthorized' : err.code === 3 ? 'unavailable' : null;
        if (code === null) {
          client.end(true);
          reject(err);
          return;
        }
        resolve(link);
        setImmediate(() => {
          handlers.message({ type: 'error', error: code, detail: code === 'unauthorized' ? 'unknown device or wrong token' : 'server could not check the token' });
          link.close();
        });
      });
    });
  }

  get closed(): boolean {
    return this.ended || !this.client.connected;
  }

  get bufferedBytes(): number {
    return (this.client.stream as { writableLength?: number } | undefined)?.writableLength ?? 0;
  }

  send(msg: object): boolean {
    if (this.closed) return false;
    const m = msg as Message;
    switch (m.type) {
      case 'hello':
        setImmediate(() => {
          this.handlers.message({ type: 'welcome', device: this.id, time: Date.now() });
          const early = this.early ?? [];
          this.early = null;
          for (const [topic, payload] of early) this.deliver(topic, payload);
        });
        return true;
      case 'ping':
        setImmediate(() => this.handlers.message({ type: 'pong' }));
        return true;
      case 'ack': {
        const { type: _type, ...ack } = m;
        this.client.publish(`sockpit/${this.id}/ack`, JSON.stringify(ack), { qos: 1 });
        return true;
      }
      default: {
        const id = m.type === 'telemetry' && typeof m.id === 'string' ? m.id : null;
        this.client.publish(`sockpit/${this.id}/telemetry`, JSON.stringify(m), { qos: 1 }, (err) => {
          if (err || id === null) return;
          const answer = { type: 'stored', id };
          if (this.handlers.stored) this.handlers.stored(Buffer.from(JSON.stringify(answer)));
          else this.handlers.message(answer);
        });
        return true;
      }
    }
  }

  writeRaw(data: string | Buffer): boolean {
    if (this.closed) return false;
    this.client.publish(`sockpit/${this.id}/telemetry`, data, { qos: 1 });
    return true;
  }

  pause(): void {
    this.client.stream?.pause();
  }

  resume(): void {
    this.client.stream?.resume();
  }

  end(): void {
    this.client.end();
  }

  close(): void {
    this.client.end(true);
  }
}

// ---------------------------------------------------------------------------------------------
// The device

/** A command from the server (`fromservertonode`). */
export interface DeviceCommand {
  id: string;
  action: string;
  params?: Record<string, unknown>;
}

/** What the device answers to a command; `result` may say why it failed (`{ error: … }`). */
export interface CommandReply {
  ok: boolean;
  result?: unknown;
}

/** What a DeviceClient tells its owner; every handler is optional. */
export interface DeviceClientHandlers {
  /** A connection attempt starts (0 is the first since the last welcome). */
  connecting?(attempt: number): void;
  /** The link is up; the hello is on its way. */
  connected?(): void;
  /** Could not open the link. */
  linkError?(err: Error): void;
  /** Welcomed; `resent` readings that had no `stored` answer were sent again. */
  welcome?(msg: Message, resent: number): void;
  /**
   * A reading this client kept was answered `stored` (committed by the server): once per reading,
   * not again for the answers to its resends. With `maxUnacked: 0` the client keeps nothing and
   * reports every answer, with a null id (it does not even read it).
   */
  stored?(id: string | null): void;
  /** A command; what it returns is sent as the ack. Returning null sends no ack. */
  command?(cmd: DeviceCommand): CommandReply | null | undefined | Promise<CommandReply | null | undefined>;
  /** An `error` message from the server (docs/protocol.md, "Errors and limits"). */
  serverError?(code: string, detail: string | null): void;
  /** The link closed; `retryInMs` is null when no reconnect follows. */
  disconnected?(info: { wasReady: boolean; retryInMs: number | null }): void;
  /** Every message from the server, after the client has handled it. */
  message?(msg: Message): void;
  /** A line from the server that could not be decoded. */
  undecodable?(error: string, detail: string): void;
  /** Every line from the server as it came (tests). */
  line?(raw: Buffer): void;
}

export interface DeviceClientOptions {
  id: string;
  token: string;
  firmware?: string;
  transport: ClientTransport;
  /** The encoding of what this device sends (default: the transport's). */
  encoding?: Encoding;
  /** Reconnect with backoff when the link closes (default true). Never after `unauthorized`. */
  reconnect?: boolean;
  /**
   * Readings kept until answered `stored`, oldest dropped beyond this (default 256, as the
   * firmware's resend buffer). Infinity keeps them all; 0 keeps none (the owner counts answers).
   */
  maxUnacked?: number;
  /** First part of reading ids, `<boot>-<seq>`; default: this start's time in base 36. */
  bootId?: string;
  /** A ping goes out when nothing was sent for this long (default 30 s; the server closes after 120 s). 0: never. */
  keepaliveMs?: number;
  /** Wait before reconnect attempt `attempt` (default: DeviceClient.backoffMs). */
  backoffMs?: (attempt: number) => number;
  handlers?: DeviceClientHandlers;
}

export type DeviceState = 'idle' | 'connecting' | 'hello' | 'ready' | 'waiting' | 'refused' | 'stopped';

/** One sweep for every client's keepalive, so that 20,000 devices in one process cost one timer. */
const keepalives = new Set<DeviceClient>();
let sweeper: NodeJS.Timeout | null = null;

function sweep(): void {
  const now = Date.now();
  for (const c of keepalives) c.keepalive(now);
}

/**
 * A device as the firmware behaves (docs/protocol.md): say hello, send readings with ids and keep
 * each until it is answered `stored`, resend those after a reconnect, ack commands, ping when idle,
 * reconnect with backoff and jitter. `unauthorized` stops it (a wrong token does not get better by
 * retrying); `unavailable` (the server could not check the token) and `going_away` (shutdown, or
 * replaced by a newer connection) are followed by a reconnect after a backoff; the other codes are
 * reported and the connection stays as the server leaves it.
 */
export class DeviceClient {
  /** Where it connects; may be replaced while no link is open (a test restarting its server on another port). */
  transport: ClientTransport;
  private readonly opts: DeviceClientOptions;
  private readonly handlers: DeviceClientHandlers;
  private readonly encoding: Encoding | undefined;
  private readonly boot: string;
  private readonly maxUnacked: number;
  private readonly keepaliveMs: number;
  private link: ClientLink | null = null;
  private status: DeviceState = 'idle';
  private seq = 0;
  private readonly unacked = new Map<string, Message>();
  private attempt = 0;
  private retry: NodeJS.Timeout | null = null;
  private lastSent = 0;
  /** One entry per ping in flight, in order; a pong answers the oldest (null: a keepalive ping). */
  private pings: ({ resolve: () => void; reject: (err: Error) => void } | null)[] = [];
  private started: { resolve: () => void; reject: (err: Error) => void } | null = null;
  private startPromise: Promise<void> | null = null;

  constructor(options: DeviceClientOptions) {
    this.opts = options;
    this.transport = options.transport;
    this.handlers = options.handlers ?? {};
    this.encoding = options.encoding;
    this.boot = options.bootId ?? Math.floor(Date.now() / 1000).toString(36);
    this.maxUnacked = options.maxUnacked ?? 256;
    this.keepaliveMs = options.keepaliveMs ?? 30_000;
  }

  /** Exponential backoff with jitter, capped at 30 s, as the firmware does. */
  static backoffMs(attempt: number): number {
    const base = Math.min(30_000, 500 * 2 ** Math.min(attempt, 10));
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  get id(): string {
    return this.opts.id;
  }

  get state(): DeviceState {
    return this.status;
  }

  /** Welcomed on the current link. */
  get ready(): boolean {
    return this.status === 'ready';
  }

  /** Readings sent (or due) and not yet answered `stored`. */
  get unackedCount(): number {
    return this.unacked.size;
  }

  /** Bytes this device wrote that the network has not taken yet. */
  get bufferedBytes(): number {
    return this.link?.bufferedBytes ?? 0;
  }

  /** The current link, for what only a transport can do (tests pause it, the bench writes ahead). */
  get currentLink(): ClientLink | null {
    return this.link;
  }

  /**
   * Connects (and, unless `reconnect` is off, keeps reconnecting). Resolves at the first welcome;
   * rejects when the server refuses the device, when it is stopped first, or (without reconnects)
   * when the link fails or closes before the welcome.
   */
  start(): Promise<void> {
    if (this.startPromise && this.status !== 'stopped' && this.status !== 'refused' && this.status !== 'idle') return this.startPromise;
    this.attempt = 0;
    this.startPromise = new Promise<void>((resolve, reject) => (this.started = { resolve, reject }));
    if (this.keepaliveMs > 0) {
      keepalives.add(this);
      sweeper ??= setInterval(sweep, 1000).unref();
    }
    this.connect();
    return this.startPromise;
  }

  /** Closes the link and stops reconnecting. Readings not yet answered are kept for a later start. */
  stop(): void {
    this.status = 'stopped';
    this.cleanup();
    this.settleStart(new Error('stopped'));
    this.link?.close();
  }

  /** Closes the current link; a reconnect follows when `reconnect` is on. */
  closeLink(): void {
    this.link?.close();
  }

  /**
   * A reading that must not be lost: `{"type":"telemetry","id":"<boot>-<seq>","data":…}`, kept
   * until answered `stored` and sent again after a reconnect. Sent now when welcomed, else at the
   * next welcome. Returns its id.
   */
  reading(data: Record<string, unknown> | ((seq: number) => Record<string, unknown>)): string {
    const seq = ++this.seq;
    const id = `${this.boot}-${seq}`;
    const msg = { type: 'telemetry', id, data: typeof data === 'function' ? data(seq) : data };
    if (this.maxUnacked > 0) {
      this.unacked.set(id, msg);
      if (this.unacked.size > this.maxUnacked) this.unacked.delete(this.unacked.keys().next().value!);
    }
    if (this.ready) this.send(msg);
    return id;
  }

  /** Sends every reading not yet answered `stored` again (done at each welcome). Returns how many. */
  resendUnacked(): number {
    for (const msg of this.unacked.values()) this.send(msg);
    return this.unacked.size;
  }

  /** Sends any message; false when the link is backed up or there is none. */
  send(msg: object): boolean {
    if (!this.link) return false;
    this.lastSent = Date.now();
    return this.link.send(msg, this.encoding);
  }

  /** Writes data as it is (see ClientLink.writeRaw). */
  writeRaw(data: string | Buffer, encoding?: BufferEncoding): boolean {
    if (!this.link) return false;
    this.lastSent = Date.now();
    return this.link.writeRaw(data, encoding);
  }

  /**
   * Sends a ping; resolves at its pong. The server answers in order, so by then it has read and
   * handled every line sent before the ping.
   */
  ping(timeoutMs = 10_000): Promise<void> {
    if (!this.ready) return Promise.reject(new Error(`${this.id} is not connected`));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.pings.indexOf(waiter);
        if (i >= 0) this.pings[i] = null;
        reject(new Error(`${this.id}: no pong within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.pings.push(waiter);
      this.send({ type: 'ping' });
    });
  }

  /** Answers a command. */
  ack(id: string, reply: CommandReply): boolean {
    return this.send({ type: 'ack', id, ok: reply.ok, ...(reply.result !== undefined ? { result: reply.result } : {}) });
  }

  /** Called by the shared keepalive sweep: a ping when nothing went out for keepaliveMs. */
  keepalive(now: number): void {
    if (this.status !== 'ready' || now - this.lastSent < this.keepaliveMs) return;
    this.pings.push(null);
    this.send({ type: 'ping' });
  }

  private connect(): void {
    this.status = 'connecting';
    this.handlers.connecting?.(this.attempt);
    let link: ClientLink | null = null;
    this.transport
      .open({
        message: (m) => this.onMessage(m),
        stored: (line) => this.onStoredLine(line),
        line: this.handlers.line,
        undecodable: this.handlers.undecodable,
        close: () => {
          if (link !== null && this.link === link) this.onLinkDown();
        },
      })
      .then(
        (opened) => {
          link = opened;
          if (this.status === 'stopped') return opened.close();
          this.link = opened;
          this.status = 'hello';
          this.handlers.connected?.();
          this.send({ type: 'hello', device: this.opts.id, token: this.opts.token, ...(this.opts.firmware ? { firmware: this.opts.firmware } : {}) });
        },
        (err: Error) => {
          this.handlers.linkError?.(err);
          if (this.status !== 'stopped') this.onLinkDown(err);
        },
      );
  }

  private onLinkDown(err?: Error): void {
    const wasReady = this.status === 'ready';
    this.link = null;
    for (const p of this.pings) p?.reject(new Error(`${this.id}: connection closed`));
    this.pings = [];
    if (this.status === 'stopped') return;
    if (this.status === 'refused') {
      this.cleanup();
      this.handlers.disconnected?.({ wasReady, retryInMs: null });
      return;
    }
    if (this.opts.reconnect === false) {
      this.status = 'idle';
      this.cleanup();
      this.settleStart(err ?? new Error(`${this.id}: connection closed before the welcome`));
      this.handlers.disconnected?.({ wasReady, retryInMs: null });
      return;
    }
    const wait = (this.opts.backoffMs ?? DeviceClient.backoffMs)(this.attempt++);
    this.status = 'waiting';
    this.retry = setTimeout(() => {
      this.retry = null;
      this.connect();
    }, wait);
    this.handlers.disconnected?.({ wasReady, retryInMs: wait });
  }

  private onStoredLine(line: Buffer): void {
    if (this.maxUnacked === 0) return this.handlers.stored?.(null);
    const id = storedIdOf(line);
    if (id !== null) return this.onStored(id);
    const d = decodeLine(line); // not in the server's usual form: read it the long way
    if (d.ok) this.onMessage(d.message);
  }

  private onStored(id: string): void {
    if (this.unacked.delete(id)) this.handlers.stored?.(id);
  }

  private onMessage(m: Message): void {
    switch (m.type) {
      case 'welcome': {
        this.status = 'ready';
        this.attempt = 0;
        const resent = this.resendUnacked();
        this.settleStart(null);
        this.handlers.welcome?.(m, resent);
        break;
      }
      case 'stored':
        if (typeof m.id === 'string') this.onStored(m.id);
        return; // already handed over through `stored`
      case 'pong':
        this.pings.shift()?.resolve();
        break;
      case 'error': {
        const code = String(m.error);
        if (code === 'unauthorized') {
          this.status = 'refused';
          this.settleStart(new Error(`refused: ${typeof m.detail === 'string' ? m.detail : code}`));
        }
        this.handlers.serverError?.(code, typeof m.detail === 'string' ? m.detail : null);
        break;
      }
      case 'fromservertonode':
        this.onCommand(m);
        break;
    }
    this.handlers.message?.(m);
  }

  private onCommand(m: Message): void {
    const handler = this.handlers.command;
    if (!handler || typeof m.id !== 'string') return;
    const cmd: DeviceCommand = { id: m.id, action: String(m.action), ...(m.params && typeof m.params === 'object' ? { params: m.params as Record<string, unknown> } : {}) };
    const answer = (reply: CommandReply | null | undefined) => {
      if (reply) this.ack(cmd.id, reply);
    };
    const r = handler(cmd);
    if (r instanceof Promise) r.then(answer, (err: Error) => answer({ ok: false, result: { error: err.message } }));
    else answer(r);
  }

  private settleStart(err: Error | null): void {
    const s = this.started;
    if (!s) return;
    this.started = null;
    if (err) {
      // Nobody may be waiting on a later start; do not turn that into an unhandled rejection.
      this.startPromise?.catch(() => {});
      s.reject(err);
    } else s.resolve();
  }

  private cleanup(): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    keepalives.delete(this);
    if (keepalives.size === 0 && sweeper) {
      clearInterval(sweeper);
      sweeper = null;
    }
  }
}
