import { Router } from 'express';
import type { Logger } from 'pino';
import type { Config } from '../config';
import type { Storage } from '../storage';
import { hashPassword, passwordProblem, usernameProblem, verifyPassword } from './passwords';
import { csrfToken, startSession } from './session';
import type { LoginThrottle } from './throttle';

const LOGIN_FAILED = 'Wrong user name or password.';

function field(body: unknown, name: string, max = 1024): string {
  const v = (body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v.slice(0, max) : '';
}

/** /setup (first run), /login and /logout (README, "First steps"). */
export function authRoutes(deps: {
  config: Config;
  storage: Storage;
  throttle: LoginThrottle;
  log: Logger;
  endSession: (sid: string, reason: 'logout' | 'expired') => void;
}): Router {
  const { config, storage, throttle, log } = deps;
  const r = Router();

  r.get('/setup', async (req, res) => {
    if ((await storage.countUsers()) > 0) return res.redirect(303, req.user ? '/' : '/login');
    res.render('setup', { title: 'Welcome to sockpit', user: null, csrfToken: csrfToken(req), error: null, username: '' });
  });

  r.post('/setup', async (req, res) => {
    if ((await storage.countUsers()) > 0) return res.redirect(303, '/login');
    const username = field(req.body, 'username', 64).trim();
    const password = field(req.body, 'password');
    const password2 = field(req.body, 'password2');
    const problem =
      usernameProblem(username) ?? passwordProblem(password) ?? (password !== password2 ? 'The two passwords differ.' : null);
    if (problem) {
      return res.status(400).render('setup', { title: 'Welcome to sockpit', user: null, csrfToken: csrfToken(req), error: problem, username });
    }
    const user = await storage.createUser({ username, passwordHash: await hashPassword(password, config.bcryptRounds), role: 'admin' }, true);
    if (!user) return res.redirect(303, '/login');
    log.info({ user: username }, 'owner account created');
    await startSession(req, user);
    res.redirect(303, '/');
  });

  r.get('/login', (req, res) => {
    if (req.user) return res.redirect(303, '/');
    res.render('login', { title: 'Log in', user: null, csrfToken: csrfToken(req), error: null, username: '' });
  });

  r.post('/login', async (req, res) => {
    const username = field(req.body, 'username', 64).trim();
    const password = field(req.body, 'password', 4096);
    const ip = req.ip ?? 'unknown';
    const render = (status: number, error: string) =>
      res.status(status).render('login', { title: 'Log in', user: null, csrfToken: csrfToken(req), error, username });
    const wait = await throttle.attempt(username, ip);
    if (wait > 0) {
      res.set('Retry-After', String(wait));
      return render(429, `Too many failed attempts. Try again in ${Math.ceil(wait / 60)} minute(s).`);
    }
    const user = username ? await storage.getUserByName(username) : null;
    const ok = await verifyPassword(password, user?.passwordHash ?? null, config.bcryptRounds);
    if (!user || !ok) {
      log.info({ user: username, ip }, 'login failed');
      return render(401, LOGIN_FAILED);
    }
    await throttle.succeeded(username, ip);
    await startSession(req, user);
    log.info({ user: username, ip }, 'logged in');
    res.redirect(303, '/');
  });

  // The page says its user is active (clicks, keys) while it works over the socket, which no HTTP
  // request rolls: the idle timeout counts from here too (docs/security.md). Rolling sessions
  // re-send the cookie with every answer, so this answer moves both expiries.
  r.get('/session/alive', (req, res) => {
    res.set('Cache-Control', 'no-store');
    res.status(req.session?.userId !== undefined ? 204 : 401).end();
  });

  r.post('/logout', (req, res) => {
    const sid = req.sessionID;
    req.session.destroy(() => {
      if (sid) deps.endSession(sid, 'logout');
      res.clearCookie('sockpit.sid');
      res.redirect(303, '/login');
    });
  });

  return r;
}
