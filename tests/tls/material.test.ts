/**
 * The certificate the TLS listeners present (server/tls/material.ts; docs/security.md, cases 26-28):
 * the own CA and server certificate in DATA_DIR/tls/ (made once, keys 0600, renewed before they
 * end or when the names change, shared by instances that share the CA files), and TLS_CERT/TLS_KEY
 * (checked at start with one clear error, warned about when out of date, read again on reload()
 * and when the files change, a broken replacement never taking the place of a good certificate).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { createCa, issueServerCert, machineNames } from '../../server/tls/certificates';
import { loadOrCreateCa, TlsMaterial, TlsMaterialOptions, TlsSetupError, tlsFiles } from '../../server/tls/material';
import { until } from '../support/child';
import { certificateFor, writePair } from '../support/tls';

type LogLine = { level: number; msg: string; [k: string]: unknown };

/** A pino logger that keeps its lines for the test to read. */
function memoryLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as LogLine);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

const opened: TlsMaterial[] = [];
async function open(opts: Partial<TlsMaterialOptions> & { dataDir?: string }): Promise<TlsMaterial> {
  const m = await TlsMaterial.open({ dataDir: opts.dataDir ?? tmpDir(), certFile: null, keyFile: null, publicHost: null, log: memoryLog().log, ...opts });
  opened.push(m);
  return m;
}
afterEach(() => {
  for (const m of opened.splice(0)) m.close();
});

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-material-'));
}

const serialOf = (pem: string) => new crypto.X509Certificate(pem).serialNumber;
const mode = (file: string) => fs.statSync(file).mode & 0o777;
/** Resolves when the material says it changed (or after `ms`, with false). */
const changedWithin = (m: TlsMaterial, ms: number) =>
  new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    m.once('changed', () => {
      clearTimeout(t);
      resolve(true);
    });
  });

