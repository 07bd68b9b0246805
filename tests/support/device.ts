/**
 * Test devices, on the one device client (server/devices/client.ts). RawDevice is a bare link: the
 * test decides every byte (raw writes, broken lines, a hello or not) and waits for what comes back.
 * ReliableDevice (support/firmware.ts) is the device logic itself.
 */
import net from 'node:net';
import { Encoding, LinkHandlers, Message, TcpClientLink, tcpTransport } from '../../server/devices/client';
import { encodeLine } from '../../server/devices/codec';

export type Enc = Encoding;

/** One message as the line a device writes (`\n` included). */
export function encode(msg: unknown, enc: Enc = 'base64'): string {
  return encodeLine(msg as object, enc).toString('utf8');
}

/** Messages received and not yet taken by `next`, and the tests waiting for one. */
export class Inbox {
  readonly received: Message[] = [];
  private waiters: { match: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];

  push(msg: Message): void {
    const w = this.waiters.findIndex((x) => x.match(msg));
    if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(msg);
    else this.received.push(msg);
  }

  /** The next message (already received or still to come) that matches. */
  next(match: (m: Message) => boolean = () => true, timeoutMs = 8000): Promise<Message> {
    const idx = this.received.findIndex(match);
    if (idx >= 0) return Promise.resolve(this.received.splice(idx, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no matching message within ${timeoutMs} ms; got ${JSON.stringify(this.received)}`));
      }, timeoutMs);
      const w = {
        match,
        resolve: (m: Message) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.waiters.push(w);
    });
  }
}

/** A raw TCP "ESP32" as docs/protocol.md describes: lines of base64 JSON (or plain JSON). */
export class RawDevice extends Inbox {
  /** Every line received, as text, in order (also those `next` took). */
  readonly rawLines: string[] = [];
  closed = false;
  private link!: TcpClientLink;
  private closeWaiters: (() => void)[] = [];
  private readonly handlers: LinkHandlers = {
    message: (m) => this.push(m),
    line: (raw) => void this.rawLines.push(raw.toString('latin1')),
    close: () => {
      this.closed = true;
      for (const w of this.closeWaiters) w();
    },
  };

  private constructor() {
    super();
  }

  static async connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawDevice> {
    const d = new RawDevice();
    d.link = (await tcpTransport({ host, port, localAddress }).open(d.handlers)) as TcpClientLink;
    return d;
  }

  /** Connects, says hello and waits for the welcome. */
  static async hello(port: number, device: string, token: string, enc: Enc = 'base64'): Promise<RawDevice> {
    const d = await RawDevice.connect(port);
    d.send({ type: 'hello', device, token, firmware: 'test/1' }, enc);
    await d.next((m) => m.type === 'welcome');
    return d;
  }

  /** The TCP socket under the link (pause it to stop reading; watch it close). */
  get socket(): net.Socket {
    return this.link.socket;
  }

  send(msg: unknown, enc: Enc = 'base64'): void {
    this.link.send(msg as object, enc);
  }

  /** Bytes as they are: broken lines, half lines, anything. */
  write(raw: string | Buffer): void {
    this.link.writeRaw(raw);
  }

  waitClosed(timeoutMs = 8000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('connection still open')), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  close(): void {
    this.link.close();
  }
}
