import type { Logger } from 'pino';
import { createClient } from 'redis';

export type Redis = ReturnType<typeof redisClient>;

/**
 * Offline queue off and the queue bounded: while Redis is away commands fail at once instead of
 * piling up in memory. Reconnects back off to one attempt every 2 s.
 */
export function redisClient(url: string, commandTimeoutMs?: number) {
  return createClient({
    url,
    disableOfflineQueue: true,
    commandsQueueMaxLength: 10_000,
    pingInterval: 10_000,
    ...(commandTimeoutMs ? { commandOptions: { timeout: commandTimeoutMs } } : {}),
    socket: { connectTimeout: 2000, reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 2000) },
  });
}

/**
 * Keys live in the database REDIS_URL selects, but Pub/Sub channels are global to the server, so
 * both are prefixed with the database number: one Redis database is one sockpit cluster.
 */
export function namespace(url: string): string {
  const db = Number(new URL(url).pathname.slice(1) || '0');
  return `sockpit:${Number.isInteger(db) ? db : 0}`;
}

/** Logs an outage once (node-redis emits 'error' for every failed reconnect) and the return. */
export function watchConnection(client: Redis, name: string, log: Logger, closing: () => boolean): void {
  // Before the first connection, start-up reports the failure itself.
  let down = true;
  const lost = (err?: unknown) => {
    if (down || closing()) return;
    down = true;
    log.warn({ err, connection: name }, 'redis unreachable; serving this instance on its own until it returns');
  };
  client.on('error', lost);
  client.on('end', () => lost());
  let connected = false;
  client.on('ready', () => {
    if (!down) return;
    down = false;
    if (connected) log.info({ connection: name }, 'redis reachable again');
    connected = true;
  });
}

/** Connects every client, or fails with one clear line naming REDIS_URL. */
export async function connectWithin(clients: Redis[], ms: number, url: string): Promise<void> {
  const where = new URL(url).host || 'localhost';
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
  });
  try {
    await Promise.race([Promise.all(clients.map((c) => c.connect())), timeout]);
  } catch (err) {
    for (const c of clients) if (c.isOpen) c.destroy();
    throw new Error(`cannot connect to Redis at ${where} (REDIS_URL): ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

export async function quit(client: Redis): Promise<void> {
  if (!client.isOpen) return;
  if (!client.isReady) return client.destroy();
  await client.close().catch(() => client.destroy());
}

const FIRE_AND_FORGET = new Set(['publish', 'subscribe', 'unsubscribe', 'pSubscribe', 'pUnsubscribe', 'sSubscribe', 'sUnsubscribe']);

/**
 * The Socket.IO adapter publishes without awaiting; with the offline queue off those promises
 * reject during an outage. This view of the client catches them so they cannot become unhandled
 * rejections; local emits go on regardless.
 */
export function guard(client: Redis, onError: (err: unknown) => void): Redis {
  return new Proxy(client, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function' || prop === 'constructor') return value;
      const fn = value as (...args: unknown[]) => unknown;
      if (typeof prop === 'string' && FIRE_AND_FORGET.has(prop)) {
        return (...args: unknown[]) => {
          const result = fn.apply(target, args);
          return result instanceof Promise ? result.catch(onError) : result;
        };
      }
      // node-redis keeps private fields, so methods must run on the real client.
      return fn.bind(target);
    },
  });
}
