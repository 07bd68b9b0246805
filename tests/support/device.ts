import net from 'node:net';

export type Enc = 'base64' | 'json';

export function encode(msg: unknown, enc: Enc = 'base64'): string {
  const json = JSON.stringify(msg);
  return (enc === 'json' ? json : Buffer.from(json).toString('base64')) + '\n';
}

/** A raw TCP "ESP32" written from docs/protocol.md: lines of base64 JSON (or plain JSON). */
export class RawDevice {
  readonly received: Record<string, unknown>[] = [];
  readonly rawLines: string[] = [];
  closed = false;
  private buf = '';
  private waiters: { match: (m: Record<string, unknown>) => boolean; resolve: (m: Record<string, unknown>) => void }[] = [];
  private closeWaiters: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters) w();
    });
  }

  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawDevice> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, localAddress }, () => resolve(new RawDevice(s)));
      s.once('error', reject);
    });
  }

  /** Connects, says hello and waits for the welcome. */
  static async hello(port: number, device: string, token: string, enc: Enc = 'base64'): Promise<RawDevice> {
    const d = await RawDevice.connect(port);
    d.send({ type: 'hello', device, token, firmware: 'test/1' }, enc);
    await d.next((m) => m.type === 'welcome');
    return d;
  }

  send(msg: unknown, enc: Enc = 'base64'): void {
    this.socket.write(encode(msg, enc));
  }

  write(raw: string | Buffer): void {
    this.socket.write(raw);
  }

  /** The next message (already received or still to come) that matches. */
  next(match: (m: Record<string, unknown>) => boolean = () => true, timeoutMs = 8000): Promise<Record<string, unknown>> {
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
        resolve: (m: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.waiters.push(w);
    });
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
    this.socket.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.rawLines.push(line);
      const text = line.startsWith('{') ? line : Buffer.from(line, 'base64').toString('utf8');
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(text);
      } catch {
        continue;
      }
      const w = this.waiters.findIndex((x) => x.match(msg));
      if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(msg);
      else this.received.push(msg);
    }
  }
}
