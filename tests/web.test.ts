import { closeAllServers, CookieJar, createUserAndLogin, csrfFrom, login, postForm, startServer } from './support/server';

afterEach(closeAllServers);

describe('people (SPEC §2)', () => {
  test('when no user exists, then every page leads to /setup, which creates the owner and is then gone', async () => {
    const server = await startServer();
    const first = await fetch(server.baseUrl + '/', { redirect: 'manual' });
    expect(first.status).toBe(303);
    expect(first.headers.get('location')).toBe('/setup');
    expect((await fetch(server.baseUrl + '/login', { redirect: 'manual' })).headers.get('location')).toBe('/setup');
    const jar = new CookieJar();
    const res = await postForm(server.baseUrl, '/setup', '/setup', { username: 'owner', password: 'correct horse', password2: 'correct horse' }, jar);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/');
    const dash = await fetch(server.baseUrl + '/', { headers: { cookie: jar.header() } });
    expect(dash.status).toBe(200);
    expect(await dash.text()).toContain('data-page="dashboard"');
    expect((await server.app.storage.getUserByName('owner'))!.role).toBe('admin');
    const again = await fetch(server.baseUrl + '/setup', { redirect: 'manual' });
    expect(again.status).toBe(303);
  });

  test('when setup gets a password over 72 bytes, then it is refused with a clear message', async () => {
    const server = await startServer();
    const long = 'é'.repeat(40);
    const res = await postForm(server.baseUrl, '/setup', '/setup', { username: 'owner', password: long, password2: long }, new CookieJar());
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('at most 72 bytes');
  });

  test('when login uses an unknown user or a wrong password, then both get the same status and message', async () => {
    const server = await startServer();
    await createUserAndLogin(server);
    const a = await postForm(server.baseUrl, '/login', '/login', { username: 'nobody', password: 'whatever1' }, new CookieJar());
    const b = await postForm(server.baseUrl, '/login', '/login', { username: 'owner', password: 'wrong pass' }, new CookieJar());
    expect(a.status).toBe(401);
    expect(b.status).toBe(401);
    const msg = (html: string) => /class="[^"]*alert[^"]*"[^>]*>([^<]*)</.exec(html)?.[1]?.trim() ?? html.match(/Wrong user name or password\./)?.[0];
    const [ta, tb] = [await a.text(), await b.text()];
    expect(ta).toContain('Wrong user name or password.');
    expect(msg(ta)).toEqual(msg(tb));
  });

  test('when logins keep failing, then they are throttled with 429 but another address can still log in', async () => {
    const server = await startServer({ loginMaxAttempts: 3 });
    await createUserAndLogin(server);
    for (let i = 0; i < 3; i++) await postForm(server.baseUrl, '/login', '/login', { username: 'owner', password: 'bad password' }, new CookieJar());
    const blocked = await postForm(server.baseUrl, '/login', '/login', { username: 'owner', password: 'correct horse' }, new CookieJar());
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  test('when the session id existed before login, then login gives a new one', async () => {
    const server = await startServer();
    await createUserAndLogin(server);
    const jar = new CookieJar();
    await csrfFrom(server.baseUrl, '/login', jar);
    const before = jar.header();
    await postForm(server.baseUrl, '/login', '/login', { username: 'owner', password: 'correct horse' }, jar);
    expect(jar.header()).not.toEqual(before);
    const old = await fetch(server.baseUrl + '/', { headers: { cookie: before }, redirect: 'manual' });
    expect(old.status).toBe(303);
  });

  test('when a form is posted without its CSRF token, then it is refused', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    const res = await fetch(server.baseUrl + '/admin/devices', {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'id=sneaky',
      redirect: 'manual',
    });
    expect(res.status).toBe(403);
    expect(await server.app.storage.getDevice('sneaky')).toBeNull();
    const login = await fetch(server.baseUrl + '/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'username=owner&password=correct+horse', redirect: 'manual' });
    expect(login.status).toBe(403);
  });

  test('when a body is 1 MB, then it gets 413', async () => {
    const server = await startServer();
    await createUserAndLogin(server);
    const res = await fetch(server.baseUrl + '/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'username=owner&password=' + 'a'.repeat(1024 * 1024),
    });
    expect(res.status).toBe(413);
    expect(await res.text()).not.toMatch(/at .*\.js:\d+/);
  });

  test('when an admin adds a device in the page, then its token, config snippet and simulate line are shown once', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    const jar = new CookieJar();
    jar.store(new Response(null, { headers: { 'set-cookie': cookie } }));
    const res = await postForm(server.baseUrl, '/admin/devices', '/admin/devices', { id: 'kitchen', name: 'Kitchen relay' }, jar);
    expect(res.status).toBe(201);
    const html = await res.text();
    const token = /#define DEVICE_TOKEN &#34;([A-Za-z0-9_-]+)&#34;/.exec(html)?.[1] ?? /--token ([A-Za-z0-9_-]+)/.exec(html)?.[1];
    expect(token).toBeDefined();
    expect(html).toContain(`npx sockpit simulate --id kitchen --token ${token}`);
    const list = await (await fetch(server.baseUrl + '/admin/devices', { headers: { cookie: jar.header() } })).text();
    expect(list).not.toContain(token!);
  });

  test('when a viewer or operator opens the admin pages, then they get 403', async () => {
    const server = await startServer();
    await createUserAndLogin(server);
    const viewer = await createUserAndLogin(server, { username: 'v', password: 'viewer pass', role: 'viewer' });
    const operator = await createUserAndLogin(server, { username: 'o', password: 'operator pass', role: 'operator' });
    for (const cookie of [viewer, operator]) {
      expect((await fetch(server.baseUrl + '/admin/devices', { headers: { cookie } })).status).toBe(403);
      expect((await fetch(server.baseUrl + '/admin/users', { headers: { cookie } })).status).toBe(403);
    }
  });

  test('when an admin changes a role and removes a user, then it takes effect, and the last admin is kept', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    const jar = new CookieJar();
    jar.store(new Response(null, { headers: { 'set-cookie': cookie } }));
    expect((await postForm(server.baseUrl, '/admin/users', '/admin/users', { username: 'ann', password: 'ann password', role: 'viewer' }, jar)).status).toBe(200);
    const ann = (await server.app.storage.getUserByName('ann'))!;
    await postForm(server.baseUrl, '/admin/users', `/admin/users/${ann.id}/role`, { role: 'operator' }, jar);
    expect((await server.app.storage.getUserByName('ann'))!.role).toBe('operator');
    const owner = (await server.app.storage.getUserByName('owner'))!;
    const demote = await postForm(server.baseUrl, '/admin/users', `/admin/users/${owner.id}/role`, { role: 'viewer' }, jar);
    expect(demote.status).toBe(400);
    await postForm(server.baseUrl, '/admin/users', `/admin/users/${ann.id}/remove`, {}, jar);
    expect(await server.app.storage.getUserByName('ann')).toBeNull();
    await expect(login(server, 'ann', 'ann password')).rejects.toThrow();
  });
});

describe('health', () => {
  test('when storage is up, then /healthz and /readyz are ok and /metrics has the gauges', async () => {
    const server = await startServer();
    expect((await fetch(server.baseUrl + '/healthz')).status).toBe(200);
    const ready = await fetch(server.baseUrl + '/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', storage: 'ok' });
    const metrics = await (await fetch(server.baseUrl + '/metrics')).text();
    expect(metrics).toContain('sockpit_devices_online');
    expect(metrics).toContain('sockpit_sockets_connected');
    expect(metrics).toContain('sockpit_device_messages_total');
    expect(metrics).toContain('sockpit_commands_total');
  });

  test('when a page fails, then no x-powered-by header and a CSP without inline scripts', async () => {
    const server = await startServer();
    const res = await fetch(server.baseUrl + '/setup');
    expect(res.headers.get('x-powered-by')).toBeNull();
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await res.text()).not.toMatch(/<script>(?!\s*<\/script>)/);
  });
});
