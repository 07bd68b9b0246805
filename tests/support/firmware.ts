/**
 * A device that behaves like the firmware for at-least-once telemetry (docs/protocol.md): it numbers its
 * readings, keeps each until it is answered `stored`, and resends the unanswered ones after it
 * reconnects.
 */
import { RawDevice } from './device';
import { sleep } from './child';

export class ReliableDevice {
  /** Reading ids sent at least once, in order. */
  readonly sent: string[] = [];
  /** Ids the server answered `stored`. */
  readonly stored = new Set<string>();
  conn: RawDevice | null = null;
  private seq = 0;
  private streaming = false;
  private loop: Promise<void> | null = null;

  constructor(
    readonly id: string,
    readonly token: string,
    private readonly boot = 1,
  ) {}

  async connect(port: number): Promise<void> {
    this.conn = await RawDevice.hello(port, this.id, this.token);
    this.conn.socket.on('data', () => this.collect());
  }

  /** Sends one new reading; returns its id. */
  sendReading(): string {
    const id = `${this.boot}-${++this.seq}`;
    this.sent.push(id);
    this.conn!.send({ type: 'telemetry', id, data: { seq: this.seq, boot: this.boot } });
    return id;
  }

  /** Sends `perSecond` readings a second until stopped (or until the connection closes). */
  startStreaming(perSecond: number): void {
    this.streaming = true;
    this.loop = (async () => {
      const every = 1000 / perSecond;
      let next = performance.now();
      while (this.streaming && this.conn && !this.conn.closed) {
        this.sendReading();
        next += every;
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
      }
    })();
  }

  async stopStreaming(): Promise<void> {
    this.streaming = false;
    await this.loop;
  }

  /** Resends every reading not yet answered (after a reconnect), as the firmware does. */
  resendUnanswered(): number {
    let n = 0;
    for (const id of this.sent) {
      if (this.stored.has(id)) continue;
      const seq = Number(id.split('-')[1]);
      this.conn!.send({ type: 'telemetry', id, data: { seq, boot: this.boot } });
      n++;
    }
    return n;
  }

  /** Resends readings that were already answered: the server must store them only once. */
  resendAnswered(count: number): void {
    for (const id of [...this.stored].slice(0, count)) {
      const seq = Number(id.split('-')[1]);
      this.conn!.send({ type: 'telemetry', id, data: { seq, boot: this.boot } });
    }
  }

  /** A ping answered means every line before it was read and handled by the server. */
  async barrier(timeoutMs = 8000): Promise<void> {
    this.conn!.send({ type: 'ping' });
    await this.conn!.next((m) => m.type === 'pong', timeoutMs);
  }

  get unanswered(): number {
    return this.sent.filter((id) => !this.stored.has(id)).length;
  }

  close(): void {
    this.conn?.close();
  }

  private collect(): void {
    const got = this.conn!.received;
    for (let i = got.length - 1; i >= 0; i--) {
      const m = got[i]!;
      if (m.type === 'stored' && typeof m.id === 'string') {
        this.stored.add(m.id);
        got.splice(i, 1);
      }
    }
  }
}
