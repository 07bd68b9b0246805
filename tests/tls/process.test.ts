/**
 * TLS cases that need the real entry point (`node dist/main.js`) as a process of its own
 * (docs/security.md, cases 23-28): the exit code and the one line of a TLS setting that cannot be
 * used, the warning of an out-of-date TLS_CERT, SIGHUP, the log line of a TLS client on the plain
 * port, the start banner, and RSS under 1,000 half-open handshakes (read from /proc).
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { HANDSHAKE_TIMEOUT_MS, tlsFiles } from '../../server/tls/material';
import { addDeviceCli, Child, childEnv, ensureBuilt, killChildren, ROOT, sleep, startChild, until } from '../support/child';
import { NO_STACK } from '../support/cli';
import { testDatabaseUrl } from '../support/server';
import { certificateFor, KeyPair, otherCa, presentedCertificate, TlsDevice, tlsRefusal, writePair } from '../support/tls';

const MB = 1024 * 1024;
const MAIN = path.join(ROOT, 'dist', 'main.js');

beforeAll(() => ensureBuilt());
afterEach(() => killChildren());

/** The ports of the `sockpit listening` line. */
function ports(child: Child): { tcpTls: number; mqttTls: number; https: number; mqtt: number } {
  const line = child.logs.find((l) => l.msg === 'sockpit listening')!;
  return { tcpTls: line.deviceTlsPort as number, mqttTls: line.mqttTlsPort as number, https: line.httpsPort as number, mqtt: line.mqttPort as number };
}

/** Runs the server to its exit (it must not start); what a person sees. */
function startFails(env: Record<string, string>, opts: { uid?: number; gid?: number } = {}): { code: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [MAIN], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 30_000, ...opts });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

let theirCa: KeyPair;
beforeAll(async () => {
  theirCa = await otherCa();
});

describe('26. TLS settings that cannot be used stop start-up with one line', () => {
  test('when TLS_KEY cannot be used (no such file, a directory, not a key, the key of another certificate), then the server exits 2 with one line naming TLS_KEY, and no stack trace', async () => {
    const good = writePair(await certificateFor(theirCa, ['localhost'], -1, 90));
    const other = writePair(await certificateFor(theirCa, ['localhost'], -1, 90));
    const garbage = path.join(good.dir, 'garbage-key.pem');
    fs.writeFileSync(garbage, 'this is not a key\n', { mode: 0o600 });
    for (const [key, reason] of [
      [path.join(good.dir, 'missing-key.pem'), /cannot read .*missing-key\.pem: no such file$/],
      [good.dir, /cannot read .*: EISDIR/],
      [garbage, /garbage-key\.pem is not the private key of TLS_CERT/],
      [other.key, /is not the private key of TLS_CERT/],
    ] as const) {
      const r = startFails(childEnv({ DEVICE_TLS_PORT: '0', TLS_CERT: good.cert, TLS_KEY: key }));
      expect({ key, code: r.code }).toEqual({ key, code: 2 });
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^sockpit: bad setting TLS_KEY: /);
      expect(lines[0]).toMatch(reason);
      expect(r.stderr).not.toMatch(NO_STACK);
      expect(r.stdout).not.toMatch(/sockpit listening/);
    }
  }, 60_000);

  const rootOnly = process.getuid?.() === 0 ? test : test.skip;
  rootOnly('when the server runs as a user who may not read TLS_KEY (mode 0600, owned by root), then it exits 2 with "TLS_KEY: cannot read …: permission denied"', async () => {
    const pair = writePair(await certificateFor(theirCa, ['localhost'], -1, 90));
    fs.chmodSync(pair.dir, 0o755);
    fs.chmodSync(pair.cert, 0o644);
    const env = childEnv({ DEVICE_TLS_PORT: '0', TLS_CERT: pair.cert, TLS_KEY: pair.key });
    fs.chownSync(env.DATA_DIR!, 65534, 65534); // the server's own data stays writable for it
    const r = startFails(env, { uid: 65534, gid: 65534 });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`sockpit: bad setting TLS_KEY: cannot read ${pair.key}: permission denied`);
  });

  test('when TLS_CERT is set without TLS_KEY, or TLS_KEY without TLS_CERT, then the server exits 2 with one line naming the missing one', () => {
    for (const [env, missing] of [
      [{ TLS_CERT: '/tmp/cert.pem' }, 'TLS_KEY'],
      [{ TLS_KEY: '/tmp/key.pem' }, 'TLS_CERT'],
    ] as const) {
      const r = startFails(childEnv({ DEVICE_TLS_PORT: '0', ...env }));
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toBe(`sockpit: bad setting ${missing}: TLS_CERT and TLS_KEY go together: set both (PEM files), or neither to use sockpit's own certificate`);
    }
  });
});

