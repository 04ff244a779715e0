-- Before sending: is each notification still current for its conversation?
-- KEYS[1] conversations:{N}
-- ARGV triples: conversation id, generation, level
-- returns: one code per triple: 1 send, 0 stale (answered or restarted), 2 already delivered
local ids = {}
for i = 1, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local records = load_records(KEYS[1], ids)
local out = {}
for i = 1, #ARGV, 3 do
  local r = records[ARGV[i]]
  local code = 0
  if r and r[2] == ARGV[i + 1] and r[1] ~= 'A' then
    local mask = 2 ^ (tonumber(ARGV[i + 2]) - 1)
    code = (bit.band(tonumber(r[8]), mask) ~= 0) and 2 or 1
  end
  out[#out + 1] = code
end
return out
