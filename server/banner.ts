/**
 * The few lines a person at a terminal sees when the server has started: where to go, and where
 * devices connect. A pure function of what the entry point found out, so it is tested as text.
 */

/** One "where devices connect" line: `label` in the left column, `value` beside it. */
export interface BannerLine {
  label: string;
  value: string;
}

export interface BannerInfo {
  /** The page to open, e.g. `http://localhost:3000` (PUBLIC_ORIGIN when set). */
  httpUrl: string;
  /** No user exists yet: every page leads to /setup, which creates the owner account. */
  setupPending: boolean;
  /** The raw TCP device port, as bound; null when plain device ports are off (DEVICE_PLAINTEXT=false). */
  devicePort: number | null;
  /**
   * The address devices on the network dial (DEVICE_PUBLIC_HOST, else this machine's network
   * address); null when none is known or the listener is bound to loopback only.
   */
  deviceHost: string | null;
  /** True when HOST binds the listeners to a loopback address: no other machine can connect. */
  loopbackOnly?: boolean;
  /** More places devices connect (WebSocket URL, MQTT port, TLS ports), in the order given. */
  extra?: readonly BannerLine[];
}

const LABEL_WIDTH = 10;

function line(label: string, value: string): string {
  return `  ${label.padEnd(LABEL_WIDTH)}${value}`;
}

/** The banner as text, ending with a newline. */
export function bannerText(info: BannerInfo): string {
  const url = info.httpUrl.replace(/\/+$/, '');
  const open = info.setupPending
    ? line('Open', `${url}/setup  (no account yet: create the owner account there)`)
    : line('Open', url);
  let tcp = info.devicePort === null ? 'TCP off (DEVICE_PLAINTEXT=false)' : `TCP port ${info.devicePort}`;
  if (info.devicePort === null) {
    // nothing more to say about a port that is off
  } else if (info.loopbackOnly) tcp += ' (this computer only: HOST is a loopback address)';
  else if (info.deviceHost) tcp += `  (from your network: ${info.deviceHost}:${info.devicePort})`;
  const lines = [
    '',
    '  sockpit is running',
    '',
    open,
    line('Devices', tcp),
    ...(info.extra ?? []).map((l) => line(l.label, l.value)),
    '',
    '  Press Ctrl-C to stop.',
    '',
  ];
  return lines.join('\n') + '\n';
}
