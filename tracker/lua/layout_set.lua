-- Change the shard layout, compare-and-set on its epoch (two reshards cannot interleave).
-- KEYS[1] timeout:shards
-- ARGV[1] the epoch the caller read  ARGV[2] new shard count
-- ARGV[3] previous shard count while conversations move, '' when the layout is settled
-- ARGV[4] new epoch
-- returns: 1 when set, 0 when the layout changed since the caller read it
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or 0)
if epoch ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'count', ARGV[2], 'epoch', ARGV[4])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'previous')
else
  redis.call('HSET', KEYS[1], 'previous', ARGV[3])
end
return 1
