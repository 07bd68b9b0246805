/** Small helpers for the web and session cases. */
import { CookieJar, db, TestServer } from './server';

/** The session id inside a `sockpit.sid=s%3A<sid>.<signature>` cookie header. */
export function sidOf(cookieHeader: string): string {
  const m = /sockpit\.sid=([^;]+)/.exec(cookieHeader);
  if (!m) throw new Error(`no session cookie in ${cookieHeader}`);
  const value = decodeURIComponent(m[1]!);
  return value.slice(2, value.lastIndexOf('.'));
}

/** A jar that starts with the given cookie header (e.g. from login()). */
export function jarWith(cookieHeader: string): CookieJar {
  const jar = new CookieJar();
  jar.store(new Response(null, { headers: { 'set-cookie': cookieHeader } }));
  return jar;
}

/** Rewrites a stored session as if time had passed (storage is the server's own session store). */
export async function editSession(
  server: TestServer,
  sid: string,
  edit: (data: Record<string, unknown>) => void,
  expiresAt?: number,
): Promise<void> {
  const storage = db(server);
  const raw = await storage.getSession(sid, Date.now());
  if (raw === null) throw new Error('no such session');
  const data = JSON.parse(raw) as Record<string, unknown>;
  edit(data);
  await storage.setSession(sid, JSON.stringify(data), expiresAt ?? Date.now() + 30 * 60_000);
}

/** Where a GET of `path` with this cookie ends up: 200, or the redirect location. */
export async function landing(server: TestServer, path: string, cookie: string): Promise<string> {
  const res = await fetch(server.baseUrl + path, { headers: { cookie }, redirect: 'manual' });
  await res.arrayBuffer();
  return res.status === 200 ? '200' : `${res.status} ${res.headers.get('location')}`;
}
