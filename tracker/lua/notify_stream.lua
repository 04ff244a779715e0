-- Append a batch of notifications to the outbound stream, one entry each, in one call.
-- KEYS[1] the outbound stream (NOTIFY_STREAM)
-- ARGV[1] approximate length cap  ARGV[2] n, the number of fields of an event
-- ARGV[3 .. 2+n] the field names; then n values per event, in the same order
-- returns: the number of entries added
local n = tonumber(ARGV[2])
local added = 0
for i = 3 + n, #ARGV, n do
  local fields = {}
  for f = 1, n do
    fields[2 * f - 1] = ARGV[2 + f]
    fields[2 * f] = ARGV[i + f - 1]
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
  added = added + 1
end
return added
