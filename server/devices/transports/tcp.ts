import net from 'node:net';
import type { Logger } from 'pino';
import { encodeLine, encodeLines, Encoding, LineSplitter, MAX_LINE_BYTES } from '../codec';
import type { Admission, DeviceCore } from '../core';
import type { TlsMaterial } from '../../tls/material';
import { listenOn, remoteAddressOf } from './net';
import { secureServer } from './secure';
import { error as errorMessage, ServerMessage } from '../outbound';
import type { DeviceLink, DeviceSession } from '../session';

/** Bytes read and thrown away after the server decided to close, before it stops reading. */
const DISCARD_AFTER_CLOSE_BYTES = 64 * 1024;

/** The first byte of a TLS handshake record (a ClientHello). */
const TLS_HANDSHAKE_RECORD = 0x16;

/** How long a connection the server ended may stay half-open (a device that never reads). */
const END_GRACE_MS = 2000;

/**
 * What a paused connection that reads into the shared buffer goes on reading (copied) before it
 * stops: so that a device that closes while paused is noticed, as a paused stream's own buffer
 * (16 KiB) let it be.
 */
const HOLD_WHILE_PAUSED_BYTES = 16 * 1024;

/**
 * The one buffer every plain TCP device connection reads into (readIntoSharedBuffer). What is in it
 * is only valid during the callback it is handed to: the line splitter copies an unfinished line
 * out of it, and a session copies a line it keeps for later.
 */
const SHARED_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** The fields `new net.Socket({ onread })` sets, found by their symbols' names; null where this Node has none. */
let onreadFields: { buffer: symbol; callback: symbol } | null | undefined;

/**
 * Reads a plain TCP connection into SHARED_READ_BUFFER, as `new net.Socket({ onread })` does, instead
 * of a new Buffer, a stream push and a 'data' event per read: a fleet sending one reading per packet
 * costs one read per reading, and this made each cheaper and left less garbage (bench/README.md,
 * "Issue 15, fifth round"). Node offers `onread` only to sockets it constructs itself, not to those a
 * server accepts, so this sets the same two fields its constructor would and points the handle at
 * the buffer, before the first read (reads only happen in a later turn of the event loop). Pause and
 * resume work as with `onread` (net.Socket's own). False where this Node lacks any of it: the
 * caller then reads 'data' events.
 */
export function readIntoSharedBuffer(socket: net.Socket, onChunk: (chunk: Buffer) => void): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (buf: Uint8Array) => void } })._handle;
  if (typeof handle?.useUserBuffer !== 'function') return false;
  const own = socket as unknown as Record<symbol, unknown>;
  if (onreadFields === undefined) {
    const named = (name: string) => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
    const buffer = named('kBuffer');
    const callback = named('kBufferCb');
    onreadFields = buffer && callback ? { buffer, callback } : null;
  }
  if (onreadFields === null || own[onreadFields.buffer] !== null || own[onreadFields.callback] !== null) return false;
  own[onreadFields.buffer] = SHARED_READ_BUFFER;
  own[onreadFields.callback] = (nread: number, buf: Buffer) => {
    onChunk(buf.subarray(0, nread));
  };
  handle.useUserBuffer(SHARED_READ_BUFFER);
  return true;
}

/** One device's TCP connection: lines in, lines out, a bounded queue while the device does not read. */
export class TcpLink implements DeviceLink {
  readonly transport = 'tcp' as const;
  readonly remoteAddress: string;
  stalledSince = 0;
  private session: DeviceSession | null = null;
  private readonly splitter = new LineSplitter(MAX_LINE_BYTES);
  private outQueue: Buffer[] = [];
  private outBytes = 0;
  private closing = false;
  private discarded = 0;
  /** Reads into the shared buffer (readIntoSharedBuffer) rather than 'data' events. */
  private readonly shared: boolean;
  /** Paused by the session; with the shared buffer, what arrives meanwhile is held (`held`). */
  private paused = false;
  private held: Buffer[] = [];
  private heldBytes = 0;

