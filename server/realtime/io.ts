import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { RequestHandler } from 'express';
import type session from 'express-session';
import type { Logger } from 'pino';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { Server, ServerOptions } from 'socket.io';
import { sessionTooOld } from '../auth/session';
import { NotFoundError } from '../commands/service';
import type { Config } from '../config';
import { clientEvents, ClientEventName, RealtimeError } from '../contract/realtime';
import type { Storage } from '../storage';
import type { Broadcaster, IO } from './broadcast';
import { rooms } from './events';
import { AppSocket, Busy, Forbidden, Handler, Handlers } from './handlers';
import { dropSocket, queuedBytes, queuedPackets } from './queue';
import { socketParser } from './parser';

type SessionRequest = IncomingMessage & { session?: session.Session & Partial<session.SessionData>; sessionID?: string; _query?: Record<string, string> };

/** Largest event payload a browser may send; commands and settings are small. */
export const MAX_EVENT_BYTES = 8 * 1024;

/** How often every socket's session is re-checked (sockets of a dead session go within this time). */
export const SESSION_RECHECK_MS = 30_000;

/**
 * Bytes the server may queue for one socket that does not read (a frozen tab, a hostile client)
 * before it drops it. Without a cap the queue grows until the heartbeat gives up (about 40 s of
 * the whole fleet's feed per socket). Batched dashboards are slowed down well before this
 * (DEFAULT_CONFLATION in broadcast.ts); this bounds everything else.
 */
export const MAX_QUEUED_BYTES = 4 * 1024 * 1024;

/** The origin browsers must come from: PUBLIC_ORIGIN, or else this server's own host. */
export function originAllowed(req: IncomingMessage, config: Config): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true; // Not a browser; the session cookie is still required.
  if (config.publicOrigin) return origin === config.publicOrigin;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

export interface RealtimeDeps {
  config: Config;
  storage: Storage;
  handlers: Handlers;
  broadcast: Broadcaster;
  sessionMiddleware: RequestHandler;
  sessionStore: session.Store;
  log: Logger;
}

/** Socket.IO on the HTTP server; foreign origins are refused at the handshake. */
export function createIO(http: HttpServer, config: Config, adapter?: ServerOptions['adapter']): IO {
  const io: IO = new Server(http, {
    serveClient: false,
    maxHttpBufferSize: MAX_EVENT_BYTES,
    // Devices' WebSockets share the HTTP server; their transport answers upgrades that are not Socket.IO's.
    destroyUpgrade: false,
    pingInterval: 20_000,
    parser: socketParser,
    ...(adapter ? { adapter } : {}),
    allowRequest: (req, cb) => {
      const ok = originAllowed(req, config);
      cb(ok ? null : 'forbidden origin', ok);
    },
  });
  oneBufferFrames(io);
  return io;
}

type FramingAdapter = { _encode?: (packet: unknown, opts: { wsPreEncodedFrame?: unknown }) => unknown };

/**
 * A broadcast's WebSocket frame as one buffer. Socket.IO's adapter encodes a broadcast once and
 * frames it once (`wsPreEncodedFrame`, shared by every socket), as a header and a payload; `ws`
 * then writes those two with cork, two writes and uncork, which Node turns into a `writev` per
 * socket. Joined once per broadcast, each socket's frame is one plain write: with a thousand
 * dashboards, 2–3 % less server CPU (bench/README.md, "eighth round"; the write system call per
 * socket remains). The bytes on the wire are the same. `_encode` is the adapter's own (socket.io-adapter
 * 2.5; the Redis adapter delivers locally through it too); where it is missing nothing changes.
 */
function oneBufferFrames(io: IO): void {
  const adapter = io.of('/').adapter as unknown as FramingAdapter;
  const encode = adapter._encode;
  if (typeof encode !== 'function') return;
  adapter._encode = function (packet, opts) {
    const encoded = encode.call(this, packet, opts);
    const frame = opts.wsPreEncodedFrame;
    if (Array.isArray(frame) && frame.length === 2 && Buffer.isBuffer(frame[0]) && Buffer.isBuffer(frame[1])) {
      opts.wsPreEncodedFrame = [Buffer.concat([frame[0], frame[1]])];
    }
    return encoded;
  };
}

/**
 * Shares the login session with Socket.IO and registers the event handlers (docs/realtime.md).
 * Handlers validate each payload and answer through the ack; they never throw.
 */
