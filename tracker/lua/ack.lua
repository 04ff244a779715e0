-- After delivery: acknowledge a batch's entries, forget their failed attempts, and note in
-- each conversation's history what became of its notification. The acknowledgement comes
-- first: at maxmemory (OOM) Redis still takes it, and only the history is lost.
-- KEYS[1] timeout_events:{N}  KEYS[2] delivery_attempts:{N}  KEYS[3] history:{N}
-- KEYS[4] conversations:{N}
-- ARGV[1] consumer group  ARGV[2] 1 when some entries had failed attempts to forget, else 0
-- ARGV[3] when it happened, ms (0: now; deliver_stream.lua's callers give the time it gave,
--   noting after the fact what that script acknowledged already)
-- ARGV[4..] one per entry: entry id|conversation id|generation|level|outcome|sinks
--   outcome: D delivered (to the sinks, ','-separated), U suppressed (answered or restarted
--   before its due time), P superseded (a higher level of its period is due)
-- returns: number of entries acknowledged
if #ARGV < 4 then return 0 end
local at = tonumber(ARGV[3])
local entries, notes, now = {}, writes(), at > 0 and at or now_ms()
for i = 4, #ARGV do
  local entry, id, gen, level, outcome, sinks =
    string.match(ARGV[i], '^([^|]*)|([^|]*)|(%d+)|(%d)|(%a)|([^|]*)$')
  entries[#entries + 1] = entry
  local staged = string.match(entry, '^(%d+)-')
  if outcome == 'D' then
    note(notes, id, 'D|' .. now .. '|' .. gen .. '|' .. level .. '|' .. sinks .. '|' .. staged)
  else
    note(notes, id, outcome .. '|' .. now .. '|' .. gen .. '|' .. level)
  end
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
if ARGV[2] == '1' then
  local fields = {}
  for _, entry in ipairs(entries) do
    fields[#fields + 1] = entry
    fields[#fields + 1] = entry .. ':last'
  end
  redis.call('HDEL', KEYS[2], unpack(fields))
end
append_history(KEYS[3], notes, KEYS[4])
return acked
