-- Take a shard lease when it is free (or held by this same pod), with a new fencing token.
-- KEYS[1] timeout:leader:{N}  KEYS[2] timeout:fence:{N}
-- ARGV[1] pod id  ARGV[2] ttl ms
-- returns: {1, lease value 'pod|token'} when taken, {0, current holder's value} otherwise
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return {0, current}
end
local value = ARGV[1] .. '|' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
