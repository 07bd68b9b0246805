import session from 'express-session';
import type { Storage } from '../storage';

/**
 * express-session store over our storage interface (the `sessions` table in SQLite or
 * PostgreSQL). With REDIS_URL, connect-redis is used instead.
 */
export class StorageSessionStore extends session.Store {
  private pruner: NodeJS.Timeout;

  constructor(private readonly storage: Storage, private readonly defaultTtlMs: number) {
    super();
    this.pruner = setInterval(() => void this.storage.pruneSessions(Date.now()).catch(() => {}), 10 * 60_000);
    this.pruner.unref();
  }

  private expiry(sess: session.SessionData): number {
    const exp = sess.cookie?.expires;
    return exp ? new Date(exp).getTime() : Date.now() + this.defaultTtlMs;
  }

  override get(sid: string, cb: (err: unknown, session?: session.SessionData | null) => void): void {
    this.storage
      .getSession(sid, Date.now())
      .then((data) => cb(null, data === null ? null : (JSON.parse(data) as session.SessionData)))
      .catch((err) => cb(err));
  }

  override set(sid: string, sess: session.SessionData, cb?: (err?: unknown) => void): void {
    this.storage
      .setSession(sid, JSON.stringify(sess), this.expiry(sess))
      .then(() => cb?.())
      .catch((err) => cb?.(err));
  }

  override touch(sid: string, sess: session.SessionData, cb?: (err?: unknown) => void): void {
    this.storage
      .touchSession(sid, this.expiry(sess))
      .then(() => cb?.())
      .catch((err) => cb?.(err));
  }

  override destroy(sid: string, cb?: (err?: unknown) => void): void {
    this.storage
      .destroySession(sid)
      .then(() => cb?.())
      .catch((err) => cb?.(err));
  }

  close(): void {
    clearInterval(this.pruner);
  }
}
