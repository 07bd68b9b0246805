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
      // rate-limiter-flexible's consume is atomic in memory and in Redis, and rejects with a
      // RateLimiterRes once the points are used up. A refused attempt gives its points back: only
      // attempts whose password is checked count, as before.
      const refused = (err: unknown) => {
        if (!(err instanceof RateLimiterRes)) throw err;
        return Math.max(1, Math.ceil(err.msBeforeNext / 1000));
      };
      try {
        await byIp.consume(ip);
      } catch (err) {
        const wait = refused(err);
        await byIp.reward(ip, 1);
        return wait;
      }
      try {
        await byUserIp.consume(key(username, ip));
      } catch (err) {
        const wait = refused(err);
        await Promise.all([byIp.reward(ip, 1), byUserIp.reward(key(username, ip), 1)]);
        return wait;
      }
      return 0;
    },
    async succeeded(username, ip) {
      await Promise.all([byUserIp.delete(key(username, ip)), byIp.reward(ip, 1)]);
    },
  };
}
