-- Publish one worker's breaker trip into the shared breaker hash, keeping what already wins,
-- and record the trip as a `supplier.breaker_opened` event when it opens the breaker anew.
-- KEYS[1]  the breaker hash (field = supplier id, value = JSON
--          {"forced": "open"|"closed"|null, "open_until": unix seconds|null, "reset_at": ...})
-- KEYS[2]  optional: the event stream for breaker openings
-- ARGV[1]  supplier id
-- ARGV[2]  open_until, unix seconds (float)
-- ARGV[3]  when the trip happened, unix seconds (float)         (only with KEYS[2])
-- ARGV[4]  the state the breaker opened from (closed, half_open) (only with KEYS[2])
-- ARGV[5]  ARGV[3] as RFC 3339, the event's ts                  (only with KEYS[2])
-- ARGV[6]  the stream's approximate length cap                  (only with KEYS[2])
-- Returns 1 when written; 0 when an admin-forced state or a later open_until already wins.
-- A trip is a new opening when no trip was known or the last known one had ended when it
-- happened; a trip during another worker's opening only extends it. So the fleet's workers,
-- each tripping its own breaker, record one opening between them.
local supplier = ARGV[1]
local open_until = tonumber(ARGV[2])
if not open_until then
  return redis.error_reply('open_until must be a number')
end

local entry = {}
local raw = redis.call('HGET', KEYS[1], supplier)
if raw then
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' then
    entry = decoded
  end
end

if type(entry.forced) == 'string' then
  return 0
end
local current = tonumber(entry.open_until)
if current and current >= open_until then
  return 0
end

if KEYS[2] then
  local opened_at = tonumber(ARGV[3])
  if not opened_at then
    return redis.error_reply('opened_at must be a number')
  end
  if not current or current <= opened_at then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'type', 'supplier.breaker_opened',
               'ts', ARGV[5], 'supplier', supplier, 'from_state', ARGV[4])
  end
end

entry.open_until = open_until
redis.call('HSET', KEYS[1], supplier, cjson.encode(entry))
return 1
