import { RateLimiterAbstract, RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { LimiterFactory } from '../auth/throttle';

export type { LimiterFactory };

export interface ApiRateLimits {
  /** Requests per window from one address, whoever they are. */
  perAddress: number;
  /** Requests per window with one API key (or one browser session's user). */
  perKey: number;
  windowS: number;
}

export const DEFAULT_API_RATE_LIMITS: ApiRateLimits = { perAddress: 600, perKey: 300, windowS: 60 };

export interface ApiRateLimit {
  /** Counts one request; resolves with the seconds to wait when over the limit, else 0. */
  address(ip: string): Promise<number>;
  key(id: string): Promise<number>;
}

export function createApiRateLimit(limits: ApiRateLimits = DEFAULT_API_RATE_LIMITS, make: LimiterFactory = (o) => new RateLimiterMemory(o)): ApiRateLimit {
  const byAddress = make({ keyPrefix: 'api_ip', points: limits.perAddress, duration: limits.windowS });
  const byKey = make({ keyPrefix: 'api_key', points: limits.perKey, duration: limits.windowS });
  const take = async (limiter: RateLimiterAbstract, id: string): Promise<number> => {
    try {
      await limiter.consume(id, 1);
      return 0;
    } catch (res) {
      // A limiter whose store failed (and has no insurance) rejects with an Error: let the request through.
      if (res instanceof RateLimiterRes) return Math.max(1, Math.ceil(res.msBeforeNext / 1000));
      return 0;
    }
  };
  return {
    address: (ip) => take(byAddress, ip),
    key: (id) => take(byKey, id),
  };
}