  constructor(
    readonly socket: net.Socket,
    private readonly maxOutQueueBytes: number,
    /** On a plain port: where to say that a TLS client came to the wrong port. */
    private readonly plainPortLog: Logger | null,
    /** A plain socket a server accepted: read into the shared buffer (not for TLS sockets). */
    sharedBuffer = false,
  ) {
    this.remoteAddress = remoteAddressOf(socket);
    socket.setNoDelay(true);
    this.shared = sharedBuffer && readIntoSharedBuffer(socket, (chunk) => (this.paused ? this.hold(chunk) : this.onData(chunk)));
    if (!this.shared) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closing = true;
      this.outQueue = [];
      this.outBytes = 0;
      this.held = [];
      this.heldBytes = 0;
      this.session?.linkClosed();
    });
  }

  get bufferedOut(): number {
    return this.outBytes + this.socket.writableLength;
  }

  attach(session: DeviceSession): void {
    this.session = session;
  }

  send(message: ServerMessage, encoding: Encoding): 'ok' | 'closed' | 'overflow' {
    if (this.socket.destroyed) return 'closed';
    return this.write(encodeLine(message, encoding));
  }

  /** Held replies leave as one buffer, in one write. */
  sendBatch(messages: ServerMessage[], encoding: Encoding): void {
    if (this.socket.destroyed || messages.length === 0) return;
    this.write(encodeLines(messages, encoding));
  }

  private write(line: Buffer): 'ok' | 'overflow' {
    if (this.stalledSince !== 0) {
      if (this.outBytes + line.length > this.maxOutQueueBytes) return 'overflow';
      this.outQueue.push(line);
      this.outBytes += line.length;
      return 'ok';
    }
    if (!this.socket.write(line)) this.stalledSince = Date.now();
    return 'ok';
  }

  pause(): void {
    // A socket reading into the shared buffer would stop reading at once, and so not see the
    // device close: it goes on reading, held, up to HOLD_WHILE_PAUSED_BYTES.
    if (this.shared) this.paused = true;
    else this.socket.pause();
  }

  resume(): void {
    if (this.closing) return;
    if (this.shared) {
      this.paused = false;
      // What came while paused goes first, in order; the session may pause again meanwhile.
      while (this.held.length > 0 && !this.paused && !this.closing) {
        const chunk = this.held.shift()!;
        this.heldBytes -= chunk.length;
        this.onData(chunk);
      }
      if (this.paused) return;
    }
    this.socket.resume();
  }

  private hold(chunk: Buffer): void {
    this.held.push(Buffer.from(chunk));
    this.heldBytes += chunk.length;
    if (this.heldBytes >= HOLD_WHILE_PAUSED_BYTES) this.socket.pause();
  }

  end(_reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), END_GRACE_MS).unref();
  }

  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.closing) {
      // What a closing connection still sends is discarded; past a little, the server stops reading
      // (an endless line is not read for the rest of the grace period; the goodbye still gets out).
      this.discarded += chunk.length;
      if (this.discarded > DISCARD_AFTER_CLOSE_BYTES) this.socket.pause();
      return;
    }
    const session = this.session!;
    if (this.plainPortLog && this.socket.bytesRead === chunk.length && chunk[0] === TLS_HANDSHAKE_RECORD) {
      // A TLS ClientHello on the plain port: nothing it can read would help; say so here and close.
      this.plainPortLog.info({ remote: this.remoteAddress }, 'a TLS client connected to the plain device port; TLS devices use DEVICE_TLS_PORT');
      session.destroy('TLS client on the plain port');
      return;
    }
    const ok = this.splitter.push(chunk, (line) => session.receive(line));
    if (!ok) session.error('line_too_long', `lines are limited to ${MAX_LINE_BYTES} bytes`, true);
  }

  private onDrain(): void {
    this.stalledSince = 0;
    while (this.outQueue.length > 0) {
      const line = this.outQueue.shift()!;
      this.outBytes -= line.length;
      if (!this.socket.write(line)) {
        this.stalledSince = Date.now();
        return;
      }
    }
  }
}


export interface TcpTransportOptions {
  /** Device connections allowed in total (net.Server.maxConnections). */
  maxConnections: number;
  /** Lines over TLS with this certificate (DEVICE_TLS_PORT); plain TCP without. */
  tls?: TlsMaterial | null;
}

/** The TCP line listener (docs/protocol.md): it only frames; the core does the rest. */
export class TcpTransport {
  readonly server: net.Server;

  constructor(
    private readonly core: DeviceCore,
    private readonly log: Logger,
    opts: TcpTransportOptions,
  ) {
    this.server = opts.tls
      ? secureServer(opts.tls, core, log, (socket, admission) => this.open(socket, admission, false))
      : net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.maxConnections = opts.maxConnections;
  }

  /** Listens; resolves with the port bound (a port in use fails start-up with one line, main.ts). */
  async listen(port: number, host: string): Promise<number> {
    const bound = await listenOn(this.server, port, host);
    this.server.on('error', (err) => this.log.error({ err }, 'device listener error'));
    return bound;
  }

  /** Stops accepting; the core says goodbye to the connections. */
  close(): void {
    this.server.close();
  }

  private accept(socket: net.Socket): void {
    const admission = this.core.admit(remoteAddressOf(socket));
    if (!admission) {
      socket.on('error', () => {});
      socket.end(encodeLine(errorMessage('rate_limited', 'too many connections from this address'), 'base64'));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    this.open(socket, admission, true);
  }

  private open(socket: net.Socket, admission: Admission, plain: boolean): void {
    const link = new TcpLink(socket, this.core.limits.maxOutQueueBytes, plain ? this.log : null, plain);
    link.attach(this.core.open(link, admission));
  }
}
