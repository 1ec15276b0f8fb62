-- tests/ratelimit/cw_batch_ops.lua: one sequence of hits run twice in one call: on KEYS[1]
-- hit by hit (cw_admit without a log), on KEYS[2] through one cw_log flushed at the end.
-- ARGV[1] limit, ARGV[2] window_ms, ARGV[3] group, then per hit: now_ms, op ('admit' |
-- 'admit_unadmit': admitted, then taken back as a later limit's refusal does).
-- Returns per hit {count, retry_after_ms} of KEYS[1], then of KEYS[2], flat.
local limit, window, group = ARGV[1], ARGV[2], ARGV[3]
local log = cw_log(KEYS[2])
local out = {}
for i = 4, #ARGV, 2 do
  local now, op = ARGV[i], ARGV[i + 1]
  local count, retry = cw_admit(KEYS[1], limit, window, now, group)
  if op == 'admit_unadmit' and retry == 0 then cw_unadmit(KEYS[1], group) end
  local batch_count, batch_retry = cw_admit(KEYS[2], limit, window, now, group, log)
  if op == 'admit_unadmit' and batch_retry == 0 then cw_unadmit(KEYS[2], group, log) end
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] =
    count, retry, batch_count, batch_retry
end
cw_flush(KEYS[2], log)
return out
