import crypto from 'node:crypto';
import os from 'node:os';
import { createAdapter } from '@socket.io/redis-adapter';
import { RedisStore } from 'connect-redis';
import type session from 'express-session';
import type { Logger } from 'pino';
import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible';
import { createLoginThrottle, LimiterFactory, LoginThrottle } from '../../auth/throttle';
import type { Config } from '../../config';
import { connectWithin, guard, namespace, quit, redisClient, watchConnection } from './client';
import { RedisFabric, RedisFabricDeps, ROUTE_TIMEOUT_MS } from './fabric';
import { Leases } from './leases';

/** How long a Redis command may take before it counts as failed (no command waits for ever). */
const COMMAND_TIMEOUT_MS = 2000;
/** How long start-up waits for Redis before giving up with one clear line. */
const CONNECT_TIMEOUT_MS = 10_000;

/** Multi-instance parts (REDIS_URL), for the composition root. */
export interface ClusterParts {
  sessionStore: session.Store;
  throttle: LoginThrottle;
  /** Rate limiters whose counts every instance shares (the login throttle's, the API's). */
  limiter: LimiterFactory;
  /** The Socket.IO adapter to create the server with. */
  adapter: ReturnType<typeof createAdapter>;
  /** The fabric, once the parts it serves exist. */
  createFabric(deps: Omit<RedisFabricDeps, 'leases' | 'cmd' | 'sub' | 'leaseMs' | 'log'>): RedisFabric;
  /** Closes the Redis connections (after the fabric and Socket.IO have closed). */
  close(): Promise<void>;
}

/**
 * Connects to Redis for multi-instance mode: the Socket.IO adapter, sessions, the login throttle
 * and the fabric (device routing and presence). Fails start-up with one clear error when Redis
 * cannot be reached within 10 s.
 */
export async function connectCluster(config: Config, log: Logger): Promise<ClusterParts> {
  const url = config.redisUrl;
  if (!url) throw new Error('connectCluster needs REDIS_URL');
  const ns = namespace(url);
  const clog = log.child({ component: 'redis' });

  const cmd = redisClient(url, COMMAND_TIMEOUT_MS);
  // Subscriptions are replayed by node-redis after a reconnect.
  const sub = redisClient(url);
  let closing = false;
  watchConnection(cmd, 'commands', clog, () => closing);
  watchConnection(sub, 'subscriber', clog, () => closing);
  await connectWithin([cmd, sub], CONNECT_TIMEOUT_MS, url);

  const instanceId = `${os.hostname()}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  const onAdapterError = (err: unknown) => clog.debug({ err }, 'socket.io adapter: redis command failed');
  const limiter: LimiterFactory = (limit) =>
    new RateLimiterRedis({
      ...limit,
      storeClient: cmd,
      useRedisPackage: true,
      keyPrefix: `${ns}:${limit.keyPrefix}`,
      // While Redis is away each instance counts on its own rather than letting requests fail.
      rejectIfRedisNotReady: true,
      insuranceLimiter: new RateLimiterMemory(limit),
    });
  return {
    sessionStore: new RedisStore({ client: cmd, prefix: `${ns}:sess:` }),
    throttle: createLoginThrottle(config.loginMaxAttempts, limiter),
    limiter,
    adapter: createAdapter(guard(cmd, onAdapterError), guard(sub, onAdapterError), { key: `${ns}:sio`, requestsTimeout: ROUTE_TIMEOUT_MS }),
    createFabric: (deps) =>
      new RedisFabric({ ...deps, leases: new Leases({ cmd, ns, instanceId, leaseMs: config.presenceTtlS * 1000 }), cmd, sub, leaseMs: config.presenceTtlS * 1000, log: clog }),
    async close() {
      closing = true;
      await Promise.all([quit(sub), quit(cmd)]);
    },
  };
}
