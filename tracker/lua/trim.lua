-- Trim a shard stream below what every consumer group still needs (never a pending entry).
-- KEYS[1] timeout_events:{N}
-- ARGV none
-- returns: number of entries trimmed
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local keep = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local floor
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  if tonumber(pending[1]) > 0 then
    floor = pending[2]
  else
    local ms, seq = parse(info['last-delivered-id'])
    floor = ms .. '-' .. (seq + 1)
  end
  if keep == nil or less(floor, keep) then keep = floor end
end
return redis.call('XTRIM', KEYS[1], 'MINID', keep)
