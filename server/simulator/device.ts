import net from 'node:net';
import os from 'node:os';

export interface SimOptions {
  host: string;
  port: number;
  id: string;
  token: string;
  intervalMs: number;
  /** Readings kept while not answered `stored` (oldest dropped beyond this). */
  maxUnacked?: number;
  log?: (line: string) => void;
}

type Msg = Record<string, unknown>;

/**
 * A device simulator that behaves like the firmware (esp32/): hello, periodic telemetry with ids,
 * resend of unanswered readings after a reconnect, a relay toggled by `togglerele`, settings via
 * `changesetting`, an ack for every command, pings when idle and reconnects with backoff.
 */
export class SimulatedDevice {
  relay = false;
  intervalMs: number;
  private socket: net.Socket | null = null;
  private buf = '';
  private readonly boot = Math.floor(Date.now() / 1000).toString(36);
  private seq = 0;
  private readonly unacked = new Map<string, Msg>();
  private timer: NodeJS.Timeout | null = null;
  private retry: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  private ready = false;
  private lastSent = 0;
  private readonly log: (line: string) => void;

  constructor(private readonly opts: SimOptions) {
    this.intervalMs = opts.intervalMs;
    this.log = opts.log ?? ((l) => process.stdout.write(`${new Date().toISOString()} ${l}\n`));
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    this.socket?.destroy();
  }

  /** Exponential backoff with jitter, capped at 30 s (as the firmware does). */
  static backoffMs(attempt: number): number {
    const base = Math.min(30_000, 500 * 2 ** Math.min(attempt, 10));
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  private connect(): void {
    const { host, port } = this.opts;
    this.log(`connecting to ${host}:${port} ...`);
    const s = net.connect({ host, port });
    this.socket = s;
    this.buf = '';
    s.setEncoding('latin1');
    s.on('connect', () => {
      this.log('connected; saying hello');
      this.send({ type: 'hello', device: this.opts.id, token: this.opts.token, firmware: 'sockpit-simulator/1' });
    });
    s.on('data', (d: string) => this.onData(d));
    s.on('error', (err) => this.log(`connection error: ${err.message}`));
    s.on('close', () => this.onClose());
  }

  private onClose(): void {
    this.ready = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.stopped) return;
    const wait = SimulatedDevice.backoffMs(this.attempt++);
    this.log(`disconnected; retrying in ${(wait / 1000).toFixed(1)} s`);
    this.retry = setTimeout(() => this.connect(), wait);
  }

  private send(msg: Msg): void {
    if (!this.socket || this.socket.destroyed) return;
    this.lastSent = Date.now();
    this.socket.write(Buffer.from(JSON.stringify(msg)).toString('base64') + '\n');
  }

  private onData(d: string): void {
    this.buf += d;
    if (this.buf.length > 64 * 1024) {
      this.log('server sent an over-long line; reconnecting');
      this.socket?.destroy();
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      try {
        const text = line.startsWith('{') ? line : Buffer.from(line, 'base64').toString('utf8');
        this.onMessage(JSON.parse(text) as Msg);
      } catch {
        this.log(`could not read a line from the server: ${line.slice(0, 80)}`);
      }
    }
  }

  private onMessage(m: Msg): void {
    switch (m.type) {
      case 'welcome':
        this.ready = true;
        this.attempt = 0;
        this.log(`welcome: online as "${String(m.device)}"`);
        if (this.unacked.size > 0) this.log(`resending ${this.unacked.size} reading(s) not yet stored`);
        for (const r of this.unacked.values()) this.send(r);
        this.schedule();
        return;
      case 'stored':
        this.unacked.delete(String(m.id));
        return;
      case 'pong':
        return;
      case 'error':
        if (m.error === 'unauthorized') {
          this.log(`the server refused this device (${String(m.detail ?? 'unauthorized')}); check --id and --token. Stopping.`);
          this.stop();
          process.exitCode = 1;
          return;
        }
        if (m.error === 'going_away') {
          this.log(`the server is closing this connection (${String(m.detail ?? 'going away')}); reconnecting after a pause`);
          return;
        }
        if (m.error === 'unavailable') {
          this.log(`the server could not check this device just now (${String(m.detail ?? 'unavailable')}); retrying with backoff`);
          return;
        }
        this.log(`server error: ${String(m.error)}${m.detail ? ` (${String(m.detail)})` : ''}`);
        return;
      case 'fromservertonode':
        return this.onCommand(m);
      default:
        this.log(`ignoring message of type ${String(m.type)}`);
    }
  }

  private onCommand(m: Msg): void {
    const id = String(m.id);
    if (m.action === 'togglerele') {
      this.relay = !this.relay;
      this.log(`command togglerele: relay is now ${this.relay ? 'ON' : 'OFF'}`);
      this.send({ type: 'ack', id, ok: true, result: { relay: this.relay } });
      this.reading();
    } else if (m.action === 'changesetting') {
      const params = (m.params ?? {}) as Record<string, unknown>;
      const unknown = Object.keys(params).filter((k) => k !== 'interval_ms');
      const ms = Number(params.interval_ms);
      if (unknown.length > 0) {
        this.send({ type: 'ack', id, ok: false, result: { error: `unknown setting: ${unknown.join(', ')}` } });
        this.log(`command changesetting refused: unknown setting ${unknown.join(', ')}`);
      } else if (!Number.isInteger(ms) || ms < 100 || ms > 86_400_000) {
        this.send({ type: 'ack', id, ok: false, result: { error: 'interval_ms must be 100..86400000' } });
      } else {
        this.intervalMs = ms;
        this.schedule();
        this.log(`command changesetting: reporting every ${ms} ms`);
        this.send({ type: 'ack', id, ok: true, result: { interval_ms: ms } });
      }
    } else {
      this.log(`unknown command ${String(m.action)}; refusing`);
      this.send({ type: 'ack', id, ok: false, result: { error: `unknown action: ${String(m.action)}` } });
    }
  }

  private schedule(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (!this.ready) return;
      this.reading();
      if (Date.now() - this.lastSent > 30_000) this.send({ type: 'ping' });
    }, this.intervalMs);
  }

  private reading(): void {
    const id = `${this.boot}-${++this.seq}`;
    const msg = {
      type: 'telemetry',
      id,
      data: {
        uptime_ms: Math.round(process.uptime() * 1000),
        free_heap: os.freemem(),
        rssi: -40 - Math.round(Math.random() * 30),
        relay: this.relay,
        temp_c: Math.round((40 + Math.random() * 5) * 10) / 10,
      },
    };
    this.unacked.set(id, msg);
    const max = this.opts.maxUnacked ?? 256;
    while (this.unacked.size > max) this.unacked.delete(this.unacked.keys().next().value!);
    if (this.ready) this.send(msg);
  }
}
