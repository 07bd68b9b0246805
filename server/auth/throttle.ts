import { RateLimiterAbstract, RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';

export interface LoginThrottle {
  /** Seconds to wait before another attempt, or 0 when one is allowed. */
  check(username: string, ip: string): Promise<number>;
  failed(username: string, ip: string): Promise<void>;
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
  const wait = (r: RateLimiterRes | null, max: number) =>
    r !== null && r.consumedPoints >= max ? Math.max(1, Math.ceil(r.msBeforeNext / 1000)) : 0;
  return {
    async check(username, ip) {
      const [a, b] = await Promise.all([byUserIp.get(key(username, ip)), byIp.get(ip)]);
      return Math.max(wait(a, perUserIpMax), wait(b, perUserIpMax * 10));
    },
    async failed(username, ip) {
      await Promise.all([byUserIp.penalty(key(username, ip), 1), byIp.penalty(ip, 1)]);
    },
    async succeeded(username, ip) {
      await byUserIp.delete(key(username, ip));
    },
  };
}
