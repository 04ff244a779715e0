-- Start or restart a conversation's clock from an agent message.
-- KEYS[1] conversations:{N}  KEYS[2] waiting_conversations:{N}
-- KEYS[3] notification_states:{N}  KEYS[4] retired_conversations:{N}
-- ARGV[1] conversation id  ARGV[2] agent id  ARGV[3] agent message id
-- ARGV[4] message timestamp ms (0: now, by Redis's clock)  ARGV[5] interval ms  ARGV[6] level-1 multiplier
-- ARGV[7] wake channel (published when the shard's earliest deadline moves earlier)
-- returns: {status, generation, waiting_since_ms, next_due_ms}
--   status: started | restarted | duplicate | stale
local id, ts = ARGV[1], tonumber(ARGV[4])
if ts == 0 then ts = now_ms() end
local raw = redis.call('HGET', KEYS[1], id)
local gen, status = 0, 'started'
if raw then
  local r = split(raw)
  local due = tonumber(redis.call('ZSCORE', KEYS[2], id) or -1)
  if r[6] == ARGV[3] then
    return {'duplicate', tonumber(r[2]), tonumber(r[3]), due}
  end
  if ts < tonumber(r[7]) then
    return {'stale', tonumber(r[2]), tonumber(r[3]), due}
  end
  gen = tonumber(r[2])
  if r[1] ~= 'A' then status = 'restarted' end
end
gen = gen + 1
local interval = tonumber(ARGV[5])
local due = ts + level_offset(ARGV[6], interval)
redis.call('HSET', KEYS[1], id, join({'W', gen, ts, interval, ARGV[2], ARGV[3], ts, 0, '', ''}))
redis.call('HDEL', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[2], due, id)
if head[2] == nil or due < tonumber(head[2]) then
  redis.call('PUBLISH', ARGV[7], due)
end
return {status, gen, ts, due}