describe('28. the own CA in DATA_DIR/tls/', () => {
  test('when TLS starts on an empty DATA_DIR, then it makes the CA and a server certificate there, the key files are mode 0600 (the directory 0700), and the next start reuses both', async () => {
    const dataDir = tmpDir();
    const first = await open({ dataDir });
    const f = tlsFiles(dataDir);
    for (const file of [f.caCert, f.caKey, f.cert, f.key]) expect(fs.existsSync(file)).toBe(true);
    expect(mode(f.caKey)).toBe(0o600);
    expect(mode(f.key)).toBe(0o600);
    expect(mode(f.dir)).toBe(0o700);
    expect(first.ca!.pem).toBe(fs.readFileSync(f.caCert, 'utf8'));
    expect(first.certificate).toBe(fs.readFileSync(f.cert, 'utf8'));
    expect(new crypto.X509Certificate(first.certificate).verify(new crypto.X509Certificate(first.ca!.pem).publicKey)).toBe(true);
    first.close();

    const again = await open({ dataDir });
    expect(again.ca!.sha256).toBe(first.ca!.sha256);
    expect(again.certificate).toBe(first.certificate);
    // A renewal writes the key the same way.
    const renewed = await open({ dataDir, renewBeforeDays: 400 });
    expect(serialOf(renewed.certificate)).not.toBe(serialOf(first.certificate));
    expect(mode(f.key)).toBe(0o600);
    expect(fs.readdirSync(f.dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  test('when only ca.pem is left (ca-key.pem lost), then start-up stops with TlsSetupError naming DATA_DIR and both files, and no new CA quietly replaces the one devices trust', async () => {
    const dataDir = tmpDir();
    await (await open({ dataDir })).close();
    const f = tlsFiles(dataDir);
    const before = fs.readFileSync(f.caCert, 'utf8');
    fs.rmSync(f.caKey);
    const err = await TlsMaterial.open({ dataDir, certFile: null, keyFile: null, publicHost: null, log: memoryLog().log }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TlsSetupError);
    expect((err as TlsSetupError).setting).toBe('DATA_DIR');
    expect((err as Error).message).toContain(f.caKey);
    expect(fs.readFileSync(f.caCert, 'utf8')).toBe(before);
  });

  test('when the server certificate is not due, then reload() keeps it; within renewBeforeDays of its end, reload() issues a new one from the same CA and emits changed', async () => {
    const dataDir = tmpDir();
    const m = await open({ dataDir });
    const before = m.certificate;
    const quiet = changedWithin(m, 300);
    await m.reload();
    expect(await quiet).toBe(false);
    expect(m.certificate).toBe(before);

    const due = await open({ dataDir, renewBeforeDays: 400 }); // every certificate (397 days) is due
    const first = due.certificate;
    const changed = changedWithin(due, 5000);
    await due.reload();
    expect(await changed).toBe(true);
    expect(serialOf(due.certificate)).not.toBe(serialOf(first));
    expect(new crypto.X509Certificate(due.certificate).verify(new crypto.X509Certificate(due.ca!.pem).publicKey)).toBe(true);
    expect(due.ca!.sha256).toBe(m.ca!.sha256);
  });

  test('when nobody calls reload(), then the periodic check renews a certificate that is due by itself', async () => {
    const m = await open({ renewBeforeDays: 400, checkEveryMs: 200 });
    const before = serialOf(m.certificate);
    expect(await changedWithin(m, 5000)).toBe(true);
    expect(serialOf(m.certificate)).not.toBe(before);
  });

  test("when the machine's names change (a new address, DEVICE_PUBLIC_HOST), then the next check issues a certificate that covers them", async () => {
    let names = ['localhost', '127.0.0.1'];
    const m = await open({ names: () => names });
    const before = m.certificate;
    await m.reload();
    expect(m.certificate).toBe(before);
    names = [...names, '10.1.2.3', 'sockpit.lan'];
    await m.reload();
    const cert = new crypto.X509Certificate(m.certificate);
    expect(cert.checkIP('10.1.2.3')).toBe('10.1.2.3');
    expect(cert.checkHost('sockpit.lan')).toBe('sockpit.lan');
  });

  test("when a server certificate on disk is not from this CA, or its key is another one's, then it is not served: a new one is made", async () => {
    const dataDir = tmpDir();
    await (await open({ dataDir })).close();
    const f = tlsFiles(dataDir);
    const stranger = await issueServerCert(await createCa(), machineNames(null));
    fs.writeFileSync(f.cert, stranger.certPem);
    const fromStranger = await open({ dataDir });
    expect(new crypto.X509Certificate(fromStranger.certificate).verify(new crypto.X509Certificate(fromStranger.ca!.pem).publicKey)).toBe(true);
    fromStranger.close();
    const good = fs.readFileSync(f.cert, 'utf8');
    fs.writeFileSync(f.key, (await issueServerCert(await loadOrCreateCa(dataDir), ['x'])).keyPem, { mode: 0o600 });
    const crossed = await open({ dataDir });
    expect(serialOf(crossed.certificate)).not.toBe(serialOf(good));
    expect(new crypto.X509Certificate(crossed.certificate).checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(f.key, 'utf8')))).toBe(true);
  });

  test('when DATA_DIR/tls/ disappears while the server runs, then a renewal check makes no new CA and serves nothing from one: it logs why and keeps the certificate the devices trust', async () => {
    const dataDir = tmpDir();
    const { log, lines } = memoryLog();
    const m = await open({ dataDir, log, renewBeforeDays: 400 }); // due at every check
    const before = m.certificate;
    fs.rmSync(tlsFiles(dataDir).dir, { recursive: true });
    await m.reload();
    expect(m.certificate).toBe(before);
    expect(fs.existsSync(tlsFiles(dataDir).caCert)).toBe(false); // no new CA behind the page's back
    expect(lines.find((l) => l.level === 50)?.msg).toBe('could not load the new TLS certificate; keeping the current one');
    // With the directory back (say, a restored backup), renewal goes on from the same CA.
    fs.mkdirSync(tlsFiles(dataDir).dir, { mode: 0o700 });
    await m.reload();
    expect(m.certificate).not.toBe(before);
    expect(new crypto.X509Certificate(m.certificate).verify(new crypto.X509Certificate(m.ca!.pem).publicKey)).toBe(true);
  });

  test('when two instances have copies of the same ca.pem and ca-key.pem, then each makes its own server certificate, signed by that one CA (docs/deploying.md)', async () => {
    const [a, b] = [tmpDir(), tmpDir()];
    const first = await open({ dataDir: a });
    fs.mkdirSync(tlsFiles(b).dir, { recursive: true });
    for (const name of ['caCert', 'caKey'] as const) fs.copyFileSync(tlsFiles(a)[name], tlsFiles(b)[name]);
    const second = await open({ dataDir: b });
    expect(second.ca!.sha256).toBe(first.ca!.sha256);
    expect(serialOf(second.certificate)).not.toBe(serialOf(first.certificate));
    const caKey = new crypto.X509Certificate(first.ca!.pem).publicKey;
    expect(new crypto.X509Certificate(first.certificate).verify(caKey)).toBe(true);
    expect(new crypto.X509Certificate(second.certificate).verify(caKey)).toBe(true);
  });
});

describe('26. TLS_CERT and TLS_KEY that cannot be used', () => {
  let ca: Awaited<ReturnType<typeof createCa>>;
  beforeAll(async () => {
    ca = await createCa();
  });
  const given = (files: { cert: string; key: string }, log = memoryLog().log) => TlsMaterial.open({ dataDir: tmpDir(), certFile: files.cert, keyFile: files.key, publicHost: null, log });
  const failure = async (files: { cert: string; key: string }) => {
    const err = await given(files).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TlsSetupError);
    return err as TlsSetupError;
  };

  test('when a file is missing, a directory, not PEM, or the key is not the one of the certificate, then open() fails with one line naming TLS_CERT or TLS_KEY and the file', async () => {
    const good = writePair(await certificateFor(ca, ['localhost'], -1, 90));
    const other = writePair(await certificateFor(ca, ['localhost'], -1, 90));
    const cases: [string, { cert: string; key: string }, string, RegExp][] = [
      ['no certificate file', { cert: path.join(good.dir, 'nope.pem'), key: good.key }, 'TLS_CERT', /no such file/],
      ['no key file', { cert: good.cert, key: path.join(good.dir, 'nope-key.pem') }, 'TLS_KEY', /no such file/],
      ['a directory as key', { cert: good.cert, key: good.dir }, 'TLS_KEY', /EISDIR|directory/],
      ['a key that is not PEM', { cert: good.cert, key: writePair({ certPem: '', keyPem: 'not a key\n' }).key }, 'TLS_KEY', /is not the private key of TLS_CERT/],
      ['a certificate that is not PEM', { cert: writePair({ certPem: 'garbage\n', keyPem: '' }).cert, key: good.key }, 'TLS_CERT', /is not a PEM certificate/],
      ['the key of another certificate', { cert: good.cert, key: other.key }, 'TLS_KEY', /is not the private key of TLS_CERT/],
    ];
    for (const [what, files, setting, reason] of cases) {
      const err = await failure(files);
      expect({ what, setting: err.setting }).toEqual({ what, setting });
      expect(err.message).toMatch(reason);
      expect(err.message).not.toMatch(/\n/);
      expect(err.message).not.toContain('PRIVATE KEY-----'); // the key never ends up in a message
    }
  });

  test('when TLS_KEY is a passphrase-protected key, then open() fails at once with TLS_KEY (it never waits for a passphrase)', async () => {
    const pair = await certificateFor(ca, ['localhost'], -1, 90);
    const encrypted = crypto.createPrivateKey(pair.keyPem).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' }) as string;
    const files = writePair({ certPem: pair.certPem, keyPem: encrypted });
    const err = await failure(files);
    expect(err.setting).toBe('TLS_KEY');
  });

  test('when TLS_CERT has expired, or is not valid yet, then open() serves it and warns once, plainly', async () => {
    for (const [from, to, words] of [
      [-400, -10, /TLS_CERT has expired/],
      [5, 400, /TLS_CERT is not valid yet/],
    ] as const) {
      const pair = await certificateFor(ca, ['localhost'], from, to);
      const { log, lines } = memoryLog();
      const m = await given(writePair(pair), log);
      opened.push(m);
      expect(m.certificate).toBe(pair.certPem);
      const warnings = lines.filter((l) => l.level === 40);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]!.msg).toMatch(words);
      expect(warnings[0]!.msg).toMatch(/devices will refuse it/);
    }
  });

  test('when the files are replaced by a pair that does not match, then reload() logs why and keeps the current certificate; once the pair matches again, it is taken', async () => {
    const first = await certificateFor(ca, ['localhost'], -1, 90);
    const files = writePair(first);
    const { log, lines } = memoryLog();
    const m = await given(files, log);
    opened.push(m);
    const second = await certificateFor(ca, ['localhost'], -1, 180);
    fs.writeFileSync(files.cert, second.certPem); // the certificate first, its key not yet
    await m.reload();
    expect(m.certificate).toBe(first.certPem);
    expect(lines.find((l) => l.level === 50)).toMatchObject({ msg: 'could not load the new TLS certificate; keeping the current one', err: expect.stringMatching(/^TLS_KEY: /) });
    fs.writeFileSync(files.key, second.keyPem);
    const changed = changedWithin(m, 5000);
    await m.reload();
    expect(await changed).toBe(true);
    expect(m.certificate).toBe(second.certPem);
  });

  test('when the files change on disk and nobody calls reload(), then the watch reads them again within a few seconds', async () => {
    const files = writePair(await certificateFor(ca, ['localhost'], -1, 90));
    const m = await given(files);
    opened.push(m);
    const next = await certificateFor(ca, ['localhost'], -1, 180);
    writePair(next, files.dir);
    await until(() => m.certificate === next.certPem, 8000, 'the watch to read the new files');
  });
});
