-- Reshard, step 2 of 3: place conversations taken out of their old shard in their new one.
-- One the new shard already holds was written here since, by a writer that moved it first:
-- that copy is newer and stays. (Step 3 deletes the ids from the old shard's
-- moving_conversations.)
-- KEYS[1] conversations:{N}  KEYS[2] waiting_conversations:{N}  KEYS[3] notification_states:{N}
-- KEYS[4] retired_conversations:{N}  KEYS[5] history:{N}
-- ARGV[1] wake channel: published when the shard's earliest deadline moves earlier
-- ARGV[2..] id, payload pairs from migrate_out
-- returns: number of conversations placed
local ids = {}
for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local held = load_records(KEYS[1], ids)
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local earliest = tonumber(head[2]) or math.huge
local saved, due_at, fired, retire_at, histories = writes(), writes(), writes(), writes(), writes()
-- A payload (migrate_out.lua) is the record's fields, then these, then the history:
local MOVED_DUE, MOVED_LEVEL, MOVED_RETIRE = RECORD_FIELDS + 1, RECORD_FIELDS + 2, RECORD_FIELDS + 3
local HISTORY_AFTER = '^' .. string.rep('[^|]*|', MOVED_RETIRE) .. '(.*)$'
local placed, wake = 0, nil
for i = 2, #ARGV, 2 do
  local id, p = ARGV[i], split(ARGV[i + 1], MOVED_RETIRE)
  if not held[id] and saved.values[id] == nil then
    put(saved, id, join(p))
    if p[MOVED_DUE] ~= '' then
      local due = tonumber(p[MOVED_DUE])
      put(due_at, id, due)
      if due < earliest then earliest, wake = due, due end
    end
    if p[MOVED_LEVEL] ~= '' then put(fired, id, p[MOVED_LEVEL]) end
    if p[MOVED_RETIRE] ~= '' then put(retire_at, id, p[MOVED_RETIRE]) end
    local history = string.match(ARGV[i + 1], HISTORY_AFTER)
    if history and history ~= '' then put(histories, id, history) end
    placed = placed + 1
  end
end
flush('HSET', KEYS[1], saved)
flush('ZADD', KEYS[2], due_at, true)
flush('HSET', KEYS[3], fired)
flush('ZADD', KEYS[4], retire_at, true)
flush('HSET', KEYS[5], histories)
if wake then redis.call('PUBLISH', ARGV[1], wake) end
return placed
