-- Move one undeliverable entry to the dead-letter stream and acknowledge it, atomically.
-- KEYS[1] timeout_events:{N}  KEYS[2] dead_letters:{N}  KEYS[3] delivery_attempts:{N}
-- KEYS[4] history:{N}  KEYS[5] conversations:{N}
-- ARGV[1] consumer group  ARGV[2] entry id  ARGV[3] reason  ARGV[4] attempts
-- ARGV[5] conversation id|generation|level for the history ('' for an entry that could not
--   be read: it has no conversation to note it in)
-- ARGV[6..] the dead letter's field/value pairs (the notification's readable fields, or
--   an unreadable entry's own fields as they were)
-- returns: the dead-letter entry id
local fields = {'reason', ARGV[3], 'attempts', ARGV[4], 'source_id', ARGV[2]}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local dl = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2], ARGV[2] .. ':last')
local id, gen, level = string.match(ARGV[5], '^([^|]*)|(%d+)|(%d)$')
if id then
  local notes = writes()
  local reason = string.gsub(ARGV[3], '[|\n]', ' ')
  note(notes, id, table.concat({'X', now_ms(), gen, level, reason}, '|'))
  append_history(KEYS[4], notes, KEYS[5])
end
return dl
