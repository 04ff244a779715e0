-- Append a batch of notifications to the outbound stream, one entry each, in one call.
-- KEYS[1] the outbound stream (NOTIFY_STREAM)
-- ARGV[1] approximate length cap  ARGV[2] the field names, joined by '|'
-- ARGV[3..] one event each: its values in the order of the names, joined by '|'
--   (one argument per event: the client packs a batch much faster than 8 per event)
-- returns: the number of entries added
local fields, n = {}, 0  -- name, value, name, value...: the names set once, values per event
for name in string.gmatch(ARGV[2], '[^|]+') do
  fields[2 * n + 1] = name
  n = n + 1
end
for i = 3, #ARGV do
  local values = split(ARGV[i], n)
  for f = 1, n do fields[2 * f] = values[f] end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])  -- once a batch, not once an entry
return #ARGV - 2
