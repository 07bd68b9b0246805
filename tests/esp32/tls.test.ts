/**
 * The ESP32 firmware's core (host build, mbedtls) over TLS, as the board does with
 * WiFiClientSecure and a CA in config.h (docs/security.md; SPEC's DEVICE_TLS_PORT): against a
 * node:tls server that speaks the line protocol, with a test CA and server certificates made by
 * the openssl command line for each run. A good CA connects; a CA that did not sign the server's
 * certificate, or a certificate for another name, is refused by the device before it says
 * anything; and with a CA set, a plain TCP server on that port never sees the token.
 *
 * Skips itself when the host program is not built (`make -C esp32 host`), unless
 * ESP32_HOST_REQUIRED=1, in which case a missing program is a failure.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { built, FakeConn, FakeServer, HostDevice, HOST_BIN, Msg, required, SMALL_STACK_KIB } from './host-device';

if (!built && required) {
  test('the ESP32 host program is built (ESP32_HOST_REQUIRED=1)', () => {
    throw new Error(`${HOST_BIN} is missing: run \`make -C esp32 host\` first`);
  });
}

interface Pki {
  dir: string;
  caPem: string;
  wrongCaPem: string;
  key: Buffer;
  localhostCert: Buffer;
  otherNameCert: Buffer;
}

/** A test CA, a certificate for localhost and one for other.example (both signed by it), and an unrelated CA. */
function makePki(): Pki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-tls-'));
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=sockpit test CA');
  openssl('req', '-x509', ...ec, '-keyout', f('wrong-ca.key'), '-out', f('wrong-ca.pem'), '-days', '2', '-subj', '/CN=another CA');
  openssl('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=sockpit server');
  for (const [name, san] of [
    ['localhost', 'DNS:localhost'],
    ['other', 'DNS:other.example'],
  ] as const) {
    fs.writeFileSync(f(`${name}.ext`), `subjectAltName=${san}\n`);
    openssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-out', f(`${name}.pem`), '-days', '2', '-extfile', f(`${name}.ext`));
  }
  return {
    dir,
    caPem: f('ca.pem'),
    wrongCaPem: f('wrong-ca.pem'),
    key: fs.readFileSync(f('server.key')),
    localhostCert: fs.readFileSync(f('localhost.pem')),
    otherNameCert: fs.readFileSync(f('other.pem')),
  };
}

const TOKEN = 'tls-secret-token-42';
// base64 of '{"type":"hello"', the start of the device's first line.
const HELLO_B64 = Buffer.from('{"type":"hello"').toString('base64').slice(0, 18);

// No storage is involved: a second run in the PostgreSQL project would prove nothing.
const runIt = built && !process.env.SOCKPIT_TEST_DATABASE_URL;

(runIt ? describe : describe.skip)(`ESP32 firmware core (host build, ${SMALL_STACK_KIB} KiB stack) over TLS`, () => {
  let pki: Pki;
  const servers: FakeServer[] = [];
  const devices: HostDevice[] = [];

  beforeAll(() => {
    pki = makePki();
  });

  afterEach(async () => {
    await Promise.all(devices.splice(0).map((d) => d.stop()));
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  afterAll(() => {
    fs.rmSync(pki.dir, { recursive: true, force: true });
  });

  async function server(onMessage: (conn: FakeConn, msg: Msg) => void, cert: Buffer | null): Promise<FakeServer> {
    const s = new FakeServer(onMessage, cert ? { tls: { key: pki.key, cert } } : {});
    await s.listen();
    servers.push(s);
    return s;
  }

  function device(port: number, ca: string, host = 'localhost'): HostDevice {
    const d = new HostDevice(['--host', host, '--port', String(port), '--id', 'tls-dev', '--token', TOKEN, '--ca', ca, '--interval-ms', '1000'], {
      stackKib: SMALL_STACK_KIB,
    });
    devices.push(d);
    return d;
  }

  const welcome = (conn: FakeConn, msg: Msg) => {
    if (msg.type === 'hello') conn.send({ type: 'welcome', device: msg.device, time: Date.now() });
  };

  test('with the CA that signed the server certificate, the device connects over TLS, is welcomed and obeys commands', async () => {
    const s = await server((conn, msg) => {
      welcome(conn, msg);
      if (msg.type === 'hello') conn.send({ type: 'fromservertonode', action: 'togglerele', id: 'over-tls' });
    }, pki.localhostCert);
    const dev = device(s.port, pki.caPem);
    await dev.waitFor(/Connected over TLS, the server's certificate checked\. Saying hello as "tls-dev"/, 10_000);
    await dev.waitFor(/The server welcomed us: online\./, 10_000);
    await s.until('the ack', () => s.conns.some((c) => c.messages.some((m) => m.type === 'ack' && m.id === 'over-tls')));
    expect(s.conns[0]!.messages[0]).toMatchObject({ type: 'hello', device: 'tls-dev', token: TOKEN });
    // The log names the CA as the dashboard shows it: its SHA-256 fingerprint.
    const fingerprint = new X509Certificate(fs.readFileSync(pki.caPem)).fingerprint256;
    expect(dev.log).toContain(`TLS only: the server must show a certificate for "localhost" from the CA with SHA-256 ${fingerprint}.`);
    expect(dev.log).toMatch(/Connecting to the sockpit server at localhost:\d+ \(TLS\) \.\.\./);
  });

  test('with a CA that did not sign the server certificate, the device refuses the server and says nothing', async () => {
    const s = await server(welcome, pki.localhostCert);
    const dev = device(s.port, pki.wrongCaPem);
    await dev.waitFor(/but TLS failed \(the server's certificate is not from this CA\): is the CA the server's.*Next try in/, 10_000, 2);
    expect(s.conns).toHaveLength(0); // no handshake ever completed
    expect(s.handshakeErrors.length).toBeGreaterThanOrEqual(1);
    expect(dev.log).not.toMatch(/Saying hello|welcomed/);
  });

  test('when the server certificate names another host, the device refuses it', async () => {
    const s = await server(welcome, pki.otherNameCert);
    const dev = device(s.port, pki.caPem);
    await dev.waitFor(/but TLS failed \(the server's certificate does not name this host\): is the CA the server's, and is "localhost" a name in its certificate\?/, 10_000);
    expect(s.conns).toHaveLength(0);
    expect(dev.log).not.toMatch(/Saying hello|welcomed/);
  });

  test('with a CA set, the token never crosses in clear text: a plain TCP server on that port sees only TLS handshakes', async () => {
    // A plain server that answers anything with a plain welcome, as an old server on the port would.
    const s = await server((conn) => conn.send({ type: 'welcome' }, 'json'), null);
    const dev = device(s.port, pki.caPem);
    await dev.waitFor(/but TLS failed/, 15_000, 2);
    expect(s.conns.length).toBeGreaterThanOrEqual(2);
    for (const c of s.conns) {
      const bytes = Buffer.from(c.raw, 'latin1');
      expect(bytes[0]).toBe(0x16); // a TLS handshake record: the ClientHello
      expect(c.raw).not.toContain(TOKEN);
      expect(c.raw).not.toContain(Buffer.from(TOKEN).toString('base64').slice(0, 16));
      expect(c.raw).not.toContain(HELLO_B64);
      expect(c.raw).not.toContain('"hello"');
    }
    expect(dev.log).not.toMatch(/Saying hello|welcomed/);
  });
});