describe('26. an expired or not-yet-valid TLS_CERT', () => {
  test.each([
    ['has expired', -400, -10, 'TLS_CERT has expired: devices will refuse it until it is replaced', 'CERT_HAS_EXPIRED'],
    ['is not valid yet', 5, 400, 'TLS_CERT is not valid yet: devices will refuse it until then', 'CERT_NOT_YET_VALID'],
  ])('when TLS_CERT %s, then start-up warns in one plain line and the server still serves it (a device checking dates refuses it, as the warning says)', async (_what, from, to, warning, refusal) => {
    const pair = await certificateFor(theirCa, ['localhost', '127.0.0.1'], from, to);
    const files = writePair(pair);
    const child = await startChild(childEnv({ DEVICE_TLS_PORT: '0', TLS_CERT: files.cert, TLS_KEY: files.key }));
    const warned = child.logs.filter((l) => l.level === 40);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ msg: warning, file: files.cert });
    const port = ports(child).tcpTls;
    expect((await presentedCertificate(port)).serialNumber).toBe(new crypto.X509Certificate(pair.certPem).serialNumber);
    expect((await tlsRefusal(port, { ca: theirCa.certPem })).code).toBe(refusal);
    expect((await fetch(`${child.baseUrl}/healthz`)).status).toBe(200);
  });
});

describe('27. SIGHUP reads TLS_CERT and TLS_KEY again', () => {
  test('when the files are replaced and the server gets SIGHUP, then new connections get the new certificate at once, and the device connected before stays and keeps working', async () => {
    const first = await certificateFor(theirCa, ['localhost', '127.0.0.1'], -1, 30);
    const files = writePair(first);
    const env = childEnv({ DEVICE_TLS_PORT: '0', TLS_CERT: files.cert, TLS_KEY: files.key });
    const token = addDeviceCli(env, 'hup-1');
    const child = await startChild(env);
    const port = ports(child).tcpTls;
    const device = await TlsDevice.hello(port, { ca: theirCa.certPem }, 'hup-1', token);
    try {
      const second = await certificateFor(theirCa, ['localhost', '127.0.0.1'], -1, 365);
      const secondSerial = new crypto.X509Certificate(second.certPem).serialNumber;
      const t0 = Date.now();
      writePair(second, files.dir);
      process.kill(child.pid, 'SIGHUP');
      await until(async () => (await presentedCertificate(port)).serialNumber === secondSerial, 5000, 'the new certificate');
      expect(child.proc.exitCode).toBeNull();
      const loaded = () => child.logs.find((l) => l.msg === 'TLS certificate loaded; new connections get it, open ones keep theirs');
      await until(() => loaded() !== undefined, 3000, 'the log line');
      // Sooner than the file watch could have (it waits 500 ms after it sees a change): SIGHUP did it.
      expect((loaded()!.time as number) - t0).toBeLessThan(500);
      await device.roundTrip();
      expect(device.certificate.serialNumber).toBe(new crypto.X509Certificate(first.certPem).serialNumber);
      const fresh = await TlsDevice.hello(port, { ca: theirCa.certPem }, 'hup-1', token); // replaces the old connection, as any new one would
      expect(fresh.certificate.serialNumber).toBe(secondSerial);
      fresh.close();
    } finally {
      device.close();
    }
  });

  test('when SIGHUP comes with the own CA, then the server keeps running and keeps its certificate (nothing is due)', async () => {
    const child = await startChild(childEnv({ DEVICE_TLS_PORT: '0' }));
    const port = ports(child).tcpTls;
    const before = (await presentedCertificate(port)).serialNumber;
    process.kill(child.pid, 'SIGHUP');
    await sleep(500);
    expect(child.proc.exitCode).toBeNull();
    expect(child.proc.signalCode).toBeNull(); // (a process the signal ended has no exit code either)
    expect((await presentedCertificate(port)).serialNumber).toBe(before);
  });
});

describe('23. the wrong port: a TLS client on a plain port', () => {
  test('when a TLS client connects to DEVICE_PORT, then it is closed at once and the log says TLS devices use DEVICE_TLS_PORT; on the plain MQTT port it is closed too; the server goes on', async () => {
    const child = await startChild(childEnv({ DEVICE_TLS_PORT: '0' }));
    for (const port of [child.devicePort, ports(child).mqtt]) {
      const t0 = Date.now();
      const err = await new Promise<Error>((resolve) => {
        const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
        s.once('secureConnect', () => resolve(new Error('handshake succeeded')));
        s.once('error', resolve);
        s.once('close', () => resolve(new Error('closed')));
      });
      expect(err.message).not.toBe('handshake succeeded');
      expect(Date.now() - t0).toBeLessThan(1500);
    }
    await until(() => child.logs.some((l) => l.msg === 'a TLS client connected to the plain device port; TLS devices use DEVICE_TLS_PORT'), 3000, 'the log line');
    expect((await fetch(`${child.baseUrl}/healthz`)).status).toBe(200);
  });
});

