-- Append a batch of notifications to the outbound stream, one entry each, in one call.
-- KEYS[1] the outbound stream (NOTIFY_STREAM)
-- ARGV[1] approximate length cap  ARGV[2] the field names, joined by '|'
-- ARGV[3..] one event each: its values in the order of the names, joined by '|'
--   (one argument per event: the client packs a batch much faster than 8 per event)
-- returns: the number of entries added
local names = split(ARGV[2])
for i = 3, #ARGV do
  local values = split(ARGV[i])
  local fields = {}
  for f = 1, #names do
    fields[2 * f - 1] = names[f]
    fields[2 * f] = values[f]
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
end
return #ARGV - 2
