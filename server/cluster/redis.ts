import crypto from 'node:crypto';
import os from 'node:os';
import { createAdapter } from '@socket.io/redis-adapter';
import { RedisStore } from 'connect-redis';
import type { Logger } from 'pino';
import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible';
import { createClient } from 'redis';
import { z } from 'zod';
import type { ClusterParts } from '../app';
import { createLoginThrottle } from '../auth/throttle';
import type { Config } from '../config';
import type { IO } from '../realtime/broadcast';
import { rooms } from '../realtime/events';
import type { Command, Storage } from '../storage';
import type { Fabric, PresenceEntry } from './fabric';

type Redis = ReturnType<typeof redisClient>;

/** How long a Redis command may take before it counts as failed (no command waits for ever). */
const COMMAND_TIMEOUT_MS = 2000;
/** How long start-up waits for Redis before giving up with one clear line. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How long a routed command waits for the holding instance to say whether it delivered. */
const ROUTE_TIMEOUT_MS = 3000;
/** Lapsed leases handled per reaper pass. */
const REAP_BATCH = 500;
/** Device ids per heartbeat script call. */
const RENEW_BATCH = 1000;

/**
 * Multi-instance mode (REDIS_URL): the Socket.IO Redis adapter, Redis sessions, a Redis-backed
 * login throttle and the Redis fabric (device routing and presence). Fails start-up with one
 * clear error when Redis cannot be reached within 10 s.
 */
export async function createCluster(config: Config, storage: Storage, log: Logger): Promise<ClusterParts> {
  const url = config.redisUrl;
  if (!url) throw new Error('createCluster needs REDIS_URL');
  const ns = namespace(url);
  const clog = log.child({ component: 'redis' });

  const cmd = redisClient(url, COMMAND_TIMEOUT_MS);
  // Subscriptions are replayed by node-redis after a reconnect.
  const sub = redisClient(url);
  let closing = false;
  watchConnection(cmd, 'commands', clog, () => closing);
  watchConnection(sub, 'subscriber', clog, () => closing);
  await connectWithin([cmd, sub], CONNECT_TIMEOUT_MS, url);

  const fabric = new RedisFabric({ cmd, sub, storage, log: clog, ns, leaseMs: config.presenceTtlS * 1000 });
  await fabric.start();

  const sessionStore = new RedisStore({ client: cmd, prefix: `${ns}:sess:` });
  const throttle = createLoginThrottle(
    config.loginMaxAttempts,
    (limit) =>
      new RateLimiterRedis({
        ...limit,
        storeClient: cmd,
        useRedisPackage: true,
        keyPrefix: `${ns}:${limit.keyPrefix}`,
        // While Redis is away each instance counts on its own rather than letting logins fail.
        rejectIfRedisNotReady: true,
        insuranceLimiter: new RateLimiterMemory(limit),
      }),
  );

  let closed: Promise<void> | null = null;
  return {
    fabric,
    sessionStore,
    throttle,
    async attachAdapter(io: IO) {
      const onError = (err: unknown) => clog.debug({ err }, 'socket.io adapter: redis command failed');
      io.adapter(createAdapter(guard(cmd, onError), guard(sub, onError), { key: `${ns}:sio` }));
      fabric.attachIO(io);
    },
    close() {
      closed ??= (async () => {
        closing = true;
        await fabric.close();
        await Promise.all([quit(sub), quit(cmd)]);
      })();
      return closed;
    },
  };
}

/**
 * Offline queue off and the queue bounded: while Redis is away commands fail at once instead of
 * piling up in memory. Reconnects back off to one attempt every 2 s.
 */
