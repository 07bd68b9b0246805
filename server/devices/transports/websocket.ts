import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { encodeText, Encoding, MAX_LINE_BYTES } from '../codec';
import type { DeviceCore } from '../core';
import { ANON_ID_RE, DEVICE_ID_RE } from '../messages';
import type { ServerMessage } from '../outbound';
import type { DeviceLink, DeviceSession } from '../session';

/** Where devices open their WebSocket, on the HTTP port (docs/protocol.md, "WebSocket"). */
export const DEVICE_WS_PATH = '/device';

/** Bytes a device may leave unread before it counts as not reading (as a TCP socket's buffer). */
const STALL_BYTES = 16 * 1024;
/** How long a connection the server ended may take to finish the closing handshake. */
const END_GRACE_MS = 2000;
/** Most of a handshake's `firmware` query parameter that is kept. */
const FIRMWARE_MAX = 64;

/** Close codes (RFC 6455) for the reasons a session ends. */
function closeCode(reason: string): number {
  if (reason === 'going_away') return 1001;
  if (reason === 'line_too_long') return 1009;
  if (reason === 'idle') return 1000;
  return 1008;
}

/** One device's WebSocket: a message per text frame, replies in the device's encoding. */
class WebSocketLink implements DeviceLink {
  readonly transport = 'websocket' as const;
  private stalledAt = 0;
  private session: DeviceSession | null = null;

  constructor(
    readonly ws: WebSocket,
    /** The connection under `ws`, corked while held replies are framed (sendBatch). */
    private readonly socket: Duplex,
    readonly remoteAddress: string,
    private readonly maxOutQueueBytes: number,
  ) {}

  attach(session: DeviceSession): void {
    this.session = session;
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) session.receiveInvalid('protocol', 'binary frames are not accepted; send the message as text');
      else session.receive(Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data));
    });
    this.ws.on('pong', () => session.alive());
    // Pings are answered here (`ws`'s own answer is off): a pong is output like any reply, so a
    // device that sends pings and never reads is cut at the same bounded queue instead of
    // filling the server's memory with pongs (docs/protocol.md, "Errors and limits").
    this.ws.on('ping', (data) => {
      session.alive();
      if (this.ws.readyState !== WebSocket.OPEN) return;
      if (this.ws.bufferedAmount + data.length > STALL_BYTES + this.maxOutQueueBytes) session.notReading();
      else this.ws.pong(data);
    });
    this.ws.on('close', () => session.linkClosed());
  }

  get bufferedOut(): number {
    return this.ws.bufferedAmount;
  }

  /** Since when the device has left more than a socket's worth unread (checked once a second by the session). */
  get stalledSince(): number {
    if (this.ws.bufferedAmount <= STALL_BYTES) this.stalledAt = 0;
    else if (this.stalledAt === 0) this.stalledAt = Date.now();
    return this.stalledAt;
  }

  send(message: ServerMessage, encoding: Encoding): 'ok' | 'closed' | 'overflow' {
    if (this.ws.readyState !== WebSocket.OPEN) return 'closed';
    const text = encodeText(message, encoding);
    if (this.ws.bufferedAmount + text.length > STALL_BYTES + this.maxOutQueueBytes) return 'overflow';
    this.ws.send(text);
    return 'ok';
  }

  /**
   * A device's held replies, a frame each, in one write as on TCP: `ws` writes every frame at once
   * (header and payload corked together), so the connection is corked around all of them.
   */
  sendBatch(messages: ServerMessage[], encoding: Encoding): void {
    this.socket.cork();
    try {
      for (const m of messages) if (this.send(m, encoding) !== 'ok') break;
    } finally {
      this.socket.uncork();
    }
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  end(reason: string): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.close(closeCode(reason), reason.slice(0, 120));
    setTimeout(() => this.ws.terminate(), END_GRACE_MS).unref();
  }

  destroy(): void {
    this.ws.terminate();
  }
}

export interface WebSocketTransportOptions {
  /** Behind a reverse proxy: the device's address is the first of X-Forwarded-For. */
  trustProxy: boolean;
  /** Accept devices on plain ws:// (DEVICE_PLAINTEXT); else only wss:// on the HTTPS port. */
  plaintext: boolean;
  /** WebSocket-level pings, as signs of life of a device that only listens. */
  pingIntervalMs?: number;
}

/**
 * WebSocket devices at `/device` on the HTTP server, beside Socket.IO (docs/protocol.md): the
 * handshake may name and authenticate the device (`?device=`, `Authorization: Bearer` or
 * `?token=`); otherwise the first message is the hello, as on TCP. It only frames; the core does
 * the rest.
 */
