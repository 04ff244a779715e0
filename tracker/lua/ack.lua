-- After delivery: mark what was delivered on its record, then acknowledge every entry.
-- KEYS[1] timeout_events:{N}  KEYS[2] conversations:{N}  KEYS[3] delivery_attempts:{N}
-- ARGV[1] consumer group  ARGV[2] 1 when some entries had failed attempts to forget, else 0
-- ARGV[3..] four values per entry: entry id, conversation id, generation,
--   level delivered (0 when the entry was skipped, not delivered)
-- returns: number of entries acknowledged
local entries, delivered = {}, {}
for i = 3, #ARGV, 4 do
  entries[#entries + 1] = ARGV[i]
  if tonumber(ARGV[i + 3]) > 0 then delivered[#delivered + 1] = ARGV[i + 1] end
end
if #entries == 0 then return 0 end
local records = load_records(KEYS[2], delivered)
local saved = writes()
for i = 3, #ARGV, 4 do
  local r, level = records[ARGV[i + 1]], tonumber(ARGV[i + 3])
  if level > 0 and r and r[2] == ARGV[i + 2] then
    r[8] = bit.bor(tonumber(r[8]), 2 ^ (level - 1))
    put(saved, ARGV[i + 1], join(r))
  end
end
flush('HSET', KEYS[2], saved)
if ARGV[2] == '1' then redis.call('HDEL', KEYS[3], unpack(entries)) end
return redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
