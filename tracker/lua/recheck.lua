-- Before sending: is each notification still current for its conversation, and due?
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N} (records a reshard is moving)
-- ARGV one per notification: conversation id|generation|due ms
-- returns: one code per notification, then Redis's clock (ms):
--   1 send, 0 stale (answered or restarted), 2 not due yet (a consumer's clock runs ahead),
--   3 not in this shard (a reshard moved it: ask its new shard)
-- Hot (every notification, at its due time): it reads only a record's first two fields.
local n, ids, gens, dues = #ARGV, {}, {}, {}
for i = 1, n do
  ids[i], gens[i], dues[i] = string.match(ARGV[i], '^([^|]*)|(%d+)|(%d+)$')
end
local now = now_ms()
local function code(raw, i)
  local state, gen = string.match(raw, '^(%a)|(%d+)|')
  if gen ~= gens[i] or state == 'A' then return 0 end
  if tonumber(dues[i]) > now then return 2 end
  return 1
end
local out, absent, absent_ids = {}, {}, {}
local raws = n > 0 and redis.call('HMGET', KEYS[1], unpack(ids)) or {}
for i = 1, n do
  if raws[i] then
    out[i] = code(raws[i], i)
  else
    out[i] = 3
    absent[#absent + 1] = i
    absent_ids[#absent_ids + 1] = ids[i]
  end
end
if #absent > 0 then
  local moving = redis.call('HMGET', KEYS[2], unpack(absent_ids))
  for j, i in ipairs(absent) do
    if moving[j] then out[i] = code(moving[j], i) end
  end
end
out[n + 1] = now
return out
