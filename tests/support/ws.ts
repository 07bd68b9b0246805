/**
 * A WebSocket device for tests (docs/protocol.md, "WebSocket"), on the `ws` client: one message
 * per text frame, base64 or plain JSON. The test decides every frame (text, binary, oversized) and
 * waits for what comes back, as RawDevice does for TCP lines.
 */
import WebSocket from 'ws';
import type { Encoding } from '../../server/devices/codec';
import { Inbox } from './device';

export interface WsOpenOptions {
  /** `?device=`, `?token=` and the like, added to the URL. */
  query?: Record<string, string>;
  headers?: Record<string, string>;
  /** Answer the server's pings (the default, as every WebSocket client does). */
  autoPong?: boolean;
}

/** What the server answered instead of upgrading. */
export class HandshakeRefused extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`handshake refused with HTTP ${status}: ${body}`);
  }
}

/** The object a frame carries: plain JSON, or JSON in base64 (the first character decides). */
export function decodeFrame(text: string): Record<string, unknown> {
  return JSON.parse(text.startsWith('{') ? text : Buffer.from(text, 'base64').toString('utf8')) as Record<string, unknown>;
}

export function encodeFrame(msg: unknown, enc: Encoding): string {
  const json = JSON.stringify(msg);
  return enc === 'json' ? json : Buffer.from(json).toString('base64');
}

export function withQuery(url: string, query: Record<string, string> = {}): string {
  const u = new URL(url);
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  return u.toString();
}

export class WsDevice extends Inbox {
  /** Every text frame received, as it came, in order. */
  readonly frames: string[] = [];
  /** Server pings seen. */
  pings = 0;
  closed = false;
  closeCode: number | null = null;
  closeReason = '';
  private closeWaiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    super();
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '' : String(data);
      this.frames.push(text);
      try {
        this.push(decodeFrame(text));
      } catch {
        this.push({ type: '<undecodable>', text });
      }
    });
    ws.on('ping', () => this.pings++);
    ws.on('error', () => {});
    ws.on('close', (code, reason) => {
      this.closed = true;
      this.closeCode = code;
      this.closeReason = reason.toString();
      for (const w of this.closeWaiters) w();
    });
  }

  /** Opens a WebSocket; rejects with HandshakeRefused when the server answers HTTP instead. */
  static open(url: string, opts: WsOpenOptions = {}): Promise<WsDevice> {
    const ws = new WebSocket(withQuery(url, opts.query), { headers: opts.headers, autoPong: opts.autoPong ?? true, handshakeTimeout: 8000 });
    const device = new WsDevice(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(device));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => reject(new HandshakeRefused(res.statusCode ?? 0, body)));
        res.on('error', () => reject(new HandshakeRefused(res.statusCode ?? 0, body)));
      });
      ws.once('error', reject);
    });
  }

  /** The HTTP status of a handshake the server refuses (fails the test if it upgrades). */
  static async refusal(url: string, opts: WsOpenOptions = {}): Promise<HandshakeRefused> {
    try {
      const d = await WsDevice.open(url, opts);
      d.close();
    } catch (err) {
      if (err instanceof HandshakeRefused) return err;
      throw err;
    }
    throw new Error('the handshake was accepted');
  }

  /** Opens, says hello as the first message and waits for the welcome. */
  static async hello(url: string, device: string, token: string, enc: Encoding = 'json'): Promise<WsDevice> {
    const d = await WsDevice.open(url);
    d.send({ type: 'hello', device, token, firmware: 'test/1' }, enc);
    await d.next((m) => m.type === 'welcome');
    return d;
  }

  /** Opens with the device and token in the handshake (`Authorization: Bearer`) and waits for the welcome. */
  static async bearer(url: string, device: string, token: string, opts: WsOpenOptions = {}): Promise<WsDevice> {
    const d = await WsDevice.open(url, { ...opts, query: { device, ...opts.query }, headers: { authorization: `Bearer ${token}`, ...opts.headers } });
    await d.next((m) => m.type === 'welcome');
    return d;
  }

  send(msg: unknown, enc: Encoding = 'json'): void {
    this.ws.send(encodeFrame(msg, enc));
  }

  /** One text frame as it is. */
  sendText(text: string): void {
    this.ws.send(text);
  }

  sendBinary(bytes: Buffer): void {
    this.ws.send(bytes, { binary: true });
  }

  waitClosed(timeoutMs = 8000): Promise<{ code: number | null; reason: string }> {
    const result = () => ({ code: this.closeCode, reason: this.closeReason });
    if (this.closed) return Promise.resolve(result());
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs} ms`)), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve(result());
      });
    });
  }

  close(): void {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) this.ws.close();
  }

  terminate(): void {
    this.ws.terminate();
  }
}
