-- Before sending: is each notification still current for its conversation?
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N} (records a reshard is moving)
-- ARGV one per notification: conversation id|generation
-- returns: one code per notification: 1 send, 0 stale (answered or restarted),
--   3 not in this shard (a reshard moved it: ask its new shard)
local asks, ids = {}, {}
for i = 1, #ARGV do
  local id, gen = string.match(ARGV[i], '^(.*)|(%d+)$')
  asks[i] = {id, gen}
  ids[i] = id
end
local records = load_records(KEYS[1], ids)
local absent = {}
for _, id in ipairs(ids) do
  if not records[id] then absent[#absent + 1] = id end
end
local moving = load_records(KEYS[2], absent)
local out = {}
for i, ask in ipairs(asks) do
  local r = records[ask[1]] or moving[ask[1]]
  local code = 3
  if r then
    code = (r[2] == ask[2] and r[1] ~= 'A') and 1 or 0
  end
  out[i] = code
end
return out
