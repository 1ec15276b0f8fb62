-- Publish one worker's breaker trip into the shared breaker hash, keeping what already wins.
-- KEYS[1]  the breaker hash (field = supplier id, value = JSON
--          {"forced": "open"|"closed"|null, "open_until": unix seconds|null, "reset_at": ...})
-- ARGV[1]  supplier id
-- ARGV[2]  open_until, unix seconds (float, to the millisecond: cjson re-encodes every number
--          of the entry with 14 significant digits, exact for unix milliseconds)
-- Returns 1 when written; 0 when an admin-forced state or a later open_until already wins.
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

entry.open_until = open_until
redis.call('HSET', KEYS[1], supplier, cjson.encode(entry))
return 1
