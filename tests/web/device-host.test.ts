import type { NetworkInterfaceInfo } from 'node:os';
import { chooseDeviceHost, firstNetworkIPv4, HOST_PLACEHOLDER, isLoopbackHost } from '../../server/web/device-host';

const iface = (address: string, family: 'IPv4' | 'IPv6', internal = false): NetworkInterfaceInfo =>
  ({ address, family, internal, netmask: '', mac: '00:00:00:00:00:00', cidr: null, ...(family === 'IPv6' ? { scopeid: 0 } : {}) }) as NetworkInterfaceInfo;

const LO = { lo: [iface('127.0.0.1', 'IPv4', true), iface('::1', 'IPv6', true)] };
const LAN = { ...LO, eth0: [iface('fe80::1', 'IPv6'), iface('192.168.1.20', 'IPv4')], wlan0: [iface('10.0.0.7', 'IPv4')] };

describe('which address a device should dial', () => {
  test.each(['localhost', 'LOCALHOST', 'localhost.', 'esp.localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '0.0.0.0', '::'])(
    '%s is a loopback (or unspecified) host',
    (h) => expect(isLoopbackHost(h)).toBe(true),
  );

  test.each(['192.168.1.20', 'sockpit.lan', 'localhost.example.com', 'mylocalhost', 'fd00::2', '128.0.0.1'])('%s is not a loopback host', (h) =>
    expect(isLoopbackHost(h)).toBe(false),
  );

  test('the first non-loopback IPv4 address is chosen, in interface order; IPv6 and internal ones are skipped', () => {
    expect(firstNetworkIPv4(LAN)).toBe('192.168.1.20');
    expect(firstNetworkIPv4(LO)).toBeNull();
    expect(firstNetworkIPv4({})).toBeNull();
  });

  test('a link-local IPv4 address is taken only when there is no other', () => {
    expect(firstNetworkIPv4({ eth0: [iface('169.254.3.4', 'IPv4')], wlan0: [iface('10.0.0.7', 'IPv4')] })).toBe('10.0.0.7');
    expect(firstNetworkIPv4({ eth0: [iface('169.254.3.4', 'IPv4')] })).toBe('169.254.3.4');
  });

  test('DEVICE_PUBLIC_HOST wins over everything', () => {
    expect(chooseDeviceHost({ configured: 'gw.example.net', browserHost: 'sockpit.lan', interfaces: LAN })).toEqual({ host: 'gw.example.net', source: 'setting', warning: null });
  });

  test('else the browser host, unless it is loopback', () => {
    expect(chooseDeviceHost({ configured: null, browserHost: 'sockpit.lan', interfaces: LAN })).toMatchObject({ host: 'sockpit.lan', source: 'browser' });
    expect(chooseDeviceHost({ configured: null, browserHost: '[fd00::9]', interfaces: LAN })).toMatchObject({ host: 'fd00::9', source: 'browser' });
    expect(chooseDeviceHost({ configured: null, browserHost: 'localhost', interfaces: LAN })).toMatchObject({ host: '192.168.1.20', source: 'network', warning: null });
  });

  test('when there is no usable address at all, then a placeholder with a plain warning', () => {
    const choice = chooseDeviceHost({ configured: null, browserHost: '127.0.0.1', interfaces: LO });
    expect(choice.host).toBe(HOST_PLACEHOLDER);
    expect(choice.source).toBe('placeholder');
    expect(choice.warning).toContain(HOST_PLACEHOLDER);
    expect(choice.warning).toMatch(/not 127\.0\.0\.1 or localhost/);
    expect(choice.warning).toMatch(/DEVICE_PUBLIC_HOST/);
  });

  test('a loopback DEVICE_PUBLIC_HOST is kept (it was asked for) but warned about', () => {
    const choice = chooseDeviceHost({ configured: 'localhost', browserHost: null, interfaces: LAN });
    expect(choice).toMatchObject({ host: 'localhost', source: 'setting' });
    expect(choice.warning).toMatch(/a real device cannot reach it/);
  });
});
