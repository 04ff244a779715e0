-- Shared helpers, prepended to every script by tracker/redis/scripts.py.
-- A conversation record is one string in conversations:{N}, fields joined by '|'; the
-- names below are their positions (r[GEN] is the generation of record r):
local STATE, GEN, SINCE, INTERVAL, AGENT, MESSAGE = 1, 2, 3, 4, 5, 6
local NEWEST, SEEN, ANSWER, RESPONSE = 7, 8, 9, 10
--   STATE W waiting, E every level fired, A answered  GEN generation (+1 each agent message)
--   SINCE waiting-since ms  INTERVAL interval ms  AGENT agent id  MESSAGE agent message id
--   NEWEST timestamp ms of the newest applied event
--   SEEN earlier message ids of this conversation (agent and customer), newest first,
--     ',' separated, at most SEEN_MAX ('' none; '0', written by earlier versions: none)
--   ANSWER the customer message id that answered this period ('' none)
--   RESPONSE response time ms ('' none)
-- Scripts read what they need with one HMGET, work in Lua, and write each key once.
-- The first n '|'-separated fields of raw, as a table (one string.match: several times
-- faster than a gmatch loop, and this runs for every conversation a script touches).
local SPLIT_PATTERNS = {}
local function split(raw, n)
  local pattern = SPLIT_PATTERNS[n]
  if not pattern then
    pattern = '^' .. string.rep('([^|]*)|', n - 1) .. '([^|]*)'
    SPLIT_PATTERNS[n] = pattern
  end
  return {string.match(raw, pattern)}
end

local RECORD_FIELDS = 10

local function join(r)
  return table.concat(r, '|', 1, RECORD_FIELDS)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function level_offset(multiplier, interval)
  return math.floor(tonumber(multiplier) * interval + 0.5)
end

-- The records of `ids` (one HMGET), as tables keyed by id; false where there is none.
local function load_records(key, ids)
  local records = {}
  if #ids == 0 then return records end
  local raws = redis.call('HMGET', key, unpack(ids))
  for k, id in ipairs(ids) do
    if records[id] == nil then
      records[id] = raws[k] and split(raws[k], RECORD_FIELDS) or false
    end
  end
  return records
end

-- Collects writes to one key as field -> value (the last write wins), flushed in one command.
local function writes()
  return {order = {}, values = {}}
end

local function put(w, field, value)
  if w.values[field] == nil then w.order[#w.order + 1] = field end
  w.values[field] = value
end

-- HSET key f v ... (or ZADD key v f ... with as_score) for everything collected; a field
-- whose last write was `false` is deleted instead (HDEL, or ZREM).
local function flush(command, key, w, as_score)
  if #w.order == 0 then return end
  local args, gone = {}, {}
  for _, field in ipairs(w.order) do
    local value = w.values[field]
    if value == false then
      gone[#gone + 1] = field
    elseif as_score then
      args[#args + 1] = value
      args[#args + 1] = field
    else
      args[#args + 1] = field
      args[#args + 1] = value
    end
  end
  if #args > 0 then redis.call(command, key, unpack(args)) end
  if #gone > 0 then redis.call(as_score and 'ZREM' or 'HDEL', key, unpack(gone)) end
end

-- A variadic delete (HDEL, ZREM, ...) of a set of members, if any.
local function remove(command, key, w)
  if #w.order > 0 then redis.call(command, key, unpack(w.order)) end
end

-- history:{N} holds each conversation's delivery history: entries oldest first, joined by
-- newlines, each 'kind|at ms|generation|...' (tracker/state/history.py reads them), at most
-- HISTORY_MAX bytes a conversation (the oldest entries go first). `notes` collects the
-- entries a script adds: writes() of conversation id -> list of entries. The write is best
-- effort (pcall): a Redis at maxmemory refuses it (OOM), and what the script did before,
-- an acknowledgement say, must stand.
local HISTORY_MAX = 4096

local function note(notes, id, entry)
  local list = notes.values[id]
  if not list then
    list = {}
    notes.order[#notes.order + 1] = id
    notes.values[id] = list
  end
  list[#list + 1] = entry
end

-- `records`, when given, is the shard's conversations key: notes about a conversation that
-- has no record here (a reshard moved it away) are dropped, as nothing would retire them.
local function append_history(key, notes, records)
  if #notes.order == 0 then return end
  local olds = redis.call('HMGET', key, unpack(notes.order))
  local present = records and redis.call('HMGET', records, unpack(notes.order)) or nil
  local args = {}
  for k, id in ipairs(notes.order) do
    if not present or present[k] then
      local text = table.concat(notes.values[id], '\n')
      if olds[k] then text = olds[k] .. '\n' .. text end
      if #text > HISTORY_MAX then
        local cut = string.find(text, '\n', #text - HISTORY_MAX, true)
        text = cut and string.sub(text, cut + 1) or ''
      end
      args[#args + 1] = id
      args[#args + 1] = text
    end
  end
  if #args > 0 then redis.pcall('HSET', key, unpack(args)) end
end

-- Writers route by a shard layout epoch (see tracker/state/layout.py). A shard that has seen a newer
-- epoch (a reshard began) refuses the call, so the writer reloads the layout; an older stored
-- epoch is raised to the caller's. Returns the error reply to give when refused, else nil.
-- The reply names the shard's epoch: a layout found below it was lost with Redis's data,
-- and the writer raises it (tracker/state/layout.py), so that no shard refuses writes for good.
local function refuse_epoch(key, epoch)
  local current, mine = tonumber(redis.call('GET', key) or 0), tonumber(epoch)
  if current > mine then
    return redis.error_reply('EPOCH ' .. current .. ' the shard layout changed: reload it')
  end
  if current < mine then redis.call('SET', key, mine) end
  return nil
end

-- What to do now with one notification staged for delivery (recheck.lua, deliver_stream.lua):
-- 1 send, 0 stale (answered, or restarted: another generation), 2 not due yet (the caller's
-- clock runs ahead of Redis's), 4 superseded (a higher level of its period is staged and
-- due: it is sent, or was, and a lower level never follows it). `raw` is the conversation's
-- record, `fired` the level its notification_states holds.
local function recheck_code(raw, fired, gen, due, level, multipliers, now)
  local state, g, since, interval = string.match(raw, '^(%a)|(%d+)|(%d+)|(%d+)|')
  if g ~= gen or state == 'A' then return 0 end
  if tonumber(due) > now then return 2 end
  fired = tonumber(fired or 0)
  if fired > tonumber(level)
    and tonumber(since) + level_offset(multipliers[fired], tonumber(interval)) <= now then
    return 4
  end
  return 1
end

-- A record a reshard is moving (moving_conversations, see migrate_out.lua): the record and
-- the level fired, as recheck_code takes them.
local function moving_record(payload)
  local p = split(payload, RECORD_FIELDS + 3)
  local fired = p[RECORD_FIELDS + 2]
  return payload, fired ~= '' and fired or nil
end
