/**
 * The firmware snippet after "Add a device" names an address a real device can reach
 * (server/web/device-host.ts): DEVICE_PUBLIC_HOST, else the host the browser used unless it is
 * loopback, else this machine's network address, else a placeholder with a warning.
 * The browser's host is the request's Host header, so these requests go through node:http
 * (fetch does not let a caller set Host).
 */
import http from 'node:http';
import os from 'node:os';
import { firstNetworkIPv4, HOST_PLACEHOLDER } from '../../server/web/device-host';
import { closeAllServers, createUserAndLogin, startServer, TestServer } from '../support/server';

function request(server: TestServer, opts: { path: string; host: string; cookie: string; form?: Record<string, string> }): Promise<{ status: number; body: string }> {
  const body = opts.form ? new URLSearchParams(opts.form).toString() : undefined;
  const url = new URL(server.baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: opts.path,
        method: body === undefined ? 'GET' : 'POST',
        headers: {
          host: opts.host,
          cookie: opts.cookie,
          ...(body === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)) }),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const unescape = (html: string) => html.replace(/&#34;|&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** Adds a device through the page as a browser at `host` would, and returns what the page shows. */
async function addDeviceAs(server: TestServer, cookie: string, host: string, id: string): Promise<{ snippet: string; simulate: string; warning: string | null; hint: string | null }> {
  const page = await request(server, { path: '/admin/devices', host, cookie });
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page.body)?.[1];
  if (!csrf) throw new Error(`no CSRF token on /admin/devices (status ${page.status})`);
  const res = await request(server, { path: '/admin/devices', host, cookie, form: { _csrf: csrf, id, name: '' } });
  expect(res.status).toBe(201);
  const block = (elementId: string) => {
    const m = new RegExp(`id="${elementId}"[^>]*>([\\s\\S]*?)</(pre|p)>`).exec(res.body);
    return m ? unescape(m[1]!) : null;
  };
  return { snippet: block('created-snippet')!, simulate: block('created-simulate')!, warning: block('created-host-warning'), hint: block('created-host-hint') };
}

afterEach(() => closeAllServers());

describe('the firmware snippet names an address a real device can reach', () => {
  test.each(['localhost:3000', '127.0.0.1:3000', '[::1]:3000', 'sockpit.localhost'])(
    'when the browser is at %s, then the snippet does not say 127.0.0.1 or localhost',
    async (host) => {
      const server = await startServer();
      const cookie = await createUserAndLogin(server);
      const shown = await addDeviceAs(server, cookie, host, 'kitchen');
      const expected = firstNetworkIPv4(os.networkInterfaces()) ?? HOST_PLACEHOLDER;
      expect(shown.snippet).toContain(`#define SERVER_HOST "${expected}"`);
      // The port actually bound (the test server asks for any free one).
      expect(shown.snippet).toContain(`#define SERVER_PORT ${server.devicePort}`);
      expect(shown.snippet).not.toMatch(/SERVER_HOST "(127\.\d+\.\d+\.\d+|localhost|::1|[^"]*\.localhost)"/);
      if (expected === HOST_PLACEHOLDER) {
        // No network address on this machine: the page and the snippet say plainly what to do.
        expect(shown.warning).toMatch(/replace it with the address of the computer running sockpit/);
        expect(shown.snippet).toMatch(/^\/\/ .*replace it with the address of the computer running sockpit/m);
      } else {
        expect(shown.warning).toBeNull();
        expect(shown.hint).toContain(`this computer's network address, ${expected}`);
      }
      // The simulator runs beside the browser, so it keeps the address the browser used.
      const browserHost = host.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
      expect(shown.simulate).toContain(`--host ${browserHost} --port ${server.devicePort}`);
    },
  );

  test('when DEVICE_PUBLIC_HOST is set, then it wins over the browser host, for the snippet and the simulator', async () => {
    const server = await startServer({ devicePublicHost: 'devices.example.net' });
    const cookie = await createUserAndLogin(server);
    for (const host of ['localhost:3000', 'sockpit.lan:3000']) {
      const shown = await addDeviceAs(server, cookie, host, `dev-${host.split('.')[0]!.split(':')[0]}`);
      expect(shown.snippet).toContain('#define SERVER_HOST "devices.example.net"');
      expect(shown.simulate).toContain('--host devices.example.net');
      expect(shown.warning).toBeNull();
      expect(shown.hint).toBeNull();
      expect(shown.snippet).not.toContain('cannot reach');
    }
  });

  test('when DEVICE_PUBLIC_HOST itself is a loopback address, then it is used but the page warns that a real device cannot reach it', async () => {
    const server = await startServer({ devicePublicHost: '127.0.0.1' });
    const cookie = await createUserAndLogin(server);
    const shown = await addDeviceAs(server, cookie, 'localhost:3000', 'kitchen');
    expect(shown.snippet).toContain('#define SERVER_HOST "127.0.0.1"');
    expect(shown.warning).toMatch(/a real device cannot reach it/);
    // The warning goes into config.h too, as a comment right above SERVER_HOST.
    const lines = shown.snippet.split('\n');
    const at = lines.indexOf('#define SERVER_HOST "127.0.0.1"');
    expect(lines[at - 1]).toMatch(/^\/\/ 127\.0\.0\.1 is this computer itself: a real device cannot reach it\./);
  });

  test.each([
    ['sockpit.lan:3000', 'sockpit.lan'],
    ['192.168.1.20:3000', '192.168.1.20'],
    ['[fd00::7]:3000', 'fd00::7'],
    ['iot.example.com', 'iot.example.com'],
  ])('when the browser is at %s, then that host is used as it is', async (host, expected) => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    const shown = await addDeviceAs(server, cookie, host, 'kitchen');
    expect(shown.snippet).toContain(`#define SERVER_HOST "${expected}"`);
    expect(shown.simulate).toContain(`--host ${expected} --port ${server.devicePort}`);
    expect(shown.warning).toBeNull();
    expect(shown.hint).toBeNull();
  });

  test('when a token is rotated, then the new snippet follows the same rule', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    await addDeviceAs(server, cookie, 'sockpit.lan', 'kitchen');
    const page = await request(server, { path: '/admin/devices', host: 'sockpit.lan', cookie });
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.body)![1]!;
    const res = await request(server, { path: '/admin/devices/kitchen/token', host: 'sockpit.lan', cookie, form: { _csrf: csrf } });
    expect(res.status).toBe(200);
    expect(unescape(res.body)).toContain('#define SERVER_HOST "sockpit.lan"');
  });
});
