-- After delivery: mark what was delivered on its record, then acknowledge every entry.
-- KEYS[1] timeout_events:{N}  KEYS[2] conversations:{N}  KEYS[3] delivery_attempts:{N}
-- ARGV[1] consumer group  ARGV[2] how many entries follow
-- ARGV entries from index 3, four values each: entry id, conversation id, generation,
--   level delivered (0 when the entry was skipped, not delivered)
-- returns: number of entries acknowledged
local n = tonumber(ARGV[2])
local ids = {}
for i = 3, 2 + 4 * n, 4 do
  ids[#ids + 1] = ARGV[i]
  local level = tonumber(ARGV[i + 3])
  if level > 0 then
    local raw = redis.call('HGET', KEYS[2], ARGV[i + 1])
    if raw then
      local r = split(raw)
      if r[2] == ARGV[i + 2] and tonumber(r[8]) < level then
        r[8] = level
        redis.call('HSET', KEYS[2], ARGV[i + 1], join(r))
      end
    end
  end
end
if #ids == 0 then return 0 end
redis.call('HDEL', KEYS[3], unpack(ids))
return redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
