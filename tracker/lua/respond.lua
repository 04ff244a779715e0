-- Stop a conversation's clock on a customer response.
-- KEYS[1] conversations:{N}  KEYS[2] waiting_conversations:{N}
-- KEYS[3] notification_states:{N}  KEYS[4] retired_conversations:{N}
-- ARGV[1] conversation id  ARGV[2] customer message id  ARGV[3] response timestamp ms (0: now)
-- ARGV[4] how long an answered record is kept to recognise replays, ms
-- returns: {status, response_time_ms (-1 when none), generation}
--   status: answered | duplicate | stale | not_waiting
local id, ts = ARGV[1], tonumber(ARGV[3])
if ts == 0 then ts = now_ms() end
local raw = redis.call('HGET', KEYS[1], id)
if not raw then
  return {'not_waiting', -1, 0}
end
local r = split(raw)
local gen = tonumber(r[2])
if r[1] == 'A' then
  if r[9] == ARGV[2] then
    return {'duplicate', tonumber(r[10]), gen}
  end
  return {'not_waiting', -1, gen}
end
if ts < tonumber(r[3]) then
  return {'stale', -1, gen}
end
local response = ts - tonumber(r[3])
r[1], r[7], r[9], r[10] = 'A', ts, ARGV[2], response
redis.call('HSET', KEYS[1], id, join(r))
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
redis.call('ZADD', KEYS[4], now_ms() + tonumber(ARGV[4]), id)
return {'answered', response, gen}
