-- Start or restart conversations' clocks from agent messages, applied in order.
-- KEYS[1] conversations:{N}  KEYS[2] waiting_conversations:{N}
-- KEYS[3] notification_states:{N}  KEYS[4] retired_conversations:{N}  KEYS[5] timeout:epoch:{N}
-- ARGV[1] shard layout epoch the caller routed by  ARGV[2] level-1 multiplier
-- ARGV[3] wake channel: published once when the shard's earliest deadline moves earlier
-- ARGV[4..] one per agent message: conversation id|agent id|agent message id|
--   timestamp ms (0: now, by Redis's clock)|interval ms
--   (one argument per event: the client packs a batch much faster than five per event)
-- returns: four values per message: status, generation, waiting_since_ms, next_due_ms
--   status: started | restarted | duplicate | stale
--   or the error 'EPOCH ...' (nothing written) when the shard has seen a newer layout
if not accept_epoch(KEYS[5], ARGV[1]) then return redis.error_reply(EPOCH_REFUSED) end
local events, ids = events_from(4, '^([^|]*)|([^|]*)|([^|]*)|(-?%d+)|(%d+)$')
local records = load_records(KEYS[1], ids)
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local earliest = tonumber(head[2]) or math.huge
local saved, due_at, unfired, unretired = writes(), writes(), writes(), writes()
local out, wake, now = {}, nil, nil
for _, e in ipairs(events) do
  local id, message_id, ts = e[1], e[3], tonumber(e[4])
  if ts == 0 then
    now = now or now_ms()
    ts = now
  end
  local r = records[id]
  if r and (r[6] == message_id or ts < tonumber(r[7])) then
    local due = due_at.values[id] or tonumber(redis.call('ZSCORE', KEYS[2], id) or -1)
    local status = (r[6] == message_id) and 'duplicate' or 'stale'
    out[#out + 1], out[#out + 2] = status, tonumber(r[2])
    out[#out + 1], out[#out + 2] = tonumber(r[3]), due
  else
    local gen, status = 1, 'started'
    if r then
      gen = tonumber(r[2]) + 1
      if r[1] ~= 'A' then
        status = 'restarted'
        put(unfired, id, true)
      end
      if r[1] ~= 'W' then put(unretired, id, true) end
    end
    local interval = tonumber(e[5])
    local due = ts + level_offset(ARGV[2], interval)
    r = {'W', gen, ts, interval, e[2], message_id, ts, 0, '', ''}
    records[id] = r
    put(saved, id, join(r))
    put(due_at, id, due)
    if due < earliest then earliest, wake = due, due end
    out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = status, gen, ts, due
  end
end
flush('HSET', KEYS[1], saved)
flush('ZADD', KEYS[2], due_at, true)
remove('HDEL', KEYS[3], unfired)
remove('ZREM', KEYS[4], unretired)
if wake then redis.call('PUBLISH', ARGV[3], wake) end
return out
