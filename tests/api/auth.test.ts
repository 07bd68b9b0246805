/**
 * REST API, who may call (docs/api.md, "Authentication"): API keys as their user at request time,
 * the browser session with its CSRF token, keys refused in URLs, key management, and no key in
 * any log line.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { createApp } from '../../server/app';
import { setRole, removeUser } from '../../server/auth/users';
import { addDevice, closeAllServers, login, startServer, TestServer, testConfig } from '../support/server';
import { api, browser, expectProblem, keyFor, uniq, user } from './support';

let server: TestServer;

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await closeAllServers();
});

describe('API keys', () => {
  test('when a request has no credentials, then it is 401 with WWW-Authenticate: Bearer', async () => {
    const r = await api(server, '/api/v1/devices');
    expectProblem(r, 401, /Authorization: Bearer/);
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
  });

  test.each([
    ['an unknown key', 'Bearer spk_' + 'A'.repeat(43)],
    ['something that is no sockpit key', 'Bearer hunter2'],
    ['another scheme', 'Basic dXNlcjpwYXNz'],
    ['an empty bearer', 'Bearer '],
  ])('when the Authorization header carries %s, then it is 401', async (_what, header) => {
    expectProblem(await api(server, '/api/v1/devices', { headers: { authorization: header } }), 401);
  });

  test('when a key is revoked, then its next request is 401', async () => {
    const { key, id } = await keyFor(server, 'viewer');
    expect((await api(server, '/api/v1/devices', { key })).status).toBe(200);
    await server.app.storage.deleteApiKey(id);
    expectProblem(await api(server, '/api/v1/devices', { key }), 401, /revoked/);
  });

  test('when the key\'s user is removed, then the key is 401 on its next request', async () => {
    const { key, user: u } = await keyFor(server, 'operator');
    expect((await api(server, '/api/v1/devices', { key })).status).toBe(200);
    await removeUser(server.app.storage, u);
    expectProblem(await api(server, '/api/v1/devices', { key }), 401, /no longer exists/);
  });

  test('when the key\'s user is demoted, then the key acts with the lower role from the next request on', async () => {
    await user(server, 'admin'); // sockpit keeps at least one admin
    const { key, user: u } = await keyFor(server, 'admin');
    const id = uniq('demoted');
    expect((await api(server, '/api/v1/devices', { key, body: { id } })).status).toBe(201);
    await setRole(server.app.storage, u, 'viewer');
    expectProblem(await api(server, '/api/v1/devices', { key, body: { id: uniq('demoted') } }), 403, /acts as viewer/);
    expectProblem(await api(server, `/api/v1/devices/${id}/commands`, { key, body: { action: 'togglerele' } }), 403, /operator/);
    expect((await api(server, '/api/v1/devices', { key })).status).toBe(200);
  });

  test.each([
    ['?api_key=KEY', (k: string) => `?api_key=${k}`],
    ['?token=KEY', (k: string) => `?token=${k}`],
    ['a key under any name', (k: string) => `?x=${k}`],
    ['a key after a space', (k: string) => `?x=%20${k}`],
    ['a key after "Bearer "', (k: string) => `?auth=Bearer%20${k}`],
    ['a key inside a value', (k: string) => `?format=json,${k}`],
    ['a key as a name', (k: string) => `?${k}`],
  ])('when the key comes in the URL (%s), then it is refused with 400 telling to use the header, even with a good header', async (_what, query) => {
    const { key } = await keyFor(server, 'viewer');
    const r = await api(server, `/api/v1/devices${query(key)}`, { key });
    expectProblem(r, 400, /Authorization: Bearer/);
    expect(r.text).not.toContain(key);
  });

  test.each(['access-token', 'x-api-key', 'X-Api-Key', 'auth_token', 'api_token', 'refresh_token', 'password', 'passwd', 'client.secret', 'credentials', 'session', 'apiKey', 'accessToken', 'auth'])(
    'when the query has a parameter named like a credential (%s), then it is 400 even with a good header',
    async (name) => {
      const { key } = await keyFor(server, 'viewer');
      const r = await api(server, `/api/v1/devices?${name}=abc`, { key });
      expectProblem(r, 400, /Authorization: Bearer/);
    },
  );

  test('when the query has only ordinary parameters (limit, format, from, to, wait), then they are not taken for credentials', async () => {
    const { key } = await keyFor(server, 'viewer');
    expect((await api(server, '/api/v1/devices?limit=5&format=json&from=1&to=2&wait=1&monkey=1&author=x', { key })).status).toBe(200);
  });

  test('when a key is made, then its last-used time is empty until its first request, which sets it', async () => {
    const { key, id } = await keyFor(server, 'viewer');
    expect((await server.app.storage.getApiKey(id))!.lastUsedAt).toBeNull();
    const before = Date.now();
    await api(server, '/api/v1/devices', { key });
    expect((await server.app.storage.getApiKey(id))!.lastUsedAt).toBeGreaterThanOrEqual(before);
  });
});

describe('the browser session', () => {
  test('when a logged-in browser reads with its cookie, then it is 200 without a CSRF token', async () => {
    const b = await browser(server, 'viewer');
    expect((await api(server, '/api/v1/devices', { cookie: b.cookie })).status).toBe(200);
  });

  test('when a cookie-only unsafe request comes without the CSRF token, then it is 403 and nothing happens', async () => {
    const b = await browser(server, 'admin');
    const id = uniq('csrf');
    expectProblem(await api(server, '/api/v1/devices', { cookie: b.cookie, body: { id } }), 403, /CSRF/);
    expectProblem(await api(server, '/api/v1/devices', { cookie: b.cookie, csrf: 'x'.repeat(b.csrf.length), body: { id } }), 403, /CSRF/);
    expect(await server.app.storage.getDevice(id)).toBeNull();
    expect((await api(server, '/api/v1/devices', { cookie: b.cookie, csrf: b.csrf, body: { id } })).status).toBe(201);
  });

  test('when the X-CSRF-Token is non-ASCII (32 bytes of 0xE9), then it is 403, not a 500', async () => {
    const b = await browser(server, 'operator');
    const dev = await addDevice(server, uniq('csrf-bytes'));
    // Sent as latin-1 bytes: 32 characters like the real token, but 64 bytes once read as UTF-8.
    const token = '\u00e9'.repeat(32);
    expectProblem(await api(server, `/api/v1/devices/${dev.id}/commands`, { cookie: b.cookie, csrf: token, body: { action: 'togglerele' } }), 403, /CSRF/);
    expectProblem(await api(server, '/api/v1/keys', { cookie: b.cookie, csrf: token, body: { name: 'x', role: 'viewer' } }), 403, /CSRF/);
    expect(await server.app.storage.listCommands(dev.id, 10)).toEqual([]);
  });

  test('when the session\'s user is an operator, then the session gets the operator\'s rights', async () => {
    const b = await browser(server, 'operator');
    expectProblem(await api(server, '/api/v1/devices', { cookie: b.cookie, csrf: b.csrf, body: { id: uniq('op') } }), 403, /you are operator/);
  });
});

describe('key management (/api/v1/keys, browser session only)', () => {
  test('when a user makes a key in their session, then it is 201 with the key once; it works, is listed without the key, and revoking it stops it', async () => {
    const b = await browser(server, 'operator');
    const made = await api(server, '/api/v1/keys', { cookie: b.cookie, csrf: b.csrf, body: { name: 'cron', role: 'operator' } });
    expect(made.status).toBe(201);
    expect(made.json).toMatchObject({ name: 'cron', role: 'operator', username: b.user.username, key: expect.stringMatching(/^spk_/) });
    const key = made.json.key as string;
    expect((await api(server, '/api/v1/devices', { key })).status).toBe(200);
    const list = await api(server, '/api/v1/keys', { cookie: b.cookie });
    expect(list.json.keys.map((k: { id: string }) => k.id)).toEqual([made.json.id]);
    expect(list.text).not.toContain(key);
    expect((await api(server, `/api/v1/keys/${made.json.id}`, { cookie: b.cookie, csrf: b.csrf, method: 'DELETE' })).status).toBe(204);
    expectProblem(await api(server, '/api/v1/devices', { key }), 401);
  });

  test('when a user asks for a key above their role, then it is 403', async () => {
    const b = await browser(server, 'viewer');
    expectProblem(await api(server, '/api/v1/keys', { cookie: b.cookie, csrf: b.csrf, body: { name: 'x', role: 'admin' } }), 403, /at most/);
  });

  test('when the key body is bad (no name, unknown role), then it is 400', async () => {
    const b = await browser(server, 'admin');
    expectProblem(await api(server, '/api/v1/keys', { cookie: b.cookie, csrf: b.csrf, body: { name: ' ', role: 'viewer' } }), 400, /name/);
    expectProblem(await api(server, '/api/v1/keys', { cookie: b.cookie, csrf: b.csrf, body: { name: 'x', role: 'root' } }), 400, /role/);
  });

  test('when a user lists keys, then they see only their own; an admin sees and can revoke everyone\'s; another user cannot revoke them (404)', async () => {
    const ann = await keyFor(server, 'operator');
    const bob = await browser(server, 'viewer');
    const admin = await browser(server, 'admin');
    const bobsList = await api(server, '/api/v1/keys', { cookie: bob.cookie });
    expect(bobsList.json.keys).toEqual([]);
    expectProblem(await api(server, `/api/v1/keys/${ann.id}`, { cookie: bob.cookie, csrf: bob.csrf, method: 'DELETE' }), 404);
    const all = await api(server, '/api/v1/keys', { cookie: admin.cookie });
    expect(all.json.keys.map((k: { id: string }) => k.id)).toContain(ann.id);
    expect((await api(server, `/api/v1/keys/${ann.id}`, { cookie: admin.cookie, csrf: admin.csrf, method: 'DELETE' })).status).toBe(204);
    expectProblem(await api(server, '/api/v1/devices', { key: ann.key }), 401);
  });

  test('when an API key is used to manage keys, then it is 403: keys are made in the page or the CLI', async () => {
    const { key } = await keyFor(server, 'admin');
    expectProblem(await api(server, '/api/v1/keys', { key }), 403, /page/);
    expectProblem(await api(server, '/api/v1/keys', { key, body: { name: 'x', role: 'viewer' } }), 403);
  });

  test('when someone not logged in opens /api-keys, then they are sent to log in; logged in, they see the page with their keys', async () => {
    const anon = await fetch(server.baseUrl + '/api-keys', { redirect: 'manual' });
    expect(anon.status).toBe(303);
    expect(anon.headers.get('location')).toBe('/login');
    const { user: u } = await keyFor(server, 'viewer');
    const cookie = await login(server, u.username, 'correct horse');
    const page = await fetch(server.baseUrl + '/api-keys', { headers: { cookie } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('viewer key');
    expect(html).toContain('data-page="api-keys"');
  });
});

describe('errors under /api/ are problem documents', () => {
  test('when the path or method is unknown, then it is a 404 problem, not the HTML error page', async () => {
    const { key } = await keyFor(server, 'viewer');
    expectProblem(await api(server, '/api/v1/nothing', { key }), 404);
    expectProblem(await api(server, '/api/v2/devices', { key }), 404);
    expectProblem(await api(server, '/api/v1/devices', { key, method: 'PUT', body: {} }), 404);
  });
});

describe('no key in the logs', () => {
  test('when keys are used, refused, sent in URLs and revoked, then no log line at any level contains a key', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const config = testConfig({ logLevel: 'trace' });
    const dataDir = config.dataDir;
    const app = await createApp(config, { logger: pino({ level: 'trace' }, sink) });
    try {
      const { httpPort } = await app.listen();
      const local = { baseUrl: `http://127.0.0.1:${httpPort}`, app, config, dataDir } as unknown as TestServer;
      const { key, id } = await keyFor(local, 'admin');
      const dev = await addDevice(local, 'logged');
      await api(local, '/api/v1/devices', { key });
      await api(local, `/api/v1/devices?api_key=${key}`);
      await api(local, `/api/v1/devices/${dev.id}/commands`, { key, body: { action: 'togglerele' } });
      await api(local, '/api/v1/devices', { key, raw: '{bad', headers: { 'content-type': 'application/json' } });
      await api(local, '/api/v1/devices', { key: key + 'x' });
      await api(local, `/api/v1/devices/${dev.id}/token`, { key, method: 'POST' });
      await local.app.storage.deleteApiKey(id);
      await api(local, '/api/v1/devices', { key });
    } finally {
      await app.close();
    }
    const all = lines.join('');
    expect(lines.length).toBeGreaterThan(3);
    expect(all).toContain('refused a credential in the URL');
    expect(all).not.toMatch(/spk_[A-Za-z0-9_-]{20,}/);
  });
});
