/**
 * A device that behaves like the firmware for at-least-once telemetry (docs/protocol.md): the one
 * device client (server/devices/client.ts) numbering its readings `<boot>-<seq>`, keeping each until
 * it is answered `stored` and resending the unanswered ones when it is welcomed again. The test
 * decides when it connects and closes (no reconnects of its own) and keeps the books: every id
 * sent, every id answered.
 */
import { DeviceClient, tcpTransport } from '../../server/devices/client';
import { sleep } from './child';
import { Inbox } from './device';

export class ReliableDevice {
  /** Reading ids sent at least once, in order. */
  readonly sent: string[] = [];
  /** Ids the server answered `stored`. */
  readonly stored = new Set<string>();
  /** What the server sent on the current connection (the `stored` answers aside). */
  inbox = new Inbox();
  private client: DeviceClient | null = null;
  private streaming = false;
  private loop: Promise<void> | null = null;

  constructor(
    readonly id: string,
    readonly token: string,
    private readonly boot = 1,
  ) {}

  /** Connects and waits for the welcome; readings not yet answered are resent then, as the firmware does. */
  async connect(port: number): Promise<void> {
    const transport = tcpTransport({ port });
    this.client ??= new DeviceClient({
      id: this.id,
      token: this.token,
      firmware: 'test/1',
      transport,
      bootId: String(this.boot),
      reconnect: false,
      maxUnacked: Infinity,
      keepaliveMs: 0,
      handlers: {
        stored: (id) => void this.stored.add(id!),
        message: (m) => this.inbox.push(m),
      },
    });
    this.client.transport = transport;
    this.inbox = new Inbox();
    await this.client.start();
  }

  /** The next message on this connection that matches. */
  next(...args: Parameters<Inbox['next']>): ReturnType<Inbox['next']> {
    return this.inbox.next(...args);
  }

  /** Messages received on this connection and not taken by `next`. */
  get received(): Inbox['received'] {
    return this.inbox.received;
  }

  get closed(): boolean {
    return !this.client?.currentLink || this.client.currentLink.closed;
  }

  /** Sends one new reading; returns its id. */
  sendReading(): string {
    const id = this.client!.reading((seq) => ({ seq, boot: this.boot }));
    this.sent.push(id);
    return id;
  }

  /** Sends `perSecond` readings a second until stopped (or until the connection closes). */
  startStreaming(perSecond: number): void {
    this.streaming = true;
    this.loop = (async () => {
      const every = 1000 / perSecond;
      let next = performance.now();
      while (this.streaming && !this.closed) {
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

  /** Resends readings that were already answered: the server must store them only once. */
  resendAnswered(count: number): void {
    for (const id of [...this.stored].slice(0, count)) {
      const seq = Number(id.split('-')[1]);
      this.client!.send({ type: 'telemetry', id, data: { seq, boot: this.boot } });
    }
  }

  /** A ping answered means every line before it was read and handled by the server. */
  barrier(timeoutMs = 8000): Promise<void> {
    return this.client!.ping(timeoutMs);
  }

  get unanswered(): number {
    return this.sent.filter((id) => !this.stored.has(id)).length;
  }

  close(): void {
    this.client?.closeLink();
  }
}