export class WebSocketTransport {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_LINE_BYTES, perMessageDeflate: false, clientTracking: true, autoPong: false });
  private readonly servers: { server: HttpServer; listener: (req: IncomingMessage, socket: Duplex, head: Buffer) => void }[] = [];
  private readonly pinger: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly core: DeviceCore,
    private readonly log: Logger,
    private readonly opts: WebSocketTransportOptions,
  ) {
    this.pinger = setInterval(() => {
      for (const ws of this.wss.clients) if (ws.readyState === WebSocket.OPEN) ws.ping();
    }, opts.pingIntervalMs ?? 30_000);
    this.pinger.unref();
  }

  /** Serves devices on this server's upgrades to DEVICE_WS_PATH; `secure`: it is the HTTPS server (wss://). */
  attach(server: HttpServer, secure: boolean): void {
    const listener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgrade(req, socket, head, secure);
    server.on('upgrade', listener);
    this.servers.push({ server, listener });
  }

  /** Stops accepting; the core says goodbye to the connections. */
  close(): void {
    this.closed = true;
    clearInterval(this.pinger);
    for (const { server, listener } of this.servers) server.off('upgrade', listener);
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, secure: boolean): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://device');
    } catch {
      return refuse(socket, 400, 'Bad request');
    }
    // Socket.IO's own upgrades go to engine.io; anything else that is not ours is refused.
    if (url.pathname.startsWith('/socket.io/')) return;
    if (url.pathname !== DEVICE_WS_PATH) return refuse(socket, 404, 'Not found');
    socket.on('error', () => {});
    const ip = this.remoteAddress(req);
    if (this.closed) return refuse(socket, 503, 'Server is shutting down');
    // Behind a proxy that terminates TLS, the proxy says whether the device came over wss://.
    if (!secure && this.opts.trustProxy && /^https\b/i.test(String(req.headers['x-forwarded-proto'] ?? ''))) secure = true;
    if (!secure && !this.opts.plaintext) return refuse(socket, 403, 'Plain ws:// is off on this server (DEVICE_PLAINTEXT=false): connect with wss:// to the HTTPS port');
    const admission = this.core.admit(ip);
    if (!admission) return refuse(socket, 429, 'Too many connections from this address');
    let upgraded = false;
    socket.once('close', () => {
      if (!upgraded) admission.release();
    });

    const q = url.searchParams;
    // URLSearchParams turns bytes that are not UTF-8 into U+FFFD; a device id made of those is refused.
    if (!strictlyEncoded(url.search)) return refuse(socket, 400, 'The query is not valid percent-encoded UTF-8');
    const deviceParam = q.get('device');
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
    const token = bearer ?? q.get('token');
    const firmware = q.get('firmware')?.slice(0, FIRMWARE_MAX) ?? null;

    let identity: { deviceId: string; credential: string } | null = null;
    if (token) {
      if (deviceParam === null || !DEVICE_ID_RE.test(deviceParam)) return refuse(socket, 400, 'A token needs ?device=ID (1-64 of A-Z a-z 0-9 _ . : -)');
      const check = await this.core.checkHandshake(deviceParam, token);
      if (!check.ok) {
        return check.code === 'unauthorized' ? refuse(socket, 401, 'Unknown device or wrong token') : refuse(socket, 503, 'The server could not check the token; try again');
      }
      identity = { deviceId: deviceParam, credential: check.credential };
    } else if (this.core.allowAnonymous) {
      const id = deviceParam !== null && ANON_ID_RE.test(deviceParam) ? deviceParam : `anon-${ip}`;
      const check = await this.core.checkHandshake(id, null);
      if (!check.ok) return refuse(socket, check.code === 'unavailable' ? 503 : 401, 'The device could not be admitted');
      identity = { deviceId: id, credential: check.credential };
    }
    if (socket.destroyed) return;

    this.wss.handleUpgrade(req, socket, head, (ws) => {
      upgraded = true;
      const link = new WebSocketLink(ws, socket, ip, this.core.limits.maxOutQueueBytes);
      ws.on('error', (err) => this.log.debug({ err, remote: ip }, 'device websocket error'));
      const session = this.core.open(link, admission);
      // Until the device says otherwise, plain JSON: what WebSocket clients speak (the thesis's client.py
      // reads the welcome and its commands with json.loads).
      session.encoding = 'json';
      link.attach(session);
      if (identity) void session.openAs({ deviceId: identity.deviceId, firmware }, identity.credential);
    });
  }

  private remoteAddress(req: IncomingMessage): string {
    if (this.opts.trustProxy) {
      // The entry our proxy added is the last one; anything before it the device could have made up.
      const forwarded = req.headers['x-forwarded-for'];
      const last = (Array.isArray(forwarded) ? forwarded.at(-1) : forwarded)?.split(',').at(-1)?.trim();
      if (last) return last.replace(/^::ffff:/, '');
    }
    return (req.socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
  }
}

/** Whether every name and value of a query decodes as UTF-8 (`+` is a space). */
function strictlyEncoded(search: string): boolean {
  for (const part of search.replace(/^\?/, '').split('&')) {
    try {
      decodeURIComponent(part.replace(/\+/g, ' '));
    } catch {
      return false;
    }
  }
  return true;
}

/** Answers an upgrade with a plain HTTP error and closes. */
function refuse(socket: Duplex, status: number, text: string): void {
  if (socket.destroyed) return;
  const reason = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' }[status] ?? 'Error';
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
  setTimeout(() => socket.destroy(), 1000).unref();
}
