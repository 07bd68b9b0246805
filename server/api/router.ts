import express, { ErrorRequestHandler, Request, RequestHandler, Response, Router } from 'express';
import type { z } from 'zod';
import { csrfToken, roleAtLeast, sameCsrfToken } from '../auth/session';
import { authenticateKey, KEY_PREFIX } from './keys';
import { docsRoutes } from './docs';
import { openApiDocument } from './openapi';
import type { Caller, Operation } from './operation';
import { OperationDeps, operations } from './operations';
import { ProblemError, ProblemIssue, sendProblem } from './problem';
import { ApiRateLimits, createApiRateLimit, DEFAULT_API_RATE_LIMITS, LimiterFactory } from './rate-limit';

export interface ApiDeps extends OperationDeps {
  /** The app's one session middleware, so a logged-in browser can call the API with its cookie. */
  sessionMiddleware: RequestHandler;
  /** Loads `req.user` from the session (server/auth/session.ts loadUser). */
  loadUser: RequestHandler;
  rateLimits?: Partial<ApiRateLimits>;
  /** Builds the rate limiters; Redis-backed in multi-instance mode. Default: in memory. */
  makeLimiter?: LimiterFactory;
  /** Shown in the OpenAPI document. */
  version?: string;
}

const BODY_LIMIT = '16kb';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/**
 * A word of a query parameter's name that names a credential (`api_key`, `X-Api-Key`, `auth_token`,
 * `accessToken`, `password`, …): a credential in a URL ends up in proxy and browser logs
 * (docs/api.md, "Authentication").
 */
const CREDENTIAL_WORD = /^(?:api|access|auth|refresh|id|client|session)?(?:keys?|tokens?|secrets?|pass|passwords?|passwd|pwd|auth|authori[sz]ation|bearer|credentials?|sessions?|sessionid|sid|jwt)$/;

/** True when a query parameter's name, split into words (on `-`, `_`, `.`, brackets, camelCase), names a credential. */
export function credentialName(name: string): boolean {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .some((word) => CREDENTIAL_WORD.test(word));
}

const run = (mw: RequestHandler, req: Request, res: Response) =>
  new Promise<void>((resolve, reject) => mw(req, res, (err?: unknown) => (err ? reject(err) : resolve())));

function issuesOf(where: string, err: z.ZodError): ProblemIssue[] {
  return err.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
}

/**
 * The REST API under /api (docs/api.md) and the API keys page (/api-keys). Mounted before the
 * pages' body parsers and error pages: everything under /api/ is answered in JSON, errors
 * included (bad JSON, bodies too large, unknown paths) as application/problem+json.
 */
