import { io as ioClient } from 'socket.io-client';
import { closeAllServers, connectSocket, CookieJar, createUserAndLogin, postForm, startServer } from '../support/server';

afterEach(closeAllServers);

/** The Socket.IO handshake and the login session (docs/realtime.md). */
describe('Socket.IO shares the login session', () => {
  test('when a socket has no session, then the handshake is refused', async () => {
    const server = await startServer();
    await expect(connectSocket(server, '')).rejects.toThrow('unauthorized');
  });

  test('when the cookie is valid but the Origin is foreign, then the handshake is refused', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    await expect(connectSocket(server, cookie, { origin: 'http://evil.example' })).rejects.toThrow();
    const ok = await connectSocket(server, cookie, { origin: server.baseUrl });
    ok.close();
  });

  test('when the user logs out, then that session’s sockets are disconnected and cannot reconnect', async () => {
    const server = await startServer();
    await createUserAndLogin(server);
    const jar = new CookieJar();
    expect((await postForm(server.baseUrl, '/login', '/login', { username: 'owner', password: 'correct horse' }, jar)).status).toBe(303);
    const cookie = jar.header();
    const socket = await connectSocket(server, cookie);
    const ended = new Promise((resolve) => socket.on('session:ended', (p: unknown) => resolve(p)));
    const gone = new Promise((resolve) => socket.on('disconnect', resolve));
    expect((await postForm(server.baseUrl, '/', '/logout', {}, jar)).status).toBe(303);
    expect(await ended).toEqual({ reason: 'logout' });
    await gone;
    await expect(connectSocket(server, cookie)).rejects.toThrow('unauthorized');
    const page = await fetch(server.baseUrl + '/', { headers: { cookie }, redirect: 'manual' });
    expect(page.status).toBe(303);
    expect(page.headers.get('location')).toBe('/login');
  });

  test('when a client that is not the JavaScript one uses long-polling with the cookie, then it connects', async () => {
    const server = await startServer();
    const cookie = await createUserAndLogin(server);
    const socket = ioClient(server.baseUrl, { transports: ['polling'], extraHeaders: { cookie }, reconnection: false, forceNew: true });
    await new Promise((resolve, reject) => {
      socket.on('connect', () => resolve(undefined));
      socket.on('connect_error', reject);
    });
    socket.close();
    await new Promise((r) => setTimeout(r, 100));
  });
});
