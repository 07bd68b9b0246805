/**
 * The ESP32 firmware's core built for Linux (esp32/build/sockpit-device-host, `make -C esp32
 * host`), run as a child process with its stdout (the board's Serial log) kept line by line.
 *
 * `stackKib` runs it under `ulimit -s`, to give it a stack closer to the ESP32's 8 KiB loop task
 * than Linux's 8 MiB: the deep-nesting test needs that to mean anything.
 */
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';

export const ROOT = path.resolve(__dirname, '../..');
export const HOST_BIN = path.join(ROOT, 'esp32', 'build', 'sockpit-device-host');
export const BLACKHOLE_BIN = path.join(ROOT, 'esp32', 'build', 'tcp-blackhole');
export const built = fs.existsSync(HOST_BIN);
export const required = process.env.ESP32_HOST_REQUIRED === '1';

/** Small enough to be ESP32-like, large enough for normal operation (measured: 16 KiB is). */
export const SMALL_STACK_KIB = 32;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class HostDevice {
  readonly lines: string[] = [];
  private readonly proc: ChildProcess;
  readonly exited: Promise<Exit>;
  private listeners: Array<() => void> = [];
  private exit: Exit | null = null;

  constructor(args: string[], opts: { stackKib?: number } = {}) {
    this.proc =
      opts.stackKib === undefined
        ? spawn(HOST_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn('bash', ['-c', 'ulimit -s "$0" && exec "$@"', String(opts.stackKib), HOST_BIN, ...args], {
            stdio: ['ignore', 'pipe', 'pipe'],
          });
    let rest = '';
    const onData = (chunk: Buffer) => {
      rest += chunk.toString('utf8');
      const parts = rest.split('\n');
      rest = parts.pop() ?? '';
      for (const line of parts) this.lines.push(line);
      for (const l of this.listeners) l();
    };
    this.proc.stdout!.on('data', onData);
    this.proc.stderr!.on('data', onData);
    // 'close', not 'exit': by then every line it wrote has been read.
    this.exited = new Promise((resolve) =>
      this.proc.on('close', (code, signal) => {
        this.exit = { code, signal };
        for (const l of this.listeners) l();
        resolve(this.exit);
      }),
    );
  }

  get log(): string {
    return this.lines.join('\n');
  }

  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }

  /** The first log line matching re (its match), or undefined. */
  find(re: RegExp): RegExpExecArray | undefined {
    for (const l of this.lines) {
      const m = re.exec(l);
      if (m) return m;
    }
    return undefined;
  }

  /** Resolves once `n` log lines match `re`; fails early if the program ends first. */
  waitFor(re: RegExp, timeoutMs: number, n = 1): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.count(re) >= n) {
          done();
          resolve();
        } else if (this.exit) {
          done();
          reject(new Error(`host device ended (${JSON.stringify(this.exit)}) before logging ${n}× ${re}; its log:\n${this.log}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`host device never logged ${n}× ${re}; its log:\n${this.log}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== check);
      };
      this.listeners.push(check);
      check();
    });
  }

  /** Highest reading sequence number logged so far ("Reading <boot>-<seq>: …"). */
  readingsTaken(): number {
    let max = 0;
    for (const l of this.lines) {
      const m = /Reading \d+-(\d+):/.exec(l);
      if (m) max = Math.max(max, Number(m[1]));
    }
    return max;
  }

  get running(): boolean {
    return this.exit === null;
  }

  async stop(): Promise<Exit> {
    if (this.exit === null) this.proc.kill('SIGTERM');
    return this.exited;
  }
}

export type Msg = Record<string, unknown>;

/** One device connection as the fake server sees it. */
export class FakeConn {
  readonly messages: Msg[] = [];
  /** Every byte the device sent, as latin1 text. */
  raw = '';
  closed = false;
  constructor(readonly socket: net.Socket) {}

  send(msg: Msg, encoding: 'base64' | 'json' = 'base64'): void {
    const json = JSON.stringify(msg);
    this.sendLine(encoding === 'json' ? json : Buffer.from(json).toString('base64'));
  }

  sendLine(line: string): void {
    if (!this.socket.destroyed) this.socket.write(line + '\n');
  }

  /** Sends an error as the protocol has it and closes, as the server does for a bad hello. */
  refuse(code: string, detail?: string): void {
    this.send({ type: 'error', error: code, ...(detail ? { detail } : {}) });
    this.socket.end();
  }
}

/**
 * A stand-in for the sockpit server written from the protocol alone (docs/protocol.md, TCP
 * lines): it reads base64 or plain JSON lines and hands each message to `onMessage`. It answers
 * nothing by itself; each test decides what the server says. With `tls` it is a TLS server
 * (node:tls) speaking the same lines, as DEVICE_TLS_PORT does.
 */
export class FakeServer {
  readonly conns: FakeConn[] = [];
  /** When each connection arrived (Date.now()); on TLS, once its handshake succeeded. */
  readonly connectedAt: number[] = [];
  /** TLS handshakes that failed, with the reason node:tls gives. */
  readonly handshakeErrors: string[] = [];
  private readonly server: net.Server;
  private waiters: Array<() => void> = [];
  port = 0;

  constructor(
    private readonly onMessage: (conn: FakeConn, msg: Msg) => void,
    opts: { tls?: tls.TlsOptions } = {},
  ) {
    if (opts.tls) {
      const server = tls.createServer(opts.tls, (socket) => this.accept(socket));
      server.on('tlsClientError', (err) => {
        this.handshakeErrors.push(err.message);
        this.notify();
      });
      this.server = server;
    } else {
      this.server = net.createServer((socket) => this.accept(socket));
    }
  }

  async listen(port = 0): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  private accept(socket: net.Socket): void {
    const conn = new FakeConn(socket);
    this.conns.push(conn);
    this.connectedAt.push(Date.now());
    let buf = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      conn.raw += d;
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const text = line.startsWith('{') ? line : Buffer.from(line, 'base64').toString('utf8');
        let msg: Msg;
        try {
          msg = JSON.parse(text) as Msg;
        } catch {
          msg = { unreadable: line };
        }
        conn.messages.push(msg);
        this.onMessage(conn, msg);
      }
      this.notify();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      conn.closed = true;
      this.notify();
    });
    this.notify();
  }

  private notify(): void {
    for (const w of this.waiters) w();
  }

  /** Resolves once fn() is true (checked on every event and every 50 ms). */
  until(what: string, fn: () => boolean, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (fn()) {
          done();
          resolve();
        }
      };
      const poll = setInterval(check, 50);
      const timer = setTimeout(() => {
        done();
        reject(new Error(`fake server: timed out waiting for ${what}`));
      }, timeoutMs);
      const done = () => {
        clearInterval(poll);
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      this.waiters.push(check);
      check();
    });
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A port on 127.0.0.1 with nothing listening (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** The tcp-blackhole helper (esp32/test/tcp_blackhole.c): a port where connect() times out. */
export async function blackhole(): Promise<{ port: number; stop: () => void }> {
  const proc = spawn(BLACKHOLE_BIN, [], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    proc.once('exit', (code) => reject(new Error(`tcp-blackhole exited with ${code}`)));
  });
  return { port, stop: () => proc.kill('SIGTERM') };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
