-- Before sending: is each notification still current for its conversation?
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N} (records a reshard is moving)
-- ARGV one per notification: conversation id|generation|level
-- returns: one code per notification: 1 send, 0 stale (answered or restarted),
--   2 already delivered, 3 not in this shard (a reshard moved it: ask its new shard)
local asks, ids = {}, {}
for i = 1, #ARGV do
  local id, gen, level = string.match(ARGV[i], '^(.*)|(%d+)|(%d+)$')
  asks[i] = {id, gen, tonumber(level)}
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
    code = 0
    if r[2] == ask[2] and r[1] ~= 'A' then
      code = (bit.band(tonumber(r[8]), 2 ^ (ask[3] - 1)) ~= 0) and 2 or 1
    end
  end
  out[i] = code
end
return out