function redisClient(url: string, commandTimeoutMs?: number) {
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
function namespace(url: string): string {
  const db = Number(new URL(url).pathname.slice(1) || '0');
  return `sockpit:${Number.isInteger(db) ? db : 0}`;
}

function watchConnection(client: Redis, name: string, log: Logger, closing: () => boolean): void {
  // Before the first connection, start-up reports the failure itself.
  let down = true;
  const lost = (err?: unknown) => {
    if (down || closing()) return;
    down = true;
    log.warn({ err, connection: name }, 'redis unreachable; serving this instance on its own until it returns');
  };
  // node-redis emits 'error' for every failed reconnect attempt; log the outage once.
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

async function connectWithin(clients: Redis[], ms: number, url: string): Promise<void> {
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

async function quit(client: Redis): Promise<void> {
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
function guard(client: Redis, onError: (err: unknown) => void): Redis {
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

// ---- fabric ----

/** Milliseconds on the Redis server's clock, so instances with skewed clocks agree on leases. */
const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS: holders, leases. ARGV: device, instance, leaseMs. Returns the previous live holder or ''. */
const CLAIM = `${NOW}
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local lease = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or 0)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
if prev and prev ~= ARGV[2] and lease > now then return prev end
return ''`;

/** KEYS: holders, leases. ARGV: device, instance. Releases our hold; returns another live holder or ''. */
const RELEASE = `${NOW}
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return '' end
if h == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return ''
end
if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or 0) > now then return h end
return ''`;

/**
 * KEYS: holders, leases. ARGV: instance, leaseMs, devices... For each device: 0 = lease renewed,
 * 1 = re-claimed (its lease had lapsed or was reaped), 2 = another instance holds it now.
 */
const RENEW = `${NOW}
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local h = redis.call('HGET', KEYS[1], id)
  local live = tonumber(redis.call('ZSCORE', KEYS[2], id) or 0) > now
  if h and h ~= ARGV[1] and live then
    out[#out + 1] = 2
  else
    redis.call('HSET', KEYS[1], id, ARGV[1])
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    out[#out + 1] = (h == ARGV[1] and live) and 0 or 1
  end
end
return out`;

/** KEYS: holders, leases. ARGV: limit. Removes lapsed leases atomically; returns their devices. */
const REAP = `${NOW}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[1], id)
end
return ids`;

/** KEYS: holders, leases. ARGV: devices... Returns each device's live holder or ''. */
const HOLDERS = `${NOW}
local out = {}
for i = 1, #ARGV do
  local h = redis.call('HGET', KEYS[1], ARGV[i])
  if h and tonumber(redis.call('ZSCORE', KEYS[2], ARGV[i]) or 0) > now then out[i] = h else out[i] = '' end
end
return out`;

const message = z.discriminatedUnion('t', [
  z.object({ t: z.literal('deliver'), req: z.string().max(64), from: z.string().max(300), commandId: z.string().max(64) }),
  z.object({ t: z.literal('delivered'), req: z.string().max(64), ok: z.boolean() }),
  z.object({ t: z.literal('replaced'), deviceId: z.string().max(300), at: z.number() }),
]);
type Message = z.infer<typeof message>;

export interface RedisFabricOptions {
  cmd: Redis;
  sub: Redis;
  storage: Storage;
  log: Logger;
  /** Prefix of every key and channel. */
  ns: string;
  /** A device's presence lease; the instance holding it renews it every third of this. */
  leaseMs: number;
  instanceId?: string;
}

/**
 * Device routing and presence across instances.
 *
 * - A hash maps each device to the instance holding its TCP connection, and a sorted set holds
 *   each device's lease expiry. The holder renews its leases every leaseMs/3.
 * - A command for a device held elsewhere is published on the holder's own channel; the holder
 *   delivers it and answers on the sender's channel.
 * - Every instance runs a reaper: a lease that lapsed (its instance died or lost Redis) is
 *   removed by exactly one instance, which emits `device:status` offline. Bound: presence reads
 *   offline at most leaseMs after the holder's last renewal, and the event follows within the
 *   reaper period (≤ 2 s).
 * - While Redis is unreachable the instance serves the devices connected to it on its own, and
 *   on reconnect it re-asserts its leases and delivers what was queued meanwhile.
 */
export class RedisFabric implements Fabric {
  readonly kind = 'redis' as const;
  readonly instanceId: string;
  private readonly keys: [holders: string, leases: string];
  private deliver: ((cmd: Command) => Promise<boolean>) | null = null;
  private replaced: ((deviceId: string, at: number) => void) | null = null;
  private io: IO | null = null;
  /** Devices connected to this instance, so they are served while Redis is away. */
  private readonly held = new Set<string>();
  /** Presence changes Redis missed while unreachable; replayed when it returns. */
  private readonly unclaimed = new Set<string>();
  private readonly unreleased = new Set<string>();
  private readonly waiting = new Map<string, (ok: boolean) => void>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly onReady = () => void this.recover();
  private closed = false;

  constructor(private readonly opts: RedisFabricOptions) {
    this.instanceId = opts.instanceId ?? `${os.hostname()}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
    this.keys = [`${opts.ns}:holders`, `${opts.ns}:leases`];
  }

  private channel(instance: string): string {
    return `${this.opts.ns}:fabric:${instance}`;
  }

  /** Subscribes to this instance's channel and starts the heartbeat and the reaper. */
  async start(): Promise<void> {
    await this.opts.sub.subscribe(this.channel(this.instanceId), (raw) => void this.onMessage(raw));
    this.every(this.opts.leaseMs / 3, () => this.heartbeat());
    this.every(Math.min(2000, this.opts.leaseMs / 5), () => this.reap());
    this.opts.cmd.on('ready', this.onReady);
  }

  /** Where offline/online corrections are emitted (through the adapter, so to every instance). */
  attachIO(io: IO): void {
    this.io = io;
  }

  onDeliver(handler: (cmd: Command) => Promise<boolean>): void {
    this.deliver = handler;
  }

  onReplaced(handler: (deviceId: string, at: number) => void): void {
    this.replaced = handler;
  }

  async route(cmd: Command): Promise<boolean> {
    let holder: string;
    try {
      [holder = ''] = await this.holders([cmd.deviceId]);
    } catch (err) {
      // Redis is away: a device connected here is still ours to serve.
      if (this.held.has(cmd.deviceId)) return this.deliverHere(cmd);
      throw err;
    }
    if (holder === '' || holder === this.instanceId) return this.held.has(cmd.deviceId) ? this.deliverHere(cmd) : false;
    return this.ask(holder, cmd);
  }

  async deviceOnline(deviceId: string): Promise<void> {
    this.held.add(deviceId);
    this.unreleased.delete(deviceId);
    try {
      const previous = await this.claim(deviceId);
      this.unclaimed.delete(deviceId);
      if (previous) {
        this.opts.log.info({ device: deviceId, previous }, 'device moved here from another instance');
        // The old connection may linger half-open there; tell that instance to close it.
        const msg: Message = { t: 'replaced', deviceId, at: Date.now() };
        void this.opts.cmd.publish(this.channel(previous), JSON.stringify(msg)).catch(() => {});
      }
    } catch (err) {
      this.unclaimed.add(deviceId);
      throw err;
    }
  }

  async deviceOffline(deviceId: string, _lastSeen: number): Promise<void> {
    this.held.delete(deviceId);
    this.unclaimed.delete(deviceId);
    try {
      const other = await this.release(deviceId);
      // The device is connected to another instance by now; the offline the caller announced is stale.
      if (other) this.emitStatus(deviceId, true, Date.now());
    } catch (err) {
      this.unreleased.add(deviceId);
      throw err;
    }
  }

  async presence(deviceIds: string[]): Promise<Map<string, PresenceEntry>> {
    const out = new Map<string, PresenceEntry>();
    if (deviceIds.length === 0) return out;
    let holders: string[];
    try {
      holders = await this.holders(deviceIds);
    } catch (err) {
      this.opts.log.debug({ err }, 'presence from this instance only (redis unreachable)');
      holders = deviceIds.map((id) => (this.held.has(id) ? this.instanceId : ''));
    }
    deviceIds.forEach((id, i) => {
      if (holders[i]) out.set(id, { online: true, lastSeen: null });
    });
    return out;
  }

  async healthy(): Promise<boolean> {
    if (!this.opts.cmd.isReady || !this.opts.sub.isReady) return false;
    return this.opts.cmd
      .withCommandOptions({ timeout: 1000 })
      .ping()
      .then(
        () => true,
        () => false,
      );
  }

  /** Stops the timers; leases of devices still held lapse on their own (graceful shutdown closes devices first). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.opts.cmd.off('ready', this.onReady);
    for (const settle of [...this.waiting.values()]) settle(false);
    await this.opts.sub.unsubscribe(this.channel(this.instanceId)).catch(() => {});
  }

  // ---- Redis operations ----

  private async eval(script: string, args: string[]): Promise<unknown> {
    return this.opts.cmd.eval(script, { keys: this.keys, arguments: args });
  }

  private async claim(deviceId: string): Promise<string> {
    return String(await this.eval(CLAIM, [deviceId, this.instanceId, String(this.opts.leaseMs)]));
  }

  private async release(deviceId: string): Promise<string> {
    return String(await this.eval(RELEASE, [deviceId, this.instanceId]));
  }

  private async holders(deviceIds: string[]): Promise<string[]> {
    return strings(await this.eval(HOLDERS, deviceIds));
  }

  // ---- routing ----

  private async deliverHere(cmd: Command): Promise<boolean> {
    return this.deliver ? this.deliver(cmd) : false;
  }

  /** Asks the holding instance to deliver; false when it is gone, does not answer, or no longer has the device. */
  private async ask(holder: string, cmd: Command): Promise<boolean> {
    const req = crypto.randomUUID();
    let timer: NodeJS.Timeout | undefined;
    const answer = new Promise<boolean>((resolve) => {
      const settle = (ok: boolean) => {
        clearTimeout(timer);
        this.waiting.delete(req);
        resolve(ok);
      };
      timer = setTimeout(() => settle(false), ROUTE_TIMEOUT_MS);
      this.waiting.set(req, settle);
    });
    const msg: Message = { t: 'deliver', req, from: this.instanceId, commandId: cmd.id };
    try {
      const receivers = await this.opts.cmd.publish(this.channel(holder), JSON.stringify(msg));
      // Nobody listens: the holder died and its lease has not lapsed yet. The command stays queued.
      if (receivers === 0) this.waiting.get(req)?.(false);
    } catch (err) {
      this.waiting.get(req)?.(false);
      throw err;
    }
    return answer;
  }

  private async onMessage(raw: string): Promise<void> {
    let msg: Message;
    try {
      msg = message.parse(JSON.parse(raw));
    } catch {
      this.opts.log.warn('ignoring a malformed fabric message');
      return;
    }
    if (msg.t === 'delivered') {
      this.waiting.get(msg.req)?.(msg.ok);
      return;
    }
    if (msg.t === 'replaced') {
      this.replaced?.(msg.deviceId, msg.at);
      return;
    }
    let ok = false;
    try {
      const cmd = await this.opts.storage.getCommand(msg.commandId);
      ok = cmd !== null && (await this.deliverHere(cmd));
    } catch (err) {
      this.opts.log.warn({ err, command: msg.commandId }, 'could not deliver a routed command');
    }
    const reply: Message = { t: 'delivered', req: msg.req, ok };
    await this.opts.cmd.publish(this.channel(msg.from), JSON.stringify(reply)).catch((err: unknown) => {
      this.opts.log.warn({ err }, 'could not answer a routed command');
    });
  }

  // ---- presence upkeep ----

  private every(ms: number, task: () => Promise<void>): void {
    let running = false;
    const t = setInterval(() => {
      if (running || this.closed || !this.opts.cmd.isReady) return;
      running = true;
      task()
        .catch((err: unknown) => this.opts.log.warn({ err }, 'redis presence upkeep failed; will retry'))
        .finally(() => {
          running = false;
        });
    }, Math.max(100, Math.floor(ms)));
    t.unref();
    this.timers.push(t);
  }

  /** Replays what Redis missed, then renews every lease this instance holds. */
  private async heartbeat(): Promise<void> {
    for (const id of [...this.unreleased]) {
      const other = await this.release(id);
      this.unreleased.delete(id);
      if (other) this.emitStatus(id, true, Date.now());
    }
    for (const id of [...this.unclaimed]) {
      await this.claim(id);
      this.unclaimed.delete(id);
      this.emitStatus(id, true, Date.now());
    }
    const ids = [...this.held];
    for (let i = 0; i < ids.length; i += RENEW_BATCH) {
      const batch = ids.slice(i, i + RENEW_BATCH);
      const codes = numbers(await this.eval(RENEW, [this.instanceId, String(this.opts.leaseMs), ...batch]));
      batch.forEach((id, j) => {
        if (codes[j] === 1) this.emitStatus(id, true, Date.now());
        else if (codes[j] === 2) {
          // A newer connection of this device is on another instance; ours is stale.
          this.held.delete(id);
          this.opts.log.info({ device: id }, 'device is now held by another instance');
        }
      });
    }
  }

  private async reap(): Promise<void> {
    const lapsed = strings(await this.eval(REAP, [String(REAP_BATCH)]));
    for (const id of lapsed) {
      if (this.held.has(id)) {
        // Our own lease lapsed (this process stalled); the device is still here.
        this.unclaimed.add(id);
        continue;
      }
      const device = await this.opts.storage.getDevice(id).catch(() => null);
      this.opts.log.info({ device: id }, 'device lease lapsed; it is offline');
      this.emitStatus(id, false, device?.lastSeen ?? null);
    }
  }

  /** After an outage: re-assert presence, then deliver what other instances could only queue meanwhile. */
  private async recover(): Promise<void> {
    if (this.closed) return;
    try {
      await this.heartbeat();
      const now = Date.now();
      for (const id of [...this.held]) {
        for (const cmd of await this.opts.storage.queuedCommands(id, now)) await this.deliverHere(cmd);
      }
    } catch (err) {
      this.opts.log.warn({ err }, 'could not catch up after redis returned; the heartbeat will retry');
    }
  }

  private emitStatus(deviceId: string, online: boolean, lastSeen: number | null): void {
    this.io?.to(rooms.fleet).emit('device:status', { deviceId, online, lastSeen });
  }
}

function strings(reply: unknown): string[] {
  return Array.isArray(reply) ? reply.map((v) => String(v)) : [];
}

function numbers(reply: unknown): number[] {
  return Array.isArray(reply) ? reply.map((v) => Number(v)) : [];
}
