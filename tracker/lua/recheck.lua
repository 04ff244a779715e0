-- Before sending: is each notification still current for its conversation?
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N} (records a reshard is moving)
-- ARGV triples: conversation id, generation, level
-- returns: one code per triple: 1 send, 0 stale (answered or restarted), 2 already delivered,
--   3 not in this shard (a reshard moved it: ask its new shard)
local ids = {}
for i = 1, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local records = load_records(KEYS[1], ids)
local absent = {}
for _, id in ipairs(ids) do
  if not records[id] then absent[#absent + 1] = id end
end
local moving = load_records(KEYS[2], absent)
local out = {}
for i = 1, #ARGV, 3 do
  local r = records[ARGV[i]] or moving[ARGV[i]]
  local code = 3
  if r then
    code = 0
    if r[2] == ARGV[i + 1] and r[1] ~= 'A' then
      local mask = 2 ^ (tonumber(ARGV[i + 2]) - 1)
      code = (bit.band(tonumber(r[8]), mask) ~= 0) and 2 or 1
    end
  end
  out[#out + 1] = code
end
return out
