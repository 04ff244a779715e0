-- A delivery attempt failed: count it, keep its error, note it in the conversation's history.
-- KEYS[1] delivery_attempts:{N}  KEYS[2] history:{N}  KEYS[3] conversations:{N}
-- ARGV[1] entry id  ARGV[2] conversation id  ARGV[3] generation  ARGV[4] level
-- ARGV[5] sink  ARGV[6] error (one line, no '|')
-- returns: the entry's failed attempts so far
local now = now_ms()
local attempts = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[1], ARGV[1] .. ':last', now .. '|' .. ARGV[5] .. '|' .. ARGV[6])
local notes = writes()
note(notes, ARGV[2], table.concat({'F', now, ARGV[3], ARGV[4], ARGV[5], ARGV[6]}, '|'))
append_history(KEYS[2], notes, KEYS[3])
return attempts
