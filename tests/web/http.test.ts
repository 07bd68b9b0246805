/**
 * Cases 11-12 of docs/security.md: HTTP headers, errors and limits; device text shown as text.
 * (The browser half of case 12, which fails if a script runs, is tests/e2e/dashboard.e2e.test.ts.)
 */
import { RawDevice } from '../support/device';
import { addDevice, closeAllServers, createUserAndLogin, db, startServer, TestServer } from '../support/server';

afterEach(closeAllServers);

const OWNER = { username: 'owner', password: 'correct horse', role: 'admin' as const };

async function get(server: TestServer, path: string, cookie = ''): Promise<{ status: number; headers: Headers; html: string }> {
  const res = await fetch(server.baseUrl + path, { headers: { cookie }, redirect: 'manual' });
  return { status: res.status, headers: res.headers, html: await res.text() };
}

/** No inline script: every <script> has a src, and no element carries an on* handler or a javascript: URL. */
function inlineScripts(html: string): string[] {
  const found: string[] = [];
  for (const m of html.matchAll(/<script\b[^>]*>/gi)) if (!/\bsrc=/i.test(m[0])) found.push(m[0]);
  for (const m of html.matchAll(/<[a-z][^>]*>/gi)) {
    const attrs = m[0].replace(/"[^"]*"|'[^']*'/g, '""');
    if (/\son[a-z]+\s*=/i.test(attrs)) found.push(m[0]);
  }
  for (const m of html.matchAll(/(?:href|src|action)\s*=\s*["']?\s*javascript:/gi)) found.push(m[0]);
  return found;
}

const STACK = /\bat [\w.<>]+ \(|\bat .+\.[jt]s:\d+:\d+|node_modules\/|Error: .+\n\s+at /;

describe('11. HTTP', () => {
  test('when any page is served, then helmet headers and a CSP without inline script are present, x-powered-by is not, and the HTML has no inline script', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, OWNER);
    await addDevice(server, 'esp-1');
    for (const [path, withCookie] of [
      ['/login', false],
      ['/', true],
      ['/devices/esp-1', true],
      ['/admin/devices', true],
      ['/admin/users', true],
      ['/no/such/page', true],
      ['/healthz', false],
    ] as const) {
      const { headers, html } = await get(server, path, withCookie ? cookie : '');
      const csp = headers.get('content-security-policy') ?? '';
      const scriptSrc = /script-src ([^;]*)/.exec(csp)?.[1] ?? /default-src ([^;]*)/.exec(csp)?.[1] ?? '';
      expect([path, scriptSrc]).toEqual([path, "'self'"]);
      expect(csp).toContain("object-src 'none'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(headers.get('x-powered-by')).toBeNull();
      expect(headers.get('x-content-type-options')).toBe('nosniff');
      expect(headers.get('x-frame-options')).toBe('SAMEORIGIN');
      expect(headers.get('referrer-policy')).toBe('no-referrer');
      expect(headers.get('cross-origin-opener-policy')).toBe('same-origin');
      expect([path, inlineScripts(html)]).toEqual([path, []]);
    }
  });

  test('when a visitor without a session gets a 404 or a refused form, then no session is made for them', async () => {
    const server = await startServer();
    await createUserAndLogin(server, OWNER); // (before the first account, every page leads to /setup)
    for (const path of ['/nope-1', '/nope-2', '/devices/x/nope']) {
      const res = await fetch(server.baseUrl + path, { redirect: 'manual' });
      expect([path, res.status, res.headers.get('set-cookie')]).toEqual([path, 404, null]);
    }
    const refused = await fetch(server.baseUrl + '/logout', { method: 'POST', redirect: 'manual' });
    expect([refused.status, refused.headers.get('set-cookie')]).toEqual([403, null]);
  });

  test('when requests are malformed or a handler fails, then the answer is a short generic page without a stack trace', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, OWNER);
    const bad = async (path: string, init: RequestInit = {}) => {
      const res = await fetch(server.baseUrl + path, { redirect: 'manual', ...init, headers: { cookie, ...(init.headers ?? {}) } });
      const body = await res.text();
      expect([path, body]).not.toEqual([path, expect.stringMatching(STACK)]);
      return res.status;
    };
    expect(await bad('/admin/devices', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"id":' })).toBe(400);
    expect([400, 404]).toContain(await bad('/%E0%A4%A'));
    expect([400, 404]).toContain(await bad('/devices/%E0%A4%A'));
    expect(await bad('/../../etc/passwd')).toBe(404);
    expect(await bad('/devices/' + 'x'.repeat(5000))).toBe(404);
    // A failing handler: storage throws on this one call.
    const storage = server.app.storage;
    const real = storage.listDevices.bind(storage);
    storage.listDevices = () => Promise.reject(new Error('disk on fire at /var/lib/secret.db'));
    try {
      const res = await fetch(server.baseUrl + '/admin/devices', { headers: { cookie } });
      const body = await res.text();
      expect(res.status).toBe(500);
      expect(body).not.toMatch(STACK);
      expect(body).not.toContain('disk on fire');
      expect(body).toContain('Something went wrong on our side.');
    } finally {
      storage.listDevices = real;
    }
  });

  test('when a body is over 16 KiB (form, JSON, or too many fields), then it is refused before any handler runs', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, OWNER);
    const post = async (type: string, body: string) => {
      const res = await fetch(server.baseUrl + '/admin/devices', { method: 'POST', headers: { cookie, 'content-type': type }, body, redirect: 'manual' });
      const text = await res.text();
      expect(text).not.toMatch(STACK);
      return res.status;
    };
    expect(await post('application/x-www-form-urlencoded', 'id=' + 'a'.repeat(17 * 1024))).toBe(413);
    expect(await post('application/json', JSON.stringify({ id: 'a'.repeat(17 * 1024) }))).toBe(413);
    expect(await post('application/x-www-form-urlencoded', Array.from({ length: 200 }, (_, i) => `f${i}=1`).join('&'))).toBe(413);
    expect(await db(server).listDevices()).toEqual([]);
  });
});

describe('12. device text is shown as text (server-rendered pages)', () => {
  const XSS = '<img src=x onerror=alert(1)>';

  test('when an anonymous device uses HTML as its id and in its readings, then the dashboard, device and admin pages escape it', async () => {
    const server = await startServer({ allowAnonymousDevices: true });
    const cookie = await createUserAndLogin(server, OWNER);
    const d = await RawDevice.connect(server.devicePort);
    d.send({ device: XSS, [XSS]: XSS, note: '</script><script>alert(2)</script>', nested: { html: XSS } });
    await d.next((m) => m.type === 'welcome');
    // The reading is on the pages once the writer's batch commits.
    for (let i = 0; i < 50 && !(await db(server).getDevice(XSS))?.latest; i++) await new Promise((r) => setTimeout(r, 50));
    for (const path of ['/', `/devices/${encodeURIComponent(XSS)}`, '/admin/devices']) {
      const { status, html } = await get(server, path, cookie);
      expect([path, status]).toEqual([path, 200]);
      expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
      expect(html).not.toContain('<img src=x');
      expect(html).not.toContain('<script>alert(2)');
      expect([path, inlineScripts(html)]).toEqual([path, []]);
    }
    d.close();
  });
});

describe('pages', () => {
  test('when a page fails, then no x-powered-by header and a CSP without inline scripts', async () => {
    const server = await startServer();
    const res = await fetch(server.baseUrl + '/setup');
    expect(res.headers.get('x-powered-by')).toBeNull();
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await res.text()).not.toMatch(/<script>(?!\s*<\/script>)/);
  });
});
