/** The admin pages (server/web/pages.ts): devices and users, for admins only. */
import { closeAllServers, CookieJar, createUserAndLogin, db, login, postForm, startServer } from '../support/server';

afterEach(closeAllServers);

describe('admin pages', () => {
  test('when an admin adds a device in the page, then its token, config snippet and simulate line are shown once', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    const jar = new CookieJar();
    jar.store(new Response(null, { headers: { 'set-cookie': cookie } }));
    const res = await postForm(server.baseUrl, '/admin/devices', '/admin/devices', { id: 'kitchen', name: 'Kitchen relay' }, jar);
    expect(res.status).toBe(201);
    const html = await res.text();
    const token = /#define DEVICE_TOKEN &#34;([A-Za-z0-9_-]+)&#34;/.exec(html)?.[1] ?? /--token[= ]([A-Za-z0-9_-]+)/.exec(html)?.[1];
    expect(token).toBeDefined();
    expect(html).toContain(`npx sockpit simulate --id kitchen --token=${token}`);
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
    const ann = (await db(server).getUserByName('ann'))!;
    await postForm(server.baseUrl, '/admin/users', `/admin/users/${ann.id}/role`, { role: 'operator' }, jar);
    expect((await db(server).getUserByName('ann'))!.role).toBe('operator');
    const owner = (await db(server).getUserByName('owner'))!;
    const demote = await postForm(server.baseUrl, '/admin/users', `/admin/users/${owner.id}/role`, { role: 'viewer' }, jar);
    expect(demote.status).toBe(400);
    await postForm(server.baseUrl, '/admin/users', `/admin/users/${ann.id}/remove`, {}, jar);
    expect(await db(server).getUserByName('ann')).toBeNull();
    await expect(login(server, 'ann', 'ann password')).rejects.toThrow();
  });
});
