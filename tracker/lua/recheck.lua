-- Before sending: is each notification still current for its conversation, and due?
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N} (records a reshard is moving)
-- KEYS[3] notification_states:{N}
-- ARGV[1..3] level multipliers
-- ARGV[4..] one per notification: conversation id|generation|due ms|level
-- returns: one code per notification (recheck_code's, or 3: not in this shard, a reshard
--   moved it: ask its new shard), then Redis's clock (ms)
-- Hot (every notification, at its due time): it reads a record's first four fields only.
local n, ids, gens, dues, levels = #ARGV - 3, {}, {}, {}, {}
for i = 1, n do
  ids[i], gens[i], dues[i], levels[i] = string.match(ARGV[i + 3], '^([^|]*)|(%d+)|(%d+)|(%d)$')
end
local multipliers = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local now = now_ms()
local function code(raw, fired, i)
  return recheck_code(raw, fired, gens[i], dues[i], levels[i], multipliers, now)
end
local out, absent, absent_ids = {}, {}, {}
local raws = n > 0 and redis.call('HMGET', KEYS[1], unpack(ids)) or {}
local fired = n > 0 and redis.call('HMGET', KEYS[3], unpack(ids)) or {}
for i = 1, n do
  if raws[i] then
    out[i] = code(raws[i], fired[i], i)
  else
    out[i] = 3
    absent[#absent + 1] = i
    absent_ids[#absent_ids + 1] = ids[i]
  end
end
if #absent > 0 then
  local moving = redis.call('HMGET', KEYS[2], unpack(absent_ids))
  for j, i in ipairs(absent) do
    if moving[j] then
      local raw, level = moving_record(moving[j])
      out[i] = code(raw, level, i)
    end
  end
end
out[n + 1] = now
return out
