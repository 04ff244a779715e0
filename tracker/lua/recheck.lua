-- Before sending: is each notification still current for its conversation, and due?
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N} (records a reshard is moving)
-- ARGV one per notification: conversation id|generation|due ms
-- returns: one code per notification, then Redis's clock (ms):
--   1 send, 0 stale (answered or restarted), 2 not due yet (a consumer's clock runs ahead),
--   3 not in this shard (a reshard moved it: ask its new shard)
local asks, ids = {}, {}
for i = 1, #ARGV do
  local id, gen, due = string.match(ARGV[i], '^(.*)|(%d+)|(%d+)$')
  asks[i] = {id, gen, tonumber(due)}
  ids[i] = id
end
local records = load_records(KEYS[1], ids)
local absent = {}
for _, id in ipairs(ids) do
  if not records[id] then absent[#absent + 1] = id end
end
local moving = load_records(KEYS[2], absent)
local now = now_ms()
local out = {}
for i, ask in ipairs(asks) do
  local r = records[ask[1]] or moving[ask[1]]
  local code = 3
  if r then
    code = (r[2] == ask[2] and r[1] ~= 'A') and 1 or 0
    if code == 1 and ask[3] > now then code = 2 end
  end
  out[i] = code
end
out[#asks + 1] = now
return out
