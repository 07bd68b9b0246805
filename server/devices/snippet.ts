/** What the page shows a person who just added a device: the firmware's config and a simulator line. */

export interface FirmwareSnippetOptions {
  id: string;
  token: string;
  /** The address a device should dial (server/web/device-host.ts chooses it). */
  host: string;
  /** The server's DEVICE_PORT. */
  port: number;
  /** A plain warning about `host` (say, that it is only a placeholder), put as a comment above SERVER_HOST. */
  hostNote?: string | null;
  /**
   * The server's CA (PEM, and its SHA-256 fingerprint as the page shows it). Given, the config
   * uses TLS: the CA goes into config.h and SERVER_PORT is the TLS port.
   */
  ca?: { pem: string; sha256: string } | null;
  /** DEVICE_TLS_PORT, used when `ca` is given (default 7443). */
  tlsPort?: number;
}

const DEFAULT_TLS_PORT = 7443;

/**
 * A C string literal for `value`: quotes, backslashes and control characters escaped, so that no
 * id, token or host can end the string early or break the line. Octal escapes (always three
 * digits) cannot swallow the characters after them, as \x escapes would; "??" is split so that no
 * trigraph can form under a strict -std=c++11.
 */
function cString(value: string): string {
  return `"${cStringBody(value)}"`;
}

function cStringBody(value: string): string {
  let out = '';
  for (const ch of Buffer.from(value, 'utf8')) {
    if (ch === 0x22) out += '\\"';
    else if (ch === 0x5c) out += '\\\\';
    else if (ch === 0x3f && out.endsWith('?')) out += '\\?';
    else if (ch < 0x20 || ch >= 0x7f) out += '\\' + ch.toString(8).padStart(3, '0');
    else out += String.fromCharCode(ch);
  }
  return out;
}

/** The PEM as a macro of string literals, one line each, so config.h stays readable. */
function caMacro(pem: string): string[] {
  const lines = pem
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  // An empty CA would leave a device that cannot connect, or worse, one built without TLS.
  if (!lines.some((l) => l.startsWith('-----BEGIN CERTIFICATE-----'))) throw new Error('firmwareSnippet: ca.pem holds no certificate');
  return ['#define SERVER_CA \\', ...lines.map((l, i) => `  "${cStringBody(l)}\\n"${i < lines.length - 1 ? ' \\' : ''}`)];
}

/**
 * `//` comment lines for free text: one per line of the text, control characters dropped, and no
 * backslash at a line's end (it would splice the next line of config.h into the comment), nor a
 * "??/" that a strict compiler reads as one.
 */
function comment(text: string): string[] {
  return text
    .split(/\r?\n|\r/)
    .map((line) => line.replace(/[\u0000-\u001f\u007f]/g, ' ').replace(/\?(?=\?)/g, '? ').replace(/[\s\\]+$/, ''))
    .filter((line) => line.length > 0)
    .map((line) => `// ${line}`);
}

/**
 * A complete config.h for the firmware (esp32/sockpit-device/config.example.h, same settings in
 * the same order) with this device's id, token and server filled in. It compiles with the sketch
 * as it is (tests/esp32/snippet.test.ts proves that); only the Wi-Fi name and password are left
 * as placeholders, which the board names in its log at start until they are set.
 */
export function firmwareSnippet(opts: FirmwareSnippetOptions): string {
  const { id, token, host, hostNote, ca } = opts;
  const port = ca ? (opts.tlsPort ?? DEFAULT_TLS_PORT) : opts.port;
  const tls = ca
    ? [
        '',
        '// TLS: the device speaks only TLS to the server, and refuses a server whose certificate is not',
        '// from this CA or does not name SERVER_HOST (esp32/README.md, "TLS"). Its SHA-256 fingerprint',
        '// is the one the dashboard shows.',
        `#define SERVER_CA_SHA256 ${cString(ca.sha256)}`,
        ...caMacro(ca.pem),
      ]
    : [];
  return [
    '// sockpit-device configuration: save as config.h next to sockpit-device.ino (esp32/sockpit-device/),',
    '// set your Wi-Fi name and password, and upload. Keep it private: it holds the device token.',
    '#pragma once',
    '',
    '// Your Wi-Fi network (2.4 GHz: the ESP32 cannot join 5 GHz networks).',
    '#define WIFI_SSID "your-wifi-name"',
    '#define WIFI_PASSWORD "your-wifi-password"',
    '',
    ca ? '// The sockpit server and its TLS device port (DEVICE_TLS_PORT).' : '// The sockpit server and its device port (DEVICE_PORT).',
    ...(hostNote ? comment(hostNote) : []),
    `#define SERVER_HOST ${cString(host)}`,
    `#define SERVER_PORT ${port}`,
    '',
    '// This device. The token is shown only once; a new one: npx sockpit device token ID',
    `#define DEVICE_ID ${cString(id)}`,
    `#define DEVICE_TOKEN ${cString(token)}`,
    ...tls,
    '',
    '// Optional; these are the defaults (esp32/README.md explains each).',
    '// The relay: unset, RELAY_PIN is the chip\'s default (26 on the ESP32, 4 on the S2, S3 and C3).',
    '// #define RELAY_PIN 26',
    '#define RELAY_ACTIVE_LOW true',
    '#define REPORT_INTERVAL_MS 5000',
    '// The relay at power-on: POWER_ON_OFF, POWER_ON_ON, or POWER_ON_LAST (as before the restart).',
    '#define POWER_ON_STATE POWER_ON_OFF',
    '// Restart after this long without the server (0: never), and when the loop hangs this long.',
    '#define REBOOT_TIMEOUT_MS (30UL * 60UL * 1000UL)',
    '#define WATCHDOG_TIMEOUT_S 60',
    '#define CONNECT_TIMEOUT_MS 5000',
    '',
  ].join('\n');
}

export function simulateLine(id: string, token: string, host: string, port: number): string {
  // `--token=` because a token may start with "-", which would read as another option.
  return `npx sockpit simulate --id ${id} --token=${token} --host ${host} --port ${port}`;
}
