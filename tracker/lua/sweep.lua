-- Fire due levels of one shard into its stream, re-arm the next level, retire old records.
-- KEYS[1] waiting_conversations:{N}  KEYS[2] notification_states:{N}
-- KEYS[3] conversations:{N}  KEYS[4] retired_conversations:{N}  KEYS[5] timeout_events:{N}
-- KEYS[6] timeout:leader:{N}  KEYS[7] metrics:timeouts:{N}
-- ARGV[1] lease value held by the caller (fencing)  ARGV[2] batch size (at most 1000)
-- ARGV[3..5] level multipliers  ARGV[6] retention of finished records, ms
-- ARGV[7] prefetch, ms (default 0): a level due within it is staged now; the consumers
--   hold it until its due time and re-check it then. Only a level actually due catches up.
-- returns: {fired, next_due_ms (-1 when none), redis_now_ms, more_due (0|1)}
--   or the error 'FENCED ...' when the caller no longer holds the lease
if redis.call('GET', KEYS[6]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
local now, batch = now_ms(), tonumber(ARGV[2])
local retention = tonumber(ARGV[6])
local horizon = now + tonumber(ARGV[7] or 0)
local multipliers, floor = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}, math.floor
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'WITHSCORES', 'LIMIT', 0, batch)
local ids = {}
for j = 1, #due, 2 do ids[#ids + 1] = due[j] end
local records = load_records(KEYS[3], ids)
local fired_level, next_due, done = writes(), writes(), writes()
local saved, retire_at, orphans = writes(), writes(), writes()
local fired, per_level = 0, {0, 0, 0}
for j = 1, #due, 2 do
  local id, score = due[j], tonumber(due[j + 1])
  local r = records[id]
  if not r then
    put(orphans, id, true)
  else
    local since, interval = tonumber(r[3]), tonumber(r[4])
    local at = {}
    for l = 1, 3 do at[l] = since + floor(multipliers[l] * interval + 0.5) end  -- level_offset
    -- The score is the due time of the next level, so it tells the last level fired.
    local last = nil
    for l = 1, 3 do
      if at[l] == score then last = l - 1 end
    end
    last = last or tonumber(redis.call('HGET', KEYS[2], id) or 0)
    local level = last
    for l = last + 1, 3 do
      if at[l] <= now then level = l end
    end
    if level == last and last < 3 and at[last + 1] <= horizon then level = last + 1 end
    if level > last then
      -- one field (see tracker/events.py): conversation|level|generation|waiting since|
      -- due|agent|agent message, cheaper to write, read and parse than seven
      redis.call('XADD', KEYS[5], '*', 'e',
        id .. '|' .. level .. '|' .. r[2] .. '|' .. r[3] .. '|' .. at[level] .. '|' .. r[5]
        .. '|' .. r[6])
      put(fired_level, id, level)
      per_level[level] = per_level[level] + 1
      fired = fired + 1
    end
    if level >= 3 then
      r[1] = 'E'
      put(done, id, true)
      put(saved, id, join(r))
      put(retire_at, id, now + retention)
    else
      put(next_due, id, at[level + 1])
    end
  end
end
flush('HSET', KEYS[2], fired_level)
flush('ZADD', KEYS[1], next_due, true)
remove('ZREM', KEYS[1], done)
remove('ZREM', KEYS[1], orphans)
remove('HDEL', KEYS[2], orphans)
flush('HSET', KEYS[3], saved)
flush('ZADD', KEYS[4], retire_at, true)
if fired > 0 then
  redis.call('HINCRBY', KEYS[7], 'total', fired)
  for l = 1, 3 do
    if per_level[l] > 0 then redis.call('HINCRBY', KEYS[7], 'level' .. l, per_level[l]) end
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, batch)
if #expired > 0 then
  redis.call('HDEL', KEYS[3], unpack(expired))
  redis.call('HDEL', KEYS[2], unpack(expired))
  redis.call('ZREM', KEYS[4], unpack(expired))
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local more = 0
if #due == 2 * batch or #expired == batch then more = 1 end
return {fired, tonumber(head[2]) or -1, now, more}
