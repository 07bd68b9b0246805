/** First setup, login and the CSRF token (server/auth/routes.ts, server/auth/session.ts); see docs/security.md cases 5-8. */
import { closeAllServers, CookieJar, createUserAndLogin, db, postForm, startServer } from '../support/server';

afterEach(closeAllServers);

describe('setup and login', () => {
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
    expect((await db(server).getUserByName('owner'))!.role).toBe('admin');
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

  test('when logins keep failing, then they are throttled with 429 but another address can still log in', async () => {
    const server = await startServer({ loginMaxAttempts: 3 });
    await createUserAndLogin(server);
    for (let i = 0; i < 3; i++) await postForm(server.baseUrl, '/login', '/login', { username: 'owner', password: 'bad password' }, new CookieJar());
    const blocked = await postForm(server.baseUrl, '/login', '/login', { username: 'owner', password: 'correct horse' }, new CookieJar());
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
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
    expect(await db(server).getDevice('sneaky')).toBeNull();
    const login = await fetch(server.baseUrl + '/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'username=owner&password=correct+horse', redirect: 'manual' });
    expect(login.status).toBe(403);
  });

});
