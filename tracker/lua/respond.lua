-- Stop conversations' clocks on customer responses, applied in order.
-- KEYS[1] conversations:{N}  KEYS[2] waiting_conversations:{N}
-- KEYS[3] notification_states:{N}  KEYS[4] retired_conversations:{N}  KEYS[5] timeout:epoch:{N}
-- ARGV[1] shard layout epoch the caller routed by
-- ARGV[2] how long an answered record is kept to recognise replays, ms
-- ARGV[3..] one per response: conversation id|customer message id|
--   timestamp ms (0: now, by Redis's clock)
-- returns: three values per response: status, response_time_ms (-1 when none), generation
--   status: answered | duplicate | stale | not_waiting
--   or the error 'EPOCH ...' (nothing written) when the shard has seen a newer layout
if not accept_epoch(KEYS[5], ARGV[1]) then return redis.error_reply(EPOCH_REFUSED) end
local events, ids = events_from(3, '^([^|]*)|([^|]*)|(-?%d+)$')
local records = load_records(KEYS[1], ids)
local saved, answered, retire_at = writes(), writes(), writes()
local out, now = {}, nil
local function clock()
  now = now or now_ms()
  return now
end
for _, e in ipairs(events) do
  local id, message_id, ts = e[1], e[2], tonumber(e[3])
  if ts == 0 then ts = clock() end
  local r = records[id]
  local status, response, gen = 'not_waiting', -1, 0
  if r then
    gen = tonumber(r[2])
    if r[1] == 'A' then
      if r[9] == message_id then status, response = 'duplicate', tonumber(r[10]) end
    elseif ts < tonumber(r[3]) then
      status = 'stale'
    else
      status, response = 'answered', ts - tonumber(r[3])
      r[1], r[7], r[9], r[10] = 'A', ts, message_id, response
      put(saved, id, join(r))
      put(answered, id, true)
      put(retire_at, id, clock() + tonumber(ARGV[2]))
    end
  end
  out[#out + 1], out[#out + 2], out[#out + 3] = status, response, gen
end
flush('HSET', KEYS[1], saved)
remove('ZREM', KEYS[2], answered)
remove('HDEL', KEYS[3], answered)
flush('ZADD', KEYS[4], retire_at, true)
return out
