/**
 * Cases 1-3 of docs/security.md: session fixation, cookie flags and lifetimes, logout.
 * (tests/realtime/sessions.test.ts has case 4, sockets of dead sessions; tests/realtime/auth.test.ts
 * the socket handshake.)
 */
import { SESSION_COOKIE } from '../../server/auth/session';
import { loadConfig } from '../../server/config';
import { closeAllServers, connectSocket, CookieJar, createUserAndLogin, csrfFrom, login, postForm, startServer } from '../support/server';
import { editSession, jarWith, landing, sidOf } from '../support/web';

afterEach(closeAllServers);

const OWNER = { username: 'owner', password: 'correct horse', role: 'admin' as const };

describe('1. session fixation', () => {
  test('when a visitor logs in with a session cookie an attacker planted, then that cookie opens neither the pages nor a socket', async () => {
    const server = await startServer();
    await createUserAndLogin(server, OWNER);
    // The attacker gets a pre-login session (with a CSRF token) and plants its cookie in the victim's browser.
    const victim = new CookieJar();
    await csrfFrom(server.baseUrl, '/login', victim);
    const planted = victim.header();
    expect(planted).toContain(`${SESSION_COOKIE}=`);
    expect((await postForm(server.baseUrl, '/login', '/login', { username: OWNER.username, password: OWNER.password }, victim)).status).toBe(303);
    expect(sidOf(victim.header())).not.toBe(sidOf(planted));
    expect(await landing(server, '/', victim.header())).toBe('200');
    expect(await landing(server, '/', planted)).toBe('303 /login');
    await expect(connectSocket(server, planted)).rejects.toThrow('unauthorized');
  });

  test('when a cookie names a session id the server never issued, then it is ignored and login still issues a new id', async () => {
    const server = await startServer();
    await createUserAndLogin(server, OWNER);
    const forged = `${SESSION_COOKIE}=${encodeURIComponent('s:attacker-chosen-id.forgedsignature')}`;
    expect(await landing(server, '/', forged)).toBe('303 /login');
    const jar = jarWith(forged);
    expect((await postForm(server.baseUrl, '/login', '/login', { username: OWNER.username, password: OWNER.password }, jar)).status).toBe(303);
    expect(sidOf(jar.header())).not.toBe('attacker-chosen-id');
  });
});

describe('2. cookies', () => {
  const setCookieOf = async (res: Response) => {
    await res.arrayBuffer();
    return res.headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`))!;
  };

  test('when the session cookie is set over http, then it is HttpOnly, SameSite=Lax, not Secure, not named connect.sid, expiring after the idle timeout', async () => {
    const server = await startServer();
    await createUserAndLogin(server, OWNER);
    const jar = new CookieJar();
    const token = await csrfFrom(server.baseUrl, '/login', jar);
    const res = await fetch(server.baseUrl + '/login', {
      method: 'POST',
      headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: OWNER.username, password: OWNER.password, _csrf: token }).toString(),
      redirect: 'manual',
    });
    const cookie = await setCookieOf(res);
    expect(SESSION_COOKIE).not.toBe('connect.sid');
    expect(cookie).toMatch(/; HttpOnly/i);
    expect(cookie).toMatch(/; SameSite=Lax/i);
    expect(cookie).not.toMatch(/; Secure/i);
    const expires = Date.parse(/; Expires=([^;]+)/i.exec(cookie)![1]!);
    expect(Math.abs(expires - (Date.now() + server.config.sessionIdleMin * 60_000))).toBeLessThan(60_000);
  });

  test('when PUBLIC_ORIGIN is https, then the session cookie is Secure', async () => {
    const server = await startServer({ publicOrigin: 'https://iot.example.com', trustProxy: true });
    const res = await fetch(server.baseUrl + '/setup', { headers: { 'x-forwarded-proto': 'https' } });
    const cookie = await setCookieOf(res);
    expect(cookie).toMatch(/; Secure/i);
    expect(cookie).toMatch(/; HttpOnly/i);
    expect(cookie).toMatch(/; SameSite=Lax/i);
  });

  test('when a session is older than SESSION_MAX_H (default 8 h), then it is refused even though it was active a moment ago', async () => {
    expect(loadConfig({}).sessionMaxH).toBe(8);
    const server = await startServer();
    const cookie = await createUserAndLogin(server, OWNER);
    expect(await landing(server, '/', cookie)).toBe('200'); // rolling: this just extended the idle timeout
    await editSession(server, sidOf(cookie), (s) => (s.loginAt = Date.now() - 8 * 3_600_000 - 60_000));
    await expect(connectSocket(server, cookie)).rejects.toThrow('unauthorized');
    expect(await landing(server, '/', cookie)).toBe('303 /login');
  });

  test('when the page says its user is active (GET /session/alive), then the idle timeout starts again, for the store and the cookie; without a login it is 401 and makes no session', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, OWNER);
    const sid = sidOf(cookie);
    const storage = server.app.storage;
    // Five seconds of idle time left.
    await editSession(server, sid, () => {}, Date.now() + 5_000);
    expect(await storage.getSession(sid, Date.now() + 10_000)).toBeNull();
    const res = await fetch(server.baseUrl + '/session/alive', { headers: { cookie } });
    expect(res.status).toBe(204);
    const expires = Date.parse(/Expires=([^;]+)/.exec((await setCookieOf(res)) ?? '')![1]!);
    expect(Math.abs(expires - (Date.now() + server.config.sessionIdleMin * 60_000))).toBeLessThan(60_000);
    expect(await storage.getSession(sid, Date.now() + 10_000)).not.toBeNull();
    const anonymous = await fetch(server.baseUrl + '/session/alive');
    expect([anonymous.status, anonymous.headers.get('set-cookie')]).toEqual([401, null]);
  });

  test('when a session has been idle past SESSION_IDLE_MIN, then it is refused', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server, OWNER);
    await editSession(server, sidOf(cookie), () => {}, Date.now() - 1000);
    expect(await landing(server, '/', cookie)).toBe('303 /login');
    await expect(connectSocket(server, cookie)).rejects.toThrow('unauthorized');
  });
});

describe('3. logout', () => {
  test('when one session logs out, then only its sockets are disconnected and the same user’s other session keeps its socket', async () => {
    const server = await startServer();
    await createUserAndLogin(server, OWNER);
    const laptop = jarWith(await login(server, OWNER.username, OWNER.password));
    const phone = await login(server, OWNER.username, OWNER.password);
    const a1 = await connectSocket(server, laptop.header());
    const a2 = await connectSocket(server, laptop.header());
    const b = await connectSocket(server, phone);
    const gone = Promise.all([a1, a2].map((s) => new Promise((r) => s.once('disconnect', r))));
    let bGone = false;
    b.on('disconnect', () => (bGone = true));
    const old = laptop.header();
    expect((await postForm(server.baseUrl, '/', '/logout', {}, laptop)).status).toBe(303);
    await gone;
    expect(await landing(server, '/', old)).toBe('303 /login');
    await expect(connectSocket(server, old)).rejects.toThrow('unauthorized');
    const list = await b.timeout(5000).emitWithAck('fleet:list', {});
    expect(list.ok).toBe(true);
    expect(bGone).toBe(false);
    b.close();
  });
});
