/**
 * The device-add page with TLS on (server/web/pages.ts, views/admin-devices.ejs; docs/security.md,
 * "Encrypted device connections"): the config.h it gives carries the CA and the TLS port, the page
 * shows the CA's SHA-256 fingerprint, and a device set up from exactly what the page says connects.
 */
import { execFileSync } from 'node:child_process';
import { closeAllServers, CookieJar, createUserAndLogin, metric, postForm, startServer, TestServer } from '../support/server';
import { TlsDevice } from '../support/tls';
import { cli, killCliChildren, spawnCli } from '../support/cli';
import { ensureBuilt, until } from '../support/child';

beforeAll(() => ensureBuilt()); // the CLI runs from dist/

afterEach(async () => {
  killCliChildren();
  await closeAllServers();
});

const unescape = (html: string) => html.replace(/&#34;|&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

interface Shown {
  snippet: string;
  simulate: string;
  fingerprint: string | null;
  caPem: string | null;
  html: string;
}

/** Adds a device through the page as an admin would; returns what the page shows. */
async function addThroughPage(server: TestServer, id: string): Promise<Shown> {
  const jar = new CookieJar();
  for (const c of (await createUserAndLogin(server)).split('; ')) jar.store({ headers: { getSetCookie: () => [c] } } as unknown as Response);
  const res = await postForm(server.baseUrl, '/admin/devices', '/admin/devices', { id, name: '' }, jar);
  expect(res.status).toBe(201);
  const html = await res.text();
  const block = (elementId: string) => {
    const m = new RegExp(`id="${elementId}"[^>]*>([\\s\\S]*?)</(pre|p)>`).exec(html);
    return m ? unescape(m[1]!) : null;
  };
  return { snippet: block('created-snippet')!, simulate: block('created-simulate')!, fingerprint: block('created-ca-fingerprint'), caPem: block('created-ca'), html: unescape(html.replace(/<[^>]+>/g, '')) };
}

/** A `#define NAME "…"` of config.h, as the C compiler reads the literal (octal escapes included). */
function define(snippet: string, name: string): string {
  const m = new RegExp(`^#define ${name} "((?:[^"\\\\]|\\\\.)*)"$`, 'm').exec(snippet);
  if (!m) throw new Error(`no ${name} in config.h`);
  return cString(m[1]!);
}

function cString(body: string): string {
  return body.replace(/\\([0-7]{3}|.)/g, (_, e: string) => (e.length === 3 ? String.fromCharCode(parseInt(e, 8)) : e === 'n' ? '\n' : e));
}

/** SERVER_CA: one string literal a line after `#define SERVER_CA \`, joined as the compiler does. */
function serverCa(snippet: string): string | null {
  const lines = snippet.split('\n');
  const at = lines.indexOf('#define SERVER_CA \\');
  if (at < 0) return null;
  let pem = '';
  for (const line of lines.slice(at + 1)) {
    const m = /^\s+"((?:[^"\\]|\\.)*)"( \\)?$/.exec(line);
    if (!m) break;
    pem += cString(m[1]!);
    if (!m[2]) break;
  }
  return pem;
}

describe('the device-add page with TLS on', () => {
  test("when an admin adds a device, then config.h connects to DEVICE_TLS_PORT with the CA `npx sockpit tls ca` prints, and the page shows that CA's SHA-256 fingerprint", async () => {
    const server = await startServer({ deviceTlsPort: 0 });
    const printed = (await cli(server, ['tls', 'ca'])).stdout;
    const fromOpenssl = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256'], { input: printed, encoding: 'utf8' }).trim().replace(/^sha256 Fingerprint=/, '');
    const shown = await addThroughPage(server, 'greenhouse');

    expect(shown.fingerprint).toBe(`SHA-256 ${fromOpenssl}`);
    expect(shown.caPem).toBe(printed);
    expect(shown.snippet).toContain(`#define SERVER_PORT ${server.tlsPorts.tcp}`);
    expect(define(shown.snippet, 'SERVER_CA_SHA256')).toBe(fromOpenssl);
    expect(serverCa(shown.snippet)).toBe(printed);
    // The plain port stays for firmware without TLS, and the page says where.
    expect(shown.html).toContain(`connects in plain text to port ${server.devicePort}`);

    // A device built from this config.h connects: its CA, its port, its id and token, and the name
    // it dials (SERVER_HOST) is one the server's certificate carries.
    const host = define(shown.snippet, 'SERVER_HOST');
    const device = await TlsDevice.hello(server.tlsPorts.tcp, { ca: serverCa(shown.snippet)!, servername: host }, define(shown.snippet, 'DEVICE_ID'), define(shown.snippet, 'DEVICE_TOKEN'));
    await device.roundTrip();
    device.close();
  });

  test('when TLS is off (DEVICE_TLS_PORT=off, MQTT_TLS_PORT=off), then config.h is the plain one and the page shows no CA', async () => {
    const server = await startServer();
    const shown = await addThroughPage(server, 'plain-one');
    expect(shown.snippet).toContain(`#define SERVER_PORT ${server.devicePort}`);
    expect(serverCa(shown.snippet)).toBeNull();
    expect(shown.snippet).not.toContain('SERVER_CA_SHA256');
    expect(shown.fingerprint).toBeNull();
  });

  test('when DEVICE_PLAINTEXT=false, then neither config.h nor the simulator line names a plain port, and the simulator line speaks TLS', async () => {
    const server = await startServer({ devicePlaintext: false, deviceTlsPort: 0, devicePort: 7999 });
    const shown = await addThroughPage(server, 'tls-only');
    expect(shown.snippet).toContain(`#define SERVER_PORT ${server.tlsPorts.tcp}`);
    expect(shown.html).not.toContain('connects in plain text');
    expect(shown.simulate).toMatch(new RegExp(`--port ${server.tlsPorts.tcp} --tls$`));
    // And it works as the page gives it, run on this machine.
    const sim = spawnCli(server, shown.simulate.replace(/^npx sockpit /, '').split(' '), { stdio: 'ignore' });
    try {
      await until(async () => (await metric(server, 'sockpit_devices_online')) === 1, 15_000, 'the simulator to come online over TLS');
    } finally {
      sim.kill('SIGKILL');
    }
  });
});
