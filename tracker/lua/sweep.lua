-- Fire due levels of one shard into its stream, re-arm the next level, retire old records.
-- KEYS[1] waiting_conversations:{N}  KEYS[2] notification_states:{N}
-- KEYS[3] conversations:{N}  KEYS[4] retired_conversations:{N}  KEYS[5] timeout_events:{N}
-- KEYS[6] timeout:leader:{N}  KEYS[7] metrics:timeouts:{N}
-- ARGV[1] lease value held by the caller (fencing)  ARGV[2] batch size
-- ARGV[3..5] level multipliers  ARGV[6] retention of finished records, ms
-- returns: {fired, next_due_ms (-1 when none), redis_now_ms, more_due (0|1)}
--   or the error 'FENCED ...' when the caller no longer holds the lease
if redis.call('GET', KEYS[6]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
local now, batch = now_ms(), tonumber(ARGV[2])
local retention = tonumber(ARGV[6])
local fired = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(due) do
  local raw = redis.call('HGET', KEYS[3], id)
  if not raw then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  else
    local r = split(raw)
    local since, interval = tonumber(r[3]), tonumber(r[4])
    local last = tonumber(redis.call('HGET', KEYS[2], id) or 0)
    local level = last
    for l = last + 1, 3 do
      if since + level_offset(ARGV[2 + l], interval) <= now then level = l end
    end
    if level > last then
      redis.call('XADD', KEYS[5], '*', 'c', id, 'l', level, 'g', r[2], 's', since,
        'd', since + level_offset(ARGV[2 + level], interval), 'a', r[5], 'm', r[6])
      redis.call('HSET', KEYS[2], id, level)
      redis.call('HINCRBY', KEYS[7], 'total', 1)
      redis.call('HINCRBY', KEYS[7], 'level' .. level, 1)
      fired = fired + 1
    end
    if level >= 3 then
      redis.call('ZREM', KEYS[1], id)
      r[1] = 'E'
      redis.call('HSET', KEYS[3], id, join(r))
      redis.call('ZADD', KEYS[4], now + retention, id)
    else
      redis.call('ZADD', KEYS[1], since + level_offset(ARGV[3 + level], interval), id)
    end
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[4], id)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if head[2] then next_due = tonumber(head[2]) end
local more = 0
if #due == batch or #expired == batch then more = 1 end
return {fired, next_due, now, more}