export function registerRealtime(io: IO, deps: RealtimeDeps): { close(): void } {
  const { config, storage, log } = deps;

  // The session middleware runs on the handshake only, not on every long-polling request.
  io.engine.use((req: SessionRequest, res: unknown, next: (err?: unknown) => void) => {
    if (req._query?.sid === undefined) deps.sessionMiddleware(req as never, res as never, next);
    else next();
  });

  io.use(async (socket, next) => {
    const req = socket.request as SessionRequest;
    const sess = req.session;
    if (!sess?.userId || sessionTooOld(sess, config)) return next(new Error('unauthorized'));
    const user = await storage.getUserById(sess.userId).catch(() => null);
    if (!user) return next(new Error('unauthorized'));
    socket.data = { userId: user.id, username: user.username, role: user.role, sid: req.sessionID! };
    next();
  });

  const limiter = new RateLimiterMemory({ keyPrefix: 'socket_events', points: 50, duration: 1 });

  /** One event of one socket: rate limit, schema check, the user read afresh, one error path. */
  function register<E extends ClientEventName>(socket: AppSocket, event: E, handler: Handler<E>): void {
    const schema = clientEvents[event].payload;
    const listen = socket.on.bind(socket) as (ev: string, listener: (payload: unknown, ack: unknown) => void) => void;
    listen(event, async (payloadOrAck, maybeAck) => {
      // emit(event, callback) with no payload: the callback comes first.
      const [payload, ack] = typeof payloadOrAck === 'function' ? [undefined, payloadOrAck] : [payloadOrAck, maybeAck];
      const reply = typeof ack === 'function' ? (ack as (r: object) => void) : () => {};
      const fail = (error: RealtimeError) => reply({ ok: false, error });
      const { userId } = socket.data;
      try {
        await limiter.consume(String(userId));
      } catch {
        return fail('rate_limited');
      }
      const parsed = schema.safeParse(payload ?? {});
      if (!parsed.success) return fail('bad_request');
      try {
        // The user is read fresh on every event: a removed user's socket is refused and dropped at once,
        // and a demotion takes effect on the next click, not the next login.
        const user = await storage.getUserById(userId);
        if (!user) {
          fail('forbidden');
          socket.disconnect(true);
          return;
        }
        reply({ ok: true, ...(await handler(parsed.data as Parameters<Handler<E>>[0], { user, socket })) });
      } catch (err) {
        if (err instanceof Forbidden) return fail('forbidden');
        if (err instanceof Busy) return fail('rate_limited');
        if (err instanceof NotFoundError) return fail('not_found');
        log.error({ err, event }, 'socket handler failed');
        fail('server_error');
      }
    });
  }

  io.on('connection', (socket) => {
    const { userId, sid } = socket.data;
    void socket.join([rooms.fleet, rooms.user(userId), rooms.session(sid)]);
    for (const event of Object.keys(clientEvents) as ClientEventName[]) register(socket, event, deps.handlers[event] as Handler<typeof event>);
    // An event nobody handles still gets an answer when it asks for one.
    socket.onAny((event: unknown, ...args: unknown[]) => {
      const ack = args.at(-1);
      if (typeof ack === 'function' && !Object.hasOwn(clientEvents, String(event))) (ack as (r: object) => void)({ ok: false, error: 'bad_request' });
    });
  });

  // Sessions that expired, were destroyed elsewhere or outlived their lifetime lose their sockets.
  const recheck = setInterval(() => void recheckSessions(), config.sessionRecheckMs ?? SESSION_RECHECK_MS);
  recheck.unref();
  async function recheckSessions(): Promise<void> {
    const bySid = new Map<string, number>();
    for (const s of io.of('/').sockets.values()) bySid.set(s.data.sid, s.data.userId);
    for (const [sid, userId] of bySid) {
      const alive = await new Promise<boolean>((resolve) =>
        deps.sessionStore.get(sid, (err, sess) => {
          if (err) return resolve(true); // Store unreachable: do not log everyone out.
          resolve(!!sess && sess.userId === userId && !sessionTooOld(sess, config));
        }),
      );
      // A removed user's sockets go too, whatever their session says.
      const userExists = alive && (await storage.getUserById(userId).then((u) => u !== null, () => true));
      if (!alive || !userExists) endSession(io, sid, 'expired');
    }
  }

  const queueCheck = setInterval(() => dropSocketsNotReading(io, log, () => deps.broadcast.counters.droppedQueueFull++), 1000);
  queueCheck.unref();

  return {
    close: () => {
      clearInterval(recheck);
      clearInterval(queueCheck);
    },
  };
}

/**
 * The hard cap: a socket holding more than MAX_QUEUED_BYTES is cut off. Batched dashboards that
 * fall behind are conflated long before (broadcast.ts), so this catches per-reading sockets and
 * anything else that piles up for a socket that does not read.
 */
function dropSocketsNotReading(io: IO, log: Logger, onDrop: () => void): void {
  for (const s of io.of('/').sockets.values()) {
    if (queuedPackets(s) < 16) continue;
    const bytes = queuedBytes(s);
    if (bytes <= MAX_QUEUED_BYTES) continue;
    log.warn({ user: s.data.username, queued: bytes }, 'socket is not reading; disconnected');
    onDrop();
    dropSocket(s);
  }
}

/** Tells a removed user's sockets, then disconnects them (on every instance). */
export function endUser(io: IO, userId: number): void {
  io.to(rooms.user(userId)).emit('session:ended', { reason: 'expired' });
  io.in(rooms.user(userId)).disconnectSockets(true);
}

/** Tells a session's sockets why, then disconnects them (on every instance). */
export function endSession(io: IO, sid: string, reason: 'logout' | 'expired'): void {
  io.to(rooms.session(sid)).emit('session:ended', { reason });
  io.in(rooms.session(sid)).disconnectSockets(true);
}
