-- Before sending: is each notification still current for its conversation, and due?
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N} (records a reshard is moving)
-- KEYS[3] notification_states:{N}
-- ARGV[1..3] level multipliers
-- ARGV[4..] one per notification: conversation id|generation|due ms|level
-- returns: one code per notification, then Redis's clock (ms):
--   1 send, 0 stale (answered or restarted), 2 not due yet (a consumer's clock runs ahead),
--   3 not in this shard (a reshard moved it: ask its new shard),
--   4 superseded: a higher level of the same period is staged and due (it is sent, or was:
--     a lower level never follows it)
-- Hot (every notification, at its due time): it reads a record's first four fields only.
local n, ids, gens, dues, levels = #ARGV - 3, {}, {}, {}, {}
for i = 1, n do
  ids[i], gens[i], dues[i], levels[i] = string.match(ARGV[i + 3], '^([^|]*)|(%d+)|(%d+)|(%d)$')
end
local multipliers = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local now = now_ms()
local function code(raw, fired, i)
  local state, gen, since, interval = string.match(raw, '^(%a)|(%d+)|(%d+)|(%d+)|')
  if gen ~= gens[i] or state == 'A' then return 0 end
  if tonumber(dues[i]) > now then return 2 end
  fired = tonumber(fired or 0)
  if fired > tonumber(levels[i])
    and tonumber(since) + level_offset(multipliers[fired], tonumber(interval)) <= now then
    return 4
  end
  return 1
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
    if moving[j] then  -- record|due|level|retire_at (migrate_out.lua)
      local p = split(moving[j], RECORD_FIELDS + 3)
      out[i] = code(moving[j], p[RECORD_FIELDS + 2] ~= '' and p[RECORD_FIELDS + 2] or 0, i)
    end
  end
end
out[n + 1] = now
return out
