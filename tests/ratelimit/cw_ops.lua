-- tests/ratelimit/cw_ops.lua: exposes the coarse_window.lua functions one call at a time.
-- KEYS[1] the log; ARGV[1] op ('admit' | 'admit_unadmit'), ARGV[2] limit, ARGV[3] window_ms,
-- ARGV[4] now_ms, ARGV[5] group. Returns {count, retry_after_ms}; 'admit_unadmit' admits and,
-- when admitted, takes the hit back (as a claim refused by a later limit does).
local count, retry = cw_admit(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if ARGV[1] == 'admit_unadmit' and retry == 0 then
  cw_unadmit(KEYS[1], ARGV[5])
end
return {count, retry}
