/**
 * Which address a real device should dial, for the firmware snippet on the add-device page and
 * the start banner. A device on Wi-Fi cannot reach `localhost` or `127.0.0.1`: those name the
 * device itself.
 */
import net from 'node:net';
import type { NetworkInterfaceInfo } from 'node:os';

/** Stands in for the server's address when this machine has none a device could reach. */
export const HOST_PLACEHOLDER = 'YOUR-SERVER-IP';

export interface DeviceHostChoice {
  host: string;
  /** Where it came from: DEVICE_PUBLIC_HOST, the browser's address bar, this machine's interfaces, or nothing. */
  source: 'setting' | 'browser' | 'network' | 'placeholder';
  /** A plain warning when a real device cannot use `host` as it is (a placeholder or a loopback address). */
  warning: string | null;
}

const loopback = new net.BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');
loopback.addAddress('0.0.0.0', 'ipv4');
loopback.addAddress('::', 'ipv6');

/**
 * True for names and addresses that only ever mean "this machine" (or no machine): localhost,
 * *.localhost, 127.0.0.0/8, ::1 (with or without brackets), and the unspecified 0.0.0.0 and ::.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  const family = net.isIP(h);
  if (family === 0) return false;
  return loopback.check(h, family === 4 ? 'ipv4' : 'ipv6');
}

/** This machine's first IPv4 address that is not loopback, preferring one that is not link-local (169.254/16). */
export function firstNetworkIPv4(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>): string | null {
  const found: string[] = [];
  for (const list of Object.values(interfaces)) {
    for (const i of list ?? []) {
      // `family` was the number 4 before Node 18.4; accept both.
      const v4 = i.family === 'IPv4' || (i.family as unknown) === 4;
      if (v4 && !i.internal && !isLoopbackHost(i.address)) found.push(i.address);
    }
  }
  return found.find((a) => !a.startsWith('169.254.')) ?? found[0] ?? null;
}

/**
 * DEVICE_PUBLIC_HOST when set; else the host the browser used, unless it is a loopback name or
 * address; else this machine's first non-loopback IPv4 address; else a placeholder with a warning.
 */
export function chooseDeviceHost(opts: {
  configured: string | null;
  browserHost: string | null;
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>;
}): DeviceHostChoice {
  const unreachable = (h: string) =>
    `${h} is this computer itself: a real device cannot reach it. Set DEVICE_PUBLIC_HOST to the address devices use to reach this server.`;
  if (opts.configured) {
    return { host: opts.configured, source: 'setting', warning: isLoopbackHost(opts.configured) ? unreachable(opts.configured) : null };
  }
  const browser = opts.browserHost?.trim().replace(/^\[(.*)\]$/, '$1') || null;
  if (browser && !isLoopbackHost(browser)) return { host: browser, source: 'browser', warning: null };
  const lan = firstNetworkIPv4(opts.interfaces);
  if (lan) return { host: lan, source: 'network', warning: null };
  return {
    host: HOST_PLACEHOLDER,
    source: 'placeholder',
    warning:
      `This computer has no network address a device could reach, so the snippet says ${HOST_PLACEHOLDER}: ` +
      'replace it with the address of the computer running sockpit (not 127.0.0.1 or localhost), or set DEVICE_PUBLIC_HOST.',
  };
}
