-- Shared helpers, prepended to every script by tracker/scripts.py.
-- A conversation record is one string in conversations:{N}, fields joined by '|':
--   1 state (W waiting, E every level fired, A answered)  2 generation
--   3 waiting-since ms  4 interval ms  5 agent id  6 agent message id
--   7 timestamp ms of the newest applied event  8 highest level delivered
--   9 customer message id  10 response time ms
local function split(raw)
  local out = {}
  for field in string.gmatch(raw .. '|', '([^|]*)|') do
    out[#out + 1] = field
  end
  return out
end

local function join(r)
  return table.concat(r, '|', 1, 10)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function level_offset(multiplier, interval)
  return math.floor(tonumber(multiplier) * interval + 0.5)
end
