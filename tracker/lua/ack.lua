-- After delivery: acknowledge every entry (and forget failed attempts when there were any).
-- KEYS[1] timeout_events:{N}  KEYS[2] delivery_attempts:{N}
-- ARGV[1] consumer group  ARGV[2] 1 when some entries had failed attempts to forget, else 0
-- ARGV[3..] entry ids
-- returns: number of entries acknowledged
if #ARGV < 3 then return 0 end
local entries = {unpack(ARGV, 3)}
if ARGV[2] == '1' then redis.call('HDEL', KEYS[2], unpack(entries)) end
return redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
