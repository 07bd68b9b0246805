/**
 * The Lua scripts of device presence in Redis. Each runs atomically on the Redis server.
 * KEYS are always: holders (hash device → instance), leases (sorted set device → expiry),
 * transports (hash device → tcp | websocket | mqtt).
 */

/** Milliseconds on the Redis server's clock, so instances with skewed clocks agree on leases. */
const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** ARGV: device, instance, leaseMs, transport. Returns the previous live holder or ''. */
export const CLAIM = `${NOW}
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local lease = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or 0)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
if prev and prev ~= ARGV[2] and lease > now then return prev end
return ''`;

/** ARGV: device, instance. Releases our hold; returns another live holder or ''. */
export const RELEASE = `${NOW}
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return '' end
if h == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return ''
end
if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or 0) > now then return h end
return ''`;

/**
 * ARGV: instance, leaseMs, then device, transport pairs. For each device: 0 = lease renewed,
 * 1 = re-claimed (its lease had lapsed or was reaped), 2 = another instance holds it now.
 */
export const RENEW = `${NOW}
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HGET', KEYS[1], id)
  local live = tonumber(redis.call('ZSCORE', KEYS[2], id) or 0) > now
  if h and h ~= ARGV[1] and live then
    out[#out + 1] = 2
  else
    redis.call('HSET', KEYS[1], id, ARGV[1])
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
    redis.call('HSET', KEYS[3], id, ARGV[i + 1])
    out[#out + 1] = (h == ARGV[1] and live) and 0 or 1
  end
end
return out`;

/** ARGV: limit. Removes lapsed leases atomically; returns their devices. */
export const REAP = `${NOW}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
end
return ids`;

/** ARGV: devices. Returns, per device, its live holder and transport, or two ''. */
export const HOLDERS = `${NOW}
local out = {}
for i = 1, #ARGV do
  local h = redis.call('HGET', KEYS[1], ARGV[i])
  if h and tonumber(redis.call('ZSCORE', KEYS[2], ARGV[i]) or 0) > now then
    out[#out + 1] = h
    out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[i]) or ''
  else
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out`;
