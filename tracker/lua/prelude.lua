-- Shared helpers, prepended to every script by tracker/scripts.py.
-- A conversation record is one string in conversations:{N}, fields joined by '|':
--   1 state (W waiting, E every level fired, A answered)  2 generation
--   3 waiting-since ms  4 interval ms  5 agent id  6 agent message id
--   7 timestamp ms of the newest applied event
--   8 unused, always 0 (once a delivered-levels mask: kept so that records written by
--     earlier versions read the same)
--   9 customer message id  10 response time ms
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

-- The events of a track or respond call: one ARGV each from `first` on, its '|'-separated
-- values taken by `pattern`; returns them as tables, and their conversation ids (value 1).
local function events_from(first, pattern)
  local events, ids = {}, {}
  for i = first, #ARGV do
    local e = {string.match(ARGV[i], pattern)}
    events[#events + 1] = e
    ids[#ids + 1] = e[1]
  end
  return events, ids
end

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

-- HSET key f v ... (or ZADD key v f ... with as_score) for everything collected.
local function flush(command, key, w, as_score)
  if #w.order == 0 then return end
  local args = {}
  for _, field in ipairs(w.order) do
    if as_score then
      args[#args + 1] = w.values[field]
      args[#args + 1] = field
    else
      args[#args + 1] = field
      args[#args + 1] = w.values[field]
    end
  end
  redis.call(command, key, unpack(args))
end

-- A variadic delete (HDEL, ZREM, ...) of a set of members, if any.
local function remove(command, key, w)
  if #w.order > 0 then redis.call(command, key, unpack(w.order)) end
end

-- Writers route by a shard layout epoch (see tracker/layout.py). A shard that has seen a newer
-- epoch (a reshard began) refuses the call, so the writer reloads the layout; an older stored
-- epoch is raised to the caller's. Returns false when refused.
local function accept_epoch(key, epoch)
  local current, mine = tonumber(redis.call('GET', key) or 0), tonumber(epoch)
  if current > mine then return false end
  if current < mine then redis.call('SET', key, mine) end
  return true
end

local EPOCH_REFUSED = 'EPOCH the shard layout changed: reload it'
