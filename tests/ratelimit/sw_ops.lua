-- tests/ratelimit/sw_ops.lua: exposes the sliding_window.lua functions one call at a time.
-- KEYS[1] the log; ARGV[1] op ('peek' | 'record' | 'hit' | 'admit' | 'admit_twice' |
-- 'unadmit'), ARGV[2] limit, ARGV[3] window_ms, ARGV[4] now_ms, ARGV[5] trim_at ('' for the
-- default). Returns {count, retry_after_ms} for peek, hit and admit, both twice for
-- admit_twice (two admits in one call, the second handed the first's newest hit, as the claim
-- script does for a batch's claims from one address). 'hit' records only when count < limit,
-- as a caller does, handing the peek's count to sw_record. {} for record (which knows no
-- count) and unadmit.
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
  local count, retry_after_ms = sw_admit(KEYS[1], limit, window_ms, now_ms)
  return {count, retry_after_ms}
end
if op == 'admit_twice' then -- two hits in one call, the second told the newest hit
  local count, retry_after_ms, newest = sw_admit(KEYS[1], limit, window_ms, now_ms)
  local second = {sw_admit(KEYS[1], limit, window_ms, now_ms, newest)}
  return {count, retry_after_ms, second[1], second[2]}
end
local count, retry_after_ms = sw_peek(KEYS[1], limit, window_ms, now_ms, trim_at)
if op == 'hit' and count < tonumber(limit) then
  sw_record(KEYS[1], window_ms, now_ms, count)
end
return {count, retry_after_ms}
