-- Reshard, step 1 of 3: take conversations out of the shard they leave. Each one's record,
-- next due time, last level fired, retirement time and history move into
-- moving_conversations:{N}
-- and out of every other key, so this shard's sweeper no longer fires it. Idempotent: an id
-- already taken out (by a caller that stopped before step 3) is returned again.
-- KEYS[1] conversations:{N}  KEYS[2] waiting_conversations:{N}  KEYS[3] notification_states:{N}
-- KEYS[4] retired_conversations:{N}  KEYS[5] moving_conversations:{N}  KEYS[6] timeout:epoch:{N}
-- KEYS[7] history:{N}
-- ARGV[1] the reshard's layout epoch: raised here, so writers of an older layout are refused
-- ARGV[2..] conversation ids
-- returns: id, payload pairs for the ids held here; payload =
--   record|due|level|retire_at|history, each after the record empty when unset (the
--   history last: it holds '|' and newlines); or the error 'EPOCH ...' when a newer layout
--   exists
local refused = refuse_epoch(KEYS[6], ARGV[1])
if refused then return refused end
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return {} end
local records = redis.call('HMGET', KEYS[1], unpack(ids))
local taken = redis.call('HMGET', KEYS[5], unpack(ids))
local dues = redis.call('ZMSCORE', KEYS[2], unpack(ids))
local levels = redis.call('HMGET', KEYS[3], unpack(ids))
local retires = redis.call('ZMSCORE', KEYS[4], unpack(ids))
local histories = redis.call('HMGET', KEYS[7], unpack(ids))
local out, moving, gone = {}, writes(), writes()
for k, id in ipairs(ids) do
  if taken[k] then
    out[#out + 1], out[#out + 2] = id, taken[k]
  elseif records[k] then
    local payload = table.concat(
      {records[k], dues[k] or '', levels[k] or '', retires[k] or '', histories[k] or ''}, '|')
    put(moving, id, payload)
    put(gone, id, true)
    out[#out + 1], out[#out + 2] = id, payload
  end
end
flush('HSET', KEYS[5], moving)
remove('HDEL', KEYS[1], gone)
remove('ZREM', KEYS[2], gone)
remove('HDEL', KEYS[3], gone)
remove('ZREM', KEYS[4], gone)
remove('HDEL', KEYS[7], gone)
return out