describe('28. the own CA at start', () => {
  test('when the server starts on a terminal, then the banner shows the TLS ports and the CA fingerprint, and DATA_DIR/tls/ holds the keys with mode 0600', async () => {
    const env = childEnv({ DEVICE_TLS_PORT: '0', MQTT_TLS_PORT: '0', LOG_FORMAT: 'pretty' });
    const proc = spawn(process.execPath, [MAIN], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      await until(() => out.includes('Press Ctrl-C to stop.'), 20_000, 'the banner');
      const tlsLine = /^ {2}TLS {7}lines on port (\d+), MQTT port (\d+)$/m.exec(out);
      expect(tlsLine).not.toBeNull();
      const ca = fs.readFileSync(tlsFiles(env.DATA_DIR!).caCert, 'utf8');
      const sha = new crypto.X509Certificate(ca).fingerprint256;
      expect(out).toMatch(new RegExp(`^ {2}CA {8}SHA-256 ${sha}  \\(npx sockpit tls ca prints it\\)$`, 'm'));
      // The ports the banner names speak TLS with that CA.
      for (const port of [Number(tlsLine![1]), Number(tlsLine![2])]) {
        const s = await TlsDevice.connect(port, { ca });
        expect(s.socket.authorized).toBe(true);
        s.close();
      }
      const f = tlsFiles(env.DATA_DIR!);
      expect(fs.statSync(f.caKey).mode & 0o777).toBe(0o600);
      expect(fs.statSync(f.key).mode & 0o777).toBe(0o600);
    } finally {
      proc.kill('SIGKILL');
    }
  });
});

/** Engine-free and heavy: skipped in the postgres project, where it would only repeat itself. */
const describeEngineFree = testDatabaseUrl() ? describe.skip : describe;

describeEngineFree('24. 1,000 half-open TLS handshakes', () => {
  /** A ClientHello as Node's client sends it first. */
  function clientHello(): Promise<Buffer> {
    return new Promise((resolve) => {
      const catcher = net.createServer((s) =>
        s.once('data', (d: Buffer) => {
          resolve(d);
          s.destroy();
          catcher.close();
        }),
      );
      catcher.listen(0, '127.0.0.1', () => tls.connect({ host: '127.0.0.1', port: (catcher.address() as net.AddressInfo).port, servername: 'localhost', rejectUnauthorized: false }).on('error', () => {}));
    });
  }

  test('when 1,000 connections start a handshake and never finish it, then RSS growth stays bounded, a good device still connects meanwhile, and every one is dropped after the handshake bound', async () => {
    const env = childEnv({ DEVICE_TLS_PORT: '0', LOG_LEVEL: 'warn' });
    const token = addDeviceCli(env, 'good');
    const child = await startChild({ ...env, LOG_LEVEL: 'info' });
    const port = ports(child).tcpTls;
    const ca = fs.readFileSync(tlsFiles(env.DATA_DIR!).caCert, 'utf8');
    // A first handshake warms up what every connection shares (the context, the code paths).
    (await TlsDevice.hello(port, { ca }, 'good', token)).close();
    await sleep(300);
    const baseline = child.rss();
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, child.rss())), 20);

    const hello = await clientHello();
    const N = 1000;
    const sockets: net.Socket[] = [];
    const closed: Promise<number>[] = [];
    const t0 = Date.now();
    try {
      // DEVICE_MAX_PER_IP is 100 by default: ten source addresses of 100 each, the attacker's best.
      for (let i = 0; i < N; i++) {
        const s = net.connect({ host: '127.0.0.1', port, localAddress: `127.0.0.${2 + Math.floor(i / 100)}` });
        s.on('error', () => {});
        s.on('data', () => {}); // the ServerHello, read and ignored
        // Half send a whole ClientHello (the server answers and waits for the client's Finished), half a part of one.
        s.once('connect', () => s.write(i % 2 === 0 ? hello : hello.subarray(0, 60)));
        closed.push(new Promise((resolve) => s.once('close', () => resolve(Date.now() - t0))));
        sockets.push(s);
        if (i % 100 === 99) await sleep(20);
      }
      await sleep(1500);
      const open = sockets.filter((s) => !s.destroyed).length;
      expect(open).toBe(N); // all held, none refused: each address has exactly its share

      // Meanwhile a good device from its own address connects and is answered.
      const good = await TlsDevice.hello(port, { ca }, 'good', token);
      await good.roundTrip();
      const during = peak - baseline;

      const times = await Promise.all(closed);
      expect(Math.max(...times)).toBeLessThan(HANDSHAKE_TIMEOUT_MS + 4000);
      await good.roundTrip();
      good.close();
      process.stdout.write(`half-open TLS: baseline RSS ${(baseline / MB).toFixed(1)} MB, peak growth ${(during / MB).toFixed(1)} MB for ${N} handshakes (${((peak - baseline) / N / 1024).toFixed(1)} KiB each), all closed by ${Math.max(...times)} ms\n`);
      // About 60 KiB each were seen (OpenSSL's handshake state and buffers, the socket): bounded, and gone with the bound.
      expect(during).toBeLessThan(128 * MB);
    } finally {
      clearInterval(sampler);
      for (const s of sockets) s.destroy();
    }
    expect((await fetch(`${child.baseUrl}/healthz`)).status).toBe(200);
  }, 60_000);
});
