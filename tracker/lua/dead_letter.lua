-- Move one undeliverable entry to the dead-letter stream and acknowledge it, atomically.
-- KEYS[1] timeout_events:{N}  KEYS[2] dead_letters:{N}  KEYS[3] delivery_attempts:{N}
-- ARGV[1] consumer group  ARGV[2] entry id  ARGV[3] reason  ARGV[4] attempts
-- ARGV[5..] the entry's field/value pairs
-- returns: the dead-letter entry id
local fields = {'reason', ARGV[3], 'attempts', ARGV[4], 'source_id', ARGV[2]}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local dl = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return dl
