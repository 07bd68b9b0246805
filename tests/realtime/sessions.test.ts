/**
 * Case 4 of docs/security.md: a socket whose session died (deleted, expired, too old) or whose
 * user was removed is dropped at the next session re-check (server/realtime/io.ts).
 */
import { SESSION_RECHECK_MS } from '../../server/realtime/io';
import { closeAllServers, connectSocket, CookieJar, createUserAndLogin, db, nextEvent, postForm, startServer } from '../support/server';
import { editSession, sidOf } from '../support/web';

afterEach(closeAllServers);

const OWNER = { username: 'owner', password: 'correct horse', role: 'admin' as const };

describe('4. sockets of dead sessions', () => {
  test('when nothing is configured, then sessions are re-checked at least every 60 s', () => {
    expect(SESSION_RECHECK_MS).toBeLessThanOrEqual(60_000);
  });

  test.each([
    ['deleted', async (server: Awaited<ReturnType<typeof startServer>>, sid: string) => db(server).destroySession(sid)],
    ['expired', async (server: Awaited<ReturnType<typeof startServer>>, sid: string) => editSession(server, sid, () => {}, Date.now() - 1000)],
    ['past its absolute lifetime', async (server: Awaited<ReturnType<typeof startServer>>, sid: string) =>
      editSession(server, sid, (s) => (s.loginAt = Date.now() - 9 * 3_600_000))],
  ])('when a socket’s session is %s, then the socket gets session:ended and is disconnected at the next re-check', async (_what, kill) => {
    const server = await startServer({ sessionRecheckMs: 300 });
    const cookie = await createUserAndLogin(server, OWNER);
    const socket = await connectSocket(server, cookie);
    const ended = nextEvent(socket, 'session:ended', () => true, 5000);
    const gone = new Promise((r) => socket.once('disconnect', r));
    await kill(server, sidOf(cookie));
    expect(await ended).toEqual({ reason: 'expired' });
    await gone;
  });

  test('when the user behind a socket is removed, then the socket is refused on its next event and dropped at the next re-check', async () => {
    // A re-check period long enough that s1's event comes first even on a busy machine (at 300 ms
    // the re-check could drop s1 before its event was answered); s2 shows the re-check.
    const server = await startServer({ sessionRecheckMs: 2000 });
    await createUserAndLogin(server, OWNER);
    const ann = await createUserAndLogin(server, { username: 'ann', password: 'ann password', role: 'operator' });
    const s1 = await connectSocket(server, ann);
    const s2 = await connectSocket(server, ann);
    const annId = (await db(server).getUserByName('ann'))!.id;
    // Removing through storage only: no HTTP request of ann's runs, so only the socket paths can notice.
    await db(server).deleteUser(annId);
    const gone1 = new Promise((r) => s1.once('disconnect', r));
    const gone2 = new Promise((r) => s2.once('disconnect', r));
    expect(await s1.timeout(5000).emitWithAck('fleet:list', {})).toEqual({ ok: false, error: 'forbidden' });
    await gone1;
    await gone2;
  });

  test('when an admin removes a user in the page, then that user\'s sockets get session:ended and are disconnected at once', async () => {
    // No re-check within the test: only the removal itself can end the socket.
    const server = await startServer({ sessionRecheckMs: 600_000 });
    const owner = await createUserAndLogin(server, OWNER);
    const ann = await createUserAndLogin(server, { username: 'ann', password: 'ann password', role: 'viewer' });
    const socket = await connectSocket(server, ann);
    const ended = nextEvent(socket, 'session:ended', () => true, 5000);
    const gone = new Promise((r) => socket.once('disconnect', r));
    const jar = new CookieJar();
    jar.store(new Response(null, { headers: { 'set-cookie': owner } }));
    const annId = (await db(server).getUserByName('ann'))!.id;
    expect((await postForm(server.baseUrl, '/admin/users', `/admin/users/${annId}/remove`, {}, jar)).status).toBe(200);
    expect(await ended).toEqual({ reason: 'expired' });
    await gone;
  });
});
