-- Apply agent messages and customer responses to conversations, in the order given (one
-- call per shard holds a batch's events of that shard in request order, so however the
-- script cache fares, the events of one conversation take effect in order).
-- KEYS[1] conversations:{N}  KEYS[2] waiting_conversations:{N}
-- KEYS[3] notification_states:{N}  KEYS[4] retired_conversations:{N}  KEYS[5] timeout:epoch:{N}
-- KEYS[6] history:{N}
-- ARGV[1] shard layout epoch the caller routed by  ARGV[2] level-1 multiplier
-- ARGV[3] wake channel: published once when the shard's earliest deadline moves earlier
-- ARGV[4] how long a finished record is kept, ms
-- ARGV[5..] one per event (one argument each: the client packs a batch much faster):
--   agent message      'a|conversation id|agent id|message id|timestamp ms|interval ms'
--   customer response  'c|conversation id|message id|timestamp ms'
--   (timestamp 0: now, by Redis's clock)
-- returns: four values per event, in order:
--   agent message      status, generation, waiting_since_ms, next_due_ms (-1: none)
--     status: started | restarted | duplicate | stale
--   customer response  status, generation, response_time_ms (-1: none), 0
--     status: answered | duplicate | stale | not_waiting
--   or the error 'EPOCH ...' (nothing written) when the shard has seen a newer layout
-- A message id the conversation has seen (its current agent message or answer, or one of
-- its last SEEN_MAX earlier ones) is a duplicate and changes nothing.
local refused = refuse_epoch(KEYS[5], ARGV[1])
if refused then return refused end
local SEEN_MAX = 16
local AGENT_EVENT = '^a|([^|]*)|([^|]*)|([^|]*)|(-?%d+)|(%d+)$'
local CUSTOMER_EVENT = '^c|([^|]*)|([^|]*)|(-?%d+)$'
-- The captures of an event e, by position (e[E_ID] is its conversation id):
local E_ID = 1
local A_AGENT, A_MESSAGE, A_TS, A_INTERVAL = 2, 3, 4, 5  -- an agent message's
local C_MESSAGE, C_TS = 2, 3  -- a customer response's
local events, ids = {}, {}
for i = 5, #ARGV do
  local arg = ARGV[i]
  local e = {string.match(arg, string.byte(arg) == 97 and AGENT_EVENT or CUSTOMER_EVENT)}
  e.agent = #e == 5
  events[#events + 1] = e
  ids[#ids + 1] = e[E_ID]
end
local records = load_records(KEYS[1], ids)
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local earliest = tonumber(head[2]) or math.huge
local saved, waiting, fired, retired, notes = writes(), writes(), writes(), writes(), writes()
local out, wake, now = {}, nil, nil
local retention = tonumber(ARGV[4])

local function clock()
  now = now or now_ms()
  return now
end

local function seen(r, message_id)
  if r[MESSAGE] == message_id or r[ANSWER] == message_id then return true end
  return string.find(',' .. r[SEEN] .. ',', ',' .. message_id .. ',', 1, true) ~= nil
end

-- r's earlier message ids with `ids` added in front, at most SEEN_MAX of them.
local function remember(r, ids)
  local list = {}
  for _, id in ipairs(ids) do
    if id ~= '' then list[#list + 1] = id end
  end
  if r[SEEN] ~= '' and r[SEEN] ~= '0' then
    for id in string.gmatch(r[SEEN], '[^,]+') do
      if #list >= SEEN_MAX then break end
      list[#list + 1] = id
    end
  end
  return table.concat(list, ',')
end

local function next_due(id)
  local due = waiting.values[id]
  if due == nil then due = tonumber(redis.call('ZSCORE', KEYS[2], id) or -1) end
  return due or -1
end

-- The period that a restart ends goes into the history (the record keeps the current one).
local function close_period(id, r)
  note(notes, id, table.concat({'S', r[SINCE], r[GEN], r[INTERVAL], r[AGENT], r[MESSAGE]}, '|'))
  if r[STATE] == 'A' then
    note(notes, id, 'A|' .. r[NEWEST] .. '|' .. r[GEN] .. '|' .. r[RESPONSE] .. '|' .. r[ANSWER])
  end
end

local function agent_message(e)
  local id, message_id, ts = e[E_ID], e[A_MESSAGE], tonumber(e[A_TS])
  if ts == 0 then ts = clock() end
  local r = records[id]
  if r and (seen(r, message_id) or ts < tonumber(r[NEWEST])) then
    local status = seen(r, message_id) and 'duplicate' or 'stale'
    return status, tonumber(r[GEN]), tonumber(r[SINCE]), next_due(id)
  end
  local gen, status, earlier = 1, 'started', ''
  if r then
    gen = tonumber(r[GEN]) + 1
    status = r[STATE] == 'A' and 'started' or 'restarted'
    earlier = remember(r, {r[MESSAGE], r[ANSWER]})
    close_period(id, r)
    put(fired, id, false)
    put(retired, id, false)
  end
  local interval = tonumber(e[A_INTERVAL])
  local due = ts + level_offset(ARGV[2], interval)
  r = {'W', gen, ts, interval, e[A_AGENT], message_id, ts, earlier, '', ''}
  records[id] = r
  put(saved, id, join(r))
  put(waiting, id, due)
  if due < earliest then earliest, wake = due, due end
  return status, gen, ts, due
end

local function customer_response(e)
  local id, message_id, ts = e[E_ID], e[C_MESSAGE], tonumber(e[C_TS])
  if ts == 0 then ts = clock() end
  local r = records[id]
  if not r then return 'not_waiting', 0, -1, 0 end
  local gen = tonumber(r[GEN])
  if seen(r, message_id) then
    local response = r[ANSWER] == message_id and tonumber(r[RESPONSE]) or -1
    return 'duplicate', gen, response, 0
  end
  if r[STATE] == 'A' then  -- remembered: a retry after a restart must not answer it
    r[SEEN] = remember(r, {message_id})
    put(saved, id, join(r))
    return 'not_waiting', gen, -1, 0
  end
  if ts < tonumber(r[SINCE]) then return 'stale', gen, -1, 0 end
  local response = ts - tonumber(r[SINCE])
  r[STATE], r[NEWEST], r[ANSWER], r[RESPONSE] = 'A', ts, message_id, response
  put(saved, id, join(r))
  put(waiting, id, false)
  put(retired, id, clock() + retention)
  return 'answered', gen, response, 0
end

for _, e in ipairs(events) do
  local a, b, c, d
  if e.agent then a, b, c, d = agent_message(e) else a, b, c, d = customer_response(e) end
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = a, b, c, d
end
flush('HSET', KEYS[1], saved)
flush('ZADD', KEYS[2], waiting, true)
flush('HSET', KEYS[3], fired)
flush('ZADD', KEYS[4], retired, true)
append_history(KEYS[6], notes)
if wake then redis.call('PUBLISH', ARGV[3], wake) end
return out
