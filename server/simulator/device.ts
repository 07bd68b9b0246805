import { ClientTransport, DeviceClient, DeviceCommand, CommandReply, tcpTransport } from '../devices/client';
import { SimulatedValues } from './values';

export interface SimOptions {
  host: string;
  port: number;
  /** How it connects (tcp, websocket, mqtt, with or without TLS); default: TCP lines to host:port. */
  transport?: ClientTransport;
  id: string;
  token: string;
  intervalMs: number;
  /** Readings kept while not answered `stored` (oldest dropped beyond this). */
  maxUnacked?: number;
  log?: (line: string) => void;
}

/**
 * A device simulator that behaves like the firmware (esp32/), on the one device client
 * (server/devices/client.ts): hello, periodic readings with ids resent after a reconnect, pings
 * when idle, reconnects with backoff. On top: a relay toggled by `togglerele`, the reporting
 * interval set by `changesetting`, and readings with ESP32-like values (./values.ts).
 */
export class SimulatedDevice {
  relay = false;
  intervalMs: number;
  private readonly client: DeviceClient;
  private readonly values = new SimulatedValues();
  private timer: NodeJS.Timeout | null = null;
  private readonly log: (line: string) => void;

  constructor(private readonly opts: SimOptions) {
    this.intervalMs = opts.intervalMs;
    this.log = opts.log ?? ((l) => process.stdout.write(`${new Date().toISOString()} ${l}\n`));
    const transport = opts.transport ?? tcpTransport({ host: opts.host, port: opts.port });
    this.client = new DeviceClient({
      id: opts.id,
      token: opts.token,
      firmware: 'sockpit-simulator/1',
      transport,
      maxUnacked: opts.maxUnacked ?? 256,
      handlers: {
        connecting: () => this.log(`connecting to ${transport.address} over ${transport.name} ...`),
        connected: () => this.log('connected; saying hello'),
        linkError: (err) => this.log(`connection error: ${err.message}`),
        welcome: (m, resent) => {
          this.log(`welcome: online as "${String(m.device)}"`);
          if (resent > 0) this.log(`resent ${resent} reading(s) not yet stored`);
          this.schedule();
        },
        disconnected: ({ retryInMs }) => {
          this.unschedule();
          if (retryInMs !== null) this.log(`disconnected; retrying in ${(retryInMs / 1000).toFixed(1)} s`);
        },
        serverError: (code, detail) => this.onServerError(code, detail),
        command: (cmd) => this.onCommand(cmd),
        undecodable: (_code, detail) => this.log(`could not read a line from the server: ${detail}`),
        message: (m) => {
          if (!['welcome', 'pong', 'error', 'fromservertonode'].includes(String(m.type))) this.log(`ignoring message of type ${String(m.type)}`);
        },
      },
    });
  }

  start(): void {
    // A refusal is reported by onServerError; nothing else waits for this promise.
    this.client.start().catch(() => {});
  }

  stop(): void {
    this.unschedule();
    this.client.stop();
  }

  /** Exponential backoff with jitter, capped at 30 s (as the firmware does). */
  static backoffMs(attempt: number): number {
    return DeviceClient.backoffMs(attempt);
  }

  private onServerError(code: string, detail: string | null): void {
    if (code === 'unauthorized') {
      this.log(`the server refused this device (${detail ?? 'unauthorized'}); check --id and --token. Stopping.`);
      this.stop();
      process.exitCode = 1;
    } else if (code === 'going_away') {
      this.log(`the server is closing this connection (${detail ?? 'going away'}); reconnecting after a pause`);
    } else if (code === 'unavailable') {
      this.log(`the server could not check this device just now (${detail ?? 'unavailable'}); retrying with backoff`);
    } else {
      this.log(`server error: ${code}${detail ? ` (${detail})` : ''}`);
    }
  }

  private onCommand(cmd: DeviceCommand): CommandReply {
    if (cmd.action === 'togglerele') {
      this.relay = !this.relay;
      this.log(`command togglerele: relay is now ${this.relay ? 'ON' : 'OFF'}`);
      // The ack first, then a reading that shows the new state.
      setImmediate(() => this.reading());
      return { ok: true, result: { relay: this.relay } };
    }
    if (cmd.action === 'changesetting') {
      const params = cmd.params ?? {};
      const unknown = Object.keys(params).filter((k) => k !== 'interval_ms');
      const ms = Number(params.interval_ms);
      if (unknown.length > 0) {
        this.log(`command changesetting refused: unknown setting ${unknown.join(', ')}`);
        return { ok: false, result: { error: `unknown setting: ${unknown.join(', ')}` } };
      }
      if (!Number.isInteger(ms) || ms < 100 || ms > 86_400_000) return { ok: false, result: { error: 'interval_ms must be 100..86400000' } };
      this.intervalMs = ms;
      this.schedule();
      this.log(`command changesetting: reporting every ${ms} ms`);
      return { ok: true, result: { interval_ms: ms } };
    }
    this.log(`unknown command ${cmd.action}; refusing`);
    return { ok: false, result: { error: `unknown action: ${cmd.action}` } };
  }

  private schedule(): void {
    this.unschedule();
    this.timer = setInterval(() => {
      if (this.client.ready) this.reading();
    }, this.intervalMs);
  }

  private unschedule(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private reading(): void {
    this.client.reading(this.values.next(this.relay));
  }
}
