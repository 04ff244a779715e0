-- Fire due levels of one shard into its stream, re-arm the next level, retire old records.
-- KEYS[1] waiting_conversations:{N}  KEYS[2] notification_states:{N}
-- KEYS[3] conversations:{N}  KEYS[4] retired_conversations:{N}  KEYS[5] timeout_events:{N}
-- KEYS[6] timeout:leader:{N}  KEYS[7] metrics:timeouts:{N}  KEYS[8] history:{N}
-- ARGV[1] lease value held by the caller (fencing)  ARGV[2] batch size (at most 1000)
-- ARGV[3..5] level multipliers  ARGV[6] retention of finished records and histories, ms
-- ARGV[7] prefetch, ms (default 0): a level due within it is staged now; the consumers
--   hold it until its due time and re-check it then. Only a level actually due catches up.
-- returns: {fired, next_due_ms (-1 when none), redis_now_ms, more_due (0|1)}
--   or the error 'FENCED ...' when the caller no longer holds the lease
-- Hot (every conversation, every level): one pass, plain argument arrays for the batched
-- writes (the ids of one ZRANGEBYSCORE are distinct), and a record's first six fields read
-- with one string.match, no table per conversation.
if redis.call('GET', KEYS[6]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease not held')
end
local now, batch = now_ms(), tonumber(ARGV[2])
local retention = tonumber(ARGV[6])
local horizon = now + tonumber(ARGV[7] or 0)
local m1, m2, m3 = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local floor, match, call = math.floor, string.match, redis.call
local due = call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'WITHSCORES', 'LIMIT', 0, batch)
local ids = {}
for j = 1, #due, 2 do ids[#ids + 1] = due[j] end
local raws = #ids > 0 and call('HMGET', KEYS[3], unpack(ids)) or {}
local FIELDS6 = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|'
local fired_level, next_due, done, saved, retire_at, orphans = {}, {}, {}, {}, {}, {}
local function due_of(level, a1, a2, a3)  -- no table per conversation
  if level == 1 then return a1 elseif level == 2 then return a2 end
  return a3
end
local fired, per_level, notes = 0, {0, 0, 0}, writes()
for k, id in ipairs(ids) do
  local raw, score = raws[k], tonumber(due[2 * k])
  if not raw then
    orphans[#orphans + 1] = id
  else
    local _, gen, since_s, interval_s, agent, message = match(raw, FIELDS6)
    local since, interval = tonumber(since_s), tonumber(interval_s)
    local a1 = since + floor(m1 * interval + 0.5)  -- level_offset, inlined
    local a2 = since + floor(m2 * interval + 0.5)
    local a3 = since + floor(m3 * interval + 0.5)
    -- The score is the due time of the next level, so it tells the last level fired.
    local last
    if score == a1 then last = 0
    elseif score == a2 then last = 1
    elseif score == a3 then last = 2
    else last = tonumber(call('HGET', KEYS[2], id) or 0) end
    local level = last  -- the highest level actually due catches up...
    if a3 <= now then level = 3 elseif a2 <= now then level = 2 elseif a1 <= now then level = 1 end
    if level < last then level = last end
    if level == last and last < 3 and due_of(last + 1, a1, a2, a3) <= horizon then
      level = last + 1  -- ...else the next one is staged, if within reach
    end
    for skipped = last + 1, level - 1 do  -- caught up: fired the highest due level only
      note(notes, id, 'K|' .. now .. '|' .. gen .. '|' .. skipped)
    end
    if level > last then
      -- one field (see tracker/delivery/notification.py): conversation|level|generation|waiting since|
      -- due|agent|agent message, cheaper to write, read and parse than seven
      call('XADD', KEYS[5], '*', 'e',
        id .. '|' .. level .. '|' .. gen .. '|' .. since_s .. '|' .. due_of(level, a1, a2, a3)
        .. '|' .. agent .. '|' .. message)
      fired_level[#fired_level + 1] = id
      fired_level[#fired_level + 1] = level
      per_level[level] = per_level[level] + 1
      fired = fired + 1
    end
    if level >= 3 then
      done[#done + 1] = id
      saved[#saved + 1] = id
      saved[#saved + 1] = 'E' .. string.sub(raw, 2)  -- the state is the first character
      retire_at[#retire_at + 1] = now + retention
      retire_at[#retire_at + 1] = id
    else
      next_due[#next_due + 1] = due_of(level + 1, a1, a2, a3)
      next_due[#next_due + 1] = id
    end
  end
end
if #fired_level > 0 then call('HSET', KEYS[2], unpack(fired_level)) end
if #next_due > 0 then call('ZADD', KEYS[1], unpack(next_due)) end
if #done > 0 then call('ZREM', KEYS[1], unpack(done)) end
if #orphans > 0 then
  call('ZREM', KEYS[1], unpack(orphans))
  call('HDEL', KEYS[2], unpack(orphans))
end
if #saved > 0 then call('HSET', KEYS[3], unpack(saved)) end
if #retire_at > 0 then call('ZADD', KEYS[4], unpack(retire_at)) end
if fired > 0 then
  call('HINCRBY', KEYS[7], 'total', fired)
  for l = 1, 3 do
    if per_level[l] > 0 then call('HINCRBY', KEYS[7], 'level' .. l, per_level[l]) end
  end
end
append_history(KEYS[8], notes)
local expired = call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, batch)
if #expired > 0 then
  call('HDEL', KEYS[3], unpack(expired))
  call('HDEL', KEYS[2], unpack(expired))
  call('HDEL', KEYS[8], unpack(expired))
  call('ZREM', KEYS[4], unpack(expired))
end
local head = call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local more = 0
if #due == 2 * batch or #expired == batch then more = 1 end
return {fired, tonumber(head[2]) or -1, now, more}
