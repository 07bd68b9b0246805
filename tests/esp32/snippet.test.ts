/**
 * The firmware snippet the page shows after "Add a device" (server/devices/snippet.ts) is a
 * complete config.h: written next to a copy of the sketch, it compiles with the sketch as it is and
 * the board starts with it. The sketch is built for the host against stand-in Arduino headers
 * (esp32/test/build-sketch.sh): that proves it compiles with this config, not that a real core
 * takes it (esp32/README.md, "What was tested").
 *
 * Also here: the compile-time refusals that name their fix (a chip without a default RELAY_PIN, a
 * pin that belongs to the flash, a config.h without a required setting).
 */
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { firmwareSnippet } from '../../server/devices/snippet';
import { built, HOST_BIN, required, ROOT } from './host-device';

const BUILD_SKETCH = path.join(ROOT, 'esp32', 'test', 'build-sketch.sh');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

const dirs: string[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sockpit-sketch-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Builds the sketch with this config.h for a chip-core variant; SYNTAX_ONLY=1 when syntaxOnly. */
async function buildSketch(variant: string, config: string, syntaxOnly = false): Promise<Run & { dir: string }> {
  const dir = tempDir();
  const configPath = path.join(dir, 'config.h');
  fs.writeFileSync(configPath, config);
  const r = await run('bash', [BUILD_SKETCH, variant, configPath, dir], syntaxOnly ? { SYNTAX_ONLY: '1' } : {});
  return { ...r, dir };
}

const example = fs.readFileSync(path.join(ROOT, 'esp32', 'sockpit-device', 'config.example.h'), 'utf8');
/** The names config.h text #defines, outside comments (config.example.h shows the TLS ones in a comment block). */
const settingsOf = (text: string) => [...text.replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/^#define (\w+)/gm)].map((m) => m[1]!);

if (!built && required) {
  test('the ESP32 host program is built (ESP32_HOST_REQUIRED=1)', () => {
    throw new Error(`${HOST_BIN} is missing: run \`make -C esp32 host\` first`);
  });
}

// A g++ and libcjson-dev are there when the host program is built; the build takes a few seconds
// per variant, and proves nothing more the second time on PostgreSQL.
const runIt = built && !process.env.SOCKPIT_TEST_DATABASE_URL;

(runIt ? describe : describe.skip)('the firmware snippet is a complete config.h for the sketch as it is', () => {
  const opts = { id: 'kitchen-relay', token: 'AbC-123_xyz', host: '192.168.1.20', port: 7100 };

  test('it defines every setting config.example.h defines, with this device filled in', () => {
    const snippet = firmwareSnippet(opts);
    const defined = settingsOf(snippet);
    for (const name of settingsOf(example)) expect(defined).toContain(name);
    expect(snippet).toContain('#define SERVER_HOST "192.168.1.20"');
    expect(snippet).toContain('#define SERVER_PORT 7100');
    expect(snippet).toContain('#define DEVICE_ID "kitchen-relay"');
    expect(snippet).toContain('#define DEVICE_TOKEN "AbC-123_xyz"');
    expect(snippet).toContain('#define WIFI_SSID "your-wifi-name"');
    expect(snippet).toContain('#define WIFI_PASSWORD "your-wifi-password"');
  });

  test.each(['esp32-2x', 's3-3x'])('written as config.h, it compiles with the sketch (%s) and the board starts with it', async (variant) => {
    const build = await buildSketch(variant, firmwareSnippet({ ...opts, hostNote: 'Only a placeholder: replace it with the address of the computer running sockpit.' }));
    expect(build.stderr).toBe('');
    expect(build.code).toBe(0);
    const smoke = await run(path.join(build.dir, 'sketch-tests'), ['--smoke']);
    expect(smoke.code).toBe(0);
    expect(smoke.stdout).toMatch(/sockpit device "kitchen-relay" starting \(firmware sockpit-esp32\/[\d.]+, boot #\d+\)\. A reading every 5\.0 s; relay off\./);
    expect(smoke.stdout).toContain(`Relay on GPIO ${variant.startsWith('esp32') ? 26 : 4} (on when LOW). Server 192.168.1.20:7100.`);
    // The Wi-Fi placeholders are named at start, not silently tried.
    expect(smoke.stdout).toContain('config.h still holds a placeholder: set WIFI_SSID, WIFI_PASSWORD and DEVICE_TOKEN');
    expect(smoke.stdout).toMatch(/refused the connection|No answer from/);
  });

  test('the host note is a comment above SERVER_HOST, and no value or note can break out of its string or comment', async () => {
    const tricky = firmwareSnippet({
      id: 'id"with\\quotes',
      token: 'tok??/"; #error injected',
      host: 'host\\',
      port: 7000,
      hostNote: 'line one\\\nline two ??/\r\n#error not a directive */',
    });
    const lines = tricky.split('\n');
    const at = lines.findIndex((l) => l.startsWith('#define SERVER_HOST'));
    expect(lines.slice(at - 3, at)).toEqual(['// line one', '// line two ? ?/', '// #error not a directive */']);
    expect(lines).toContain('#define SERVER_HOST "host\\\\"');
    const build = await buildSketch('esp32-2x', tricky);
    expect(build.stderr).toBe('');
    const smoke = await run(path.join(build.dir, 'sketch-tests'), ['--smoke']);
    expect(smoke.stdout).toContain('sockpit device "id"with\\quotes" starting');
    expect(smoke.stdout).toContain('Server host\\:7000.');
  });
});

(runIt ? describe : describe.skip)('with the server CA, the snippet configures TLS', () => {
  let ca: { pem: string; sha256: string };
  beforeAll(() => {
    const dir = tempDir();
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'ca.key'),
      '-out', path.join(dir, 'ca.pem'), '-days', '2', '-subj', '/CN=sockpit test CA'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const pem = fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8');
    ca = { pem, sha256: new X509Certificate(pem).fingerprint256 };
  });

  test('the CA, its fingerprint and the TLS port go into config.h', () => {
    const snippet = firmwareSnippet({ id: 'd1', token: 't1', host: 'sockpit.lan', port: 7000, ca, tlsPort: 7443 });
    expect(snippet).toContain('#define SERVER_PORT 7443');
    expect(snippet).not.toContain('#define SERVER_PORT 7000');
    expect(snippet).toContain(`#define SERVER_CA_SHA256 "${ca.sha256}"`);
    expect(snippet).toContain('#define SERVER_CA \\\n  "-----BEGIN CERTIFICATE-----\\n" \\\n');
    expect(snippet).toMatch(/"-----END CERTIFICATE-----\\n"\n/);
    // Without tlsPort, the server's default TLS port; without a CA, no TLS at all.
    expect(firmwareSnippet({ id: 'd1', token: 't1', host: 'h', port: 7000, ca })).toContain('#define SERVER_PORT 7443');
    expect(firmwareSnippet({ id: 'd1', token: 't1', host: 'h', port: 7000, ca: null })).not.toContain('SERVER_CA');
    expect(() => firmwareSnippet({ id: 'd1', token: 't1', host: 'h', port: 7000, ca: { pem: '', sha256: 'x' } })).toThrow(/holds no certificate/);
  });

  test.each(['esp32-2x', 's3-3x'])('it compiles with the sketch (%s), and the board starts in TLS-only mode with that CA', async (variant) => {
    const build = await buildSketch(variant, firmwareSnippet({ id: 'tls-relay', token: 'tok', host: 'sockpit.lan', port: 7000, ca, tlsPort: 7443 }));
    expect(build.stderr).toBe('');
    expect(build.code).toBe(0);
    const smoke = await run(path.join(build.dir, 'sketch-tests'), ['--smoke']);
    expect(smoke.code).toBe(0);
    expect(smoke.stdout).toContain(`TLS only: the server must show a certificate for "sockpit.lan" from the CA with SHA-256 ${ca.sha256}.`);
    expect(smoke.stdout).toContain('Server sockpit.lan:7443.');
  });
});

(runIt ? describe : describe.skip)('the sketch refuses a config that cannot work, and names the fix', () => {
  const base = firmwareSnippet({ id: 'd', token: 't', host: '10.0.0.2', port: 7000 });
  const withPin = (pin: number) => base.replace('// #define RELAY_PIN 26', `#define RELAY_PIN ${pin}`);

  test.each([
    ['an ESP32-C6 without RELAY_PIN', 'c6-3x', base, 'No default RELAY_PIN for this chip: add  #define RELAY_PIN <a free output GPIO>  to config.h'],
    ['an ESP32-S3 with RELAY_PIN 26', 's3-3x', withPin(26), 'RELAY_PIN: GPIO 26-32 belong to the flash and PSRAM on the ESP32-S2/S3'],
    ['an ESP32-S2 with RELAY_PIN 30', 's2-2x', withPin(30), 'RELAY_PIN: GPIO 26-32 belong to the flash and PSRAM on the ESP32-S2/S3'],
    ['an ESP32-C3 with RELAY_PIN 26', 'c3-3x', withPin(26), 'RELAY_PIN: the ESP32-C3 has GPIO 0-21 only'],
    ['an ESP32-C3 with RELAY_PIN 14', 'c3-3x', withPin(14), 'RELAY_PIN: GPIO 12-17 belong to the flash on the ESP32-C3'],
    ['an ESP32 with RELAY_PIN 7', 'esp32-2x', withPin(7), 'RELAY_PIN: GPIO 6-11 belong to the flash chip on the ESP32'],
    ['an ESP32 with RELAY_PIN 35', 'esp32-3x', withPin(35), 'RELAY_PIN: the ESP32 has output GPIOs 0-33 only (34-39 are inputs)'],
    ['a config.h without DEVICE_TOKEN', 'esp32-2x', base.replace(/^#define DEVICE_TOKEN .*$/m, ''), 'config.h must define WIFI_SSID, WIFI_PASSWORD, SERVER_HOST, SERVER_PORT, DEVICE_ID and DEVICE_TOKEN'],
  ])('for %s, the build stops with a message that says what to set', async (_what, variant, config, message) => {
    const build = await buildSketch(variant, config, true);
    expect(build.code).not.toBe(0);
    expect(build.stderr).toContain(message);
  });

  test.each(['c6-3x', 's3-3x', 'c3-3x'])('%s with a RELAY_PIN that suits it compiles', async (variant) => {
    const build = await buildSketch(variant, withPin(5), true);
    expect(build.stderr).toBe('');
    expect(build.code).toBe(0);
  });
});
