-- After delivery: mark what was delivered on its record, then acknowledge every entry.
-- KEYS[1] timeout_events:{N}  KEYS[2] conversations:{N}  KEYS[3] delivery_attempts:{N}
-- ARGV[1] consumer group  ARGV[2] 1 when some entries had failed attempts to forget, else 0
-- ARGV[3..] one per entry: entry id|conversation id|generation|level delivered
--   (level 0 when the entry was skipped, not delivered)
-- returns: number of entries acknowledged
local entries, acks, delivered = {}, {}, {}
for i = 3, #ARGV do
  local entry, id, gen, level = string.match(ARGV[i], '^([^|]*)|(.*)|(%d+)|(%d+)$')
  level = tonumber(level)
  entries[#entries + 1] = entry
  acks[#acks + 1] = {id, gen, level}
  if level > 0 then delivered[#delivered + 1] = id end
end
if #entries == 0 then return 0 end
local records = load_records(KEYS[2], delivered)
local saved = writes()
for _, ack in ipairs(acks) do
  local r, level = records[ack[1]], ack[3]
  if level > 0 and r and r[2] == ack[2] then
    r[8] = bit.bor(tonumber(r[8]), 2 ^ (level - 1))
    put(saved, ack[1], join(r))
  end
end
flush('HSET', KEYS[2], saved)
if ARGV[2] == '1' then redis.call('HDEL', KEYS[3], unpack(entries)) end
return redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
