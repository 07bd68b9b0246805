import path from 'node:path';
import express, { ErrorRequestHandler, Express, RequestHandler } from 'express';
import helmet from 'helmet';
import type { Logger } from 'pino';
import { authRoutes } from '../auth/routes';
import { csrfToken, loadUser, verifyCsrf } from '../auth/session';
import type { LoginThrottle } from '../auth/throttle';
import type { Config } from '../config';
import { ROOT } from '../paths';
import type { Storage } from '../storage';
import { pageRoutes, PageDeps } from './pages';

export interface WebDeps {
  config: Config;
  storage: Storage;
  log: Logger;
  throttle: LoginThrottle;
  sessionMiddleware: RequestHandler;
  /** Routes that need no session: health and metrics. */
  health: express.Router;
  fabric: PageDeps['fabric'];
  devices: PageDeps['devices'];
  endpoints: PageDeps['endpoints'];
  /** Disconnects every socket of a login session (logout). */
  endSession: (sid: string, reason: 'logout' | 'expired') => void;
  /** Disconnects a removed user's sockets at once. */
  endUser: (userId: number) => void;
  /** The REST API (docs/api.md): before the pages' body parsers and error pages, after the security headers. */
  api?: express.Router;
}

/** The pages: security headers, static files, sessions, first-run setup, CSRF, routes and one error path. */
export function mountWeb(web: Express, deps: WebDeps): void {
  const { config, storage, log } = deps;
  web.disable('x-powered-by');
  web.set('trust proxy', config.trustProxy);
  web.set('views', path.join(ROOT, 'views'));
  web.set('view engine', 'ejs');
  const https = config.publicOrigin?.startsWith('https:') ?? false;
  web.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          connectSrc: ["'self'"],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          upgradeInsecureRequests: https ? [] : null,
        },
      },
      strictTransportSecurity: https,
    }),
  );
  web.use(express.static(path.join(ROOT, 'public'), { maxAge: '1h', index: false }));
  web.use(deps.health);
  if (deps.api) web.use(deps.api);
  web.use(express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 50 }));
  web.use(express.json({ limit: '16kb' }));
  web.use(deps.sessionMiddleware);
  web.use(loadUser(storage, config));
  web.use(async (req, res, next) => {
    // First run: every page leads to /setup until the owner exists.
    if (req.path === '/setup' || req.user) return next();
    if ((await storage.countUsers()) === 0) return res.redirect(303, '/setup');
    next();
  });
  web.use(verifyCsrf);
  web.use(authRoutes({ config, storage, throttle: deps.throttle, log, endSession: deps.endSession }));
  web.use(pageRoutes({ config, storage, fabric: deps.fabric, devices: deps.devices, endpoints: deps.endpoints, endUser: deps.endUser }));
  web.use((req, res) => {
    res.status(404).render('error', { title: 'Not found', status: 404, message: 'There is nothing here.', user: req.user ?? null, csrfToken: req.user ? csrfToken(req) : '' });
  });
  const onError: ErrorRequestHandler = (err, req, res, _next) => {
    const status = typeof err?.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : 500;
    if (status === 500) log.error({ err, url: req.originalUrl }, 'request failed');
    const message = status === 413 ? 'That request is too large.' : status === 500 ? 'Something went wrong on our side.' : 'That request could not be understood.';
    if (res.headersSent) return;
    res.status(status).render('error', { title: 'Error', status, message, user: req.user ?? null, csrfToken: '' }, (renderErr, html) => {
      if (renderErr) res.type('text').send(message);
      else res.send(html);
    });
  };
  web.use(onError);
}
