-- Extend a shard lease this caller holds.
-- KEYS[1] timeout:leader:{N}
-- ARGV[1] lease value 'pod|token'  ARGV[2] ttl ms
-- returns: 1 when renewed, 0 when the lease is no longer the caller's
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
