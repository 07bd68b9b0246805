// Talking to a sockpit server like a browser does: the login form with its CSRF token.
import fs from 'node:fs';
import path from 'node:path';

/** Cookie jar of one browser-like client: keeps the latest value of each cookie. */
export class CookieJar {
  constructor() {
    this.cookies = new Map();
  }
  store(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  }
  header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

async function csrfFrom(baseUrl, pagePath, jar) {
  const res = await fetch(baseUrl + pagePath, { headers: { cookie: jar.header() }, redirect: 'manual' });
  jar.store(res);
  const html = await res.text();
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  if (!m) throw new Error(`no CSRF token on ${pagePath} (status ${res.status})`);
  return m[1];
}

/** Posts a form like a browser does (CSRF token included). */
export async function postForm(baseUrl, pagePath, formPath, fields, jar) {
  const token = await csrfFrom(baseUrl, pagePath, jar);
  const res = await fetch(baseUrl + formPath, {
    method: 'POST',
    headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ ...fields, _csrf: token }).toString(),
    redirect: 'manual',
  });
  jar.store(res);
  return res;
}

/** Logs in through the real form; returns the cookie header of the session. */
export async function login(baseUrl, username, password) {
  const jar = new CookieJar();
  const res = await postForm(baseUrl, '/login', '/login', { username, password }, jar);
  if (res.status !== 303) throw new Error(`login of ${username} failed with status ${res.status}`);
  return jar.header();
}

/**
 * The Node flags `npm start` runs the server with (package.json), so that the bench and the soak
 * measure the server as users start it.
 */
export function serverNodeFlags(root) {
  const start = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).scripts.start;
  return start.split(/\s+/).filter((a) => a.startsWith('--'));
}
