-- Before sending: is each notification still current for its conversation?
-- KEYS[1] conversations:{N}
-- ARGV triples: conversation id, generation, level
-- returns: one code per triple: 1 send, 0 stale (answered or restarted), 2 already delivered
local out = {}
for i = 1, #ARGV, 3 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local code = 0
  if raw then
    local r = split(raw)
    if r[2] == ARGV[i + 1] and r[1] ~= 'A' then
      if tonumber(r[8]) >= tonumber(ARGV[i + 2]) then code = 2 else code = 1 end
    end
  end
  out[#out + 1] = code
end
return out