export function apiRoutes(deps: ApiDeps): Router {
  const { storage, log } = deps;
  const limits = { ...DEFAULT_API_RATE_LIMITS, ...deps.rateLimits };
  const limit = createApiRateLimit(limits, deps.makeLimiter);
  const ops = operations(deps);
  let documentJson: string | null = null;

  const root = Router();
  const api = Router();
  root.use('/api', api);

  api.use(async (req, _res, next) => {
    const wait = await limit.address(req.ip ?? 'unknown');
    if (wait > 0) return next(new ProblemError(429, `Too many requests from this address; try again in ${wait} s.`, { headers: { 'Retry-After': String(wait) } }));
    const q = new URL(req.originalUrl, 'http://x').searchParams;
    for (const [name, value] of q) {
      if (credentialName(name) || name.includes(KEY_PREFIX) || value.includes(KEY_PREFIX)) {
        // The path only: the query holds the key.
        log.warn({ method: req.method, path: req.path, ip: req.ip }, 'api: refused a credential in the URL');
        return next(new ProblemError(400, 'Credentials in the URL are refused (URLs end up in logs). Send the key as the header "Authorization: Bearer KEY".'));
      }
    }
    next();
  });
  // Only the operations that take a body read one: the others ignore it, so they answer no
  // 413 or 415 that their OpenAPI entry does not list.
  const jsonBody = express.json({ limit: BODY_LIMIT, strict: true });

  api.get('/v1/openapi.json', (_req, res) => {
    documentJson ??= JSON.stringify(openApiDocument(ops, deps.version ?? '1.0.0'));
    res.type('application/json').send(documentJson);
  });
  api.use('/docs', docsRoutes());

  /** Who calls: a Bearer key, else the browser session; throws a 401/403 problem otherwise. */
  async function authenticate(req: Request, res: Response, op: Operation): Promise<Caller> {
    const header = req.get('authorization');
    if (header !== undefined) {
      const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
      if (!m) throw unauthorized('Send the key as "Authorization: Bearer KEY".');
      if (op.sessionOnly) throw new ProblemError(403, 'API keys are managed in the page (API keys) or with `npx sockpit apikey`, not with another key.');
      const r = await authenticateKey(storage, m[1]!);
      if ('problem' in r) throw unauthorized(r.problem);
      return { user: r.user, role: r.role, via: 'key', keyId: r.apiKey.id };
    }
    await run(deps.sessionMiddleware, req, res);
    await run(deps.loadUser, req, res);
    if (!req.user) throw unauthorized('Log in, or send an API key as "Authorization: Bearer KEY".');
    if (UNSAFE.has(req.method) && !sameCsrfToken(req.get('x-csrf-token'), req.session?.csrf)) {
      throw new ProblemError(403, 'A request with the session cookie needs the page\'s CSRF token in the X-CSRF-Token header.');
    }
    return { user: req.user, role: req.user.role, via: 'session', keyId: null };
  }

  for (const op of ops) {
    const path = '/v1' + op.path.replace(/\{(\w+)\}/g, ':$1');
    api[op.method](path, ...(op.body ? [jsonBody] : []), async (req: Request, res: Response) => {
      const caller = await authenticate(req, res, op);
      const wait = await limit.key(caller.keyId ? `key:${caller.keyId}` : `user:${caller.user.id}`);
      if (wait > 0) throw new ProblemError(429, `Too many requests with this key; try again in ${wait} s.`, { headers: { 'Retry-After': String(wait) } });
      if (!roleAtLeast(caller.role, op.role)) {
        const as = caller.via === 'key' ? `this key acts as ${caller.role}` : `you are ${caller.role}`;
        throw new ProblemError(403, `This needs the role ${op.role}; ${as}.`);
      }
      const params = parse('path', op.params, req.params);
      const query = parse('query', op.query, req.query);
      if (op.body && !req.is('application/json') && hasBody(req)) throw new ProblemError(415, 'The body must be JSON (Content-Type: application/json).');
      if (op.body && req.body === undefined) throw new ProblemError(400, 'This needs a JSON body (Content-Type: application/json).');
      const body = parse('body', op.body, req.body);
      const reply = await op.handle({ req, res, params, query, body, caller });
      if (reply === null) return;
      for (const [k, v] of Object.entries(reply.headers ?? {})) res.setHeader(k, v);
      if (reply.body === undefined) res.status(reply.status).end();
      else res.status(reply.status).json(reply.body);
    });
  }

  api.use((req, _res, next) => next(new ProblemError(404, `No API endpoint ${req.method} ${req.baseUrl}${req.path}.`)));

  const onError: ErrorRequestHandler = (err, req, res, _next) => {
    let problem: ProblemError;
    if (err instanceof ProblemError) problem = err;
    else if (err?.type === 'entity.too.large') problem = new ProblemError(413, `The body is larger than ${BODY_LIMIT.replace('kb', ' KiB')}.`);
    else if (err?.type === 'entity.parse.failed') problem = new ProblemError(400, 'The body is not valid JSON.');
    else if (err?.type === 'encoding.unsupported' || err?.type === 'charset.unsupported') problem = new ProblemError(415, 'The body must be UTF-8 JSON.');
    else if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) problem = new ProblemError(err.status, 'That request could not be understood.');
    else {
      // Method and path only: the query string may hold anything, and headers hold credentials.
      log.error({ err, method: req.method, path: req.path }, 'api request failed');
      problem = new ProblemError(500, 'Something went wrong on our side.');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendProblem(res, problem);
  };
  api.use(onError);

  // The API keys page: a shell whose script talks to /api/v1/keys with the session and its CSRF token.
  root.get('/api-keys', deps.sessionMiddleware, deps.loadUser, async (req, res) => {
    if (!req.user) return res.redirect(303, '/login');
    const own = req.user.role === 'admin' ? await storage.listApiKeys() : await storage.listApiKeys(req.user.id);
    res.render('api-keys', { title: 'API keys', user: req.user, csrfToken: csrfToken(req), keys: own });
  });

  return root;
}

function unauthorized(detail: string): ProblemError {
  return new ProblemError(401, detail, { headers: { 'WWW-Authenticate': 'Bearer realm="sockpit"' } });
}

function hasBody(req: Request): boolean {
  return Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined;
}

function parse(where: string, schema: z.ZodType | undefined, value: unknown): any {
  if (!schema) return undefined;
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issues = issuesOf(where, r.error);
  throw new ProblemError(400, issues.map((i) => `${i.path.replace(/^(path|query)\./, '')}: ${i.message}`).join('; '), { issues });
}
