-- Append a batch of notifications to the outbound stream, one entry each, in one call.
-- KEYS[1] the outbound stream (NOTIFY_STREAM)
-- ARGV[1] approximate length cap  ARGV[2..9] the eight field names
-- ARGV[10..] eight values per event, in the order of the names
-- returns: the number of entries added
-- Hot (every notification, at its due time): the eight pairs are spelled out, as building
-- a table per entry and unpacking it costs more than the XADD itself.
local a, call, key = ARGV, redis.call, KEYS[1]
local n1, n2, n3, n4, n5, n6, n7, n8 = unpack(a, 2, 9)
for i = 10, #a, 8 do
  call('XADD', key, '*', n1, a[i], n2, a[i + 1], n3, a[i + 2], n4, a[i + 3], n5, a[i + 4],
    n6, a[i + 5], n7, a[i + 6], n8, a[i + 7])
end
call('XTRIM', key, 'MAXLEN', '~', a[1])  -- once a batch, not once an entry
return (#a - 9) / 8
