-- The stream sink's whole delivery in one call: re-check each notification, write the ones
-- still current to the outbound stream, and acknowledge them. A burst's notifications are
-- read and parsed ahead of their due time (PREFETCH_MS); at the due time this is all that is
-- left, one call a shard. (The caller notes the outcomes in the conversations' history with
-- ack.lua afterwards: off the path to the reader, as a burst's last notifications wait for
-- every call before them.)
-- Not on Redis Cluster: the outbound stream sits in a slot of its own (the consumers then
-- re-check, send and acknowledge in three steps).
-- KEYS[1] conversations:{N}  KEYS[2] moving_conversations:{N}  KEYS[3] notification_states:{N}
-- KEYS[4] timeout_events:{N}  KEYS[5] delivery_attempts:{N}  KEYS[6] the outbound stream
--   (NOTIFY_STREAM)
-- ARGV[1] consumer group  ARGV[2] the outbound stream's approximate length cap
-- ARGV[3..5] level multipliers  ARGV[6] 1 when some entries had failed attempts to forget
-- ARGV[7..] ten per notification: entry id, conversation id, generation, due ms, level,
--   event id, agent id, agent message id, waiting since (RFC 3339), due at (RFC 3339)
--   (ten arguments, not one to split: the XADD takes them as they are)
-- returns: one code per notification (as recheck.lua's: 1 sent, 0 stale, 2 not due yet,
--   3 not in this shard, 4 superseded; only 1, 0 and 4 are acknowledged), then Redis's
--   clock (ms): the notifications' fired_at, when they became readable
local m = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local FIRST, EACH = 7, 10
local ids = {}
for i = FIRST, #ARGV, EACH do ids[#ids + 1] = ARGV[i + 1] end
local n = #ids
if n == 0 then return {now_ms()} end
local now = now_ms()

-- RFC 3339 in UTC, millisecond precision, of a Unix time in ms (civil from days, H. Hinnant)
local function rfc3339(ms)
  local floor = math.floor
  local s, milli = floor(ms / 1000), ms % 1000
  local days, rem = floor(s / 86400), s % 86400
  local z = days + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, d,
    floor(rem / 3600), floor(rem % 3600 / 60), rem % 60, milli)
end

local function code(raw, fired, k)  -- the k-th notification
  local i = FIRST + (k - 1) * EACH
  return recheck_code(raw, fired, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], m, now)
end

local raws = redis.call('HMGET', KEYS[1], unpack(ids))
local fired = redis.call('HMGET', KEYS[3], unpack(ids))
local out, acked, absent = {}, {}, {}
for i = 1, n do
  if raws[i] then
    out[i] = code(raws[i], fired[i], i)
  else
    out[i] = 3
    absent[#absent + 1] = i
  end
end
if #absent > 0 then  -- a reshard may be moving it: its record waits in moving_conversations
  local absent_ids = {}
  for j, i in ipairs(absent) do absent_ids[j] = ids[i] end
  local moving = redis.call('HMGET', KEYS[2], unpack(absent_ids))
  for j, i in ipairs(absent) do
    if moving[j] then
      local raw, level = moving_record(moving[j])
      out[i] = code(raw, level, i)
    end
  end
end
local fired_at, call, key, a = rfc3339(now), redis.call, KEYS[6], ARGV
for k = 1, n do
  local i, c = FIRST + (k - 1) * EACH, out[k]
  if c == 1 then
    call('XADD', key, '*', 'event_id', a[i + 5], 'conversation_id', a[i + 1], 'level', a[i + 4],
      'agent_id', a[i + 6], 'message_id', a[i + 7], 'waiting_since', a[i + 8], 'due_at', a[i + 9],
      'fired_at', fired_at)
  end
  if c == 1 or c == 0 or c == 4 then acked[#acked + 1] = a[i] end
end
if #acked > 0 then
  call('XACK', KEYS[4], ARGV[1], unpack(acked))
  if ARGV[6] == '1' then
    local fields = {}
    for _, entry in ipairs(acked) do
      fields[#fields + 1] = entry
      fields[#fields + 1] = entry .. ':last'
    end
    call('HDEL', KEYS[5], unpack(fields))
  end
  call('XTRIM', key, 'MAXLEN', '~', ARGV[2])
end
out[n + 1] = now
return out
