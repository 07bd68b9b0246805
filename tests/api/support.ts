/** Helpers of the REST API tests (docs/api.md): fetch with a key or a browser session, keys, users. */
import { createApiKey } from '../../server/api/keys';
import { addUser } from '../../server/auth/users';
import type { Role, User } from '../../server/storage';
import { CookieJar, login, TestServer } from '../support/server';

export interface Call {
  method?: string;
  key?: string;
  cookie?: string;
  csrf?: string;
  /** A value to send as JSON, or a raw string body. */
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON when it is JSON, else undefined. */
  json: any;
}

export async function api(server: TestServer, path: string, c: Call = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...c.headers };
  if (c.key !== undefined) headers.authorization = `Bearer ${c.key}`;
  if (c.cookie) headers.cookie = c.cookie;
  if (c.csrf) headers['x-csrf-token'] = c.csrf;
  let body: string | undefined;
  if (c.raw !== undefined) body = c.raw;
  else if (c.body !== undefined) {
    body = JSON.stringify(c.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(server.baseUrl + path, { method: c.method ?? (body === undefined ? 'GET' : 'POST'), headers, body, redirect: 'manual' });
  const text = await res.text();
  let json: unknown;
  if (/json/.test(res.headers.get('content-type') ?? '')) {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** A problem document (RFC 9457) with that status. */
export function expectProblem(a: Answer, status: number, detail?: RegExp): void {
  expect({ status: a.status, type: a.headers.get('content-type') }).toEqual({ status, type: expect.stringMatching(/^application\/problem\+json/) });
  expect(a.json).toMatchObject({ status, title: expect.any(String), detail: expect.any(String) });
  if (detail) expect(a.json.detail).toMatch(detail);
}

let n = 0;
/** Ids and names unique per test file (on PostgreSQL a file's hooks share one database). */
export const uniq = (base: string) => `${base}-${++n}`;

export async function user(server: TestServer, role: Role, name = uniq(role)): Promise<User> {
  return addUser(server.app.storage, name, 'correct horse', role, 4);
}

/** A user of `role` and a key of `keyRole` (default: the same) for them. */
export async function keyFor(server: TestServer, role: Role, keyRole: Role = role): Promise<{ user: User; key: string; id: string }> {
  const u = await user(server, role);
  const { apiKey, key } = await createApiKey(server.app.storage, u, `${role} key`, keyRole);
  return { user: u, key, id: apiKey.id };
}

/** A logged-in browser: its cookie and the CSRF token its pages carry. */
export async function browser(server: TestServer, role: Role): Promise<{ user: User; cookie: string; csrf: string }> {
  const u = await user(server, role);
  const cookie = await login(server, u.username, 'correct horse');
  const jar = new CookieJar();
  const res = await fetch(server.baseUrl + '/api-keys', { headers: { cookie }, redirect: 'manual' });
  jar.store(res);
  const html = await res.text();
  const m = /data-csrf="([^"]+)"/.exec(html);
  if (!m) throw new Error(`no CSRF token on /api-keys (status ${res.status})`);
  return { user: u, cookie, csrf: m[1]! };
}
