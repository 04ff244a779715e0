-- Put dead letters back on their shard stream, each at most once (two operators replaying
-- the same entry at the same time put it back once).
-- Each one replayed is noted in its conversation's history (R).
-- KEYS[1] dead_letters:{N}  KEYS[2] timeout_events:{N}  KEYS[3] history:{N}
-- KEYS[4] conversations:{N}
-- ARGV[1] the shard stream entry's field name (e)
-- ARGV[2..] pairs: dead-letter entry id, the shard stream entry's value
-- returns: per pair, the new shard stream entry id, or false when that dead letter is gone
local out, notes, now = {}, writes(), now_ms()
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if #redis.call('XRANGE', KEYS[1], id, id) == 1 then
    out[#out + 1] = redis.call('XADD', KEYS[2], '*', ARGV[1], ARGV[i + 1])
    redis.call('XDEL', KEYS[1], id)
    local c, level, gen = string.match(ARGV[i + 1], '^([^|]*)|(%d)|(%d+)|')
    if c then note(notes, c, 'R|' .. now .. '|' .. gen .. '|' .. level) end
  else
    out[#out + 1] = false
  end
end
append_history(KEYS[3], notes, KEYS[4])
return out
