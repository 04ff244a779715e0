-- Give a shard lease up, if the caller still holds it.
-- KEYS[1] timeout:leader:{N}
-- ARGV[1] lease value 'pod|token'
-- returns: 1 when released, 0 when it was not the caller's
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
