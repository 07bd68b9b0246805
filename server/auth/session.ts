import crypto from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import session from 'express-session';
import type { Config } from '../config';
import type { Role, Storage, User } from '../storage';

declare module 'express-session' {
  interface SessionData {
    userId?: number;
    loginAt?: number;
    csrf?: string;
  }
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      user?: User;
    }
  }
}

export const SESSION_COOKIE = 'sockpit.sid';

/** The one session middleware, shared by Express and Socket.IO's engine. */
export function createSessionMiddleware(config: Config, secret: string, store: session.Store): RequestHandler {
  return session({
    name: SESSION_COOKIE,
    secret,
    store,
    resave: false,
    saveUninitialized: false,
    rolling: true,
    proxy: config.trustProxy,
    cookie: {
      httpOnly: true,
      sameSite: 'lax',
      // Behind an https PUBLIC_ORIGIN always; with sockpit's own HTTPS_PORT, on the requests that came over it.
      secure: config.publicOrigin?.startsWith('https:') ? true : config.httpsPort !== null ? 'auto' : false,
      maxAge: config.sessionIdleMin * 60_000,
    },
  });
}

/** True when a session is past its absolute lifetime (counted from login), whatever its activity. */
export function sessionTooOld(sess: session.SessionData | undefined, config: Config, now = Date.now()): boolean {
  return sess?.loginAt !== undefined && now - sess.loginAt > config.sessionMaxH * 3_600_000;
}

/** Loads the logged-in user (fresh from storage, so role changes and removals apply at once). */
export function loadUser(storage: Storage, config: Config): RequestHandler {
  return async (req, _res, next) => {
    const sess = req.session;
    if (sess?.userId === undefined) return next();
    if (sessionTooOld(sess, config)) {
      // Past its absolute lifetime: start over with an empty session (the old id is gone).
      return sess.regenerate(() => next());
    }
    const user = await storage.getUserById(sess.userId);
    if (user) req.user = user;
    else delete sess.userId;
    next();
  };
}

/** Synchronizer-token CSRF protection for every state-changing request (login included). */
export function csrfToken(req: Request): string {
  if (!req.session.csrf) req.session.csrf = crypto.randomBytes(24).toString('base64url');
  return req.session.csrf;
}

/**
 * True when `sent` is the session's CSRF token, compared in constant time. The bytes are compared,
 * not the characters: a token of other characters (é is one character but two bytes) is simply
 * wrong, a 403, rather than a length mismatch that timingSafeEqual throws on.
 */
export function sameCsrfToken(sent: unknown, expected: unknown): boolean {
  if (typeof sent !== 'string' || typeof expected !== 'string') return false;
  const a = Buffer.from(sent, 'utf8');
  const b = Buffer.from(expected, 'utf8');
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

export function verifyCsrf(req: Request, res: Response, next: NextFunction): void {
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
  const sent = (req.body as Record<string, unknown> | undefined)?._csrf ?? req.get('x-csrf-token');
  if (sameCsrfToken(sent, req.session?.csrf)) return next();
  res.status(403).render('error', { title: 'Form expired', status: 403, message: 'This form has expired. Go back, reload the page and try again.', user: req.user ?? null, csrfToken: req.user ? csrfToken(req) : '' });
}

export function requireLogin(req: Request, res: Response, next: NextFunction): void {
  if (req.user) return next();
  res.redirect(303, '/login');
}

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function roleAtLeast(role: Role, min: Role): boolean {
  return RANK[role] >= RANK[min];
}

export function requireRole(min: Role): RequestHandler {
  return (req, res, next) => {
    if (!req.user) return res.redirect(303, '/login');
    if (roleAtLeast(req.user.role, min)) return next();
    res.status(403).render('error', { title: 'Not allowed', status: 403, message: `This needs the role ${min}.`, user: req.user, csrfToken: csrfToken(req) });
  };
}

/** Regenerates the session id (no fixation) and logs the user in, keeping a fresh CSRF token. */
export function startSession(req: Request, user: User): Promise<void> {
  return new Promise((resolve, reject) => {
    req.session.regenerate((err) => {
      if (err) return reject(err);
      req.session.userId = user.id;
      req.session.loginAt = Date.now();
      req.session.csrf = crypto.randomBytes(24).toString('base64url');
      req.session.save((err2) => (err2 ? reject(err2) : resolve()));
    });
  });
}
