-- tests/ratelimit/sw_ops.lua: exposes the sliding_window.lua functions one call at a time.
-- KEYS[1] the log; ARGV[1] op ('peek' | 'record' | 'hit' | 'admit' | 'unadmit'), ARGV[2]
-- limit, ARGV[3] window_ms, ARGV[4] now_ms, ARGV[5] trim_at ('' for the default). Returns
-- {count, retry_after_ms} for peek, hit and admit ('hit' records only when count < limit, as
-- a caller does, handing the peek's count to sw_record), {} for record (which knows no count)
-- and unadmit.
local op, limit, window_ms, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local trim_at = tonumber(ARGV[5])
if op == 'record' then
  sw_record(KEYS[1], window_ms, now_ms)
  return {}
end
if op == 'unadmit' then
  sw_unadmit(KEYS[1])
  return {}
end
if op == 'admit' then
  return {sw_admit(KEYS[1], limit, window_ms, now_ms)}
end
local count, retry_after_ms = sw_peek(KEYS[1], limit, window_ms, now_ms, trim_at)
if op == 'hit' and count < tonumber(limit) then
  sw_record(KEYS[1], window_ms, now_ms, count)
end
return {count, retry_after_ms}
