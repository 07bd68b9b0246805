import { RateLimiterAbstract, RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';

export interface LoginThrottle {
  /**
   * Counts a login attempt before its password is checked; returns the seconds to wait before
   * another attempt (the attempt is refused), or 0 when it may go on. Counting first, not after a
   * failure, means parallel attempts cannot all pass a check made before any of them failed.
   */
  attempt(username: string, ip: string): Promise<number>;
  /** The attempt succeeded: it does not count, and that address's failures for the user are forgotten. */
  succeeded(username: string, ip: string): Promise<void>;
}

const WINDOW_S = 15 * 60;

/** Makes one rate limiter: in memory by default; Redis-backed in multi-instance mode (cluster/redis). */
export type LimiterFactory = (opts: { keyPrefix: string; points: number; duration: number }) => RateLimiterAbstract;

/**
 * Failed logins are counted per username+IP (so another address cannot lock a user out) and per
 * IP (so one address cannot spray many names). Limiters come from rate-limiter-flexible; pass
 * Redis-backed ones in multi-instance mode.
 */
export function createLoginThrottle(
  perUserIpMax: number,
  make: LimiterFactory = (o) => new RateLimiterMemory(o),
): LoginThrottle {
  const byUserIp = make({ keyPrefix: 'login_user_ip', points: perUserIpMax, duration: WINDOW_S });
  const byIp = make({ keyPrefix: 'login_ip', points: perUserIpMax * 10, duration: WINDOW_S });
  const key = (u: string, ip: string) => `${u.toLowerCase()}|${ip}`;
  return {
    async attempt(username, ip) {
      // Both are counted (a refused attempt too); rate-limiter-flexible's consume is atomic in
      // memory and in Redis, and rejects with a RateLimiterRes once the points are used up.
      const results = await Promise.allSettled([byUserIp.consume(key(username, ip)), byIp.consume(ip)]);
      let wait = 0;
      for (const r of results) {
        if (r.status === 'fulfilled') continue;
        if (!(r.reason instanceof RateLimiterRes)) throw r.reason;
        wait = Math.max(wait, Math.max(1, Math.ceil(r.reason.msBeforeNext / 1000)));
      }
      return wait;
    },
    async succeeded(username, ip) {
      await Promise.all([byUserIp.delete(key(username, ip)), byIp.reward(ip, 1)]);
    },
  };
}
